//! ElasticMQ (the `queue` service) in a container: an SQS API, the configured queues
//! created through it, each with a dead-letter queue and a redrive policy.
//!
//! Queues are named `comind-<env>-<queue>`, their dead-letter queues
//! `comind-<env>-<queue>-dlq`, and messages move to the dead-letter queue after
//! `services.queue.max_receive_count` receives (default 5). The probe is `ListQueues`.
//!
//! ElasticMQ accepts any credentials: the access key and secret in the outputs are
//! generated only so that SQS clients, which insist on having credentials, are
//! configured the same way as against AWS. The configuration file
//! `/opt/elasticmq.conf` (no secret in it) makes queue URLs follow the address a
//! client used, fixes the account id, and keeps queues and messages in the data
//! volume, so they survive a `comind down`.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use comind_core::environment::Environment;
use comind_core::reconcile::{Mode, Pass};
use comind_core::service::{ClusterTarget, QueueEndpoint, QueueInfo, ServiceEndpoint, ServiceKind};
use comind_core::state::Credentials;
use comind_core::{
    Change, DestroyOptions, Destroyed, Error, PhaseContext, PhaseId, Result, Secret, ServiceBackend,
};

use super::container::{ContainerSpec, LOOPBACK, ReadyBudget, ServiceContainer};
use super::ports::PublishedPort;
use super::sdk::{ClientCache, REGION, sdk_error, sqs_client};
use crate::docker::DockerClient;
use crate::docker::archive::{ContainerFile, Ownership, Template};

/// The SQS port in the container.
pub const ELASTICMQ_PORT: u16 = 9324;
/// The configuration file the image's entrypoint reads.
pub const ELASTICMQ_CONFIG_PATH: &str = "/opt/elasticmq.conf";
/// The account id in queue URLs and ARNs.
pub const ACCOUNT_ID: &str = "000000000000";
const DATA_PATH: &str = "/data";
const ACCESS_KEY: &str = "comind";

/// What `/opt/elasticmq.conf` holds.
const CONFIG: &str = r#"# Written by Comind when the container was created.
include classpath("application.conf")

# Queue URLs use the address the client called, so they work from the host
# (127.0.0.1:<port>) and from the cluster (queue:9324) alike.
node-address {
  protocol = http
  host = "*"
  port = 9324
  context-path = ""
}

rest-sqs {
  enabled = true
  bind-port = 9324
  bind-hostname = "0.0.0.0"
  sqs-limits = strict
}

rest-stats {
  enabled = false
}

aws {
  region = us-east-1
  accountId = 000000000000
}

# Queues and their messages live in the data volume.
queues-storage {
  enabled = true
  path = "/data/queues.conf"
}

messages-storage {
  enabled = true
  uri = "jdbc:h2:/data/elasticmq"
}
"#;

/// ElasticMQ (the `queue` service) as a Docker container.
#[derive(Debug)]
pub struct ElasticMqBackend {
    container: ServiceContainer,
    ready_timeout: Duration,
    clients: ClientCache<aws_sdk_sqs::Client>,
}

/// One configured queue.
struct Queue {
    /// The name in comind.yaml.
    name: String,
    /// The real queue name.
    queue: String,
    /// The real dead-letter queue name.
    dlq: String,
}

impl ElasticMqBackend {
    /// The backend for `env`, talking to Docker through `docker`; its readiness
    /// timeout is `local.ready_timeout`.
    pub fn new(docker: DockerClient, env: &Environment) -> Self {
        ElasticMqBackend {
            container: ServiceContainer::new(docker, ServiceKind::Queue),
            ready_timeout: super::ready_timeout(env),
            clients: ClientCache::default(),
        }
    }

    /// Overrides how long the service may take to answer after starting.
    #[must_use]
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    fn component(&self) -> &'static str {
        self.container.component()
    }

    fn spec(&self, env: &Environment) -> ContainerSpec {
        let settings = &env.config().services.queue.local;
        ContainerSpec {
            name: self.container.name(env),
            image: settings.image.to_string(),
            image_field: "services.queue.local.image",
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            ports: vec![PublishedPort {
                container: ELASTICMQ_PORT,
                host: settings.port.get(),
                field: "services.queue.local.port",
            }],
            network: env.config().local_network(),
            alias: self.component().to_string(),
            volume: self.container.volume(env),
            data_path: DATA_PATH.to_string(),
            files: vec![ContainerFile {
                path: ELASTICMQ_CONFIG_PATH.to_string(),
                file: Ownership {
                    uid: 0,
                    gid: 0,
                    mode: 0o644,
                },
                dir: None,
                content: Template::new().text(CONFIG),
            }],
            restart: "unless-stopped",
        }
    }

    fn endpoint_url(env: &Environment) -> String {
        format!(
            "http://{LOOPBACK}:{}",
            env.config().services.queue.local.port.get()
        )
    }

    fn queue_url(env: &Environment, queue: &str) -> String {
        format!("{}/{ACCOUNT_ID}/{queue}", Self::endpoint_url(env))
    }

    fn queues(env: &Environment) -> Vec<Queue> {
        env.config()
            .services
            .queue
            .queues
            .iter()
            .map(|q| {
                let queue = env.resource_name(q.as_str());
                Queue {
                    name: q.to_string(),
                    dlq: format!("{queue}-dlq"),
                    queue,
                }
            })
            .collect()
    }

    fn client(&self, env: &Environment, credentials: &Credentials) -> aws_sdk_sqs::Client {
        let endpoint = Self::endpoint_url(env);
        self.clients.get(
            &endpoint,
            &credentials.username,
            &credentials.password,
            || sqs_client(&endpoint, &credentials.username, &credentials.password),
        )
    }

    fn credentials(&self, env: &Environment) -> Result<Credentials> {
        super::stored(env, self.component())?
            .ok_or_else(|| super::no_credentials(env, self.component()))
    }

    fn resource(&self, env: &Environment) -> String {
        format!("container {}", self.container.name(env))
    }

    /// Names of this environment's queues that exist.
    async fn existing_queues(
        &self,
        env: &Environment,
        credentials: &Credentials,
    ) -> Result<BTreeSet<String>> {
        let prefix = env.resource_name("");
        let listed = self
            .client(env, credentials)
            .list_queues()
            .queue_name_prefix(&prefix)
            .send()
            .await
            .map_err(|e| sdk_error("list queues", &self.resource(env), e))?;
        Ok(listed
            .queue_urls()
            .iter()
            .filter_map(|url| url.rsplit('/').next().map(str::to_string))
            .collect())
    }

    async fn queue_attribute(
        &self,
        env: &Environment,
        credentials: &Credentials,
        queue: &str,
        attribute: QueueAttributeName,
    ) -> Result<Option<String>> {
        let answer = self
            .client(env, credentials)
            .get_queue_attributes()
            .queue_url(Self::queue_url(env, queue))
            .attribute_names(attribute.clone())
            .send()
            .await
            .map_err(|e| sdk_error("read the attributes of", &format!("queue {queue}"), e))?;
        Ok(answer.attributes().and_then(|a| a.get(&attribute)).cloned())
    }

    async fn create_queue(
        &self,
        env: &Environment,
        credentials: &Credentials,
        queue: &str,
        redrive: Option<String>,
    ) -> Result<()> {
        let mut request = self
            .client(env, credentials)
            .create_queue()
            .queue_name(queue);
        if let Some(policy) = redrive {
            request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
        }
        request
            .send()
            .await
            .map_err(|e| sdk_error("create", &format!("queue {queue}"), e))?;
        Ok(())
    }

    /// Creates missing queues and dead-letter queues and repairs redrive policies (or,
    /// on a planning pass, says what would be done). Idempotent; each call is a pass of
    /// its own from live state.
    async fn converge_queues(
        &self,
        env: &Environment,
        credentials: &Credentials,
        mode: Mode,
    ) -> Result<Vec<Change>> {
        let max_receive_count = env.config().services.queue.max_receive_count;
        let existing = self.existing_queues(env, credentials).await?;
        let mut pass = Pass::new(mode);
        for queue in Self::queues(env) {
            if !existing.contains(&queue.dlq)
                && pass.will(
                    Change::create("queue", &queue.dlq)
                        .because(format!("dead-letter queue of `{}`", queue.name)),
                )
            {
                self.create_queue(env, credentials, &queue.dlq, None)
                    .await?;
            }
            let current = if existing.contains(&queue.queue) {
                Some(
                    self.queue_attribute(
                        env,
                        credentials,
                        &queue.queue,
                        QueueAttributeName::RedrivePolicy,
                    )
                    .await?,
                )
            } else {
                None
            };
            if let Some(Some(policy)) = &current
                && redrive_matches(policy, &queue.dlq, max_receive_count)
            {
                continue;
            }
            let redrive = format!(
                "redrive to {} after {max_receive_count} receives",
                queue.dlq
            );
            let change = match current {
                None => Change::create("queue", &queue.queue).because(redrive),
                Some(_) => Change::update("queue", &queue.queue)
                    .because(format!("redrive policy set: {redrive}")),
            };
            if !pass.will(change) {
                continue;
            }
            let dlq_arn = self
                .queue_attribute(env, credentials, &queue.dlq, QueueAttributeName::QueueArn)
                .await?
                .ok_or_else(|| {
                    Error::unavailable(format!("the server did not tell the ARN of {}", queue.dlq))
                        .with_resource(format!("queue {}", queue.dlq))
                })?;
            let policy = serde_json::json!({
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": max_receive_count,
            })
            .to_string();
            match current {
                None => {
                    self.create_queue(env, credentials, &queue.queue, Some(policy))
                        .await?;
                }
                Some(_) => {
                    self.client(env, credentials)
                        .set_queue_attributes()
                        .queue_url(Self::queue_url(env, &queue.queue))
                        .attributes(QueueAttributeName::RedrivePolicy, policy)
                        .send()
                        .await
                        .map_err(|e| {
                            sdk_error(
                                "set the redrive policy of",
                                &format!("queue {}", queue.queue),
                                e,
                            )
                        })?;
                }
            }
        }
        Ok(pass.into_changes())
    }
}

/// Whether the `RedrivePolicy` JSON `policy` sends messages to `dlq` after
/// `max_receive_count` receives. Servers write the count as a number or a string.
fn redrive_matches(policy: &str, dlq: &str, max_receive_count: u32) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(policy) else {
        return false;
    };
    let target_ok = value
        .get("deadLetterTargetArn")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|arn| arn.rsplit(':').next() == Some(dlq));
    let count = value.get("maxReceiveCount").and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    target_ok && count == Some(u64::from(max_receive_count))
}

impl ElasticMqBackend {
    /// The planning pass: reads only, with placeholder credentials when none are
    /// stored yet.
    async fn plan(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let env = ctx.env();
        let spec = self.spec(env);
        let assessment = self.container.assess(ctx, &spec, None).await?;
        let mut changes = assessment.changes(&spec);
        let everything = Self::queues(env)
            .into_iter()
            .flat_map(|q| {
                [
                    Change::create("queue", q.dlq),
                    Change::create("queue", q.queue),
                ]
            })
            .collect();
        // ElasticMQ accepts any credentials, so the plan can look even before they
        // were generated.
        let credentials =
            super::stored::<Credentials>(env, self.component())?.unwrap_or_else(|| Credentials {
                username: ACCESS_KEY.to_string(),
                password: Secret::new("not-yet-generated"),
            });
        changes.extend(
            super::planned_contents(&assessment, &spec, everything, || {
                self.converge_queues(env, &credentials, Mode::Plan)
            })
            .await?,
        );
        pass.record(changes);
        Ok(())
    }

    /// The applying pass: credentials are generated once, the container is made and
    /// started, then its contents converge once it answers.
    async fn ensure(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let env = ctx.env();
        let (credentials, _) = super::stored_or_generated(env, self.component(), || {
            Credentials::generate(ACCESS_KEY)
        })?;
        let spec = self.spec(env);
        let mut changes = self.container.ensure(ctx, &spec, None).await?;
        ctx.checkpoint()?;
        // The first answer and the setup share one readiness timeout.
        let budget = ReadyBudget::start(self.ready_timeout);
        ctx.step(
            "first_answer",
            self.container.wait_until(
                ctx,
                "waiting for the SQS API to answer",
                &budget,
                &[],
                || self.existing_queues(env, &credentials),
            ),
        )
        .await?;
        let queues = ctx
            .step(
                "setup",
                self.container.wait_until(
                    ctx,
                    "waiting for the SQS API to create the queues",
                    &budget,
                    &[],
                    || self.converge_queues(env, &credentials, Mode::Apply),
                ),
            )
            .await?;
        changes.extend(queues);
        pass.record(changes);
        Ok(())
    }
}

#[async_trait]
impl ServiceBackend for ElasticMqBackend {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Queue
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        super::network_dependency()
    }

    fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        self.container.preflight(ctx, &self.spec(ctx.env())).await
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        // Planning cannot generate credentials or wait for the container, so the two
        // modes take their own route to the container; what lives inside it is
        // converged by one function on the same pass.
        if pass.is_apply() {
            self.ensure(ctx, pass).await
        } else {
            self.plan(ctx, pass).await
        }
    }

    async fn probe(&self, ctx: &PhaseContext) -> Result<()> {
        let env = ctx.env();
        let credentials = self.credentials(env)?;
        self.existing_queues(env, &credentials).await.map(|_| ())
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let env = ctx.env();
        let credentials = self.credentials(env)?;
        Ok(ServiceEndpoint::Queue(QueueEndpoint {
            endpoint_url: Self::endpoint_url(env),
            region: REGION.to_string(),
            credentials: Some((credentials.username, credentials.password)),
            queues: Self::queues(env)
                .into_iter()
                .map(|q| QueueInfo {
                    url: Self::queue_url(env, &q.queue),
                    dlq_url: Self::queue_url(env, &q.dlq),
                    name: q.name,
                })
                .collect(),
        }))
    }

    async fn cluster_target(
        &self,
        ctx: &PhaseContext,
        _endpoint: &ServiceEndpoint,
    ) -> Result<ClusterTarget> {
        self.container
            .cluster_target(ctx.env(), ELASTICMQ_PORT)
            .await
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        self.container.destroy(ctx, options.purge).await
    }

    async fn diagnostics(&self, ctx: &PhaseContext) -> Option<String> {
        let credentials = self.credentials(ctx.env()).ok();
        let secrets: Vec<&Secret> = credentials.iter().map(|c| &c.password).collect();
        self.container.diagnostics(ctx.env(), &secrets).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_match_by_target_and_count() {
        let dlq = "comind-dev-jobs-dlq";
        assert!(redrive_matches(
            r#"{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:comind-dev-jobs-dlq", "maxReceiveCount": 5}"#,
            dlq,
            5
        ));
        assert!(redrive_matches(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:elasticmq:000000000000:comind-dev-jobs-dlq","maxReceiveCount":"5"}"#,
            dlq,
            5
        ));
        assert!(!redrive_matches(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:0:comind-dev-jobs-dlq","maxReceiveCount":3}"#,
            dlq,
            5
        ));
        assert!(!redrive_matches(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:0:other-dlq","maxReceiveCount":5}"#,
            dlq,
            5
        ));
        assert!(!redrive_matches("not json", dlq, 5));
    }

    #[test]
    fn queues_and_urls_are_named_after_the_environment() {
        let env =
            comind_core::Environment::with_state_root(comind_core::Config::default(), "/tmp/x");
        let queues = ElasticMqBackend::queues(&env);
        assert_eq!(queues.len(), 1);
        assert_eq!(queues[0].queue, "comind-dev-jobs");
        assert_eq!(queues[0].dlq, "comind-dev-jobs-dlq");
        assert_eq!(
            ElasticMqBackend::queue_url(&env, "comind-dev-jobs"),
            "http://127.0.0.1:9324/000000000000/comind-dev-jobs"
        );
    }
}
