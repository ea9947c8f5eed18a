//! Who may use the cluster: EKS access entries (`authenticationMode: API`), never the
//! `aws-auth` ConfigMap.
//!
//! - The identity that runs Comind gets `AmazonEKSClusterAdminPolicy` through an
//!   entry of its own (an assumed-role session stands for its role). Such runner
//!   entries are never removed by a later run: whoever ran Comind before keeps
//!   access until an administrator removes the entry, so a run by a colleague
//!   cannot lock out the one before.
//! - `aws.cluster.access` maps IAM principals to the baseline's Kubernetes groups
//!   (`platform:admin`, `platform:developer`, `platform:readonly`) through the
//!   entries' `kubernetesGroups`: added, updated, and removed when no longer listed.
//! - An entry Comind did not make (EKS's own for the node role, one an
//!   administrator added) is never touched; a listed principal that already has
//!   such an entry stops the run with a conflict.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_eks::types::{AccessEntry, AccessScope, AccessScopeType};
use comind_core::{Change, Error, Result};

use super::{COMPONENT, Run};
use crate::clients::Clients;
use crate::error::AwsResultExt;
use crate::tags::{self, Tags};

/// The tag that says why Comind made an entry.
const ACCESS_TAG: &str = "comind.dev/access";
/// [`ACCESS_TAG`] of the runner's entry.
const RUNNER: &str = "runner";
/// [`ACCESS_TAG`] of an entry of `aws.cluster.access`.
const CONFIGURED: &str = "configured";

/// The access policy of the runner's entry.
const CLUSTER_ADMIN: &str = "AmazonEKSClusterAdminPolicy";

/// What one principal's entry should be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    groups: BTreeSet<String>,
    admin: bool,
    why: &'static str,
}

/// The principal an STS caller ARN acts as: an assumed-role session stands for its
/// role (access entries name roles, not sessions; a role's path is not part of the
/// session ARN, and EKS matches the role without it).
pub(crate) fn principal_of(caller: &str) -> String {
    let parts: Vec<&str> = caller.splitn(6, ':').collect();
    let [_, partition, service, _, account, resource] = parts[..] else {
        return caller.to_string();
    };
    if service == "sts" {
        if let Some(rest) = resource.strip_prefix("assumed-role/")
            && let Some((role, _session)) = rest.split_once('/')
        {
            return format!("arn:{partition}:iam::{account}:role/{role}");
        }
        if let Some(user) = resource.strip_prefix("user/") {
            return format!("arn:{partition}:iam::{account}:user/{user}");
        }
    }
    caller.to_string()
}

async fn describe_entry(
    clients: &Clients,
    cluster: &str,
    principal: &str,
) -> Result<Option<AccessEntry>> {
    Ok(clients
        .eks
        .describe_access_entry()
        .cluster_name(cluster)
        .principal_arn(principal)
        .send()
        .await
        .found(
            "eks:DescribeAccessEntry",
            format!("eks-access-entry {principal}"),
        )?
        .and_then(|out| out.access_entry))
}

impl Run<'_> {
    fn admin_policy(&self) -> String {
        format!(
            "arn:{}:eks::aws:cluster-access-policy/{CLUSTER_ADMIN}",
            self.clients.partition()
        )
    }

    async fn runner(&self) -> Result<String> {
        let identity = self
            .clients
            .sts
            .get_caller_identity()
            .send()
            .await
            .aws("sts:GetCallerIdentity", "aws credentials")?;
        identity
            .arn()
            .map(principal_of)
            .ok_or_else(|| Error::internal("sts:GetCallerIdentity returned no ARN"))
    }

    async fn grants(&self) -> Result<BTreeMap<String, Grant>> {
        let mut grants: BTreeMap<String, Grant> = BTreeMap::new();
        for grant in &self.env.config().aws.cluster.access {
            grants.insert(
                grant.principal.clone(),
                Grant {
                    groups: grant.groups.iter().cloned().collect(),
                    admin: false,
                    why: CONFIGURED,
                },
            );
        }
        let runner = self.runner().await?;
        grants
            .entry(runner)
            .and_modify(|g| {
                g.admin = true;
                g.why = RUNNER;
            })
            .or_insert(Grant {
                groups: BTreeSet::new(),
                admin: true,
                why: RUNNER,
            });
        Ok(grants)
    }

    fn entry_tags(&self, why: &str) -> Tags {
        let mut tags = tags::ownership(self.env, COMPONENT, None);
        tags.insert(ACCESS_TAG.to_string(), why.to_string());
        tags
    }

    /// Plans the entries of a cluster that does not exist yet.
    pub(super) async fn plan_new_access(&mut self) -> Result<()> {
        for principal in self.grants().await?.keys() {
            self.pass
                .record([Change::create("eks-access-entry", principal)]);
        }
        Ok(())
    }

    /// Converges the access entries of the cluster.
    pub(super) async fn access_entries(&mut self) -> Result<()> {
        let grants = self.grants().await?;
        let listed = self
            .clients
            .eks
            .list_access_entries()
            .cluster_name(&self.name)
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<Vec<String>, _>>()
            .await
            .aws("eks:ListAccessEntries", self.resource())?;
        let mut live = BTreeMap::new();
        for principal in listed {
            if let Some(entry) = describe_entry(self.clients, &self.name, &principal).await? {
                live.insert(principal, entry);
            }
        }
        for (principal, grant) in &grants {
            self.ctx.checkpoint()?;
            match live.get(principal) {
                None => self.create_entry(principal, grant).await?,
                Some(entry) => self.converge_entry(principal, grant, entry).await?,
            }
        }
        for (principal, entry) in &live {
            let entry_tags = tags::from_map(entry.tags());
            let ours = self.env.owns(&entry_tags, Some(COMPONENT));
            let configured = entry_tags.get(ACCESS_TAG).map(String::as_str) == Some(CONFIGURED);
            if ours
                && configured
                && !grants.contains_key(principal)
                && self.pass.will(
                    Change::delete("eks-access-entry", principal)
                        .because("no longer in `aws.cluster.access`"),
                )
            {
                self.clients
                    .eks
                    .delete_access_entry()
                    .cluster_name(&self.name)
                    .principal_arn(principal)
                    .send()
                    .await
                    .found(
                        "eks:DeleteAccessEntry",
                        format!("eks-access-entry {principal}"),
                    )?;
            }
        }
        Ok(())
    }

    async fn create_entry(&mut self, principal: &str, grant: &Grant) -> Result<()> {
        let why = if grant.admin {
            "cluster admin: the identity that runs Comind".to_string()
        } else {
            grant.groups.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        if !self
            .pass
            .will(Change::create("eks-access-entry", principal).because(why))
        {
            return Ok(());
        }
        let resource = format!("eks-access-entry {principal}");
        let made = self
            .clients
            .eks
            .create_access_entry()
            .cluster_name(&self.name)
            .principal_arn(principal)
            .set_kubernetes_groups(Some(grant.groups.iter().cloned().collect()))
            .set_tags(Some(tags::to_map(&self.entry_tags(grant.why))))
            .send()
            .await
            .aws("eks:CreateAccessEntry", &resource);
        match made {
            Ok(_) => {}
            // A create whose answer was lost: judged like any live entry.
            Err(err) if super::addons::in_use(&err) => {
                if let Some(entry) = describe_entry(self.clients, &self.name, principal).await? {
                    return self.converge_entry(principal, grant, &entry).await;
                }
                return Err(err);
            }
            Err(err) => return Err(err),
        }
        if grant.admin {
            self.associate_admin(principal).await?;
        }
        Ok(())
    }

    async fn converge_entry(
        &mut self,
        principal: &str,
        grant: &Grant,
        entry: &AccessEntry,
    ) -> Result<()> {
        let entry_tags = tags::from_map(entry.tags());
        if !self.env.owns(&entry_tags, Some(COMPONENT)) {
            if grant.why == RUNNER && grant.groups.is_empty() {
                // The runner already has an entry someone else made (EKS's own for
                // the cluster's creator, or an administrator's): left as it is.
                return Ok(());
            }
            return Err(Error::conflict(format!(
                "IAM principal {principal} already has an access entry on EKS cluster {} \
                 that Comind did not make; Comind never changes an entry it did not make",
                self.name
            ))
            .with_resource(format!("eks-access-entry {principal}"))
            .with_hint(
                "remove the principal from `aws.cluster.access`, or delete the entry \
                 (EKS console, Access tab) so that Comind makes its own",
            ));
        }
        let live_groups: BTreeSet<String> = entry.kubernetes_groups().iter().cloned().collect();
        if live_groups != grant.groups
            && self.pass.will(
                Change::update("eks-access-entry", principal).because(format!(
                    "groups [{}] to [{}]",
                    live_groups.iter().cloned().collect::<Vec<_>>().join(", "),
                    grant.groups.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
            )
        {
            self.clients
                .eks
                .update_access_entry()
                .cluster_name(&self.name)
                .principal_arn(principal)
                .set_kubernetes_groups(Some(grant.groups.iter().cloned().collect()))
                .send()
                .await
                .aws(
                    "eks:UpdateAccessEntry",
                    format!("eks-access-entry {principal}"),
                )?;
        }
        let why = entry_tags.get(ACCESS_TAG).map(String::as_str);
        if why != Some(grant.why)
            && self.pass.will(
                Change::update("eks-access-entry", principal)
                    .because(format!("now made for: {}", grant.why)),
            )
        {
            self.clients
                .eks
                .tag_resource()
                .resource_arn(entry.access_entry_arn().unwrap_or_default())
                .tags(ACCESS_TAG, grant.why)
                .send()
                .await
                .aws("eks:TagResource", format!("eks-access-entry {principal}"))?;
        }
        if grant.admin {
            let policies = self
                .clients
                .eks
                .list_associated_access_policies()
                .cluster_name(&self.name)
                .principal_arn(principal)
                .send()
                .await
                .aws(
                    "eks:ListAssociatedAccessPolicies",
                    format!("eks-access-entry {principal}"),
                )?;
            let admin = self.admin_policy();
            let has_admin = policies.associated_access_policies().iter().any(|p| {
                p.policy_arn() == Some(admin.as_str())
                    && p.access_scope().and_then(|s| s.r#type()) == Some(&AccessScopeType::Cluster)
            });
            if !has_admin
                && self.pass.will(
                    Change::update("eks-access-entry", principal)
                        .because(format!("associate {CLUSTER_ADMIN}")),
                )
            {
                self.associate_admin(principal).await?;
            }
        }
        Ok(())
    }

    async fn associate_admin(&self, principal: &str) -> Result<()> {
        self.clients
            .eks
            .associate_access_policy()
            .cluster_name(&self.name)
            .principal_arn(principal)
            .policy_arn(self.admin_policy())
            .access_scope(
                AccessScope::builder()
                    .r#type(AccessScopeType::Cluster)
                    .build(),
            )
            .send()
            .await
            .aws(
                "eks:AssociateAccessPolicy",
                format!("eks-access-entry {principal}"),
            )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stands_for_its_role() {
        assert_eq!(
            principal_of("arn:aws:sts::123456789012:assumed-role/Admin/alice@example.com"),
            "arn:aws:iam::123456789012:role/Admin"
        );
        assert_eq!(
            principal_of("arn:aws:iam::123456789012:user/bob"),
            "arn:aws:iam::123456789012:user/bob"
        );
        assert_eq!(
            principal_of("arn:aws:sts::123456789012:user/moto"),
            "arn:aws:iam::123456789012:user/moto"
        );
        assert_eq!(
            principal_of("arn:aws-cn:sts::123456789012:assumed-role/R/s"),
            "arn:aws-cn:iam::123456789012:role/R"
        );
    }
}
