//! A desired object: what a phase renders, ready for server-side apply.

use std::collections::BTreeMap;
use std::fmt;

use comind_core::environment::{LABEL_SPEC_HASH, spec_hash};
use comind_core::{Environment, Error, Result};
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde::Serialize;

/// The label every Kubernetes tool reads to know who manages an object.
pub const LABEL_K8S_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Whether a kind lives in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One per cluster (Namespace, ClusterRole, CustomResourceDefinition).
    Cluster,
    /// One per namespace.
    Namespaced,
}

/// A kind of object, with what is needed to call its API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Cluster-wide or namespaced.
    pub scope: Scope,
}

impl Kind {
    /// The kind of the typed `k8s-openapi` resource `K`.
    pub fn of<K>() -> Self
    where
        K: kube::Resource<DynamicType = ()> + k8s_openapi::Resource,
        <K as k8s_openapi::Resource>::Scope: ScopeOf,
    {
        Kind {
            resource: ApiResource::erase::<K>(&()),
            scope: <K as k8s_openapi::Resource>::Scope::SCOPE,
        }
    }

    /// A custom kind (of a CRD), from its group, version, kind and plural.
    pub fn custom(group: &str, version: &str, kind: &str, plural: &str, scope: Scope) -> Self {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        Kind {
            resource: ApiResource::from_gvk_with_plural(&gvk, plural),
            scope,
        }
    }

    /// `Kind` for display: `ResourceQuota`, `Application.argoproj.io`.
    pub fn name(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.kind.clone()
        } else {
            format!("{}.{}", self.resource.kind, self.resource.group)
        }
    }

    /// Whether this is the kind of CustomResourceDefinitions.
    pub fn is_crd(&self) -> bool {
        self.resource.group == "apiextensions.k8s.io"
            && self.resource.kind == "CustomResourceDefinition"
    }

    /// Whether this is the kind of Namespaces.
    pub fn is_namespace(&self) -> bool {
        self.resource.group.is_empty() && self.resource.kind == "Namespace"
    }
}

/// The [`Scope`] of a `k8s-openapi` scope type.
pub trait ScopeOf {
    /// The scope.
    const SCOPE: Scope;
}

impl ScopeOf for k8s_openapi::NamespaceResourceScope {
    const SCOPE: Scope = Scope::Namespaced;
}

impl ScopeOf for k8s_openapi::ClusterResourceScope {
    const SCOPE: Scope = Scope::Cluster;
}

/// One object a phase wants to exist, exactly as it will be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Its kind.
    pub kind: Kind,
    /// The object: `apiVersion`, `kind`, `metadata` (name, namespace, labels) and the
    /// fields Comind owns.
    pub object: DynamicObject,
}

impl Object {
    /// The desired object `value`, a typed `k8s-openapi` resource.
    ///
    /// # Errors
    /// `Internal` when it does not serialize (a bug in a render function).
    pub fn typed<K>(value: &K) -> Result<Self>
    where
        K: kube::Resource<DynamicType = ()> + k8s_openapi::Resource + Serialize,
        <K as k8s_openapi::Resource>::Scope: ScopeOf,
    {
        let kind = Kind::of::<K>();
        let mut json = serde_json::to_value(value)
            .map_err(|e| Error::internal(format!("cannot encode a {}: {e}", kind.name())))?;
        // k8s-openapi's structs do not carry their type meta; SSA needs it.
        if let Some(map) = json.as_object_mut() {
            map.insert(
                "apiVersion".into(),
                kind.resource.api_version.clone().into(),
            );
            map.insert("kind".into(), kind.resource.kind.clone().into());
        }
        Self::dynamic(kind, json)
    }

    /// The desired object `json` of `kind` (a custom resource, or a manifest read from
    /// a file).
    ///
    /// # Errors
    /// `InvalidInput` when it is not an object with a name.
    pub fn dynamic(kind: Kind, json: serde_json::Value) -> Result<Self> {
        let object: DynamicObject = serde_json::from_value(json).map_err(|e| {
            Error::invalid_input(format!(
                "not a Kubernetes object of kind {}: {e}",
                kind.name()
            ))
        })?;
        if object
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(Error::invalid_input(format!(
                "a {} has no metadata.name",
                kind.name()
            )));
        }
        match (kind.scope, object.metadata.namespace.is_some()) {
            (Scope::Namespaced, false) => Err(Error::invalid_input(format!(
                "{} {} is namespaced but names no namespace",
                kind.name(),
                object.metadata.name.as_deref().unwrap_or_default()
            ))),
            _ => Ok(Object { kind, object }),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    /// Its namespace, for namespaced kinds.
    pub fn namespace(&self) -> Option<&str> {
        match self.kind.scope {
            Scope::Namespaced => self.object.metadata.namespace.as_deref(),
            Scope::Cluster => None,
        }
    }

    /// How changes and errors name it: `ResourceQuota platform/quota`.
    pub fn reference(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind.name(),
            namespace: self.namespace().map(str::to_string),
            name: self.name().to_string(),
        }
    }

    /// The object with the ownership labels of `component` in `env`, the spec hash of
    /// everything else in it, and `app.kubernetes.io/managed-by: comind`.
    pub fn owned_by(mut self, env: &Environment, component: &str) -> Self {
        let hash = spec_hash(&self.object);
        let labels = self
            .object
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new);
        labels.extend(env.labels(component, Some(&hash)));
        labels.insert(LABEL_K8S_MANAGED_BY.to_string(), "comind".to_string());
        self
    }

    /// The spec hash it carries, once [`owned_by`](Self::owned_by).
    pub fn spec_hash(&self) -> Option<&str> {
        self.object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SPEC_HASH))
            .map(String::as_str)
    }
}

/// An object's identity, for changes, errors and pruning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The kind's display name.
    pub kind: String,
    /// Its namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    /// `namespace/name`, or `name` for cluster-wide objects.
    pub fn path(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use k8s_openapi::api::rbac::v1::ClusterRole;
    use kube::api::ObjectMeta;

    #[test]
    fn kinds_know_their_scope() {
        assert_eq!(Kind::of::<Namespace>().scope, Scope::Cluster);
        assert_eq!(Kind::of::<ClusterRole>().scope, Scope::Cluster);
        assert_eq!(Kind::of::<ConfigMap>().scope, Scope::Namespaced);
        assert!(Kind::of::<Namespace>().is_namespace());
        assert_eq!(
            Kind::of::<ClusterRole>().name(),
            "ClusterRole.rbac.authorization.k8s.io"
        );
    }

    #[test]
    fn typed_objects_carry_type_meta_and_ownership() {
        let env = Environment::with_state_root(comind_core::Config::default(), "/tmp/x");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".into()),
                namespace: Some("platform".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let object = Object::typed(&cm)
            .unwrap()
            .owned_by(&env, "platform-baseline");
        let json = serde_json::to_value(&object.object).unwrap();
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "ConfigMap");
        let labels = &json["metadata"]["labels"];
        assert_eq!(labels[LABEL_K8S_MANAGED_BY], "comind");
        assert_eq!(labels["comind.dev/component"], "platform-baseline");
        assert!(object.spec_hash().is_some());
        assert_eq!(
            object.reference().to_string(),
            "ConfigMap platform/settings"
        );
    }

    #[test]
    fn a_namespaced_object_without_a_namespace_is_refused() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        assert!(Object::typed(&cm).is_err());
    }
}
