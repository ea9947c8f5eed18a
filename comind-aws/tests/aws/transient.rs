//! Transient AWS faults (throttling, 503s, dropped connections) are absorbed, during
//! the preflight checks too: only a real input problem rejects a run.

use comind_core::UpOptions;
use comind_core::event::RunOutcome;
use comind_test_support::aws_faults::{Fault, FaultProxy, Outcome, Rule};
use comind_test_support::moto::Moto;
use comind_test_support::{names, require_peer};

use crate::support::CallLog;
use crate::support::runs::{self, assert_succeeded, only};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_503s_to_describe_db_instances_during_preflight_do_not_reject_the_run() {
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    // Three: as many as the SDK's own attempts, so the preflight sees the error.
    proxy.inject(Rule::first(3, "DescribeDBInstances", Fault::Unavailable).on("rds"));
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let bootstrap = runs::bootstrap(
        proxy.sdk_config(),
        &log,
        &names::unique("flaky"),
        state.path(),
        |_| {},
    );
    let up = bootstrap
        .up(&only(&["postgres"]), &UpOptions::default())
        .await
        .unwrap();
    assert_ne!(
        up.summary.outcome,
        RunOutcome::Rejected,
        "a transient fault is not invalid input: {:?}",
        up.summary
    );
    assert_succeeded(&up, "up through three 503s");
    let described = proxy.calls_of("DescribeDBInstances");
    let outcomes: Vec<Outcome> = described
        .iter()
        .take(4)
        .map(|c| c.outcome.clone())
        .collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Unavailable,
            Outcome::Unavailable,
            Outcome::Unavailable,
            Outcome::Forwarded(404),
        ],
        "{described:?}"
    );
}
