//! One environment: its configuration, its state directory and the ownership labels
//! that mark everything Comind creates for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::Result;
use crate::config::{Config, Profile};
use crate::state::StateDir;

/// Label (Docker, Kubernetes) or tag (AWS) naming the tool that owns a resource.
pub const LABEL_MANAGED_BY: &str = "comind.dev/managed-by";
/// Label or tag naming the environment a resource belongs to.
pub const LABEL_ENVIRONMENT: &str = "comind.dev/environment";
/// Label or tag naming the component (phase or service) a resource belongs to.
pub const LABEL_COMPONENT: &str = "comind.dev/component";
/// Label or tag holding a hash of the resource's desired spec.
pub const LABEL_SPEC_HASH: &str = "comind.dev/spec-hash";
/// The value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "comind";

/// An environment being bootstrapped: what every phase of a run shares.
#[derive(Debug)]
pub struct Environment {
    config: Arc<Config>,
    state: StateDir,
}

impl Environment {
    /// An environment from a loaded configuration. The state directory is
    /// `config.state_dir`, else the default location (see [`StateDir::default_root`]).
    ///
    /// # Errors
    /// When no state directory can be determined.
    pub fn new(config: Config) -> Result<Self> {
        let root = match &config.state_dir {
            Some(dir) => expand_home(dir),
            None => StateDir::default_root()?,
        };
        let state = StateDir::new(root, config.profile, config.environment.as_str());
        Ok(Environment {
            config: Arc::new(config),
            state,
        })
    }

    /// An environment with an explicit state directory root (tests, embedders).
    pub fn with_state_root(config: Config, root: impl Into<std::path::PathBuf>) -> Self {
        let state = StateDir::new(root.into(), config.profile, config.environment.as_str());
        Environment {
            config: Arc::new(config),
            state,
        }
    }

    /// The environment's name.
    pub fn name(&self) -> &str {
        self.config.environment.as_str()
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.config.profile
    }

    /// Whether this is a production environment.
    pub fn is_production(&self) -> bool {
        self.config.production
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The prefix of every resource name of this environment: `comind-<env>-`.
    pub fn resource_prefix(&self) -> String {
        format!("comind-{}-", self.name())
    }

    /// The conventional name of a resource: `comind-<env>-<component>`.
    pub fn resource_name(&self, component: &str) -> String {
        format!("comind-{}-{component}", self.name())
    }

    /// The ownership labels of a resource of `component` with desired spec
    /// `spec_hash` (see [`spec_hash`]).
    pub fn labels(&self, component: &str, spec_hash: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = self.selector(Some(component));
        if let Some(hash) = spec_hash {
            labels.insert(LABEL_SPEC_HASH.to_string(), hash.to_string());
        }
        labels
    }

    /// The labels that select this environment's resources, optionally of one
    /// component.
    pub fn selector(&self, component: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
        labels.insert(LABEL_ENVIRONMENT.to_string(), self.name().to_string());
        if let Some(component) = component {
            labels.insert(LABEL_COMPONENT.to_string(), component.to_string());
        }
        labels
    }

    /// Whether `labels` mark a resource as owned by this environment (and component,
    /// if given).
    pub fn owns(&self, labels: &BTreeMap<String, String>, component: Option<&str>) -> bool {
        self.selector(component)
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A short, stable hash of a desired spec, for the [`LABEL_SPEC_HASH`] label. Equal
/// specs give equal hashes across runs and machines.
///
/// Serialize only what defines the resource (image, ports, settings), never a secret:
/// the hash ends up in a label.
pub fn spec_hash(spec: &impl Serialize) -> String {
    // serde_json writes struct fields in declaration order and our maps are BTreeMaps,
    // so the encoding is canonical for a given type.
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn expand_home(path: &std::path::Path) -> std::path::PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => match std::env::var_os("HOME") {
            Some(home) => std::path::PathBuf::from(home).join(rest),
            None => path.to_path_buf(),
        },
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_ownership() {
        let env = Environment::with_state_root(Config::default(), "/tmp/x");
        let labels = env.labels("postgres", Some("abc"));
        assert_eq!(labels[LABEL_MANAGED_BY], "comind");
        assert_eq!(labels[LABEL_ENVIRONMENT], "dev");
        assert_eq!(labels[LABEL_COMPONENT], "postgres");
        assert!(env.owns(&labels, Some("postgres")));
        assert!(env.owns(&labels, None));
        assert!(!env.owns(&labels, Some("cache")));
        let mut other = labels.clone();
        other.insert(LABEL_ENVIRONMENT.to_string(), "prod".to_string());
        assert!(!env.owns(&other, None));
        assert_eq!(env.resource_name("postgres"), "comind-dev-postgres");
        assert_eq!(env.resource_prefix(), "comind-dev-");
    }

    #[test]
    fn spec_hash_is_stable_and_sensitive() {
        #[derive(Serialize)]
        struct Spec<'a> {
            image: &'a str,
            port: u16,
        }
        let a = spec_hash(&Spec {
            image: "pg:16",
            port: 5432,
        });
        assert_eq!(
            a,
            spec_hash(&Spec {
                image: "pg:16",
                port: 5432
            })
        );
        assert_ne!(
            a,
            spec_hash(&Spec {
                image: "pg:16",
                port: 5433
            })
        );
        assert_eq!(a.len(), 16);
    }
}
