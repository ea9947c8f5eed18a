//! Another team's bootstrap on Comind's traits, against the real local provider: its
//! phase needs `postgres`, reads the `DATABASE_URL` it publishes, and applies a
//! schema through it; a second `up` changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use comind_core::engine::RunOptions;
use comind_core::{
    Applied, Change, DestroyOptions, Destroyed, Error, Input, Outputs, Phase, PhaseContext,
    PhaseId, Plan, Result, UpOptions,
};
use comind_test_support::docker::{self, SERVICE_IMAGES};
use comind_test_support::require_peer;

use crate::support::LocalEnv;

/// Creates the billing schema, idempotently.
struct BillingSchema;

impl BillingSchema {
    async fn client(ctx: &PhaseContext) -> Result<tokio_postgres::Client> {
        let url = ctx.require_input(&PhaseId::new("postgres"), "DATABASE_URL")?;
        let (client, connection) = tokio_postgres::connect(url.expose(), tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::unavailable("cannot connect to PostgreSQL").with_source(e))?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn exists(client: &tokio_postgres::Client) -> Result<bool> {
        let row = client
            .query_one("SELECT to_regclass('billing_invoices') IS NOT NULL", &[])
            .await
            .map_err(|e| Error::unavailable("cannot read the schema").with_source(e))?;
        Ok(row.get(0))
    }
}

#[async_trait]
impl Phase for BillingSchema {
    fn id(&self) -> PhaseId {
        PhaseId::new("billing-schema")
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![PhaseId::new("postgres")]
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        let create = vec![Change::create("table", "billing_invoices")];
        if matches!(
            ctx.input(&PhaseId::new("postgres"), "DATABASE_URL"),
            Input::KnownAfterApply
        ) {
            return Ok(Plan {
                changes: create,
                outputs: None,
                deferred: Some("needs DATABASE_URL from `postgres`, known after apply".into()),
            });
        }
        let client = Self::client(ctx).await?;
        Ok(if Self::exists(&client).await? {
            Plan::in_sync(Outputs::new().text("BILLING_SCHEMA", "1"))
        } else {
            Plan::changes(create)
        })
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let client = Self::client(ctx).await?;
        let mut changes = Vec::new();
        if !Self::exists(&client).await? {
            client
                .batch_execute("CREATE TABLE billing_invoices (id bigint PRIMARY KEY)")
                .await
                .map_err(|e| Error::internal("cannot create billing_invoices").with_source(e))?;
            changes.push(Change::create("table", "billing_invoices"));
        }
        Ok(Applied {
            changes,
            outputs: Outputs::new().text("BILLING_SCHEMA", "1"),
        })
    }

    async fn destroy(&self, _ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        // The table lives in the database, whose data `down` keeps anyway.
        Ok(Destroyed::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_phase_runs_on_the_real_database_after_it() {
    require_peer!(docker::ready(&SERVICE_IMAGES).await);
    let env = LocalEnv::new(Some(Arc::new(BillingSchema)));
    let run = RunOptions {
        only: vec![PhaseId::new("billing-schema")],
        ..RunOptions::default()
    };

    let plan = env.bootstrap.plan(&run).await.unwrap();
    let ours = &plan.plans[&PhaseId::new("billing-schema")];
    assert!(
        ours.deferred
            .as_deref()
            .unwrap()
            .contains("known after apply")
    );

    let first = env.bootstrap.up(&run, &UpOptions::default()).await.unwrap();
    assert!(first.succeeded(), "{:?}", first.summary);
    let ran: Vec<&str> = first.summary.phases.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ran,
        ["network", "postgres", "billing-schema"],
        "--only takes what it needs"
    );
    assert_eq!(
        first.summary.critical_path.last().map(PhaseId::as_str),
        Some("billing-schema")
    );

    let second = env.bootstrap.up(&run, &UpOptions::default()).await.unwrap();
    assert!(second.succeeded());
    assert_eq!(second.summary.changes, 0, "{:?}", second.summary);
    let plan = env.bootstrap.plan(&run).await.unwrap();
    assert!(plan.plans[&PhaseId::new("billing-schema")].is_empty());
}
