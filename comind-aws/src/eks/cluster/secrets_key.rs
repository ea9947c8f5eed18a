//! The KMS key that envelope-encrypts the cluster's Kubernetes Secrets.
//!
//! EKS encrypts its API data with an AWS-owned key anyway; a customer-managed key adds
//! the layer the account controls: who may decrypt (the key policy), when (disable or
//! revoke it), and an audit trail in CloudTrail. The cluster phase makes the key before
//! the cluster, because EKS takes it at create (or once, with AssociateEncryptionConfig,
//! for a cluster made without one) and never changes nor drops it afterwards.
//!
//! - A symmetric encrypt/decrypt key with yearly rotation on, tagged like everything
//!   Comind makes, and named by the alias `alias/comind-<env>-cluster-secrets` (a key
//!   has no name of its own: the alias is how every run finds it).
//! - A key made by a create whose answer was lost, or by a run killed before it named
//!   the key, is found by its tags among the account's keys before another is made.
//! - `down` keeps the key: deleting a KMS key cannot be undone, and whatever it
//!   encrypted (the Secrets of a cluster snapshot or backup) becomes unreadable with
//!   it. The next `up` encrypts the new cluster with the same key.
//! - `down --purge` removes the alias and schedules the key's deletion after
//!   [`DELETION_WINDOW_DAYS`] (AWS's minimum is 7, its default 30): the window in
//!   which `CancelKeyDeletion` can still save it.

use aws_sdk_eks::types::{Cluster, EncryptionConfig, Provider};
use aws_sdk_kms::types::{KeyMetadata, KeySpec, KeyState, KeyUsageType};
use comind_core::{Change, Error, Kept, Result};

use super::{COMPONENT, Run};
use crate::clients::Clients;
use crate::create;
use crate::error::{AwsResultExt, Failure};
use crate::tags::{self, Tags};

/// The kind of resource, in plans and events.
pub(super) const KIND: &str = "kms-key";

/// Days between `down --purge` and the key's deletion.
pub(super) const DELETION_WINDOW_DAYS: i32 = 30;

/// What EKS encrypts with the key: `secrets`, the only value it takes.
const ENCRYPTED_RESOURCES: &str = "secrets";

/// The key's metadata behind `alias`; `None` when the alias does not exist.
async fn aliased_key(clients: &Clients, alias: &str) -> Result<Option<KeyMetadata>> {
    Ok(clients
        .kms
        .describe_key()
        .key_id(alias)
        .send()
        .await
        .found("kms:DescribeKey", format!("{KIND} {alias}"))?
        .and_then(|out| out.key_metadata))
}

async fn key_tags(clients: &Clients, key_id: &str) -> Result<Tags> {
    let mut all = Tags::new();
    let mut marker = None;
    loop {
        let page = clients
            .kms
            .list_resource_tags()
            .key_id(key_id)
            .set_marker(marker)
            .send()
            .await
            .aws("kms:ListResourceTags", format!("{KIND} {key_id}"))?;
        all.extend(tags::from_kms(page.tags()));
        match page.next_marker() {
            Some(next) if page.truncated() => marker = Some(next.to_string()),
            _ => return Ok(all),
        }
    }
}

fn arn_of(key: &KeyMetadata) -> String {
    key.arn().unwrap_or(key.key_id()).to_string()
}

fn pending_deletion(key: &KeyMetadata) -> bool {
    matches!(
        key.key_state(),
        Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion)
    )
}

impl Run<'_> {
    /// `alias/comind-<env>-cluster-secrets`.
    pub(super) fn secrets_key_alias(&self) -> String {
        format!("alias/{}", self.env.resource_name("cluster-secrets"))
    }

    fn secrets_key_resource(&self) -> String {
        format!("{KIND} {}", self.secrets_key_alias())
    }

    /// The key, usable, with rotation on: its ARN; `None` while planning a new one.
    pub(super) async fn secrets_key(&mut self) -> Result<Option<String>> {
        let alias = self.secrets_key_alias();
        let live = aliased_key(self.clients, &alias).await?;
        if let Some(key) = &live {
            // The alias is ours by name; the key behind it must be ours by its tags
            // before Comind enables, rotates or re-points anything.
            let live_tags = key_tags(self.clients, key.key_id()).await?;
            tags::require_owned(self.env, COMPONENT, KIND, &alias, &live_tags)?;
            if !pending_deletion(key) {
                if key.key_state() == Some(&KeyState::Disabled)
                    && self
                        .pass
                        .will(Change::update(KIND, &alias).because("disabled: enable"))
                {
                    self.clients
                        .kms
                        .enable_key()
                        .key_id(key.key_id())
                        .send()
                        .await
                        .aws("kms:EnableKey", self.secrets_key_resource())?;
                }
                self.rotation(key.key_id()).await?;
                return Ok(Some(arn_of(key)));
            }
        }
        // None yet, or only one that a purge scheduled for deletion.
        let why = if live.is_some() {
            "the previous key is scheduled for deletion (`down --purge`)"
        } else {
            "envelope encryption of the cluster's Secrets"
        };
        if !self.pass.will(Change::create(KIND, &alias).because(why)) {
            return Ok(None);
        }
        let key = match self.unaliased_key().await? {
            Some(key) => key,
            None => self.create_key().await?,
        };
        let made = if live.is_some() {
            self.clients
                .kms
                .update_alias()
                .alias_name(&alias)
                .target_key_id(key.key_id())
                .send()
                .await
                .aws("kms:UpdateAlias", self.secrets_key_resource())
                .map(drop)
        } else {
            let named = self
                .clients
                .kms
                .create_alias()
                .alias_name(&alias)
                .target_key_id(key.key_id())
                .send()
                .await
                .aws("kms:CreateAlias", self.secrets_key_resource());
            match named {
                // A create whose answer was lost (the SDK's retry then meets the alias
                // it made), or another run naming the same key: fine when the alias
                // names this key, a conflict otherwise.
                Err(err)
                    if Failure::of(&err)
                        .and_then(Failure::code)
                        .is_some_and(create::says_it_exists) =>
                {
                    match aliased_key(self.clients, &alias).await? {
                        Some(named) if named.key_id() == key.key_id() => Ok(()),
                        _ => Err(err),
                    }
                }
                other => other.map(drop),
            }
        };
        made?;
        self.rotation(key.key_id()).await?;
        Ok(Some(arn_of(&key)))
    }

    /// Turns on yearly rotation (KMS keeps the older versions to decrypt).
    async fn rotation(&mut self, key_id: &str) -> Result<()> {
        let on = self
            .clients
            .kms
            .get_key_rotation_status()
            .key_id(key_id)
            .send()
            .await
            .aws("kms:GetKeyRotationStatus", self.secrets_key_resource())?
            .key_rotation_enabled();
        let alias = self.secrets_key_alias();
        if !on
            && self
                .pass
                .will(Change::update(KIND, &alias).because("automatic key rotation"))
        {
            self.clients
                .kms
                .enable_key_rotation()
                .key_id(key_id)
                .send()
                .await
                .aws("kms:EnableKeyRotation", self.secrets_key_resource())?;
        }
        Ok(())
    }

    async fn create_key(&self) -> Result<KeyMetadata> {
        let resource = self.secrets_key_resource();
        let key_tags = tags::to_kms(&tags::ownership(self.env, COMPONENT, None))?;
        let description = format!(
            "Envelope encryption of the Kubernetes Secrets of EKS cluster {} (Comind \
             environment {})",
            self.name,
            self.env.name()
        );
        // CreateKey takes no token and no name: one attempt, then the lost key is
        // looked for by its tags.
        let made = create::once(
            &resource,
            || async {
                self.clients
                    .kms
                    .create_key()
                    .description(&description)
                    .key_usage(KeyUsageType::EncryptDecrypt)
                    .key_spec(KeySpec::SymmetricDefault)
                    .set_tags(Some(key_tags.clone()))
                    .customize()
                    .config_override(create::single_attempt::kms())
                    .send()
                    .await
                    .aws("kms:CreateKey", &resource)
                    .and_then(|out| {
                        out.key_metadata.ok_or_else(|| {
                            Error::internal("kms:CreateKey answered without the key")
                                .with_resource(&resource)
                        })
                    })
            },
            || self.unaliased_key(),
        )
        .await?;
        Ok(match made {
            create::Made::Created(key) | create::Made::Found(key) => key,
        })
    }

    /// A key of ours, not scheduled for deletion, that no alias names: made by a
    /// create whose answer was lost, or by a run stopped before it named the key.
    async fn unaliased_key(&self) -> Result<Option<KeyMetadata>> {
        let keys = self
            .clients
            .kms
            .list_keys()
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<Vec<_>, _>>()
            .await
            .aws("kms:ListKeys", self.secrets_key_resource())?;
        for entry in keys {
            let Some(id) = entry.key_id() else { continue };
            let live_tags = match key_tags(self.clients, id).await {
                Ok(found) => found,
                // Keys of other services and accounts' grants may refuse this
                // caller: they are not ours either.
                Err(err) if err.kind() == comind_core::ErrorKind::Permission => {
                    continue;
                }
                Err(err) => return Err(err),
            };
            if !self.env.owns(&live_tags, Some(COMPONENT)) {
                continue;
            }
            let Some(key) = aliased_key(self.clients, id).await? else {
                continue;
            };
            if pending_deletion(&key) {
                continue;
            }
            let aliases = self
                .clients
                .kms
                .list_aliases()
                .key_id(id)
                .send()
                .await
                .aws("kms:ListAliases", format!("{KIND} {id}"))?;
            if aliases.aliases().is_empty() {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Envelope encryption on a cluster made without it (EKS never drops it once on).
    pub(super) async fn envelope_encryption(
        &mut self,
        live: Cluster,
        key: Option<&str>,
    ) -> Result<Cluster> {
        let current = live
            .encryption_config()
            .iter()
            .find(|c| c.resources().iter().any(|r| r == ENCRYPTED_RESOURCES))
            .and_then(|c| c.provider())
            .and_then(|p| p.key_arn())
            .map(str::to_string);
        let alias = self.secrets_key_alias();
        match (current, key) {
            (Some(current), Some(key)) if current != key && !current.ends_with(&alias) => {
                Err(Error::conflict(format!(
                    "EKS cluster {} encrypts its Secrets with KMS key {current}, not with \
                     Comind's key {key} ({alias}); EKS cannot change the key of a cluster",
                    self.name
                ))
                .with_resource(self.resource())
                .with_hint(
                    "take the cluster down (`comind down --only cluster`, which keeps the \
                     key) and up again",
                ))
            }
            (Some(_), _) => Ok(live),
            (None, key) => {
                if !self.pass.will(
                    Change::update("eks-cluster", &self.name)
                        .because(format!("envelope encryption of Secrets with {alias}")),
                ) {
                    return Ok(live);
                }
                let key = key.ok_or_else(|| {
                    Error::internal("the cluster's Secrets key is applied before the cluster")
                        .with_resource(self.resource())
                })?;
                self.clients
                    .eks
                    .associate_encryption_config()
                    .cluster_name(&self.name)
                    .encryption_config(encryption_config(key))
                    .send()
                    .await
                    .aws("eks:AssociateEncryptionConfig", self.resource())?;
                self.wait_cluster_active().await
            }
        }
    }

    /// `down`: the key stays unless `purge`, which schedules the key's deletion and
    /// then removes the alias (in that order, so that a run stopped in between leaves
    /// the alias for the next purge to find), and schedules any key of ours that no
    /// alias names (left by an `up` stopped between CreateKey and CreateAlias).
    pub(super) async fn destroy_secrets_key(&mut self, purge: bool) -> Result<Vec<Kept>> {
        let alias = self.secrets_key_alias();
        if let Some(key) = aliased_key(self.clients, &alias).await? {
            let live_tags = key_tags(self.clients, key.key_id()).await?;
            if !self.env.owns(&live_tags, Some(COMPONENT)) {
                return Ok(vec![Kept {
                    kind: KIND.into(),
                    name: alias,
                    reason: "not created by Comind (no ownership tags); left untouched".into(),
                }]);
            }
            if !purge {
                return Ok(vec![Kept {
                    kind: KIND.into(),
                    name: alias,
                    reason: "deleting a KMS key cannot be undone and what it encrypted \
                             becomes unreadable; the next `comind up` uses it again; \
                             `comind down --purge` schedules its deletion"
                        .into(),
                }]);
            }
            self.pass
                .record([Change::delete(KIND, &alias).because(format!(
                    "deletion scheduled in {DELETION_WINDOW_DAYS} days (`CancelKeyDeletion` \
                 keeps it)"
                ))]);
            if !pending_deletion(&key) {
                self.schedule_deletion(key.key_id()).await?;
            }
            self.clients
                .kms
                .delete_alias()
                .alias_name(&alias)
                .send()
                .await
                .found("kms:DeleteAlias", self.secrets_key_resource())?;
        }
        if purge {
            let mut scheduled = std::collections::BTreeSet::new();
            while let Some(orphan) = self.unaliased_key().await? {
                // A backend that kept the key enabled after scheduling it must not
                // keep this loop going.
                if !scheduled.insert(orphan.key_id().to_string()) {
                    break;
                }
                self.pass
                    .record([Change::delete(KIND, orphan.key_id()).because(format!(
                        "left without its alias by an interrupted run; deletion scheduled in \
                     {DELETION_WINDOW_DAYS} days"
                    ))]);
                self.schedule_deletion(orphan.key_id()).await?;
            }
        }
        Ok(Vec::new())
    }

    async fn schedule_deletion(&self, key_id: &str) -> Result<()> {
        self.clients
            .kms
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(DELETION_WINDOW_DAYS)
            .send()
            .await
            .found("kms:ScheduleKeyDeletion", format!("{KIND} {key_id}"))
            .map(drop)
    }
}

/// Secrets encrypted with `key`.
pub(super) fn encryption_config(key: &str) -> EncryptionConfig {
    EncryptionConfig::builder()
        .resources(ENCRYPTED_RESOURCES)
        .provider(Provider::builder().key_arn(key).build())
        .build()
}
