//! Amazon EKS: the `cluster` phase, in-process authentication tokens, and the
//! kubeconfig that uses them.

pub mod cluster;
pub mod kubeconfig;
pub mod token;

pub use cluster::ClusterPhase;
pub use kubeconfig::{Kubeconfig, comind_command};
pub use token::{EksToken, exec_credential, exec_credential_for, presign, token};
