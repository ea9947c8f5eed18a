//! Tests that compose the crates as an embedder does.
//!
//! - `parity`: the same services on the local profile (Docker) and on AWS
//!   (moto_server) hand applications the same output keys.
//! - `backups`: the backup CronJobs' scripts, run in their images' stand-ins against
//!   the real local PostgreSQL and object store: backup, restore, failures, retention.
//! - `registry_gc`: the registry's garbage-collection CronJob, run as its Pod would
//!   run against the real local registry, on the volume k3d mounts on the servers.
//! - `extension`: another team's phase, on Comind's traits, scheduled after the real
//!   local PostgreSQL and using the `DATABASE_URL` it publishes.
//!
//! They need real peers from `comind-test-support` (Docker with the stand-in images;
//! moto_server for `parity`): a missing one fails a test when `COMIND_REQUIRE_PEERS=1`
//! and skips it loudly otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backups;
mod extension;
mod parity;
mod registry_gc;
mod support;
