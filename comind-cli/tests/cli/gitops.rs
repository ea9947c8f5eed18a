//! `comind gitops init`: the GitOps repository's layout, written idempotently. Needs
//! nothing but the binary (`gitops push` needs the Git server: see `local`).

use serde_json::Value;

use crate::support::Scratch;

#[test]
fn gitops_init_writes_the_layout_once_and_keeps_edits() {
    let scratch = Scratch::new();
    scratch.config("environment: staging\ngitops:\n  repo:\n    path: deploy\n");
    let dir = scratch.path().join("repo");
    let first = scratch.run(&["gitops", "init", dir.to_str().unwrap()]);
    assert_eq!(first.code, 0, "{}", first.all());
    for file in [
        "deploy/README.md",
        "deploy/envs/staging/README.md",
        "deploy/apps/README.md",
    ] {
        assert!(dir.join(file).is_file(), "{file}: {}", first.all());
        assert!(
            first
                .stdout
                .contains(&format!("wrote {}", dir.join(file).display())),
            "{}",
            first.all()
        );
    }
    let top = std::fs::read_to_string(dir.join("deploy/README.md")).unwrap();
    assert!(top.contains("`deploy/envs/staging/`"), "{top}");
    assert!(top.contains("`deploy/apps/<team>/<app>/`"), "{top}");

    // Again: nothing written.
    let again = scratch.run(&["-o", "json", "gitops", "init", dir.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{}", again.all());
    let line: Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!(line["written"].as_array().unwrap().len(), 0, "{line}");
    assert_eq!(line["unchanged"].as_array().unwrap().len(), 3, "{line}");

    // An edited file is kept and reported.
    let edited = dir.join("deploy/apps/README.md");
    std::fs::write(&edited, "# our apps\n").unwrap();
    let kept = scratch.run(&["gitops", "init", dir.to_str().unwrap()]);
    assert_eq!(kept.code, 0, "{}", kept.all());
    assert!(
        kept.stdout.contains(&format!("kept {}", edited.display())),
        "{}",
        kept.all()
    );
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "# our apps\n");
}

#[test]
fn gitops_init_refuses_a_file_for_a_directory() {
    let scratch = Scratch::new();
    let file = scratch.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let run = scratch.run(&["gitops", "init", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("is a file"), "{}", run.all());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}
