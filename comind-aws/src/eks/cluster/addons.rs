//! EKS managed add-ons: what k3s ships on its own, and what the platform needs from
//! the cluster (enforced network policy, Pod Identity, volumes).
//!
//! - `vpc-cni` with `enableNetworkPolicy: "true"`, so the baseline's default-deny
//!   NetworkPolicies are enforced on EKS as they are on k3s;
//! - `kube-proxy` and `coredns`;
//! - `eks-pod-identity-agent`, which hands the platform's service accounts their IAM
//!   roles (the associations are [`super::pod_identity`]'s);
//! - `aws-ebs-csi-driver`, with a default StorageClass of encrypted `gp3` volumes
//!   (monitoring keeps its data on volumes).
//!
//! Versions: `aws.cluster.addon_versions` pins one; otherwise the version
//! `DescribeAddonVersions` names the default for the cluster's Kubernetes version.
//! A default never downgrades an add-on someone upgraded; a pin converges exactly.
//! Each add-on is waited for until `ACTIVE`; `DEGRADED` or a failed create or update
//! fails the phase with EKS's health issues.

use aws_sdk_eks::types::{Addon, AddonStatus, Cluster, ResolveConflicts};
use comind_core::config::EKS_ADDONS;
use comind_core::{Change, Error, Result};
use serde_json::{Value, json};

use super::{COMPONENT, Run};
use crate::clients::Clients;
use crate::error::{AwsResultExt, Failure};
use crate::tags;
use crate::waiter::{Observed, Status, Wait};

/// What one add-on should be.
#[derive(Debug, Clone, PartialEq)]
struct AddonSpec {
    name: &'static str,
    version: String,
    /// Whether `version` is a pin of comind.yaml (converged exactly) or EKS's default
    /// (never a downgrade).
    pinned: bool,
    configuration: Option<Value>,
}

/// The add-on's configuration values (its schema is `DescribeAddonConfiguration`'s).
fn configuration(name: &str) -> Option<Value> {
    match name {
        // Network policy enforcement: the node agent runs next to the CNI.
        "vpc-cni" => Some(json!({"enableNetworkPolicy": "true"})),
        // The driver's own default StorageClass is not encrypted; this one is, and it
        // is the cluster's default.
        "aws-ebs-csi-driver" => Some(json!({
            "storageClasses": [{
                "name": "gp3",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                "volumeBindingMode": "WaitForFirstConsumer",
                "allowVolumeExpansion": true,
                "reclaimPolicy": "Delete",
                "parameters": {"type": "gp3", "encrypted": "true"}
            }]
        })),
        _ => None,
    }
}

/// The numbers of a version such as `v1.20.4-eksbuild.2`, to compare versions.
fn numbers(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect()
}

pub(super) async fn describe_addon(
    clients: &Clients,
    cluster: &str,
    name: &str,
) -> Result<Option<Addon>> {
    Ok(clients
        .eks
        .describe_addon()
        .cluster_name(cluster)
        .addon_name(name)
        .send()
        .await
        .found("eks:DescribeAddon", format!("eks-addon {name}"))?
        .and_then(|out| out.addon))
}

/// EKS's answer to a create of something that exists.
pub(super) fn in_use(err: &Error) -> bool {
    Failure::of(err).and_then(Failure::code) == Some("ResourceInUseException")
}

fn addon_issues(addon: &Addon) -> Option<String> {
    let issues = addon.health().map(|h| h.issues()).unwrap_or_default();
    let text: Vec<String> = issues
        .iter()
        .map(|i| {
            format!(
                "{}: {}",
                i.code().map(|c| c.as_str()).unwrap_or("issue"),
                i.message().unwrap_or("")
            )
        })
        .collect();
    (!text.is_empty()).then(|| text.join("; "))
}

/// The live configuration values, parsed (EKS stores the text it was given).
fn live_configuration(addon: &Addon) -> Option<Value> {
    addon
        .configuration_values()
        .filter(|text| !text.trim().is_empty())
        .and_then(|text| {
            serde_json::from_str(text)
                .ok()
                .or_else(|| serde_yaml_ng::from_str(text).ok())
        })
}

impl Run<'_> {
    /// The default version EKS names for `name` on Kubernetes `kubernetes`.
    async fn default_version(&self, name: &str, kubernetes: &str) -> Result<String> {
        let resource = format!("eks-addon {name}");
        let found = self
            .clients
            .eks
            .describe_addon_versions()
            .addon_name(name)
            .kubernetes_version(kubernetes)
            .send()
            .await
            .aws("eks:DescribeAddonVersions", &resource)?;
        let versions = found
            .addons()
            .iter()
            .filter(|a| a.addon_name() == Some(name))
            .flat_map(|a| a.addon_versions());
        let mut newest: Option<&str> = None;
        for version in versions {
            let Some(text) = version.addon_version() else {
                continue;
            };
            let default = version
                .compatibilities()
                .iter()
                .any(|c| c.cluster_version() == Some(kubernetes) && c.default_version());
            if default {
                return Ok(text.to_string());
            }
            if newest.is_none_or(|n| numbers(text) > numbers(n)) {
                newest = Some(text);
            }
        }
        newest.map(str::to_string).ok_or_else(|| {
            Error::invalid_input(format!(
                "EKS offers no version of the `{name}` add-on for Kubernetes {kubernetes}"
            ))
            .with_resource(resource)
            .with_hint(format!(
                "pin one with `aws.cluster.addon_versions.{name}`, or use a Kubernetes \
                 version EKS supports"
            ))
        })
    }

    async fn addon_specs(&self, cluster: &Cluster) -> Result<Vec<AddonSpec>> {
        let pins = &self.env.config().aws.cluster.addon_versions;
        let kubernetes = cluster
            .version()
            .unwrap_or(&self.env.config().aws.cluster.version)
            .to_string();
        let mut specs = Vec::new();
        for name in EKS_ADDONS {
            let (version, pinned) = match pins.get(name) {
                Some(pin) => (pin.clone(), true),
                None => (self.default_version(name, &kubernetes).await?, false),
            };
            specs.push(AddonSpec {
                name,
                version,
                pinned,
                configuration: configuration(name),
            });
        }
        Ok(specs)
    }

    /// Plans the add-ons of a cluster that does not exist yet.
    pub(super) fn plan_new_addons(&mut self) {
        for name in EKS_ADDONS {
            self.pass.record([Change::create("eks-addon", name)]);
        }
    }

    /// Brings every add-on to its spec, one after another (each waits for `ACTIVE`).
    pub(super) async fn addons(&mut self, cluster: &Cluster) -> Result<()> {
        for spec in self.addon_specs(cluster).await? {
            self.ctx.checkpoint()?;
            self.addon(&spec).await?;
        }
        Ok(())
    }

    async fn addon(&mut self, spec: &AddonSpec) -> Result<()> {
        let resource = format!("eks-addon {}", spec.name);
        let Some(live) = describe_addon(self.clients, &self.name, spec.name).await? else {
            if self
                .pass
                .will(Change::create("eks-addon", spec.name).because(spec.version.clone()))
            {
                let mut create = self
                    .clients
                    .eks
                    .create_addon()
                    .cluster_name(&self.name)
                    .addon_name(spec.name)
                    .addon_version(&spec.version)
                    // EKS runs vpc-cni, kube-proxy and coredns itself on a new cluster
                    // (self-managed); the managed add-on takes their place.
                    .resolve_conflicts(ResolveConflicts::Overwrite)
                    .set_tags(Some(tags::to_map(&tags::ownership(
                        self.env, COMPONENT, None,
                    ))));
                if let Some(values) = &spec.configuration {
                    create = create.configuration_values(values.to_string());
                }
                match create.send().await.aws("eks:CreateAddon", &resource) {
                    Ok(_) => {}
                    // A create whose answer was lost, or a dying earlier run: the
                    // add-on is judged below like any other.
                    Err(err) if in_use(&err) => {}
                    Err(err) => return Err(err),
                }
                self.wait_addon_active(spec.name).await?;
            }
            return Ok(());
        };
        let live_tags = tags::from_map(live.tags());
        tags::require_owned(self.env, COMPONENT, "eks-addon", spec.name, &live_tags)?;
        let live = match live.status() {
            Some(AddonStatus::Active) => live,
            Some(AddonStatus::Degraded | AddonStatus::CreateFailed | AddonStatus::UpdateFailed) => {
                return Err(self.failed_addon(&live));
            }
            _ if !self.pass.is_apply() => return Ok(()),
            _ => self.wait_addon_active(spec.name).await?,
        };
        let live_version = live.addon_version().unwrap_or_default();
        let version_differs = if spec.pinned {
            live_version != spec.version
        } else {
            numbers(live_version) < numbers(&spec.version)
        };
        let configuration_differs = live_configuration(&live) != spec.configuration;
        if !version_differs && !configuration_differs {
            return Ok(());
        }
        let why = if version_differs {
            format!("{live_version} to {}", spec.version)
        } else {
            "configuration differs".to_string()
        };
        if self
            .pass
            .will(Change::update("eks-addon", spec.name).because(why))
        {
            let mut update = self
                .clients
                .eks
                .update_addon()
                .cluster_name(&self.name)
                .addon_name(spec.name)
                .resolve_conflicts(ResolveConflicts::Overwrite);
            if version_differs {
                update = update.addon_version(&spec.version);
            }
            // An empty text clears values someone set; EKS then uses the defaults.
            update = update.configuration_values(
                spec.configuration
                    .as_ref()
                    .map(Value::to_string)
                    .unwrap_or_default(),
            );
            update.send().await.aws("eks:UpdateAddon", &resource)?;
            self.wait_addon_active(spec.name).await?;
        }
        Ok(())
    }

    fn failed_addon(&self, addon: &Addon) -> Error {
        let name = addon.addon_name().unwrap_or_default();
        let status = addon.status().map(|s| s.as_str()).unwrap_or("unknown");
        let issues = addon_issues(addon)
            .map(|i| format!(": {i}"))
            .unwrap_or_default();
        Error::unavailable(format!(
            "EKS add-on {name} of cluster {} is {status}{issues}",
            self.name
        ))
        .transient(false)
        .with_resource(format!("eks-addon {name}"))
        .with_hint(
            "fix what the health issues name (often nodes that are not ready, or a \
             configuration conflict), then run `comind up` again",
        )
    }

    async fn wait_addon_active(&self, name: &str) -> Result<Addon> {
        let wait = Wait::new(
            "eks-addon",
            name,
            "active",
            self.addon_timeout,
            "aws.timeouts.addon",
        );
        wait.until(self.ctx, || async {
            let Some(addon) = describe_addon(self.clients, &self.name, name).await? else {
                return Ok(Observed::Failed(Status::new("gone")));
            };
            let status = Status::new(addon.status().map(|s| s.as_str()).unwrap_or("unknown"))
                .with_message(addon_issues(&addon));
            Ok(match addon.status() {
                Some(AddonStatus::Active) => Observed::Ready(addon),
                Some(
                    AddonStatus::Degraded
                    | AddonStatus::CreateFailed
                    | AddonStatus::UpdateFailed
                    | AddonStatus::DeleteFailed
                    | AddonStatus::Deleting,
                ) => Observed::Failed(status),
                _ => Observed::Pending(status),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_their_numbers() {
        assert!(numbers("v1.20.4-eksbuild.2") > numbers("v1.19.6-eksbuild.7"));
        assert!(numbers("v1.20.4-eksbuild.10") > numbers("v1.20.4-eksbuild.9"));
        assert_eq!(numbers("v1.3.9-eksbuild.3"), vec![1, 3, 9, 3]);
    }

    #[test]
    fn network_policy_is_enforced_and_volumes_are_encrypted_gp3() {
        assert_eq!(
            configuration("vpc-cni").unwrap()["enableNetworkPolicy"],
            "true"
        );
        let ebs = configuration("aws-ebs-csi-driver").unwrap();
        let class = &ebs["storageClasses"][0];
        assert_eq!(class["parameters"]["type"], "gp3");
        assert_eq!(class["parameters"]["encrypted"], "true");
        assert_eq!(
            class["annotations"]["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
        assert_eq!(configuration("coredns"), None);
    }
}
