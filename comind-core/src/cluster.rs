//! The contract between the phase that makes a Kubernetes cluster and the phases that
//! work inside it.
//!
//! Whichever provider makes the cluster (k3d locally, EKS on AWS), its phase has the id
//! [`CLUSTER_PHASE_ID`] and publishes [`KUBECONFIG`] and [`KUBE_CONTEXT`]. The
//! in-cluster phases (`comind-gitops`) depend on that phase id and read those two
//! outputs, and never name a provider crate. A kubeconfig may authenticate with an
//! exec plugin (EKS's runs `comind eks-token`); it is a file in the state directory,
//! mode 0600, because it can hold credentials.

/// The id of the phase that makes the cluster, in every profile that makes one.
pub const CLUSTER_PHASE_ID: &str = "cluster";

/// Output of the cluster phase: the path of a kubeconfig file that reaches the
/// cluster's API server.
pub const KUBECONFIG: &str = "KUBECONFIG";

/// Output of the cluster phase: the context of [`KUBECONFIG`] to use.
pub const KUBE_CONTEXT: &str = "KUBE_CONTEXT";

/// The id of the phase that makes the environment's private image registry, where a
/// profile makes one (the local profile does, with its cluster).
pub const REGISTRY_PHASE_ID: &str = "registry";

/// Output of the registry phase: the address the cluster's nodes and Pods reach the
/// registry at (a container's address on the environment's network).
pub const REGISTRY_CLUSTER_HOST: &str = "REGISTRY_CLUSTER_HOST";

/// Output of the registry phase: the port at [`REGISTRY_CLUSTER_HOST`].
pub const REGISTRY_CLUSTER_PORT: &str = "REGISTRY_CLUSTER_PORT";
