//! Reaching the cluster: one `kube::Client` per run, shared by every in-cluster phase.
//!
//! Where the kubeconfig comes from:
//! - by default, the outputs of the phase that makes the cluster
//!   ([`CLUSTER_PHASE_ID`]): [`KUBECONFIG`] (a file path) and [`KUBE_CONTEXT`]; the
//!   in-cluster phases then depend on that phase;
//! - with `gitops.kubeconfig` (and optionally `gitops.context`) in `comind.yaml`, that
//!   file: the platform is laid on a cluster Comind did not make, and the profile's
//!   own cluster phase is left out.
//!
//! An EKS kubeconfig authenticates with an exec plugin (`comind eks-token`); kube-rs
//! runs it like kubectl does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use comind_core::cluster::{CLUSTER_PHASE_ID, KUBE_CONTEXT, KUBECONFIG};
use comind_core::{Environment, Error, Input, PhaseContext, PhaseId, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

/// Where a run's kubeconfig comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The outputs of the cluster phase of this run.
    ClusterPhase,
    /// A kubeconfig named in `comind.yaml` (`gitops.kubeconfig`, `gitops.context`).
    Configured {
        /// The file.
        path: PathBuf,
        /// The context; `None` for the file's current context.
        context: Option<String>,
    },
    /// A client the embedder built itself, with credentials of its own (a token
    /// source, a service account): [`crate::GitopsProvider::with_cluster`].
    Provided,
}

impl Source {
    /// The source `env`'s configuration selects.
    pub fn of(env: &Environment) -> Self {
        let gitops = &env.config().gitops;
        match &gitops.kubeconfig {
            Some(path) => Source::Configured {
                path: expand_home(path),
                context: gitops.context.clone(),
            },
            None => Source::ClusterPhase,
        }
    }
}

/// A reachable cluster: its client and how it was reached, for messages.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: kube::Client,
    /// `context <name> of <file>`.
    pub description: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// What the in-cluster phases of one run share: the source, and the client once it
/// is built.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    source: Source,
    cluster: Arc<OnceCell<Cluster>>,
}

/// Whether the cluster can be reached now.
#[derive(Debug, Clone)]
pub enum Reach {
    /// Yes, through this cluster.
    Ready(Cluster),
    /// Not yet: the cluster phase of this run makes it (a plan before the first `up`).
    AfterApply,
}

impl ClusterAccess {
    /// The access of a run of `env`.
    pub fn new(env: &Environment) -> Self {
        ClusterAccess {
            source: Source::of(env),
            cluster: Arc::new(OnceCell::new()),
        }
    }

    /// The access of a run through `cluster`, a client the embedder provides.
    pub fn provided(cluster: Cluster) -> Self {
        ClusterAccess {
            source: Source::Provided,
            cluster: Arc::new(OnceCell::new_with(Some(cluster))),
        }
    }

    /// Where the kubeconfig comes from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The phase the in-cluster phases depend on, if any.
    pub fn dependency(&self) -> Option<PhaseId> {
        match self.source {
            Source::ClusterPhase => Some(PhaseId::new(CLUSTER_PHASE_ID)),
            Source::Configured { .. } | Source::Provided => None,
        }
    }

    /// The cluster, built once per run.
    ///
    /// # Errors
    /// `InvalidInput` when the kubeconfig cannot be read or has no such context;
    /// `Internal` when the cluster phase published no kubeconfig.
    pub async fn reach(&self, ctx: &PhaseContext) -> Result<Reach> {
        let (path, context) = match &self.source {
            Source::Provided => {
                return match self.cluster.get() {
                    Some(cluster) => Ok(Reach::Ready(cluster.clone())),
                    None => Err(Error::internal("a provided cluster access holds no client")),
                };
            }
            Source::Configured { path, context } => (path.clone(), context.clone()),
            Source::ClusterPhase => {
                let cluster = PhaseId::new(CLUSTER_PHASE_ID);
                match (
                    ctx.input(&cluster, KUBECONFIG),
                    ctx.input(&cluster, KUBE_CONTEXT),
                ) {
                    (Input::Known(path), context) => (
                        PathBuf::from(path.expose()),
                        match context {
                            Input::Known(c) => Some(c.expose().to_string()),
                            _ => None,
                        },
                    ),
                    (Input::KnownAfterApply, _) => return Ok(Reach::AfterApply),
                    (Input::Missing, _) => {
                        return Err(Error::internal(format!(
                            "the `{CLUSTER_PHASE_ID}` phase published no {KUBECONFIG}"
                        )));
                    }
                }
            }
        };
        let cluster = self
            .cluster
            .get_or_try_init(|| connect(&path, context.as_deref()))
            .await?;
        Ok(Reach::Ready(cluster.clone()))
    }
}

/// The cluster of `env` as a command outside a run reaches it: `gitops.kubeconfig`
/// (and `gitops.context`), else the kubeconfig the cluster phase keeps in the state
/// directory.
///
/// # Errors
/// As [`connect`].
pub async fn connect_env(env: &Environment) -> Result<Cluster> {
    match Source::of(env) {
        Source::Configured { path, context } => connect(&path, context.as_deref()).await,
        _ => connect(&env.state().kubeconfig_path(), None).await,
    }
}

/// A client of the cluster of `context` (or the current one) in the kubeconfig at
/// `path`. Does not call the cluster.
///
/// # Errors
/// `InvalidInput` naming the file when it cannot be read or used.
pub async fn connect(path: &Path, context: Option<&str>) -> Result<Cluster> {
    // kube's TLS takes the process's default rustls provider; a binary that also links
    // the AWS SDK has two and no default. Ours is ring; an embedder that installed one
    // already keeps theirs (the error says only that).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shown = path.display().to_string();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
        Error::invalid_input(format!("cannot read the kubeconfig: {e}"))
            .with_resource(shown.clone())
            .with_hint("point `gitops.kubeconfig` at a readable kubeconfig file")
    })?;
    let context = context
        .map(str::to_string)
        .or_else(|| kubeconfig.current_context.clone());
    let options = KubeConfigOptions {
        context: context.clone(),
        cluster: None,
        user: None,
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| {
            Error::invalid_input(format!("cannot use the kubeconfig: {e}"))
                .with_resource(shown.clone())
                .with_hint("check `gitops.context`: it must name a context of that file")
        })?;
    let client = kube::Client::try_from(config).map_err(|e| {
        Error::invalid_input(format!("cannot make a Kubernetes client: {e}"))
            .with_resource(shown.clone())
    })?;
    Ok(Cluster {
        client,
        description: match context {
            Some(context) => format!("context {context} of {shown}"),
            None => shown,
        },
    })
}

/// `path` with a leading `~/` replaced by the home directory, as a shell would.
pub(crate) fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_follows_the_configuration() {
        let mut config = comind_core::Config::default();
        let env = Environment::with_state_root(config.clone(), "/tmp/x");
        assert_eq!(Source::of(&env), Source::ClusterPhase);
        assert_eq!(
            ClusterAccess::new(&env).dependency(),
            Some(PhaseId::new(CLUSTER_PHASE_ID))
        );
        config.gitops.kubeconfig = Some("/etc/k.yaml".into());
        let env = Environment::with_state_root(config, "/tmp/x");
        assert!(matches!(Source::of(&env), Source::Configured { .. }));
        assert_eq!(ClusterAccess::new(&env).dependency(), None);
    }

    #[test]
    fn a_leading_tilde_is_the_home_directory() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(
            expand_home(Path::new("~/.kube/config")),
            Path::new(&home).join(".kube/config")
        );
        assert_eq!(expand_home(Path::new("/a/b")), Path::new("/a/b"));
    }

    #[tokio::test]
    async fn an_unreadable_kubeconfig_is_invalid_input_naming_the_file() {
        let err = connect(Path::new("/nonexistent/kubeconfig"), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), comind_core::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
    }
}
