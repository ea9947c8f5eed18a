//! The user's kubeconfig, changed only when asked (`comind kubeconfig --merge`): the
//! environment's cluster, user and context are added to it, replacing same-named
//! entries, and everything else in it is kept as it was.

use std::path::{Path, PathBuf};

use comind_core::{Error, Result};
use kube::config::Kubeconfig;

/// The file `--merge` writes into: the first entry of `KUBECONFIG` when set, else
/// `~/.kube/config`, as kubectl decides.
///
/// # Errors
/// `InvalidInput` when neither `KUBECONFIG` nor `HOME` says.
pub fn user_kubeconfig_path() -> Result<PathBuf> {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .as_deref()
        .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".kube").join("config"))
        .ok_or_else(|| {
            Error::invalid_input("cannot find your kubeconfig: neither KUBECONFIG nor HOME is set")
                .with_hint("set KUBECONFIG to the file to merge into")
        })
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The file written.
    pub path: PathBuf,
    /// The contexts added or replaced.
    pub contexts: Vec<String>,
    /// Whether the current context was switched to the environment's.
    pub switched: bool,
}

/// Merges the kubeconfig at `ours` into the one at `into` (created when missing),
/// replacing its clusters, users and contexts of the same names; switches its current
/// context to `ours`' only when `switch` is set. The file is written atomically with
/// mode 0600 (it holds credentials).
///
/// # Errors
/// `InvalidInput` when either file cannot be read as a kubeconfig (nothing is
/// written then); the state directory's errors when `into` cannot be written.
pub fn merge(ours: &Path, into: &Path, switch: bool) -> Result<Merged> {
    let read = |path: &Path| {
        Kubeconfig::read_from(path).map_err(|e| {
            Error::invalid_input(format!("cannot read the kubeconfig: {e}"))
                .with_resource(path.display().to_string())
        })
    };
    let ours = read(ours)?;
    let mut theirs = if into.exists() {
        read(into)?
    } else {
        Kubeconfig::default()
    };
    // Same-named entries of theirs give way to ours; the rest stay in their order.
    let clusters = ours
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .collect::<Vec<_>>();
    theirs.clusters.retain(|c| !clusters.contains(&c.name));
    theirs.clusters.extend(ours.clusters.iter().cloned());
    let users = ours
        .auth_infos
        .iter()
        .map(|u| u.name.clone())
        .collect::<Vec<_>>();
    theirs.auth_infos.retain(|u| !users.contains(&u.name));
    theirs.auth_infos.extend(ours.auth_infos.iter().cloned());
    let contexts = ours
        .contexts
        .iter()
        .map(|c| c.name.clone())
        .collect::<Vec<_>>();
    theirs.contexts.retain(|c| !contexts.contains(&c.name));
    theirs.contexts.extend(ours.contexts.iter().cloned());
    let switched = switch && ours.current_context.is_some();
    if switched {
        theirs.current_context.clone_from(&ours.current_context);
    }
    if theirs.api_version.is_none() {
        theirs.api_version = Some("v1".to_string());
        theirs.kind = Some("Config".to_string());
    }
    let text = serde_yaml_ng::to_string(&theirs)
        .map_err(|e| Error::internal(format!("cannot write the kubeconfig: {e}")))?;
    if let Some(dir) = into.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::unavailable(format!("cannot create {}: {e}", dir.display()))
                .with_resource(dir.display().to_string())
        })?;
    }
    comind_core::state::write_private_file(into, text.as_bytes())?;
    Ok(Merged {
        path: into.to_path_buf(),
        contexts: ours.contexts.iter().map(|c| c.name.clone()).collect(),
        switched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(context: &str, server: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {context}\nclusters:\n- name: {context}\n  \
             cluster:\n    server: {server}\nusers:\n- name: admin@{context}\n  user:\n    token: t-{context}\n\
             contexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: admin@{context}\n"
        )
    }

    #[test]
    fn a_merge_replaces_our_entries_keeps_the_rest_and_switches_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours");
        let into = dir.path().join("kube").join("config");
        std::fs::create_dir_all(into.parent().unwrap()).unwrap();
        std::fs::write(
            &ours,
            kubeconfig("k3d-comind-dev", "https://127.0.0.1:6443"),
        )
        .unwrap();
        std::fs::write(&into, kubeconfig("work", "https://work.example:443")).unwrap();

        let merged = merge(&ours, &into, false).unwrap();
        assert_eq!(merged.contexts, ["k3d-comind-dev"]);
        assert!(!merged.switched);
        let result = Kubeconfig::read_from(&into).unwrap();
        assert_eq!(result.current_context.as_deref(), Some("work"));
        assert_eq!(result.contexts.len(), 2);

        // Again, after the cluster moved: replaced, not duplicated.
        std::fs::write(
            &ours,
            kubeconfig("k3d-comind-dev", "https://127.0.0.1:7443"),
        )
        .unwrap();
        let merged = merge(&ours, &into, true).unwrap();
        assert!(merged.switched);
        let result = Kubeconfig::read_from(&into).unwrap();
        assert_eq!(result.contexts.len(), 2);
        assert_eq!(result.clusters.len(), 2);
        assert_eq!(result.current_context.as_deref(), Some("k3d-comind-dev"));
        let server = result
            .clusters
            .iter()
            .find(|c| c.name == "k3d-comind-dev")
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone());
        assert_eq!(server.as_deref(), Some("https://127.0.0.1:7443"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&into).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_missing_file_is_created_and_a_broken_one_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours");
        std::fs::write(
            &ours,
            kubeconfig("k3d-comind-dev", "https://127.0.0.1:6443"),
        )
        .unwrap();
        let fresh = dir.path().join("new").join("config");
        merge(&ours, &fresh, false).unwrap();
        assert_eq!(Kubeconfig::read_from(&fresh).unwrap().contexts.len(), 1);

        let broken = dir.path().join("broken");
        std::fs::write(&broken, "clusters: [not: a: kubeconfig").unwrap();
        assert!(merge(&ours, &broken, false).is_err());
        assert_eq!(
            std::fs::read_to_string(&broken).unwrap(),
            "clusters: [not: a: kubeconfig"
        );
    }
}
