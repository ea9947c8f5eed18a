//! The GitOps wiring (`platform/gitops`, after `platform/argocd`): the repository Argo
//! CD deploys from, the projects, and the two Applications that turn the repository
//! into the platform and its applications.
//!
//! | object | what it does |
//! | --- | --- |
//! | Secret `gitops-repository` (`argocd.argoproj.io/secret-type: repository`) | the repository's URL and credentials (a token or an SSH key, read from the file or environment variable `gitops.repo` names) |
//! | AppProject `platform` | the platform's own applications: any source, the platform's namespaces, cluster-wide kinds allowed (add-ons bring CRDs) |
//! | AppProject `apps` | the applications: this repository only, the app and team namespaces only, no cluster-wide kinds, and not the baseline's quota, limits or policies |
//! | Application `root` | app-of-apps: `<path>/envs/<env>`, the environment's Application manifests, synced automatically with prune and self-heal |
//! | ApplicationSet `apps` | one Application `<team>-<app>` per directory `<path>/apps/<team>/<app>`, from its `chart/` with `values.yaml` and `values-<env>.yaml`, into namespace `<team>` |
//!
//! With `gitops.repo.url: local`, the repository is the local Git server's
//! (`git-server` phase): it is bound into the cluster like the platform services, a
//! Service `git-server` in `platform-<env>` with the container's address, and Argo CD
//! pulls `git://git-server.platform-<env>.svc.cluster.local:9418/gitops.git`.
//!
//! `up` then waits until `root` is synced and healthy, which (through the health check
//! `platform/argocd` installs) means every application beneath it is; except while
//! the local Git server's repository is still empty (nothing to sync: it says how to
//! fill it, and Argo CD syncs it once pushed).

use std::collections::BTreeMap;
use std::sync::Arc;

use comind_core::cluster::{
    GIT_SERVER_CLUSTER_HOST, GIT_SERVER_CLUSTER_PORT, GIT_SERVER_PHASE_ID, GIT_SERVER_REPOSITORY,
    GITOPS_REPO_HEAD,
};
use comind_core::config::RepoSettings;
use comind_core::{Environment, Error, Input, PhaseContext, PhaseId, Result};
use futures_util::FutureExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use super::services::{endpoint_slice, meta, reachable, selectorless_service};
use super::{PhaseSpec, argocd, baseline};
use crate::applications::{self, Limits};
use crate::apply::{Kind, Object, ObjectSet, Pending, Scope};

/// The phase's id.
pub const ID: &str = "platform/gitops";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-gitops";
/// The root app-of-apps Application.
pub const ROOT: &str = "root";
/// The ApplicationSet of the applications.
pub const APPS: &str = "apps";
/// The project of the platform's applications.
pub const PLATFORM_PROJECT: &str = "platform";
/// The project of the applications.
pub const APPS_PROJECT: &str = "apps";
/// The repository Secret.
pub const REPOSITORY_SECRET: &str = "gitops-repository";
/// The Service of the local Git server.
const GIT_SERVER: &str = "git-server";
/// The in-cluster API server, as Argo CD names the cluster it runs in.
const IN_CLUSTER: &str = "https://kubernetes.default.svc";

fn custom(kind: &str, plural: &str) -> Kind {
    Kind::custom("argoproj.io", "v1alpha1", kind, plural, Scope::Namespaced)
}

/// The kinds the phase owns (and prunes).
pub fn kinds() -> Vec<Kind> {
    vec![
        Kind::of::<Secret>(),
        Kind::of::<Service>(),
        Kind::of::<EndpointSlice>(),
        custom("AppProject", "appprojects"),
        applications::kind(),
        custom("ApplicationSet", "applicationsets"),
    ]
}

/// Whether `env` pulls from the local Git server (and so runs after its phase).
pub fn uses_git_server(env: &Environment) -> bool {
    let config = env.config();
    config.profile == comind_core::config::Profile::Local && config.gitops.repo.is_local()
}

/// The phase, for `env`.
pub(crate) fn spec(env: &Environment) -> PhaseSpec {
    let mut after = vec![PhaseId::new(argocd::ID)];
    if uses_git_server(env) {
        after.push(PhaseId::new(GIT_SERVER_PHASE_ID));
    }
    let mut spec = PhaseSpec::rendered(
        ID,
        "the GitOps repository, the projects, the root application and the ApplicationSet",
        COMPONENT,
        kinds,
        after,
        Arc::new(render),
    );
    spec.converge = Some(Arc::new(|ctx: &PhaseContext, client: &kube::Client| {
        async move {
            let env = ctx.env();
            let settings = &env.config().gitops.argocd;
            if uses_git_server(env)
                && matches!(
                    ctx.input(&PhaseId::new(GIT_SERVER_PHASE_ID), GITOPS_REPO_HEAD),
                    Input::Known(head) if head.expose().is_empty()
                )
            {
                // Nothing to sync yet: Argo CD picks the repository up once it is pushed.
                ctx.progress(format!(
                    "the local GitOps repository is empty: `comind gitops init DIR`, commit, \
                     and `comind gitops push DIR`; Argo CD then syncs `{}` by itself",
                    repo_path(&env.config().gitops.repo, &format!("envs/{}", env.name()))
                ));
                return Ok(());
            }
            ctx.progress("waiting for Argo CD to sync the root application");
            applications::converge(
                client,
                ctx,
                argocd::NAMESPACE,
                &[ROOT.to_string()],
                Limits {
                    timeout: settings.sync_timeout.get(),
                    degraded_grace: settings.degraded_grace.get(),
                },
            )
            .await
        }
        .boxed()
    }));
    spec.report = Some(Arc::new(|_ctx: &PhaseContext, client: &kube::Client| {
        async move { applications::report(client, argocd::NAMESPACE, &[ROOT.to_string()]).await }
            .boxed()
    }));
    spec
}

/// The repository's directory `relative` (under `gitops.repo.path`), as Argo CD
/// wants paths: no `./`, no trailing `/`.
pub fn repo_path(repo: &RepoSettings, relative: &str) -> String {
    let base = repo.path.trim_start_matches("./").trim_matches('/');
    match base {
        "" | "." => relative.to_string(),
        base => format!("{base}/{relative}"),
    }
}

/// The URL Argo CD pulls from.
pub fn repo_url(env: &Environment) -> String {
    if uses_git_server(env) {
        format!(
            "git://{GIT_SERVER}.{}.svc.cluster.local:9418/{GIT_SERVER_REPOSITORY}",
            baseline::services_namespace(env)
        )
    } else {
        env.config().gitops.repo.url.clone()
    }
}

/// The desired objects.
///
/// # Errors
/// `InvalidInput` when a credential `gitops.repo` names cannot be read, or the Git
/// server is reached at an address Pods cannot reach.
pub fn render(ctx: &PhaseContext) -> Result<ObjectSet> {
    let env = ctx.env();
    let url = repo_url(env);
    let mut objects = vec![
        Object::typed(&repository_secret(env, &url)?)?,
        project(PLATFORM_PROJECT, platform_project(env, &url))?,
        project(APPS_PROJECT, apps_project(env, &url))?,
        root(env, &url)?,
        application_set(env, &url)?,
    ];
    let mut set = ObjectSet::new(COMPONENT, Vec::new(), kinds());
    if uses_git_server(env) {
        match git_server(ctx)? {
            Some(bound) => objects.extend(bound),
            None => {
                let namespace = baseline::services_namespace(env);
                let service = Object::typed(&Service {
                    metadata: meta(GIT_SERVER, GIT_SERVER, &namespace),
                    ..Service::default()
                })?;
                set = set.with_pending(Pending {
                    objects: vec![service],
                    label: (
                        super::services::LABEL_SERVICE.to_string(),
                        GIT_SERVER.to_string(),
                    ),
                    reason: "the Git server changes in this run: its address is known after apply"
                        .to_string(),
                });
            }
        }
    }
    set.objects = objects;
    Ok(set)
}

/// The local Git server's Service and EndpointSlice, from the Git server phase's
/// outputs; `None` while they are known only after apply.
fn git_server(ctx: &PhaseContext) -> Result<Option<Vec<Object>>> {
    let env = ctx.env();
    let phase = PhaseId::new(GIT_SERVER_PHASE_ID);
    let value = |key: &str| match ctx.input(&phase, key) {
        Input::Known(value) => Ok(Some(value.expose().to_string())),
        Input::KnownAfterApply => Ok(None),
        Input::Missing => Err(Error::internal(format!(
            "the Git server phase published no `{key}`"
        ))),
    };
    let (Some(host), Some(port)) = (
        value(GIT_SERVER_CLUSTER_HOST)?,
        value(GIT_SERVER_CLUSTER_PORT)?,
    ) else {
        return Ok(None);
    };
    let ip = host.parse().map_err(|_| {
        Error::internal(format!(
            "the Git server's cluster address `{host}` is not an IP address"
        ))
    })?;
    reachable(GIT_SERVER, ip)?;
    let port: u16 = port.parse().map_err(|_| {
        Error::internal(format!(
            "the Git server's cluster port `{port}` is not a port"
        ))
    })?;
    let namespace = baseline::services_namespace(env);
    let mut service = selectorless_service(GIT_SERVER, &namespace, port);
    // Argo CD's URL names the Git protocol's port.
    if let Some(ports) = service.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        for p in ports {
            p.port = 9418;
        }
    }
    Ok(Some(vec![
        Object::typed(&service)?,
        Object::typed(&endpoint_slice(GIT_SERVER, &namespace, ip, port))?,
    ]))
}

/// Reads the credential `gitops.repo` names: (Secret key, value).
pub(crate) fn credential(repo: &RepoSettings) -> Result<Option<(&'static str, String)>> {
    let from_file = |path: &std::path::Path, what: &str, field: &str| {
        let path = crate::access::expand_home(path);
        std::fs::read_to_string(&path).map_err(|e| {
            Error::invalid_input(format!("cannot read the GitOps repository's {what}: {e}"))
                .with_resource(path.display().to_string())
                .with_hint(format!("point `gitops.repo.{field}` at a readable file"))
        })
    };
    let from_env = |name: &str, what: &str, field: &str| {
        std::env::var(name).map_err(|_| {
            Error::invalid_input(format!(
                "the environment variable `{name}` that `gitops.repo.{field}` names holds no {what}"
            ))
            .with_hint(format!("export {name} before running Comind"))
        })
    };
    let found = if let Some(path) = &repo.token_file {
        Some((
            "password",
            from_file(path, "token", "token_file")?.trim().to_string(),
        ))
    } else if let Some(name) = &repo.token_env {
        Some((
            "password",
            from_env(name, "token", "token_env")?.trim().to_string(),
        ))
    } else if let Some(path) = &repo.ssh_key_file {
        Some(("sshPrivateKey", from_file(path, "SSH key", "ssh_key_file")?))
    } else if let Some(name) = &repo.ssh_key_env {
        Some(("sshPrivateKey", from_env(name, "SSH key", "ssh_key_env")?))
    } else {
        None
    };
    match found {
        Some((_, value)) if value.trim().is_empty() => Err(Error::invalid_input(
            "the GitOps repository's credential is empty",
        )
        .with_hint("put the token or the SSH key in the file or variable `gitops.repo` names")),
        other => Ok(other),
    }
}

fn repository_secret(env: &Environment, url: &str) -> Result<Secret> {
    let repo = &env.config().gitops.repo;
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut data = BTreeMap::from([
        ("type".to_string(), bytes("git")),
        ("name".to_string(), bytes("gitops")),
        ("url".to_string(), bytes(url)),
    ]);
    if let Some((key, value)) = credential(repo)? {
        if key == "password" {
            data.insert("username".to_string(), bytes(&repo.username));
        }
        data.insert(key.to_string(), bytes(&value));
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(REPOSITORY_SECRET.to_string()),
            namespace: Some(argocd::NAMESPACE.to_string()),
            labels: Some(BTreeMap::from([(
                "argocd.argoproj.io/secret-type".to_string(),
                "repository".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    })
}

fn custom_object(kind: Kind, name: &str, spec: Value) -> Result<Object> {
    Object::dynamic(
        kind.clone(),
        json!({
            "apiVersion": kind.resource.api_version,
            "kind": kind.resource.kind,
            "metadata": {"name": name, "namespace": argocd::NAMESPACE},
            "spec": spec,
        }),
    )
}

fn project(name: &str, spec: Value) -> Result<Object> {
    custom_object(custom("AppProject", "appprojects"), name, spec)
}

fn destination(namespace: &str) -> Value {
    json!({"server": IN_CLUSTER, "namespace": namespace})
}

fn platform_project(env: &Environment, url: &str) -> Value {
    let mut destinations: Vec<Value> = baseline::namespaces(env)
        .into_iter()
        .filter(|ns| ns.tier == baseline::Tier::Platform)
        .map(|ns| destination(&ns.name))
        .collect();
    // The add-ons that configure k3s's own components (Traefik) and the cluster's
    // networking live there.
    destinations.push(destination("kube-system"));
    json!({
        "description": "The Comind platform's own applications (add-ons). Written by Comind.",
        // The add-ons' charts come from their own Helm repositories.
        "sourceRepos": [url, "*"],
        "destinations": destinations,
        "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
    })
}

fn apps_project(env: &Environment, url: &str) -> Value {
    let destinations: Vec<Value> = baseline::namespaces(env)
        .into_iter()
        .filter(|ns| ns.tier == baseline::Tier::Apps)
        .map(|ns| destination(&ns.name))
        .collect();
    json!({
        "description": "Applications, in the app and team namespaces only. Written by Comind.",
        "sourceRepos": [url],
        "destinations": destinations,
        "clusterResourceWhitelist": [],
        // The baseline's guard rails stay the platform's.
        "namespaceResourceBlacklist": [
            {"group": "", "kind": "ResourceQuota"},
            {"group": "", "kind": "LimitRange"},
        ],
    })
}

fn automated() -> Value {
    json!({
        "automated": {"prune": true, "selfHeal": true},
        "retry": {"limit": 5, "backoff": {"duration": "5s", "factor": 2, "maxDuration": "3m"}},
    })
}

fn root(env: &Environment, url: &str) -> Result<Object> {
    let repo = &env.config().gitops.repo;
    custom_object(
        applications::kind(),
        ROOT,
        json!({
            "project": PLATFORM_PROJECT,
            "source": {
                "repoURL": url,
                "targetRevision": repo.revision,
                "path": repo_path(repo, &format!("envs/{}", env.name())),
                "directory": {"recurse": true},
            },
            "destination": destination(argocd::NAMESPACE),
            "syncPolicy": automated(),
        }),
    )
}

fn application_set(env: &Environment, url: &str) -> Result<Object> {
    let repo = &env.config().gitops.repo;
    // `path.segments` are relative to the repository's root: with `gitops.repo.path`,
    // the team and the application come after its own segments.
    let skip = repo_path(repo, "apps").split('/').count();
    let team = format!("{{{{ index .path.segments {skip} }}}}");
    let app = format!("{{{{ index .path.segments {} }}}}", skip + 1);
    custom_object(
        custom("ApplicationSet", "applicationsets"),
        APPS,
        json!({
            "goTemplate": true,
            "goTemplateOptions": ["missingkey=error"],
            "generators": [{"git": {
                "repoURL": url,
                "revision": repo.revision,
                "directories": [{"path": repo_path(repo, "apps/*/*")}],
            }}],
            "template": {
                "metadata": {
                    "name": format!("{team}-{app}"),
                    "labels": {"comind.dev/team": team, "comind.dev/app": app},
                },
                "spec": {
                    "project": APPS_PROJECT,
                    "source": {
                        "repoURL": url,
                        "targetRevision": repo.revision,
                        "path": "{{ .path.path }}/chart",
                        "helm": {
                            "valueFiles": ["values.yaml", format!("values-{}.yaml", env.name())],
                            "ignoreMissingValueFiles": true,
                        },
                    },
                    "destination": {"server": IN_CLUSTER, "namespace": team},
                    "syncPolicy": automated(),
                },
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_under_the_configured_directory() {
        let mut repo = RepoSettings::default();
        assert_eq!(repo_path(&repo, "envs/dev"), "envs/dev");
        repo.path = "./platform/".into();
        assert_eq!(repo_path(&repo, "apps/*/*"), "platform/apps/*/*");
    }

    #[test]
    fn a_credential_that_cannot_be_read_names_its_setting() {
        let repo = RepoSettings {
            url: "https://git.example/o/r.git".into(),
            token_env: Some("COMIND_TEST_SURELY_UNSET_TOKEN".into()),
            ..RepoSettings::default()
        };
        let err = credential(&repo).unwrap_err().to_string();
        assert!(err.contains("COMIND_TEST_SURELY_UNSET_TOKEN"), "{err}");
    }
}
