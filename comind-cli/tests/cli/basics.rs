//! Help, usage errors, `init` and completions.

use crate::support::Scratch;

#[test]
fn help_documents_the_exit_codes() {
    let run = Scratch::new().run(&["--help"]);
    assert_eq!(run.code, 0);
    for code in [
        "0    success",
        "1    a phase failed",
        "2    invalid input",
        "3    `plan --detailed-exitcode`",
        "130  cancelled",
    ] {
        assert!(
            run.stdout.contains(code),
            "missing `{code}`:\n{}",
            run.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let scratch = Scratch::new();
    for args in [
        vec!["frobnicate"],
        vec!["up", "--concurrency", "0"],
        vec!["--profile", "gcp", "plan"],
        vec!["up", "--lock-timeout", "soon"],
        vec!["outputs", "--format", "xml"],
    ] {
        let run = scratch.run(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
    }
    assert!(!scratch.state_dir().exists());
}

#[test]
fn init_writes_a_file_that_loads_and_refuses_to_overwrite() {
    let scratch = Scratch::new();
    let run = scratch.run(&["--env", "staging", "--profile", "aws", "init"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let text = std::fs::read_to_string(scratch.path().join("comind.yaml")).unwrap();
    assert!(text.contains("\nenvironment: staging\n"));
    assert!(text.contains("\nprofile: aws\n"));
    assert!(
        text.contains("# engine:"),
        "fields are documented as comments"
    );

    let again = scratch.run(&["init"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("--force"), "{}", again.all());
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("comind.yaml")).unwrap(),
        text,
        "the file was not touched"
    );
    assert_eq!(scratch.run(&["init", "--force"]).code, 0);
}

#[test]
fn completions_are_generated_for_each_shell() {
    let scratch = Scratch::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = scratch.run(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}");
        assert!(run.stdout.contains("comind"), "{shell}");
        assert!(
            run.stdout.contains("outputs"),
            "{shell}: subcommands are completed"
        );
    }
}

#[test]
fn app_new_scaffolds_a_chart_once_keeps_edits_and_refuses_bad_names_writing_nothing() {
    let scratch = Scratch::new();
    let repo = scratch.path().join("gitops");
    let repo_arg = repo.to_str().unwrap();
    let my_app = || {
        scratch.run(&[
            "app",
            "new",
            "my-app",
            "--team",
            "backend",
            "--uses",
            "postgres,cache",
            "--repo",
            repo_arg,
        ])
    };
    let new = my_app();
    assert_eq!(new.code, 0, "{}", new.all());
    let chart = repo.join("apps/backend/my-app/chart");
    for file in [
        "Chart.yaml",
        "values.yaml",
        "values-dev.yaml",
        "templates/deployment.yaml",
    ] {
        assert!(chart.join(file).is_file(), "{file}: {}", new.all());
    }
    let values = std::fs::read_to_string(chart.join("values.yaml")).unwrap();
    assert!(values.contains("platform-cache"), "{values}");
    assert!(
        values.contains("comind-dev-registry:5000/backend/my-app"),
        "{values}"
    );

    let again = my_app();
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("nothing written"), "{}", again.all());
    std::fs::write(chart.join("values.yaml"), "mine\n").unwrap();
    let kept = my_app();
    assert!(
        kept.stdout.contains("kept") && kept.stdout.contains("values.yaml"),
        "{}",
        kept.all()
    );
    assert_eq!(
        std::fs::read_to_string(chart.join("values.yaml")).unwrap(),
        "mine\n"
    );
    let dry = scratch.run(&[
        "app",
        "new",
        "other",
        "--team",
        "backend",
        "--repo",
        repo_arg,
        "--dry-run",
    ]);
    assert!(dry.stdout.contains("would write"), "{}", dry.all());
    assert!(
        !repo.join("apps/backend/other").exists(),
        "a dry run writes nothing"
    );

    let listed = scratch.run(&["app", "list", "--repo", repo_arg]);
    assert_eq!(listed.code, 0, "{}", listed.all());
    assert!(
        listed.stdout.contains("backend-my-app") && listed.stdout.contains("no cluster"),
        "{}",
        listed.all()
    );

    let empty = scratch.path().join("empty");
    for bad in [
        vec!["app", "new", "My_App", "--team", "backend"],
        vec!["app", "new", "ok", "--team", "backend", "--uses", "mongodb"],
    ] {
        let mut args = bad.clone();
        args.extend(["--repo", empty.to_str().unwrap()]);
        let refused = scratch.run(&args);
        assert_eq!(refused.code, 2, "{bad:?}: {}", refused.all());
        assert!(!empty.exists(), "{bad:?} wrote something");
    }
}

/// `app new` for a team the environment does not list: the team is added to
/// `platform.teams` in comind.yaml (comments and layout kept, the file still loads),
/// once; `--dry-run` only says it would.
#[test]
fn app_new_adds_an_unlisted_team_to_the_configuration_once() {
    let scratch = Scratch::new();
    let original = "# our environment\nenvironment: dev\nplatform:\n  teams: [web]  # who ships\n";
    let config = scratch.config(original);
    let repo = scratch.path().join("repo");
    let repo_arg = repo.to_str().unwrap();

    let dry = scratch.run(&[
        "app",
        "new",
        "api",
        "--team",
        "payments",
        "--repo",
        repo_arg,
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout.contains("would add team `payments`"),
        "{}",
        dry.all()
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);

    let new = scratch.run(&[
        "app", "new", "api", "--team", "payments", "--repo", repo_arg,
    ]);
    assert_eq!(new.code, 0, "{}", new.all());
    assert!(
        new.stdout
            .contains("added team `payments` to platform.teams"),
        "{}",
        new.all()
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# our environment\nenvironment: dev\nplatform:\n  teams: [web, payments]  # who ships\n"
    );
    // The edited file is YAML that lists the team.
    let parsed: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        parsed["platform"]["teams"],
        serde_json::json!(["web", "payments"])
    );

    // Listed now: a second app of the team leaves the file alone.
    let again = scratch.run(&[
        "app", "new", "worker", "--team", "payments", "--repo", repo_arg,
    ]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(!again.stdout.contains("platform.teams"), "{}", again.all());
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# our environment\nenvironment: dev\nplatform:\n  teams: [web, payments]  # who ships\n"
    );
}
