//! Benchmark of the local profile against the real Docker engine.
//!
//! Each run brings PostgreSQL, MinIO, Redis and ElasticMQ up from nothing on free
//! ports, runs a second `up` on the healthy environment (with a new provider, as a new
//! `comind` process would), then purges everything. It prints one JSON line with the
//! medians over the runs:
//!
//! - `cold_wall_ms`: wall time of the first `up`;
//! - `services.<id>.duration_ms`: each service phase's own time in that run;
//! - `slowest_service_ms` and `wall_over_slowest`: the slowest service and the ratio of
//!   the wall time to it in the same run (1.0 means the services started fully in
//!   parallel; the target is at most 1.15);
//! - `second_up_wall_ms` and `second_up_changes` (targets: under 500 ms, 0);
//! - `services.<id>.steps`: the median time of each step the phase reported
//!   (`inspect`, `image`, `volume`, `create`, `upload`, `start`, `first_answer`,
//!   `setup`, `probe`, `outputs`), to see where a slow service spends it (with
//!   `--cluster`, also `registry_steps` and `cluster_steps`: `inspect`, `create`,
//!   `kubeconfig`, `ready`).
//!
//! Without `--cluster` each round also runs the floor (`floor.rs`): the same services
//! and work with plain Docker API calls and 100 ms protocol polls, one after another
//! (`sequential_ms`, the seed's `make services-setup` at its best) and all at once
//! (`parallel_floor_ms`). The three alternate within a round, in a rotating order, so
//! drift in the machine's load touches each alike; the line has their medians and the
//! ratios `comind_over_sequential` and `comind_over_parallel_floor` (target: at most
//! 1.05). `--load N` keeps N CPU-bound processes running through the whole
//! measurement (the same comparison on a busy machine).
//!
//! With `--cluster` the run is the whole local profile: the registry and the k3d
//! cluster too (and the cluster's floor, `k3d cluster create` of the same configuration
//! alone, alternating with it: `cluster_ms`, `cluster_floor_ms`, `cluster_over_floor`), made by the k3d binary of `--k3d` (default `COMIND_K3D_DOUBLE`, the
//! test double, else `k3d` on PATH; the double needs `KUBEBUILDER_ASSETS`). The line
//! then also has `critical_path_ms` (from the run summary) and
//! `wall_over_critical_path` (target: at most 1.10).
//!
//! ```text
//! cargo run --release -p comind-local --example local_bench -- [--runs N] [--load N]
//!     [--cluster [--k3d PATH]] [--postgres-image REF] [--minio-image REF] [--redis-image REF] [--elasticmq-image REF]
//! ```
//!
//! Images default to the test stand-ins (`comind-test/<service>:r1`, built by
//! `scripts/test-env/build-test-images.sh`), or `COMIND_BENCH_<SERVICE>_IMAGE`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod floor;

use std::collections::BTreeMap;
use std::time::Instant;

use comind_core::event::Event;

use comind_core::config::{Config, EnvironmentName, ImageRef, Port};
use comind_core::engine::RunOptions;
use comind_core::event::RunOutcome;
use comind_core::{Bootstrap, DestroyOptions, DownOptions, Environment, UpOptions};
use comind_local::LocalProvider;

const SERVICES: [&str; 4] = ["postgres", "object-store", "cache", "queue"];

struct Options {
    runs: usize,
    /// CPU-bound processes kept running through the measurement.
    load: usize,
    images: BTreeMap<&'static str, String>,
    /// The k3d binary, when the run includes the cluster.
    k3d: Option<String>,
}

fn options() -> Options {
    let mut images = BTreeMap::new();
    for (flag, var, default) in [
        (
            "postgres",
            "COMIND_BENCH_POSTGRES_IMAGE",
            "comind-test/postgres:r1",
        ),
        ("minio", "COMIND_BENCH_MINIO_IMAGE", "comind-test/minio:r1"),
        ("redis", "COMIND_BENCH_REDIS_IMAGE", "comind-test/redis:r1"),
        (
            "elasticmq",
            "COMIND_BENCH_ELASTICMQ_IMAGE",
            "comind-test/elasticmq:r1",
        ),
    ] {
        images.insert(
            flag,
            std::env::var(var).unwrap_or_else(|_| default.to_string()),
        );
    }
    let mut runs = 3;
    let mut load = 0;
    let mut cluster = false;
    let mut k3d = std::env::var("COMIND_K3D_DOUBLE").unwrap_or_else(|_| "k3d".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--runs" => {
                runs = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--runs takes a number"))
            }
            "--load" => {
                load = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--load takes a number"))
            }
            "--cluster" => cluster = true,
            "--k3d" => k3d = value(),
            "--postgres-image" => drop(images.insert("postgres", value())),
            "--minio-image" => drop(images.insert("minio", value())),
            "--redis-image" => drop(images.insert("redis", value())),
            "--elasticmq-image" => drop(images.insert("elasticmq", value())),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    Options {
        runs: runs.max(1),
        load,
        images,
        k3d: cluster.then_some(k3d),
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("local_bench: {problem}");
    }
    eprintln!(
        "usage: local_bench [--runs N] [--load N] [--cluster [--k3d PATH]] [--postgres-image REF] [--minio-image REF] \
         [--redis-image REF] [--elasticmq-image REF]"
    );
    std::process::exit(2);
}

fn config(name: &str, options: &Options) -> Config {
    let mut config = Config::default();
    config.environment = EnvironmentName::new(name).unwrap();
    config.local.cluster.enabled = options.k3d.is_some();
    // The bench measures the services (and the cluster): Argo CD, and with it the
    // local Git server, are measured by their own tests.
    config.gitops.argocd.enabled = false;
    if let Some(k3d) = &options.k3d {
        config.local.cluster.k3d = k3d.into();
        config.local.cluster.registry_image = ImageRef::new("comind-test/registry:r1").unwrap();
    }
    let image = |key: &str| ImageRef::new(&options.images[key]).unwrap();
    let s = &mut config.services;
    s.postgres.local.image = image("postgres");
    s.object_store.local.image = image("minio");
    s.cache.local.image = image("redis");
    s.queue.local.image = image("elasticmq");
    // Distinct free ports: hold every listener until all are chosen.
    let listeners: Vec<std::net::TcpListener> = (0..9)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap())
        .collect();
    let ports: Vec<Port> = listeners
        .iter()
        .map(|l| Port::new(l.local_addr().unwrap().port()).unwrap())
        .collect();
    drop(listeners);
    s.postgres.local.port = ports[0];
    s.object_store.local.port = ports[1];
    s.object_store.local.console_port = ports[2];
    s.cache.local.port = ports[3];
    s.queue.local.port = ports[4];
    let k = &mut config.local.cluster;
    k.registry_port = ports[5];
    k.api_port = ports[6];
    k.http_port = ports[7];
    k.https_port = ports[8];
    config
}

struct Run {
    cold_wall_ms: f64,
    /// The cluster phase's own time (0 without the cluster).
    cluster_ms: f64,
    /// Each service's steps: name -> milliseconds (summed when a step repeats).
    steps: BTreeMap<String, BTreeMap<String, f64>>,
    critical_path_ms: f64,
    services: BTreeMap<String, f64>,
    slowest_ms: f64,
    ratio: f64,
    second_wall_ms: f64,
    second_changes: usize,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn one_run(options: &Options, index: usize) -> Run {
    let suffix: String = (0..6).map(|_| fastrand::lowercase()).collect();
    let name = format!("bench{index}-{suffix}");
    let state = tempfile::tempdir().unwrap();
    let config = config(&name, options);
    let bootstrap = |config: &Config| {
        Bootstrap::new(Environment::with_state_root(config.clone(), state.path()))
            .with_provider(LocalProvider::new())
    };

    let cold = bootstrap(&config);
    let mut events = cold.events().subscribe();
    let started = Instant::now();
    let report = cold
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    let cold_wall = started.elapsed();
    let mut steps: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    while let Some(record) = events.try_recv() {
        if let Event::PhaseStep {
            phase,
            step,
            duration_ms,
        } = &record.event
        {
            *steps
                .entry(phase.to_string())
                .or_default()
                .entry(step.clone())
                .or_default() += *duration_ms as f64;
        }
    }
    let check = |report: &comind_core::engine::RunReport, what: &str| {
        if report.summary.outcome != RunOutcome::Succeeded {
            let errors: Vec<String> = report
                .summary
                .phases
                .iter()
                .filter_map(|p| p.error.as_ref().map(|e| format!("{}: {e}", p.id)))
                .collect();
            panic!("{what} failed: {}", errors.join("; "));
        }
    };
    check(&report, "the cold up");
    let services: BTreeMap<String, f64> = report
        .summary
        .phases
        .iter()
        .filter(|p| SERVICES.contains(&p.id.as_str()))
        .map(|p| (p.id.to_string(), p.duration_ms as f64))
        .collect();
    let slowest_ms = services.values().copied().fold(0.0, f64::max);

    let warm = bootstrap(&config);
    let started = Instant::now();
    let second = warm
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    let second_wall = started.elapsed();
    check(&second, "the second up");
    let mut slowest: Vec<(u64, &str)> = second
        .summary
        .phases
        .iter()
        .map(|p| (p.duration_ms, p.id.as_str()))
        .collect();
    slowest.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
    slowest.truncate(3);
    eprintln!("  second up: slowest phases (ms) {slowest:?}");

    let purge = RunOptions {
        destroy: DestroyOptions { purge: true },
        ..RunOptions::default()
    };
    let down = bootstrap(&config)
        .down(&purge, &DownOptions::default())
        .await
        .unwrap();
    check(&down, "down --purge");

    Run {
        cold_wall_ms: ms(cold_wall),
        steps,
        critical_path_ms: report.summary.critical_path_ms as f64,
        cluster_ms: report
            .summary
            .phases
            .iter()
            .find(|p| p.id.as_str() == "cluster")
            .map_or(0.0, |p| p.duration_ms as f64),
        ratio: ms(cold_wall) / slowest_ms,
        services,
        slowest_ms,
        second_wall_ms: ms(second_wall),
        second_changes: second.summary.changes,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

/// The median time of each step phase `id` reported, over `runs` (0 in a run that
/// did not take the step).
fn step_medians(runs: &[Run], id: &str) -> serde_json::Value {
    let mut names: Vec<&String> = runs
        .iter()
        .flat_map(|r| r.steps.get(id).into_iter().flat_map(|s| s.keys()))
        .collect();
    names.sort();
    names.dedup();
    let steps: serde_json::Map<String, serde_json::Value> = names
        .into_iter()
        .map(|step| {
            let times = runs
                .iter()
                .map(|r| {
                    r.steps
                        .get(id)
                        .and_then(|s| s.get(step))
                        .copied()
                        .unwrap_or(0.0)
                })
                .collect();
            (step.clone(), serde_json::json!(round(median(times), 1)))
        })
        .collect();
    serde_json::Value::Object(steps)
}

/// One run of the floor in `order`: its wall time in milliseconds, and each
/// service's `started`, `answered` and `done` in milliseconds from its own start.
async fn floor_run(
    options: &Options,
    index: usize,
    order: floor::Order,
) -> (f64, BTreeMap<String, [f64; 3]>) {
    let suffix: String = (0..6).map(|_| fastrand::lowercase()).collect();
    let name = format!("floor{index}-{suffix}");
    // The same names and contents as Comind's run would make for an environment.
    let config = config(&name, options);
    let env = Environment::with_state_root(config.clone(), std::env::temp_dir());
    let s = &config.services;
    let images = ["postgres", "minio", "redis", "elasticmq"]
        .into_iter()
        .map(|k| (k, options.images[k].clone()))
        .collect();
    let floor = floor::Floor {
        name: format!("comind-{name}"),
        images,
        ports: [
            s.postgres.local.port.get(),
            s.object_store.local.port.get(),
            s.object_store.local.console_port.get(),
            s.cache.local.port.get(),
            s.queue.local.port.get(),
        ],
        databases: s
            .postgres
            .databases
            .iter()
            .map(ToString::to_string)
            .collect(),
        buckets: s
            .object_store
            .buckets
            .iter()
            .map(|b| env.resource_name(b.as_str()))
            .collect(),
        queues: s
            .queue
            .queues
            .iter()
            .map(|q| env.resource_name(q.as_str()))
            .collect(),
    };
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let (wall, timings) = floor.up(&docker, order).await;
    floor.down(&docker).await;
    let timings = timings
        .into_iter()
        .map(|(id, t)| (id.to_string(), [ms(t.started), ms(t.answered), ms(t.done)]))
        .collect();
    (ms(wall), timings)
}

/// The medians of the floor's per-service timings over its runs.
fn floor_services(runs: &[BTreeMap<String, [f64; 3]>]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for id in SERVICES {
        let at = |k: usize| {
            round(
                median(
                    runs.iter()
                        .filter_map(|r| r.get(id).map(|t| t[k]))
                        .collect(),
                ),
                1,
            )
        };
        out.insert(
            id.to_string(),
            serde_json::json!({ "started_ms": at(0), "answered_ms": at(1), "done_ms": at(2) }),
        );
    }
    serde_json::Value::Object(out)
}

/// The cluster's floor: `k3d cluster create` of the configuration Comind would write
/// (without the registry, which the floor does not run), on a network of its own,
/// alone: its wall time in milliseconds. Then the cluster and network are removed.
async fn cluster_floor_run(options: &Options, index: usize) -> f64 {
    let suffix: String = (0..6).map(|_| fastrand::lowercase()).collect();
    let name = format!("kfloor{index}-{suffix}");
    let config = config(&name, options);
    let env = Environment::with_state_root(config.clone(), std::env::temp_dir());
    let k3d = options.k3d.clone().unwrap();
    let network = config.local_network();
    let file = tempfile::NamedTempFile::new().unwrap();
    let yaml = comind_local::cluster::config::K3dConfig::render(&env, None)
        .to_yaml()
        .unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let path = file.path().to_path_buf();
    let cluster = comind_local::cluster::config::cluster_name(&env);
    tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["docker", "network", "create", &network]);
        let started = Instant::now();
        run(&[
            &k3d,
            "cluster",
            "create",
            "--config",
            path.to_str().unwrap(),
        ]);
        let wall = ms(started.elapsed());
        run(&[&k3d, "cluster", "delete", &cluster]);
        run(&["docker", "network", "rm", &network]);
        wall
    })
    .await
    .unwrap()
}

/// CPU-bound processes that run until dropped.
struct Load(Vec<std::process::Child>);

impl Load {
    fn start(n: usize) -> Load {
        Load(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::main]
async fn main() {
    let options = options();
    let _load = Load::start(options.load);
    // The services' floor runs without the cluster; with it, the cluster's floor is
    // `k3d cluster create` of the same configuration, alone.
    let with_floor = options.k3d.is_none();
    let mut runs = Vec::new();
    let mut sequential = Vec::new();
    let mut parallel = Vec::new();
    let mut cluster_floor = Vec::new();
    for index in 0..options.runs {
        // 0 = Comind, 1 = sequential, 2 = parallel, 3 = the cluster's floor; rotated
        // each round.
        let modes: Vec<usize> = if with_floor {
            (0..3).map(|k| (k + index) % 3).collect()
        } else if index % 2 == 0 {
            vec![0, 3]
        } else {
            vec![3, 0]
        };
        for mode in modes {
            match mode {
                3 => {
                    let wall = cluster_floor_run(&options, index).await;
                    eprintln!("run {}: k3d cluster create alone {wall:.0} ms", index + 1);
                    cluster_floor.push(wall);
                }
                1 => {
                    let run = floor_run(&options, index, floor::Order::Sequential).await;
                    eprintln!("run {}: sequential floor {:.0} ms", index + 1, run.0);
                    sequential.push(run);
                }
                2 => {
                    let run = floor_run(&options, index, floor::Order::Parallel).await;
                    eprintln!(
                        "run {}: parallel floor {:.0} ms {:?}",
                        index + 1,
                        run.0,
                        run.1
                    );
                    parallel.push(run);
                }
                _ => {
                    let run = one_run(&options, index).await;
                    eprintln!(
                        "run {}: comind cold {:.0} ms (slowest service {:.0} ms, ratio {:.3}), \
                         second up {:.0} ms, {} changes",
                        index + 1,
                        run.cold_wall_ms,
                        run.slowest_ms,
                        run.ratio,
                        run.second_wall_ms,
                        run.second_changes
                    );
                    runs.push(run);
                }
            }
        }
    }
    let services: serde_json::Map<String, serde_json::Value> = SERVICES
        .iter()
        .map(|id| {
            let times = runs.iter().map(|r| r.services[*id]).collect();
            (
                (*id).to_string(),
                serde_json::json!({
                    "duration_ms": round(median(times), 1),
                    "steps": step_medians(&runs, id),
                }),
            )
        })
        .collect();
    let cold = median(runs.iter().map(|r| r.cold_wall_ms).collect());
    let line = serde_json::json!({
        "runs": options.runs,
        "load": options.load,
        "cold_wall_ms": round(cold, 1),
        "services": services,
        "slowest_service_ms": round(median(runs.iter().map(|r| r.slowest_ms).collect()), 1),
        "wall_over_slowest": round(median(runs.iter().map(|r| r.ratio).collect()), 3),
        "second_up_wall_ms": round(median(runs.iter().map(|r| r.second_wall_ms).collect()), 1),
        "second_up_changes": runs.iter().map(|r| r.second_changes).max().unwrap_or(0),
        "images": options.images,
    });
    let mut line = line;
    if with_floor {
        let parallel_services: Vec<_> = parallel.iter().map(|r| r.1.clone()).collect();
        line["parallel_floor_services"] = floor_services(&parallel_services);
        let sequential = median(sequential.into_iter().map(|r| r.0).collect());
        let parallel = median(parallel.into_iter().map(|r| r.0).collect());
        line["sequential_ms"] = serde_json::json!(round(sequential, 1));
        line["parallel_floor_ms"] = serde_json::json!(round(parallel, 1));
        line["comind_over_sequential"] = serde_json::json!(round(cold / sequential, 3));
        line["comind_over_parallel_floor"] = serde_json::json!(round(cold / parallel, 3));
    }
    if let Some(k3d) = &options.k3d {
        line["cluster"] = serde_json::json!(true);
        let floor = median(cluster_floor);
        let cluster = median(runs.iter().map(|r| r.cluster_ms).collect());
        line["cluster_ms"] = serde_json::json!(round(cluster, 1));
        line["cluster_floor_ms"] = serde_json::json!(round(floor, 1));
        line["cluster_over_floor"] = serde_json::json!(round(cluster / floor, 3));
        line["registry_steps"] = step_medians(&runs, "registry");
        line["cluster_steps"] = step_medians(&runs, "cluster");
        line["k3d"] = serde_json::json!(k3d);
        line["critical_path_ms"] = serde_json::json!(round(
            median(runs.iter().map(|r| r.critical_path_ms).collect()),
            1
        ));
        line["wall_over_critical_path"] = serde_json::json!(round(
            median(
                runs.iter()
                    .map(|r| r.cold_wall_ms / r.critical_path_ms)
                    .collect()
            ),
            3
        ));
    }
    println!("{line}");
}
