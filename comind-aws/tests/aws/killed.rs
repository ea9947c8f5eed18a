//! A run killed with kill -9 while a create is in flight, and the runs after it.
//!
//! The first `up` runs in a child process (see `support::child`) through the fault
//! proxy, which holds the chosen create; the test kills the child at that exact
//! moment. No timing is left to chance: what AWS does with the dying run's request,
//! and when, is the test's decision.

use comind_core::UpOptions;
use comind_core::engine::RunOptions;
use comind_test_support::aws_faults::{Fault, FaultProxy, Outcome, Rule};
use comind_test_support::moto::Moto;
use comind_test_support::{names, require_peer};

use crate::support::child::{self, ChildRun};
use crate::support::runs::{
    self, IAM_ROLES, assert_second_up_changes_nothing, assert_succeeded, counts, everything_owned,
    one_network,
};
use crate::support::{CallLog, Peek};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_of_a_killed_run_that_lands_during_the_next_run_is_adopted() {
    child::act_as_child_if_asked().await;
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let name = names::unique("killed");
    // The first security group of each run is held: the dying run's, then the next
    // run's.
    proxy.inject(Rule::first(2, "CreateSecurityGroup", Fault::Hold));

    let mut first = ChildRun::up(&name, state.path(), &proxy.url());
    let dying = proxy.held("CreateSecurityGroup").await;
    first.kill();

    // The next run starts at once; AWS has not acted on the dead run's request yet.
    let log = CallLog::default();
    let bootstrap = runs::bootstrap(proxy.sdk_config(), &log, &name, state.path(), |_| {});
    // The bootstrap's run is not `Send`; it runs beside the test's own steps instead.
    let (run, options) = (RunOptions::default(), UpOptions::default());
    let (report, answer) = tokio::join!(bootstrap.up(&run, &options), async {
        let racing = proxy.held("CreateSecurityGroup").await;
        // Now the dead run's create takes effect (its answer goes nowhere), and
        // the next run's identical create finds the group made.
        assert_eq!(dying.forward().await, Outcome::Forwarded(200));
        racing.forward().await
    });
    assert_succeeded(
        &report.unwrap(),
        &format!("the run after the killed one (its create: {answer:?})"),
    );

    let owned = everything_owned(&peek, bootstrap.env()).await;
    let counted = counts(&owned);
    for (kind, count) in one_network() {
        assert_eq!(counted.get(&kind), Some(&count), "{kind}: {owned:?}");
    }
    assert_eq!(counted.get("iam-role"), Some(&IAM_ROLES), "{owned:?}");
    assert_eq!(counted.get("eks-cluster"), Some(&1), "{owned:?}");
    assert_eq!(counted.get("eks-nodegroup"), Some(&1), "{owned:?}");
    assert_eq!(owned.len(), counted.values().sum::<usize>());
    assert_second_up_changes_nothing(&bootstrap, &log, &RunOptions::default()).await;
}
