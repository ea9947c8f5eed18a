//! An in-memory [`SecretStore`] that is not the state directory: what a provider's own
//! store (AWS Secrets Manager) looks like to the code that uses it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::Result;
use crate::secret::Secret;
use crate::secret_store::{Forgotten, SecretStore};

/// An in-memory secret store. Clones share their contents, so a test keeps one to look
/// inside while the code under test holds another. A value put there with
/// [`FakeSecretStore::put_foreign`] plays one the store did not make: it is read, and
/// `forget` keeps it.
#[derive(Clone, Default)]
pub struct FakeSecretStore {
    values: Arc<Mutex<BTreeMap<String, Entry>>>,
}

#[derive(Clone)]
struct Entry {
    value: Secret,
    ours: bool,
}

impl std::fmt::Debug for FakeSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSecretStore")
            .field("names", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FakeSecretStore {
    /// An empty store.
    pub fn new() -> Self {
        FakeSecretStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A test that panicked while holding the lock left whole values behind.
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `value` under `name` as if someone other than the store had.
    pub fn put_foreign(&self, name: &str, value: Secret) {
        self.lock()
            .insert(name.to_string(), Entry { value, ours: false });
    }

    /// The value under `name`, without going through the trait.
    pub fn peek(&self, name: &str) -> Option<Secret> {
        self.lock().get(name).map(|e| e.value.clone())
    }
}

#[async_trait]
impl SecretStore for FakeSecretStore {
    fn location(&self, name: &str) -> String {
        format!("the fake secret store's {name}")
    }

    async fn get(&self, name: &str) -> Result<Option<Secret>> {
        Ok(self.peek(name))
    }

    async fn create(&self, name: &str, value: &Secret) -> Result<Secret> {
        let mut values = self.lock();
        let entry = values.entry(name.to_string()).or_insert_with(|| Entry {
            value: value.clone(),
            ours: true,
        });
        Ok(entry.value.clone())
    }

    async fn forget(&self, name: &str) -> Result<Forgotten> {
        let mut values = self.lock();
        match values.get(name) {
            None => Ok(Forgotten::Absent),
            Some(entry) if !entry.ours => Ok(Forgotten::Kept(format!(
                "{name} was not made by the fake store"
            ))),
            Some(_) => {
                values.remove(name);
                Ok(Forgotten::Removed)
            }
        }
    }
}
