//! Malformed configurations: each is rejected with exit code 2, a message naming the
//! file, line, column (or variable or flag) and field, and nothing touched.

use crate::support::Scratch;

/// One malformed configuration and what its rejection must say.
struct Case {
    name: &'static str,
    yaml: &'static str,
    /// `line:column` in comind.yaml, or another location text (a variable name).
    location: &'static str,
    field: &'static str,
    says: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const fn case(
    name: &'static str,
    yaml: &'static str,
    location: &'static str,
    field: &'static str,
    says: &'static str,
) -> Case {
    Case {
        name,
        yaml,
        location,
        field,
        says,
        env: &[],
    }
}

const CASES: &[Case] = &[
    case(
        "unknown top-level field",
        "enviroment: dev\n",
        "1:1",
        "enviroment",
        "unknown field `enviroment`",
    ),
    case(
        "unknown nested field",
        "services:\n  postgres:\n    prot: 5432\n",
        "3:5",
        "services.postgres.prot",
        "unknown field `prot`",
    ),
    case(
        "uppercase environment name",
        "environment: Dev\n",
        "1:1",
        "environment",
        "`Dev` is not valid",
    ),
    case(
        "environment name too long",
        "environment: abcdefghijklmnopqrstuvwxyz\n",
        "1:1",
        "environment",
        "at most 20",
    ),
    case(
        "environment name starting with a digit",
        "environment: 1dev\n",
        "1:1",
        "environment",
        "must start with a lowercase letter",
    ),
    case(
        "unknown profile",
        "profile: gcp\n",
        "1:1",
        "profile",
        "unknown variant `gcp`",
    ),
    case(
        "port out of range",
        "services:\n  cache:\n    local:\n      port: 70000\n",
        "4:7",
        "services.cache.local.port",
        "port 70000 is out of range",
    ),
    case(
        "port zero",
        "services:\n  postgres:\n    local:\n      port: 0\n",
        "4:7",
        "services.postgres.local.port",
        "port 0 is out of range",
    ),
    case(
        "port not a number",
        "services:\n  queue:\n    local:\n      port: nine\n",
        "4:7",
        "services.queue.local.port",
        "invalid type",
    ),
    case(
        "required postgres disabled",
        "services:\n  postgres:\n    enabled: false\n",
        "3:5",
        "services.postgres.enabled",
        "cannot be disabled",
    ),
    case(
        "required object store disabled",
        "services:\n  object_store:\n    enabled: false\n",
        "3:5",
        "services.object_store.enabled",
        "cannot be disabled",
    ),
    case(
        "two services on one host port",
        "services:\n  cache:\n    local:\n      port: 5432\n",
        "4:7",
        "services.cache.local.port",
        "host port 5432 is also used by `services.postgres.local.port`",
    ),
    case(
        "a service on a cluster port",
        "services:\n  queue:\n    local:\n      port: 6443\n",
        "4:7",
        "services.queue.local.port",
        "also used by `local.cluster.api_port`",
    ),
    case(
        "bucket listed twice",
        "services:\n  object_store:\n    buckets:\n      - backups\n      - backups\n",
        "5:9",
        "services.object_store.buckets[1]",
        "listed twice",
    ),
    case(
        "bucket name not a DNS label",
        "services:\n  object_store:\n    buckets: [Uploads]\n",
        "3:15",
        "services.object_store.buckets[0]",
        "`Uploads` is not valid",
    ),
    case(
        "backup bucket not among the buckets",
        "services:\n  object_store:\n    buckets: [uploads]\n",
        "3:5",
        "services.object_store.buckets",
        "not in `buckets`",
    ),
    case(
        "queue service enabled without queues",
        "services:\n  queue:\n    queues: []\n",
        "3:5",
        "services.queue.queues",
        "no queues are listed",
    ),
    case(
        "queue name reserved for dead letters",
        "services:\n  queue:\n    queues:\n      - jobs-dlq\n",
        "4:9",
        "services.queue.queues[0]",
        "reserved for dead-letter queues",
    ),
    case(
        "max receive count zero",
        "services:\n  queue:\n    max_receive_count: 0\n",
        "3:5",
        "services.queue.max_receive_count",
        "out of range",
    ),
    case(
        "concurrency zero",
        "engine:\n  concurrency: 0\n",
        "2:3",
        "engine.concurrency",
        "out of range",
    ),
    case(
        "duration that does not parse",
        "engine:\n  timeout: soon\n",
        "2:3",
        "engine.timeout",
        "not a duration",
    ),
    case(
        "duration of zero",
        "engine:\n  timeout: 0s\n",
        "2:3",
        "engine.timeout",
        "zero is not allowed",
    ),
    case(
        "image without a tag",
        "services:\n  postgres:\n    local:\n      image: postgres\n",
        "4:7",
        "services.postgres.local.image",
        "has no tag",
    ),
    case(
        "database name not an identifier",
        "services:\n  postgres:\n    databases: [My-DB]\n",
        "3:17",
        "services.postgres.databases[0]",
        "not a valid identifier",
    ),
    case(
        "application role named postgres",
        "services:\n  postgres:\n    user: postgres\n",
        "3:5",
        "services.postgres.user",
        "superuser",
    ),
    case(
        "several databases on the aws profile",
        "profile: aws\nservices:\n  postgres:\n    databases: [app, audit]\n",
        "4:5",
        "services.postgres.databases",
        "the aws profile makes one database",
    ),
    case(
        "aws region malformed",
        "aws:\n  region: europe\n",
        "2:3",
        "aws.region",
        "not an AWS region",
    ),
    case(
        "aws endpoint not a URL",
        "aws:\n  endpoint_url: localhost:5000\n",
        "2:3",
        "aws.endpoint_url",
        "not an http:// or https:// URL",
    ),
    case(
        "node group min above max",
        "aws:\n  cluster:\n    node_group:\n      min_size: 5\n      max_size: 3\n      desired_size: 4\n",
        "4:7",
        "aws.cluster.node_group.min_size",
        "larger than max_size",
    ),
    case(
        "subnets without a VPC",
        "aws:\n  vpc:\n    subnet_ids: [subnet-1, subnet-2]\n",
        "3:5",
        "aws.vpc.subnet_ids",
        "set `aws.vpc.id` too",
    ),
    case(
        "YAML syntax error",
        "environment: \"dev\nprofile: local\n",
        "3:1",
        "",
        "while scanning a quoted scalar",
    ),
    case(
        "document is not a mapping",
        "- a\n- b\n",
        "1:1",
        "",
        "invalid type: sequence",
    ),
    case(
        "RDS engine version that is not a version",
        "services:\n  postgres:\n    aws:\n      engine_version: latest\n",
        "4:7",
        "services.postgres.aws.engine_version",
        "not a PostgreSQL version",
    ),
    case(
        "EKS version that is not a version",
        "aws:\n  cluster:\n    version: latest\n",
        "3:5",
        "aws.cluster.version",
        "not a Kubernetes version",
    ),
    case(
        "node group mixing ARM and x86",
        "aws:\n  cluster:\n    node_group:\n      instance_types: [t3.large, t4g.large]\n",
        "4:7",
        "aws.cluster.node_group.instance_types",
        "mixes ARM (Graviton) and x86",
    ),
    case(
        "node root volume too small",
        "aws:\n  cluster:\n    node_group:\n      disk_gb: 8\n",
        "4:7",
        "aws.cluster.node_group.disk_gb",
        "at least 20 GiB",
    ),
    Case {
        name: "variable overriding with a bad value",
        yaml: "environment: dev\n",
        location: "environment variable COMIND_SERVICES__POSTGRES__LOCAL__PORT",
        field: "services.postgres.local.port",
        says: "out of range",
        env: &[("COMIND_SERVICES__POSTGRES__LOCAL__PORT", "123456")],
    },
    Case {
        name: "variable naming an unknown field",
        yaml: "",
        location: "environment variable COMIND_SERVICES__CACHE__PROT",
        field: "services.cache.prot",
        says: "unknown field `prot`",
        env: &[("COMIND_SERVICES__CACHE__PROT", "1")],
    },
];

#[test]
fn every_malformed_configuration_is_rejected_with_its_location_and_nothing_is_touched() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for case in CASES {
        let scratch = Scratch::new();
        let file = scratch.config(case.yaml);
        for command in ["plan", "up", "down"] {
            let run = scratch.run_with_env(&["-c", file.to_str().unwrap(), command], case.env);
            let location = if case.location.contains(' ') || case.location.is_empty() {
                case.location.to_string()
            } else {
                format!("{}:{}", file.display(), case.location)
            };
            let mut problems = Vec::new();
            if run.code != 2 {
                problems.push(format!("exit code {} (expected 2)", run.code));
            }
            if !run.stderr.contains(&location) {
                problems.push(format!("no location `{location}`"));
            }
            if !case.field.is_empty() && !run.stderr.contains(&format!("{}: ", case.field)) {
                problems.push(format!("no field `{}`", case.field));
            }
            if !run.stderr.contains(case.says) {
                problems.push(format!("does not say `{}`", case.says));
            }
            if scratch.state_dir().exists() {
                problems.push("the state directory was created".to_string());
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{} ({command}): {}\n{}",
                    case.name,
                    problems.join("; "),
                    run.stderr
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let scratch = Scratch::new();
    let file = scratch.config(
        "services:\n  postgres:\n    enabled: false\n  cache:\n    local:\n      port: 5432\nengine:\n  concurrency: 0\n",
    );
    let run = scratch.run(&["-c", file.to_str().unwrap(), "plan"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("3 problems"), "{}", run.all());
    for at in ["3:5", "6:7", "8:3"] {
        assert!(
            run.stderr.contains(&format!("comind.yaml:{at}")),
            "{at}: {}",
            run.all()
        );
    }
}

#[test]
fn flags_are_validated_like_the_file() {
    let scratch = Scratch::new();
    let run = scratch.run(&["--env", "Prod_1", "plan"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("flag --env: environment:"),
        "{}",
        run.all()
    );
    let run = scratch.run(&["-c", "missing.yaml", "plan"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("missing.yaml"), "{}", run.all());
    assert!(!scratch.state_dir().exists());
}

#[test]
fn json_output_reports_configuration_errors_as_one_line() {
    let scratch = Scratch::new();
    let file = scratch.config("environment: Dev\n");
    let run = scratch.run(&["-o", "json", "-c", file.to_str().unwrap(), "up"]);
    assert_eq!(run.code, 2);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.all());
    let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["type"], "error");
    assert_eq!(line["v"], 1);
    assert_eq!(line["error"]["kind"], "invalid_input");
    assert!(
        line["error"]["message"]
            .as_str()
            .unwrap()
            .contains("comind.yaml:1:1")
    );
}

#[test]
fn an_unrelated_comind_variable_is_ignored_with_a_warning_and_a_typo_still_fails() {
    let scratch = Scratch::new();
    // Whatever `outputs` then finds (nothing, or no Docker engine), the variable does
    // not make the configuration invalid (exit 2).
    let run = scratch.run_with_env(&["outputs"], &[("COMIND_BIN", "/usr/local/bin/comind")]);
    assert_ne!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("warning: ignoring the environment variable COMIND_BIN"),
        "{}",
        run.all()
    );
    let run = scratch.run_with_env(&["outputs"], &[("COMIND_ENGINE__RETRIS", "2")]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("COMIND_ENGINE__RETRIS"),
        "{}",
        run.all()
    );
}
