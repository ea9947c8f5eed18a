//! Whole runs through `comind_core::Bootstrap` with `AwsProvider`, as the CLI makes
//! them, and what the tests read from them: the changes and kept resources each phase
//! reported, and whether the run succeeded.

use std::collections::{BTreeMap, HashMap};

use aws_config::SdkConfig;
use comind_aws::AwsProvider;
use comind_core::config::Config;
use comind_core::engine::{RunOptions, RunReport};
use comind_core::event::{Event, EventStream, Outcome};
use comind_core::{Bootstrap, Change, DestroyOptions, Environment, Kept, PhaseId};

use super::{CallLog, Peek, owned};

/// A bootstrap of the AWS environment `name` (state under `state`, config adjusted by
/// `edit`) whose clients use `sdk` (moto, or a fault proxy in front of it) and record
/// their calls in `log`.
pub fn bootstrap(
    sdk: SdkConfig,
    log: &CallLog,
    name: &str,
    state: &std::path::Path,
    edit: impl FnOnce(&mut Config),
) -> Bootstrap {
    let mut config = Config::default();
    config.environment = name.parse().unwrap();
    config.profile = comind_core::Profile::Aws;
    edit(&mut config);
    let provider = AwsProvider::builder()
        .sdk_config(sdk)
        .interceptor(log.clone())
        .build();
    Bootstrap::new(Environment::with_state_root(config, state)).with_provider(provider)
}

/// The roles the `iam` phase makes for one environment: the EKS control plane's, the
/// nodes', and the Pod Identity roles of the load balancer controller, the EBS CSI
/// driver and the backup jobs. Counted here, not read from the product, so a role
/// that appears or vanishes fails the tests that count them.
pub const IAM_ROLES: usize = 5;

/// Run options for these phases only (and what they need).
pub fn only(phases: &[&str]) -> RunOptions {
    RunOptions {
        only: phases.iter().map(|p| PhaseId::new(*p)).collect(),
        ..RunOptions::default()
    }
}

/// Run options of `down --purge`.
pub fn purge() -> RunOptions {
    RunOptions {
        destroy: DestroyOptions { purge: true },
        ..RunOptions::default()
    }
}

/// What each phase reported in a run: changes and kept resources.
#[derive(Debug, Default)]
pub struct Finished {
    pub changes: HashMap<String, Vec<Change>>,
    pub kept: HashMap<String, Vec<Kept>>,
}

/// What the phases reported on `events` so far.
pub fn drain(events: &mut EventStream) -> Finished {
    let mut finished = Finished::default();
    while let Some(record) = events.try_recv() {
        if let Event::PhaseFinished {
            phase,
            changes,
            kept,
            ..
        } = &record.event
        {
            finished.changes.insert(phase.to_string(), changes.clone());
            finished.kept.insert(phase.to_string(), kept.clone());
        }
    }
    finished
}

/// Panics with the phases that did not succeed, unless the run succeeded.
pub fn assert_succeeded(report: &RunReport, what: &str) {
    assert!(
        report.succeeded(),
        "{what}: {:#?}",
        report
            .summary
            .phases
            .iter()
            .filter(|p| p.outcome != Outcome::Succeeded)
            .collect::<Vec<_>>()
    );
}

/// Everything `env` owns, listed through the AWS API by ownership tags.
pub async fn everything_owned(peek: &Peek, env: &Environment) -> Vec<String> {
    let mut all = owned::network(peek, env).await;
    all.extend(owned::iam(peek, env).await);
    all.extend(owned::cluster(peek, env).await);
    all.extend(owned::postgres(peek, env).await);
    all.extend(owned::object_store(peek, env).await);
    all.extend(owned::cache(peek, env).await);
    all.extend(owned::queue(peek, env).await);
    all
}

/// How many resources of each kind `listed` (as `owned` lists them: `kind id`) holds.
pub fn counts(listed: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for resource in listed {
        let kind = resource.split(' ').next().unwrap_or_default().to_string();
        *counts.entry(kind).or_insert(0) += 1;
    }
    counts
}

/// What a complete network of a non-production environment holds: a VPC, an internet
/// gateway, one NAT gateway with its elastic IP, a public and a private subnet in each
/// of three zones, four route tables and three security groups.
pub fn one_network() -> BTreeMap<String, usize> {
    [
        ("vpc", 1),
        ("internet-gateway", 1),
        ("nat-gateway", 1),
        ("elastic-ip", 1),
        ("subnet", 6),
        ("route-table", 4),
        ("security-group", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Runs `up` again and asserts it changed nothing and made no mutating call.
pub async fn assert_second_up_changes_nothing(
    bootstrap: &Bootstrap,
    log: &CallLog,
    run: &RunOptions,
) {
    log.clear();
    let mut events = bootstrap.events().subscribe();
    let again = bootstrap
        .up(run, &comind_core::UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&again, "second up");
    let finished = drain(&mut events);
    for (phase, changes) in &finished.changes {
        assert!(
            changes.is_empty(),
            "second up changed `{phase}`: {changes:?}"
        );
    }
    assert_eq!(
        log.mutating(),
        Vec::<String>::new(),
        "the second up made mutating calls"
    );
}
