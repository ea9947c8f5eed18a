//! Local/cloud parity: an application reads the same output keys on either profile.

use std::collections::BTreeSet;

use comind_core::engine::RunOptions;
use comind_core::{PhaseId, ServiceKind, UpOptions};
use comind_test_support::docker::{self, SERVICE_IMAGES};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;

use crate::support::{LocalEnv, aws_bootstrap};

/// Keys only the local profile publishes: static credentials of services that, on
/// AWS, applications reach with their workload identity instead.
const LOCAL_ONLY: &[&str] = &[
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "SQS_ACCESS_KEY_ID",
    "SQS_SECRET_ACCESS_KEY",
];

fn keys(report: &comind_core::engine::RunReport, kind: ServiceKind) -> BTreeSet<String> {
    report
        .outputs
        .get(&PhaseId::new(kind.id()))
        .unwrap_or_else(|| panic!("no outputs for {kind}"))
        .keys()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_profiles_publish_the_same_keys_for_every_service() {
    require_peer!(docker::ready(&SERVICE_IMAGES).await);
    let moto = require_peer!(Moto::start());

    let local = LocalEnv::new(None);
    let services = RunOptions {
        only: ServiceKind::ALL
            .iter()
            .map(|k| PhaseId::new(k.id()))
            .collect(),
        ..RunOptions::default()
    };
    let local_report = local
        .bootstrap
        .up(&services, &UpOptions::default())
        .await
        .unwrap();
    assert!(local_report.succeeded(), "{:?}", local_report.summary);

    let state = tempfile::tempdir().unwrap();
    let aws = aws_bootstrap(&moto, state.path());
    let aws_report = aws.up(&services, &UpOptions::default()).await.unwrap();
    assert!(aws_report.succeeded(), "{:?}", aws_report.summary);

    for kind in ServiceKind::ALL {
        let local_keys: BTreeSet<String> = keys(&local_report, kind)
            .into_iter()
            .filter(|k| !LOCAL_ONLY.contains(&k.as_str()))
            .collect();
        let aws_keys = keys(&aws_report, kind);
        assert_eq!(
            local_keys, aws_keys,
            "{kind}: the profiles publish different keys"
        );
        for key in kind.required_outputs() {
            assert!(aws_keys.contains(*key), "{kind}: {key} is missing");
        }
        for key in kind.secret_outputs() {
            for (profile, report) in [("local", &local_report), ("aws", &aws_report)] {
                if let Some(value) = report.outputs[&PhaseId::new(kind.id())].get(key) {
                    assert!(
                        value.is_secret(),
                        "{profile} {kind}: {key} must be a secret"
                    );
                }
            }
        }
    }

    let purge = RunOptions {
        destroy: comind_core::DestroyOptions { purge: true },
        ..RunOptions::default()
    };
    assert!(
        aws.down(&purge, &Default::default())
            .await
            .unwrap()
            .succeeded()
    );
}
