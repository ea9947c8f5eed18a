//! # comind
//!
//! Comind as one crate: the profiles (which providers make up `local` and `aws`) and
//! the [`Bootstrap`] the `comind` CLI runs, so an embedder gets exactly what the CLI
//! does without copying its composition. Each profile is a cargo feature (`local`,
//! `aws`; both by default), so a program that needs one profile does not compile the
//! other's SDKs. The in-cluster layer ([`gitops`]) joins every profile. The provider
//! crates stay available under [`local`], [`aws`] and [`gitops`].
//!
//! An embedder adds phases of its own with [`Bootstrap::with_phase`]: they join the
//! profile's graph, may depend on its phases (`postgres`, `network`), and are planned,
//! applied, retried, reported and destroyed by the same engine.
//!
//! ```no_run
//! # async fn demo() -> Result<(), comind::core::Error> {
//! use comind::core::config::{Config, LoadOptions};
//! use comind::core::engine::RunOptions;
//!
//! let config = Config::load(&LoadOptions::from_process(None))?;
//! let bootstrap = comind::bootstrap(config)?;
//! let report = bootstrap.up(&RunOptions::default(), &Default::default()).await?;
//! assert!(report.succeeded());
//! # Ok(()) }
//! ```

use std::sync::Arc;

#[cfg(any(feature = "local", feature = "aws"))]
pub mod backups;

pub use comind_core as core;
use comind_core::config::SecretStoreKind;
use comind_core::{
    Bootstrap, Environment, Error, Profile, Provider, SecretStore, StateSecretStore,
};
pub use comind_gitops as gitops;

#[cfg(feature = "aws")]
pub use comind_aws as aws;
#[cfg(feature = "local")]
pub use comind_local as local;

/// The profiles this build can run.
pub fn available_profiles() -> Vec<Profile> {
    let mut list = Vec::new();
    if cfg!(feature = "local") {
        list.push(Profile::Local);
    }
    if cfg!(feature = "aws") {
        list.push(Profile::Aws);
    }
    list
}

/// The providers that make up `profile`, with the environment's long-lived secrets in
/// the state directory. [`bootstrap`] composes the same providers and honours
/// `aws.secret_store`.
///
/// # Errors
/// `InvalidInput` when this build was compiled without the profile's feature, naming
/// the feature to enable and the profiles that are available.
pub fn providers(profile: Profile) -> Result<Vec<Arc<dyn Provider>>, Error> {
    compose(profile, None)
}

// Only the aws profile has a store of its own.
#[cfg_attr(not(feature = "aws"), allow(unused_variables))]
fn compose(
    profile: Profile,
    env: Option<&Arc<Environment>>,
) -> Result<Vec<Arc<dyn Provider>>, Error> {
    // The secret store is the profile's when it has one (with the same SDK
    // configuration as its phases), else the state directory (the gitops default).
    let (own, store): (Arc<dyn Provider>, Option<Arc<dyn SecretStore>>) = match profile {
        #[cfg(feature = "local")]
        Profile::Local => (Arc::new(comind_local::LocalProvider::new()), None),
        #[cfg(feature = "aws")]
        Profile::Aws => {
            let aws = comind_aws::AwsProvider::new();
            let store = env.map(|env| store_of(env, Some(&aws)));
            (Arc::new(aws), store)
        }
        #[allow(unreachable_patterns)]
        other => return Err(missing(other)),
    };
    let gitops = comind_gitops::GitopsProvider::new();
    let gitops = match store {
        Some(store) => gitops.with_secret_store(store),
        None => gitops,
    };
    // The platform inside the cluster is the same on every profile.
    Ok(vec![own, Arc::new(gitops)])
}

/// Where `env` keeps its long-lived secrets (the Sealed Secrets controller's key):
/// AWS Secrets Manager on the aws profile with `aws.secret_store: secrets-manager`,
/// else the state directory. What `comind seal` reads the key from.
///
/// # Errors
/// `InvalidInput` when the environment asks for Secrets Manager and this build has
/// no `aws` profile.
pub fn secret_store(env: &Arc<Environment>) -> Result<Arc<dyn SecretStore>, Error> {
    #[cfg(feature = "aws")]
    {
        Ok(store_of(env, None))
    }
    #[cfg(not(feature = "aws"))]
    {
        if wants_secrets_manager(env) {
            return Err(missing(Profile::Aws));
        }
        Ok(Arc::new(StateSecretStore::new(env.state().clone())))
    }
}

fn wants_secrets_manager(env: &Environment) -> bool {
    env.config().profile == Profile::Aws
        && env.config().aws.secret_store == SecretStoreKind::SecretsManager
}

/// `env`'s secret store, with `aws`'s SDK configuration when it is given.
#[cfg(feature = "aws")]
fn store_of(env: &Arc<Environment>, aws: Option<&comind_aws::AwsProvider>) -> Arc<dyn SecretStore> {
    if wants_secrets_manager(env) {
        let aws = aws.cloned().unwrap_or_else(comind_aws::AwsProvider::new);
        Arc::new(aws.secret_store(env.clone()))
    } else {
        Arc::new(StateSecretStore::new(env.state().clone()))
    }
}

/// The bootstrap of the environment `config` describes, with its profile's providers:
/// what every `comind` command runs. Add phases of your own with
/// [`Bootstrap::with_phase`] before running it.
///
/// # Errors
/// `InvalidInput` when the profile is not in this build; the errors of
/// [`Environment::new`] (an unusable state directory).
pub fn bootstrap(config: comind_core::Config) -> Result<Bootstrap, Error> {
    let profile = config.profile;
    let mut bootstrap = Bootstrap::new(Environment::new(config)?);
    let env = bootstrap.env().clone();
    for provider in compose(profile, Some(&env))? {
        bootstrap = bootstrap.with_shared_provider(provider);
    }
    Ok(bootstrap)
}

fn missing(profile: Profile) -> Error {
    let available: Vec<&str> = available_profiles().iter().map(|p| p.as_str()).collect();
    Error::invalid_input(format!(
        "the `{}` profile is not available in this build of comind",
        profile.as_str()
    ))
    .with_hint(format!(
        "build with the `{}` cargo feature (for the CLI: `cargo build -p comind-cli \
         --features {}`), or choose another profile (available: {})",
        profile.as_str(),
        profile.as_str(),
        if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_of_this_build_has_providers_and_the_others_say_how_to_get_them() {
        for profile in [Profile::Local, Profile::Aws] {
            let result = providers(profile);
            if available_profiles().contains(&profile) {
                let providers = result.unwrap();
                assert_eq!(providers.len(), 2);
                assert_eq!(providers[0].name(), profile.as_str());
                assert_eq!(providers[1].name(), "gitops");
            } else {
                let err = result.err().unwrap();
                assert_eq!(err.kind(), comind_core::ErrorKind::InvalidInput);
                assert!(err.hint().unwrap_or_default().contains("--features"));
            }
        }
    }

    #[test]
    fn the_bootstrap_holds_the_profiles_phases_and_the_embedders_own() {
        use comind_core::testing::{FakePhase, World};
        let state = tempfile::tempdir().unwrap();
        let mut config = comind_core::Config::default();
        config.state_dir = Some(state.path().to_path_buf());
        let Ok(bootstrap) = bootstrap(config) else {
            // A build without the local profile cannot compose the default config.
            assert!(!available_profiles().contains(&Profile::Local));
            return;
        };
        let world = World::new();
        let bootstrap = bootstrap
            .with_phase(FakePhase::new("billing-migrations", &world).with_deps(&["postgres"]));
        let ids: Vec<String> = bootstrap
            .engine()
            .unwrap()
            .graph()
            .ids()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(ids.contains(&"postgres".to_string()), "{ids:?}");
        assert!(ids.contains(&"billing-migrations".to_string()), "{ids:?}");
    }

    #[cfg(feature = "aws")]
    #[test]
    fn the_secret_store_is_secrets_manager_only_when_the_aws_environment_asks() {
        let state = tempfile::tempdir().unwrap();
        let mut config = comind_core::Config::default();
        config.profile = Profile::Aws;
        let default = Arc::new(Environment::with_state_root(config.clone(), state.path()));
        let store = secret_store(&default).unwrap();
        assert!(store.is_state_dir(), "{store:?}");
        config.aws.secret_store = SecretStoreKind::SecretsManager;
        let env = Arc::new(Environment::with_state_root(config, state.path()));
        let store = secret_store(&env).unwrap();
        assert!(!store.is_state_dir());
        assert!(
            store.location("sealed-secrets").contains("Secrets Manager"),
            "{}",
            store.location("sealed-secrets")
        );
    }
}
