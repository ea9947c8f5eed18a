//! Outputs: what a phase publishes for its dependents and for the user.
//!
//! Outputs are a flat, ordered map from an environment-variable-style key
//! (`DATABASE_URL`, `S3_BUCKET_UPLOADS`) to a value that is either plain text or a
//! [`Secret`]. Keys follow the shell convention so that `comind outputs --format env`
//! can write them as they are.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::{Error, Result};

/// One output value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum OutputValue {
    /// A value that may be shown anywhere.
    Text(String),
    /// A value that is shown only when the user asks for it.
    Secret(Secret),
}

impl OutputValue {
    /// Whether the value is a secret.
    pub fn is_secret(&self) -> bool {
        matches!(self, OutputValue::Secret(_))
    }

    /// The value as it may be shown: text as is, secrets redacted.
    pub fn display_value(&self) -> &str {
        match self {
            OutputValue::Text(text) => text,
            OutputValue::Secret(_) => crate::secret::REDACTED,
        }
    }

    /// The real value, secrets included. Call only to hand it to a peer, or to print
    /// it because the user asked for it.
    pub fn expose(&self) -> &str {
        match self {
            OutputValue::Text(text) => text,
            OutputValue::Secret(secret) => secret.expose(),
        }
    }
}

impl fmt::Debug for OutputValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputValue::Text(text) => write!(f, "Text({text:?})"),
            OutputValue::Secret(secret) => write!(f, "{secret:?}"),
        }
    }
}

impl fmt::Display for OutputValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_value())
    }
}

/// An ordered set of outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Outputs(BTreeMap<String, OutputValue>);

impl Outputs {
    /// No outputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a text output (builder style).
    #[must_use]
    pub fn text(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert_text(key, value);
        self
    }

    /// Adds a secret output (builder style).
    #[must_use]
    pub fn secret(mut self, key: impl Into<String>, value: Secret) -> Self {
        self.insert_secret(key, value);
        self
    }

    /// Inserts a text output.
    pub fn insert_text(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), OutputValue::Text(value.into()));
    }

    /// Inserts a secret output.
    pub fn insert_secret(&mut self, key: impl Into<String>, value: Secret) {
        self.0.insert(key.into(), OutputValue::Secret(value));
    }

    /// Adds every output of `other`, replacing same-named ones.
    pub fn extend(&mut self, other: Outputs) {
        self.0.extend(other.0);
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&OutputValue> {
        self.0.get(key)
    }

    /// The value under `key`, parsed as `T`.
    ///
    /// # Errors
    /// `NotFound` if the key is missing, `InvalidInput` if it does not parse.
    pub fn parse<T>(&self, key: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let value = self
            .get(key)
            .ok_or_else(|| Error::not_found(format!("output `{key}` is missing")))?;
        value.expose().parse::<T>().map_err(|e| {
            // Never quote a secret's value in the message.
            let shown = value.display_value();
            Error::invalid_input(format!("output `{key}` = `{shown}` is not valid: {e}"))
        })
    }

    /// The value under `key` as a string, secrets exposed.
    ///
    /// # Errors
    /// `NotFound` if the key is missing.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .map(OutputValue::expose)
            .ok_or_else(|| Error::not_found(format!("output `{key}` is missing")))
    }

    /// Iterates in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OutputValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Renders `KEY=value` lines for a shell or a `.env` file; secrets are redacted
    /// unless `reveal` is set. Values are single-quoted where the shell needs it.
    pub fn to_env_lines(&self, reveal: bool) -> String {
        let mut out = String::new();
        for (key, value) in self.iter() {
            let shown = if reveal {
                value.expose()
            } else {
                value.display_value()
            };
            out.push_str(key);
            out.push('=');
            out.push_str(&shell_quote(shown));
            out.push('\n');
        }
        out
    }

    /// A JSON object of the outputs; secrets redacted unless `reveal` is set.
    pub fn to_json(&self, reveal: bool) -> serde_json::Value {
        let map = self
            .iter()
            .map(|(k, v)| {
                let shown = if reveal {
                    v.expose()
                } else {
                    v.display_value()
                };
                (k.to_string(), serde_json::Value::String(shown.to_string()))
            })
            .collect();
        serde_json::Value::Object(map)
    }
}

impl FromIterator<(String, OutputValue)> for Outputs {
    fn from_iter<I: IntoIterator<Item = (String, OutputValue)>>(iter: I) -> Self {
        Outputs(iter.into_iter().collect())
    }
}

fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Turns a resource name into an output-key suffix: `uploads-v2` becomes `UPLOADS_V2`.
pub fn key_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Outputs {
        Outputs::new()
            .text("POSTGRES_HOST", "127.0.0.1")
            .secret(
                "DATABASE_URL",
                Secret::new("postgres://app:s3cr3t@127.0.0.1:5432/dev"),
            )
            .text("GREETING", "it's here")
    }

    #[test]
    fn secrets_are_redacted_everywhere_but_reveal() {
        let outputs = sample();
        assert!(!format!("{outputs:?}").contains("s3cr3t"));
        assert!(!serde_json::to_string(&outputs).unwrap().contains("s3cr3t"));
        assert!(!outputs.to_env_lines(false).contains("s3cr3t"));
        assert!(!outputs.to_json(false).to_string().contains("s3cr3t"));
        assert!(outputs.to_env_lines(true).contains("s3cr3t"));
        assert!(outputs.to_json(true).to_string().contains("s3cr3t"));
    }

    #[test]
    fn env_lines_quote_for_the_shell() {
        let lines = sample().to_env_lines(false);
        assert!(lines.contains("POSTGRES_HOST=127.0.0.1\n"));
        assert!(lines.contains("GREETING='it'\\''s here'\n"));
        assert!(lines.contains("DATABASE_URL='<redacted>'\n"));
    }

    #[test]
    fn typed_reads() {
        let outputs = Outputs::new().text("PORT", "5432").text("BAD", "x");
        assert_eq!(outputs.parse::<u16>("PORT").unwrap(), 5432);
        assert_eq!(
            outputs.parse::<u16>("MISSING").unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        let bad = outputs.parse::<u16>("BAD").unwrap_err();
        assert_eq!(bad.kind(), crate::ErrorKind::InvalidInput);
        let secret = Outputs::new().secret("PW", Secret::new("abc"));
        assert!(
            !secret
                .parse::<u16>("PW")
                .unwrap_err()
                .to_string()
                .contains("abc")
        );
    }

    #[test]
    fn key_suffix_is_shell_safe() {
        assert_eq!(key_suffix("uploads-v2"), "UPLOADS_V2");
    }
}
