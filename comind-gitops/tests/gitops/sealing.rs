//! Sealing, judged by the Sealed Secrets controller's own code: `sealed-secrets-oracle`
//! of `../shared/test-peers` (the controller's `pkg/crypto`) unseals what Comind seals,
//! for every scope, and refuses it under another name or namespace where the scope
//! says so. The SealedSecret objects Comind writes are accepted by the real CRD on the
//! test API server.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use comind_gitops::platform::sealing_key;
use comind_gitops::sealing::{self, PlainSecret, Scope, SealingCertificate, SealingKey};
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::{names, oracles, require_peer};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;

use crate::support;

/// A key pair made by the controller's code, once per test binary.
struct OracleKey {
    private_key: PathBuf,
    certificate: PathBuf,
}

fn oracle() -> Result<PathBuf, comind_test_support::Missing> {
    oracles::unpacked(oracles::SEALED_SECRETS)
}

fn oracle_key(oracle: &Path) -> &'static OracleKey {
    static KEY: OnceLock<OracleKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let key = OracleKey {
            private_key: dir.join("tls.key"),
            certificate: dir.join("tls.crt"),
        };
        oracles::run(
            oracle,
            &[
                "keygen",
                key.private_key.to_str().unwrap(),
                key.certificate.to_str().unwrap(),
            ],
            b"",
        )
        .unwrap();
        key
    })
}

/// The oracle's unsealing of one value (`encryptedData`'s base64) under `label`.
fn unseal(oracle: &Path, private_key: &Path, label: &str, sealed: &str) -> Result<Vec<u8>, String> {
    oracles::run(
        oracle,
        &["unseal", private_key.to_str().unwrap(), label],
        sealed.as_bytes(),
    )
}

fn secret_of(name: &str, namespace: &str) -> PlainSecret {
    let mut secret = PlainSecret::new(name, namespace).unwrap();
    secret.insert("password", b"s3cr3t-value".to_vec()).unwrap();
    // Not UTF-8, and longer than an RSA block: the AES part carries it.
    secret
        .insert("blob", (0..=255u8).cycle().take(5000).collect())
        .unwrap();
    secret
}

#[test]
fn every_scope_unseals_with_the_controllers_code_where_it_may_and_nowhere_else() {
    let oracle = require_peer!(oracle());
    let key = oracle_key(&oracle);
    let cert =
        SealingCertificate::from_pem(&std::fs::read_to_string(&key.certificate).unwrap()).unwrap();
    let plain = secret_of("db", "team-a");
    for scope in [Scope::Strict, Scope::NamespaceWide, Scope::ClusterWide] {
        let sealed = sealing::seal(&cert, &plain, scope).unwrap();
        let data = sealed.encrypted_data();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["blob", "password"]);
        let label = scope.label("team-a", "db");
        let password = unseal(&oracle, &key.private_key, &label, &data["password"]).unwrap();
        assert_eq!(password, b"s3cr3t-value", "{scope}");
        let blob = unseal(&oracle, &key.private_key, &label, &data["blob"]).unwrap();
        assert_eq!(
            blob,
            (0..=255u8).cycle().take(5000).collect::<Vec<_>>(),
            "{scope}"
        );

        // Where else it decrypts: the label of the same value moved elsewhere.
        let renamed = unseal(
            &oracle,
            &key.private_key,
            &scope.label("team-a", "other"),
            &data["password"],
        );
        let moved = unseal(
            &oracle,
            &key.private_key,
            &scope.label("team-b", "db"),
            &data["password"],
        );
        match scope {
            Scope::Strict => {
                assert!(renamed.is_err(), "strict: another name must not decrypt");
                assert!(moved.is_err(), "strict: another namespace must not decrypt");
            }
            Scope::NamespaceWide => {
                assert_eq!(renamed.unwrap(), b"s3cr3t-value");
                assert!(
                    moved.is_err(),
                    "namespace-wide: another namespace must not decrypt"
                );
            }
            Scope::ClusterWide => {
                assert_eq!(renamed.unwrap(), b"s3cr3t-value");
                assert_eq!(moved.unwrap(), b"s3cr3t-value");
            }
        }
        // The manifest says the scope to the controller, and holds no plain value.
        let yaml = sealed.to_yaml().unwrap();
        assert!(!yaml.contains("s3cr3t"), "{yaml}");
        let annotated = |a: &str| {
            yaml.contains(&format!("{a}: 'true'")) || yaml.contains(&format!("{a}: \"true\""))
        };
        assert_eq!(
            annotated(sealing::NAMESPACE_WIDE_ANNOTATION),
            scope == Scope::NamespaceWide,
            "{yaml}"
        );
        assert_eq!(
            annotated(sealing::CLUSTER_WIDE_ANNOTATION),
            scope == Scope::ClusterWide,
            "{yaml}"
        );
    }
}

#[test]
fn two_seals_of_one_value_differ_and_both_unseal() {
    let oracle = require_peer!(oracle());
    let key = oracle_key(&oracle);
    let cert =
        SealingCertificate::from_pem(&std::fs::read_to_string(&key.certificate).unwrap()).unwrap();
    let plain = secret_of("db", "team-a");
    let first = sealing::seal(&cert, &plain, Scope::Strict).unwrap();
    let second = sealing::seal(&cert, &plain, Scope::Strict).unwrap();
    // A fresh session key per value: the zero nonce is never reused under one key.
    assert_ne!(
        first.encrypted_data()["password"],
        second.encrypted_data()["password"]
    );
    for sealed in [first, second] {
        let out = unseal(
            &oracle,
            &key.private_key,
            "team-a/db",
            &sealed.encrypted_data()["password"],
        );
        assert_eq!(out.unwrap(), b"s3cr3t-value");
    }
}

/// Comind's own key pair is one the controller can use: the oracle unseals with
/// Comind's private key what it sealed with Comind's certificate, and what Comind
/// sealed.
#[test]
fn a_key_comind_generates_is_usable_by_the_controllers_code() {
    let oracle = require_peer!(oracle());
    let key = SealingKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let private_key = dir.path().join("tls.key");
    let certificate = dir.path().join("tls.crt");
    std::fs::write(&private_key, key.private_key_pem().expose()).unwrap();
    std::fs::write(&certificate, key.certificate_pem()).unwrap();

    let by_oracle = oracles::run(
        &oracle,
        &["seal", certificate.to_str().unwrap(), "ns/name"],
        b"from-the-oracle",
    )
    .unwrap();
    let by_oracle = String::from_utf8(by_oracle).unwrap();
    assert_eq!(
        unseal(&oracle, &private_key, "ns/name", by_oracle.trim()).unwrap(),
        b"from-the-oracle"
    );
    let sealed = sealing::encrypt(&key.certificate().unwrap(), b"ns/name", b"from-comind").unwrap();
    let sealed = base64::engine::general_purpose::STANDARD.encode(sealed);
    assert_eq!(
        unseal(&oracle, &private_key, "ns/name", &sealed).unwrap(),
        b"from-comind"
    );
}

/// The SealedSecret CRD of the Sealed Secrets chart, installed once (cluster-wide,
/// shared by the tests that need it; server-side apply makes a second install a no-op).
pub async fn install_sealed_secret_crd(admin: &kube::Client) {
    let path = oracles::test_peers().join("reference/sealed-secrets-crd.yaml");
    let crd: CustomResourceDefinition =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("comind-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let established = kube::runtime::wait::await_condition(
        crds,
        &name,
        kube::runtime::conditions::is_crd_established(),
    );
    tokio::time::timeout(std::time::Duration::from_secs(60), established)
        .await
        .expect("the SealedSecret CRD is established within 60 s")
        .unwrap();
}

#[tokio::test]
async fn the_real_crd_accepts_what_comind_writes() {
    let peer = require_peer!(KubePeer::shared());
    let oracle = require_peer!(oracle());
    let key = oracle_key(&oracle);
    let cert =
        SealingCertificate::from_pem(&std::fs::read_to_string(&key.certificate).unwrap()).unwrap();
    let admin = support::client(peer, User::Admin).await;
    install_sealed_secret_crd(&admin).await;
    let ns = names::unique("sealed");
    support::create_namespace(&admin, &ns).await;
    let resource = ApiResource {
        group: "bitnami.com".into(),
        version: "v1alpha1".into(),
        api_version: "bitnami.com/v1alpha1".into(),
        kind: "SealedSecret".into(),
        plural: "sealedsecrets".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &resource);
    for (name, scope) in [
        ("strict", Scope::Strict),
        ("ns-wide", Scope::NamespaceWide),
        ("cluster-wide", Scope::ClusterWide),
    ] {
        let mut plain = secret_of(name, &ns);
        plain.set_type("kubernetes.io/basic-auth");
        let sealed = sealing::seal(&cert, &plain, scope).unwrap();
        let object: DynamicObject = serde_json::from_value(sealed.to_json().unwrap()).unwrap();
        let created = api.create(&PostParams::default(), &object).await.unwrap();
        assert_eq!(
            created.data["spec"]["template"]["type"],
            "kubernetes.io/basic-auth"
        );
        assert_eq!(
            created.data["spec"]["encryptedData"]["password"],
            sealed.encrypted_data()["password"].as_str()
        );
    }
    support::delete_namespace(&admin, &ns).await;
}

/// The certificate of an environment: its stored key when it has one; else the
/// controller's, through the API server's service proxy, and a clear error naming the
/// controller's Service when that does not answer (no controller runs here: there is
/// no kubelet, so this test shows the failure, not a fetched certificate).
#[tokio::test]
async fn the_environment_certificate_comes_from_the_state_or_the_controller() {
    let peer = require_peer!(KubePeer::shared());
    let state = tempfile::tempdir().unwrap();
    let env = support::env(peer, "sealcert", state.path(), |_| {});
    let err = sealing::environment_certificate(&env, &state_store(&env))
        .await
        .unwrap_err();
    let text = format!("{err} {}", err.hint().unwrap_or_default());
    assert!(
        text.contains("platform/sealed-secrets-controller"),
        "{text}"
    );
    assert!(text.contains("--cert"), "{text}");

    let key = SealingKey::generate().unwrap();
    env.state()
        .credentials(sealing::CREDENTIALS, || Ok(key.clone()))
        .unwrap();
    let (cert, origin) = sealing::environment_certificate(&env, &state_store(&env))
        .await
        .unwrap();
    assert!(
        matches!(origin, sealing::CertificateOrigin::Stored(_)),
        "{origin}"
    );
    assert_eq!(cert.not_after(), key.certificate().unwrap().not_after());
}

/// The environment's state directory as its secret store (the default).
fn state_store(env: &comind_core::Environment) -> comind_core::StateSecretStore {
    comind_core::StateSecretStore::new(env.state().clone())
}

/// `platform/sealing-key` with what it needs (the baseline's namespaces), through
/// `Bootstrap` as the CLI runs it.
fn sealing_key_run() -> comind_core::engine::RunOptions {
    comind_core::engine::RunOptions {
        only: vec![comind_core::PhaseId::new(sealing_key::ID)],
        ..Default::default()
    }
}

fn bootstrap(env: &comind_core::Environment, state: &Path) -> comind_core::Bootstrap {
    comind_core::Bootstrap::new(comind_core::Environment::with_state_root(
        env.config().clone(),
        state,
    ))
    .with_provider(comind_gitops::GitopsProvider::new().binding(&[]))
}

async fn key_secret(admin: &kube::Client) -> Option<k8s_openapi::api::core::v1::Secret> {
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        admin.clone(),
        sealing::CONTROLLER_NAMESPACE,
    )
    .get_opt(sealing_key::SECRET_NAME)
    .await
    .unwrap()
}

/// The key's life: made once and given to the controller's namespace before the
/// controller (a plan writes nothing); adopted from the cluster when the state
/// directory lost it (here, a key the controller made itself, by the controller's own
/// code, so what it sealed still decrypts); kept by a plain `down` and given back by
/// the next `up`; forgotten only by `down --purge`, which says so.
#[tokio::test]
async fn the_sealing_key_is_made_once_adopted_when_lost_and_forgotten_only_by_purge() {
    use comind_core::{Action, DownOptions, UpOptions};
    use k8s_openapi::api::core::v1::Secret;
    let peer = require_peer!(KubePeer::shared());
    let oracle = require_peer!(oracle());
    let _platform = support::cluster_wide(peer).await;
    let admin = support::client(peer, User::Admin).await;
    let state = tempfile::tempdir().unwrap();
    let env = support::env(peer, "sealkey", state.path(), |c| {
        support::with_argocd(c);
        // A repository of its own: no local Git server phase in this bootstrap.
        c.gitops.repo.url = "https://git.example.com/platform/gitops.git".into();
    });
    support::settled(&admin, &env).await;
    let stored = env.state().credentials_path(sealing::CREDENTIALS);

    // A plan lists the key Secret, and writes neither it nor the key.
    let plan = bootstrap(&env, state.path())
        .plan(&sealing_key_run())
        .await
        .unwrap();
    let planned = &plan.plans[&comind_core::PhaseId::new(sealing_key::ID)];
    assert!(
        planned
            .changes
            .iter()
            .any(|c| c.action == Action::Create && c.name.ends_with(sealing_key::SECRET_NAME)),
        "{planned:?}"
    );
    assert!(!stored.exists());

    let up = bootstrap(&env, state.path())
        .up(&sealing_key_run(), &UpOptions::default())
        .await
        .unwrap();
    assert!(up.succeeded(), "{:?}", up.summary);
    let key = sealing::stored_key(&state_store(&env))
        .await
        .unwrap()
        .expect("the key is stored");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = key_secret(&admin).await.expect("the key Secret is there");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()[sealing_key::KEY_LABEL],
        "active"
    );
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data["tls.crt"].0, key.certificate_pem().as_bytes());
    assert_eq!(data["tls.key"].0, key.private_key_pem().expose().as_bytes());
    // The key is in no event of the run.
    let log = std::fs::read_to_string(env.state().event_log_path()).unwrap_or_default();
    assert!(!log.contains("PRIVATE KEY"), "{log}");

    // Again: the same key, and nothing to change.
    let plan = bootstrap(&env, state.path())
        .plan(&sealing_key_run())
        .await
        .unwrap();
    assert_eq!(plan.summary.changes, 0, "{:?}", plan.plans);

    // A rebuilt cluster whose controller made a key of its own, and a lost state
    // directory: the controller's key is adopted.
    Api::<Secret>::namespaced(admin.clone(), sealing::CONTROLLER_NAMESPACE)
        .delete(sealing_key::SECRET_NAME, &Default::default())
        .await
        .unwrap();
    let controller_key = oracle_key(&oracle);
    let controllers: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sealed-secrets-keyx7k2p", "namespace": sealing::CONTROLLER_NAMESPACE,
                     "labels": {sealing_key::KEY_LABEL: "active"}},
        "type": "kubernetes.io/tls",
        "stringData": {
            "tls.crt": std::fs::read_to_string(&controller_key.certificate).unwrap(),
            "tls.key": std::fs::read_to_string(&controller_key.private_key).unwrap(),
        }
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), sealing::CONTROLLER_NAMESPACE)
        .create(&PostParams::default(), &controllers)
        .await
        .unwrap();
    std::fs::remove_file(&stored).unwrap();
    // The controller, running (a Pod of its labels; no kubelet runs it): it is
    // restarted once the key Secret is written, since it reads keys only at start.
    use k8s_openapi::api::core::v1::Pod;
    let pods = Api::<Pod>::namespaced(admin.clone(), sealing::CONTROLLER_NAMESPACE);
    let controller: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sealed-secrets-controller-7d9f", "labels": {"app.kubernetes.io/name": "sealed-secrets"}},
        "spec": {"containers": [{"name": "controller", "image": "bitnami/sealed-secrets-controller:0.36.1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &controller)
        .await
        .unwrap();
    let up = bootstrap(&env, state.path())
        .up(&sealing_key_run(), &UpOptions::default())
        .await
        .unwrap();
    assert!(up.succeeded(), "{:?}", up.summary);
    assert!(
        pods.get_opt("sealed-secrets-controller-7d9f")
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "the controller is restarted"
    );
    let adopted = sealing::stored_key(&state_store(&env))
        .await
        .unwrap()
        .expect("the key is adopted");
    assert_eq!(
        adopted.certificate_pem().trim(),
        std::fs::read_to_string(&controller_key.certificate)
            .unwrap()
            .trim()
    );
    let (cert, _) = sealing::environment_certificate(&env, &state_store(&env))
        .await
        .unwrap();
    let sealed = sealing::seal(&cert, &secret_of("db", "team-a"), Scope::Strict).unwrap();
    let value = unseal(
        &oracle,
        &controller_key.private_key,
        "team-a/db",
        &sealed.encrypted_data()["password"],
    );
    assert_eq!(
        value.unwrap(),
        b"s3cr3t-value",
        "what the adopted key seals, the controller's key unseals"
    );

    // A stored key that is not the cluster's: refused, and neither is replaced.
    let other = SealingKey::generate().unwrap();
    std::fs::remove_file(&stored).unwrap();
    env.state()
        .credentials(sealing::CREDENTIALS, || Ok(other.clone()))
        .unwrap();
    let refused = bootstrap(&env, state.path())
        .up(&sealing_key_run(), &UpOptions::default())
        .await
        .unwrap();
    assert!(!refused.succeeded());
    let phase = refused
        .summary
        .phases
        .iter()
        .find(|p| p.id.as_str() == sealing_key::ID)
        .unwrap();
    let error = format!("{:?}", phase.error);
    assert!(
        error.contains("not the environment's stored key"),
        "{error}"
    );
    let secret = key_secret(&admin).await.unwrap();
    assert_eq!(
        secret.data.unwrap()["tls.crt"].0,
        adopted.certificate_pem().as_bytes(),
        "the cluster's key stays"
    );
    std::fs::remove_file(&stored).unwrap();
    env.state()
        .credentials(sealing::CREDENTIALS, || Ok(adopted.clone()))
        .unwrap();

    // A plain down: the Secret goes with the platform, the key stays, and says why.
    let down = bootstrap(&env, state.path())
        .down(&sealing_key_run(), &DownOptions::default())
        .await
        .unwrap();
    assert!(down.succeeded(), "{:?}", down.summary);
    let kept = &down.destroyed[&comind_core::PhaseId::new(sealing_key::ID)].kept;
    assert!(
        kept.iter()
            .any(|k| k.kind == "sealing-key" && k.reason.contains("--purge")),
        "{kept:?}"
    );
    assert!(stored.exists());
    assert!(key_secret(&admin).await.is_none());

    // Up again: the same key is given back.
    let up = bootstrap(&env, state.path())
        .up(&sealing_key_run(), &UpOptions::default())
        .await
        .unwrap();
    assert!(up.succeeded(), "{:?}", up.summary);
    let secret = key_secret(&admin).await.expect("the key Secret is back");
    assert_eq!(
        secret.data.unwrap()["tls.crt"].0,
        adopted.certificate_pem().as_bytes()
    );

    // Only a purge forgets it.
    let mut purge = sealing_key_run();
    purge.destroy.purge = true;
    let down = bootstrap(&env, state.path())
        .down(&purge, &DownOptions::default())
        .await
        .unwrap();
    assert!(down.succeeded(), "{:?}", down.summary);
    let changes = &down.destroyed[&comind_core::PhaseId::new(sealing_key::ID)].changes;
    assert!(
        changes
            .iter()
            .any(|c| c.kind == "sealing-key" && c.action == Action::Delete),
        "{changes:?}"
    );
    assert!(!stored.exists());
    // The controller's own key is not Comind's: the baseline keeps a namespace that
    // holds it, so the test removes it first.
    Api::<Secret>::namespaced(admin.clone(), sealing::CONTROLLER_NAMESPACE)
        .delete("sealed-secrets-keyx7k2p", &Default::default())
        .await
        .unwrap();
    remove_platform(&admin, &env, state.path()).await;
}

/// Removes what the test laid (the baseline's cluster-wide names too), so the next
/// test that takes them finds none.
async fn remove_platform(admin: &kube::Client, env: &comind_core::Environment, state: &Path) {
    let mut all = comind_core::engine::RunOptions::default();
    all.destroy.purge = true;
    let down = bootstrap(env, state)
        .down(&all, &comind_core::DownOptions::default())
        .await
        .unwrap();
    assert!(down.succeeded(), "{:?}", down.summary);
    support::settled(admin, env).await;
}

/// With a secret store other than the state directory (what AWS Secrets Manager is to
/// the phase; here the core's in-memory fake, the store itself is proven against moto
/// in comind-aws): the key an environment's state directory kept moves into the store;
/// from then on the store alone is the key's home, so a lost state directory changes
/// nothing; a plain `down` keeps it there, and `--purge` forgets it in both places.
#[tokio::test]
async fn with_a_secret_store_of_its_own_the_key_lives_there_and_outlives_the_state_directory() {
    use comind_core::testing::FakeSecretStore;
    use comind_core::{Action, DownOptions, SecretStore, UpOptions};
    let peer = require_peer!(KubePeer::shared());
    let _platform = support::cluster_wide(peer).await;
    let admin = support::client(peer, User::Admin).await;
    let state = tempfile::tempdir().unwrap();
    let env = support::env(peer, "sealstore", state.path(), |c| {
        support::with_argocd(c);
        c.gitops.repo.url = "https://git.example.com/platform/gitops.git".into();
    });
    support::settled(&admin, &env).await;
    let store = FakeSecretStore::new();
    let run = |env: &comind_core::Environment| {
        comind_core::Bootstrap::new(comind_core::Environment::with_state_root(
            env.config().clone(),
            state.path(),
        ))
        .with_provider(
            comind_gitops::GitopsProvider::new()
                .binding(&[])
                .with_secret_store(std::sync::Arc::new(store.clone())),
        )
    };
    let legacy = SealingKey::generate().unwrap();
    env.state()
        .credentials(sealing::CREDENTIALS, || Ok(legacy.clone()))
        .unwrap();

    let up = run(&env)
        .up(&sealing_key_run(), &UpOptions::default())
        .await
        .unwrap();
    assert!(up.succeeded(), "{:?}", up.summary);
    let moved = sealing::stored_key(&store)
        .await
        .unwrap()
        .expect("the state directory's key is in the store");
    assert_eq!(moved.certificate_pem(), legacy.certificate_pem());
    let secret = key_secret(&admin).await.expect("the key Secret is there");
    assert_eq!(
        secret.data.unwrap()["tls.crt"].0,
        legacy.certificate_pem().as_bytes()
    );

    // Another machine, or a lost state directory: the store has the key, nothing to do.
    std::fs::remove_file(env.state().credentials_path(sealing::CREDENTIALS)).unwrap();
    let plan = run(&env).plan(&sealing_key_run()).await.unwrap();
    assert_eq!(plan.summary.changes, 0, "{:?}", plan.plans);
    let (cert, origin) = sealing::environment_certificate(&env, &store)
        .await
        .unwrap();
    assert_eq!(
        origin,
        sealing::CertificateOrigin::Stored(store.location(sealing::CREDENTIALS))
    );
    assert_eq!(cert.not_after(), legacy.certificate().unwrap().not_after());

    // A plain down keeps the key in the store, and names where.
    let down = run(&env)
        .down(&sealing_key_run(), &DownOptions::default())
        .await
        .unwrap();
    assert!(down.succeeded(), "{:?}", down.summary);
    let kept = &down.destroyed[&comind_core::PhaseId::new(sealing_key::ID)].kept;
    assert!(
        kept.iter()
            .any(|k| k.name == store.location(sealing::CREDENTIALS)),
        "{kept:?}"
    );
    assert!(store.peek(sealing::CREDENTIALS).is_some());

    // A purge forgets it in the store and in a state directory that still has a copy.
    env.state()
        .credentials(sealing::CREDENTIALS, || Ok(legacy.clone()))
        .unwrap();
    let mut purge = sealing_key_run();
    purge.destroy.purge = true;
    let down = run(&env)
        .down(&purge, &DownOptions::default())
        .await
        .unwrap();
    assert!(down.succeeded(), "{:?}", down.summary);
    let changes = &down.destroyed[&comind_core::PhaseId::new(sealing_key::ID)].changes;
    assert_eq!(
        changes
            .iter()
            .filter(|c| c.kind == "sealing-key" && c.action == Action::Delete)
            .count(),
        2,
        "{changes:?}"
    );
    assert!(store.peek(sealing::CREDENTIALS).is_none());
    assert!(!env.state().has_credentials(sealing::CREDENTIALS));
    remove_platform(&admin, &env, state.path()).await;
}
