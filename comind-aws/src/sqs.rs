//! The `queue` service on SQS.
//!
//! Each configured queue `<q>` becomes `comind-<env>-<q>` with a dead-letter queue
//! `comind-<env>-<q>-dlq`; messages received `max_receive_count` times move to the
//! dead-letter queue, which keeps them for 14 days. Both are encrypted with
//! SQS-managed keys unless the user set a KMS key.
//!
//! `down` keeps queues that hold messages (and the dead-letter queue of a kept queue)
//! and deletes the rest; `down --purge` deletes them all. Message counts are
//! SQS's approximate ones, which lag by up to a minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use comind_core::reconcile::Pass;
use comind_core::service::{QueueEndpoint, QueueInfo};
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Error, Kept, PhaseContext, Result,
    ServiceBackend, ServiceEndpoint, ServiceKind,
};
use serde_json::Value;

use crate::clients::{Clients, Connector};
use crate::create::{self, Made, single_attempt};
use crate::error::AwsResultExt;
use crate::tags::{self, Selector, Tags};

const COMPONENT: &str = "queue";
/// Dead letters are kept as long as SQS allows: 14 days.
const DLQ_RETENTION_SECONDS: &str = "1209600";

/// SQS queues with dead-letter queues.
pub struct SqsQueues {
    aws: Arc<Connector>,
}

impl std::fmt::Debug for SqsQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueues").finish_non_exhaustive()
    }
}

impl SqsQueues {
    pub(crate) fn new(aws: Arc<Connector>) -> Self {
        SqsQueues { aws }
    }
}

fn dlq_name(queue: &str) -> String {
    format!("{queue}-dlq")
}

/// A configured queue: its name in comind.yaml and in SQS.
struct Queue {
    short: String,
    name: String,
}

fn queues(env: &Environment) -> Vec<Queue> {
    env.config()
        .services
        .queue
        .queues
        .iter()
        .map(|q| Queue {
            short: q.as_str().to_string(),
            name: env.resource_name(q.as_str()),
        })
        .collect()
}

/// A queue as found.
struct Live {
    url: String,
    attributes: HashMap<QueueAttributeName, String>,
}

impl Live {
    fn arn(&self) -> &str {
        self.attributes
            .get(&QueueAttributeName::QueueArn)
            .map_or("", String::as_str)
    }

    fn messages(&self) -> u64 {
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ]
        .iter()
        .filter_map(|a| self.attributes.get(a))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
    }

    /// Encrypted, by SQS-managed keys or by a KMS key the user chose.
    fn encrypted(&self) -> bool {
        self.attributes
            .get(&QueueAttributeName::SqsManagedSseEnabled)
            .is_some_and(|v| v == "true")
            || self
                .attributes
                .get(&QueueAttributeName::KmsMasterKeyId)
                .is_some_and(|v| !v.is_empty())
    }
}

/// The redrive policy of a queue whose dead letters go to `dlq_arn`.
fn redrive_policy(dlq_arn: &str, max_receive_count: u32) -> String {
    serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count,
    })
    .to_string()
}

/// Whether `policy` (as SQS returns it: the count may be a number or a string) sends
/// dead letters to `dlq_arn` after `max_receive_count` receives.
fn redrive_matches(policy: Option<&String>, dlq_arn: &str, max_receive_count: u32) -> bool {
    let Some(policy) = policy.and_then(|p| serde_json::from_str::<Value>(p).ok()) else {
        return false;
    };
    let count = match &policy["maxReceiveCount"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    policy["deadLetterTargetArn"].as_str() == Some(dlq_arn)
        && count == Some(u64::from(max_receive_count))
}

/// One pass over the queues: it records each change on `pass`, and makes it only when
/// `pass` applies.
struct Run<'a> {
    env: &'a Environment,
    clients: &'a Clients,
    pass: &'a mut Pass,
}

impl<'a> Run<'a> {
    fn new(env: &'a Environment, clients: &'a Clients, pass: &'a mut Pass) -> Self {
        Run { env, clients, pass }
    }

    /// The queue `name` with its tags and attributes, if it exists.
    async fn find(&self, name: &str) -> Result<Option<(Live, Tags)>> {
        let resource = format!("queue {name}");
        let Some(found) = self
            .clients
            .sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .found("sqs:GetQueueUrl", &resource)?
        else {
            return Ok(None);
        };
        let url = found.queue_url().unwrap_or_default().to_string();
        let tags = self
            .clients
            .sqs
            .list_queue_tags()
            .queue_url(&url)
            .send()
            .await
            .aws("sqs:ListQueueTags", &resource)?;
        let attributes = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .aws("sqs:GetQueueAttributes", &resource)?;
        Ok(Some((
            Live {
                url,
                attributes: attributes.attributes().cloned().unwrap_or_default(),
            },
            tags::from_map(tags.tags()),
        )))
    }

    /// Creates the queue (tagged by the create); finds it when it exists already, made
    /// by a create whose answer was lost or by a dying earlier run. Either way the
    /// queue as it is now.
    async fn create(
        &self,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> Result<Live> {
        let resource = format!("queue {name}");
        let ours = tags::to_map(&tags::ownership(self.env, COMPONENT, None));
        let made = create::once(
            &resource,
            || async {
                let created = self
                    .clients
                    .sqs
                    .create_queue()
                    .queue_name(name)
                    .set_attributes(Some(attributes.clone()))
                    .set_tags(Some(ours.clone()))
                    .customize()
                    .config_override(single_attempt::sqs())
                    .send()
                    .await
                    .aws("sqs:CreateQueue", &resource)?;
                Ok(created.queue_url().unwrap_or_default().to_string())
            },
            || async {
                match self.find(name).await? {
                    Some((live, live_tags)) => {
                        tags::require_owned(self.env, COMPONENT, "queue", name, &live_tags)?;
                        Ok(Some(live))
                    }
                    None => Ok(None),
                }
            },
        )
        .await?;
        let url = match made {
            Made::Created(url) => url,
            Made::Found(live) => live.url,
        };
        let attributes = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .aws("sqs:GetQueueAttributes", &resource)?;
        Ok(Live {
            url,
            attributes: attributes.attributes().cloned().unwrap_or_default(),
        })
    }

    async fn set(
        &self,
        live: &Live,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> Result<()> {
        self.clients
            .sqs
            .set_queue_attributes()
            .queue_url(&live.url)
            .set_attributes(Some(attributes))
            .send()
            .await
            .aws("sqs:SetQueueAttributes", format!("queue {name}"))?;
        Ok(())
    }

    async fn converge(&mut self) -> Result<()> {
        let max_receive_count = self.env.config().services.queue.max_receive_count;
        for queue in queues(self.env) {
            let dlq = dlq_name(&queue.name);
            // The dead-letter queue first: the queue's redrive policy names its ARN.
            let dlq_live = match self.find(&dlq).await? {
                Some((live, live_tags)) => {
                    tags::require_owned(self.env, COMPONENT, "queue", &dlq, &live_tags)?;
                    let mut wanted = HashMap::new();
                    if live
                        .attributes
                        .get(&QueueAttributeName::MessageRetentionPeriod)
                        .map(String::as_str)
                        != Some(DLQ_RETENTION_SECONDS)
                    {
                        wanted.insert(
                            QueueAttributeName::MessageRetentionPeriod,
                            DLQ_RETENTION_SECONDS.to_string(),
                        );
                    }
                    if !live.encrypted() {
                        wanted.insert(QueueAttributeName::SqsManagedSseEnabled, "true".to_string());
                    }
                    if !wanted.is_empty()
                        && self
                            .pass
                            .will(Change::update("queue", &dlq).because("retention or encryption"))
                    {
                        self.set(&live, &dlq, wanted).await?;
                    }
                    Some(live)
                }
                None => {
                    if self.pass.will(
                        Change::create("queue", &dlq)
                            .because(format!("dead letters of {} (kept 14 days)", queue.name)),
                    ) {
                        let attributes = HashMap::from([
                            (
                                QueueAttributeName::MessageRetentionPeriod,
                                DLQ_RETENTION_SECONDS.to_string(),
                            ),
                            (QueueAttributeName::SqsManagedSseEnabled, "true".to_string()),
                        ]);
                        Some(self.create(&dlq, attributes).await?)
                    } else {
                        None
                    }
                }
            };
            match self.find(&queue.name).await? {
                Some((live, live_tags)) => {
                    tags::require_owned(self.env, COMPONENT, "queue", &queue.name, &live_tags)?;
                    let mut wanted = HashMap::new();
                    if let Some(dlq) = &dlq_live
                        && !redrive_matches(
                            live.attributes.get(&QueueAttributeName::RedrivePolicy),
                            dlq.arn(),
                            max_receive_count,
                        )
                    {
                        wanted.insert(
                            QueueAttributeName::RedrivePolicy,
                            redrive_policy(dlq.arn(), max_receive_count),
                        );
                    }
                    if !live.encrypted() {
                        wanted.insert(QueueAttributeName::SqsManagedSseEnabled, "true".to_string());
                    }
                    if dlq_live.is_none() {
                        // Planning a new dead-letter queue: the redrive policy follows.
                        self.pass.record([
                            Change::update("queue", &queue.name).because("redrive policy")
                        ]);
                    } else if !wanted.is_empty()
                        && self.pass.will(
                            Change::update("queue", &queue.name)
                                .because("redrive policy or encryption"),
                        )
                    {
                        self.set(&live, &queue.name, wanted).await?;
                    }
                }
                None => {
                    if self.pass.will(
                        Change::create("queue", &queue.name)
                            .because(format!("to {dlq} after {max_receive_count} receives")),
                    ) {
                        let dlq = dlq_live.as_ref().ok_or_else(|| {
                            Error::internal("the dead-letter queue was not created first")
                        })?;
                        let attributes = HashMap::from([
                            (
                                QueueAttributeName::RedrivePolicy,
                                redrive_policy(dlq.arn(), max_receive_count),
                            ),
                            (QueueAttributeName::SqsManagedSseEnabled, "true".to_string()),
                        ]);
                        self.create(&queue.name, attributes).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Names of this environment's queues: the configured ones and their dead-letter
    /// queues, and any other queue with our name prefix (one dropped from comind.yaml).
    async fn candidates(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for queue in queues(self.env) {
            names.push(queue.name.clone());
            names.push(dlq_name(&queue.name));
        }
        let prefix = self.env.resource_prefix();
        let listed = self
            .clients
            .sqs
            .list_queues()
            .queue_name_prefix(&prefix)
            .send()
            .await
            .aws("sqs:ListQueues", "queues")?;
        for url in listed.queue_urls() {
            if let Some(name) = url.rsplit('/').next()
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }
}

#[async_trait]
impl ServiceBackend for SqsQueues {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Queue
    }

    fn ready_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut pass = Pass::plan();
        let run = Run::new(ctx.env(), &clients, &mut pass);
        for queue in queues(ctx.env()) {
            for name in [queue.name.clone(), dlq_name(&queue.name)] {
                if let Some((_, live)) = run.find(&name).await? {
                    tags::require_owned(ctx.env(), COMPONENT, "queue", &name, &live)?;
                }
            }
        }
        Ok(())
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        Run::new(ctx.env(), &clients, pass).converge().await
    }

    async fn probe(&self, ctx: &PhaseContext) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        for queue in queues(ctx.env()) {
            for name in [queue.name.clone(), dlq_name(&queue.name)] {
                clients
                    .sqs
                    .get_queue_url()
                    .queue_name(&name)
                    .send()
                    .await
                    .aws("sqs:GetQueueUrl", format!("queue {name}"))
                    .map_err(|e| e.transient(true))?;
            }
        }
        Ok(())
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut infos = Vec::new();
        for queue in queues(ctx.env()) {
            let mut urls = Vec::new();
            for name in [queue.name.clone(), dlq_name(&queue.name)] {
                let out = clients
                    .sqs
                    .get_queue_url()
                    .queue_name(&name)
                    .send()
                    .await
                    .aws("sqs:GetQueueUrl", format!("queue {name}"))?;
                urls.push(out.queue_url().unwrap_or_default().to_string());
            }
            let dlq_url = urls.pop().unwrap_or_default();
            let url = urls.pop().unwrap_or_default();
            infos.push(QueueInfo {
                name: queue.short,
                url,
                dlq_url,
            });
        }
        Ok(ServiceEndpoint::Queue(QueueEndpoint {
            endpoint_url: clients.service_url("sqs"),
            region: clients.region.clone(),
            credentials: None,
            queues: infos,
        }))
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        let clients = self.aws.clients(ctx.env()).await?;
        // The run only reads here; what `down` deletes is listed in `destroyed`.
        let mut pass = Pass::apply();
        let run = Run::new(ctx.env(), &clients, &mut pass);
        let configured: Vec<String> = queues(ctx.env())
            .iter()
            .flat_map(|q| [q.name.clone(), dlq_name(&q.name)])
            .collect();
        let mut found = Vec::new();
        let mut destroyed = Destroyed::default();
        for name in run.candidates().await? {
            let Some((live, live_tags)) = run.find(&name).await? else {
                continue;
            };
            if !Selector::new(ctx.env(), COMPONENT).check("queue", &name, &live_tags) {
                if configured.contains(&name) {
                    destroyed.kept.push(Kept {
                        kind: "queue".into(),
                        name,
                        reason: "not created by Comind (no ownership tags); left untouched".into(),
                    });
                }
                continue;
            }
            found.push((name, live));
        }
        let holding: Vec<String> = found
            .iter()
            .filter(|(_, live)| live.messages() > 0)
            .map(|(name, _)| name.clone())
            .collect();
        for (name, live) in found {
            ctx.checkpoint()?;
            if !options.purge {
                let count = live.messages();
                if count > 0 {
                    destroyed.kept.push(Kept {
                        kind: "queue".into(),
                        name,
                        reason: format!(
                            "holds about {count} message(s); `comind down --purge` deletes it"
                        ),
                    });
                    continue;
                }
                // A kept queue's redrive policy still names its dead-letter queue.
                let source = name.strip_suffix("-dlq").map(str::to_string);
                if let Some(source) = source
                    && holding.contains(&source)
                {
                    destroyed.kept.push(Kept {
                        kind: "queue".into(),
                        name,
                        reason: format!("dead-letter queue of {source}, which is kept"),
                    });
                    continue;
                }
            }
            destroyed.changes.push(Change::delete("queue", &name));
            clients
                .sqs
                .delete_queue()
                .queue_url(&live.url)
                .send()
                .await
                .found("sqs:DeleteQueue", format!("queue {name}"))?;
        }
        Ok(destroyed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_compare_by_meaning() {
        let arn = "arn:aws:sqs:us-east-1:1:q-dlq";
        let ours = redrive_policy(arn, 5);
        assert!(redrive_matches(Some(&ours), arn, 5));
        let spaced = format!(r#"{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": "5"}}"#);
        assert!(redrive_matches(Some(&spaced), arn, 5));
        assert!(!redrive_matches(Some(&ours), arn, 3));
        assert!(!redrive_matches(Some(&ours), "arn:other", 5));
        assert!(!redrive_matches(None, arn, 5));
    }
}
