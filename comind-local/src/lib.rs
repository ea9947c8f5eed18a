//! # comind-local
//!
//! The local profile: a user-defined Docker network and PostgreSQL, MinIO, Redis and
//! ElasticMQ containers driven through the Docker Engine API (`bollard`), and later a
//! k3d cluster joining that network. Its backends pass the core conformance suite.
//!
//! Not built yet in this release: the CLI reports the `local` profile as unavailable.
