//! The private registry on the real Docker engine, with the Distribution stand-in
//! image: the core phase suite, then pushes with and without the generated
//! credentials through the real `docker` CLI (its own configuration directory, so
//! the machine's logins are neither used nor changed).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use comind_core::testing::conformance::{PhaseFixture, phase_suite};
use comind_core::{Environment, Operation, Outputs, Phase, PhaseContext, PhaseId, Result};
use comind_local::registry::{
    OUTPUT_REGISTRY_CLUSTER_NAME, OUTPUT_REGISTRY_PASSWORD, OUTPUT_REGISTRY_URL,
    OUTPUT_REGISTRY_USER,
};
use comind_local::{LocalProvider, NetworkPhase, RegistryPhase};
use comind_test_support::docker::{self, REGISTRY_IMAGE};
use comind_test_support::require_peer;

use crate::support::{self, TestEnv};

struct RegistryFixture {
    env: Arc<Environment>,
    inputs: HashMap<PhaseId, Outputs>,
    docker: Docker,
    name: String,
}

#[async_trait]
impl PhaseFixture for RegistryFixture {
    fn phase(&self) -> Arc<dyn Phase> {
        Arc::new(RegistryPhase::new(
            LocalProvider::new().docker(self.env.config()),
        ))
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    fn inputs(&self) -> HashMap<PhaseId, Outputs> {
        self.inputs.clone()
    }

    async fn owned_resources(&self) -> Result<Vec<String>> {
        let owned = support::owned(&self.docker, &self.name, Some("registry")).await;
        let mut names = owned.containers;
        names.extend(owned.volumes);
        Ok(names)
    }
}

/// The network of `t`, applied; its outputs.
async fn network(t: &TestEnv) -> Outputs {
    let env = t.env();
    let ctx = PhaseContext::standalone(
        PhaseId::new("network"),
        Operation::Apply,
        env.clone(),
        HashMap::new(),
    );
    NetworkPhase::new(LocalProvider::new().docker(env.config()))
        .apply(&ctx)
        .await
        .unwrap()
        .outputs
}

#[tokio::test]
async fn the_registry_passes_the_phase_suite() {
    let docker = require_peer!(docker::ready(&[REGISTRY_IMAGE]).await);
    let t = TestEnv::new(&docker, "reg");
    let net = network(&t).await;
    phase_suite(&RegistryFixture {
        env: t.env(),
        inputs: HashMap::from([(PhaseId::new("network"), net)]),
        docker: docker.clone(),
        name: t.name.clone(),
    })
    .await;
    assert!(
        t.credential_files().is_empty(),
        "credentials left after the suite's purge: {:?}",
        t.credential_files()
    );
}

/// `docker` with a configuration directory of its own.
fn docker_cli(config_dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A one-file image holding `body`, small enough to push in a moment.
fn tiny_image(config_dir: &std::path::Path, tag: &str, body: &[u8]) {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, "hello.txt", body).unwrap();
    let tar = archive.into_inner().unwrap();
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config_dir)
        .args(["import", "-", tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(child.wait().unwrap().success(), "docker import {tag}");
}

#[tokio::test]
async fn pushes_need_the_generated_credentials() {
    let docker = require_peer!(docker::ready(&[REGISTRY_IMAGE]).await);
    let mut t = TestEnv::new(&docker, "push");
    // The environment has a registry of Comind's (only its phase runs here).
    t.config.local.cluster.enabled = true;
    let net = network(&t).await;
    let env = t.env();
    let ctx = PhaseContext::standalone(
        PhaseId::new("registry"),
        Operation::Apply,
        env.clone(),
        HashMap::from([(PhaseId::new("network"), net)]),
    );
    let registry = RegistryPhase::new(LocalProvider::new().docker(env.config()));
    let applied = registry.apply(&ctx).await.unwrap();
    let out = &applied.outputs;
    let url = out.require(OUTPUT_REGISTRY_URL).unwrap().to_string();
    assert_eq!(
        url,
        format!("127.0.0.1:{}", t.config.local.cluster.registry_port.get())
    );
    assert_eq!(
        out.require(OUTPUT_REGISTRY_CLUSTER_NAME).unwrap(),
        format!("comind-{}-registry:5000", t.name)
    );
    assert!(out.get(OUTPUT_REGISTRY_PASSWORD).unwrap().is_secret());

    let config_dir = tempfile::tempdir().unwrap();
    let image = format!("{url}/comind-test/tiny-{}:1", t.name);
    tiny_image(config_dir.path(), &image, b"comind registry test, first\n");
    t.remove_image_later(&image);

    let (pushed, text) = docker_cli(config_dir.path(), &["push", &image], None);
    assert!(!pushed, "an unauthenticated push is refused: {text}");
    assert!(
        text.contains("no basic auth credentials") || text.contains("unauthorized"),
        "{text}"
    );

    let user = out.require(OUTPUT_REGISTRY_USER).unwrap();
    let password = out.require(OUTPUT_REGISTRY_PASSWORD).unwrap();
    let (wrong, text) = docker_cli(
        config_dir.path(),
        &["login", &url, "-u", user, "--password-stdin"],
        Some("not-the-password"),
    );
    assert!(!wrong, "a wrong password is refused: {text}");
    let (logged_in, text) = docker_cli(
        config_dir.path(),
        &["login", &url, "-u", user, "--password-stdin"],
        Some(password),
    );
    assert!(logged_in, "{text}");
    let (pushed, text) = docker_cli(config_dir.path(), &["push", &image], None);
    assert!(
        pushed,
        "a push with the generated credentials works: {text}"
    );

    // The tag moves to another image: the first one's layer is referenced by no
    // tag, and the collector deletes it.
    let first = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &image])
        .output()
        .unwrap();
    let first = String::from_utf8(first.stdout).unwrap().trim().to_string();
    tiny_image(config_dir.path(), &image, b"comind registry test, second\n");
    // The first image lost its tag: the label cleanup cannot find it by name.
    t.remove_image_later(&first);
    let (pushed, text) = docker_cli(config_dir.path(), &["push", &image], None);
    assert!(pushed, "{text}");
    let collected = registry.garbage_collect(&env).await.unwrap();
    assert!(
        collected.deleted_blobs > 0,
        "the untagged layer is deleted: {}",
        collected.output
    );

    // A second apply changes nothing and keeps the same credentials.
    let again = registry.apply(&ctx).await.unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.outputs, applied.outputs);
}
