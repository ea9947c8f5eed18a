//! The environments these tests compose: a local one on the stand-in images, and an
//! AWS one on a `moto_server`. The peers themselves, and the policy when one is
//! missing, come from `comind-test-support`.

use std::path::Path;
use std::sync::Arc;

use comind_core::config::Config;
use comind_core::{Bootstrap, Environment};
use comind_test_support::docker::{
    ELASTICMQ_IMAGE, LabelCleanup, MINIO_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE,
};
use comind_test_support::moto::Moto;
use comind_test_support::names::unique;
use comind_test_support::ports::free_port;

const LOCAL_IMAGES: [(&str, &str); 4] = [
    ("postgres", POSTGRES_IMAGE),
    ("object_store", MINIO_IMAGE),
    ("cache", REDIS_IMAGE),
    ("queue", ELASTICMQ_IMAGE),
];

/// A local environment on the test images and free ports; purged on drop, and
/// whatever the purge leaves is removed by its label.
pub struct LocalEnv {
    pub bootstrap: Bootstrap,
    _state: tempfile::TempDir,
    _leftovers: LabelCleanup,
}

impl LocalEnv {
    /// The local profile as the CLI composes it, plus `extra`, a phase of another
    /// team's, when given.
    pub fn new(extra: Option<Arc<dyn comind_core::Phase>>) -> LocalEnv {
        let state = tempfile::tempdir().unwrap();
        let name = unique("par");
        // The services alone: no cluster or registry, and no Argo CD, so no Git server.
        let mut yaml = format!(
            "environment: {name}\nlocal:\n  cluster:\n    enabled: false\ngitops:\n  argocd:\n    \
             enabled: false\nservices:\n"
        );
        for (service, image) in LOCAL_IMAGES {
            yaml.push_str(&format!(
                "  {service}:\n    local:\n      image: {image}\n      port: {}\n",
                free_port()
            ));
            if service == "object_store" {
                yaml.push_str(&format!("      console_port: {}\n", free_port()));
            }
        }
        let config = Config::from_yaml_str(&yaml, "comind.yaml").unwrap();
        let mut bootstrap = Bootstrap::new(Environment::with_state_root(config, state.path()));
        for provider in comind::providers(comind_core::Profile::Local).unwrap() {
            bootstrap = bootstrap.with_shared_provider(provider);
        }
        if let Some(phase) = extra {
            bootstrap = bootstrap.with_shared_phase(phase);
        }
        LocalEnv {
            bootstrap,
            _state: state,
            _leftovers: LabelCleanup::new(name),
        }
    }
}

impl Drop for LocalEnv {
    fn drop(&mut self) {
        let purge = comind_core::engine::RunOptions {
            destroy: comind_core::DestroyOptions { purge: true },
            ..Default::default()
        };
        let bootstrap = &self.bootstrap;
        // Drop may run inside the test's runtime, where blocking is not allowed: clean
        // up on a thread with a runtime of its own.
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Ok(runtime) = tokio::runtime::Runtime::new() {
                    let _ = runtime.block_on(bootstrap.down(&purge, &Default::default()));
                }
            });
        });
    }
}

/// A bootstrap of an AWS environment on `moto`, with its state under `state`.
pub fn aws_bootstrap(moto: &Moto, state: &Path) -> Bootstrap {
    let yaml = format!("environment: {}\nprofile: aws\n", unique("par"));
    let config = Config::from_yaml_str(&yaml, "comind.yaml").unwrap();
    Bootstrap::new(Environment::with_state_root(config, state))
        .with_provider(comind_aws::AwsProvider::from_sdk_config(moto.sdk_config()))
}
