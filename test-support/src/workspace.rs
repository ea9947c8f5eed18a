//! Where the repository is, found from this crate's own manifest directory, so that
//! every test binary finds the test scripts wherever its crate sits in the workspace.

use std::path::{Path, PathBuf};

/// The repository root: the nearest ancestor of the running test's package directory
/// whose `Cargo.toml` declares the `[workspace]`.
///
/// The directory is the one cargo and nextest give the test process
/// (`CARGO_MANIFEST_DIR` at run time), and this crate's own only without it: a build
/// directory shared between checkouts (CI's and a developer's) may hold binaries
/// compiled in the other checkout, whose compile-time path names that one.
///
/// # Panics
/// When no ancestor does (the crate was built outside the Comind workspace).
pub fn root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        manifest_dir
            .ancestors()
            .find(|dir| {
                std::fs::read_to_string(dir.join("Cargo.toml"))
                    .is_ok_and(|manifest| manifest.lines().any(|l| l.trim() == "[workspace]"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no Cargo workspace above {}: comind-test-support is built from the \
                     Comind repository",
                    manifest_dir.display()
                )
            })
            .to_path_buf()
    })
}

/// A file of `scripts/test-env/`, the scripts that prepare the test peers.
pub fn test_env_script(name: &str) -> PathBuf {
    root().join("scripts").join("test-env").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_holds_the_test_scripts() {
        assert!(test_env_script("moto_launcher.py").is_file());
        assert!(root().join("test-support").join("Cargo.toml").is_file());
    }
}
