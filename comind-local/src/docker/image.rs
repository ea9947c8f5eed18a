//! Images: is it here, and pulling it when it is not, with progress.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::CreateImageOptionsBuilder;
use comind_core::{Error, ErrorKind, PhaseContext, Result};
use futures_util::StreamExt;

use super::DockerClient;
use super::error::{docker_error, is_not_found, message_of, resource, status_of};

/// Progress events are sent at most this often while pulling.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// A pull that reports nothing for this long is stalled (a registry or DNS server
/// that never answers); a slow but moving pull is bounded only by the phase timeout.
const PULL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// `reference` with an explicit tag: pulling a repository without one would pull
/// every tag of it.
pub(crate) fn with_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// Bytes pulled so far, per layer, from the pull stream's progress details.
#[derive(Debug, Default)]
pub(crate) struct PullProgress {
    layers: HashMap<String, (u64, u64)>,
}

impl PullProgress {
    /// Records one item of the pull stream.
    pub(crate) fn record(
        &mut self,
        id: Option<&str>,
        status: Option<&str>,
        current: Option<i64>,
        total: Option<i64>,
    ) {
        let Some(id) = id else { return };
        let entry = self.layers.entry(id.to_string()).or_default();
        match status {
            Some("Downloading") => {
                if let (Some(current), Some(total)) = (current, total) {
                    let total = u64::try_from(total).unwrap_or(0);
                    *entry = (u64::try_from(current).unwrap_or(0).min(total), total);
                }
            }
            // A finished or already present layer counts as complete.
            Some("Download complete" | "Pull complete" | "Already exists") => {
                entry.0 = entry.1;
            }
            _ => {}
        }
    }

    /// (bytes done, bytes known) over every layer seen.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        self.layers
            .values()
            .fold((0, 0), |(d, t), (done, total)| (d + done, t + total))
    }

    /// The fraction done, once sizes are known.
    pub(crate) fn fraction(&self) -> Option<f64> {
        let (done, total) = self.bytes();
        #[allow(clippy::cast_precision_loss)] // a progress bar needs no more precision
        (total > 0).then(|| done as f64 / total as f64)
    }
}

impl DockerClient {
    /// Whether the image `reference` is present locally.
    pub(crate) async fn has_image(&self, reference: &str) -> Result<bool> {
        let docker = self.docker().await?;
        match docker.inspect_image(&with_tag(reference)).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(docker_error("inspect", &resource("image", reference), e)),
        }
    }

    /// Pulls `reference` unless it is present, reporting progress on `ctx`. Returns
    /// whether it pulled. `field` is the configuration field that names the image,
    /// for the hint when the pull fails.
    pub(crate) async fn ensure_image(
        &self,
        ctx: &PhaseContext,
        reference: &str,
        field: &str,
    ) -> Result<bool> {
        if self.has_image(reference).await? {
            return Ok(false);
        }
        let docker = self.docker().await?;
        let tagged = with_tag(reference);
        let started = Instant::now();
        ctx.progress(format!("pulling image {tagged}"));
        let mut stream = docker.create_image(
            Some(CreateImageOptionsBuilder::new().from_image(&tagged).build()),
            None,
            None,
        );
        let mut progress = PullProgress::default();
        let mut last_report = Instant::now();
        loop {
            let next = tokio::time::timeout(PULL_IDLE_TIMEOUT, stream.next())
                .await
                .map_err(|_| {
                    Error::timeout(format!(
                        "cannot pull: nothing was received for {}s",
                        PULL_IDLE_TIMEOUT.as_secs()
                    ))
                    .with_resource(resource("image", &tagged))
                    .with_hint(pull_hint(field))
                })?;
            let Some(item) = next else { break };
            // Dropping the stream is safe: the daemon finishes or abandons the pull.
            ctx.checkpoint()?;
            let info = item.map_err(|e| pull_error(&tagged, field, e))?;
            if let Some(detail) = &info.error_detail {
                let message = detail.message.clone().unwrap_or_default();
                return Err(Error::unavailable(format!("cannot pull: {message}"))
                    .transient(false)
                    .with_resource(resource("image", &tagged))
                    .with_hint(pull_hint(field)));
            }
            let (current, total) = info
                .progress_detail
                .as_ref()
                .map_or((None, None), |d| (d.current, d.total));
            progress.record(info.id.as_deref(), info.status.as_deref(), current, total);
            if last_report.elapsed() >= PROGRESS_EVERY
                && let Some(fraction) = progress.fraction()
            {
                last_report = Instant::now();
                let (done, total) = progress.bytes();
                ctx.progress_fraction(
                    format!("pulling image {tagged}: {} of {} MB", mb(done), mb(total)),
                    fraction,
                );
            }
        }
        let (done, total) = progress.bytes();
        ctx.progress_fraction(
            format!(
                "pulled image {tagged} ({} of {} MB) in {:.1}s",
                mb(done),
                mb(total),
                started.elapsed().as_secs_f64()
            ),
            1.0,
        );
        Ok(true)
    }
}

fn mb(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // shown with one decimal
    let mb = bytes as f64 / 1_000_000.0;
    format!("{mb:.1}")
}

fn pull_hint(field: &str) -> String {
    format!(
        "check the image name and that this machine can reach its registry; to use a \
         mirror or a private registry, set `{field}` in comind.yaml"
    )
}

/// A failed pull says which image, why, and how to point at another registry. It is
/// permanent: a registry that cannot be reached or does not know the image does not
/// fix itself within the engine's retries.
fn pull_error(image: &str, field: &str, err: bollard::errors::Error) -> Error {
    let kind = match status_of(&err) {
        Some(404) => ErrorKind::NotFound,
        Some(401 | 403) => ErrorKind::Permission,
        _ => ErrorKind::Unavailable,
    };
    let reason = match message_of(&err) {
        Some(message) => message.to_string(),
        None => err.to_string(),
    };
    Error::new(kind, format!("cannot pull: {reason}"))
        .transient(false)
        .with_resource(resource("image", image))
        .with_hint(pull_hint(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_a_tag_unless_they_have_one() {
        assert_eq!(with_tag("redis"), "redis:latest");
        assert_eq!(with_tag("redis:7"), "redis:7");
        assert_eq!(
            with_tag("127.0.0.1:5000/x/redis"),
            "127.0.0.1:5000/x/redis:latest"
        );
        assert_eq!(
            with_tag("127.0.0.1:5000/x/redis:r1"),
            "127.0.0.1:5000/x/redis:r1"
        );
        assert_eq!(with_tag("redis@sha256:abc"), "redis@sha256:abc");
    }

    #[test]
    fn a_failed_pull_names_the_image_once_and_the_override() {
        let err = pull_error(
            "registry.example/x:1",
            "services.cache.local.image",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "manifest unknown".into(),
            },
        );
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "image registry.example/x:1: cannot pull: manifest unknown (hint: check the image \
             name and that this machine can reach its registry; to use a mirror or a private \
             registry, set `services.cache.local.image` in comind.yaml)"
        );
    }

    #[test]
    fn progress_adds_up_layers() {
        let mut p = PullProgress::default();
        p.record(Some("a"), Some("Pulling fs layer"), None, None);
        p.record(Some("a"), Some("Downloading"), Some(50), Some(100));
        p.record(Some("b"), Some("Downloading"), Some(0), Some(300));
        assert_eq!(p.bytes(), (50, 400));
        p.record(Some("a"), Some("Download complete"), None, None);
        assert_eq!(p.bytes(), (100, 400));
        assert_eq!(p.fraction(), Some(0.25));
        p.record(None, Some("Digest: sha256:x"), None, None);
        assert_eq!(p.bytes(), (100, 400));
    }
}
