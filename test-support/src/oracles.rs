//! The checkers of `../shared/test-peers`: programs built from the upstream projects'
//! own code that judge what Comind writes. `helm-lite` (Helm's `template` and `lint`)
//! and `sealed-secrets-oracle` (the Sealed Secrets controller's hybrid encryption:
//! `keygen`, `seal`, `unseal`).
//!
//! Each is unpacked once from its `.xz` into a cache directory outside the checkout
//! and checked against the folder's `SHA256SUMS`; a missing or mismatched one is a
//! [`Missing`] peer, so CI fails on it instead of skipping.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::peers::Missing;
use crate::workspace;

/// Helm v3.19's `template` and `lint`.
pub const HELM_LITE: &str = "helm-lite";
/// The Sealed Secrets controller's encryption code.
pub const SEALED_SECRETS: &str = "sealed-secrets-oracle";

const REMEDY: &str = "provide ../shared/test-peers beside the checkout (or set \
                      COMIND_TEST_PEERS), with xz-utils installed";

/// The test-peers folder: `COMIND_TEST_PEERS`, or `../shared/test-peers` beside the
/// checkout (as `scripts/test-env/ensure-kube.sh` finds it).
pub fn test_peers() -> PathBuf {
    std::env::var_os("COMIND_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace::root().join("../shared/test-peers"))
}

/// The checker `name`, unpacked and verified.
pub fn unpacked(name: &str) -> Result<PathBuf, Missing> {
    let peers = test_peers();
    let sums_path = peers.join("SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path)
        .map_err(|e| Missing::new(format!("cannot read {}: {e}", sums_path.display()), REMEDY))?;
    let want = sums
        .lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .find(|(_, file)| file.trim() == name)
        .map(|(sum, _)| sum.to_string())
        .ok_or_else(|| Missing::new(format!("{} lists no {name}", sums_path.display()), REMEDY))?;
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("comind/test-peers/tools");
    let binary = cache.join(format!("{name}-{}", &want[..want.len().min(12)]));
    if binary.is_file() && sha256(&binary)? == want {
        return Ok(binary);
    }
    let packed = peers.join("bin").join(format!("{name}.xz"));
    std::fs::create_dir_all(&cache)
        .map_err(|e| Missing::new(format!("cannot create {}: {e}", cache.display()), REMEDY))?;
    // Unpacked beside its final name and renamed: test binaries running at once never
    // see half a file.
    let partial = cache.join(format!("{name}.{}.partial", std::process::id()));
    let out = Command::new("xz")
        .arg("-dc")
        .arg(&packed)
        .output()
        .map_err(|e| {
            Missing::new(
                format!("cannot run xz on {}: {e}", packed.display()),
                REMEDY,
            )
        })?;
    if !out.status.success() {
        return Err(Missing::new(
            format!(
                "xz -dc {}: {}",
                packed.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            REMEDY,
        ));
    }
    let written = std::fs::File::create(&partial).and_then(|mut f| {
        f.write_all(&out.stdout)?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))
    });
    written
        .map_err(|e| Missing::new(format!("cannot write {}: {e}", partial.display()), REMEDY))?;
    let got = sha256(&partial)?;
    if got != want {
        let _ = std::fs::remove_file(&partial);
        return Err(Missing::new(
            format!(
                "{} does not match SHA256SUMS (got {got}, want {want})",
                packed.display()
            ),
            REMEDY,
        ));
    }
    std::fs::rename(&partial, &binary).map_err(|e| {
        Missing::new(
            format!("cannot move {} into place: {e}", binary.display()),
            REMEDY,
        )
    })?;
    Ok(binary)
}

fn sha256(path: &Path) -> Result<String, Missing> {
    let out = Command::new("sha256sum")
        .arg(path)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Missing::new(format!("cannot run sha256sum: {e}"), REMEDY))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Runs `binary` with `args`, `stdin` on its standard input; its standard output, or
/// its exit status and standard error.
///
/// # Errors
/// A message with the command, its status and its standard error when it fails.
pub fn run(binary: &Path, args: &[&str], stdin: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin)
            .map_err(|e| format!("cannot write to {}: {e}", binary.display()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{} {args:?}: {}: {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
