//! The core conformance suites against moto: every AWS service backend passes
//! `service_suite`, and the network, iam and cluster phases pass `phase_suite`.
//!
//! Data markers are written with real clients where moto has a data plane: an S3
//! object, an SQS message. RDS and ElastiCache have none in moto (no PostgreSQL or
//! Redis behind them), so their marker is a user tag on the instance or group: like
//! the data, it goes into the final snapshot that `down` takes and comes back with the
//! restore that `up` makes, and a purge destroys it. That proves the snapshot/restore
//! path the data takes on AWS; it cannot prove what is inside a snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use comind_aws::AwsProvider;
use comind_core::service::ServiceEndpoint;
use comind_core::testing::conformance::{PhaseFixture, ServiceFixture, phase_suite, service_suite};
use comind_core::{Environment, Outputs, Phase, PhaseId, Result, ServiceBackend, ServiceKind};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;

use crate::support::{self, CallLog, Peek, owned};

const MARKER_TAG: &str = "conformance-marker";

struct Service {
    _moto: Moto,
    peek: Peek,
    env: Arc<Environment>,
    backend: Arc<dyn ServiceBackend>,
    inputs: HashMap<PhaseId, Outputs>,
    kind: ServiceKind,
    _state: tempfile::TempDir,
}

impl Service {
    async fn new(moto: Moto, kind: ServiceKind, name: &str) -> Self {
        let state = tempfile::tempdir().unwrap();
        let env = support::env(name, state.path(), |c| {
            // Two queues, so that `down` deletes the one without messages while it
            // keeps the other.
            c.services.queue.queues = vec!["jobs".parse().unwrap(), "events".parse().unwrap()];
        });
        let provider = support::provider(&moto, &CallLog::default());
        let mut inputs = HashMap::new();
        if matches!(kind, ServiceKind::Postgres | ServiceKind::Cache) {
            let network = support::apply(&provider, &env, "network", HashMap::new()).await;
            inputs.insert(PhaseId::new("network"), network);
        }
        Service {
            peek: Peek::new(&moto),
            backend: provider.backend(kind, &env),
            env,
            inputs,
            kind,
            _moto: moto,
            _state: state,
        }
    }

    fn jobs_url(endpoint: &ServiceEndpoint) -> String {
        match endpoint {
            ServiceEndpoint::Queue(q) => q
                .queues
                .iter()
                .find(|q| q.name == "jobs")
                .map(|q| q.url.clone())
                .expect("jobs queue"),
            other => panic!("not a queue endpoint: {other:?}"),
        }
    }

    fn uploads(endpoint: &ServiceEndpoint) -> String {
        match endpoint {
            ServiceEndpoint::ObjectStore(s3) => s3
                .buckets
                .iter()
                .find(|(name, _)| name == "uploads")
                .map(|(_, real)| real.clone())
                .expect("uploads bucket"),
            other => panic!("not an object store endpoint: {other:?}"),
        }
    }

    async fn rds_arn(&self) -> String {
        let name = self.env.resource_name("postgres");
        let out = self
            .peek
            .rds
            .describe_db_instances()
            .db_instance_identifier(&name)
            .send()
            .await
            .unwrap();
        out.db_instances()[0].db_instance_arn().unwrap().to_string()
    }

    async fn cache_arn(&self) -> String {
        let name = self.env.resource_name("cache");
        let out = self
            .peek
            .elasticache
            .describe_replication_groups()
            .replication_group_id(&name)
            .send()
            .await
            .unwrap();
        out.replication_groups()[0].arn().unwrap().to_string()
    }
}

#[async_trait]
impl ServiceFixture for Service {
    fn backend(&self) -> Arc<dyn ServiceBackend> {
        self.backend.clone()
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    fn inputs(&self) -> HashMap<PhaseId, Outputs> {
        self.inputs.clone()
    }

    async fn owned_resources(&self) -> Result<Vec<String>> {
        Ok(match self.kind {
            ServiceKind::Postgres => owned::postgres(&self.peek, &self.env).await,
            ServiceKind::ObjectStore => owned::object_store(&self.peek, &self.env).await,
            ServiceKind::Cache => owned::cache(&self.peek, &self.env).await,
            ServiceKind::Queue => owned::queue(&self.peek, &self.env).await,
        })
    }

    async fn write_marker(&self, endpoint: &ServiceEndpoint, marker: &str) -> Result<()> {
        match self.kind {
            ServiceKind::ObjectStore => {
                self.peek
                    .s3
                    .put_object()
                    .bucket(Self::uploads(endpoint))
                    .key(marker)
                    .body(marker.as_bytes().to_vec().into())
                    .send()
                    .await
                    .unwrap();
            }
            ServiceKind::Queue => {
                self.peek
                    .sqs
                    .send_message()
                    .queue_url(Self::jobs_url(endpoint))
                    .message_body(marker)
                    .send()
                    .await
                    .unwrap();
            }
            ServiceKind::Postgres => {
                self.peek
                    .rds
                    .add_tags_to_resource()
                    .resource_name(self.rds_arn().await)
                    .tags(
                        aws_sdk_rds::types::Tag::builder()
                            .key(MARKER_TAG)
                            .value(marker)
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            ServiceKind::Cache => {
                self.peek
                    .elasticache
                    .add_tags_to_resource()
                    .resource_name(self.cache_arn().await)
                    .tags(
                        aws_sdk_elasticache::types::Tag::builder()
                            .key(MARKER_TAG)
                            .value(marker)
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
        }
        Ok(())
    }

    async fn has_marker(&self, endpoint: &ServiceEndpoint, marker: &str) -> Result<bool> {
        Ok(match self.kind {
            ServiceKind::ObjectStore => self
                .peek
                .s3
                .head_object()
                .bucket(Self::uploads(endpoint))
                .key(marker)
                .send()
                .await
                .is_ok(),
            ServiceKind::Queue => {
                let out = self
                    .peek
                    .sqs
                    .receive_message()
                    .queue_url(Self::jobs_url(endpoint))
                    .max_number_of_messages(10)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .unwrap();
                out.messages().iter().any(|m| m.body() == Some(marker))
            }
            ServiceKind::Postgres => {
                let tags = self
                    .peek
                    .rds
                    .list_tags_for_resource()
                    .resource_name(self.rds_arn().await)
                    .send()
                    .await
                    .unwrap();
                tags.tag_list()
                    .iter()
                    .any(|t| t.key() == Some(MARKER_TAG) && t.value() == Some(marker))
            }
            ServiceKind::Cache => {
                let tags = self
                    .peek
                    .elasticache
                    .list_tags_for_resource()
                    .resource_name(self.cache_arn().await)
                    .send()
                    .await
                    .unwrap();
                tags.tag_list()
                    .iter()
                    .any(|t| t.key() == Some(MARKER_TAG) && t.value() == Some(marker))
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_postgres_passes_the_service_suite() {
    let moto = require_peer!(Moto::start());
    service_suite(&Service::new(moto, ServiceKind::Postgres, "conf-pg").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_store_passes_the_service_suite() {
    let moto = require_peer!(Moto::start());
    service_suite(&Service::new(moto, ServiceKind::ObjectStore, "conf-s3").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticache_redis_passes_the_service_suite() {
    let moto = require_peer!(Moto::start());
    service_suite(&Service::new(moto, ServiceKind::Cache, "conf-redis").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queues_pass_the_service_suite() {
    let moto = require_peer!(Moto::start());
    service_suite(&Service::new(moto, ServiceKind::Queue, "conf-sqs").await).await;
}

struct PhaseUnderTest {
    _moto: Moto,
    peek: Peek,
    env: Arc<Environment>,
    phase: Arc<dyn Phase>,
    inputs: HashMap<PhaseId, Outputs>,
    _state: tempfile::TempDir,
}

impl PhaseUnderTest {
    async fn new(moto: Moto, id: &str, name: &str) -> Self {
        let state = tempfile::tempdir().unwrap();
        let env = support::env(name, state.path(), |_| {});
        let provider: AwsProvider = support::provider(&moto, &CallLog::default());
        let mut inputs = HashMap::new();
        if id == "cluster" {
            for dep in ["network", "iam"] {
                let outputs = support::apply(&provider, &env, dep, HashMap::new()).await;
                inputs.insert(PhaseId::new(dep), outputs);
            }
        }
        PhaseUnderTest {
            peek: Peek::new(&moto),
            phase: support::phase(&provider, &env, id),
            env,
            inputs,
            _moto: moto,
            _state: state,
        }
    }
}

#[async_trait]
impl PhaseFixture for PhaseUnderTest {
    fn phase(&self) -> Arc<dyn Phase> {
        self.phase.clone()
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    fn inputs(&self) -> HashMap<PhaseId, Outputs> {
        self.inputs.clone()
    }

    async fn owned_resources(&self) -> Result<Vec<String>> {
        Ok(match self.phase.id().as_str() {
            "network" => owned::network(&self.peek, &self.env).await,
            "iam" => owned::iam(&self.peek, &self.env).await,
            "cluster" => owned::cluster(&self.peek, &self.env).await,
            other => panic!("no listing for `{other}`"),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_phase_passes_the_phase_suite() {
    let moto = require_peer!(Moto::start());
    phase_suite(&PhaseUnderTest::new(moto, "network", "conf-net").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iam_phase_passes_the_phase_suite() {
    let moto = require_peer!(Moto::start());
    phase_suite(&PhaseUnderTest::new(moto, "iam", "conf-iam").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_phase_passes_the_phase_suite() {
    let moto = require_peer!(Moto::start());
    phase_suite(&PhaseUnderTest::new(moto, "cluster", "conf-eks").await).await;
}
