//! Where an environment keeps the long-lived secrets it makes once and must never
//! lose by accident, such as the Sealed Secrets controller's key: a [`SecretStore`].
//!
//! The default is the state directory ([`StateSecretStore`], `credentials/<name>.json`,
//! 0600). A provider can offer one of its own (the AWS provider keeps them in AWS
//! Secrets Manager), so that the secret outlives one machine's state directory and is
//! shared by everyone who runs the environment.
//!
//! A store's contract, which `testing::conformance::secret_store_suite` (feature `testing`) checks
//! for any implementation:
//! - [`SecretStore::get`] never writes;
//! - [`SecretStore::create`] keeps the value only when the name holds nothing yet, and
//!   otherwise returns what is kept (a secret made once is never replaced);
//! - [`SecretStore::forget`] removes the value for good, and only what the store itself
//!   made: something else under the name is left alone, and said so.

use std::fmt;

use async_trait::async_trait;

use crate::secret::Secret;
use crate::state::{StateDir, write_private_file};
use crate::{Error, Result};

/// What [`SecretStore::forget`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forgotten {
    /// The value was removed.
    Removed,
    /// The name held nothing.
    Absent,
    /// The name holds a value the store did not make, left alone; the reason says why
    /// and what to do.
    Kept(String),
}

/// A place that keeps an environment's long-lived secrets by name.
///
/// Names are short identifiers (`sealed-secrets`); each store maps them to its own
/// (a file, a secret's name). Values are opaque strings (usually JSON), never logged.
#[async_trait]
pub trait SecretStore: fmt::Debug + Send + Sync {
    /// Where `name` is kept, for messages: a path, a secret's name and region. Holds
    /// no secret.
    fn location(&self, name: &str) -> String;

    /// Whether this is the state directory (callers adopt a key left there when the
    /// environment moves to another store).
    fn is_state_dir(&self) -> bool {
        false
    }

    /// The value kept under `name`, if any. Never writes.
    ///
    /// # Errors
    /// When the store cannot be read, or the name is unusable (a secret scheduled for
    /// deletion), with what to do.
    async fn get(&self, name: &str) -> Result<Option<Secret>>;

    /// Keeps `value` under `name` unless the name holds a value already, and returns
    /// the value that is kept: `value`, or the one that was there first.
    ///
    /// # Errors
    /// When the store cannot be written.
    async fn create(&self, name: &str, value: &Secret) -> Result<Secret>;

    /// Removes `name` for good, if the store made it.
    ///
    /// # Errors
    /// When the store cannot be written.
    async fn forget(&self, name: &str) -> Result<Forgotten>;
}

/// The state directory as a [`SecretStore`]: `credentials/<name>.json`, mode 0600,
/// written atomically.
#[derive(Debug, Clone)]
pub struct StateSecretStore {
    state: StateDir,
}

impl StateSecretStore {
    /// The store in `state`.
    pub fn new(state: StateDir) -> Self {
        StateSecretStore { state }
    }
}

#[async_trait]
impl SecretStore for StateSecretStore {
    fn location(&self, name: &str) -> String {
        self.state.credentials_path(name).display().to_string()
    }

    fn is_state_dir(&self) -> bool {
        true
    }

    async fn get(&self, name: &str) -> Result<Option<Secret>> {
        let path = self.state.credentials_path(name);
        match std::fs::read_to_string(&path) {
            Ok(value) => Ok(Some(Secret::new(value))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::internal(format!("cannot read the stored secret: {e}"))
                .with_resource(path.display().to_string())
                .with_hint("check the state directory's permissions, or restore the file from a backup")),
        }
    }

    async fn create(&self, name: &str, value: &Secret) -> Result<Secret> {
        if let Some(kept) = self.get(name).await? {
            return Ok(kept);
        }
        write_private_file(
            &self.state.credentials_path(name),
            value.expose().as_bytes(),
        )?;
        Ok(value.clone())
    }

    async fn forget(&self, name: &str) -> Result<Forgotten> {
        if !self.state.has_credentials(name) {
            return Ok(Forgotten::Absent);
        }
        self.state.remove_credentials(name)?;
        Ok(Forgotten::Removed)
    }
}
