//! `platform/sealing-key`: the Sealed Secrets controller's key, provisioned by Comind
//! before the controller starts (the `platform/addons` phase runs after this one).
//!
//! The controller decrypts with every Secret of its namespace labelled
//! `sealedsecrets.bitnami.com/sealed-secrets-key: active`, and makes a key of its own
//! only when it finds none. Comind gives it the environment's key, kept in the
//! environment's [`SecretStore`]: the state directory by default
//! (`credentials/sealed-secrets.json`, 0600), or AWS Secrets Manager with
//! `aws.secret_store: secrets-manager` (`comind/<env>/sealed-secrets`), so that
//! SealedSecrets committed to Git stay decryptable after `down` and `up`, on a rebuilt
//! cluster, and (with Secrets Manager) from another machine. The controller runs with
//! `keyrenewperiod: 0`: it never rotates that key away.
//!
//! Where the key comes from, on an applying run:
//! 1. the secret store;
//! 2. else, for a store other than the state directory, a key the state directory
//!    kept (the environment moved to Secrets Manager): it is copied into the store;
//! 3. else the cluster: Comind's key Secret if it is there (the store lost it), else
//!    the newest active one (the controller's own, from before Comind managed the key)
//!    is adopted, so what was sealed with it still decrypts;
//! 4. else a new 4096-bit key, made once.
//!
//! A plan never writes: without a stored key it lists the Secret as created.
//!
//! A stored key that differs from the one in Comind's key Secret stops the run: one
//! of them decrypts SealedSecrets the other does not, and Comind overwrites neither.
//! When the key Secret is written, the controller's Pods are restarted: it reads its
//! keys only when it starts.
//!
//! A plain `down` keeps the stored key (and says so); `down --purge` is the only thing
//! that forgets it, and it says what that means.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use comind_core::{
    Change, DestroyOptions, Destroyed, Error, Forgotten, Kept, Operation, PhaseContext, PhaseId,
    Result, Secret, SecretStore, StateSecretStore,
};
use futures_util::FutureExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as SecretObject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};

use super::{Forget, PhaseSpec, Prepare, baseline};
use crate::apply::error::api_error;
use crate::apply::{Kind, Object, ObjectSet, Pending};
use crate::sealing::{self, CONTROLLER_NAMESPACE, CREDENTIALS, SealingKey};

/// The phase's id.
pub const ID: &str = "platform/sealing-key";

/// The component on its objects' labels.
pub const COMPONENT: &str = "sealing-key";

/// The key Secret's name. The controller finds keys by label, not name; its own are
/// `sealed-secrets-key` plus a random suffix, so this one never collides with them.
pub const SECRET_NAME: &str = "sealed-secrets-key-comind";

/// The label the controller finds its keys by.
pub const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";

/// The kinds the phase owns.
pub fn kinds() -> Vec<Kind> {
    vec![Kind::of::<SecretObject>()]
}

/// The key of one run (`None` inside for a plan without a stored key).
#[derive(Default)]
struct RunKey {
    key: Mutex<Option<Option<SealingKey>>>,
}

impl RunKey {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Option<SealingKey>>> {
        // A panic while holding this lock leaves a value that is still whole.
        self.key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The certificate of Comind's key Secret in the cluster, if it is there.
async fn cluster_certificate(client: &kube::Client) -> Result<Option<Vec<u8>>> {
    let secrets: Api<SecretObject> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let found = secrets.get_opt(SECRET_NAME).await.map_err(|e| {
        api_error(
            "read",
            &format!("secret {CONTROLLER_NAMESPACE}/{SECRET_NAME}"),
            e,
        )
    })?;
    Ok(found.map(|secret| {
        secret
            .data
            .and_then(|mut d| d.remove("tls.crt"))
            .map(|v| v.0)
            .unwrap_or_default()
    }))
}

/// Keeps `key` in `store` unless it holds one already, and returns the one kept.
async fn keep(store: &dyn SecretStore, key: &SealingKey) -> Result<SealingKey> {
    let value = serde_json::to_string_pretty(key)
        .map_err(|e| Error::internal(format!("cannot encode the sealing key: {e}")))?;
    let kept = store.create(CREDENTIALS, &Secret::new(value)).await?;
    sealing::parse_key(store, &kept)
}

async fn prepare(
    ctx: &PhaseContext,
    client: Option<&kube::Client>,
    store: &dyn SecretStore,
) -> Result<Option<SealingKey>> {
    let env = ctx.env();
    let location = store.location(CREDENTIALS);
    let applying = ctx.operation() == Operation::Apply;
    let in_cluster = match client {
        Some(client) => cluster_certificate(client).await?,
        None => None,
    };
    let mut stored = sealing::stored_key(store).await?;
    if stored.is_none() && !store.is_state_dir() {
        // The environment moved to another store: the key its state directory kept is
        // the one its SealedSecrets were sealed with.
        let state = StateSecretStore::new(env.state().clone());
        if let Some(key) = sealing::stored_key(&state).await? {
            stored = Some(if applying {
                let key = keep(store, &key).await?;
                ctx.progress(format!(
                    "copied the sealing key from {} into {location}",
                    state.location(CREDENTIALS)
                ));
                key
            } else {
                key
            });
        }
    }
    let key = match stored {
        Some(key) => {
            // Never overwrite a different key: what it sealed would stop decrypting.
            if let Some(certificate) = &in_cluster
                && certificate.as_slice() != key.certificate_pem().as_bytes()
            {
                return Err(Error::conflict(
                    "the cluster's sealing key is not the environment's stored key: each \
                     decrypts SealedSecrets the other does not, and Comind replaces neither",
                )
                .with_resource(format!("secret {CONTROLLER_NAMESPACE}/{SECRET_NAME}"))
                .with_hint(format!(
                    "keep the one your SealedSecrets were sealed with: to keep the cluster's, \
                     move the stored key ({location}) away and run `comind up` (it adopts the \
                     cluster's); to keep the stored one, delete the Secret and run `comind up`"
                )));
            }
            Some(key)
        }
        None => match client {
            Some(client) => match active_key_in_cluster(client).await? {
                Some((name, key)) if applying => {
                    let key = keep(store, &key).await?;
                    ctx.progress(format!(
                        "adopted the sealing key {CONTROLLER_NAMESPACE}/{name} from the cluster into {location}"
                    ));
                    Some(key)
                }
                Some((_, key)) => Some(key),
                None => None,
            },
            None => None,
        },
    };
    let key = match key {
        Some(key) => key,
        None if !applying => return Ok(None),
        None => {
            ctx.progress(format!(
                "generating the environment's sealing key (RSA {})",
                sealing::KEY_BITS
            ));
            // Seconds of big-number arithmetic: off the runtime's worker threads.
            let key = tokio::task::spawn_blocking(SealingKey::generate)
                .await
                .map_err(|e| {
                    Error::internal(format!("the sealing key's generation panicked: {e}"))
                })??;
            let key = keep(store, &key).await?;
            ctx.progress(format!(
                "the sealing key is kept in {location}: {}",
                if store.is_state_dir() {
                    "back it up with the state directory"
                } else {
                    "everyone who runs this environment seals with it"
                }
            ));
            key
        }
    };
    Ok(Some(key))
}

/// The controller's Pods that started before Comind last wrote the key Secret,
/// deleted so that their Deployment starts them again and they load it (the
/// controller reads its keys only at start). Judged from the cluster, not from this
/// run: a run stopped between the write and the restart is mended by the next one.
/// Argo CD owns the Deployment; deleting its Pods changes nothing it compares.
async fn restart_controller(ctx: &PhaseContext, client: &kube::Client) -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let secrets: Api<SecretObject> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let Some(secret) = secrets.get_opt(SECRET_NAME).await.map_err(|e| {
        api_error(
            "read",
            &format!("secret {CONTROLLER_NAMESPACE}/{SECRET_NAME}"),
            e,
        )
    })?
    else {
        return Ok(());
    };
    let written = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.manager.as_deref() == Some(crate::apply::FIELD_MANAGER))
        .filter_map(|f| f.time.clone())
        .max()
        .or(secret.metadata.creation_timestamp);
    let Some(written) = written else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let selector = ListParams::default().labels(CONTROLLER_POD_SELECTOR);
    let listed = pods.list(&selector).await.map_err(|e| {
        api_error(
            "list the Sealed Secrets controller's Pods in",
            &format!("namespace {CONTROLLER_NAMESPACE}"),
            e,
        )
    })?;
    // Timestamps are whole seconds: a Pod of the same second may have missed the key,
    // and is restarted (once: its successor is younger than the write).
    let stale = listed.items.into_iter().filter(|pod| {
        pod.metadata.deletion_timestamp.is_none()
            && pod
                .metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| *t <= written)
    });
    for pod in stale {
        let name = pod.metadata.name.unwrap_or_default();
        ctx.progress(format!(
            "restarting the Sealed Secrets controller ({CONTROLLER_NAMESPACE}/{name}) so it loads the environment's key"
        ));
        match pods.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(e) if crate::apply::error::is_not_found(&e) => {}
            Err(e) => {
                return Err(api_error(
                    "delete",
                    &format!("pod {CONTROLLER_NAMESPACE}/{name}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// The label of the controller's Pods (the chart's `app.kubernetes.io/name`).
pub const CONTROLLER_POD_SELECTOR: &str = "app.kubernetes.io/name=sealed-secrets";

/// The active key Secret to adopt from the controller's namespace, by name.
async fn active_key_in_cluster(client: &kube::Client) -> Result<Option<(String, SealingKey)>> {
    let secrets: Api<SecretObject> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let listed = secrets
        .list(&ListParams::default().labels(&format!("{KEY_LABEL}=active")))
        .await
        .map_err(|e| {
            api_error(
                "list the sealing keys in",
                &format!("namespace {CONTROLLER_NAMESPACE}"),
                e,
            )
        })?;
    // Comind's own key first (it is the one Comind gave the controller before the
    // state lost it), else the newest: the one the controller seals with.
    let newest = listed.items.into_iter().max_by(|a, b| {
        let ours = |s: &SecretObject| s.metadata.name.as_deref() == Some(SECRET_NAME);
        ours(a).cmp(&ours(b)).then_with(|| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        })
    });
    let Some(secret) = newest else {
        return Ok(None);
    };
    let name = secret.metadata.name.clone().unwrap_or_default();
    let part = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| {
                Error::conflict(format!("the sealing key Secret has no `{key}`"))
                    .with_resource(format!("secret {CONTROLLER_NAMESPACE}/{name}"))
                    .with_hint(format!(
                        "fix or remove its `{KEY_LABEL}` label, or put the key's PEM in `tls.key` and its certificate in `tls.crt`"
                    ))
            })
    };
    let key = SealingKey::from_pem(&part("tls.key")?, &part("tls.crt")?)
        .map_err(|e| e.with_resource(format!("secret {CONTROLLER_NAMESPACE}/{name}")))?;
    Ok(Some((name, key)))
}

/// The key Secret, when the key is known.
pub fn render(key: Option<&SealingKey>) -> Result<ObjectSet> {
    let secret = |data: BTreeMap<String, ByteString>| SecretObject {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_string()),
            namespace: Some(CONTROLLER_NAMESPACE.to_string()),
            labels: Some(BTreeMap::from([(
                KEY_LABEL.to_string(),
                "active".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..SecretObject::default()
    };
    match key {
        Some(key) => {
            let data = BTreeMap::from([
                (
                    "tls.crt".to_string(),
                    ByteString(key.certificate_pem().as_bytes().to_vec()),
                ),
                (
                    "tls.key".to_string(),
                    ByteString(key.private_key_pem().expose().as_bytes().to_vec()),
                ),
            ]);
            Ok(ObjectSet::new(
                COMPONENT,
                vec![Object::typed(&secret(data))?],
                kinds(),
            ))
        }
        None => Ok(
            ObjectSet::new(COMPONENT, Vec::new(), kinds()).with_pending(Pending {
                objects: vec![Object::typed(&secret(BTreeMap::new()))?],
                label: (KEY_LABEL.to_string(), "active".to_string()),
                reason: "the sealing key is made (or adopted from the cluster) by this run"
                    .to_string(),
            }),
        ),
    }
}

/// What `down` does with the stored key: keeps it, or with `--purge` forgets it
/// (from the store, and from the state directory if it kept a copy from before the
/// environment moved to another store).
async fn forget(
    ctx: &PhaseContext,
    options: DestroyOptions,
    store: &dyn SecretStore,
) -> Result<Destroyed> {
    let mut destroyed = Destroyed::default();
    let state = StateSecretStore::new(ctx.env().state().clone());
    let mut stores: Vec<&dyn SecretStore> = vec![store];
    if !store.is_state_dir() {
        stores.push(&state);
    }
    for store in stores {
        let location = store.location(CREDENTIALS);
        if !options.purge {
            if store.get(CREDENTIALS).await?.is_some() {
                destroyed.kept.push(Kept {
                    kind: "sealing-key".to_string(),
                    name: location,
                    reason: "it decrypts the SealedSecrets in Git; the next `up` gives it to \
                             the controller again. `down --purge` forgets it, and they can no \
                             longer be decrypted"
                        .to_string(),
                });
            }
            continue;
        }
        match store.forget(CREDENTIALS).await? {
            Forgotten::Removed => {
                ctx.progress(format!(
                    "forgot the sealing key ({location}): the SealedSecrets sealed with it can \
                     no longer be decrypted by a new controller"
                ));
                destroyed
                    .changes
                    .push(Change::delete("sealing-key", location));
            }
            Forgotten::Absent => {}
            Forgotten::Kept(reason) => destroyed.kept.push(Kept {
                kind: "sealing-key".to_string(),
                name: location,
                reason,
            }),
        }
    }
    Ok(destroyed)
}

/// The phase.
pub(crate) fn spec(store: Arc<dyn SecretStore>) -> PhaseSpec {
    let run = Arc::new(RunKey::default());
    let prepare: Prepare = {
        let run = run.clone();
        let store = store.clone();
        Arc::new(move |ctx: &PhaseContext, client: Option<&kube::Client>| {
            let run = run.clone();
            let client = client.cloned();
            let store = store.clone();
            async move {
                let prepared = prepare(ctx, client.as_ref(), store.as_ref()).await?;
                *run.lock() = Some(prepared);
                Ok(())
            }
            .boxed()
        })
    };
    let forget: Forget = Arc::new(move |ctx: &PhaseContext, options: DestroyOptions| {
        let store = store.clone();
        async move { forget(ctx, options, store.as_ref()).await }.boxed()
    });
    let mut spec = PhaseSpec::rendered(
        ID,
        "the Sealed Secrets controller's key, from the environment's secret store",
        COMPONENT,
        kinds,
        vec![PhaseId::new(baseline::ID)],
        {
            let run = run.clone();
            Arc::new(move |_ctx| {
                let key = run.lock().clone().ok_or_else(|| {
                    Error::internal("the sealing key was rendered before it was read")
                })?;
                render(key.as_ref())
            })
        },
    );
    spec.prepare = Some(prepare);
    spec.converge = Some(Arc::new(
        move |ctx: &PhaseContext, client: &kube::Client| {
            async move { restart_controller(ctx, client).await }.boxed()
        },
    ));
    spec.forget = Some(forget);
    spec
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn without_a_key_the_secret_is_pending_and_holds_nothing() {
        let set = render(None).unwrap();
        assert!(set.objects.is_empty());
        assert_eq!(set.pending.len(), 1);
        let json = serde_json::to_string(&set.pending[0].objects[0].object).unwrap();
        assert!(!json.contains("tls.key"), "{json}");
    }
}
