use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("comind.yaml");
    std::fs::write(&path, text).unwrap();
    Config::load(&LoadOptions {
        file: Some(path),
        env: env(vars),
        overrides: Vec::new(),
    })
}

fn only_problem(err: &ConfigError) -> &Problem {
    assert_eq!(err.problems().len(), 1, "{err}");
    &err.problems()[0]
}

fn line_col(problem: &Problem) -> (usize, usize) {
    match &problem.origin {
        Origin::File { line, column, .. } => (*line, *column),
        other => panic!("expected a file location, got {other}"),
    }
}

#[test]
fn empty_and_missing_files_give_defaults() {
    let config = Config::from_yaml_str("", "comind.yaml").unwrap();
    assert_eq!(config, Config::default());
    let config = Config::from_yaml_str("# nothing\n", "comind.yaml").unwrap();
    assert_eq!(config.environment.as_str(), "dev");
    assert_eq!(config.profile, Profile::Local);
    assert_eq!(config.local_network(), "comind-dev");
}

#[test]
fn init_template_equals_the_defaults() {
    let config = Config::from_yaml_str(INIT_TEMPLATE, "comind.yaml").unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn every_commented_template_line_is_a_valid_field() {
    // Uncommenting every `# key: value` line must still parse: the comments document
    // real fields with their real defaults.
    let uncommented: String = INIT_TEMPLATE
        .lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            let rest = &line[indent..];
            let Some(body) = rest.strip_prefix("# ") else {
                return line.to_string();
            };
            let inner = body.trim_start();
            let key: String = inner
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !key.is_empty() && inner[key.len()..].starts_with(':') {
                format!("{}{}", &line[..indent], body)
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_yaml_str(&uncommented, "comind.yaml")
        .unwrap_or_else(|e| panic!("{e}\n---\n{uncommented}"));
    let mut expected = Config::default();
    expected.aws.region = Some("eu-west-1".to_string());
    expected.aws.endpoint_url = Some("http://127.0.0.1:5000".to_string());
    expected.aws.cluster.access = vec![ClusterAccess {
        principal: "arn:aws:iam::123456789012:role/Developers".to_string(),
        groups: vec!["platform:developer".to_string()],
    }];
    expected.aws.cluster.public_access_cidrs = Some(vec!["203.0.113.0/24".to_string()]);
    expected.aws.cluster.addon_versions = std::collections::BTreeMap::from([(
        "vpc-cni".to_string(),
        "v1.20.4-eksbuild.2".to_string(),
    )]);
    expected.local.network = Some(ResourceName::new("comind-dev").unwrap());
    expected.local.docker_host = Some("unix:///var/run/docker.sock".to_string());
    expected.gitops.domain = Some("comind.pro".to_string());
    expected.state_dir = Some("~/.local/state/comind".into());
    expected.phases.insert(
        "postgres".to_string(),
        PhaseSettings {
            timeout: Some(DurationSetting::minutes(10)),
            retries: Some(5),
        },
    );
    expected.gitops.kubeconfig = Some("~/.kube/config".into());
    expected.gitops.context = Some("my-cluster".to_string());
    expected.platform.teams = vec![ResourceName::new("backend").unwrap()];
    let q = |v: &str| Some(Quantity::new(v).unwrap());
    expected.platform.quota = QuotaSettings {
        requests_cpu: q("4"),
        requests_memory: q("8Gi"),
        limits_cpu: q("8"),
        limits_memory: q("16Gi"),
        pods: Some(50),
    };
    expected.platform.limits = LimitSettings {
        default_request_cpu: q("100m"),
        default_request_memory: q("128Mi"),
        default_cpu: q("500m"),
        default_memory: q("512Mi"),
    };
    assert_eq!(config, expected);
}

#[test]
fn quantities_are_checked() {
    for good in ["500m", "2", "1.5", "512Mi", "4Gi", "100k"] {
        assert!(Quantity::new(good).is_ok(), "{good}");
    }
    for bad in ["", "Gi", "4 Gi", "four", "1.", "-1", "1.5.2"] {
        assert!(Quantity::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn platform_settings_are_checked() {
    let yaml = "environment: dev\nplatform:\n  teams: [backend, argocd, backend, platform-dev]\n  rbac:\n    admin_groups: [system:masters]\ngitops:\n  context: other\n";
    let err = Config::from_yaml_str(yaml, "comind.yaml")
        .unwrap_err()
        .to_string();
    for field in [
        "platform.teams[1]",
        "platform.teams[2]",
        "platform.teams[3]",
        "platform.rbac.admin_groups[0]",
        "gitops.context",
    ] {
        assert!(err.contains(field), "{field} in: {err}");
    }
}

#[test]
fn schedules_and_time_zones_are_checked_wherever_they_are() {
    let yaml = "environment: dev\nplatform:\n  backups:\n    postgres_schedule: daily\n    \
                time_zone: ../etc\nlocal:\n  cluster:\n    registry_gc:\n      schedule: '0 3 * *'\n      \
                time_zone: ''\n";
    let err = Config::from_yaml_str(yaml, "comind.yaml")
        .unwrap_err()
        .to_string();
    for field in [
        "platform.backups.postgres_schedule",
        "platform.backups.time_zone",
        "local.cluster.registry_gc.schedule",
        "local.cluster.registry_gc.time_zone",
    ] {
        assert!(err.contains(field), "{field} in: {err}");
    }
    // Switched off, its schedule is not read.
    let off = "environment: dev\nlocal:\n  cluster:\n    registry_gc:\n      enabled: false\n      \
               schedule: never\n";
    assert!(Config::from_yaml_str(off, "comind.yaml").is_ok());
}

#[test]
fn gitops_settings_are_checked() {
    let fails = |yaml: &str, field: &str, words: &str| {
        let err = Config::from_yaml_str(yaml, "comind.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field) && err.contains(words),
            "`{field}` and `{words}` in: {err}"
        );
    };
    fails(
        "gitops:\n  domain: Comind.PRO\n",
        "gitops.domain",
        "lowercase",
    );
    fails(
        "gitops:\n  argocd:\n    sha256: abc\n",
        "gitops.argocd.sha256",
        "64",
    );
    fails(
        "gitops:\n  argocd:\n    version: v3.4.2\n",
        "gitops.argocd.version",
        "checksum of v3.4.2",
    );
    fails(
        "gitops:\n  argocd:\n    manifest: https://mirror.example/install.yaml\n",
        "gitops.argocd.manifest",
        "sha256",
    );
    fails(
        "gitops:\n  repo:\n    url: https://me:ghp_secret@github.com/o/r.git\n",
        "gitops.repo.url",
        "password",
    );
    fails(
        "gitops:\n  repo:\n    url: https://github.com/o/r.git\n    token_env: A\n    ssh_key_file: k\n",
        "gitops.repo.ssh_key_file",
        "one credential",
    );
    fails(
        "gitops:\n  repo:\n    token_env: A\n",
        "gitops.repo.token_env",
        "no credentials",
    );
    fails(
        "gitops:\n  repo:\n    url: git@github.com:o/r.git\n    token_env: A\n",
        "gitops.repo.url",
        "key",
    );
    fails(
        "gitops:\n  repo:\n    url: https://github.com/o/r.git\n    ssh_known_hosts: /k\n",
        "gitops.repo.ssh_known_hosts",
        "SSH URL",
    );
    fails(
        "gitops:\n  repo:\n    path: ../up\n",
        "gitops.repo.path",
        "relative",
    );
    fails(
        "local:\n  cluster:\n    load_balancer: metallb\ngitops:\n  argocd:\n    enabled: false\n",
        "local.cluster.load_balancer",
        "installed by Argo CD",
    );
    Config::from_yaml_str(
        "local:\n  cluster:\n    load_balancer: metallb\n",
        "comind.yaml",
    )
    .expect("MetalLB is an add-on of the default GitOps layer");
    let aws = "profile: aws\ngitops:\n  kubeconfig: /k\n";
    fails(aws, "gitops.repo.url", "local profile only");
    fails(aws, "gitops.domain", "domain you control");
    fails(aws, "gitops.addons.load_balancer_controller", "clusterName");
    // A checksum makes another release or a mirror acceptable; a local file needs none.
    for ok in [
        "gitops:\n  argocd:\n    version: v3.4.2\n    sha256: 795a3a972224da6a7f9d32c3e946445f062b60fb46028476715affeb688236e3\n",
        "gitops:\n  argocd:\n    manifest: ./install.yaml\n",
        "gitops:\n  repo:\n    url: https://github.com/o/r.git\n    token_file: /run/token\n",
        "gitops:\n  repo:\n    url: ssh://git@git.example.com/o/r.git\n    ssh_key_file: ~/.ssh/deploy\n    ssh_known_hosts: ~/.ssh/known_hosts\n",
        "gitops:\n  repo:\n    url: ssh://git@git.example.com:2222/o/r.git\n",
        "profile: aws\ngitops:\n  kubeconfig: /k\n  argocd:\n    enabled: false\n",
        "profile: aws\ngitops:\n  kubeconfig: /k\n  domain: example.com\n  repo:\n    url: https://github.com/o/r.git\n  addons:\n    load_balancer_controller:\n      values: {clusterName: prod-eks}\n",
    ] {
        Config::from_yaml_str(ok, "comind.yaml").unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn an_eks_version_older_than_the_platform_supports_is_refused() {
    let err = Config::from_yaml_str("aws:\n  cluster:\n    version: \"1.31\"\n", "comind.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("aws.cluster.version") && err.contains("1.33"),
        "{err}"
    );
}

#[test]
fn unknown_field_names_its_place() {
    let err = load_str("services:\n  postgres:\n    prot: 5432\n", &[]).unwrap_err();
    let problem = only_problem(&err);
    assert_eq!(problem.field, "services.postgres.prot");
    assert!(
        problem.message.contains("unknown field `prot`"),
        "{problem}"
    );
    assert_eq!(line_col(problem), (3, 5));
}

#[test]
fn bad_values_name_their_place() {
    let err = load_str("environment: Dev\n", &[]).unwrap_err();
    let problem = only_problem(&err);
    assert_eq!(problem.field, "environment", "{problem:?}");
    assert_eq!(line_col(problem), (1, 1));

    let err = load_str("services:\n  cache:\n    local:\n      port: 99999\n", &[]).unwrap_err();
    let problem = only_problem(&err);
    assert_eq!(problem.field, "services.cache.local.port");
    assert!(problem.message.contains("port 99999 is out of range"));
    assert_eq!(line_col(problem), (4, 7));
}

#[test]
fn cross_field_problems_are_all_reported_with_locations() {
    let text = "\
services:
  postgres:
    enabled: false
  cache:
    local:
      port: 5432
engine:
  concurrency: 0
";
    let err = load_str(text, &[]).unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "engine.concurrency",
            "services.postgres.enabled",
            "services.cache.local.port"
        ],
        "{err}"
    );
    assert_eq!(line_col(&err.problems()[0]), (8, 3));
    assert_eq!(line_col(&err.problems()[1]), (3, 5));
    assert_eq!(line_col(&err.problems()[2]), (6, 7));
    assert!(
        err.problems()[2]
            .message
            .contains("services.postgres.local.port")
    );
}

#[test]
fn env_overrides_win_and_are_named_in_problems() {
    let config = load_str(
        "environment: dev\n",
        &[
            ("COMIND_ENV", "staging"),
            ("COMIND_SERVICES__POSTGRES__LOCAL__PORT", "5433"),
            ("COMIND_SERVICES__OBJECT_STORE__BUCKETS", "backups,media"),
            ("COMIND_PHASES__POSTGRES__TIMEOUT", "5m"),
            ("COMIND_LOG", "debug"),
            ("COMIND_TEST_IMAGES", "x"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    assert_eq!(config.environment.as_str(), "staging");
    assert_eq!(config.services.postgres.local.port.get(), 5433);
    assert_eq!(config.services.object_store.buckets.len(), 2);
    assert_eq!(
        config.phase_settings("postgres").timeout,
        Some(DurationSetting::minutes(5))
    );
    assert_eq!(
        config.origin_of("services.postgres.local.port"),
        Origin::Env("COMIND_SERVICES__POSTGRES__LOCAL__PORT".to_string())
    );

    let err = load_str("", &[("COMIND_SERVICES__POSTGRES__PROT", "1")]).unwrap_err();
    let problem = only_problem(&err);
    assert_eq!(
        problem.origin,
        Origin::Env("COMIND_SERVICES__POSTGRES__PROT".to_string())
    );
    assert!(
        problem.message.contains("unknown field `prot`"),
        "{problem}"
    );

    let err = load_str("", &[("COMIND_SERVICES__CACHE__LOCAL__PORT", "6379")]);
    assert!(err.is_ok());
    let err = load_str("", &[("COMIND_SERVICES__CACHE__LOCAL__PORT", "70000")]).unwrap_err();
    assert!(only_problem(&err).message.contains("out of range"), "{err}");
    let err = load_str("", &[("COMIND_SERVICES__CACHE__LOCAL__PORT", "5432")]).unwrap_err();
    let problem = only_problem(&err);
    assert_eq!(
        problem.origin,
        Origin::Env("COMIND_SERVICES__CACHE__LOCAL__PORT".to_string())
    );
}

#[test]
fn flags_override_environment_variables() {
    let config = Config::load(&LoadOptions {
        file: None,
        env: env(&[("COMIND_ENV", "staging"), ("COMIND_PROFILE", "aws")]),
        overrides: vec![Override {
            origin: Origin::Flag("--env".to_string()),
            path: "environment".to_string(),
            value: "prod".to_string(),
        }],
    })
    .unwrap();
    assert_eq!(config.environment.as_str(), "prod");
    assert_eq!(config.profile, Profile::Aws);
    assert_eq!(
        config.origin_of("environment"),
        Origin::Flag("--env".to_string())
    );
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let err = Config::load(&LoadOptions {
        file: Some("/nonexistent/comind.yaml".into()),
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/comind.yaml"),
        "{err}"
    );
}

#[test]
fn unknown_phase_ids_are_reported_at_their_key() {
    let config = load_str("phases:\n  postgress:\n    retries: 1\n", &[]).unwrap();
    let err = config.check_phase_ids(["postgres", "network"]).unwrap_err();
    let problem = only_problem(&err);
    assert_eq!(line_col(problem), (2, 3));
    assert!(problem.message.contains("unknown phase `postgress`"));
}

#[test]
fn variables_that_are_not_field_paths_are_ignored_with_a_warning() {
    let config = load_str(
        "",
        &[
            ("COMIND_BIN", "/usr/local/bin/comind"),
            ("COMIND_WORKDIR__CACHE", "/tmp"),
            ("COMIND_SERVICES__POSTGRES__LOCAL__PORT", "5433"),
        ],
    )
    .unwrap();
    assert_eq!(config.services.postgres.local.port.get(), 5433);
    assert_eq!(config.warnings().len(), 2, "{:?}", config.warnings());
    assert!(
        config.warnings()[0].contains("COMIND_BIN"),
        "{:?}",
        config.warnings()
    );
    assert!(config.warnings()[1].contains("COMIND_WORKDIR__CACHE"));

    // One typo away from a top-level field, or inside a known section: still an error.
    let err = load_str("", &[("COMIND_ENVIRONEMNT", "staging")]).unwrap_err();
    assert!(
        only_problem(&err).message.contains("unknown field"),
        "{err}"
    );
    let err = load_str("", &[("COMIND_ENGINE__CONCURENCY", "4")]).unwrap_err();
    assert!(
        only_problem(&err).message.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn architectures_and_versions_are_read_the_way_the_providers_use_them() {
    assert!(is_arm_instance_type("t4g.large"));
    assert!(is_arm_instance_type("m7gd.xlarge"));
    assert!(!is_arm_instance_type("t3.large"));
    assert!(!is_arm_instance_type("m6i.xlarge"));
    assert_eq!(version_numbers("1.31", 2), Some(vec![1, 31]));
    assert_eq!(version_numbers("16", 1), Some(vec![16]));
    assert_eq!(version_numbers("16", 2), None);
    assert_eq!(version_numbers("latest", 1), None);
}

#[test]
fn the_aws_providers_rules_are_checked_here_with_their_fields() {
    let fields = |config: &Config| -> Vec<String> {
        config
            .validate()
            .unwrap_err()
            .problems()
            .iter()
            .map(|p| p.field.clone())
            .collect()
    };
    let mut config = Config::default();
    config.aws.vpc.id = Some("vpc-1".into());
    config.aws.vpc.subnet_ids = vec!["subnet-1".into()];
    assert_eq!(fields(&config), ["aws.vpc.subnet_ids"]);

    let mut config = Config::default();
    config.aws.cluster.node_group.min_size = 5;
    assert!(
        fields(&config)
            .iter()
            .any(|f| f.starts_with("aws.cluster.node_group"))
    );

    let mut config = Config::default();
    config.services.postgres.aws.storage_gb = 5;
    assert_eq!(fields(&config), ["services.postgres.aws.storage_gb"]);

    // `down` always keeps the newest final snapshot: `up` restores it.
    let mut config = Config::default();
    config.services.postgres.aws.final_snapshots = 0;
    config.services.cache.aws.final_snapshots = 0;
    assert_eq!(
        fields(&config),
        [
            "services.postgres.aws.final_snapshots",
            "services.cache.aws.final_snapshots"
        ]
    );
}

#[test]
fn cluster_access_endpoint_and_addon_pins_are_checked_with_their_fields() {
    let problems = |text: &str| -> Vec<(String, String)> {
        match Config::from_yaml_str(text, "comind.yaml") {
            Ok(_) => Vec::new(),
            Err(err) => err
                .problems()
                .iter()
                .map(|p| (p.field.clone(), p.message.clone()))
                .collect(),
        }
    };
    let good = "profile: aws\naws:\n  cluster:\n    access:\n      - principal: arn:aws:iam::123456789012:role/Dev\n        groups: [platform:developer]\n      - principal: arn:aws:iam::123456789012:user/ann\n        groups: [platform:readonly, platform:admin]\n    public_access_cidrs: [203.0.113.0/24]\n    addon_versions:\n      vpc-cni: v1.20.4-eksbuild.2\n";
    assert_eq!(problems(good), Vec::new());

    let bad = "profile: aws\naws:\n  cluster:\n    access:\n      - principal: arn:aws:sts::123456789012:assumed-role/Dev/me\n        groups: [system:masters]\n      - principal: arn:aws:iam::123456789012:role/Dev\n        groups: []\n    public_access_cidrs: [203.0.113.0/33]\n    addon_versions:\n      nginx: v1\n      coredns: latest\n";
    let found = problems(bad);
    let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "aws.cluster.access[0].principal",
            "aws.cluster.access[0].groups",
            "aws.cluster.access[1].groups",
            "aws.cluster.public_access_cidrs",
            "aws.cluster.addon_versions.coredns",
            "aws.cluster.addon_versions.nginx",
        ],
        "{found:?}"
    );
    assert!(found[0].1.contains("assumed-role session"), "{found:?}");
    assert!(found[1].1.contains("platform:developer"), "{found:?}");

    // Production names its CIDRs; elsewhere the default is open (doctor warns).
    let prod = problems("profile: aws\nproduction: true\n");
    assert_eq!(prod.len(), 1, "{prod:?}");
    assert_eq!(prod[0].0, "aws.cluster.public_access_cidrs");
    assert!(problems("profile: aws\n").is_empty());
    assert!(
        problems("production: true\n").is_empty(),
        "local: no EKS endpoint"
    );
    let dup = problems(
        "profile: aws\naws:\n  cluster:\n    access:\n      - {principal: 'arn:aws:iam::123456789012:role/A', groups: [platform:admin]}\n      - {principal: 'arn:aws:iam::123456789012:role/A', groups: [platform:readonly]}\n",
    );
    assert_eq!(dup.len(), 1, "{dup:?}");
    assert!(dup[0].1.contains("listed twice"), "{dup:?}");
}

#[test]
fn secrets_manager_is_an_aws_profile_setting() {
    let local = "environment: dev\naws:\n  secret_store: secrets-manager\n";
    let err = Config::from_yaml_str(local, "comind.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("aws.secret_store") && err.contains("profile: aws"),
        "{err}"
    );
    let aws = "environment: dev\nprofile: aws\naws:\n  secret_store: secrets-manager\n";
    let config = Config::from_yaml_str(aws, "comind.yaml").unwrap();
    assert_eq!(config.aws.secret_store, SecretStoreKind::SecretsManager);
    let bad = "environment: dev\nprofile: aws\naws:\n  secret_store: vault\n";
    let err = Config::from_yaml_str(bad, "comind.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secret_store") || err.contains("vault"),
        "{err}"
    );
}
