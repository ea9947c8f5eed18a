//! Errors of the Kubernetes API, mapped once onto core's kinds.

use comind_core::{Error, ErrorKind};
use kube::core::Status;

/// `action` on `resource` failed with `err`: 404 is not found, 409 a conflict (with
/// the field manager that holds the fields), 403 permission (with the verb, resource
/// and user the server names), 422 invalid input (with the server's field messages),
/// 429, 5xx and transport failures transient (honouring the server's retry-after).
pub(crate) fn api_error(action: &str, resource: &str, err: kube::Error) -> Error {
    match err {
        kube::Error::Api(status) => status_error(action, resource, &status),
        other => {
            let message = format!("cannot {action}: {other}");
            Error::unavailable(message)
                .with_resource(resource)
                .with_source(other)
                .with_hint("check that the cluster's API server is reachable from here")
        }
    }
}

fn status_error(action: &str, resource: &str, status: &Status) -> Error {
    let causes: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    let mut message = format!("cannot {action}: {}", status.message);
    if !causes.is_empty() && !causes.iter().all(|c| status.message.contains(c.as_str())) {
        message.push_str(&format!(" ({})", causes.join("; ")));
    }
    let retry_after = status
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0);
    let (kind, hint) = match status.code {
        404 => (ErrorKind::NotFound, None),
        409 => (
            ErrorKind::Conflict,
            Some(
                "another field manager owns these fields; Comind does not take them over \
                 unless it means to: change them back, or remove that manager's claim",
            ),
        ),
        401 | 403 => (
            ErrorKind::Permission,
            Some(
                "the kubeconfig's user may not do this: give it cluster-admin (or the \
                 permissions named above) on this cluster",
            ),
        ),
        400 | 422 => (ErrorKind::InvalidInput, None),
        // Server-side apply reports an object that does not fit its schema (a string
        // where a number goes, a malformed quantity) as a 500.
        500 if is_schema_mismatch(&status.message) => (ErrorKind::InvalidInput, None),
        429 => (ErrorKind::Unavailable, None),
        code if code >= 500 => (ErrorKind::Unavailable, None),
        _ => (ErrorKind::Internal, None),
    };
    let mut error = Error::new(kind, message).with_resource(resource);
    if let Some(hint) = hint {
        error = error.with_hint(hint);
    }
    if kind == ErrorKind::Unavailable {
        error = error.transient(true);
        if let Some(seconds) = retry_after {
            error = error.retry_after(std::time::Duration::from_secs(u64::from(seconds)));
        }
    }
    error
}

/// Whether a 500's message is server-side apply refusing an object that does not fit
/// its type.
fn is_schema_mismatch(message: &str) -> bool {
    [
        "failed to create typed patch object",
        "unable to convert unstructured object",
        "failed to convert new object",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Whether `err` is the API's 404.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};

    fn details(causes: Vec<StatusCause>, retry_after_seconds: u32) -> StatusDetails {
        StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes,
            retry_after_seconds,
        }
    }

    fn status(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, "Reason").with_code(code).boxed())
    }

    #[test]
    fn codes_map_onto_kinds() {
        let kind = |code| api_error("apply", "x", status(code, "m")).kind();
        assert_eq!(kind(404), ErrorKind::NotFound);
        assert_eq!(kind(409), ErrorKind::Conflict);
        assert_eq!(kind(403), ErrorKind::Permission);
        assert_eq!(kind(422), ErrorKind::InvalidInput);
        assert_eq!(kind(429), ErrorKind::Unavailable);
        assert_eq!(kind(503), ErrorKind::Unavailable);
        assert!(api_error("apply", "x", status(503, "m")).is_transient());
        assert!(!api_error("apply", "x", status(422, "m")).is_transient());
        let typed = status(
            500,
            "failed to create typed patch object (x): .spec.size: expected numeric",
        );
        assert_eq!(
            api_error("apply", "x", typed).kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn field_messages_and_retry_after_are_kept() {
        let with_cause = details(
            vec![StatusCause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: \"x\": must be a quantity".into(),
                field: "spec.hard.pods".into(),
            }],
            0,
        );
        let err = kube::Error::Api(
            Status::failure("ResourceQuota \"q\" is invalid", "Invalid")
                .with_code(422)
                .with_details(with_cause)
                .boxed(),
        );
        let text = api_error("apply", "ResourceQuota ns/q", err).to_string();
        assert!(text.contains("spec.hard.pods"), "{text}");
        let slow = details(Vec::new(), 7);
        let err = kube::Error::Api(
            Status::failure("slow down", "TooManyRequests")
                .with_code(429)
                .with_details(slow)
                .boxed(),
        );
        let err = api_error("apply", "x", err);
        assert_eq!(
            err.retry_after_delay(),
            Some(std::time::Duration::from_secs(7))
        );
    }
}
