//! Docker Engine errors mapped onto the core error kinds, once per operation.
//!
//! The daemon answers with an HTTP status and a message (`No such container: x`); a
//! transport problem means the daemon is not reachable at all. Each wrapper in this
//! module names the operation and the resource, so every error reads like
//! `container comind-dev-postgres: cannot start: Docker responded with status code
//! 500: ...`.

use bollard::errors::Error as BollardError;
use comind_core::{Error, ErrorKind};

/// How to start a Docker daemon that is not running.
pub(crate) const START_DOCKER_HINT: &str = "start the Docker daemon (`sudo systemctl start docker`, \
     or `sudo dockerd &` where systemd is not available), or point `local.docker_host` in \
     comind.yaml (or DOCKER_HOST) at a running one";

/// The HTTP status of a daemon answer, if the error is one.
pub(crate) fn status_of(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The daemon's message, if the error is an answer of the daemon.
pub(crate) fn message_of(err: &BollardError) -> Option<&str> {
    match err {
        BollardError::DockerResponseServerError { message, .. } => Some(message),
        BollardError::DockerStreamError { error } => Some(error),
        _ => None,
    }
}

/// Whether the daemon said the object does not exist.
pub(crate) fn is_not_found(err: &BollardError) -> bool {
    status_of(err) == Some(404)
}

/// Whether the error means the daemon could not be reached at all (as opposed to an
/// answer it gave).
pub(crate) fn is_unreachable(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::SocketNotFoundError(_)
            | BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::HttpClientError { .. }
    )
}

/// Maps a bollard error of `action` (`start`, `create`, `remove`) on `resource`
/// (`container comind-dev-postgres`) onto a core error.
///
/// - 404: not found; 409: conflict; 400: invalid input (the request was wrong);
///   401/403: permission;
/// - 5xx, an unreachable daemon, a timeout: unavailable and transient, except an
///   unreachable daemon, which needs the user to start it;
/// - anything else (an answer that could not be decoded): internal.
pub(crate) fn docker_error(action: &str, resource: &str, err: BollardError) -> Error {
    let message = format!("cannot {action}");
    let error = match &err {
        BollardError::DockerResponseServerError { status_code, .. } => {
            let kind = match status_code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                400 => ErrorKind::InvalidInput,
                401 | 403 => ErrorKind::Permission,
                500..=599 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            };
            Error::new(kind, message)
        }
        BollardError::RequestTimeoutError => Error::new(
            ErrorKind::Timeout,
            format!("{message}: the Docker daemon did not answer in time"),
        )
        .transient(true),
        BollardError::DockerStreamError { .. } => Error::unavailable(message),
        _ if is_unreachable(&err) => {
            Error::unavailable(format!("{message}: the Docker daemon is not reachable"))
                // Retrying does not start a daemon; the user has to.
                .transient(false)
                .with_hint(START_DOCKER_HINT)
        }
        _ => Error::internal(message),
    };
    error.with_resource(resource).with_source(err)
}

/// A resource label for errors: `container comind-dev-postgres`.
pub(crate) fn resource(kind: &str, name: &str) -> String {
    format!("{kind} {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    #[test]
    fn statuses_map_onto_kinds() {
        let cases = [
            (404, ErrorKind::NotFound, false),
            (409, ErrorKind::Conflict, false),
            (400, ErrorKind::InvalidInput, false),
            (403, ErrorKind::Permission, false),
            (500, ErrorKind::Unavailable, true),
            (503, ErrorKind::Unavailable, true),
        ];
        for (status, kind, transient) in cases {
            let err = docker_error("start", "container x", server(status, "boom"));
            assert_eq!(err.kind(), kind, "status {status}");
            assert_eq!(err.is_transient(), transient, "status {status}");
            assert_eq!(err.resource(), Some("container x"));
            assert!(err.to_string().contains("boom"), "{err}");
        }
    }

    #[test]
    fn an_unreachable_daemon_says_how_to_start_it() {
        let err = docker_error(
            "connect",
            "docker",
            BollardError::SocketNotFoundError("/var/run/docker.sock".into()),
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(!err.is_transient());
        assert!(
            err.hint()
                .unwrap_or_default()
                .contains("systemctl start docker")
        );
        assert!(is_unreachable(&BollardError::SocketNotFoundError(
            String::new()
        )));
    }
}
