//! The provider itself: its phases and their order, settings it refuses, and
//! `comind doctor`'s AWS checks.

use std::collections::HashMap;
use std::sync::Arc;

use comind_aws::AwsProvider;
use comind_core::{CheckStatus, ErrorKind, PhaseId, Provider};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;

use crate::support::{self, CallLog};

#[test]
fn phases_depend_only_on_what_they_need() {
    let state = tempfile::tempdir().unwrap();
    let env = support::env("phases", state.path(), |_| {});
    let provider = AwsProvider::new();
    assert_eq!(provider.name(), "aws");
    let deps: HashMap<String, Vec<PhaseId>> = provider
        .phases(&env)
        .unwrap()
        .iter()
        .map(|p| (p.id().to_string(), p.dependencies()))
        .collect();
    let ids = |list: &[&str]| list.iter().map(|s| PhaseId::new(*s)).collect::<Vec<_>>();
    assert_eq!(deps["network"], ids(&[]));
    assert_eq!(deps["iam"], ids(&[]));
    assert_eq!(deps["cluster"], ids(&["network", "iam"]));
    assert_eq!(deps["postgres"], ids(&["network"]));
    assert_eq!(deps["cache"], ids(&["network"]));
    assert_eq!(deps["object-store"], ids(&[]), "starts at once");
    assert_eq!(deps["queue"], ids(&[]), "starts at once");

    let lean = support::env("lean", state.path(), |c| {
        c.services.cache.enabled = false;
        c.services.queue.enabled = false;
    });
    let phases = provider.phases(&lean).unwrap();
    let names: Vec<String> = phases.iter().map(|p| p.id().to_string()).collect();
    assert_eq!(
        names,
        [
            "network",
            "iam",
            "cluster",
            "postgres",
            "object-store",
            "cache",
            "queue"
        ],
        "disabled services stay phases, so what they made is still managed"
    );

    // On a cluster named by gitops.kubeconfig, no EKS cluster and no IAM roles for it;
    // the services still run.
    let elsewhere = support::env("elsewhere", state.path(), |c| {
        c.gitops.kubeconfig = Some("/etc/kubeconfig".into());
    });
    let names: Vec<String> = provider
        .phases(&elsewhere)
        .unwrap()
        .iter()
        .map(|p| p.id().to_string())
        .collect();
    assert_eq!(
        names,
        ["network", "postgres", "object-store", "cache", "queue"]
    );
}

#[test]
fn slow_resources_get_phase_timeouts_longer_than_their_waits() {
    let state = tempfile::tempdir().unwrap();
    let env = support::env("timeouts", state.path(), |_| {});
    let phases = AwsProvider::new().phases(&env).unwrap();
    let timeout = |id: &str| {
        phases
            .iter()
            .find(|p| p.id().as_str() == id)
            .and_then(|p| p.default_timeout())
    };
    let aws = &env.config().aws.timeouts;
    assert!(timeout("postgres").unwrap() > aws.database.get());
    assert!(timeout("cache").unwrap() > aws.cache.get());
    assert!(timeout("cluster").unwrap() > aws.cluster.get() + aws.node_group.get());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_before_anything_runs() {
    let state = tempfile::tempdir().unwrap();
    let cases: Vec<(Arc<comind_core::Environment>, &str)> = vec![
        (
            support::env("b1", state.path(), |c| c.aws.vpc.cidr = "10.0.0.0/8".into()),
            "aws.vpc.cidr",
        ),
        (
            support::env("b2", state.path(), |c| {
                c.aws.cluster.node_group.min_size = 9
            }),
            "aws.cluster.node_group",
        ),
        (
            support::env("b3", state.path(), |c| {
                c.aws.cluster.node_group.instance_types =
                    vec!["t3.large".into(), "m7g.large".into()];
            }),
            "instance_types",
        ),
        (
            support::env("b4", state.path(), |c| {
                c.services.queue.max_receive_count = 0
            }),
            "max_receive_count",
        ),
        (
            support::env("b5", state.path(), |c| {
                c.aws.vpc.id = Some("vpc-1".into());
                c.aws.vpc.subnet_ids = vec!["subnet-1".into()];
            }),
            "aws.vpc.subnet_ids",
        ),
    ];
    // Core's validation is the one home of these rules; a bootstrap checks even a
    // configuration built by hand (never loaded from a file) before anything runs.
    for (env, field) in cases {
        let bootstrap = comind_core::Bootstrap::new(comind_core::Environment::with_state_root(
            env.config().clone(),
            state.path(),
        ))
        .with_provider(AwsProvider::new());
        let err = match bootstrap.plan(&Default::default()).await {
            Ok(_) => panic!("{field}: accepted"),
            Err(err) => err,
        };
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_the_identity_or_says_how_to_fix_the_endpoint() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let env = support::env("doctor", state.path(), |_| {});
    let checks = support::provider(&moto, &CallLog::default())
        .diagnose(&env)
        .await;
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c.check == name)
            .unwrap_or_else(|| panic!("{name}: {checks:?}"))
    };
    assert_eq!(check("aws region").status, CheckStatus::Ok);
    assert!(check("aws region").detail.contains("us-east-1"));
    let credentials = check("aws credentials");
    assert_eq!(credentials.status, CheckStatus::Ok, "{credentials:?}");
    assert!(
        credentials.detail.contains("123456789012"),
        "{credentials:?}"
    );
    assert!(
        credentials
            .detail
            .contains("arn:aws:sts::123456789012:user/moto"),
        "{credentials:?}"
    );

    // The public endpoint is open by default: a warning with the one-line fix, gone
    // once CIDRs are named.
    let open = check("eks public endpoint");
    assert_eq!(open.status, CheckStatus::Warning, "{open:?}");
    assert!(open.detail.contains("0.0.0.0/0"), "{open:?}");
    assert!(
        open.fix
            .as_deref()
            .unwrap()
            .contains("aws.cluster.public_access_cidrs"),
        "{open:?}"
    );
    let limited = support::env("doctor-limited", state.path(), |c| {
        c.aws.cluster.public_access_cidrs = Some(vec!["203.0.113.0/24".into()]);
    });
    let checks_limited = support::provider(&moto, &CallLog::default())
        .diagnose(&limited)
        .await;
    assert!(
        !checks_limited
            .iter()
            .any(|c| c.check == "eks public endpoint"),
        "{checks_limited:?}"
    );

    // Nothing listens there.
    let closed = support::env("doctor-closed", state.path(), |c| {
        c.aws.endpoint_url = Some("http://127.0.0.1:9".into());
    });
    let checks = support::provider(&moto, &CallLog::default())
        .diagnose(&closed)
        .await;
    let endpoint = checks
        .iter()
        .find(|c| c.check == "aws endpoint" && c.status == CheckStatus::Failed)
        .unwrap_or_else(|| panic!("{checks:?}"));
    assert!(endpoint.detail.contains("127.0.0.1:9"), "{endpoint:?}");
    assert!(
        endpoint
            .fix
            .as_deref()
            .unwrap()
            .contains("aws.endpoint_url"),
        "{endpoint:?}"
    );
}
