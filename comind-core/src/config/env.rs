//! Overrides from `COMIND_*` environment variables and command-line flags.
//!
//! A variable names a field by its path, upper-cased, with `__` between levels:
//! `COMIND_SERVICES__POSTGRES__LOCAL__PORT=5433` sets `services.postgres.local.port`.
//! `COMIND_ENV` is a short form of `COMIND_ENVIRONMENT`. Values are read like YAML
//! scalars (`5433`, `true`, `[a, b]`); a list may also be written `a,b`.

use serde_json::Value;

use super::{Config, ConfigError, Origin, Override, Problem, RESERVED_ENV_VARS};

const PREFIX: &str = "COMIND_";

/// Variables that are not configuration but share the prefix (test harness knobs).
const RESERVED_PREFIXES: &[&str] = &["COMIND_TEST_"];

/// Maps fields whose keys are free-form (the phase ids under `phases`).
const OPEN_MAPS: &[&str] = &["phases"];

/// The overrides the `COMIND_*` variables in `vars` ask for, and a warning for each
/// variable that is plainly not a field path (an unrelated `COMIND_BIN` of a script),
/// which is ignored rather than failing every command. A variable whose first segment
/// names a section (`COMIND_SERVICES__POSTGRES__PROT`), or that is one typo away from
/// a top-level field (`COMIND_ENVIRONEMNT`), is kept, so its typo is still reported.
pub(super) fn overrides_from_env(vars: &[(String, String)]) -> (Vec<Override>, Vec<String>) {
    let fields = top_level_fields();
    let mut warnings = Vec::new();
    let mut overrides: Vec<Override> = vars
        .iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .filter(|(name, _)| !RESERVED_ENV_VARS.contains(&name.as_str()))
        .filter(|(name, _)| !RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter_map(|(name, value)| {
            let rest = &name[PREFIX.len()..];
            let path = if rest == "ENV" {
                "environment".to_string()
            } else {
                rest.split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".")
            };
            let first = path.split('.').next().unwrap_or_default();
            let plausible = fields.iter().any(|f| f == first)
                || (!path.contains('.') && fields.iter().any(|f| edit_distance(f, first) <= 2));
            if !plausible {
                warnings.push(format!(
                    "ignoring the environment variable {name}: it is not a comind.yaml field \
                     (fields are set as COMIND_<SECTION>__<FIELD>, e.g. \
                     COMIND_SERVICES__POSTGRES__LOCAL__PORT)"
                ));
                return None;
            }
            Some(Override {
                origin: Origin::Env(name.clone()),
                path,
                value: value.clone(),
            })
        })
        .collect();
    // A deterministic order makes the first reported problem stable.
    overrides.sort_by(|a, b| a.path.cmp(&b.path));
    warnings.sort();
    (overrides, warnings)
}

/// The names of the top-level fields of `comind.yaml`.
fn top_level_fields() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Levenshtein distance between two short ASCII names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

pub(super) fn apply(config: &mut Config, overrides: &[Override]) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for item in overrides {
        match apply_one(config, item) {
            Ok(updated) => {
                let origins = std::mem::take(&mut config.origins);
                *config = updated;
                config.origins = origins;
                config
                    .origins
                    .overrides
                    .insert(item.path.clone(), item.origin.clone());
            }
            Err(message) => problems.push(Problem {
                origin: item.origin.clone(),
                field: item.path.clone(),
                message,
            }),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::new(problems))
    }
}

fn apply_one(config: &Config, item: &Override) -> Result<Config, String> {
    let mut tree = serde_json::to_value(config)
        .map_err(|e| format!("cannot represent the configuration: {e}"))?;
    let segments: Vec<&str> = item.path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err("is not a field path".to_string());
    }
    let slot = locate_slot(&mut tree, &segments)?;
    let was_list = slot.is_array();
    let parsed = parse_value(&item.value, was_list);
    *slot = parsed.clone();
    match serde_json::from_value::<Config>(tree.clone()) {
        Ok(updated) => Ok(updated),
        Err(first) => {
            // `123` read as a number may be meant as a string (e.g. a name).
            let as_string = Value::String(item.value.clone());
            if parsed != as_string {
                let slot = locate_slot(&mut tree, &segments)?;
                *slot = as_string;
                if let Ok(updated) = serde_json::from_value::<Config>(tree) {
                    return Ok(updated);
                }
            }
            Err(clean_json_error(&first.to_string()))
        }
    }
}

fn locate_slot<'a>(tree: &'a mut Value, segments: &[&str]) -> Result<&'a mut Value, String> {
    let mut node = tree;
    let mut walked: Vec<&str> = Vec::new();
    for segment in segments {
        let open = walked.len() == 1 && OPEN_MAPS.contains(&walked[0])
            || walked.len() == 2 && OPEN_MAPS.contains(&walked[0]);
        let Value::Object(map) = node else {
            return Err(format!(
                "`{}` is not a section, so it has no field `{segment}`",
                walked.join(".")
            ));
        };
        if !map.contains_key(*segment) {
            if open {
                map.insert((*segment).to_string(), Value::Object(Default::default()));
            } else {
                let mut known: Vec<&String> = map.keys().collect();
                known.sort();
                let known: Vec<&str> = known.into_iter().map(String::as_str).collect();
                let at = if walked.is_empty() {
                    "the top level".to_string()
                } else {
                    format!("`{}`", walked.join("."))
                };
                return Err(format!(
                    "unknown field `{segment}` in {at}; expected one of: {}",
                    known.join(", ")
                ));
            }
        }
        walked.push(segment);
        node = map
            .get_mut(*segment)
            .ok_or_else(|| format!("unknown field `{segment}`"))?;
    }
    Ok(node)
}

fn parse_value(raw: &str, want_list: bool) -> Value {
    let trimmed = raw.trim();
    if want_list && !trimmed.starts_with('[') {
        let items = trimmed
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_string()))
            .collect();
        return Value::Array(items);
    }
    serde_yaml_ng::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn clean_json_error(message: &str) -> String {
    // serde_json appends " at line 0 column 0" for values, which means nothing here.
    match message.find(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message.to_string(),
    }
}
