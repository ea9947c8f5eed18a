//! Files uploaded into a container before its first start, as a tar archive.
//!
//! A file's content is a [`Template`]: text with secret placeholders. The archive
//! holds the rendered text; the spec hash (a label) sees only the template, with each
//! secret replaced by its name, so a secret never reaches a label.

use serde::{Serialize, Serializer};

use comind_core::{Error, Result, Secret};

/// One piece of a [`Template`].
#[derive(Clone)]
enum Fragment {
    Text(String),
    Secret { name: &'static str, value: Secret },
}

/// File content: text with named secrets in it.
#[derive(Clone, Default)]
pub(crate) struct Template {
    fragments: Vec<Fragment>,
}

impl Template {
    /// An empty template.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends text.
    #[must_use]
    pub(crate) fn text(mut self, text: impl Into<String>) -> Self {
        self.fragments.push(Fragment::Text(text.into()));
        self
    }

    /// Appends the secret `value`, known in the spec hash only as `name`.
    #[must_use]
    pub(crate) fn secret(mut self, name: &'static str, value: &Secret) -> Self {
        self.fragments.push(Fragment::Secret {
            name,
            value: value.clone(),
        });
        self
    }

    /// The real content, secrets included: only for the archive.
    fn render(&self) -> Vec<u8> {
        let mut out = String::new();
        for fragment in &self.fragments {
            match fragment {
                Fragment::Text(text) => out.push_str(text),
                Fragment::Secret { value, .. } => out.push_str(value.expose()),
            }
        }
        out.into_bytes()
    }

    /// The content with every secret replaced by `{{secret:<name>}}`: what the spec
    /// hash sees.
    pub(crate) fn shape(&self) -> String {
        let mut out = String::new();
        for fragment in &self.fragments {
            match fragment {
                Fragment::Text(text) => out.push_str(text),
                Fragment::Secret { name, .. } => {
                    out.push_str("{{secret:");
                    out.push_str(name);
                    out.push_str("}}");
                }
            }
        }
        out
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shape())
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.shape())
    }
}

/// Owner and mode of a file or directory in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Ownership {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
}

/// A file to place in a container.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ContainerFile {
    /// Absolute path in the container.
    pub path: String,
    /// Owner and mode of the file.
    pub file: Ownership,
    /// When set, the file's directory is created (or re-owned) with these.
    pub dir: Option<Ownership>,
    /// The content.
    pub content: Template,
}

/// A tar archive of `files`, to unpack at `/`.
///
/// # Errors
/// `Internal` if a path is not absolute or the archive cannot be written.
pub(crate) fn tar_archive(files: &[ContainerFile]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in files {
        let relative = file.path.strip_prefix('/').ok_or_else(|| {
            Error::internal(format!(
                "container file path `{}` is not absolute",
                file.path
            ))
        })?;
        if let (Some(dir), Some((parent, _))) = (file.dir, relative.rsplit_once('/')) {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(dir.mode);
            header.set_uid(dir.uid);
            header.set_gid(dir.gid);
            header.set_mtime(0);
            builder
                .append_data(&mut header, format!("{parent}/"), std::io::empty())
                .map_err(archive_error)?;
        }
        let content = file.content.render();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(file.file.mode);
        header.set_uid(file.file.uid);
        header.set_gid(file.file.gid);
        header.set_mtime(0);
        builder
            .append_data(&mut header, relative, content.as_slice())
            .map_err(archive_error)?;
    }
    builder.into_inner().map_err(archive_error)
}

fn archive_error(err: std::io::Error) -> Error {
    Error::internal("cannot build the archive of container files").with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ContainerFile {
        ContainerFile {
            path: "/run/comind/password".into(),
            file: Ownership {
                uid: 70,
                gid: 70,
                mode: 0o600,
            },
            dir: Some(Ownership {
                uid: 70,
                gid: 70,
                mode: 0o700,
            }),
            content: Template::new()
                .text("pw=")
                .secret("password", &Secret::new("hunter2-xyz")),
        }
    }

    #[test]
    fn the_shape_never_holds_the_secret() {
        let file = file();
        assert_eq!(file.content.shape(), "pw={{secret:password}}");
        let json = serde_json::to_string(&file).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!format!("{file:?}").contains("hunter2"));
    }

    #[test]
    fn the_archive_keeps_modes_owners_and_content() {
        let bytes = tar_archive(&[file()]).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
            seen.push((path, header.mode().unwrap(), header.uid().unwrap(), content));
        }
        assert_eq!(
            seen,
            vec![
                ("run/comind/".to_string(), 0o700, 70, String::new()),
                (
                    "run/comind/password".to_string(),
                    0o600,
                    70,
                    "pw=hunter2-xyz".to_string()
                ),
            ]
        );
    }
}
