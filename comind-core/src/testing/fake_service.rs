//! A fake service backend: a "container" and a data "volume" in a [`World`], with
//! scripted readiness and failures. It behaves like a real backend (labels, spec hash,
//! drift repair, data kept on destroy) so it can pass the conformance suite and stand
//! in for Docker or AWS in orchestration tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::world::{FakeResource, World};
use crate::environment::spec_hash;
use crate::phase::{Change, DestroyOptions, Destroyed, Kept, PhaseContext, PhaseId};
use crate::reconcile::Pass;
use crate::secret::Secret;
use crate::service::{
    CacheEndpoint, ClusterTarget, ObjectStoreEndpoint, PostgresEndpoint, QueueEndpoint, QueueInfo,
    ServiceBackend, ServiceEndpoint, ServiceKind,
};
use crate::{Error, Result};

/// A fake [`ServiceBackend`].
#[derive(Debug)]
pub struct FakeService {
    kind: ServiceKind,
    world: World,
    deps: Vec<PhaseId>,
    image: String,
    not_ready_for: u32,
    never_ready: bool,
    ensure_failures: u32,
    defers_plan: bool,
    ready_timeout: Duration,
    probes: AtomicU32,
    ensures: AtomicU32,
}

impl FakeService {
    /// A healthy fake of `kind` in `world`.
    pub fn new(kind: ServiceKind, world: &World) -> Self {
        FakeService {
            kind,
            world: world.clone(),
            deps: Vec::new(),
            image: "fake:1".to_string(),
            not_ready_for: 0,
            never_ready: false,
            ensure_failures: 0,
            defers_plan: false,
            ready_timeout: Duration::from_secs(5),
            probes: AtomicU32::new(0),
            ensures: AtomicU32::new(0),
        }
    }

    /// Depends on `ids`.
    #[must_use]
    pub fn with_deps(mut self, ids: &[&str]) -> Self {
        self.deps = ids.iter().map(PhaseId::new).collect();
        self
    }

    /// Desired "image"; changing it makes the container drift (replace).
    #[must_use]
    pub fn with_image(mut self, image: &str) -> Self {
        self.image = image.to_string();
        self
    }

    /// Fails this many probes after each start before answering.
    #[must_use]
    pub fn not_ready_for(mut self, probes: u32) -> Self {
        self.not_ready_for = probes;
        self
    }

    /// Never answers its probe.
    #[must_use]
    pub fn never_ready(mut self) -> Self {
        self.never_ready = true;
        self
    }

    /// Fails `ensure` transiently this many times.
    #[must_use]
    pub fn failing_ensure(mut self, times: u32) -> Self {
        self.ensure_failures = times;
        self
    }

    /// Says its plan is incomplete while its dependencies' outputs are known only
    /// after apply, like a backend that needs a network's ids to plan.
    #[must_use]
    pub fn deferring_plan(mut self) -> Self {
        self.defers_plan = true;
        self
    }

    /// How long the phase waits for the probe.
    #[must_use]
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Probes made so far.
    pub fn probes(&self) -> u32 {
        self.probes.load(Ordering::SeqCst)
    }

    /// The name of its container in `ctx`'s environment.
    pub fn container_name(&self, ctx: &PhaseContext) -> String {
        ctx.env().resource_name(self.kind.id())
    }

    /// The name of its data volume in `ctx`'s environment.
    pub fn volume_name(&self, ctx: &PhaseContext) -> String {
        format!("{}-data", ctx.env().resource_name(self.kind.id()))
    }

    fn spec(&self) -> String {
        spec_hash(&(&self.image, self.kind))
    }

    fn resource(&self, ctx: &PhaseContext, kind: &str, running: bool) -> FakeResource {
        let hash = self.spec();
        FakeResource {
            kind: kind.to_string(),
            labels: ctx.env().labels(self.kind.id(), Some(&hash)),
            spec: hash,
            running,
            data: Default::default(),
        }
    }

    fn by(&self) -> &'static str {
        self.kind.id()
    }
}

#[async_trait]
impl ServiceBackend for FakeService {
    fn kind(&self) -> ServiceKind {
        self.kind
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        self.deps.clone()
    }

    fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    fn deferred(&self, ctx: &PhaseContext) -> Option<String> {
        let pending: Vec<String> = self
            .deps
            .iter()
            .filter(|dep| matches!(ctx.inputs_of(dep), Ok(None)))
            .map(|dep| format!("`{dep}`"))
            .collect();
        (self.defers_plan && !pending.is_empty()).then(|| {
            format!(
                "needs the outputs of {}, known after apply",
                pending.join(", ")
            )
        })
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        if pass.is_apply() {
            let n = self.ensures.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.ensure_failures {
                return Err(Error::unavailable(format!(
                    "simulated failure {n} of {} to reach the fake engine",
                    self.ensure_failures
                )));
            }
        }
        let mut changed = false;
        let volume = self.volume_name(ctx);
        if self.world.read(self.by(), &volume).is_none()
            && pass.will(Change::create("volume", &volume))
        {
            self.world
                .put(self.by(), &volume, self.resource(ctx, "volume", false));
            changed = true;
        }
        let container = self.container_name(ctx);
        let change = match self.world.read(self.by(), &container) {
            None => Some(Change::create("container", &container)),
            Some(c) if c.spec != self.spec() => {
                Some(Change::replace("container", &container).because("spec changed"))
            }
            Some(c) if !c.running => {
                Some(Change::update("container", &container).because("stopped"))
            }
            Some(_) => None,
        };
        if let Some(change) = change {
            let start_only = change.reason.as_deref() == Some("stopped");
            if pass.will(change) {
                if start_only {
                    self.world.set_running(self.by(), &container, true);
                } else {
                    self.world
                        .put(self.by(), &container, self.resource(ctx, "container", true));
                }
                changed = true;
            }
        }
        if changed {
            self.probes.store(0, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn probe(&self, ctx: &PhaseContext) -> Result<()> {
        let n = self.probes.fetch_add(1, Ordering::SeqCst) + 1;
        let container = self.container_name(ctx);
        let running = self.world.get(&container).is_some_and(|c| c.running);
        if !running {
            return Err(Error::unavailable("connection refused: not running")
                .with_resource(format!("container {container}")));
        }
        if self.never_ready || n <= self.not_ready_for {
            return Err(Error::unavailable("connection refused: still starting")
                .with_resource(format!("container {container}")));
        }
        Ok(())
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let env = ctx.env().name();
        let secret = Secret::new(self.world.secret(&format!("{env}/{}", self.kind)));
        let config = ctx.env().config();
        Ok(match self.kind {
            ServiceKind::Postgres => ServiceEndpoint::Postgres(PostgresEndpoint {
                host: "127.0.0.1".to_string(),
                port: config.services.postgres.local.port.get(),
                username: config.services.postgres.user.to_string(),
                password: secret,
                databases: config
                    .services
                    .postgres
                    .databases
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                require_tls: false,
            }),
            ServiceKind::ObjectStore => ServiceEndpoint::ObjectStore(ObjectStoreEndpoint {
                endpoint_url: "http://127.0.0.1:9000".to_string(),
                region: "us-east-1".to_string(),
                credentials: Some(("fake-access-key".to_string(), secret)),
                path_style: true,
                buckets: config
                    .services
                    .object_store
                    .buckets
                    .iter()
                    .map(|b| (b.to_string(), format!("comind-{env}-{b}")))
                    .collect(),
            }),
            ServiceKind::Cache => ServiceEndpoint::Cache(CacheEndpoint {
                host: "127.0.0.1".to_string(),
                port: config.services.cache.local.port.get(),
                password: secret,
                tls: false,
            }),
            ServiceKind::Queue => ServiceEndpoint::Queue(QueueEndpoint {
                endpoint_url: "http://127.0.0.1:9324".to_string(),
                region: "us-east-1".to_string(),
                credentials: Some(("fake-access-key".to_string(), secret)),
                queues: config
                    .services
                    .queue
                    .queues
                    .iter()
                    .map(|q| QueueInfo {
                        name: q.to_string(),
                        url: format!("http://127.0.0.1:9324/000000000000/comind-{env}-{q}"),
                        dlq_url: format!("http://127.0.0.1:9324/000000000000/comind-{env}-{q}-dlq"),
                    })
                    .collect(),
            }),
        })
    }

    /// A container's address on a network Pods reach, as a local backend gives:
    /// one per kind in TEST-NET-1 (192.0.2.0/24, reserved for documentation), which
    /// nothing ever answers at, on the port the real service listens on.
    async fn cluster_target(
        &self,
        _ctx: &PhaseContext,
        _endpoint: &ServiceEndpoint,
    ) -> Result<ClusterTarget> {
        let (last, port) = match self.kind {
            ServiceKind::Postgres => (11, 5432),
            ServiceKind::ObjectStore => (12, 9000),
            ServiceKind::Cache => (13, 6379),
            ServiceKind::Queue => (14, 9324),
        };
        Ok(ClusterTarget {
            host: format!("192.0.2.{last}"),
            port,
        })
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        let mut destroyed = Destroyed::default();
        let container = self.container_name(ctx);
        if self.world.delete(self.by(), &container) {
            destroyed
                .changes
                .push(Change::delete("container", &container));
        }
        let volume = self.volume_name(ctx);
        if self.world.exists(&volume) {
            if options.purge {
                self.world.delete(self.by(), &volume);
                destroyed.changes.push(Change::delete("volume", &volume));
            } else {
                destroyed.kept.push(Kept {
                    kind: "volume".to_string(),
                    name: volume,
                    reason: "holds data; `comind down --purge` removes it".to_string(),
                });
            }
        }
        Ok(destroyed)
    }

    async fn diagnostics(&self, ctx: &PhaseContext) -> Option<String> {
        Some(format!(
            "last log lines of {}:\n  fake: still starting",
            self.container_name(ctx)
        ))
    }
}
