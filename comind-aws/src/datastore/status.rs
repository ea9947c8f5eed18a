//! Following a data service's status: waiting for it to become available or to go,
//! its recent events (where RDS and ElastiCache explain failures), and the probe.

use comind_core::{Error, ErrorKind, PhaseContext, Result};

use super::{Datastore, Run};
use crate::clients::Clients;
use crate::waiter::{Observed, Status, Wait};

impl<S: Datastore> Run<'_, S> {
    /// Waits until the resource is available with an endpoint; a failure carries the
    /// resource's recent events.
    pub(crate) async fn wait_available(&self) -> Result<S::Live> {
        let wait = Wait::new(
            S::KIND,
            &self.name,
            "available",
            self.service.timeout(),
            S::TIMEOUT_SETTING,
        );
        let result = wait
            .until(self.ctx, || async {
                let Some(live) = S::describe(self.clients, &self.name).await? else {
                    return Ok(Observed::Failed(Status::new("gone")));
                };
                let status = S::status(&live).to_string();
                Ok(if status == "available" && S::has_endpoint(&live) {
                    Observed::Ready(live)
                } else if S::is_failed(&status) || status == "deleting" {
                    Observed::Failed(Status::new(status))
                } else {
                    Observed::Pending(Status::new(status))
                })
            })
            .await;
        match result {
            Ok(live) => Ok(live),
            Err(err) if err.kind() == ErrorKind::Cancelled => Err(err),
            // The services explain failures in their events, not in the resource.
            Err(err) => {
                let events = self.recent_events().await;
                if events.is_empty() {
                    return Err(err);
                }
                let mut out = Error::new(err.kind(), format!("{}{events}", err.message()))
                    .transient(err.is_transient())
                    .with_resource(self.resource());
                if let Some(hint) = err.hint() {
                    out = out.with_hint(hint);
                }
                Err(out)
            }
        }
    }

    /// Waits until the resource is gone.
    pub(crate) async fn wait_gone(&self) -> Result<()> {
        let wait = Wait::new(
            S::KIND,
            &self.name,
            "deleted",
            self.service.timeout(),
            S::TIMEOUT_SETTING,
        );
        wait.until(self.ctx, || async {
            Ok(match S::describe(self.clients, &self.name).await? {
                None => Observed::Ready(()),
                Some(live) => Observed::Pending(Status::new(S::status(&live))),
            })
        })
        .await
    }

    /// The last few events of the resource, as `; recent events: …`, or nothing.
    pub(crate) async fn recent_events(&self) -> String {
        match S::events(self.clients, &self.name).await {
            Ok(mut events) => {
                events.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
                let messages: Vec<&str> = events
                    .iter()
                    .take(3)
                    .filter_map(|(_, message)| message.as_deref())
                    .collect();
                if messages.is_empty() {
                    String::new()
                } else {
                    format!("; recent events: {}", messages.join(" | "))
                }
            }
            // Events only explain a failure; not having them must not hide it.
            Err(_) => String::new(),
        }
    }
}

/// The probe of a private data service, through its API: the operator's machine cannot
/// reach it, so "available with an endpoint" is what it checks.
///
/// # Errors
/// Not found before `up`; unavailable (transient unless the resource failed) while it
/// is not available.
pub(crate) async fn probe<S: Datastore>(service: &S, ctx: &PhaseContext) -> Result<()> {
    let clients = service.aws().clients(ctx.env()).await?;
    let name = ctx.env().resource_name(S::COMPONENT);
    let live = existing::<S>(&clients, &name).await?;
    let resource = format!("{} {name}", S::KIND);
    let status = S::status(&live);
    if status == "available" && S::has_endpoint(&live) {
        Ok(())
    } else {
        Err(
            Error::unavailable(format!("{} {name} is `{status}`", S::LABEL))
                .transient(!S::is_failed(status))
                .with_resource(resource),
        )
    }
}

/// The resource `name`, which must exist.
///
/// # Errors
/// Not found (run `comind up`), or when it cannot be described.
pub(crate) async fn existing<S: Datastore>(clients: &Clients, name: &str) -> Result<S::Live> {
    S::describe(clients, name).await?.ok_or_else(|| {
        Error::not_found(format!("{} {name} does not exist", S::LABEL))
            .with_resource(format!("{} {name}", S::KIND))
            .with_hint("run `comind up`")
    })
}
