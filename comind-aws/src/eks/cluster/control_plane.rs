//! The EKS control plane: created, upgraded one minor version at a time, kept on the
//! network's subnets and security group, and waited for.

use std::collections::BTreeSet;

use aws_sdk_eks::types::{
    AuthenticationMode, Cluster, ClusterStatus, CreateAccessConfigRequest, LogSetup, LogType,
    Logging, UpdateAccessConfigRequest, VpcConfigRequest,
};
use comind_core::{Change, Error, Result};

use super::health::cluster_issues;
use super::{COMPONENT, Inputs, Run, version};
use crate::clients::Clients;
use crate::create;
use crate::error::AwsResultExt;
use crate::tags::{self, Tags};
use crate::waiter::{Observed, Status, Wait};

/// The public endpoint open to anywhere: the default outside production.
pub(crate) const OPEN: &str = "0.0.0.0/0";

/// The control plane logs Comind turns on.
const LOG_TYPES: [LogType; 3] = [LogType::Api, LogType::Audit, LogType::Authenticator];

/// Logging with [`LOG_TYPES`] on and `off` off.
fn logging(off: &[LogType]) -> Logging {
    let mut setups = vec![
        LogSetup::builder()
            .set_types(Some(LOG_TYPES.to_vec()))
            .enabled(true)
            .build(),
    ];
    if !off.is_empty() {
        setups.push(
            LogSetup::builder()
                .set_types(Some(off.to_vec()))
                .enabled(false)
                .build(),
        );
    }
    Logging::builder().set_cluster_logging(Some(setups)).build()
}

pub(super) async fn describe_cluster(clients: &Clients, name: &str) -> Result<Option<Cluster>> {
    Ok(clients
        .eks
        .describe_cluster()
        .name(name)
        .send()
        .await
        .found("eks:DescribeCluster", format!("eks-cluster {name}"))?
        .and_then(|out| out.cluster))
}

impl Run<'_> {
    fn cluster_tags(&self) -> Tags {
        let cluster = &self.env.config().aws.cluster;
        let hash = comind_core::environment::spec_hash(&cluster.version);
        tags::ownership(self.env, COMPONENT, Some(&hash))
    }

    /// The cluster, active; `None` while planning a new one.
    pub(super) async fn cluster(&mut self, inputs: Option<&Inputs>) -> Result<Option<Cluster>> {
        let desired_version = self.env.config().aws.cluster.version.clone();
        let live = describe_cluster(self.clients, &self.name).await?;
        if let Some(live) = &live {
            // Before anything else is touched for it, the cluster must be ours.
            let live_tags = tags::from_map(live.tags());
            tags::require_owned(self.env, COMPONENT, "eks-cluster", &self.name, &live_tags)?;
        }
        // The key first: EKS takes it when it creates the cluster.
        let key = self.secrets_key().await?;
        let Some(live) = live else {
            if !self.pass.will(
                Change::create("eks-cluster", &self.name)
                    .because(format!("Kubernetes {desired_version}")),
            ) {
                return Ok(None);
            }
            return self.create_cluster(inputs, key.as_deref()).await.map(Some);
        };
        let live_tags = tags::from_map(live.tags());
        let status = live.status().cloned().unwrap_or(ClusterStatus::Active);
        match status {
            ClusterStatus::Failed => {
                return Err(self.failed_cluster(&live));
            }
            ClusterStatus::Deleting => {
                if !self.pass.will(
                    Change::create("eks-cluster", &self.name)
                        .because("the previous one is still being deleted"),
                ) {
                    return Ok(None);
                }
                self.wait_cluster_gone().await?;
                return self.create_cluster(inputs, key.as_deref()).await.map(Some);
            }
            ClusterStatus::Active => {}
            _ => {
                if !self.pass.is_apply() {
                    return Ok(Some(live));
                }
                self.wait_cluster_active().await?;
            }
        }
        let mut live = live;
        if live.role_arn().is_some()
            && let Some(inputs) = inputs
            && live.role_arn() != Some(inputs.cluster_role.as_str())
        {
            return Err(Error::conflict(format!(
                "EKS cluster {} runs with role {} but the `iam` phase made {}; a cluster's \
                 role cannot change",
                self.name,
                live.role_arn().unwrap_or_default(),
                inputs.cluster_role
            ))
            .with_resource(self.resource())
            .with_hint("take the cluster down (`comind down --only cluster`) and up again"));
        }
        if let (Some(want), Some(have)) =
            (version(&desired_version), live.version().and_then(version))
        {
            if want < have {
                return Err(Error::invalid_input(format!(
                    "EKS cluster {} runs Kubernetes {}.{} and `aws.cluster.version` asks for \
                     {desired_version}; Kubernetes cannot be downgraded",
                    self.name, have.0, have.1
                ))
                .with_resource(self.resource())
                .with_hint("set `aws.cluster.version` to the running version or newer"));
            }
            if want > have {
                // EKS upgrades one minor version at a time; the next run goes on.
                let next = format!("{}.{}", have.0, have.1 + 1);
                if self.pass.will(
                    Change::update("eks-cluster", &self.name)
                        .because(format!("Kubernetes {}.{} to {next}", have.0, have.1)),
                ) {
                    self.clients
                        .eks
                        .update_cluster_version()
                        .name(&self.name)
                        .version(&next)
                        .send()
                        .await
                        .aws("eks:UpdateClusterVersion", self.resource())?;
                    live = self.wait_cluster_active().await?;
                }
            }
        }
        if let Some(inputs) = inputs {
            let vpc = live.resources_vpc_config();
            let subnets: BTreeSet<&str> = vpc
                .map(|v| v.subnet_ids().iter().map(String::as_str).collect())
                .unwrap_or_default();
            let groups: BTreeSet<&str> = vpc
                .map(|v| v.security_group_ids().iter().map(String::as_str).collect())
                .unwrap_or_default();
            let want_subnets: Vec<String> = inputs.subnets();
            let want_subnets: BTreeSet<&str> = want_subnets.iter().map(String::as_str).collect();
            let want_groups = BTreeSet::from([inputs.security_group.as_str()]);
            if (subnets != want_subnets || groups != want_groups)
                && self.pass.will(
                    Change::update("eks-cluster", &self.name)
                        .because("subnets or security groups differ from the network's"),
                )
            {
                self.clients
                    .eks
                    .update_cluster_config()
                    .name(&self.name)
                    .resources_vpc_config(
                        VpcConfigRequest::builder()
                            .set_subnet_ids(Some(inputs.subnets()))
                            .security_group_ids(&inputs.security_group)
                            .endpoint_public_access(true)
                            .endpoint_private_access(true)
                            .set_public_access_cidrs(Some(self.public_access_cidrs()))
                            .build(),
                    )
                    .send()
                    .await
                    .aws("eks:UpdateClusterConfig", self.resource())?;
                live = self.wait_cluster_active().await?;
            }
        }
        live = self.endpoint_access(live).await?;
        live = self.control_plane_logging(live).await?;
        live = self.authentication_mode(live).await?;
        live = self.envelope_encryption(live, key.as_deref()).await?;
        let missing = tags::missing(&self.cluster_tags(), &live_tags);
        if !missing.is_empty()
            && self
                .pass
                .will(Change::update("eks-cluster", &self.name).because("spec changed: tags"))
        {
            self.clients
                .eks
                .tag_resource()
                .resource_arn(live.arn().unwrap_or_default())
                .set_tags(Some(tags::to_map(&missing)))
                .send()
                .await
                .aws("eks:TagResource", self.resource())?;
        }
        Ok(Some(live))
    }

    /// The CIDRs the public endpoint answers: comind.yaml's, else anywhere (a
    /// production environment must name them; `doctor` warns otherwise).
    fn public_access_cidrs(&self) -> Vec<String> {
        self.env
            .config()
            .aws
            .cluster
            .public_access_cidrs
            .clone()
            .unwrap_or_else(|| vec![OPEN.to_string()])
    }

    /// The private endpoint on, the public one limited to its CIDRs.
    async fn endpoint_access(&mut self, live: Cluster) -> Result<Cluster> {
        let vpc = live.resources_vpc_config();
        let private = vpc.is_some_and(|v| v.endpoint_private_access());
        let public = vpc.is_none_or(|v| v.endpoint_public_access());
        let cidrs: BTreeSet<String> = vpc
            .map(|v| v.public_access_cidrs().iter().cloned().collect())
            .filter(|c: &BTreeSet<String>| !c.is_empty())
            // EKS reports 0.0.0.0/0 for a public endpoint created without CIDRs.
            .unwrap_or_else(|| BTreeSet::from([OPEN.to_string()]));
        let wanted: BTreeSet<String> = self.public_access_cidrs().into_iter().collect();
        if private && public && cidrs == wanted {
            return Ok(live);
        }
        let why = if private {
            format!(
                "public endpoint CIDRs {} to {}",
                cidrs.iter().cloned().collect::<Vec<_>>().join(","),
                wanted.iter().cloned().collect::<Vec<_>>().join(",")
            )
        } else {
            "private endpoint access off".to_string()
        };
        if !self
            .pass
            .will(Change::update("eks-cluster", &self.name).because(why))
        {
            return Ok(live);
        }
        self.clients
            .eks
            .update_cluster_config()
            .name(&self.name)
            .resources_vpc_config(
                VpcConfigRequest::builder()
                    .endpoint_private_access(true)
                    .endpoint_public_access(true)
                    .set_public_access_cidrs(Some(wanted.into_iter().collect()))
                    .build(),
            )
            .send()
            .await
            .aws("eks:UpdateClusterConfig", self.resource())?;
        self.wait_cluster_active().await
    }

    /// The control plane's api, audit and authenticator logs go to CloudWatch.
    async fn control_plane_logging(&mut self, live: Cluster) -> Result<Cluster> {
        let enabled: BTreeSet<&str> = live
            .logging()
            .map(|l| l.cluster_logging())
            .unwrap_or_default()
            .iter()
            .filter(|setup| setup.enabled() == Some(true))
            .flat_map(|setup| setup.types().iter().map(|t| t.as_str()))
            .collect();
        let wanted: BTreeSet<&str> = LOG_TYPES.iter().map(|t| t.as_str()).collect();
        if enabled == wanted {
            return Ok(live);
        }
        let extra: Vec<LogType> = enabled
            .difference(&wanted)
            .map(|t| LogType::from(*t))
            .collect();
        if !self.pass.will(
            Change::update("eks-cluster", &self.name)
                .because("control plane logging: api, audit, authenticator"),
        ) {
            return Ok(live);
        }
        self.clients
            .eks
            .update_cluster_config()
            .name(&self.name)
            .logging(logging(&extra))
            .send()
            .await
            .aws("eks:UpdateClusterConfig", self.resource())?;
        self.wait_cluster_active().await
    }

    /// Access entries only: `CONFIG_MAP` and `API_AND_CONFIG_MAP` step to `API`, one
    /// step per update as EKS requires (it never goes back).
    async fn authentication_mode(&mut self, mut live: Cluster) -> Result<Cluster> {
        loop {
            let mode = live
                .access_config()
                .and_then(|a| a.authentication_mode())
                .cloned()
                .unwrap_or(AuthenticationMode::ConfigMap);
            let next = match mode {
                AuthenticationMode::Api => return Ok(live),
                AuthenticationMode::ConfigMap => AuthenticationMode::ApiAndConfigMap,
                _ => AuthenticationMode::Api,
            };
            if !self
                .pass
                .will(Change::update("eks-cluster", &self.name).because(format!(
                    "authentication mode {} to {}",
                    mode.as_str(),
                    next.as_str()
                )))
            {
                return Ok(live);
            }
            self.clients
                .eks
                .update_cluster_config()
                .name(&self.name)
                .access_config(
                    UpdateAccessConfigRequest::builder()
                        .authentication_mode(next)
                        .build(),
                )
                .send()
                .await
                .aws("eks:UpdateClusterConfig", self.resource())?;
            live = self.wait_cluster_active().await?;
        }
    }

    async fn create_cluster(
        &mut self,
        inputs: Option<&Inputs>,
        key: Option<&str>,
    ) -> Result<Cluster> {
        let inputs = inputs.ok_or_else(|| {
            Error::internal("the cluster cannot be created before the network and roles")
        })?;
        let key = key.ok_or_else(|| {
            Error::internal("the cluster cannot be created before its Secrets key")
        })?;
        let version = &self.env.config().aws.cluster.version;
        let resource = self.resource();
        let cluster_tags = tags::to_map(&self.cluster_tags());
        // The SDK's retries keep their client request token: EKS makes one cluster of
        // a name anyway, and "in use" after a lost answer is adopted below.
        create::once(
            &resource,
            || async {
                self.clients
                    .eks
                    .create_cluster()
                    .name(&self.name)
                    .version(version)
                    .role_arn(&inputs.cluster_role)
                    .resources_vpc_config(
                        VpcConfigRequest::builder()
                            .set_subnet_ids(Some(inputs.subnets()))
                            .security_group_ids(&inputs.security_group)
                            .endpoint_public_access(true)
                            .endpoint_private_access(true)
                            .set_public_access_cidrs(Some(self.public_access_cidrs()))
                            .build(),
                    )
                    // Access entries only. The identity that runs Comind gets its
                    // entry from the access step (tagged, so it is Comind's), not from
                    // EKS's bootstrap, whose entry Comind could not tell from a
                    // foreign one.
                    .access_config(
                        CreateAccessConfigRequest::builder()
                            .authentication_mode(AuthenticationMode::Api)
                            .bootstrap_cluster_creator_admin_permissions(false)
                            .build(),
                    )
                    .logging(logging(&[]))
                    .encryption_config(super::secrets_key::encryption_config(key))
                    .set_tags(Some(cluster_tags.clone()))
                    .send()
                    .await
                    .aws("eks:CreateCluster", &resource)
                    .map(drop)
            },
            || async {
                match describe_cluster(self.clients, &self.name).await? {
                    Some(cluster) => {
                        let live = tags::from_map(cluster.tags());
                        tags::require_owned(self.env, COMPONENT, "eks-cluster", &self.name, &live)?;
                        Ok(Some(()))
                    }
                    None => Ok(None),
                }
            },
        )
        .await?;
        self.wait_cluster_active().await
    }

    fn failed_cluster(&self, cluster: &Cluster) -> Error {
        let issues = cluster_issues(cluster)
            .map(|i| format!(" ({i})"))
            .unwrap_or_default();
        Error::unavailable(format!(
            "EKS cluster {} is in status FAILED{issues}",
            self.name
        ))
        .transient(false)
        .with_resource(self.resource())
        .with_hint(
            "take it down (`comind down --only cluster`), fix the cause, and bring it up again",
        )
    }

    pub(super) async fn wait_cluster_active(&self) -> Result<Cluster> {
        let wait = Wait::new(
            "eks-cluster",
            &self.name,
            "active",
            self.cluster_timeout,
            "aws.timeouts.cluster",
        );
        wait.until(self.ctx, || async {
            let Some(cluster) = describe_cluster(self.clients, &self.name).await? else {
                return Ok(Observed::Failed(Status::new("gone")));
            };
            let status = Status::new(cluster.status().map(|s| s.as_str()).unwrap_or("unknown"))
                .with_message(cluster_issues(&cluster));
            Ok(match cluster.status() {
                Some(ClusterStatus::Active) => Observed::Ready(cluster),
                Some(ClusterStatus::Failed | ClusterStatus::Deleting) => Observed::Failed(status),
                _ => Observed::Pending(status),
            })
        })
        .await
    }

    pub(super) async fn wait_cluster_gone(&self) -> Result<()> {
        let wait = Wait::new(
            "eks-cluster",
            &self.name,
            "deleted",
            self.cluster_timeout,
            "aws.timeouts.cluster",
        );
        wait.until(self.ctx, || async {
            Ok(match describe_cluster(self.clients, &self.name).await? {
                None => Observed::Ready(()),
                Some(c) if c.status() == Some(&ClusterStatus::Failed) => {
                    Observed::Failed(Status::new("FAILED").with_message(cluster_issues(&c)))
                }
                Some(c) => Observed::Pending(Status::new(
                    c.status().map(|s| s.as_str()).unwrap_or("unknown"),
                )),
            })
        })
        .await
    }
}
