//! # comind-gitops
//!
//! Everything Comind does inside a Kubernetes cluster, whichever profile made it (k3d
//! locally, EKS on AWS) or when `gitops.kubeconfig` points at a cluster it did not
//! make:
//!
//! - [`access`]: one `kube::Client` per run, from the cluster phase's `KUBECONFIG` and
//!   `KUBE_CONTEXT` outputs (the core contract of [`comind_core::cluster`]) or from
//!   `gitops.kubeconfig`.
//! - [`apply`]: the apply engine every in-cluster phase uses: server-side apply with
//!   field manager `comind`, ownership labels, CRDs first, pruning by label, a plan
//!   from the server's dry run, and refusal to touch what is not Comind's.
//! - [`applications`]: Argo CD Applications' sync and health, and the wait for them
//!   to converge.
//! - [`kubeconfig`]: the environment's cluster merged into the user's kubeconfig,
//!   only when asked.
//! - [`ready`]: readiness as data, a rule per kind, watched until ready or failed.
//! - [`platform`]: the platform's phases, each a pure render function of the
//!   environment (and its dependencies' outputs) plus the apply engine: the baseline
//!   (namespaces, quotas, network policies, RBAC) and the services' in-cluster names
//!   and Secrets.
//! - [`repository`]: the GitOps repository on the user's machine: its layout
//!   (`comind gitops init`) and pushing it to the local Git server (`comind gitops push`).
//!
//! - [`sealing`]: Sealed Secrets natively: the environment's sealing key and
//!   `comind seal`, byte-compatible with the controller.
//! - [`scaffold`]: `comind app new`, an application's Helm chart in the GitOps
//!   repository.
//!
//! The crate never names a provider crate: what it needs from the cluster phase and
//! the service phases is core's contract ([`comind_core::cluster`],
//! [`comind_core::service::ClusterTarget`]).

pub mod access;
pub mod applications;
pub mod apply;
pub mod consoles;
mod https;
pub mod kubeconfig;
pub mod platform;
mod provider;
pub mod ready;
pub mod repository;
pub mod scaffold;
pub mod sealing;

pub use provider::GitopsProvider;
