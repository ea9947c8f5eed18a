//! Another team's bootstrap on Comind's traits: a phase of its own that needs the
//! database, next to the platform services, scheduled by Comind's engine.
//!
//! This example runs on the in-memory fakes of `comind_core::testing`, so it needs
//! nothing installed: `cargo run -p comind-examples --example provider_extend`. With
//! `comind::bootstrap(config)` in place of the fake provider it runs on the local profile
//! against Docker.

use async_trait::async_trait;
use comind_core::config::Config;
use comind_core::engine::RunOptions;
use comind_core::service::ServiceKind;
use comind_core::testing::{FakeProvider, FakeService, World};
use comind_core::{
    Applied, Bootstrap, Change, DestroyOptions, Destroyed, Environment, Input, Outputs, Phase,
    PhaseContext, PhaseId, Plan, Result, UpOptions,
};

/// Runs the team's schema migrations once the database is up.
struct Migrations;

#[async_trait]
impl Phase for Migrations {
    fn id(&self) -> PhaseId {
        PhaseId::new("billing-migrations")
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![PhaseId::new("postgres")]
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        // Before the database exists, its URL is known only after apply: say so
        // instead of guessing.
        Ok(match ctx.input(&PhaseId::new("postgres"), "DATABASE_URL") {
            Input::KnownAfterApply => Plan {
                changes: vec![Change::create("migration", "billing/0001")],
                outputs: None,
                deferred: Some("needs DATABASE_URL from postgres, known after apply".into()),
            },
            _ => Plan::changes(vec![Change::create("migration", "billing/0001")]),
        })
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let url = ctx.require_input(&PhaseId::new("postgres"), "DATABASE_URL")?;
        ctx.progress("applying billing/0001");
        // A real phase would connect with `url.expose()`; printing it would print the
        // password, and `Display` will not let us.
        println!("migrating with DATABASE_URL = {url}");
        Ok(Applied {
            changes: vec![Change::create("migration", "billing/0001")],
            outputs: Outputs::new().text("BILLING_SCHEMA_VERSION", "1"),
        })
    }

    async fn destroy(&self, _ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        Ok(Destroyed::default())
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let world = World::new();
    let state = std::env::temp_dir().join("comind-example-provider-extend");
    let env = Environment::with_state_root(Config::default(), &state);
    let bootstrap = Bootstrap::new(env)
        .with_provider(
            FakeProvider::new("platform")
                .with_service(FakeService::new(ServiceKind::Postgres, &world))
                .with_service(FakeService::new(ServiceKind::Cache, &world)),
        )
        // The team's own phase joins the graph without a provider of its own.
        .with_phase(Migrations);

    let plan = bootstrap.plan(&RunOptions::default()).await?;
    for (id, plan) in &plan.plans {
        println!(
            "plan {id}: {} change(s) {:?}",
            plan.changes.len(),
            plan.deferred
        );
    }
    let report = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await?;
    println!(
        "up: {} in {} ms, critical path {:?}",
        report.summary.outcome, report.summary.wall_ms, report.summary.critical_path
    );
    print!("{}", report.merged_outputs().to_env_lines(false));
    Ok(())
}
