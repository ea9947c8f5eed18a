//! Manifests: multi-document YAML (a release's `install.yaml`) read into [`Object`]s the
//! apply engine takes, with each object's kind resolved through the API server's
//! discovery, or through a CustomResourceDefinition in the same manifest.

use std::collections::HashMap;

use comind_core::{Error, Result};
use serde::Deserialize;
use serde_json::Value;

use super::object::{Kind, Object, Scope};

/// The kinds a cluster serves, by `(apiVersion, kind)`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    kinds: HashMap<(String, String), Kind>,
}

impl Catalog {
    /// Every kind the cluster behind `client` serves now.
    ///
    /// # Errors
    /// When discovery fails.
    pub async fn discover(client: &kube::Client) -> Result<Self> {
        let discovery = super::discover(client).await?;
        let mut catalog = Catalog::default();
        for group in discovery.groups() {
            for version in group.versions() {
                for (resource, caps) in group.versioned_resources(version) {
                    let scope = match caps.scope {
                        kube::discovery::Scope::Cluster => Scope::Cluster,
                        kube::discovery::Scope::Namespaced => Scope::Namespaced,
                    };
                    catalog.insert(Kind { resource, scope });
                }
            }
        }
        Ok(catalog)
    }

    /// The built-in kinds a release manifest uses (the core, apps, RBAC, networking,
    /// policy, batch and CRD kinds), known without asking a cluster: a manifest can be
    /// read and planned before the cluster is reachable.
    pub fn builtin() -> Self {
        use k8s_openapi::api::{apps, batch, core, networking, policy, rbac};
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
        let mut catalog = Catalog::default();
        for kind in [
            Kind::of::<core::v1::ConfigMap>(),
            Kind::of::<core::v1::Secret>(),
            Kind::of::<core::v1::Service>(),
            Kind::of::<core::v1::ServiceAccount>(),
            Kind::of::<core::v1::Namespace>(),
            Kind::of::<core::v1::PersistentVolumeClaim>(),
            Kind::of::<apps::v1::Deployment>(),
            Kind::of::<apps::v1::StatefulSet>(),
            Kind::of::<apps::v1::DaemonSet>(),
            Kind::of::<batch::v1::Job>(),
            Kind::of::<batch::v1::CronJob>(),
            Kind::of::<rbac::v1::Role>(),
            Kind::of::<rbac::v1::RoleBinding>(),
            Kind::of::<rbac::v1::ClusterRole>(),
            Kind::of::<rbac::v1::ClusterRoleBinding>(),
            Kind::of::<networking::v1::NetworkPolicy>(),
            Kind::of::<networking::v1::Ingress>(),
            Kind::of::<policy::v1::PodDisruptionBudget>(),
            Kind::of::<apiextensions::CustomResourceDefinition>(),
        ] {
            catalog.insert(kind);
        }
        catalog
    }

    /// Adds `kind`.
    pub fn insert(&mut self, kind: Kind) {
        self.kinds.insert(
            (
                kind.resource.api_version.clone(),
                kind.resource.kind.clone(),
            ),
            kind,
        );
    }

    /// The kind of `apiVersion`/`kind`, if the cluster serves it.
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<&Kind> {
        self.kinds.get(&(api_version.to_string(), kind.to_string()))
    }

    /// Adds the kinds the CRD `crd` (a manifest document) defines.
    fn learn_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let (Some(group), Some(kind), Some(plural)) = (
            spec["group"].as_str(),
            spec["names"]["kind"].as_str(),
            spec["names"]["plural"].as_str(),
        ) else {
            return;
        };
        let scope = if spec["scope"] == "Cluster" {
            Scope::Cluster
        } else {
            Scope::Namespaced
        };
        for version in spec["versions"].as_array().into_iter().flatten() {
            if let Some(name) = version["name"].as_str() {
                self.insert(Kind::custom(group, name, kind, plural, scope));
            }
        }
    }
}

/// The objects of the multi-document YAML `text`, in order, skipping empty documents.
/// Namespaced objects without a namespace go to `default_namespace`.
///
/// # Errors
/// `InvalidInput` for YAML that does not parse, a document that is not an object with
/// `apiVersion`, `kind` and `metadata.name`, or a kind neither `catalog` nor a CRD of
/// the manifest knows.
pub fn parse(text: &str, catalog: &Catalog, default_namespace: &str) -> Result<Vec<Object>> {
    let mut documents = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| {
            Error::invalid_input(format!(
                "document {} of the manifest is not YAML: {e}",
                i + 1
            ))
        })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let mut catalog = catalog.clone();
    for document in &documents {
        if document["kind"] == "CustomResourceDefinition" {
            catalog.learn_crd(document);
        }
    }
    documents
        .into_iter()
        .enumerate()
        .map(|(i, mut document)| {
            let api_version = document["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let kind_name = document["kind"].as_str().unwrap_or_default().to_string();
            let kind = catalog
                .resolve(&api_version, &kind_name)
                .cloned()
                .ok_or_else(|| {
                    Error::invalid_input(format!(
                        "document {} of the manifest is a `{kind_name}` of `{api_version}`, which \
                     the cluster does not serve",
                        i + 1
                    ))
                })?;
            if kind.scope == Scope::Namespaced && document["metadata"]["namespace"].is_null() {
                document["metadata"]["namespace"] = Value::from(default_namespace);
            }
            Object::dynamic(kind, document)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn documents_resolve_through_the_catalog_and_the_manifest_s_own_crds() {
        let mut catalog = Catalog::default();
        catalog.insert(Kind::of::<ConfigMap>());
        catalog.insert(Kind::of::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >());
        let text = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions: [{name: v1, served: true, storage: true}]
---
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: elsewhere}
"#;
        let objects = parse(text, &catalog, "argocd").unwrap();
        assert_eq!(objects.len(), 3);
        assert_eq!(objects[1].namespace(), Some("argocd"));
        assert_eq!(objects[2].namespace(), Some("elsewhere"));
        assert_eq!(objects[2].kind.resource.plural, "widgets");
        let unknown = parse(
            "apiVersion: x/v1\nkind: Nope\nmetadata: {name: n}\n",
            &catalog,
            "a",
        );
        assert!(unknown.unwrap_err().to_string().contains("Nope"));
    }
}
