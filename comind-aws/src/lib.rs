//! # comind-aws
//!
//! The AWS profile of Comind, through the official `aws-sdk-*` crates. [`AwsProvider`]
//! contributes these phases to a [`Bootstrap`](comind_core::Bootstrap):
//!
//! | phase | what | after |
//! |---|---|---|
//! | `network` | a VPC of the environment's own (or an existing one), private and public subnets in two or three zones, NAT, routes, and the cluster, database and cache security groups | |
//! | `iam` | the EKS cluster and node roles, and the Pod Identity roles of the load balancer controller, the EBS CSI driver and the backup jobs | |
//! | `cluster` | EKS with its Secrets encrypted by a KMS key of its own, access entries, a managed node group, managed add-ons, Pod Identity associations, and a kubeconfig (0600) that authenticates with tokens made in-process | `network`, `iam` |
//! | `postgres` | RDS PostgreSQL ([`RdsPostgres`]) | `network` |
//! | `object-store` | S3 buckets ([`S3ObjectStore`]) | |
//! | `cache` | ElastiCache Redis ([`ElastiCacheRedis`]), if enabled | `network` |
//! | `queue` | SQS queues with dead-letter queues ([`SqsQueues`]), if enabled | |
//!
//! Independent phases run side by side, so a run takes about as long as EKS alone.
//!
//! Comind keeps no record of what it made: every resource carries the ownership tags
//! of DESIGN.md and a deterministic name, each run discovers what exists, and a
//! resource that has our name but not our tags stops the run instead of being
//! touched. Waits follow each resource's status with progress events under the
//! timeouts of `aws.timeouts.*`. AWS errors are mapped once per call: throttling,
//! server errors and dropped connections are transient (the engine retries), invalid
//! parameters, quotas and denied access are not, and each message carries the AWS
//! error code and what to do.
//!
//! A create may take effect and still fail for its caller (the answer is lost, or an
//! earlier run died with the same create in flight): creates are not retried blindly,
//! "already exists" is adopted when the resource carries our tags, and empty
//! duplicates an interrupted run left are deleted with a change that says so (see
//! `create.rs`). Every resource is tagged by the call that creates it, and what a
//! tag-filtered describe returns is checked against the tags before it is adopted or
//! deleted, since not every backend applies the filters.
//!
//! `down` keeps data: RDS and ElastiCache leave a final snapshot that the next `up`
//! restores (keeping the newest `final_snapshots` of each, default 1), buckets holding objects and queues holding messages stay, and so does the
//! KMS key of the cluster's Secrets; `down --purge` removes them too (the key is
//! scheduled for deletion). Passwords, auth tokens and EKS tokens never reach
//! logs, events, errors, tags or command lines.
//!
//! RDS and ElastiCache are private, so their probes go through the AWS API (status
//! available, endpoint present) rather than a PostgreSQL or Redis connection from the
//! operator's machine.
//!
//! With `aws.secret_store: secrets-manager`, the environment's long-lived secrets (the
//! Sealed Secrets key) live in AWS Secrets Manager: [`SecretsManagerStore`], from
//! [`AwsProvider::secret_store`].
//!
//! For `comind eks-token` (the kubeconfig's exec plugin) and in-process Kubernetes
//! clients, [`eks::token()`] signs EKS tokens from STS credentials with `aws-sigv4`.

pub mod eks;
pub mod iam;
pub mod network;
pub mod secrets_manager;

mod clients;
mod create;
mod datastore;
mod elasticache;
mod error;
mod provider;
mod rds;
mod s3;
mod sqs;
mod tags;
mod waiter;

pub use clients::load_sdk_config;
pub use eks::{ClusterPhase, EksToken, Kubeconfig, exec_credential, exec_credential_for};
pub use elasticache::ElastiCacheRedis;
pub use iam::IamPhase;
pub use network::NetworkPhase;
pub use provider::{AwsProvider, AwsProviderBuilder};
pub use rds::RdsPostgres;
pub use s3::S3ObjectStore;
pub use secrets_manager::SecretsManagerStore;
pub use sqs::SqsQueues;
