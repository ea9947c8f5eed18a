//! `comind seal`, judged by the Sealed Secrets controller's own code: the oracle of
//! `../shared/test-peers` makes the key pair and unseals what the binary prints.

use std::path::{Path, PathBuf};

use comind_test_support::{oracles, require_peer};
use serde_json::Value;

use crate::support::{Run, Scratch};

/// The oracle and a key pair it made, in `scratch`.
fn oracle_key(
    scratch: &Scratch,
) -> Result<(PathBuf, PathBuf, PathBuf), comind_test_support::Missing> {
    let oracle = oracles::unpacked(oracles::SEALED_SECRETS)?;
    let key = scratch.path().join("tls.key");
    let cert = scratch.path().join("tls.crt");
    oracles::run(
        &oracle,
        &["keygen", key.to_str().unwrap(), cert.to_str().unwrap()],
        b"",
    )
    .unwrap();
    Ok((oracle, key, cert))
}

fn unseal(oracle: &Path, key: &Path, label: &str, sealed: &Value) -> Result<Vec<u8>, String> {
    oracles::run(
        oracle,
        &["unseal", key.to_str().unwrap(), label],
        sealed.as_str().unwrap().as_bytes(),
    )
}

fn manifest(run: &Run) -> Value {
    assert_eq!(run.code, 0, "{}", run.all());
    serde_yaml_ng::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.all()))
}

#[test]
fn seal_prints_a_sealed_secret_that_the_controllers_code_unseals() {
    let scratch = Scratch::new();
    let (oracle, key, cert) = require_peer!(oracle_key(&scratch));
    let password = scratch.path().join("password.txt");
    std::fs::write(&password, "from-a-file-pa55").unwrap();
    let run = scratch.run(&[
        "seal",
        "--name",
        "db",
        "--namespace",
        "backend",
        "--cert",
        cert.to_str().unwrap(),
        "--from-literal",
        "user=literal-us3r",
        "--from-file",
        &format!("password={}", password.display()),
        "--from-file",
        password.to_str().unwrap(),
    ]);
    let sealed = manifest(&run);
    assert_eq!(sealed["kind"], "SealedSecret");
    assert_eq!(sealed["apiVersion"], "bitnami.com/v1alpha1");
    assert_eq!(sealed["metadata"]["namespace"], "backend");
    assert_eq!(sealed["spec"]["template"]["type"], "Opaque");
    let data = &sealed["spec"]["encryptedData"];
    assert_eq!(
        unseal(&oracle, &key, "backend/db", &data["user"]).unwrap(),
        b"literal-us3r"
    );
    assert_eq!(
        unseal(&oracle, &key, "backend/db", &data["password"]).unwrap(),
        b"from-a-file-pa55"
    );
    assert_eq!(
        unseal(&oracle, &key, "backend/db", &data["password.txt"]).unwrap(),
        b"from-a-file-pa55"
    );
    // Strict: the same value does not unseal as another Secret.
    assert!(unseal(&oracle, &key, "backend/other", &data["user"]).is_err());
    for secret in ["literal-us3r", "from-a-file-pa55"] {
        assert!(!run.all().contains(secret), "{}", run.all());
    }
    assert!(
        run.stderr.contains("sealed backend/db (strict scope"),
        "{}",
        run.all()
    );
}

#[test]
fn seal_reads_a_secret_manifest_on_stdin_with_a_wider_scope() {
    let scratch = Scratch::new();
    let (oracle, key, cert) = require_peer!(oracle_key(&scratch));
    let input = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-token\n  namespace: frontend\n  \
                 labels:\n    app: web\ntype: kubernetes.io/basic-auth\nstringData:\n  username: web\n  \
                 password: st4nd-in-pa55\n";
    let run = scratch.run_with_stdin(
        &[
            "-o",
            "json",
            "seal",
            "--scope",
            "namespace-wide",
            "--cert",
            cert.to_str().unwrap(),
        ],
        input.as_bytes(),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let sealed: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        sealed["metadata"]["annotations"]["sealedsecrets.bitnami.com/namespace-wide"],
        "true"
    );
    let template = &sealed["spec"]["template"];
    assert_eq!(template["type"], "kubernetes.io/basic-auth");
    assert_eq!(template["metadata"]["labels"]["app"], "web");
    assert_eq!(
        template["metadata"]["annotations"]["sealedsecrets.bitnami.com/namespace-wide"],
        "true"
    );
    let password = &sealed["spec"]["encryptedData"]["password"];
    assert_eq!(
        unseal(&oracle, &key, "frontend", password).unwrap(),
        b"st4nd-in-pa55"
    );
    assert!(unseal(&oracle, &key, "backend", password).is_err());
    assert!(!run.all().contains("st4nd-in-pa55"), "{}", run.all());
}

#[test]
fn seal_refuses_bad_input_with_exit_2_and_prints_no_manifest() {
    let scratch = Scratch::new();
    let (_, _, cert) = require_peer!(oracle_key(&scratch));
    let cert = cert.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "seal",
                "--name",
                "Db",
                "--namespace",
                "backend",
                "--cert",
                cert,
                "--from-literal",
                "a=hunter2",
            ],
            "not valid",
        ),
        (
            &[
                "seal",
                "--name",
                "db",
                "--namespace",
                "backend",
                "--cert",
                cert,
                "--from-literal",
                "hunter2",
            ],
            "KEY=VALUE",
        ),
        (
            &[
                "seal",
                "--name",
                "db",
                "--namespace",
                "backend",
                "--cert",
                cert,
                "--from-literal",
                "a/b=hunter2",
            ],
            "not a valid Secret key",
        ),
        (
            &[
                "seal",
                "--namespace",
                "backend",
                "--cert",
                cert,
                "--from-literal",
                "a=hunter2",
            ],
            "--name and --namespace",
        ),
        (
            &[
                "seal",
                "--name",
                "db",
                "--namespace",
                "backend",
                "--cert",
                "/no/such.pem",
                "--from-literal",
                "a=hunter2",
            ],
            "cannot read --cert",
        ),
    ];
    for (args, expected) in cases {
        let run = scratch.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.all());
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.all());
        assert!(!run.stderr.contains("hunter2"), "{args:?}: {}", run.all());
    }
    // Not a certificate.
    let not_cert = scratch.path().join("not.pem");
    std::fs::write(&not_cert, "hello").unwrap();
    let run = scratch.run(&[
        "seal",
        "--name",
        "db",
        "--namespace",
        "b",
        "--cert",
        not_cert.to_str().unwrap(),
        "--from-literal",
        "a=b",
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("not a PEM X.509 certificate"),
        "{}",
        run.all()
    );
    // A manifest that is not a Secret.
    let run = scratch.run_with_stdin(
        &["seal", "--cert", cert],
        b"kind: ConfigMap\nmetadata: {name: x}\n",
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("not a Secret"), "{}", run.all());
}

/// Without --cert, an environment that has no key and no reachable cluster says what
/// to do, and touches nothing.
#[test]
fn seal_without_a_certificate_says_where_to_get_one() {
    let scratch = Scratch::new();
    scratch.config("environment: nokey\ngitops:\n  kubeconfig: ./missing-kubeconfig\n");
    let run = scratch.run(&[
        "seal",
        "--name",
        "db",
        "--namespace",
        "backend",
        "--from-literal",
        "a=hunter2",
    ]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.stdout.is_empty(), "{}", run.all());
    assert!(run.stderr.contains("--cert"), "{}", run.all());
    assert!(!run.stderr.contains("hunter2"), "{}", run.all());
    assert!(!scratch.state_dir().exists(), "{}", run.all());
}
