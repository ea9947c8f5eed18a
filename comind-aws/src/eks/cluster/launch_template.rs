//! The nodes' launch template: the cluster security group, IMDSv2 and an encrypted root
//! volume.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataEndpointState,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateTagSpecificationRequest,
    RequestLaunchTemplateData, ResourceType, VolumeType,
};
use aws_sdk_eks::types::Cluster;
use comind_core::{Change, Error, Result};

use super::{COMPONENT, Inputs, Run, int};
use crate::create::{self, Made};
use crate::error::AwsResultExt;
use crate::tags;

/// The root device of the EKS-optimized Amazon Linux AMIs.
const ROOT_DEVICE: &str = "/dev/xvda";
/// Pods (the load balancer controller) reach IMDS through one extra network hop.
const IMDS_HOP_LIMIT: i32 = 2;

/// What the launch template should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TemplateSpec {
    disk_gb: i32,
    encrypted: bool,
    imds_v2: bool,
    hop_limit: i32,
    security_groups: BTreeSet<String>,
}

impl Run<'_> {
    fn template_spec(&self, cluster: &Cluster, inputs: &Inputs) -> Result<TemplateSpec> {
        let mut security_groups = BTreeSet::from([inputs.security_group.clone()]);
        // The group EKS made for the cluster lets nodes and control plane talk; a
        // launch template that names groups must name it too.
        if let Some(eks_group) = cluster
            .resources_vpc_config()
            .and_then(|v| v.cluster_security_group_id())
        {
            security_groups.insert(eks_group.to_string());
        }
        Ok(TemplateSpec {
            disk_gb: int(
                self.env.config().aws.cluster.node_group.disk_gb,
                "aws.cluster.node_group.disk_gb",
            )?,
            encrypted: true,
            imds_v2: true,
            hop_limit: IMDS_HOP_LIMIT,
            security_groups,
        })
    }

    fn template_data(&self, spec: &TemplateSpec) -> RequestLaunchTemplateData {
        let mut instance_tags =
            tags::named(self.env, COMPONENT, None, &self.env.resource_name("node"));
        instance_tags.remove(comind_core::environment::LABEL_SPEC_HASH);
        RequestLaunchTemplateData::builder()
            .block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(ROOT_DEVICE)
                    .ebs(
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .volume_size(spec.disk_gb)
                            .volume_type(VolumeType::Gp3)
                            .encrypted(spec.encrypted)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(spec.hop_limit)
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .set_security_group_ids(Some(spec.security_groups.iter().cloned().collect()))
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags::to_ec2(&instance_tags)))
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags::to_ec2(&instance_tags)))
                    .build(),
            )
            .build()
    }

    async fn live_template_spec(&self, id: &str) -> Result<Option<(i64, TemplateSpec)>> {
        let out = self
            .clients
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .versions("$Latest")
            .send()
            .await
            .found(
                "ec2:DescribeLaunchTemplateVersions",
                format!("launch-template {}", self.template),
            )?;
        let Some(version) = out
            .as_ref()
            .and_then(|o| o.launch_template_versions().first())
        else {
            return Ok(None);
        };
        let Some(data) = version.launch_template_data() else {
            return Ok(None);
        };
        let root = data
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(ROOT_DEVICE))
            .and_then(|m| m.ebs());
        let metadata = data.metadata_options();
        Ok(Some((
            version.version_number().unwrap_or(1),
            TemplateSpec {
                disk_gb: root.and_then(|e| e.volume_size()).unwrap_or(0),
                encrypted: root.and_then(|e| e.encrypted()).unwrap_or(false),
                imds_v2: metadata.and_then(|m| m.http_tokens())
                    == Some(&LaunchTemplateHttpTokensState::Required),
                hop_limit: metadata
                    .and_then(|m| m.http_put_response_hop_limit())
                    .unwrap_or(1),
                security_groups: data.security_group_ids().iter().cloned().collect(),
            },
        )))
    }

    /// The launch template: (id, version); `None` while its inputs are unknown or
    /// while planning a new one.
    pub(super) async fn launch_template(
        &mut self,
        cluster: &Cluster,
        inputs: Option<&Inputs>,
    ) -> Result<Option<(String, String)>> {
        let resource = format!("launch-template {}", self.template);
        let found = self
            .clients
            .ec2
            .describe_launch_templates()
            .launch_template_names(&self.template)
            .send()
            .await
            .found("ec2:DescribeLaunchTemplates", &resource)?;
        let live = found.as_ref().and_then(|o| o.launch_templates().first());
        let Some(inputs) = inputs else {
            if live.is_none() {
                self.pass
                    .record([Change::create("launch-template", &self.template)]);
            }
            return Ok(None);
        };
        let spec = self.template_spec(cluster, inputs)?;
        if let Some(live) = live {
            let live_tags = tags::from_ec2(live.tags());
            tags::require_owned(
                self.env,
                COMPONENT,
                "launch-template",
                &self.template,
                &live_tags,
            )?;
            let id = live.launch_template_id().unwrap_or_default().to_string();
            let current = self.live_template_spec(&id).await?;
            if let Some((number, have)) = &current
                && have == &spec
            {
                return Ok(Some((id, number.to_string())));
            }
            if !self.pass.will(
                Change::update("launch-template", &self.template)
                    .because("root volume, metadata options or security groups differ"),
            ) {
                return Ok(Some((id, "$Latest".to_string())));
            }
            let created = self
                .clients
                .ec2
                .create_launch_template_version()
                .launch_template_id(&id)
                .launch_template_data(self.template_data(&spec))
                .send()
                .await
                .aws("ec2:CreateLaunchTemplateVersion", &resource)?;
            let number = created
                .launch_template_version()
                .and_then(|v| v.version_number())
                .ok_or_else(|| {
                    Error::internal("CreateLaunchTemplateVersion returned no version")
                })?;
            return Ok(Some((id, number.to_string())));
        }
        if !self
            .pass
            .will(Change::create("launch-template", &self.template))
        {
            return Ok(None);
        }
        let template_tags = tags::named(self.env, COMPONENT, None, &self.template);
        let data = self.template_data(&spec);
        // The SDK's retries keep their client token and the name is unique; a template
        // made by a lost answer or a dying run is adopted, and its data checked on the
        // next pass.
        let made = create::once(
            &resource,
            || async {
                let created = self
                    .clients
                    .ec2
                    .create_launch_template()
                    .launch_template_name(&self.template)
                    .launch_template_data(data.clone())
                    .tag_specifications(tags::ec2_spec(
                        ResourceType::LaunchTemplate,
                        &template_tags,
                    ))
                    .send()
                    .await
                    .aws("ec2:CreateLaunchTemplate", &resource)?;
                let template = created
                    .launch_template()
                    .ok_or_else(|| Error::internal("CreateLaunchTemplate returned no template"))?;
                Ok((
                    template
                        .launch_template_id()
                        .unwrap_or_default()
                        .to_string(),
                    template.latest_version_number().unwrap_or(1),
                ))
            },
            || self.our_template(),
        )
        .await?;
        let (Made::Created((id, number)) | Made::Found((id, number))) = made;
        Ok(Some((id, number.to_string())))
    }

    /// Our launch template: (id, latest version), if it exists; the conflict when it has
    /// our name but not our tags.
    async fn our_template(&self) -> Result<Option<(String, i64)>> {
        let resource = format!("launch-template {}", self.template);
        let found = self
            .clients
            .ec2
            .describe_launch_templates()
            .launch_template_names(&self.template)
            .send()
            .await
            .found("ec2:DescribeLaunchTemplates", &resource)?;
        let Some(template) = found
            .as_ref()
            .and_then(|o| o.launch_templates().first())
            .filter(|t| t.launch_template_name() == Some(self.template.as_str()))
        else {
            return Ok(None);
        };
        let live = tags::from_ec2(template.tags());
        tags::require_owned(
            self.env,
            COMPONENT,
            "launch-template",
            &self.template,
            &live,
        )?;
        Ok(Some((
            template
                .launch_template_id()
                .unwrap_or_default()
                .to_string(),
            template.latest_version_number().unwrap_or(1),
        )))
    }
}
