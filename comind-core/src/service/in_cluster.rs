//! How the environment's cluster reaches a service: the contract between the service
//! phases, which know where a service is, and the in-cluster layer, which gives it a
//! stable name inside the cluster (`postgres.platform-<env>.svc`).
//!
//! Every service phase publishes, next to its standard outputs, a [`ClusterTarget`]:
//! the host and port Pods connect to (a container's address on the environment's
//! Docker network locally; the managed endpoint on AWS). The in-cluster layer reads
//! the service's outputs back into a [`ServiceEndpoint`] with
//! [`ServiceEndpoint::from_outputs`], points it at the in-cluster name with
//! [`ServiceEndpoint::reached_at`], and hands applications the outputs of that: the
//! same keys the `outputs` command gives, naming the in-cluster Service.

use std::net::IpAddr;

use super::{
    CacheEndpoint, ObjectStoreEndpoint, PostgresEndpoint, QueueEndpoint, QueueInfo,
    ServiceEndpoint, ServiceKind,
};
use crate::output::{Outputs, key_suffix};
use crate::secret::Secret;
use crate::{Error, Result};

/// Where Pods in the environment's cluster connect to reach a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    /// An IP address (the in-cluster Service then lists it as its endpoint) or a DNS
    /// name (the Service is then an alias of it).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ClusterTarget {
    /// The output keys of the target of a `kind` service: its host and its port
    /// (`POSTGRES_CLUSTER_HOST`, `POSTGRES_CLUSTER_PORT`).
    pub fn keys(kind: ServiceKind) -> (&'static str, &'static str) {
        match kind {
            ServiceKind::Postgres => ("POSTGRES_CLUSTER_HOST", "POSTGRES_CLUSTER_PORT"),
            ServiceKind::ObjectStore => ("S3_CLUSTER_HOST", "S3_CLUSTER_PORT"),
            ServiceKind::Cache => ("REDIS_CLUSTER_HOST", "REDIS_CLUSTER_PORT"),
            ServiceKind::Queue => ("SQS_CLUSTER_HOST", "SQS_CLUSTER_PORT"),
        }
    }

    /// The endpoint's own address, which is where the cluster reaches a managed
    /// service (RDS, ElastiCache, S3, SQS); a backend whose clients reach the service
    /// elsewhere than Pods do (a container's published port) says so with
    /// [`ServiceBackend::cluster_target`](super::ServiceBackend::cluster_target).
    ///
    /// # Errors
    /// `Internal` when the endpoint's URL has no host (a bug in its backend).
    pub fn of(endpoint: &ServiceEndpoint) -> Result<Self> {
        let (host, port) = endpoint.address()?;
        Ok(ClusterTarget { host, port })
    }

    /// Whether the host is an IP address rather than a DNS name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.trim_matches(['[', ']']).parse().ok()
    }

    /// The target as the outputs of a `kind` service.
    pub fn to_outputs(&self, kind: ServiceKind) -> Outputs {
        let (host, port) = Self::keys(kind);
        Outputs::new()
            .text(host, &self.host)
            .text(port, self.port.to_string())
    }

    /// The target a `kind` service published in `outputs`.
    ///
    /// # Errors
    /// `NotFound` when the service published none: its backend breaks the contract.
    pub fn from_outputs(kind: ServiceKind, outputs: &Outputs) -> Result<Self> {
        let (host, port) = Self::keys(kind);
        Ok(ClusterTarget {
            host: outputs.require(host)?.to_string(),
            port: outputs.parse(port)?,
        })
    }
}

impl ServiceEndpoint {
    /// The host and port its clients connect to. For the HTTP APIs (S3, SQS) that is
    /// the endpoint URL's, with the scheme's default port where it names none.
    ///
    /// # Errors
    /// `Internal` when an endpoint URL has no host (a bug in its backend).
    pub fn address(&self) -> Result<(String, u16)> {
        match self {
            ServiceEndpoint::Postgres(pg) => Ok((pg.host.clone(), pg.port)),
            ServiceEndpoint::Cache(redis) => Ok((redis.host.clone(), redis.port)),
            ServiceEndpoint::ObjectStore(ObjectStoreEndpoint { endpoint_url, .. })
            | ServiceEndpoint::Queue(QueueEndpoint { endpoint_url, .. }) => {
                let url = HttpUrl::parse(endpoint_url)?;
                Ok((url.host.to_string(), url.port()))
            }
        }
    }

    /// Whether its clients check the server's name against a TLS certificate: then
    /// they must use the name the certificate holds, not an alias. HTTPS APIs and
    /// Redis over TLS do; PostgreSQL's `sslmode=require` encrypts without checking
    /// the name.
    pub fn verifies_server_name(&self) -> bool {
        match self {
            ServiceEndpoint::Postgres(_) => false,
            ServiceEndpoint::Cache(redis) => redis.tls,
            ServiceEndpoint::ObjectStore(ObjectStoreEndpoint { endpoint_url, .. })
            | ServiceEndpoint::Queue(QueueEndpoint { endpoint_url, .. }) => {
                endpoint_url.starts_with("https://")
            }
        }
    }

    /// The same service reached at `host:port` (its in-cluster name): the address,
    /// and every URL that names the old one (the endpoint's, each queue's), point
    /// there instead. Credentials, databases, buckets and queues stay as they are.
    ///
    /// # Errors
    /// `Internal` when a URL of the endpoint cannot be read (a bug in its backend).
    pub fn reached_at(&self, host: &str, port: u16) -> Result<ServiceEndpoint> {
        Ok(match self {
            ServiceEndpoint::Postgres(pg) => ServiceEndpoint::Postgres(PostgresEndpoint {
                host: host.to_string(),
                port,
                ..pg.clone()
            }),
            ServiceEndpoint::Cache(redis) => ServiceEndpoint::Cache(CacheEndpoint {
                host: host.to_string(),
                port,
                ..redis.clone()
            }),
            ServiceEndpoint::ObjectStore(s3) => ServiceEndpoint::ObjectStore(ObjectStoreEndpoint {
                endpoint_url: HttpUrl::parse(&s3.endpoint_url)?.with_authority(host, port),
                ..s3.clone()
            }),
            ServiceEndpoint::Queue(sqs) => {
                let moved = |url: &str| -> Result<String> {
                    Ok(HttpUrl::parse(url)?.with_authority(host, port))
                };
                ServiceEndpoint::Queue(QueueEndpoint {
                    endpoint_url: moved(&sqs.endpoint_url)?,
                    queues: sqs
                        .queues
                        .iter()
                        .map(|q| {
                            Ok(QueueInfo {
                                name: q.name.clone(),
                                url: moved(&q.url)?,
                                dlq_url: moved(&q.dlq_url)?,
                            })
                        })
                        .collect::<Result<_>>()?,
                    ..sqs.clone()
                })
            }
        })
    }

    /// The endpoint a `kind` service published as `outputs` (with
    /// [`to_outputs`](Self::to_outputs)): `to_outputs` of the result gives the same
    /// standard keys and values. Names of buckets and queues come back as their key
    /// suffixes (`uploads-v2` as `UPLOADS_V2`), which give the same keys.
    ///
    /// # Errors
    /// `NotFound` or `InvalidInput` when a key `to_outputs` always writes is missing
    /// or malformed: the service's backend breaks the contract.
    pub fn from_outputs(kind: ServiceKind, outputs: &Outputs) -> Result<ServiceEndpoint> {
        let text = |key: &str| outputs.require(key).map(str::to_string);
        let secret = |key: &str| outputs.require(key).map(Secret::new);
        let list = |key: &str| -> Result<Vec<String>> {
            Ok(outputs
                .require(key)?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect())
        };
        let credentials = |id: &str, key: &str| -> Result<Option<(String, Secret)>> {
            match outputs.get(id) {
                Some(value) => Ok(Some((value.expose().to_string(), secret(key)?))),
                None => Ok(None),
            }
        };
        Ok(match kind {
            ServiceKind::Postgres => ServiceEndpoint::Postgres(PostgresEndpoint {
                host: text("POSTGRES_HOST")?,
                port: outputs.parse("POSTGRES_PORT")?,
                username: text("POSTGRES_USER")?,
                password: secret("POSTGRES_PASSWORD")?,
                databases: list("POSTGRES_DATABASES")?,
                require_tls: outputs
                    .get("DATABASE_URL")
                    .is_some_and(|url| url.expose().ends_with("?sslmode=require")),
            }),
            ServiceKind::Cache => ServiceEndpoint::Cache(CacheEndpoint {
                host: text("REDIS_HOST")?,
                port: outputs.parse("REDIS_PORT")?,
                password: secret("REDIS_PASSWORD")?,
                tls: outputs.require("REDIS_URL")?.starts_with("rediss://"),
            }),
            ServiceKind::ObjectStore => {
                // `S3_BUCKETS` keeps the order; each real name has its key.
                let named: Vec<(String, String)> = outputs
                    .iter()
                    .filter_map(|(key, value)| {
                        Some((key.strip_prefix("S3_BUCKET_")?, value.expose()))
                    })
                    .map(|(suffix, real)| (suffix.to_string(), real.to_string()))
                    .collect();
                let buckets = list("S3_BUCKETS")?
                    .into_iter()
                    .map(|real| {
                        let name = named
                            .iter()
                            .find(|(_, r)| *r == real)
                            .map(|(suffix, _)| suffix.clone())
                            .ok_or_else(|| {
                                Error::internal(format!(
                                    "bucket {real} is in S3_BUCKETS but has no S3_BUCKET_ key"
                                ))
                            })?;
                        Ok((name, real))
                    })
                    .collect::<Result<_>>()?;
                ServiceEndpoint::ObjectStore(ObjectStoreEndpoint {
                    endpoint_url: text("S3_ENDPOINT")?,
                    region: text("S3_REGION")?,
                    credentials: credentials("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")?,
                    path_style: outputs
                        .get("S3_FORCE_PATH_STYLE")
                        .is_some_and(|v| v.expose() == "true"),
                    buckets,
                })
            }
            ServiceKind::Queue => ServiceEndpoint::Queue(QueueEndpoint {
                endpoint_url: text("SQS_ENDPOINT")?,
                region: text("SQS_REGION")?,
                credentials: credentials("SQS_ACCESS_KEY_ID", "SQS_SECRET_ACCESS_KEY")?,
                queues: list("SQS_QUEUES")?
                    .into_iter()
                    .map(|name| {
                        let suffix = key_suffix(&name);
                        Ok(QueueInfo {
                            url: text(&format!("SQS_QUEUE_URL_{suffix}"))?,
                            dlq_url: text(&format!("SQS_DLQ_URL_{suffix}"))?,
                            name,
                        })
                    })
                    .collect::<Result<_>>()?,
            }),
        })
    }
}

/// An `http(s)://host[:port]/rest` URL, split where the in-cluster layer needs it.
struct HttpUrl<'a> {
    https: bool,
    host: &'a str,
    port: Option<u16>,
    rest: &'a str,
}

impl<'a> HttpUrl<'a> {
    fn parse(url: &'a str) -> Result<Self> {
        let bad = || Error::internal(format!("`{url}` is not an http(s) URL with a host"));
        let (https, after) = if let Some(after) = url.strip_prefix("https://") {
            (true, after)
        } else if let Some(after) = url.strip_prefix("http://") {
            (false, after)
        } else {
            return Err(bad());
        };
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        // `[::1]:9000` keeps its brackets in the host; the port follows the last `:`
        // after them.
        let port_at = authority
            .rfind(':')
            .filter(|at| !authority[*at..].contains(']'));
        let (host, port) = match port_at {
            Some(at) => (
                &authority[..at],
                Some(authority[at + 1..].parse().map_err(|_| bad())?),
            ),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(HttpUrl {
            https,
            host,
            port,
            rest,
        })
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }

    fn with_authority(&self, host: &str, port: u16) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{host}:{port}{}", self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_endpoints() -> Vec<ServiceEndpoint> {
        vec![
            ServiceEndpoint::Postgres(PostgresEndpoint {
                host: "127.0.0.1".into(),
                port: 15432,
                username: "app".into(),
                password: Secret::new("pw-pg"),
                databases: vec!["dev".into(), "audit-log".into()],
                require_tls: true,
            }),
            ServiceEndpoint::ObjectStore(ObjectStoreEndpoint {
                endpoint_url: "http://127.0.0.1:19000".into(),
                region: "us-east-1".into(),
                credentials: Some(("minio".into(), Secret::new("pw-s3"))),
                path_style: true,
                buckets: vec![
                    ("UPLOADS_V2".into(), "dev-uploads-v2".into()),
                    ("LOGS".into(), "dev-logs".into()),
                ],
            }),
            ServiceEndpoint::Cache(CacheEndpoint {
                host: "127.0.0.1".into(),
                port: 16379,
                password: Secret::new("pw-redis"),
                tls: false,
            }),
            ServiceEndpoint::Queue(QueueEndpoint {
                endpoint_url: "http://127.0.0.1:19324".into(),
                region: "elasticmq".into(),
                credentials: None,
                queues: vec![QueueInfo {
                    name: "jobs".into(),
                    url: "http://127.0.0.1:19324/000000000000/dev-jobs".into(),
                    dlq_url: "http://127.0.0.1:19324/000000000000/dev-jobs-dlq".into(),
                }],
            }),
        ]
    }

    #[test]
    fn outputs_read_back_into_the_endpoint_they_came_from() {
        for endpoint in all_endpoints() {
            let outputs = endpoint.to_outputs();
            let back = ServiceEndpoint::from_outputs(endpoint.kind(), &outputs).unwrap();
            assert_eq!(back.to_outputs(), outputs, "{:?}", endpoint.kind());
        }
    }

    #[test]
    fn a_missing_standard_key_is_a_broken_contract() {
        let outputs = all_endpoints()[0].to_outputs();
        let mut without = Outputs::new();
        for (key, value) in outputs.iter().filter(|(k, _)| *k != "POSTGRES_USER") {
            without.insert_text(key, value.expose());
        }
        let err = ServiceEndpoint::from_outputs(ServiceKind::Postgres, &without).unwrap_err();
        assert!(err.to_string().contains("POSTGRES_USER"), "{err}");
    }

    #[test]
    fn reached_at_moves_every_url_and_keeps_credentials() {
        let [pg, s3, redis, sqs] = <[ServiceEndpoint; 4]>::try_from(all_endpoints()).unwrap();
        let pg = pg.reached_at("postgres.platform-dev.svc", 5432).unwrap();
        assert_eq!(
            pg.to_outputs().require("DATABASE_URL").unwrap(),
            "postgres://app:pw-pg@postgres.platform-dev.svc:5432/dev?sslmode=require"
        );
        let s3 = s3
            .reached_at("object-store.platform-dev.svc", 9000)
            .unwrap();
        let out = s3.to_outputs();
        assert_eq!(
            out.require("S3_ENDPOINT").unwrap(),
            "http://object-store.platform-dev.svc:9000"
        );
        assert_eq!(out.require("S3_SECRET_ACCESS_KEY").unwrap(), "pw-s3");
        assert_eq!(
            redis
                .reached_at("cache.platform-dev.svc", 6379)
                .unwrap()
                .to_outputs()
                .require("REDIS_URL")
                .unwrap(),
            "redis://:pw-redis@cache.platform-dev.svc:6379/0"
        );
        let out = sqs
            .reached_at("queue.platform-dev.svc", 9324)
            .unwrap()
            .to_outputs();
        assert_eq!(
            out.require("SQS_QUEUE_URL_JOBS").unwrap(),
            "http://queue.platform-dev.svc:9324/000000000000/dev-jobs"
        );
        assert_eq!(
            out.require("SQS_DLQ_URL_JOBS").unwrap(),
            "http://queue.platform-dev.svc:9324/000000000000/dev-jobs-dlq"
        );
    }

    #[test]
    fn addresses_and_targets_come_from_the_endpoint() {
        let addresses: Vec<(String, u16)> = all_endpoints()
            .iter()
            .map(|e| e.address().unwrap())
            .collect();
        assert_eq!(addresses[1], ("127.0.0.1".to_string(), 19000));
        let aws = ServiceEndpoint::Queue(QueueEndpoint {
            endpoint_url: "https://sqs.eu-west-1.amazonaws.com".into(),
            region: "eu-west-1".into(),
            credentials: None,
            queues: Vec::new(),
        });
        let target = ClusterTarget::of(&aws).unwrap();
        assert_eq!(target.host, "sqs.eu-west-1.amazonaws.com");
        assert_eq!(target.port, 443);
        assert!(target.ip().is_none());
        assert!(aws.verifies_server_name());
        assert!(!all_endpoints()[0].verifies_server_name());

        let back =
            ClusterTarget::from_outputs(ServiceKind::Queue, &target.to_outputs(ServiceKind::Queue))
                .unwrap();
        assert_eq!(back, target);
        let v6 = ClusterTarget {
            host: "[fd00::3]".into(),
            port: 1,
        };
        assert!(v6.ip().is_some());
        assert!(HttpUrl::parse("ftp://x").is_err());
        assert_eq!(HttpUrl::parse("http://[::1]:9/q").unwrap().port(), 9);
    }
}
