//! # comind-aws
//!
//! The AWS profile through the official `aws-sdk-*` crates: a VPC with private
//! subnets, IAM roles, EKS with a managed node group, RDS PostgreSQL, S3, ElastiCache
//! Redis and SQS, all tagged for discovery.
//!
//! Not built yet in this release: the CLI reports the `aws` profile as unavailable.
