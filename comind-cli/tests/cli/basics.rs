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
