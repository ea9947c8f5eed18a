//! Containers: inspect, list by label, create, upload files, start, stop, remove,
//! read logs.

use std::collections::{BTreeMap, HashMap};

use bollard::body_full;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use comind_core::{Error, Result};
use futures_util::StreamExt;

/// How long a service gets to shut down cleanly on `down` or a replacement before it
/// is killed. Docker's default is 10 s; a database flushing a large buffer pool may
/// need longer, and waiting costs nothing when it stops sooner.
pub(crate) const STOP_GRACE_SECONDS: i32 = 30;

use super::DockerClient;
use super::error::{docker_error, is_not_found, message_of, resource, status_of};
use super::volume::label_filters;

/// What a container is doing, in the terms that matter to reconciling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Running.
    Running,
    /// Paused: running but frozen.
    Paused,
    /// Restarting after a crash (its restart policy is at work).
    Restarting,
    /// Created and never started: whatever had to be placed in it before its first
    /// start may be missing (the run that created it may have died first).
    Created,
    /// Stopped or killed after it ran.
    Stopped,
    /// Dead or being removed: it cannot be started again.
    Broken,
}

/// A container as inspected.
#[derive(Debug, Clone)]
pub(crate) struct ContainerInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub state: RunState,
    /// Docker's own word for the state (`exited`, `created`).
    pub status: String,
    pub exit_code: Option<i64>,
    /// Why the last start failed, if it did.
    pub error: Option<String>,
    /// Networks it is attached to: name to network id.
    pub networks: BTreeMap<String, String>,
    /// Its addresses on the networks it is attached to, while it runs: network name to
    /// IPv4 address.
    pub addresses: BTreeMap<String, String>,
    /// Published host ports.
    pub host_ports: Vec<u16>,
}

impl ContainerInfo {
    /// A short sentence of why it is not running (`exited with code 137`).
    pub(crate) fn stopped_reason(&self) -> String {
        match (self.status.as_str(), self.exit_code) {
            ("created", _) => match &self.error {
                Some(error) if !error.is_empty() => format!("never started: {error}"),
                _ => "created but never started".to_string(),
            },
            ("exited", Some(code)) => format!("exited with code {code}"),
            (status, _) => format!("container is {status}"),
        }
    }
}

/// A container as listed.
#[derive(Debug, Clone)]
pub(crate) struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    pub host_ports: Vec<u16>,
}

fn run_state(status: Option<ContainerStateStatusEnum>) -> RunState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING) => RunState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => RunState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => RunState::Restarting,
        Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::STOPPING) => {
            RunState::Stopped
        }
        _ => RunState::Broken,
    }
}

/// What a command run in a container printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Executed {
    /// Its exit code.
    pub exit_code: i64,
    /// Its standard output and error, interleaved.
    pub output: String,
}

impl DockerClient {
    /// Runs `cmd` in the running container `name` and waits for it to end.
    ///
    /// # Errors
    /// When Docker cannot run it (the container is missing or stopped).
    pub(crate) async fn exec(&self, name: &str, cmd: &[&str]) -> Result<Executed> {
        let docker = self.docker().await?;
        let what = resource("container", name);
        let created = docker
            .create_exec(
                name,
                bollard::exec::CreateExecOptions {
                    cmd: Some(cmd.iter().map(|c| (*c).to_string()).collect()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| docker_error("exec in", &what, e))?;
        let mut output = String::new();
        if let bollard::exec::StartExecResults::Attached {
            output: mut stream, ..
        } = docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| docker_error("exec in", &what, e))?
        {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| docker_error("read exec output of", &what, e))?;
                output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        }
        let inspected = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| docker_error("inspect exec in", &what, e))?;
        Ok(Executed {
            exit_code: inspected.exit_code.unwrap_or(-1),
            output,
        })
    }

    /// The container `name`, if it exists.
    pub(crate) async fn container(&self, name: &str) -> Result<Option<ContainerInfo>> {
        let docker = self.docker().await?;
        let info = match docker.inspect_container(name, None).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(docker_error("inspect", &resource("container", name), e)),
        };
        let state = info.state.unwrap_or_default();
        let config = info.config.unwrap_or_default();
        let attached = info
            .network_settings
            .and_then(|s| s.networks)
            .unwrap_or_default();
        let addresses = attached
            .iter()
            .filter_map(|(net, endpoint)| {
                let ip = endpoint.ip_address.as_deref().filter(|ip| !ip.is_empty())?;
                Some((net.clone(), ip.to_string()))
            })
            .collect();
        let networks = attached
            .into_iter()
            .map(|(net, endpoint)| (net, endpoint.network_id.unwrap_or_default()))
            .collect();
        // The requested bindings, not the live ones: a stopped container has no live
        // ports but still claims its host ports when started.
        let mut host_ports: Vec<u16> = info
            .host_config
            .and_then(|h| h.port_bindings)
            .unwrap_or_default()
            .into_values()
            .flatten()
            .flatten()
            .filter_map(|b| b.host_port.and_then(|p| p.parse().ok()))
            .collect();
        host_ports.sort_unstable();
        Ok(Some(ContainerInfo {
            id: info.id.unwrap_or_default(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            image: config.image.unwrap_or_default(),
            state: run_state(state.status),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            exit_code: state.exit_code,
            error: state.error.filter(|e| !e.is_empty()),
            networks,
            addresses,
            host_ports,
        }))
    }

    /// Containers, running or not, carrying every label of `selector`.
    pub(crate) async fn containers_labelled(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerSummary>> {
        self.list_containers(label_filters(selector)).await
    }

    /// Running containers that publish host port `port`.
    pub(crate) async fn containers_publishing(&self, port: u16) -> Result<Vec<ContainerSummary>> {
        self.list_containers(HashMap::from([(
            "publish".to_string(),
            vec![port.to_string()],
        )]))
        .await
    }

    async fn list_containers(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerSummary>> {
        let docker = self.docker().await?;
        let list = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| docker_error("list", "containers", e))?;
        let mut containers: Vec<ContainerSummary> = list
            .into_iter()
            .map(|c| {
                let mut host_ports: Vec<u16> = c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.public_port)
                    .collect();
                host_ports.sort_unstable();
                host_ports.dedup();
                ContainerSummary {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    running: c.state.is_some_and(|s| s.to_string() == "running"),
                    host_ports,
                }
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    /// Creates the container `name` from `body`; returns its id. Never pulls.
    pub(crate) async fn create_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String> {
        let docker = self.docker().await?;
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(name).build()),
                body,
            )
            .await
            .map_err(|e| {
                let err = docker_error("create", &resource("container", name), e);
                if err.kind() == comind_core::ErrorKind::Conflict {
                    err.with_hint(format!(
                        "a container named `{name}` already exists; remove it \
                         (`docker rm -f {name}`) if it is a leftover, or choose another \
                         environment name"
                    ))
                } else {
                    err
                }
            })?;
        Ok(created.id)
    }

    /// Unpacks the tar archive `archive` at `/` in the container `name`. Works on a
    /// created container before its first start; the archive's modes and owners are
    /// kept.
    pub(crate) async fn upload_archive(&self, name: &str, archive: Vec<u8>) -> Result<()> {
        let docker = self.docker().await?;
        docker
            .upload_to_container(
                name,
                Some(UploadToContainerOptionsBuilder::new().path("/").build()),
                body_full(archive.into()),
            )
            .await
            .map_err(|e| {
                docker_error(
                    "upload configuration files into",
                    &resource("container", name),
                    e,
                )
            })
    }

    /// Which of `paths` do not exist in the container `name` (running or not).
    pub(crate) async fn missing_files(&self, name: &str, paths: &[&str]) -> Result<Vec<String>> {
        let docker = self.docker().await?;
        let mut missing = Vec::new();
        for path in paths {
            let options = ContainerArchiveInfoOptionsBuilder::new().path(path).build();
            match docker.get_container_archive_info(name, Some(options)).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => missing.push((*path).to_string()),
                Err(e) => {
                    return Err(docker_error(
                        &format!("look for {path} in"),
                        &resource("container", name),
                        e,
                    ));
                }
            }
        }
        Ok(missing)
    }

    /// Starts the container `name` (a no-op if it runs). A host port taken by
    /// something else only shows here, at start: that is reported as a conflict
    /// naming the port and, from `ports` (host port, config field), the field.
    pub(crate) async fn start_container(&self, name: &str, ports: &[(u16, &str)]) -> Result<()> {
        let docker = self.docker().await?;
        match docker.start_container(name, None).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(500) && is_port_conflict(message_of(&e)) => {
                let message = message_of(&e).unwrap_or_default().to_string();
                let taken = ports
                    .iter()
                    .find(|(port, _)| message.contains(&format!(":{port}")));
                let (what, hint) = match taken {
                    Some((port, field)) => (
                        format!("host port {port} (`{field}`) is already in use"),
                        format!(
                            "free port {port}, or change `{field}` in comind.yaml, then run \
                             `comind up` again"
                        ),
                    ),
                    None => (
                        "one of its host ports is already in use".to_string(),
                        "change the port in comind.yaml, then run `comind up` again".to_string(),
                    ),
                };
                Err(Error::conflict(format!("cannot start: {what}"))
                    .with_resource(resource("container", name))
                    .with_source(e)
                    .with_hint(hint))
            }
            Err(e) => Err(docker_error("start", &resource("container", name), e)),
        }
    }

    /// Unfreezes the paused container `name`.
    pub(crate) async fn unpause_container(&self, name: &str) -> Result<()> {
        let docker = self.docker().await?;
        docker
            .unpause_container(name)
            .await
            .map_err(|e| docker_error("unpause", &resource("container", name), e))
    }

    /// Removes the container `name` (by name or id). A running container is first
    /// stopped the way `docker stop` does it (its stop signal, then up to
    /// [`STOP_GRACE_SECONDS`] before a kill), so the service shuts down cleanly and
    /// flushes its data: PostgreSQL checkpoints, Redis writes its append-only file.
    /// Named volumes (the data) are kept; anonymous volumes, which an image's `VOLUME`
    /// makes for paths Comind does not mount, are removed with it so none is left
    /// behind. Returns whether it existed.
    pub(crate) async fn remove_container(&self, name: &str) -> Result<bool> {
        let docker = self.docker().await?;
        match docker
            .stop_container(
                name,
                Some(
                    StopContainerOptionsBuilder::new()
                        .t(STOP_GRACE_SECONDS)
                        .build(),
                ),
            )
            .await
        {
            // Stopped now, already stopped (304), or gone: removal decides which.
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(docker_error("stop", &resource("container", name), e)),
        }
        match docker
            .remove_container(
                name,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(docker_error("remove", &resource("container", name), e)),
        }
    }

    /// The last `lines` lines of the container's output, stdout and stderr together.
    pub(crate) async fn log_tail(&self, name: &str, lines: usize) -> Result<Vec<String>> {
        let docker = self.docker().await?;
        let tail = lines.to_string();
        let mut stream = docker.logs(
            name,
            Some(
                LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .tail(&tail)
                    .build(),
            ),
        );
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message })
                | Ok(LogOutput::Console { message }) => {
                    let text = String::from_utf8_lossy(&message);
                    out.extend(text.lines().map(str::to_string));
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    return Err(docker_error(
                        "read the log of",
                        &resource("container", name),
                        e,
                    ));
                }
            }
        }
        let skip = out.len().saturating_sub(lines);
        Ok(out.split_off(skip))
    }
}

fn is_port_conflict(message: Option<&str>) -> bool {
    message.is_some_and(|m| {
        m.contains("address already in use") || m.contains("port is already allocated")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_conflicts_are_recognised_in_both_wordings() {
        assert!(is_port_conflict(Some(
            "driver failed programming external connectivity on endpoint x: Error starting \
             userland proxy: listen tcp4 127.0.0.1:34483: bind: address already in use"
        )));
        assert!(is_port_conflict(Some(
            "Bind for 127.0.0.1:46633 failed: port is already allocated"
        )));
        assert!(!is_port_conflict(Some("No such container: x")));
        assert!(!is_port_conflict(None));
    }

    #[test]
    fn stopped_reasons_read_well() {
        let mut info = ContainerInfo {
            id: String::new(),
            labels: BTreeMap::new(),
            image: String::new(),
            state: RunState::Stopped,
            status: "exited".into(),
            exit_code: Some(137),
            error: None,
            networks: BTreeMap::new(),
            addresses: BTreeMap::new(),
            host_ports: Vec::new(),
        };
        assert_eq!(info.stopped_reason(), "exited with code 137");
        info.status = "created".into();
        assert_eq!(info.stopped_reason(), "created but never started");
    }
}
