//! `comind doctor` for the local profile: the Docker daemon and its API version, every
//! configured host port, the network name, `k3d`, and `git` for the local Git server.

use std::collections::BTreeMap;
use std::path::Path;

use comind_core::Diagnosis;
use comind_core::environment::{Environment, LABEL_COMPONENT};

use crate::docker::DockerClient;
use crate::docker::error::START_DOCKER_HINT;
use crate::network::NETWORK_PHASE_ID;
use crate::services::ports::{Holder, holder_of, is_free};

/// The oldest Engine API the local provider is tested against (Docker 19.03).
pub const MIN_API_VERSION: (u32, u32) = (1, 40);

/// A configured host port: the field that sets it, the port, the component that
/// publishes it, and whether a run fails without it (cluster ports are needed only by
/// the cluster phase of a later release).
struct ConfiguredPort {
    field: &'static str,
    port: u16,
    component: &'static str,
    required: bool,
}

fn configured_ports(env: &Environment) -> Vec<ConfiguredPort> {
    let config = env.config();
    let s = &config.services;
    let k = &config.local.cluster;
    let mut ports = vec![
        ConfiguredPort {
            field: "services.postgres.local.port",
            port: s.postgres.local.port.get(),
            component: "postgres",
            required: true,
        },
        ConfiguredPort {
            field: "services.object_store.local.port",
            port: s.object_store.local.port.get(),
            component: "object-store",
            required: true,
        },
        ConfiguredPort {
            field: "services.object_store.local.console_port",
            port: s.object_store.local.console_port.get(),
            component: "object-store",
            required: true,
        },
    ];
    if s.cache.enabled {
        ports.push(ConfiguredPort {
            field: "services.cache.local.port",
            port: s.cache.local.port.get(),
            component: "cache",
            required: true,
        });
    }
    if s.queue.enabled {
        ports.push(ConfiguredPort {
            field: "services.queue.local.port",
            port: s.queue.local.port.get(),
            component: "queue",
            required: true,
        });
    }
    if crate::git_server::runs_git_server(config) {
        ports.push(ConfiguredPort {
            field: "gitops.repo.local.port",
            port: config.gitops.repo.local.port.get(),
            component: crate::git_server::GIT_SERVER_PHASE_ID,
            required: true,
        });
    }
    if !crate::LocalProvider::makes_cluster(env) {
        return ports;
    }
    ports.push(ConfiguredPort {
        field: "local.cluster.registry_port",
        port: k.registry_port.get(),
        component: crate::registry::REGISTRY_PHASE_ID,
        required: true,
    });
    for (field, port) in [
        ("local.cluster.api_port", k.api_port.get()),
        ("local.cluster.http_port", k.http_port.get()),
        ("local.cluster.https_port", k.https_port.get()),
    ] {
        ports.push(ConfiguredPort {
            field,
            port,
            component: "cluster",
            required: false,
        });
    }
    ports
}

/// Parses `1.41` into (1, 41).
fn parse_api(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Whether an executable named `name` is on `path` (a `PATH` value).
fn on_path(name: &str, path: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `git` on `PATH`: `comind gitops push` runs it to fill the local Git server. A
/// warning only, since `up` does not need it.
fn git_check() -> Diagnosis {
    let path = std::env::var_os("PATH").unwrap_or_default();
    match on_path("git", &path) {
        Some(binary) => Diagnosis::ok("git", format!("{}", binary.display())),
        None => Diagnosis::warning(
            "git",
            "`git` is not on PATH; `comind gitops push` needs it to fill the local Git server",
            "install Git (`apt-get install git`, `brew install git`) and put it on PATH",
        ),
    }
}

/// The configured k3d binary: found, and v5.
async fn k3d_check(env: &Environment) -> Diagnosis {
    let configured = &env.config().local.cluster.k3d;
    let fix = "install k3d v5 (https://k3d.io) and put it on PATH, or set `local.cluster.k3d` \
               to its path";
    let binary = if configured.components().count() > 1 {
        Some(configured.clone())
    } else {
        on_path(
            &configured.to_string_lossy(),
            &std::env::var_os("PATH").unwrap_or_default(),
        )
    };
    let Some(binary) = binary.filter(|b| is_executable(b)) else {
        return Diagnosis::failed(
            "k3d",
            format!(
                "`{}` is not an executable file or on PATH",
                configured.display()
            ),
            fix,
        );
    };
    match crate::cluster::k3d::K3d::new(&binary).version().await {
        Ok(version) if crate::cluster::k3d::is_v5(&version) => {
            Diagnosis::ok("k3d", format!("{version} at {}", binary.display()))
        }
        Ok(version) => Diagnosis::failed(
            "k3d",
            format!(
                "{} is k3d {version}; Comind drives k3d v5",
                binary.display()
            ),
            fix,
        ),
        Err(err) => Diagnosis::failed("k3d", err.message().to_string(), fix),
    }
}

/// Runs every check; changes nothing.
pub(crate) async fn diagnose(docker: &DockerClient, env: &Environment) -> Vec<Diagnosis> {
    let mut checks = Vec::new();
    let daemon = match docker.info().await {
        Ok(info) => {
            checks.push(Diagnosis::ok(
                "docker daemon",
                format!(
                    "reachable at {} (Docker {}, answered a ping in {} ms)",
                    docker.host(),
                    info.version,
                    info.ping.as_millis()
                ),
            ));
            checks.push(match parse_api(&info.api_version) {
                Some(api) if api >= MIN_API_VERSION => Diagnosis::ok(
                    "docker API version",
                    format!(
                        "{} (this client speaks {})",
                        info.api_version, info.negotiated
                    ),
                ),
                _ => Diagnosis::failed(
                    "docker API version",
                    format!(
                        "the daemon speaks API {}; Comind needs {}.{} or newer",
                        info.api_version, MIN_API_VERSION.0, MIN_API_VERSION.1
                    ),
                    "upgrade Docker to 19.03 or newer",
                ),
            });
            true
        }
        Err(err) => {
            checks.push(Diagnosis::failed(
                "docker daemon",
                format!("not reachable at {}: {}", docker.host(), err.message()),
                START_DOCKER_HINT,
            ));
            false
        }
    };

    // Ports published by this environment's own containers count as held correctly.
    let mut ours: BTreeMap<u16, (String, String)> = BTreeMap::new();
    if daemon && let Ok(containers) = docker.containers_labelled(&env.selector(None)).await {
        for c in containers.into_iter().filter(|c| c.running) {
            let component = c.labels.get(LABEL_COMPONENT).cloned().unwrap_or_default();
            for port in &c.host_ports {
                ours.insert(*port, (c.name.clone(), component.clone()));
            }
        }
    }
    for configured in configured_ports(env) {
        let check = format!("port {}", configured.port);
        if let Some((name, component)) = ours.get(&configured.port)
            && component == configured.component
        {
            checks.push(Diagnosis::ok(
                check,
                format!(
                    "`{}`: published by {name}, as it should be",
                    configured.field
                ),
            ));
            continue;
        }
        if is_free(configured.port) {
            checks.push(Diagnosis::ok(
                check,
                format!("`{}`: free on 127.0.0.1", configured.field),
            ));
            continue;
        }
        let holder = if daemon {
            holder_of(docker, env, configured.port).await
        } else {
            Holder::Program
        };
        let detail = format!(
            "`{}`: port {} {}",
            configured.field,
            configured.port,
            holder.describe()
        );
        let fix = format!(
            "change `{}` in comind.yaml to a free port, or stop what holds port {}",
            configured.field, configured.port
        );
        checks.push(if configured.required {
            Diagnosis::failed(check, detail, fix)
        } else {
            Diagnosis::warning(
                check,
                format!("{detail}; the cluster phase will need it"),
                fix,
            )
        });
    }

    if daemon {
        let name = env.config().local_network();
        checks.push(match docker.networks_named(&name).await {
            Ok(found) if found.is_empty() => {
                Diagnosis::ok("docker network", format!("{name} will be created"))
            }
            Ok(found)
                if found
                    .iter()
                    .all(|n| env.owns(&n.labels, Some(NETWORK_PHASE_ID))) =>
            {
                Diagnosis::ok(
                    "docker network",
                    format!("{name} exists and is this environment's"),
                )
            }
            Ok(_) => Diagnosis::failed(
                "docker network",
                format!("a network named {name} exists that Comind did not create"),
                format!(
                    "remove it (`docker network rm {name}`) or set `local.network` in comind.yaml"
                ),
            ),
            Err(err) => Diagnosis::warning(
                "docker network",
                format!("cannot list networks: {}", err.message()),
                "check the Docker daemon",
            ),
        });
    }

    if crate::LocalProvider::makes_cluster(env) {
        checks.push(k3d_check(env).await);
    }
    if crate::git_server::runs_git_server(env.config()) {
        checks.push(git_check());
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_numerically() {
        assert_eq!(parse_api("1.41"), Some((1, 41)));
        assert!(parse_api("1.41").unwrap() >= MIN_API_VERSION);
        assert!(parse_api("1.9").unwrap() < MIN_API_VERSION);
        assert_eq!(parse_api("x"), None);
    }

    #[test]
    fn executables_are_found_on_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("k3d");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        assert!(
            on_path("k3d", dir.path().as_os_str()).is_none(),
            "not executable yet"
        );
        let mut perms = std::fs::metadata(&tool).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&tool, perms).unwrap();
        assert_eq!(on_path("k3d", dir.path().as_os_str()), Some(tool));
    }

    #[test]
    fn every_service_port_is_checked_with_its_field() {
        let env = Environment::with_state_root(comind_core::Config::default(), "/tmp/x");
        let fields: Vec<&str> = configured_ports(&env).iter().map(|p| p.field).collect();
        assert!(fields.contains(&"services.postgres.local.port"));
        assert!(fields.contains(&"services.object_store.local.console_port"));
        assert!(fields.contains(&"services.queue.local.port"));
        assert!(fields.contains(&"gitops.repo.local.port"));
    }
}
