//! What the phase publishes: its outputs, and the kubeconfig file (0600) they name.

use aws_sdk_eks::types::Cluster;
use comind_core::{Change, Environment, Outputs, Result};

use super::{
    CLUSTER_ARN, CLUSTER_CA_DATA, CLUSTER_ENDPOINT, CLUSTER_NAME, CLUSTER_OIDC_ISSUER,
    CLUSTER_REGION, CLUSTER_VERSION, CLUSTER_VPC_ID, KUBE_CONTEXT, KUBECONFIG, NODE_GROUP_NAME,
    Run,
};
use crate::clients::Clients;
use crate::eks::kubeconfig::{Kubeconfig, comind_command};

pub(super) fn outputs_of(env: &Environment, clients: &Clients, cluster: &Cluster) -> Outputs {
    let name = cluster.name().unwrap_or_default();
    let mut out = Outputs::new()
        .text(CLUSTER_NAME, name)
        .text(CLUSTER_ARN, cluster.arn().unwrap_or_default())
        .text(
            CLUSTER_ENDPOINT,
            cluster.endpoint().unwrap_or_default().trim_end_matches('/'),
        )
        .text(
            CLUSTER_CA_DATA,
            cluster
                .certificate_authority()
                .and_then(|c| c.data())
                .unwrap_or_default(),
        )
        .text(CLUSTER_VERSION, cluster.version().unwrap_or_default())
        .text(CLUSTER_REGION, &clients.region)
        .text(NODE_GROUP_NAME, env.resource_name("nodes"))
        .text(
            KUBECONFIG,
            env.state().kubeconfig_path().display().to_string(),
        )
        .text(KUBE_CONTEXT, context_name(env));
    if let Some(issuer) = cluster
        .identity()
        .and_then(|i| i.oidc())
        .and_then(|o| o.issuer())
    {
        out.insert_text(CLUSTER_OIDC_ISSUER, issuer);
    }
    if let Some(vpc) = cluster.resources_vpc_config().and_then(|v| v.vpc_id()) {
        out.insert_text(CLUSTER_VPC_ID, vpc);
    }
    out
}

fn context_name(env: &Environment) -> String {
    format!("comind-{}", env.name())
}

/// The kubeconfig for `cluster`.
fn kubeconfig_of(env: &Environment, clients: &Clients, cluster: &Cluster) -> Kubeconfig {
    Kubeconfig {
        cluster: cluster.name().unwrap_or_default().to_string(),
        server: cluster.endpoint().unwrap_or_default().to_string(),
        certificate_authority_data: cluster
            .certificate_authority()
            .and_then(|c| c.data())
            .unwrap_or_default()
            .to_string(),
        region: clients.region.clone(),
        endpoint_url: clients.endpoint_url.clone(),
        context: context_name(env),
        command: comind_command(),
        aws_profile: std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()),
    }
}

impl Run<'_> {
    pub(super) fn kubeconfig(&mut self, cluster: &Cluster) -> Result<()> {
        let path = self.env.state().kubeconfig_path();
        let wanted = kubeconfig_of(self.env, self.clients, cluster).to_yaml()?;
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(wanted.as_str()) {
            return Ok(());
        }
        let change = if current.is_none() {
            Change::create("kubeconfig", path.display().to_string())
        } else {
            Change::update("kubeconfig", path.display().to_string())
        };
        if self.pass.will(change) {
            self.env
                .state()
                .write_private("kubeconfig", wanted.as_bytes())?;
        }
        Ok(())
    }
}
