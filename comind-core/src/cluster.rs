//! The contract between the phase that makes a Kubernetes cluster and the phases that
//! work inside it.
//!
//! Whichever provider makes the cluster (k3d locally, EKS on AWS), its phase has the id
//! [`CLUSTER_PHASE_ID`] and publishes [`KUBECONFIG`] and [`KUBE_CONTEXT`]. The
//! in-cluster phases (`comind-gitops`) depend on that phase id and read those two
//! outputs, and never name a provider crate. A kubeconfig may authenticate with an
//! exec plugin (EKS's runs `comind eks-token`); it is a file in the state directory,
//! mode 0600, because it can hold credentials.

/// The id of the phase that makes the cluster, in every profile that makes one.
pub const CLUSTER_PHASE_ID: &str = "cluster";

/// Output of the cluster phase: the path of a kubeconfig file that reaches the
/// cluster's API server.
pub const KUBECONFIG: &str = "KUBECONFIG";

/// Output of the cluster phase: the context of [`KUBECONFIG`] to use.
pub const KUBE_CONTEXT: &str = "KUBE_CONTEXT";

/// The id of the phase that makes the environment's private image registry, where a
/// profile makes one (the local profile does, with its cluster).
pub const REGISTRY_PHASE_ID: &str = "registry";

/// Output of the registry phase: the address the cluster's nodes and Pods reach the
/// registry at (a container's address on the environment's network).
pub const REGISTRY_CLUSTER_HOST: &str = "REGISTRY_CLUSTER_HOST";

/// Output of the registry phase: the port at [`REGISTRY_CLUSTER_HOST`].
pub const REGISTRY_CLUSTER_PORT: &str = "REGISTRY_CLUSTER_PORT";

/// Where the cluster's server nodes mount the registry's data volume, so the
/// registry's garbage-collection CronJob (a Pod on a server node, with this host path)
/// works on the same files as the registry container.
pub const REGISTRY_NODE_PATH: &str = "/var/lib/comind/registry";

/// The registry's configuration file, shared by the registry container and its
/// garbage-collection CronJob so both see the same storage. It lives at
/// [`REGISTRY_CONFIG_PATH`] in both, the data at `/var/lib/registry`. Authentication
/// is added by the container's environment (the CronJob serves nothing).
///
/// It has no blob descriptor cache, unlike the image's own file: after a garbage
/// collection, a cached descriptor tells a client that a deleted layer still exists,
/// its push skips the layer, and the image it pushed cannot be pulled.
pub const REGISTRY_CONFIG: &str = "\
# Comind's registry configuration (Distribution 2.8 and 3).
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

/// The directory of [`REGISTRY_CONFIG_PATH`].
pub const REGISTRY_CONFIG_DIR: &str = "/etc/comind";

/// The file name of [`REGISTRY_CONFIG_PATH`].
pub const REGISTRY_CONFIG_FILE: &str = "registry.yml";

/// Where [`REGISTRY_CONFIG`] is, in the registry container and in the CronJob's Pod:
/// [`REGISTRY_CONFIG_DIR`]/[`REGISTRY_CONFIG_FILE`].
pub const REGISTRY_CONFIG_PATH: &str = "/etc/comind/registry.yml";

/// The id of the phase that runs the local Git server (`gitops.repo.url: local`), the
/// repository Argo CD deploys from when there is no remote one.
pub const GIT_SERVER_PHASE_ID: &str = "git-server";

/// Output of the Git server phase: the address Pods (Argo CD's repo server) reach the
/// server at (a container's address on the environment's network).
pub const GIT_SERVER_CLUSTER_HOST: &str = "GIT_SERVER_CLUSTER_HOST";

/// Output of the Git server phase: the Git protocol port at [`GIT_SERVER_CLUSTER_HOST`].
pub const GIT_SERVER_CLUSTER_PORT: &str = "GIT_SERVER_CLUSTER_PORT";

/// Output of the Git server phase: the repository's URL from this machine
/// (`git://127.0.0.1:<port>/gitops.git`), where `comind gitops push` pushes.
pub const GITOPS_REPO_URL: &str = "GITOPS_REPO_URL";

/// Output of the Git server phase: the commit the repository's revision points at, or
/// empty while nothing was pushed to it (`comind gitops push` fills it).
pub const GITOPS_REPO_HEAD: &str = "GITOPS_REPO_HEAD";

/// The repository's path on the local Git server.
pub const GIT_SERVER_REPOSITORY: &str = "gitops.git";

/// Output of the cluster phase, where the profile's load balancer needs an address
/// pool (MetalLB on the local cluster): the addresses it may give Services of type
/// LoadBalancer, as a range `first-last` on the cluster's network.
pub const LOAD_BALANCER_ADDRESSES: &str = "LOAD_BALANCER_ADDRESSES";

/// The namespace of the platform's service Secrets and backup jobs
/// (`platform-<environment>`).
pub fn services_namespace(environment: &str) -> String {
    format!("platform-{environment}")
}

/// The service account the backup jobs run as, in [`services_namespace`]; on AWS its
/// Pod Identity association gives it the backup role.
pub const BACKUP_SERVICE_ACCOUNT: &str = "comind-backup";

/// The namespace and service account of the AWS Load Balancer Controller.
pub const LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT: (&str, &str) =
    ("kube-system", "aws-load-balancer-controller");

/// The namespace and service account of the EBS CSI driver's controller.
pub const EBS_CSI_CONTROLLER_SERVICE_ACCOUNT: (&str, &str) =
    ("kube-system", "ebs-csi-controller-sa");

/// Output of the cluster phase: the cluster's name (k3d's, or EKS's: what the AWS Load
/// Balancer Controller is told it runs in).
pub const CLUSTER_NAME: &str = "CLUSTER_NAME";

/// Output of the AWS cluster phase: the cluster's AWS region.
pub const CLUSTER_REGION: &str = "CLUSTER_REGION";

/// Output of the AWS cluster phase: the VPC the cluster's nodes are in (where the AWS
/// Load Balancer Controller makes its load balancers and target groups).
pub const CLUSTER_VPC_ID: &str = "CLUSTER_VPC_ID";

/// Output of the AWS cluster phase: the IAM role the AWS Load Balancer Controller's
/// service account assumes (through Pod Identity; a chart that wants the
/// `eks.amazonaws.com/role-arn` annotation can take it from here).
pub const LOAD_BALANCER_CONTROLLER_ROLE_ARN: &str = "LOAD_BALANCER_CONTROLLER_ROLE_ARN";

/// Output of the AWS cluster phase: the IAM role of [`BACKUP_SERVICE_ACCOUNT`].
pub const BACKUP_ROLE_ARN: &str = "BACKUP_ROLE_ARN";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_configuration_path_is_its_directory_and_file() {
        assert_eq!(
            REGISTRY_CONFIG_PATH,
            format!("{REGISTRY_CONFIG_DIR}/{REGISTRY_CONFIG_FILE}")
        );
    }
}
