//! The `comind` binary on the AWS profile against a real `moto_server`: the same
//! session as on the local profile, configured only the way a user would (the
//! standard AWS variables and `comind.yaml`).
//!
//! moto is started by `comind_test_support::moto` through
//! `scripts/test-env/moto_launcher.py`, which patches the gaps of moto 5.2 that are
//! listed in its docstring; product code never knows.

use std::process::Command;

use comind_test_support::moto::{ACCOUNT_ID, Moto, REGION};
use comind_test_support::{names, require_peer};
use serde_json::Value;

use crate::support::{Run, Scratch};

/// An AWS environment on moto: the standard AWS variables, nothing else.
struct AwsEnv {
    scratch: Scratch,
    moto: Moto,
    name: String,
}

impl AwsEnv {
    fn new(moto: Moto, extra: &str) -> AwsEnv {
        let scratch = Scratch::new();
        let name = names::unique("cli");
        scratch.config(&format!("environment: {name}\nprofile: aws\n{extra}"));
        AwsEnv {
            scratch,
            moto,
            name,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.scratch.command();
        cmd.args(args)
            .envs(self.moto.aws_env())
            .env("AWS_CONFIG_FILE", self.scratch.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.scratch.path().join("no-aws-credentials"),
            );
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

#[test]
fn a_full_aws_session_on_moto() {
    let moto = require_peer!(Moto::start());
    let env = AwsEnv::new(moto, "");

    let doctor = env.run(&["doctor"]);
    assert_eq!(doctor.code, 0, "{}", doctor.all());
    assert!(
        doctor.stdout.contains(ACCOUNT_ID),
        "the account is shown: {}",
        doctor.all()
    );

    let plan = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 3, "{}", plan.all());
    assert!(plan.stdout.contains("+ create"), "{}", plan.all());

    let up = env.run(&["-o", "json", "up"]);
    assert_eq!(up.code, 0, "{}", up.all());
    let last: Value = serde_json::from_str(up.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "run_finished");
    let summary = &last["summary"];
    let ids: Vec<&str> = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["outcome"], "succeeded", "{p}");
            p["id"].as_str().unwrap()
        })
        .collect();
    for id in [
        "network",
        "iam",
        "cluster",
        "postgres",
        "object-store",
        "cache",
        "queue",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    assert!(summary["changes"].as_u64().unwrap() > 10);
    let kubeconfig = env
        .scratch
        .state_dir()
        .join(format!("aws/{}/kubeconfig", env.name));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&kubeconfig).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig is private");
    assert!(
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .contains("eks-token")
    );

    let again = env.run(&["up"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("0 change(s) made"), "{}", again.all());
    assert_eq!(env.run(&["plan", "--detailed-exitcode"]).code, 0);
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{}", status.all());

    let outputs = env.run(&["outputs", "--format", "json"]);
    assert_eq!(outputs.code, 0, "{}", outputs.all());
    let values: Value = serde_json::from_str(&outputs.stdout).unwrap();
    for key in [
        "DATABASE_URL",
        "REDIS_URL",
        "S3_BUCKET_BACKUPS",
        "S3_BUCKET_UPLOADS",
        "SQS_QUEUE_URL_JOBS",
        "SQS_DLQ_URL_JOBS",
    ] {
        assert!(!values[key].is_null(), "{key} in {values}");
    }
    assert_eq!(values["DATABASE_URL"], "<redacted>");
    assert_eq!(values["REDIS_URL"], "<redacted>");

    let cluster = values["CLUSTER_NAME"].as_str().unwrap();
    let token = env.run(&["eks-token", "--cluster", cluster, "--region", REGION]);
    assert_eq!(token.code, 0, "{}", token.all());
    let credential: Value = serde_json::from_str(token.stdout.trim()).unwrap();
    assert_eq!(credential["kind"], "ExecCredential");
    assert!(
        credential["status"]["token"]
            .as_str()
            .unwrap()
            .starts_with("k8s-aws-v1.")
    );

    let down = env.run(&["down"]);
    assert_eq!(down.code, 0, "{}", down.all());
    assert!(
        down.stdout.contains("kept:"),
        "data is kept: {}",
        down.all()
    );
    assert!(
        down.stdout.contains("snapshot"),
        "RDS leaves a final snapshot: {}",
        down.all()
    );

    let purge = env.run(&["down", "--purge"]);
    assert_eq!(purge.code, 0, "{}", purge.all());
    let plan = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.code,
        3,
        "everything is gone, so everything is to create: {}",
        plan.all()
    );
}

#[test]
fn production_refuses_down_without_confirmation() {
    let moto = require_peer!(Moto::start());
    let env = AwsEnv::new(
        moto,
        "production: true\naws:\n  cluster:\n    public_access_cidrs: [198.51.100.0/24]\n",
    );
    let up = env.run(&["up", "--only", "object-store,queue"]);
    assert_eq!(up.code, 0, "{}", up.all());
    let refused = env.run(&["down", "--purge"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!("--confirm {}", env.name)),
        "{}",
        refused.all()
    );
    assert_eq!(
        env.run(&["status", "--only", "object-store,queue"]).code,
        0,
        "nothing was touched"
    );
    let confirmed = env.run(&["down", "--purge", "--confirm", &env.name]);
    assert_eq!(confirmed.code, 0, "{}", confirmed.all());
}

#[test]
fn a_missing_region_is_invalid_input_before_anything_runs() {
    let scratch = Scratch::new();
    scratch.config("profile: aws\n");
    let output = scratch
        .command()
        .args(["up"])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", scratch.path().join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            scratch.path().join("no-aws-credentials"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no AWS region is set"), "{stderr}");
    assert!(
        stderr.contains("aws.region"),
        "the hint names the setting: {stderr}"
    );
}
