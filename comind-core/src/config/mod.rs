//! Configuration: `comind.yaml`, `COMIND_*` environment variables and flags.
//!
//! Loading happens in three layers, later ones winning: the built-in defaults, the
//! file, then overrides (environment variables, then command-line flags). Every value
//! remembers where it came from, so that every problem is reported with the file, line
//! and column (or the variable or flag) and the field, and all problems are reported
//! at once, before anything is touched.
//!
//! ```
//! use comind_core::config::{Config, LoadOptions};
//!
//! let config = Config::from_yaml_str("environment: staging\n", "comind.yaml").unwrap();
//! assert_eq!(config.environment.as_str(), "staging");
//! assert_eq!(config.services.postgres.local.port.get(), 5432);
//!
//! let err = Config::from_yaml_str("environment: Staging\n", "comind.yaml").unwrap_err();
//! assert!(err.to_string().starts_with("comind.yaml:1:1: environment:"));
//! # let _ = LoadOptions::default();
//! ```

mod env;
mod schema;
mod source;
mod template;
mod types;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use schema::*;
pub use source::{Origin, SourceMap};
pub use template::INIT_TEMPLATE;
pub use types::{
    DurationSetting, EnvironmentName, Identifier, ImageRef, MAX_ENVIRONMENT_NAME, Port, Profile,
    Quantity, ResourceName, check_dns_label,
};

/// Whether an EC2 instance type runs on ARM (Graviton): its family carries a `g` after
/// the generation digit (`t4g.large`, `m7gd.xlarge`), x86 families do not (`t3.large`,
/// `m6i.xlarge`). The node group's AMI follows from it.
pub fn is_arm_instance_type(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or_default();
    family
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .contains('g')
}

/// The numbers of a dotted version such as `1.31` or `16.4`, when it has at least
/// `min_parts` parts and every part is a number.
pub fn version_numbers(text: &str, min_parts: usize) -> Option<Vec<u32>> {
    let parts: Option<Vec<u32>> = text.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| p.len() >= min_parts)
}

/// The file name looked for in the working directory when no file is given.
pub const DEFAULT_FILE_NAME: &str = "comind.yaml";

/// Environment variables with the `COMIND_` prefix that are not configuration fields.
pub const RESERVED_ENV_VARS: &[&str] = &[
    "COMIND_CONFIG",
    "COMIND_LOG",
    "COMIND_NO_COLOR",
    // The test suite's switch that turns a missing peer into a failure, and the test
    // support's knobs for the Python and the moto launcher it runs.
    "COMIND_REQUIRE_PEERS",
    "COMIND_PYTHON",
    "COMIND_MOTO_SCRIPT",
];

/// Where the values of a [`Config`] came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    file: Option<PathBuf>,
    source: SourceMap,
    overrides: HashMap<String, Origin>,
    /// What loading noticed but did not reject.
    warnings: Vec<String>,
}

// Origins are metadata: two configurations with the same values are equal wherever the
// values came from.
impl PartialEq for Origins {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Origins {
    fn of(&self, path: &str) -> Origin {
        let mut candidate = path;
        loop {
            if let Some(origin) = self.overrides.get(candidate) {
                return origin.clone();
            }
            match candidate.rfind(['.', '[']) {
                Some(cut) => candidate = &candidate[..cut],
                None => break,
            }
        }
        match (&self.file, self.source.contains(path)) {
            (Some(file), true) => {
                let (line, column) = self.source.locate(path).unwrap_or((1, 1));
                Origin::File {
                    path: file.clone(),
                    line,
                    column,
                }
            }
            _ => Origin::Default,
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending value came from.
    pub origin: Origin,
    /// The field, as a dotted path (`services.postgres.local.port`); empty for the
    /// whole document.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// The configuration is invalid. Holds every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    fn new(problems: Vec<Problem>) -> Self {
        ConfigError { problems }
    }

    /// A single problem.
    pub fn single(origin: Origin, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::new(vec![Problem {
            origin,
            field: field.into(),
            message: message.into(),
        }])
    }

    /// Every problem, in the order found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for crate::Error {
    fn from(err: ConfigError) -> Self {
        let count = err.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        crate::Error::invalid_input(format!("invalid configuration ({count} {noun}):\n{err}"))
            .with_hint("fix the fields named above; nothing was changed")
    }
}

/// An override from outside the file, such as a command-line flag.
#[derive(Debug, Clone)]
pub struct Override {
    /// Where it came from, for messages.
    pub origin: Origin,
    /// The field's dotted path, e.g. `environment`.
    pub path: String,
    /// The value, parsed like a YAML scalar (or a string if that does not fit).
    pub value: String,
}

/// What to load and from where.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The file to read. `None`: `./comind.yaml` if it exists, else only defaults.
    pub file: Option<PathBuf>,
    /// Environment variables to consider (usually `std::env::vars()`); only those with
    /// the `COMIND_` prefix are read.
    pub env: Vec<(String, String)>,
    /// Overrides applied last, such as `--env` and `--profile`.
    pub overrides: Vec<Override>,
}

impl LoadOptions {
    /// Options that read `file` (if any) and the process environment.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        LoadOptions {
            file,
            env: std::env::vars().collect(),
            overrides: Vec::new(),
        }
    }
}

impl Config {
    /// Loads the configuration: defaults, the file, the `COMIND_*` variables, then the
    /// overrides; validates the result.
    ///
    /// # Errors
    /// Every problem found, each with its location and field.
    pub fn load(options: &LoadOptions) -> Result<Config, ConfigError> {
        let mut config = match &options.file {
            Some(path) => {
                Self::read_file(path, Origin::Flag("--config (or COMIND_CONFIG)".into()))?
            }
            None => {
                let default = Path::new(DEFAULT_FILE_NAME);
                if default.is_file() {
                    let origin = Origin::File {
                        path: default.to_path_buf(),
                        line: 1,
                        column: 1,
                    };
                    Self::read_file(default, origin)?
                } else {
                    Config::default()
                }
            }
        };
        let (mut overrides, warnings) = env::overrides_from_env(&options.env);
        overrides.extend(options.overrides.iter().cloned());
        env::apply(&mut config, &overrides)?;
        config.validate()?;
        config.origins.warnings = warnings;
        Ok(config)
    }

    fn read_file(path: &Path, origin: Origin) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::single(
                origin,
                "",
                format!(
                    "cannot read configuration file {}: {e}; check the path, or run \
                     `comind init` to write one",
                    path.display()
                ),
            )
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates a configuration document. `file` names it in messages.
    ///
    /// # Errors
    /// Every problem found, each with its location and field.
    pub fn from_yaml_str(text: &str, file: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let config = Self::parse(text, file.as_ref())?;
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let source = SourceMap::parse(text);
        let mut config = if source.is_empty_document() {
            Config::default()
        } else {
            let deserializer = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize::<_, Config>(deserializer)
                .map_err(|e| yaml_error(&e, &source, file))?
        };
        config.origins = Origins {
            file: Some(file.to_path_buf()),
            source,
            overrides: HashMap::new(),
            warnings: Vec::new(),
        };
        Ok(config)
    }

    /// Runs the checks that span several fields.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::check(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::new(problems))
        }
    }

    /// What loading noticed but did not reject, such as a `COMIND_*` variable that is
    /// not a field path and was ignored. Callers show these to the user.
    pub fn warnings(&self) -> &[String] {
        &self.origins.warnings
    }

    /// Where the value at `path` came from.
    pub fn origin_of(&self, path: &str) -> Origin {
        self.origins.of(path)
    }

    /// A problem about `path`, located where its value came from.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        Problem {
            origin: self.origin_of(path),
            field: path.to_string(),
            message: message.into(),
        }
    }

    /// A problem located at the first of `paths` the user set (file, variable or
    /// flag), else at the first: a check between two fields points at the one the user
    /// wrote.
    pub fn problem_at_set(&self, paths: &[&str], message: impl Into<String>) -> Problem {
        let chosen = paths
            .iter()
            .find(|p| self.origin_of(p) != Origin::Default)
            .or(paths.first())
            .copied()
            .unwrap_or("");
        self.problem(chosen, message)
    }

    /// The file this configuration was read from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.origins.file.as_deref()
    }

    /// The settings of phase `id`, defaults filled in from `engine`.
    pub fn phase_settings(&self, id: &str) -> PhaseSettings {
        let own = self.phases.get(id).cloned().unwrap_or_default();
        PhaseSettings {
            timeout: Some(own.timeout.unwrap_or(self.engine.timeout)),
            retries: Some(own.retries.unwrap_or(self.engine.retries)),
        }
    }

    /// Checks that every key of `phases` names one of `known` phase ids.
    ///
    /// # Errors
    /// One problem per unknown id, at its location.
    pub fn check_phase_ids<'a>(
        &self,
        known: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for id in self.phases.keys() {
            if !known.clone().into_iter().any(|k| k == id) {
                let list: Vec<&str> = known.clone().into_iter().collect();
                problems.push(self.problem(
                    &format!("phases.{id}"),
                    format!(
                        "unknown phase `{id}`; the phases of this profile are: {}",
                        list.join(", ")
                    ),
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::new(problems))
        }
    }

    /// The Docker network of the local profile: `local.network` or `comind-<env>`.
    pub fn local_network(&self) -> String {
        self.local
            .network
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("comind-{}", self.environment))
    }

    /// Whether the local profile makes its own k3d cluster (and registry) for this
    /// environment: on the local profile, unless `local.cluster.enabled` is off or
    /// `gitops.kubeconfig` lays the platform on a cluster Comind did not make.
    pub fn makes_local_cluster(&self) -> bool {
        self.profile == Profile::Local
            && self.local.cluster.enabled
            && self.gitops.kubeconfig.is_none()
    }
}

fn yaml_error(
    err: &serde_path_to_error::Error<serde_yaml_ng::Error>,
    source: &SourceMap,
    file: &Path,
) -> ConfigError {
    let inner = err.inner();
    let text = inner.to_string();
    // serde_yaml_ng appends " at line L column C" and may prefix the field path; the
    // location goes in front and the path comes from serde_path_to_error instead.
    let text = match text.rfind(" at line ") {
        Some(cut) if inner.location().is_some() => &text[..cut],
        _ => text.as_str(),
    };
    let field = err.path().to_string();
    let field = if field == "." { String::new() } else { field };
    // Drop serde_yaml_ng's own path prefix (the field or one of its ancestors).
    let message = match text.split_once(": ") {
        Some((prefix, rest))
            if !prefix.is_empty()
                && (field == prefix
                    || field.starts_with(&format!("{prefix}."))
                    || field.starts_with(&format!("{prefix}["))) =>
        {
            rest.to_string()
        }
        _ => text.to_string(),
    };
    // Prefer the position of the field's key; fall back to where the parser stopped.
    let (line, column) = source
        .locate(&field)
        .filter(|_| !field.is_empty() && source.contains(&field))
        .or_else(|| inner.location().map(|l| (l.line(), l.column())))
        .unwrap_or((1, 1));
    ConfigError::single(
        Origin::File {
            path: file.to_path_buf(),
            line,
            column,
        },
        field,
        message,
    )
}

#[cfg(test)]
mod tests;
