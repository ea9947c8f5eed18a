//! Secrets: values that never print themselves.
//!
//! A [`Secret`] hides its value from `Debug`, `Display` and serialization; the only
//! ways to read it are [`Secret::expose`] (for code that must hand it to a peer) and
//! [`Revealed`] (for the rare output a user explicitly asked for, such as
//! `comind outputs --reveal`, or the 0600 credential files in the state directory).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret shows wherever it would otherwise print.
pub const REDACTED: &str = "<redacted>";

/// A secret string. Cloning is allowed; printing is not.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value as a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Generates a random alphanumeric secret of `len` characters from the operating
    /// system's random source.
    ///
    /// Alphanumeric keeps generated passwords safe inside URLs, connection strings and
    /// configuration files without any escaping.
    ///
    /// # Errors
    /// Fails only if the operating system cannot supply randomness.
    pub fn generate(len: usize) -> crate::Result<Self> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        // Rejection sampling keeps every character equally likely: 248 is the largest
        // multiple of 62 below 256.
        const LIMIT: u8 = 248;
        let mut out = String::with_capacity(len);
        let mut buf = [0u8; 64];
        while out.len() < len {
            getrandom::fill(&mut buf).map_err(|e| {
                crate::Error::internal(format!("the operating system gave no randomness: {e}"))
            })?;
            for byte in buf {
                if byte < LIMIT && out.len() < len {
                    out.push(char::from(ALPHABET[usize::from(byte % 62)]));
                }
            }
        }
        Ok(Secret(out))
    }

    /// The secret value. Call only to hand it to a peer that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A wrapper that prints and serializes the real value, for output the user
    /// explicitly asked for.
    pub fn reveal(&self) -> Revealed<'_> {
        Revealed(self)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// A secret the user asked to see. Prints and serializes the real value.
pub struct Revealed<'a>(&'a Secret);

impl fmt::Display for Revealed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.0)
    }
}

impl Serialize for Revealed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.0)
    }
}

/// Serde adapter that writes a [`Secret`]'s real value, for files that must hold it
/// (the 0600 credential files). Use as `#[serde(with = "comind_core::secret::revealing")]`.
pub mod revealing {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes the real value.
    pub fn serialize<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(secret.expose())
    }

    /// Deserializes a plain string into a secret.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        Secret::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.reveal().to_string(), "hunter2");
        assert_eq!(serde_json::to_string(&s.reveal()).unwrap(), "\"hunter2\"");
    }

    #[test]
    fn generated_secrets_are_alphanumeric_and_distinct() {
        let a = Secret::generate(32).unwrap();
        let b = Secret::generate(32).unwrap();
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn revealing_adapter_round_trips() {
        #[derive(Serialize, Deserialize)]
        struct Creds {
            #[serde(with = "revealing")]
            password: Secret,
        }
        let json = serde_json::to_string(&Creds {
            password: Secret::new("pw"),
        })
        .unwrap();
        assert_eq!(json, r#"{"password":"pw"}"#);
        let back: Creds = serde_json::from_str(&json).unwrap();
        assert_eq!(back.password.expose(), "pw");
    }
}
