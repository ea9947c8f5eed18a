//! The `k3d` CLI (v5), driven as a user would: `version`, `cluster create --config
//! FILE`, `cluster start|delete NAME` and `kubeconfig get NAME`. What exists is read
//! from the Docker engine instead ([`super::nodes`]), as `k3d cluster list` itself does.
//! Nothing secret is ever on its command line: the configuration file, which holds the
//! registry's credentials, goes by path.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use comind_core::{Error, Result, Secret};

/// How many lines of k3d's output an error quotes.
const QUOTED_LINES: usize = 12;

/// The `k3d` binary.
#[derive(Debug, Clone)]
pub struct K3d {
    binary: PathBuf,
}

/// Output of one k3d command.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

impl K3d {
    /// The binary at `binary` (a path, or a name looked up on `PATH`).
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        K3d {
            binary: binary.into(),
        }
    }

    /// The binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    async fn run(&self, args: &[&str]) -> Result<Ran> {
        let output = tokio::process::Command::new(&self.binary)
            .args(args)
            // Plain log lines, for the messages Comind quotes.
            .env("LOG_COLORS", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    Error::invalid_input(format!(
                        "the k3d binary `{}` was not found",
                        self.binary.display()
                    ))
                } else {
                    Error::unavailable(format!("cannot run `{}`: {e}", self.binary.display()))
                };
                kind.with_resource("k3d").with_hint(
                    "install k3d v5 (https://k3d.io) or set `local.cluster.k3d` in comind.yaml \
                     to its path",
                )
            })?;
        Ok(Ran {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs `args`; an error quotes the end of k3d's output, with `secrets` masked.
    async fn checked(&self, args: &[&str], resource: &str, secrets: &[&Secret]) -> Result<String> {
        let ran = self.run(args).await?;
        if ran.success {
            return Ok(ran.stdout);
        }
        let mut text = strip_ansi(&format!("{}{}", ran.stdout, ran.stderr));
        for secret in secrets {
            if !secret.expose().is_empty() {
                text = text.replace(secret.expose(), comind_core::secret::REDACTED);
            }
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(QUOTED_LINES)..].join("\n");
        Err(
            Error::unavailable(format!("`k3d {}` failed:\n{tail}", args.join(" ")))
                .with_resource(resource.to_string()),
        )
    }

    /// `k3d version`: the k3d version (`v5.8.3`).
    ///
    /// # Errors
    /// When k3d cannot be run or does not say.
    pub async fn version(&self) -> Result<String> {
        let out = self.checked(&["version"], "k3d", &[]).await?;
        parse_version(&out).ok_or_else(|| {
            Error::invalid_input(format!(
                "`{} version` did not name a k3d version: {}",
                self.binary.display(),
                out.lines().next().unwrap_or_default()
            ))
            .with_resource("k3d")
        })
    }

    /// `k3d cluster create --config FILE`; `secrets` are masked in a failure.
    ///
    /// # Errors
    /// When k3d fails (it removes a half-made cluster itself unless told not to).
    pub async fn create(&self, name: &str, config: &Path, secrets: &[&Secret]) -> Result<()> {
        let path = config.display().to_string();
        self.checked(
            &["cluster", "create", "--config", &path],
            &format!("k3d cluster {name}"),
            secrets,
        )
        .await
        .map(drop)
    }

    /// `k3d cluster start NAME`.
    ///
    /// # Errors
    /// When k3d fails.
    pub async fn start(&self, name: &str) -> Result<()> {
        self.lifecycle("start", name).await
    }

    /// `k3d cluster delete NAME`.
    ///
    /// # Errors
    /// When k3d fails.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.lifecycle("delete", name).await
    }

    async fn lifecycle(&self, verb: &str, name: &str) -> Result<()> {
        self.checked(
            &["cluster", verb, name],
            &format!("k3d cluster {name}"),
            &[],
        )
        .await
        .map(drop)
    }

    /// `k3d kubeconfig get NAME`: the kubeconfig (it holds the admin credentials).
    ///
    /// # Errors
    /// When k3d fails.
    pub async fn kubeconfig(&self, name: &str) -> Result<Secret> {
        self.checked(
            &["kubeconfig", "get", name],
            &format!("k3d cluster {name}"),
            &[],
        )
        .await
        .map(Secret::new)
    }
}

/// `text` without terminal escape sequences (colours), for a k3d that colours anyway.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The k3d version in `k3d version`'s output (`k3d version v5.8.3`).
pub fn parse_version(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("k3d version "))
        .map(|v| v.trim().to_string())
        .filter(|v| v.starts_with('v'))
}

/// Whether `version` is k3d v5.
pub fn is_v5(version: &str) -> bool {
    version.starts_with("v5.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_taken_out_of_quoted_output() {
        assert_eq!(
            strip_ansi("\u{1b}[31mFATA\u{1b}[0m[0000] failed"),
            "FATA[0000] failed"
        );
    }

    #[test]
    fn versions_are_read_from_the_first_line() {
        let out = "k3d version v5.8.3\nk3s version v1.31.5-k3s1 (default)\n";
        assert_eq!(parse_version(out).as_deref(), Some("v5.8.3"));
        assert!(is_v5("v5.8.3"));
        assert!(!is_v5("v4.4.8"));
        assert_eq!(parse_version("something else"), None);
    }
}
