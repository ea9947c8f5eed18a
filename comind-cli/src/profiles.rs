//! Which providers make up a profile, in this build.

use std::sync::Arc;

use comind_core::{Error, Profile, Provider};

/// The providers of `profile`, or an invalid-input error when this binary was built
/// without it.
pub fn providers(profile: Profile) -> Result<Vec<Arc<dyn Provider>>, Error> {
    match profile {
        Profile::Local => local(),
        Profile::Aws => aws(),
    }
}

/// Profiles this binary can run.
pub fn available() -> Vec<&'static str> {
    let mut list = Vec::new();
    if cfg!(feature = "local") {
        list.push("local");
    }
    if cfg!(feature = "aws") {
        list.push("aws");
    }
    list
}

#[cfg_attr(all(feature = "local", feature = "aws"), allow(dead_code))]
fn missing(profile: &str, feature: &str) -> Error {
    Error::invalid_input(format!(
        "the `{profile}` profile is not available in this build of comind"
    ))
    .with_hint(format!(
        "build with `cargo build -p comind-cli --features {feature}`, or choose another \
         profile (available: {})",
        if available().is_empty() {
            "none".to_string()
        } else {
            available().join(", ")
        }
    ))
}

#[cfg(feature = "local")]
fn local() -> Result<Vec<Arc<dyn Provider>>, Error> {
    Ok(vec![Arc::new(comind_local::LocalProvider::new())])
}

#[cfg(not(feature = "local"))]
fn local() -> Result<Vec<Arc<dyn Provider>>, Error> {
    Err(missing("local", "local"))
}

#[cfg(feature = "aws")]
fn aws() -> Result<Vec<Arc<dyn Provider>>, Error> {
    Ok(vec![Arc::new(comind_aws::AwsProvider::new())])
}

#[cfg(not(feature = "aws"))]
fn aws() -> Result<Vec<Arc<dyn Provider>>, Error> {
    Err(missing("aws", "aws"))
}
