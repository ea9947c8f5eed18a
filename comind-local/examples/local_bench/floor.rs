//! The floor a cold `up` is measured against: the same four services from the same
//! images doing the same work (a network, a volume per service, the containers, then
//! the role and databases, the buckets, the queues with their dead-letter queues),
//! with plain Docker Engine API calls and protocol polls every 100 ms, and no Comind:
//!
//! - `sequential`: the seed's `make services-setup` done at its best, one service
//!   after another, each polled until it answers its own protocol, then set up;
//! - `parallel`: the four started at once, each then polled and set up (what a
//!   ten-line script gets, and on a machine with few cores a CPU-bound floor).
//!
//! Credentials are fixed and go in environment variables: this is a benchmark's
//! throwaway environment, not a model for the product.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkCreateRequest,
    NetworkingConfig, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

/// How often a service is asked whether it answers.
const POLL: Duration = Duration::from_millis(100);
/// How long a service may take to answer.
const TIMEOUT: Duration = Duration::from_secs(120);
const PASSWORD: &str = "floor-password-1";
const APP_PASSWORD: &str = "floor-app-password-1";

/// One environment of the floor: names and ports of its own.
pub struct Floor {
    /// The prefix of every name, and the network's name.
    pub name: String,
    /// Images by service id.
    pub images: HashMap<&'static str, String>,
    /// Host ports: postgres, s3, s3 console, redis, sqs.
    pub ports: [u16; 5],
    /// The databases to create, owned by the application role.
    pub databases: Vec<String>,
    /// The buckets to create.
    pub buckets: Vec<String>,
    /// The queues to create, each with a `-dlq` dead-letter queue.
    pub queues: Vec<String>,
}

/// One service container: what `docker run` is given.
struct Run<'a> {
    service: &'a str,
    image: &'a str,
    cmd: Option<Vec<&'a str>>,
    env: &'a [(&'a str, &'a str)],
    ports: &'a [(u16, u16)],
    data: &'a str,
}

/// Where one service's time went, from the start of its `docker run`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Until the container was started.
    pub started: Duration,
    /// Until it first answered its protocol.
    pub answered: Duration,
    /// Until its setup was done.
    pub done: Duration,
}

/// How the services are started.
#[derive(Debug, Clone, Copy)]
pub enum Order {
    /// One after another.
    Sequential,
    /// All at once.
    Parallel,
}

impl Floor {
    fn container(&self, service: &str) -> String {
        format!("{}-{service}", self.name)
    }

    /// Brings the four services up in `order`: the wall time, and each service's
    /// timing.
    pub async fn up(
        &self,
        docker: &Docker,
        order: Order,
    ) -> (Duration, Vec<(&'static str, Timing)>) {
        let started = Instant::now();
        docker
            .create_network(NetworkCreateRequest {
                name: self.name.clone(),
                driver: Some("bridge".to_string()),
                ..Default::default()
            })
            .await
            .unwrap();
        let timings = match order {
            Order::Sequential => vec![
                self.postgres(docker).await,
                self.object_store(docker).await,
                self.cache(docker).await,
                self.queue(docker).await,
            ],
            Order::Parallel => {
                let (a, b, c, d) = tokio::join!(
                    self.postgres(docker),
                    self.object_store(docker),
                    self.cache(docker),
                    self.queue(docker)
                );
                vec![a, b, c, d]
            }
        };
        let names = ["postgres", "object-store", "cache", "queue"];
        (started.elapsed(), names.into_iter().zip(timings).collect())
    }

    /// Removes everything `up` made.
    pub async fn down(&self, docker: &Docker) {
        for service in ["postgres", "object-store", "cache", "queue"] {
            let name = self.container(service);
            let _ = docker
                .remove_container(
                    &name,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
            let _ = docker
                .remove_volume(
                    &format!("{name}-data"),
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await;
        }
        let _ = docker.remove_network(&self.name).await;
    }

    /// `docker volume create` and `docker run -d` of `run`.
    async fn run(&self, docker: &Docker, run: Run<'_>) {
        let Run {
            service,
            image,
            cmd,
            env,
            ports,
            data,
        } = run;
        let name = self.container(service);
        let volume = format!("{name}-data");
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let bindings = ports
            .iter()
            .map(|(container, host)| {
                (
                    format!("{container}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_string()),
                        host_port: Some(host.to_string()),
                    }]),
                )
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: cmd.map(|c| c.into_iter().map(str::to_string).collect()),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: Some(ports.iter().map(|(c, _)| format!("{c}/tcp")).collect()),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                mounts: Some(vec![Mount {
                    target: Some(data.to_string()),
                    source: Some(volume),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                network_mode: Some(self.name.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.name.clone(),
                    EndpointSettings {
                        aliases: Some(vec![service.to_string()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .unwrap();
        docker.start_container(&name, None).await.unwrap();
    }

    async fn postgres(&self, docker: &Docker) -> Timing {
        let t0 = Instant::now();
        let port = self.ports[0];
        self.run(
            docker,
            Run {
                service: "postgres",
                image: &self.images["postgres"],
                cmd: None,
                env: &[
                    ("POSTGRES_USER", "comind"),
                    ("POSTGRES_PASSWORD", PASSWORD),
                    ("PGDATA", "/var/lib/postgresql/data"),
                ],
                ports: &[(5432, port)],
                data: "/var/lib/postgresql/data",
            },
        )
        .await;
        let started = t0.elapsed();
        let url = format!(
            "host=127.0.0.1 port={port} user=comind password={PASSWORD} dbname=postgres \
             connect_timeout=3"
        );
        let client = poll(|| async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(connection);
            Some(client)
        })
        .await;
        let answered = t0.elapsed();
        client
            .batch_execute(&format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'"))
            .await
            .unwrap();
        for db in &self.databases {
            client
                .batch_execute(&format!("CREATE DATABASE \"{db}\" OWNER app"))
                .await
                .unwrap();
        }
        Timing {
            started,
            answered,
            done: t0.elapsed(),
        }
    }

    async fn object_store(&self, docker: &Docker) -> Timing {
        let t0 = Instant::now();
        let port = self.ports[1];
        self.run(
            docker,
            Run {
                service: "object-store",
                image: &self.images["minio"],
                cmd: Some(vec!["server", "/data", "--console-address", ":9001"]),
                env: &[
                    ("MINIO_ROOT_USER", "comind-root"),
                    ("MINIO_ROOT_PASSWORD", PASSWORD),
                ],
                ports: &[(9000, port), (9001, self.ports[2])],
                data: "/data",
            },
        )
        .await;
        let started = t0.elapsed();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "comind-root",
                PASSWORD,
                None,
                None,
                "floor",
            ))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(config);
        poll(|| async { s3.list_buckets().send().await.ok() }).await;
        let answered = t0.elapsed();
        for bucket in &self.buckets {
            s3.create_bucket().bucket(bucket).send().await.unwrap();
        }
        Timing {
            started,
            answered,
            done: t0.elapsed(),
        }
    }

    async fn cache(&self, docker: &Docker) -> Timing {
        let t0 = Instant::now();
        let port = self.ports[3];
        self.run(
            docker,
            Run {
                service: "cache",
                image: &self.images["redis"],
                cmd: Some(vec![
                    "redis-server",
                    "--appendonly",
                    "yes",
                    "--requirepass",
                    PASSWORD,
                ]),
                env: &[],
                ports: &[(6379, port)],
                data: "/data",
            },
        )
        .await;
        let started = t0.elapsed();
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}/0");
        let client = redis::Client::open(url).unwrap();
        poll(|| async {
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            let pong: String = redis::cmd("PING").query_async(&mut connection).await.ok()?;
            (pong == "PONG").then_some(())
        })
        .await;
        let answered = t0.elapsed();
        Timing {
            started,
            answered,
            done: t0.elapsed(),
        }
    }

    async fn queue(&self, docker: &Docker) -> Timing {
        let t0 = Instant::now();
        let port = self.ports[4];
        self.run(
            docker,
            Run {
                service: "queue",
                image: &self.images["elasticmq"],
                cmd: None,
                env: &[],
                ports: &[(9324, port)],
                data: "/data",
            },
        )
        .await;
        let started = t0.elapsed();
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "comind", "comind", None, None, "floor",
            ))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .build();
        let sqs = aws_sdk_sqs::Client::from_conf(config);
        poll(|| async { sqs.list_queues().send().await.ok() }).await;
        let answered = t0.elapsed();
        for queue in &self.queues {
            let dlq = sqs
                .create_queue()
                .queue_name(format!("{queue}-dlq"))
                .send()
                .await
                .unwrap();
            let dlq_arn = sqs
                .get_queue_attributes()
                .queue_url(dlq.queue_url().unwrap())
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .unwrap()
                .attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
                .cloned()
                .unwrap();
            sqs.create_queue()
                .queue_name(queue)
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                    format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#),
                )
                .send()
                .await
                .unwrap();
        }
        Timing {
            started,
            answered,
            done: t0.elapsed(),
        }
    }
}

/// Calls `check` every [`POLL`] until it gives a value.
async fn poll<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < TIMEOUT, "a service did not answer");
        tokio::time::sleep(POLL).await;
    }
}
