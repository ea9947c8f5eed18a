//! Validated value types used by the configuration.
//!
//! Each type checks its own rules while it is deserialized, so a bad value is reported
//! by the YAML parser at its line and column, and code that holds one of these types
//! never has to check it again.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The profile an environment runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A k3d cluster and Docker containers on this machine.
    #[default]
    Local,
    /// EKS, RDS, S3, ElastiCache and SQS in an AWS account.
    Aws,
}

impl Profile {
    /// The profile's name as written in `comind.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Aws => "aws",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Profile::Local),
            "aws" => Ok(Profile::Aws),
            other => Err(format!(
                "unknown profile `{other}`, expected `local` or `aws`"
            )),
        }
    }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $check:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the rules of this type.
            ///
            /// # Errors
            /// A message saying which rule the value breaks.
            pub fn new(value: impl Into<String>) -> Result<Self, String> {
                let value = value.into();
                $check(&value)?;
                Ok($name(value))
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = String::deserialize(d)?;
                $name::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Longest environment name: derived names such as an ElastiCache replication group id
/// (`comind-<env>-cache`, at most 40 characters) must still fit.
pub const MAX_ENVIRONMENT_NAME: usize = 20;

fn check_environment_name(value: &str) -> Result<(), String> {
    let valid_chars = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.ends_with('-');
    if !valid_chars {
        return Err(format!(
            "environment name `{value}` is not valid: use lowercase letters, digits and `-`, \
             starting with a letter, not ending with `-`, at most {MAX_ENVIRONMENT_NAME} \
             characters"
        ));
    }
    if value.len() > MAX_ENVIRONMENT_NAME {
        return Err(format!(
            "environment name `{value}` is {} characters long; at most {MAX_ENVIRONMENT_NAME} \
             are allowed so that derived resource names stay within provider limits",
            value.len()
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "environment name `{value}` must start with a lowercase letter \
             (RDS and ElastiCache identifiers require it)"
        ));
    }
    if value.contains("--") {
        return Err(format!(
            "environment name `{value}` must not contain `--` (RDS identifiers forbid it)"
        ));
    }
    Ok(())
}

/// Checks the Kubernetes DNS-1123 label rules: 1 to 63 characters, lowercase
/// alphanumerics and `-`, starting and ending with an alphanumeric.
///
/// # Errors
/// A message naming the value, what it is (`what`) and the rule it breaks.
pub fn check_dns_label(value: &str, what: &str) -> Result<(), String> {
    const RULE: &str = "lowercase letters, digits and `-`, starting and ending with a letter or digit, \
                        at most 63 characters (Kubernetes DNS-1123 label)";
    if value.is_empty() {
        return Err(format!("{what} must not be empty; use {RULE}"));
    }
    let valid_chars = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let valid_ends = !value.starts_with('-') && !value.ends_with('-');
    if !valid_chars || !valid_ends || value.len() > 63 {
        return Err(format!("{what} `{value}` is not valid: use {RULE}"));
    }
    Ok(())
}

fn check_resource_name(value: &str) -> Result<(), String> {
    check_dns_label(value, "name")
}

fn check_identifier(value: &str) -> Result<(), String> {
    let valid = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && value.len() <= 63;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a valid identifier: use lowercase letters, digits and `_`, \
             starting with a letter or `_`, at most 63 characters"
        ))
    }
}

fn check_image(value: &str) -> Result<(), String> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "image reference `{value}` is not valid: use `name:tag` or `name@sha256:digest` \
             without spaces"
        ));
    }
    let last = value.rsplit('/').next().unwrap_or(value);
    if !last.contains(':') && !value.contains('@') {
        return Err(format!(
            "image reference `{value}` has no tag: pin a tag or digest, e.g. `{value}:1.2.3`"
        ));
    }
    Ok(())
}

/// Checks a Kubernetes resource quantity as quotas and limits take it: a decimal
/// number with an optional SI or binary suffix (`500m`, `2`, `1.5`, `512Mi`, `4Gi`).
fn check_quantity(value: &str) -> Result<(), String> {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| value.strip_suffix(suffix))
        .unwrap_or(value);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if digits(whole) && fraction.is_none_or(digits) {
        Ok(())
    } else {
        Err(format!(
            "quantity `{value}` is not valid: use a number with an optional unit, such as \
             `500m` or `2` (CPU) and `512Mi` or `4Gi` (memory)"
        ))
    }
}

string_newtype!(
    /// A Kubernetes resource quantity (`500m`, `2`, `512Mi`, `4Gi`).
    Quantity,
    check_quantity
);

string_newtype!(
    /// An environment name: a DNS-1123 label that starts with a letter, has no `--`
    /// and is at most [`MAX_ENVIRONMENT_NAME`] characters long.
    EnvironmentName,
    check_environment_name
);

string_newtype!(
    /// A name that becomes part of a resource name (bucket, queue, namespace): a
    /// Kubernetes DNS-1123 label.
    ResourceName,
    check_resource_name
);

string_newtype!(
    /// A SQL identifier for a database or role: lowercase letters, digits and `_`.
    Identifier,
    check_identifier
);

string_newtype!(
    /// A container image reference with a pinned tag or digest.
    ImageRef,
    check_image
);

impl Default for EnvironmentName {
    fn default() -> Self {
        EnvironmentName("dev".to_string())
    }
}

/// A TCP port from 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(u16);

impl Port {
    /// A port; `None` for 0.
    pub const fn new(port: u16) -> Option<Port> {
        if port == 0 { None } else { Some(Port(port)) }
    }

    /// The port number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// A port known at compile time. Only for non-zero constants.
    pub(crate) const fn constant(port: u16) -> Port {
        assert!(port != 0, "port constants are non-zero");
        Port(port)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(d)?;
        u16::try_from(value)
            .ok()
            .and_then(Port::new)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "port {value} is out of range: use a port from 1 to 65535"
                ))
            })
    }
}

/// A duration written as `90s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationSetting(Duration);

impl DurationSetting {
    /// Wraps a duration.
    pub const fn new(duration: Duration) -> Self {
        DurationSetting(duration)
    }

    /// Minutes, for defaults.
    pub const fn minutes(m: u64) -> Self {
        DurationSetting(Duration::from_secs(m * 60))
    }

    /// Seconds, for defaults.
    pub const fn seconds(s: u64) -> Self {
        DurationSetting(Duration::from_secs(s))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for DurationSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for DurationSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let duration = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}): write it like `90s`, `5m` or `1h 30m`"
            ))
        })?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom(
                "a duration of zero is not allowed: use at least `1s`",
            ));
        }
        Ok(DurationSetting(duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names() {
        assert!(EnvironmentName::new("dev").is_ok());
        assert!(EnvironmentName::new("team-a2").is_ok());
        assert!(EnvironmentName::new("Dev").is_err());
        assert!(EnvironmentName::new("2dev").is_err());
        assert!(EnvironmentName::new("dev-").is_err());
        assert!(EnvironmentName::new("a--b").is_err());
        assert!(EnvironmentName::new("").is_err());
        assert!(EnvironmentName::new("a".repeat(21)).is_err());
        assert!(EnvironmentName::new("dev_1").is_err());
    }

    #[test]
    fn identifiers_and_images() {
        assert!(Identifier::new("app_db").is_ok());
        assert!(Identifier::new("App").is_err());
        assert!(Identifier::new("1db").is_err());
        assert!(ImageRef::new("postgres:16-alpine").is_ok());
        assert!(ImageRef::new("127.0.0.1:5000/x/postgres:r1").is_ok());
        assert!(ImageRef::new("postgres@sha256:abc").is_ok());
        assert!(ImageRef::new("postgres").is_err());
        assert!(ImageRef::new("127.0.0.1:5000/postgres").is_err());
        assert!(ImageRef::new("post gres:1").is_err());
    }

    #[test]
    fn ports_and_durations_parse_with_clear_errors() {
        let err = serde_yaml_ng::from_str::<Port>("70000").unwrap_err();
        assert!(
            err.to_string().contains("port 70000 is out of range"),
            "{err}"
        );
        assert!(serde_yaml_ng::from_str::<Port>("0").is_err());
        assert_eq!(serde_yaml_ng::from_str::<Port>("5432").unwrap().get(), 5432);
        let d: DurationSetting = serde_yaml_ng::from_str("1h 30m").unwrap();
        assert_eq!(d.get(), Duration::from_secs(5400));
        assert!(serde_yaml_ng::from_str::<DurationSetting>("soon").is_err());
        assert!(serde_yaml_ng::from_str::<DurationSetting>("0s").is_err());
    }
}
