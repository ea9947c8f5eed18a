//! The kubeconfig of the environment's EKS cluster.
//!
//! Its user authenticates through an `exec` credential plugin that runs
//! `comind eks-token --cluster NAME --region REGION [--endpoint-url URL]`, because
//! EKS tokens expire after 15 minutes and a kubeconfig outlives that. The file is
//! written to the state directory with mode 0600; it holds no secret itself, but it
//! names the cluster and who may reach it.

use serde::Serialize;

/// The binary the exec plugin runs.
pub const COMIND_BINARY: &str = "comind";

/// What a kubeconfig for one EKS cluster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubeconfig {
    /// The EKS cluster name.
    pub cluster: String,
    /// The API server URL.
    pub server: String,
    /// The cluster's CA bundle, base64 as EKS returns it.
    pub certificate_authority_data: String,
    /// The region, passed to `comind eks-token`.
    pub region: String,
    /// The AWS endpoint override, passed to `comind eks-token` when set.
    pub endpoint_url: Option<String>,
    /// The context (and user) name.
    pub context: String,
    /// The program the exec plugin runs (see [`comind_command`]).
    pub command: String,
    /// The AWS profile to sign with, when one was in use (`AWS_PROFILE`).
    pub aws_profile: Option<String>,
}

/// The program for the exec plugin: this executable when it is `comind` itself (the
/// CLI), else `comind` from `PATH` (an embedder or a test binary).
pub fn comind_command() -> String {
    std::env::current_exe()
        .ok()
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name == std::ffi::OsStr::new(COMIND_BINARY))
        })
        .map_or_else(|| COMIND_BINARY.to_string(), |p| p.display().to_string())
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct File<'a> {
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<'a, ClusterEntry<'a>>>,
    contexts: Vec<Named<'a, ContextEntry<'a>>>,
    current_context: &'a str,
    users: Vec<Named<'a, UserEntry<'a>>>,
    preferences: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    entry: T,
}

#[derive(Serialize)]
struct ClusterEntry<'a> {
    cluster: Cluster<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster<'a> {
    server: &'a str,
    certificate_authority_data: &'a str,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    context: Context<'a>,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct UserEntry<'a> {
    user: User<'a>,
}

#[derive(Serialize)]
struct User<'a> {
    exec: Exec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Exec<'a> {
    api_version: &'static str,
    command: &'a str,
    args: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<EnvVar<'a>>,
    interactive_mode: &'static str,
    provide_cluster_info: bool,
}

#[derive(Serialize)]
struct EnvVar<'a> {
    name: &'static str,
    value: &'a str,
}

impl Kubeconfig {
    /// The exec plugin's arguments.
    pub fn exec_args(&self) -> Vec<&str> {
        let mut args = vec![
            "eks-token",
            "--cluster",
            &self.cluster,
            "--region",
            &self.region,
        ];
        if let Some(url) = &self.endpoint_url {
            args.extend(["--endpoint-url", url.as_str()]);
        }
        args
    }

    /// The kubeconfig as YAML.
    ///
    /// # Errors
    /// Never in practice: every field is a plain string.
    pub fn to_yaml(&self) -> comind_core::Result<String> {
        let env = self
            .aws_profile
            .as_deref()
            .map(|value| EnvVar {
                name: "AWS_PROFILE",
                value,
            })
            .into_iter()
            .collect();
        let file = File {
            api_version: "v1",
            kind: "Config",
            clusters: vec![Named {
                name: &self.cluster,
                entry: ClusterEntry {
                    cluster: Cluster {
                        server: self.server.trim_end_matches('/'),
                        certificate_authority_data: &self.certificate_authority_data,
                    },
                },
            }],
            contexts: vec![Named {
                name: &self.context,
                entry: ContextEntry {
                    context: Context {
                        cluster: &self.cluster,
                        user: &self.context,
                    },
                },
            }],
            current_context: &self.context,
            users: vec![Named {
                name: &self.context,
                entry: UserEntry {
                    user: User {
                        exec: Exec {
                            api_version: super::token::EXEC_CREDENTIAL_API_VERSION,
                            command: &self.command,
                            args: self.exec_args(),
                            env,
                            interactive_mode: "Never",
                            provide_cluster_info: false,
                        },
                    },
                },
            }],
            preferences: serde_json::Map::new(),
        };
        serde_yaml_ng::to_string(&file)
            .map_err(|e| comind_core::Error::internal(format!("cannot write the kubeconfig: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_runs_comind_eks_token() {
        let config = Kubeconfig {
            cluster: "comind-dev-cluster".into(),
            server: "https://abc.eks.amazonaws.com/".into(),
            certificate_authority_data: "Q0E=".into(),
            region: "us-east-1".into(),
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            context: "comind-dev".into(),
            command: "/usr/local/bin/comind".into(),
            aws_profile: None,
        };
        let yaml = config.to_yaml().unwrap();
        let doc: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(doc["current-context"], "comind-dev");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://abc.eks.amazonaws.com"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        let exec = &doc["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert_eq!(exec["command"], "/usr/local/bin/comind");
        assert_eq!(
            exec["args"],
            serde_json::json!([
                "eks-token",
                "--cluster",
                "comind-dev-cluster",
                "--region",
                "us-east-1",
                "--endpoint-url",
                "http://127.0.0.1:5000"
            ])
        );
        assert!(exec.get("env").is_none());
    }

    #[test]
    fn a_test_binary_is_not_mistaken_for_comind() {
        assert_eq!(comind_command(), COMIND_BINARY);
    }
}
