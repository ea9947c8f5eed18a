//! The one error type at the trait boundary.
//!
//! Every [`Phase`](crate::Phase), [`ServiceBackend`](crate::ServiceBackend) and
//! [`Provider`](crate::Provider) returns [`Error`]. Provider crates wrap their SDK
//! errors once per operation and map them onto an [`ErrorKind`]; the engine reads
//! [`Error::is_transient`] to decide whether to retry, and the CLI reads the kind to
//! choose an exit code. A message always says what failed; [`Error::resource`] says
//! on which resource and [`Error::hint`] what the user can do about it.

use std::fmt;

use serde::Serialize;

/// A `Result` whose error defaults to the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input (arguments, configuration, a request) is wrong; nothing was touched.
    InvalidInput,
    /// A resource that was expected to exist does not.
    NotFound,
    /// The desired state conflicts with what exists (a name taken by something that is
    /// not ours, a lock held by another run).
    Conflict,
    /// The caller is not allowed to do this.
    Permission,
    /// A peer (Docker, AWS, Kubernetes) could not be reached or answered with a server
    /// error.
    Unavailable,
    /// Something did not finish in time.
    Timeout,
    /// The run was cancelled.
    Cancelled,
    /// A bug or an unexpected state.
    Internal,
}

impl ErrorKind {
    /// Whether errors of this kind are worth retrying unless the error says otherwise.
    pub fn is_transient_by_default(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }

    /// The snake_case name used in events and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Permission => "permission",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a kind, a transient flag and context.
///
/// Messages must never contain secret values: build them from names and ids only.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    transient: bool,
    phase: Option<String>,
    resource: Option<String>,
    hint: Option<String>,
    retry_after: Option<std::time::Duration>,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind`; transient by the kind's default.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                transient: kind.is_transient_by_default(),
                phase: None,
                resource: None,
                hint: None,
                retry_after: None,
                source: None,
            }),
        }
    }

    /// Invalid input: arguments, configuration or a request is wrong.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// A resource that should exist does not.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The desired state conflicts with what exists.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Access was denied.
    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permission, message)
    }

    /// A peer is unreachable or failing; transient unless marked otherwise.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Something did not finish in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// The run was cancelled.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }

    /// A bug or an unexpected state.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Marks the error as transient (worth retrying) or permanent.
    #[must_use]
    pub fn transient(mut self, transient: bool) -> Self {
        self.inner.transient = transient;
        self
    }

    /// Names the resource the error is about, e.g. `container comind-dev-postgres`.
    #[must_use]
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.inner.resource = Some(resource.into());
        self
    }

    /// Names the phase the error happened in. The engine sets this when the phase did
    /// not.
    #[must_use]
    pub fn with_phase(mut self, phase: impl Into<String>) -> Self {
        self.inner.phase = Some(phase.into());
        self
    }

    /// Says what the user can do about it.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.inner.hint = Some(hint.into());
        self
    }

    /// Says that a retry cannot succeed before `delay` has passed (a name AWS keeps
    /// reserved for a minute after a delete). Marks the error transient; the engine
    /// waits at least this long before the next attempt.
    #[must_use]
    pub fn retry_after(mut self, delay: std::time::Duration) -> Self {
        self.inner.retry_after = Some(delay);
        self.inner.transient = true;
        self
    }

    /// Attaches the underlying cause. Its `Display` must not contain secrets.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        self.inner.transient
    }

    /// What failed, without context.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The phase the error happened in, if known.
    pub fn phase(&self) -> Option<&str> {
        self.inner.phase.as_deref()
    }

    /// The resource the error is about, if known.
    pub fn resource(&self) -> Option<&str> {
        self.inner.resource.as_deref()
    }

    /// What the user can do about it, if anything.
    pub fn hint(&self) -> Option<&str> {
        self.inner.hint.as_deref()
    }

    /// The least time to wait before retrying, if the peer said so.
    pub fn retry_after_delay(&self) -> Option<std::time::Duration> {
        self.inner.retry_after
    }

    /// A serializable snapshot for events and JSON output.
    pub fn report(&self) -> ErrorReport {
        let mut causes = Vec::new();
        let mut next = self
            .inner
            .source
            .as_deref()
            .map(|s| s as &dyn std::error::Error);
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        ErrorReport {
            kind: self.kind(),
            message: self.inner.message.clone(),
            transient: self.inner.transient,
            phase: self.inner.phase.clone(),
            resource: self.inner.resource.clone(),
            hint: self.inner.hint.clone(),
            causes,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(resource) = &self.inner.resource {
            write!(f, "{resource}: ")?;
        }
        f.write_str(&self.inner.message)?;
        if let Some(source) = &self.inner.source {
            write!(f, ": {source}")?;
        }
        if let Some(hint) = &self.inner.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("transient", &self.inner.transient)
            .field("phase", &self.inner.phase)
            .field("resource", &self.inner.resource)
            .field("hint", &self.inner.hint)
            .field("retry_after", &self.inner.retry_after)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// A serializable view of an [`Error`], as carried by events and JSON output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorReport {
    /// The error kind, snake_case.
    pub kind: ErrorKind,
    /// What failed.
    pub message: String,
    /// Whether it was considered transient.
    pub transient: bool,
    /// The phase, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The resource, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// What to do about it, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The chain of underlying causes, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

impl fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(resource) = &self.resource {
            write!(f, "{resource}: ")?;
        }
        f.write_str(&self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_resource_cause_and_hint() {
        let err = Error::unavailable("cannot reach the Docker daemon")
            .with_resource("docker")
            .with_source(std::io::Error::other("connection refused"))
            .with_hint("start it with `sudo systemctl start docker`");
        assert_eq!(
            err.to_string(),
            "docker: cannot reach the Docker daemon: connection refused \
             (hint: start it with `sudo systemctl start docker`)"
        );
        assert!(err.is_transient());
    }

    #[test]
    fn kinds_default_transience() {
        assert!(!Error::invalid_input("x").is_transient());
        assert!(Error::unavailable("x").is_transient());
        assert!(!Error::unavailable("x").transient(false).is_transient());
        assert!(Error::conflict("x").transient(true).is_transient());
    }

    #[test]
    fn report_round_trips_through_json() {
        let err = Error::timeout("postgres did not become ready")
            .with_phase("postgres")
            .with_source(std::io::Error::other("probe refused"));
        let json = serde_json::to_string(&err.report()).unwrap();
        let back: ErrorReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, err.report());
        assert_eq!(back.kind, ErrorKind::Timeout);
        assert_eq!(back.causes, vec!["probe refused".to_string()]);
    }
}
