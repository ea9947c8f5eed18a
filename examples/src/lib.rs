//! Examples of embedding Comind (see the `*.rs` files next to this crate's manifest):
//!
//! - `bootstrap_embed`: bring up the local profile from a program, following the
//!   event stream: what the `comind` CLI does, in thirty lines.
//! - `provider_extend`: another team's bootstrap on Comind's traits: its own phase,
//!   reading a service's outputs, next to the services; runs in memory on the fakes.
//!
//! Run one with `cargo run -p comind-examples --example provider_extend`.
