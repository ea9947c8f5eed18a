//! EKS Pod Identity associations: which service account assumes which role of the
//! `iam` phase.
//!
//! - `kube-system/aws-load-balancer-controller`: the controller's role;
//! - `kube-system/ebs-csi-controller-sa`: the EBS CSI driver's role;
//! - `platform-<env>/comind-backup`: the backup jobs' role.
//!
//! Associations Comind made are converged (their role) and removed when no longer
//! wanted; one that someone else made for one of these service accounts stops the run
//! with a conflict, untouched. The `eks-pod-identity-agent` add-on (see
//! [`super::addons`]) hands the credentials to the Pods.

use std::collections::BTreeMap;

use aws_sdk_eks::types::PodIdentityAssociation;
use comind_core::cluster::{
    BACKUP_SERVICE_ACCOUNT, EBS_CSI_CONTROLLER_SERVICE_ACCOUNT,
    LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT, services_namespace,
};
use comind_core::{Change, Error, Result};

use super::{COMPONENT, Inputs, Run};
use crate::error::AwsResultExt;
use crate::tags;

/// A service account, `namespace/name`.
type Account = (String, String);

fn account_name((namespace, name): &Account) -> String {
    format!("{namespace}/{name}")
}

impl Run<'_> {
    fn wanted_associations(&self, inputs: &Inputs) -> BTreeMap<Account, String> {
        let pair = |(ns, sa): (&str, &str)| (ns.to_string(), sa.to_string());
        BTreeMap::from([
            (
                pair(LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT),
                inputs.load_balancer_controller_role.clone(),
            ),
            (
                pair(EBS_CSI_CONTROLLER_SERVICE_ACCOUNT),
                inputs.ebs_csi_driver_role.clone(),
            ),
            (
                (
                    services_namespace(self.env.name()),
                    BACKUP_SERVICE_ACCOUNT.to_string(),
                ),
                inputs.backup_role.clone(),
            ),
        ])
    }

    /// Plans the associations of a cluster that does not exist yet.
    pub(super) fn plan_new_associations(&mut self) {
        for account in [
            LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT,
            EBS_CSI_CONTROLLER_SERVICE_ACCOUNT,
        ] {
            self.pass.record([Change::create(
                "eks-pod-identity-association",
                format!("{}/{}", account.0, account.1),
            )]);
        }
        self.pass.record([Change::create(
            "eks-pod-identity-association",
            format!(
                "{}/{BACKUP_SERVICE_ACCOUNT}",
                services_namespace(self.env.name())
            ),
        )]);
    }

    async fn live_associations(&self) -> Result<BTreeMap<Account, PodIdentityAssociation>> {
        let listed = self
            .clients
            .eks
            .list_pod_identity_associations()
            .cluster_name(&self.name)
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<Vec<_>, _>>()
            .await
            .aws("eks:ListPodIdentityAssociations", self.resource())?;
        let mut live = BTreeMap::new();
        for summary in listed {
            let Some(id) = summary.association_id() else {
                continue;
            };
            let found = self
                .clients
                .eks
                .describe_pod_identity_association()
                .cluster_name(&self.name)
                .association_id(id)
                .send()
                .await
                .found(
                    "eks:DescribePodIdentityAssociation",
                    format!("eks-pod-identity-association {id}"),
                )?;
            if let Some(association) = found.and_then(|out| out.association) {
                let account = (
                    association.namespace().unwrap_or_default().to_string(),
                    association
                        .service_account()
                        .unwrap_or_default()
                        .to_string(),
                );
                live.insert(account, association);
            }
        }
        Ok(live)
    }

    /// Converges one live association of a wanted service account: Comind's gets
    /// the wanted role; someone else's stops the run, untouched.
    async fn converge_association(
        &mut self,
        account: &Account,
        role: &str,
        association: &PodIdentityAssociation,
    ) -> Result<()> {
        let name = account_name(account);
        let live_tags = tags::from_map(association.tags());
        if !self.env.owns(&live_tags, Some(COMPONENT)) {
            return Err(Error::conflict(format!(
                "service account {name} of EKS cluster {} already has a Pod Identity \
                 association that Comind did not make (role {}); Comind never \
                 changes what it did not make",
                self.name,
                association.role_arn().unwrap_or("?")
            ))
            .with_resource(format!("eks-pod-identity-association {name}"))
            .with_hint(
                "delete that association (EKS console, Access tab) so that Comind \
                 makes its own with the role it needs",
            ));
        }
        if association.role_arn() != Some(role)
            && self.pass.will(
                Change::update("eks-pod-identity-association", &name)
                    .because(format!("role to {role}")),
            )
        {
            self.clients
                .eks
                .update_pod_identity_association()
                .cluster_name(&self.name)
                .association_id(association.association_id().unwrap_or_default())
                .role_arn(role)
                .send()
                .await
                .aws(
                    "eks:UpdatePodIdentityAssociation",
                    format!("eks-pod-identity-association {name}"),
                )?;
        }
        Ok(())
    }

    /// Converges the associations; `inputs` is `None` while planning before `iam`.
    pub(super) async fn pod_identity(&mut self, inputs: Option<&Inputs>) -> Result<()> {
        let Some(inputs) = inputs else {
            self.plan_new_associations();
            return Ok(());
        };
        let wanted = self.wanted_associations(inputs);
        let live = self.live_associations().await?;
        for (account, role) in &wanted {
            self.ctx.checkpoint()?;
            let name = account_name(account);
            if let Some(association) = live.get(account) {
                self.converge_association(account, role, association)
                    .await?;
                continue;
            }
            if !self
                .pass
                .will(Change::create("eks-pod-identity-association", &name).because(role.clone()))
            {
                continue;
            }
            let made = self
                .clients
                .eks
                .create_pod_identity_association()
                .cluster_name(&self.name)
                .namespace(&account.0)
                .service_account(&account.1)
                .role_arn(role)
                .set_tags(Some(tags::to_map(&tags::ownership(
                    self.env, COMPONENT, None,
                ))))
                .send()
                .await
                .aws(
                    "eks:CreatePodIdentityAssociation",
                    format!("eks-pod-identity-association {name}"),
                );
            match made {
                Ok(_) => {}
                // A create whose answer was lost (the SDK's retry then meets the
                // association it made), or a race with another writer: judged like
                // any live association, so a foreign one is still a conflict.
                Err(err) if super::addons::in_use(&err) => {
                    let now = self.live_associations().await?;
                    let Some(association) = now.get(account) else {
                        return Err(err);
                    };
                    self.converge_association(account, role, association)
                        .await?;
                }
                Err(err) => return Err(err),
            }
        }
        for (account, association) in &live {
            let live_tags = tags::from_map(association.tags());
            let name = account_name(account);
            if !wanted.contains_key(account)
                && self.env.owns(&live_tags, Some(COMPONENT))
                && self.pass.will(
                    Change::delete("eks-pod-identity-association", &name)
                        .because("no longer needed"),
                )
            {
                self.clients
                    .eks
                    .delete_pod_identity_association()
                    .cluster_name(&self.name)
                    .association_id(association.association_id().unwrap_or_default())
                    .send()
                    .await
                    .found(
                        "eks:DeletePodIdentityAssociation",
                        format!("eks-pod-identity-association {name}"),
                    )?;
            }
        }
        Ok(())
    }
}
