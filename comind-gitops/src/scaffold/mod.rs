//! `comind app new`: an application scaffolded into the GitOps repository as a Helm
//! chart, which the ApplicationSet of `platform/gitops` turns into an Argo CD
//! Application `<team>-<app>` in namespace `<team>`. Pure file generation: no cluster.
//!
//! It writes `<path>/apps/<team>/<app>/chart/`:
//!
//! - `Chart.yaml` (apiVersion v2, version 0.1.0, appVersion the image's tag);
//! - `values.yaml` and a `values-<env>.yaml` per environment: one replica and no
//!   autoscaler outside production, as the seed scales its environments; in
//!   production an HPA from 2 to 10 replicas at 70% CPU;
//! - `templates/`: a Deployment (non-root, read-only root filesystem, every capability
//!   dropped, no privilege escalation, liveness and readiness probes, requests and
//!   limits, `envFrom` the platform services' Secrets `platform-<service>` that
//!   `--uses` names), a Service, an Ingress (`ingressClassName` and host of the
//!   profile: `traefik` and `<app>.<env>.127.0.0.1.nip.io` locally, `alb` and
//!   `<app>.<domain>` on AWS), the HorizontalPodAutoscaler, a ServiceAccount, a
//!   NetworkPolicy admitting the ingress controller and letting the Pods reach DNS
//!   and the platform services, `_helpers.tpl` and `NOTES.txt`.
//!
//! Names are checked (DNS-1123 labels, and `<team>-<app>` fits an Application's and a
//! Service's name) before anything is written. A second run with the same options
//! changes nothing; a file the user edited is kept and named unless forced.

mod teams;
mod templates;

pub use teams::{TeamListing, add_team, list_team};

use std::path::{Path, PathBuf};

use comind_core::config::Profile;
use comind_core::{Environment, Error, Result, ServiceKind};

use crate::platform::ingress;
use crate::repository::{self, Initialized, Overwrite};

/// What to scaffold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// The application's name.
    pub name: String,
    /// Its team: the namespace it is deployed into.
    pub team: String,
    /// Its container image (`repository:tag`).
    pub image: String,
    /// The port it listens on.
    pub port: u16,
    /// The environments it gets values for.
    pub environments: Vec<String>,
    /// The platform services whose Secrets it reads.
    pub uses: Vec<ServiceKind>,
}

/// The longest `<team>-<app>`: an Application's and a Service's name is a DNS-1123
/// label (63 characters).
const MAX_COMBINED: usize = 63;

fn check_label(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "the {what} `{value}` is not a DNS-1123 label: lowercase letters, digits and `-`, \
             starting with a letter, at most 63 characters"
        ))
        .with_hint(format!("choose another {what}")))
    }
}

impl AppSpec {
    /// Checks the names, the image and the port.
    ///
    /// # Errors
    /// `InvalidInput` naming what is wrong; nothing is written then.
    pub fn check(&self) -> Result<()> {
        check_label("application name", &self.name)?;
        check_label("team", &self.team)?;
        for env in &self.environments {
            check_label("environment", env)?;
        }
        let combined = self.name.len() + 1 + self.team.len();
        if combined > MAX_COMBINED {
            return Err(Error::invalid_input(format!(
                "`{}-{}` (the Application's name) is {combined} characters; at most {MAX_COMBINED}",
                self.team, self.name
            ))
            .with_hint("shorten the application's or the team's name"));
        }
        if self.image.trim().is_empty() || self.image.contains(char::is_whitespace) {
            return Err(Error::invalid_input(format!(
                "`{}` is not an image reference",
                self.image
            ))
            .with_hint("pass `--image repository:tag`"));
        }
        if self.port == 0 {
            return Err(
                Error::invalid_input("port 0 is not a port").with_hint("pass `--port` 1 to 65535")
            );
        }
        if self.environments.is_empty() {
            return Err(Error::invalid_input("no environment to scaffold for")
                .with_hint("pass `--env NAME`"));
        }
        Ok(())
    }

    /// The image's tag (`latest` when it names none).
    fn tag(&self) -> &str {
        let last = self.image.rsplit('/').next().unwrap_or(&self.image);
        match last.split_once(':') {
            Some((_, tag)) if !tag.is_empty() => tag.split('@').next().unwrap_or(tag),
            _ => "latest",
        }
    }

    fn repository(&self) -> &str {
        let slash = self.image.rfind('/').map_or(0, |i| i + 1);
        match self.image[slash..].find(':') {
            Some(colon) => &self.image[..slash + colon],
            None => self.image.split('@').next().unwrap_or(&self.image),
        }
    }
}

/// The image an application gets when none is named: its repository in the local
/// registry, by the registry's name inside the cluster (`REGISTRY_CLUSTER_NAME`,
/// `comind-<env>-registry:5000`), tag `0.1.0`.
pub fn default_image(env: &Environment, team: &str, name: &str) -> String {
    format!(
        "{}:5000/{team}/{name}:0.1.0",
        env.resource_name(comind_core::cluster::REGISTRY_PHASE_ID)
    )
}

/// Whether `environment` scales as production: the current environment when it is
/// marked `production: true`, or one named `prod`/`production`.
fn is_production(env: &Environment, environment: &str) -> bool {
    (environment == env.name() && env.is_production())
        || matches!(environment, "prod" | "production")
}

/// The chart's files for `spec`, relative to the GitOps repository's root.
///
/// # Errors
/// As [`AppSpec::check`].
pub fn files(env: &Environment, spec: &AppSpec) -> Result<Vec<(PathBuf, String)>> {
    spec.check()?;
    let repo = &env.config().gitops.repo;
    let base = PathBuf::from(crate::platform::gitops::repo_path(
        repo,
        &format!("apps/{}/{}/chart", spec.team, spec.name),
    ));
    let secrets: Vec<String> = spec
        .uses
        .iter()
        .map(|kind| format!("platform-{}", kind.id()))
        .collect();
    let mut files = vec![
        (
            base.join("Chart.yaml"),
            templates::chart_yaml(&spec.name, &spec.team, spec.tag()),
        ),
        (
            base.join("values.yaml"),
            templates::values_yaml(
                spec.repository(),
                spec.tag(),
                spec.port,
                &secrets,
                ingress::class(env),
                (env.profile() == comind_core::Profile::Aws)
                    .then_some(env.config().aws.vpc.cidr.as_str()),
            ),
        ),
    ];
    for environment in &spec.environments {
        let host = match (&env.config().gitops.domain, env.profile()) {
            (Some(domain), _) => format!("{}.{domain}", spec.name),
            (None, Profile::Local) => format!("{}.{environment}.127.0.0.1.nip.io", spec.name),
            (None, Profile::Aws) => format!("{}.{environment}.example.invalid", spec.name),
        };
        files.push((
            base.join(format!("values-{environment}.yaml")),
            templates::environment_values(environment, &host, is_production(env, environment)),
        ));
    }
    for (name, content) in templates::TEMPLATES {
        files.push((base.join("templates").join(name), (*content).to_string()));
    }
    Ok(files)
}

/// Writes `spec`'s chart into the repository `dir` (see the module documentation);
/// with `dry_run`, only says what it would write.
///
/// # Errors
/// As [`files`] and [`repository::write_files`].
pub fn new_app(
    env: &Environment,
    dir: &Path,
    spec: &AppSpec,
    force: bool,
    dry_run: bool,
) -> Result<Initialized> {
    let files = files(env, spec)?;
    let overwrite = if force {
        Overwrite::Always
    } else {
        Overwrite::Never
    };
    repository::write_files(dir, files, overwrite, dry_run)
}

/// An application found in the GitOps repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its team.
    pub team: String,
    /// Its name.
    pub name: String,
    /// The Argo CD Application the ApplicationSet makes of it (`<team>-<app>`).
    pub application: String,
}

/// The applications of the repository `dir`: every `<path>/apps/<team>/<app>/` that
/// holds a `chart/Chart.yaml`, sorted by team and name.
///
/// # Errors
/// `InvalidInput` when `dir` is not a readable directory.
pub fn list(env: &Environment, dir: &Path) -> Result<Vec<Listed>> {
    let apps = dir.join(crate::platform::gitops::repo_path(
        &env.config().gitops.repo,
        "apps",
    ));
    let read = |path: &Path| {
        std::fs::read_dir(path).map_err(|e| {
            Error::invalid_input(format!("cannot read {}: {e}", path.display()))
                .with_hint("pass the GitOps repository's directory with `--repo`")
        })
    };
    if !dir.is_dir() {
        return Err(
            Error::invalid_input(format!("{} is not a directory", dir.display()))
                .with_hint("pass the GitOps repository's directory with `--repo`"),
        );
    }
    let mut found = Vec::new();
    if !apps.is_dir() {
        return Ok(found);
    }
    for team in read(&apps)?.flatten().filter(|e| e.path().is_dir()) {
        for app in read(&team.path())?.flatten() {
            if app.path().join("chart/Chart.yaml").is_file() {
                let team = team.file_name().to_string_lossy().into_owned();
                let name = app.file_name().to_string_lossy().into_owned();
                found.push(Listed {
                    application: format!("{team}-{name}"),
                    team,
                    name,
                });
            }
        }
    }
    found.sort_by(|a, b| (&a.team, &a.name).cmp(&(&b.team, &b.name)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        AppSpec {
            name: "my-app".into(),
            team: "backend".into(),
            image: "registry.example:5000/team/my-app:1.2.3".into(),
            port: 8080,
            environments: vec!["dev".into(), "prod".into()],
            uses: vec![ServiceKind::Postgres, ServiceKind::Cache],
        }
    }

    #[test]
    fn the_repository_s_applications_are_listed_by_team() {
        let env = Environment::with_state_root(comind_core::Config::default(), "/tmp/unused");
        let dir = tempfile::tempdir().unwrap();
        for spec in [
            spec(),
            AppSpec {
                name: "api".into(),
                team: "alpha".into(),
                ..spec()
            },
        ] {
            new_app(&env, dir.path(), &spec, false, false).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("apps/backend/not-an-app")).unwrap();
        let listed = list(&env, dir.path()).unwrap();
        let names: Vec<&str> = listed.iter().map(|l| l.application.as_str()).collect();
        assert_eq!(names, ["alpha-api", "backend-my-app"]);
    }

    #[test]
    fn names_are_checked_before_anything_is_written() {
        for bad in [
            AppSpec {
                name: "My_App".into(),
                ..spec()
            },
            AppSpec {
                team: "-x".into(),
                ..spec()
            },
            AppSpec {
                name: "a".repeat(60),
                ..spec()
            },
            AppSpec { port: 0, ..spec() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        spec().check().unwrap();
    }

    #[test]
    fn the_image_splits_into_repository_and_tag() {
        let s = spec();
        assert_eq!(s.repository(), "registry.example:5000/team/my-app");
        assert_eq!(s.tag(), "1.2.3");
        let bare = AppSpec {
            image: "nginx".into(),
            ..spec()
        };
        assert_eq!((bare.repository(), bare.tag()), ("nginx", "latest"));
    }

    #[test]
    fn production_gets_the_autoscaler_and_dev_one_replica() {
        let env = Environment::with_state_root(comind_core::Config::default(), "/tmp/unused");
        let files = files(&env, &spec()).unwrap();
        let find = |name: &str| {
            files
                .iter()
                .find(|(p, _)| p.ends_with(name))
                .map(|(_, c)| c.clone())
                .unwrap()
        };
        assert!(find("values-dev.yaml").contains("enabled: false"));
        assert!(find("values-prod.yaml").contains("minReplicas: 2"));
        assert!(find("values.yaml").contains("platform-postgres"));
        assert!(find("values-dev.yaml").contains("my-app.dev.127.0.0.1.nip.io"));
        assert!(files[0].0.starts_with("apps/backend/my-app/chart"));
    }
}
