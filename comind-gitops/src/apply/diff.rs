//! Which fields an apply would change: the live object against the server's dry run of
//! the apply, so defaults and other managers' fields are compared as the server
//! merges them, not as Comind rendered them.

use serde_json::Value;

/// Metadata the server maintains on every write; a change there is not a change of
/// the object.
const SERVER_METADATA: [&str; 7] = [
    "resourceVersion",
    "generation",
    "managedFields",
    "creationTimestamp",
    "uid",
    "selfLink",
    "deletionTimestamp",
];

/// The dotted paths (`spec.hard.pods`, `metadata.labels`) at which `after` differs
/// from `before`, ignoring `status` and the metadata the server maintains. Empty when
/// the apply changes nothing. Lists are compared whole (their path is the list's).
pub fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    walk("", &strip(before), &strip(after), &mut paths);
    paths
}

/// `value` without `status` and server-maintained metadata.
fn strip(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in SERVER_METADATA {
                meta.remove(key);
            }
            // An empty annotation map and no annotations are the same thing.
            if meta
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(serde_json::Map::is_empty)
            {
                meta.remove("annotations");
            }
        }
    }
    value
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => walk(&child, x, y, out),
                    (None, None) => {}
                    _ => out.push(child),
                }
            }
        }
        (a, b) if a == b => {}
        _ => out.push(if path.is_empty() {
            "(whole object)".to_string()
        } else {
            path.to_string()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_real_changes_count() {
        let live = json!({
            "metadata": {"name": "q", "resourceVersion": "1", "managedFields": [1]},
            "spec": {"hard": {"pods": "50", "cpu": "4"}},
            "status": {"used": {"pods": "3"}}
        });
        let same = json!({
            "metadata": {"name": "q", "resourceVersion": "2", "annotations": {}},
            "spec": {"hard": {"cpu": "4", "pods": "50"}},
            "status": {"used": {"pods": "9"}}
        });
        assert!(changed_paths(&live, &same).is_empty());
        let edited = json!({
            "metadata": {"name": "q", "labels": {"a": "b"}},
            "spec": {"hard": {"pods": "60", "cpu": "4", "memory": "1Gi"}}
        });
        assert_eq!(
            changed_paths(&live, &edited),
            vec!["metadata.labels", "spec.hard.memory", "spec.hard.pods"]
        );
    }

    #[test]
    fn lists_are_compared_whole() {
        let a = json!({"rules": [{"verbs": ["get"]}]});
        let b = json!({"rules": [{"verbs": ["get", "list"]}]});
        assert_eq!(changed_paths(&a, &b), vec!["rules"]);
    }
}
