//! Measures the engine with phases that only sleep, and prints one JSON line.
//!
//! ```text
//! cargo run --release -p comind-core --example engine_bench -- --dag FILE [--runs K]
//! cargo run --release -p comind-core --example engine_bench -- --synthetic N --shape wide|chain|layered [--runs K]
//! cargo run --release -p comind-core --example engine_bench -- --synthetic 200 --shape layered --work 10-100 --emit-dag
//! ```
//!
//! `--dag` runs a DAG file `{"phases":[{"id":"a","work_ms":100,"deps":[]}, ...]}` and
//! reports `critical_path_ms` (from the file's work), `wall_ms` and `overhead_ms` (wall
//! minus critical path). `--synthetic` runs N phases of zero work (or `--work MIN-MAX`
//! ms) and reports `overhead_per_phase_us`. Figures are medians over `--runs` runs
//! (default 5), each on a fresh engine; the ratio `wall_over_critical` is taken within
//! each run before the median, so machine noise between runs does not skew it.
//! `--emit-dag` prints the generated DAG instead of running it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use comind_core::engine::{Engine, EngineOptions, RunOptions};
use comind_core::testing::test_env;
use comind_core::{
    Applied, DestroyOptions, Destroyed, Operation, Phase, PhaseContext, PhaseId, Plan,
};
use serde::{Deserialize, Serialize};

/// A phase that sleeps for its work and does nothing else, so the measurement is the
/// engine's own overhead plus the sleeps.
struct SleepPhase {
    id: PhaseId,
    deps: Vec<PhaseId>,
    work: Duration,
}

#[async_trait]
impl Phase for SleepPhase {
    fn id(&self) -> PhaseId {
        self.id.clone()
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        self.deps.clone()
    }

    async fn plan(&self, _ctx: &PhaseContext) -> comind_core::Result<Plan> {
        Ok(Plan::default())
    }

    async fn apply(&self, _ctx: &PhaseContext) -> comind_core::Result<Applied> {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        Ok(Applied::default())
    }

    async fn destroy(
        &self,
        _ctx: &PhaseContext,
        _options: DestroyOptions,
    ) -> comind_core::Result<Destroyed> {
        Ok(Destroyed::default())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DagPhase {
    id: String,
    work_ms: u64,
    #[serde(default)]
    deps: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dag {
    phases: Vec<DagPhase>,
}

struct Args {
    dag: Option<String>,
    synthetic: Option<usize>,
    shape: String,
    work: (u64, u64),
    runs: usize,
    concurrency: Option<usize>,
    emit: bool,
    seed: u64,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "engine_bench: {problem}\nusage: engine_bench (--dag FILE | --synthetic N --shape wide|chain|layered) \
         [--work MIN-MAX] [--runs K] [--concurrency N] [--seed S] [--emit-dag]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        dag: None,
        synthetic: None,
        shape: "wide".to_string(),
        work: (0, 0),
        runs: 5,
        concurrency: None,
        emit: false,
        seed: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--dag" => args.dag = Some(value()),
            "--synthetic" => {
                args.synthetic = Some(value().parse().unwrap_or_else(|_| usage("--synthetic N")))
            }
            "--shape" => args.shape = value(),
            "--work" => {
                let v = value();
                let (a, b) = v.split_once('-').unwrap_or((&v, &v));
                args.work = (
                    a.parse().unwrap_or_else(|_| usage("--work MIN-MAX")),
                    b.parse().unwrap_or_else(|_| usage("--work MIN-MAX")),
                );
            }
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| usage("--runs K")),
            "--concurrency" => {
                args.concurrency =
                    Some(value().parse().unwrap_or_else(|_| usage("--concurrency N")))
            }
            "--seed" => args.seed = value().parse().unwrap_or_else(|_| usage("--seed S")),
            "--emit-dag" => args.emit = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if args.dag.is_none() == args.synthetic.is_none() {
        usage("give exactly one of --dag and --synthetic");
    }
    args.runs = args.runs.max(1);
    args
}

fn synthetic(n: usize, shape: &str, work: (u64, u64), seed: u64) -> Dag {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut work_ms = || {
        if work.1 == 0 {
            0
        } else {
            rng.u64(work.0..=work.1)
        }
    };
    let mut phases: Vec<DagPhase> = Vec::with_capacity(n);
    match shape {
        "wide" => {
            for i in 0..n {
                phases.push(DagPhase {
                    id: format!("p{i}"),
                    work_ms: work_ms(),
                    deps: vec![],
                });
            }
        }
        "chain" => {
            for i in 0..n {
                let deps = if i == 0 {
                    vec![]
                } else {
                    vec![format!("p{}", i - 1)]
                };
                phases.push(DagPhase {
                    id: format!("p{i}"),
                    work_ms: work_ms(),
                    deps,
                });
            }
        }
        "layered" => {
            // Layers about as wide as they are many; each phase needs one to three
            // phases of the layer before.
            let width = ((n as f64).sqrt().ceil() as usize).max(1);
            let mut dep_rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
            for i in 0..n {
                let layer = i / width;
                let deps = if layer == 0 {
                    vec![]
                } else {
                    let prev_start = (layer - 1) * width;
                    let count = dep_rng.usize(1..=3);
                    let mut deps: Vec<String> = (0..count)
                        .map(|_| format!("p{}", prev_start + dep_rng.usize(0..width)))
                        .collect();
                    deps.sort();
                    deps.dedup();
                    deps
                };
                phases.push(DagPhase {
                    id: format!("p{i}"),
                    work_ms: work_ms(),
                    deps,
                });
            }
        }
        other => usage(&format!("unknown shape {other}")),
    }
    Dag { phases }
}

fn critical_path_ms(dag: &Dag) -> u64 {
    let index: HashMap<&str, usize> = dag
        .phases
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut memo: Vec<Option<u64>> = vec![None; dag.phases.len()];
    fn finish(
        i: usize,
        dag: &Dag,
        index: &HashMap<&str, usize>,
        memo: &mut Vec<Option<u64>>,
    ) -> u64 {
        if let Some(v) = memo[i] {
            return v;
        }
        let start = dag.phases[i]
            .deps
            .iter()
            .filter_map(|d| index.get(d.as_str()))
            .map(|&j| finish(j, dag, index, memo))
            .max()
            .unwrap_or(0);
        let v = start + dag.phases[i].work_ms;
        memo[i] = Some(v);
        v
    }
    (0..dag.phases.len())
        .map(|i| finish(i, dag, &index, &mut memo))
        .max()
        .unwrap_or(0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

async fn run_once(dag: &Dag, concurrency: Option<usize>) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| usage(&format!("temporary directory: {e}")));
    let env = test_env("bench", dir.path());
    let phases: Vec<Arc<dyn Phase>> = dag
        .phases
        .iter()
        .map(|p| {
            Arc::new(SleepPhase {
                id: PhaseId::new(&p.id),
                deps: p.deps.iter().map(PhaseId::new).collect(),
                work: Duration::from_millis(p.work_ms),
            }) as Arc<dyn Phase>
        })
        .collect();
    let mut options = EngineOptions::default();
    if let Some(c) = concurrency {
        options.concurrency = c.max(1);
    }
    let engine = Engine::new(phases, env, options).unwrap_or_else(|e| usage(&e.to_string()));
    let started = Instant::now();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    let wall = started.elapsed();
    if !report.succeeded() {
        usage("the benchmark run failed");
    }
    (wall, report.summary.critical_path_ms)
}

fn main() {
    let args = parse_args();
    let dag = match (&args.dag, args.synthetic) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| usage(&format!("cannot read {path}: {e}")));
            serde_json::from_str::<Dag>(&text)
                .unwrap_or_else(|e| usage(&format!("{path} is not a DAG file: {e}")))
        }
        (None, Some(n)) => synthetic(n, &args.shape, args.work, args.seed),
        (None, None) => usage("give --dag or --synthetic"),
    };
    if args.emit {
        println!("{}", serde_json::to_string_pretty(&dag).unwrap_or_default());
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("tokio runtime: {e}")));
    let critical = critical_path_ms(&dag);
    let mut walls = Vec::new();
    let mut ratios = Vec::new();
    let mut measured = Vec::new();
    runtime.block_on(async {
        // One warm-up run: the first run pays for thread start-up and page faults.
        run_once(&dag, args.concurrency).await;
        for _ in 0..args.runs {
            let (wall, measured_cp) = run_once(&dag, args.concurrency).await;
            let wall_ms = wall.as_secs_f64() * 1000.0;
            walls.push(wall_ms);
            measured.push(measured_cp as f64);
            if critical > 0 {
                ratios.push(wall_ms / critical as f64);
            }
        }
    });
    let n = dag.phases.len();
    let wall_ms = median(&mut walls);
    let mut line = serde_json::json!({
        "phases": n,
        "runs": args.runs,
        "wall_ms": (wall_ms * 100.0).round() / 100.0,
    });
    if args.dag.is_some() || critical > 0 {
        line["critical_path_ms"] = critical.into();
        line["overhead_ms"] = (((wall_ms - critical as f64) * 100.0).round() / 100.0).into();
        line["wall_over_critical"] = ((median(&mut ratios) * 10000.0).round() / 10000.0).into();
        line["measured_critical_path_ms"] = median(&mut measured).into();
    }
    if args.synthetic.is_some() {
        line["shape"] = args.shape.clone().into();
        let per_phase_us = wall_ms * 1000.0 / n.max(1) as f64;
        line["overhead_per_phase_us"] = ((per_phase_us * 100.0).round() / 100.0).into();
    }
    println!("{line}");
}
