//! Argo CD (`platform/argocd`, after `platform/baseline`): the pinned release's own
//! `install.yaml`, applied object by object with server-side apply (its CRDs are too
//! large for client-side apply), plus Comind's settings as fields it owns in the
//! release's own ConfigMaps and Secret, and an Ingress for the console.
//!
//! - [`release`]: where the manifest comes from, its checksum, the cache.
//! - `argocd-cm`: the console's URL, and the Lua health check of
//!   `argoproj.io/Application` (Argo CD 1.8 dropped it; without it, app-of-apps sync
//!   waves do not wait for child applications to be healthy).
//! - `argocd-rbac-cm`: the baseline's groups mapped to Argo CD roles: admin groups to
//!   `role:admin`, developer groups to `role:developer` (sync and act on the `apps`
//!   project's applications, read everything), readonly groups to `role:readonly`;
//!   anyone else gets nothing.
//! - `argocd-cmd-params-cm`: `server.insecure`, because TLS ends at the ingress (k3s's
//!   Traefik locally, the ALB on AWS); otherwise argocd-server redirects the
//!   ingress's plain HTTP to HTTPS in a loop.
//! - `argocd-secret`: the admin password's bcrypt hash, set before Argo CD first
//!   starts, so it never makes `argocd-initial-admin-secret`. The password is
//!   generated once and kept in the state directory (mode 0600); it leaves it only as
//!   the `ARGOCD_ADMIN_PASSWORD` output (shown by `comind outputs --reveal`) and as
//!   the hash. Comind owns it: a password changed in Argo CD is set back by the next
//!   `up`.
//!
//! The phase is ready when the CRDs are established and every workload of the
//! release is available (argocd-server, the repo server, the application
//! controller, redis, and the rest).

pub mod release;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use comind_core::state::StateDir;
use comind_core::{Environment, Error, Operation, Outputs, PhaseContext, PhaseId, Result, Secret};
use futures_util::FutureExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret as SecretObject, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::{PhaseSpec, Prepare, Publish, baseline, ingress};
use crate::apply::manifest::{self, Catalog};
use crate::apply::{Kind, Object, ObjectSet};

/// The phase's id.
pub const ID: &str = "platform/argocd";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-argocd";
/// The namespace the release installs into (its manifest names it in bindings).
pub const NAMESPACE: &str = "argocd";
/// The admin account.
pub const ADMIN_USER: &str = "admin";

/// Output: the console's URL.
pub const ARGOCD_URL: &str = "ARGOCD_URL";
/// Output: the admin account's name.
pub const ARGOCD_ADMIN_USER: &str = "ARGOCD_ADMIN_USER";
/// Output (secret): the admin account's password.
pub const ARGOCD_ADMIN_PASSWORD: &str = "ARGOCD_ADMIN_PASSWORD";

/// The state directory's file of the admin credentials.
const CREDENTIALS: &str = "argocd-admin";
/// Argo CD checks the admin password with bcrypt at its default cost.
const BCRYPT_COST: u32 = 10;

/// The health of an `argoproj.io/Application` for its parent: its own health, so
/// that a parent's sync waves wait for a child application to be healthy.
pub const APPLICATION_HEALTH_LUA: &str = r#"local health = { status = "Progressing", message = "" }
if obj.status ~= nil and obj.status.health ~= nil then
  health.status = obj.status.health.status
  if obj.status.health.message ~= nil then
    health.message = obj.status.health.message
  end
end
return health
"#;

/// The admin account's credentials: the password and its hash, kept together because
/// bcrypt is salted (a hash made anew each run would rewrite `argocd-secret` each run).
#[derive(Clone, Serialize, Deserialize)]
struct AdminCredentials {
    #[serde(with = "comind_core::secret::revealing")]
    password: Secret,
    bcrypt: String,
    /// When the password was set (`admin.passwordMtime`, RFC 3339): Argo CD refuses
    /// tokens issued before it.
    since: String,
}

impl AdminCredentials {
    fn generate() -> Result<Self> {
        let password = Secret::generate(24)?;
        let bcrypt = bcrypt::hash(password.expose(), BCRYPT_COST)
            .map_err(|e| Error::internal(format!("cannot hash Argo CD's admin password: {e}")))?;
        Ok(AdminCredentials {
            password,
            bcrypt,
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        })
    }
}

/// What one run reads before rendering: the release's objects, and the admin
/// credentials (stored, or made up for a plan that must write nothing).
#[derive(Default)]
struct Release {
    objects: OnceCell<Arc<Vec<Object>>>,
    admin: Mutex<Option<(AdminCredentials, bool)>>,
}

impl Release {
    async fn prepare(&self, ctx: &PhaseContext) -> Result<()> {
        let env = ctx.env();
        self.objects
            .get_or_try_init(|| async {
                let settings = &env.config().gitops.argocd;
                let manifest = release::load(settings, &StateDir::cache_root()?).await?;
                ctx.progress(format!(
                    "Argo CD {}'s install manifest from {}",
                    settings.version, manifest.origin
                ));
                manifest::parse(&manifest.text, &Catalog::builtin(), NAMESPACE)
                    .map(Arc::new)
                    .map_err(|e| e.with_resource(manifest.origin.to_string()))
            })
            .await?;
        let state = env.state();
        let admin = match ctx.operation() {
            Operation::Apply => (
                state.credentials(CREDENTIALS, AdminCredentials::generate)?,
                true,
            ),
            _ => match state.stored_credentials(CREDENTIALS)? {
                Some(stored) => (stored, true),
                None => {
                    let earlier = self.lock().clone().filter(|(_, stored)| !stored);
                    match earlier {
                        Some(made_up) => made_up,
                        None => (AdminCredentials::generate()?, false),
                    }
                }
            },
        };
        *self.lock() = Some(admin);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(AdminCredentials, bool)>> {
        // A panic while holding this lock leaves a value that is still whole.
        self.admin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn prepared(&self) -> Result<(Arc<Vec<Object>>, AdminCredentials, bool)> {
        let (Some(objects), Some((admin, stored))) = (self.objects.get(), self.lock().clone())
        else {
            return Err(Error::internal(
                "Argo CD's release was rendered before it was read",
            ));
        };
        Ok((objects.clone(), admin, stored))
    }
}

/// The kinds the phase owns: those of the release's manifest, and the Ingress.
pub fn kinds() -> Vec<Kind> {
    vec![
        Kind::of::<CustomResourceDefinition>(),
        Kind::of::<ClusterRole>(),
        Kind::of::<ClusterRoleBinding>(),
        Kind::of::<Role>(),
        Kind::of::<RoleBinding>(),
        Kind::of::<ServiceAccount>(),
        Kind::of::<ConfigMap>(),
        Kind::of::<SecretObject>(),
        Kind::of::<Service>(),
        Kind::of::<Deployment>(),
        Kind::of::<StatefulSet>(),
        Kind::of::<DaemonSet>(),
        Kind::of::<NetworkPolicy>(),
        Kind::of::<Ingress>(),
    ]
}

/// The phase, for `env`.
pub(crate) fn spec(_env: &Environment) -> PhaseSpec {
    let release = Arc::new(Release::default());
    let prepare: Prepare = {
        let release = release.clone();
        Arc::new(move |ctx: &PhaseContext, _: Option<&kube::Client>| {
            let release = release.clone();
            async move { release.prepare(ctx).await }.boxed()
        })
    };
    let publish: Publish = {
        let release = release.clone();
        Arc::new(move |ctx: &PhaseContext| {
            let (_, admin, stored) = release.prepared()?;
            Ok(stored.then(|| outputs(ctx.env(), &admin)))
        })
    };
    PhaseSpec {
        id: ID,
        description: "Argo CD, its settings and its console",
        component: COMPONENT,
        kinds,
        after: vec![PhaseId::new(baseline::ID)],
        render: Arc::new(move |ctx| {
            let (objects, admin, _) = release.prepared()?;
            render(ctx.env(), &objects, &admin)
        }),
        prepare: Some(prepare),
        publish: Some(publish),
        converge: None,
        report: None,
        forget: None,
    }
}

fn outputs(env: &Environment, admin: &AdminCredentials) -> Outputs {
    Outputs::new()
        .text(ARGOCD_URL, ingress::url(env, "argocd"))
        .text(ARGOCD_ADMIN_USER, ADMIN_USER)
        .secret(ARGOCD_ADMIN_PASSWORD, admin.password.clone())
}

/// Comind's fields of the release's own settings objects, by (kind, name).
fn settings(
    env: &Environment,
    admin: &AdminCredentials,
) -> Vec<(&'static str, &'static str, Value)> {
    let b64 = |s: &str| Value::from(base64::engine::general_purpose::STANDARD.encode(s));
    vec![
        (
            "ConfigMap",
            "argocd-cm",
            serde_json::json!({
                "url": ingress::url(env, "argocd"),
                "admin.enabled": "true",
                "resource.customizations.health.argoproj.io_Application": APPLICATION_HEALTH_LUA,
            }),
        ),
        (
            "ConfigMap",
            "argocd-rbac-cm",
            serde_json::json!({
                "policy.default": "",
                "scopes": "[groups]",
                "policy.csv": rbac_policy(env),
            }),
        ),
        (
            "ConfigMap",
            "argocd-cmd-params-cm",
            serde_json::json!({ "server.insecure": "true" }),
        ),
        (
            "Secret",
            "argocd-secret",
            serde_json::json!({
                "admin.password": b64(&admin.bcrypt),
                "admin.passwordMtime": b64(&admin.since),
            }),
        ),
    ]
}

/// Argo CD's RBAC policy: the developer role, and the baseline's groups bound to the
/// three roles.
pub fn rbac_policy(env: &Environment) -> String {
    let rbac = &env.config().platform.rbac;
    let mut policy = String::from(
        "# Written by Comind from platform.rbac in comind.yaml.\n\
         p, role:developer, applications, get, */*, allow\n\
         p, role:developer, applications, sync, apps/*, allow\n\
         p, role:developer, applications, action/*, apps/*, allow\n\
         p, role:developer, logs, get, apps/*, allow\n\
         p, role:developer, projects, get, *, allow\n\
         p, role:developer, repositories, get, *, allow\n\
         p, role:developer, clusters, get, *, allow\n",
    );
    for (groups, role) in [
        (&rbac.admin_groups, "role:admin"),
        (&rbac.developer_groups, "role:developer"),
        (&rbac.readonly_groups, "role:readonly"),
    ] {
        for group in groups {
            policy.push_str(&format!("g, {group}, {role}\n"));
        }
    }
    policy
}

/// The release's objects with Comind's settings, and the console's Ingress.
fn render(env: &Environment, release: &[Object], admin: &AdminCredentials) -> Result<ObjectSet> {
    let mut objects = release.to_vec();
    for (kind, name, fields) in settings(env, admin) {
        let object = objects
            .iter_mut()
            .find(|o| {
                o.kind.resource.kind == kind
                    && o.kind.resource.group.is_empty()
                    && o.name() == name
                    && o.namespace() == Some(NAMESPACE)
            })
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "the Argo CD manifest has no {kind} `{name}`: it is not an Argo CD \
                     install.yaml"
                ))
                .with_hint("point `gitops.argocd.manifest` at a release's manifests/install.yaml")
            })?;
        let data = &mut object.object.data["data"];
        if !data.is_object() {
            *data = Value::Object(serde_json::Map::new());
        }
        if let (Some(data), Value::Object(fields)) = (data.as_object_mut(), fields) {
            data.extend(fields);
        }
    }
    let console = ingress::console(
        env,
        "argocd",
        ObjectMeta {
            name: Some("argocd-server".to_string()),
            namespace: Some(NAMESPACE.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "argocd".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        "argocd-server",
        80,
    );
    objects.push(Object::typed(&console)?);
    Ok(ObjectSet::new(COMPONENT, objects, kinds()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Vec<Object> {
        let text = std::fs::read_to_string(comind_test_support::argo_cd::manifest()).unwrap();
        manifest::parse(&text, &Catalog::builtin(), NAMESPACE).unwrap()
    }

    fn env(edit: impl FnOnce(&mut comind_core::Config)) -> Environment {
        let mut config = comind_core::Config::default();
        edit(&mut config);
        Environment::with_state_root(config, "/tmp/unused")
    }

    #[test]
    fn the_release_gets_comind_s_settings_and_a_console() {
        let admin = AdminCredentials::generate().unwrap();
        let set = render(&env(|_| {}), &release(), &admin).unwrap();
        assert_eq!(
            set.objects.len(),
            60,
            "the release's 59 objects and the Ingress"
        );
        let find = |kind: &str, name: &str| {
            set.objects
                .iter()
                .find(|o| o.kind.resource.kind == kind && o.name() == name)
                .unwrap()
                .object
                .data
                .clone()
        };
        let cm = find("ConfigMap", "argocd-cm");
        assert_eq!(cm["data"]["url"], "http://argocd.dev.127.0.0.1.nip.io:8080");
        assert!(
            cm["data"]["resource.customizations.health.argoproj.io_Application"]
                .as_str()
                .unwrap()
                .contains("obj.status.health")
        );
        let rbac = find("ConfigMap", "argocd-rbac-cm");
        let policy = rbac["data"]["policy.csv"].as_str().unwrap();
        for line in [
            "g, platform:admin, role:admin",
            "g, platform:developer, role:developer",
            "g, platform:readonly, role:readonly",
        ] {
            assert!(policy.contains(line), "{policy}");
        }
        let secret = find("Secret", "argocd-secret");
        let hash = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["admin.password"].as_str().unwrap())
            .unwrap();
        assert!(
            bcrypt::verify(admin.password.expose(), std::str::from_utf8(&hash).unwrap()).unwrap()
        );
        let rendered =
            serde_json::to_string(&set.objects.iter().map(|o| &o.object).collect::<Vec<_>>())
                .unwrap();
        assert!(
            !rendered.contains(admin.password.expose()),
            "the password itself is in no object"
        );
        let ingress = find("Ingress", "argocd-server");
        assert_eq!(ingress["spec"]["ingressClassName"], "traefik");
        assert_eq!(
            ingress["spec"]["rules"][0]["host"],
            "argocd.dev.127.0.0.1.nip.io"
        );
    }

    #[test]
    fn on_aws_the_console_is_under_the_domain_behind_the_alb() {
        let admin = AdminCredentials::generate().unwrap();
        let aws = env(|c| {
            c.profile = comind_core::config::Profile::Aws;
            c.gitops.domain = Some("comind.pro".into());
        });
        let set = render(&aws, &release(), &admin).unwrap();
        let ingress = set
            .objects
            .iter()
            .find(|o| o.kind.resource.kind == "Ingress")
            .unwrap();
        assert_eq!(ingress.object.data["spec"]["ingressClassName"], "alb");
        assert_eq!(
            ingress.object.data["spec"]["rules"][0]["host"],
            "argocd.comind.pro"
        );
        assert_eq!(ingress::url(&aws, "argocd"), "https://argocd.comind.pro");
    }

    #[test]
    fn a_manifest_that_is_not_argo_cd_s_is_refused() {
        let admin = AdminCredentials::generate().unwrap();
        let err = render(&env(|_| {}), &[], &admin).unwrap_err().to_string();
        assert!(err.contains("argocd-cm"), "{err}");
    }
}
