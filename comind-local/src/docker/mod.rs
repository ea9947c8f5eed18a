//! The Docker Engine API, through `bollard`, wrapped once per operation.
//!
//! [`DockerClient`] connects lazily and is shared by every phase of a run. Its
//! methods, one file per API area (containers, images, networks, volumes), each do one
//! Engine call and map its failure onto a core [`Error`](comind_core::Error) that names
//! the operation and the resource: 404 is `NotFound`, 409 `Conflict`, a 5xx or an
//! unreachable daemon `Unavailable`. `archive` builds the files uploaded into a
//! container before it starts.

pub(crate) mod archive;
mod client;
pub(crate) mod container;
pub(crate) mod error;
pub(crate) mod image;
pub(crate) mod network;
pub(crate) mod volume;

pub use client::{DEFAULT_DOCKER_HOST, DaemonInfo, DockerClient};
