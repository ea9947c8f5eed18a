//! Where each configuration value came from: a line and column of the file, an
//! environment variable, a command-line flag, or the built-in default.
//!
//! The typed configuration is deserialized by `serde_yaml_ng`, which knows locations
//! only for its own errors. Checks that span several fields run after that, so the
//! file is read a second time by an event parser that records the position of every
//! key: [`SourceMap`] turns a field path such as `services.postgres.local.port` back
//! into `comind.yaml:12:7`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A position in a configuration file (1-based line and column).
    File {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
    /// Not set anywhere: the built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Default => f.write_str("built-in default"),
        }
    }
}

/// Positions of keys and sequence items in a YAML document, by dotted path
/// (`services.object_store.buckets[1]`).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    positions: HashMap<String, (usize, usize)>,
    root_is_mapping: bool,
    empty: bool,
}

impl SourceMap {
    /// Reads the positions from `text`. Text the event parser cannot read yields an
    /// empty map: the typed parser reports the syntax error with its own location.
    pub fn parse(text: &str) -> SourceMap {
        let mut recorder = Recorder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut recorder, false).is_err() {
            return SourceMap::default();
        }
        SourceMap {
            positions: recorder.positions,
            root_is_mapping: recorder.root_is_mapping,
            empty: !recorder.saw_content,
        }
    }

    /// The 1-based line and column of `path`, or of its closest ancestor that is in
    /// the file.
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        let mut candidate = path;
        loop {
            if let Some(pos) = self.positions.get(candidate) {
                return Some(*pos);
            }
            let cut = candidate.rfind(['.', '['])?;
            candidate = &candidate[..cut];
        }
    }

    /// Whether `path` itself is written in the file.
    pub fn contains(&self, path: &str) -> bool {
        self.positions.contains_key(path)
    }

    /// Whether the document holds nothing but comments and whitespace.
    pub fn is_empty_document(&self) -> bool {
        self.empty
    }

    /// Whether the document's top level is a mapping.
    pub fn root_is_mapping(&self) -> bool {
        self.root_is_mapping
    }
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, index: usize },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
    root_is_mapping: bool,
    saw_content: bool,
}

impl Recorder {
    /// The path of the node that starts now, advancing the parent frame.
    fn next_node_path(&mut self, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Mapping { path, key }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Sequence { path, index }) => {
                let item = format!("{path}[{index}]");
                *index += 1;
                self.positions.entry(item.clone()).or_insert(position(mark));
                Some(item)
            }
        }
    }
}

/// yaml-rust2 counts lines from 1 and columns from 0; editors count both from 1.
fn position(mark: Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                self.saw_content = true;
                // A scalar in key position names the next value.
                if let Some(Frame::Mapping { path, key }) = self.stack.last_mut()
                    && key.is_none()
                {
                    let full = join(path, &value);
                    self.positions.entry(full).or_insert(position(mark));
                    *key = Some(value);
                    return;
                }
                self.next_node_path(mark);
            }
            Event::Alias(_) => {
                self.next_node_path(mark);
            }
            Event::MappingStart(..) => {
                self.saw_content = true;
                if self.stack.is_empty() {
                    self.root_is_mapping = true;
                }
                // A mapping used as a key cannot name a field; give it a path that
                // matches nothing.
                let path = self
                    .next_node_path(mark)
                    .unwrap_or_else(|| "\u{0}complex-key".to_string());
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                self.saw_content = true;
                let path = self
                    .next_node_path(mark)
                    .unwrap_or_else(|| "\u{0}complex-key".to_string());
                self.stack.push(Frame::Sequence { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# a comment
environment: dev
services:
  postgres:
    local:
      port: 5432
  object_store:
    buckets:
      - backups
      - uploads
    tags: {a: 1, b: [x, y]}
";

    #[test]
    fn locates_keys_and_items() {
        let map = SourceMap::parse(DOC);
        assert_eq!(map.locate("environment"), Some((2, 1)));
        assert_eq!(map.locate("services.postgres.local.port"), Some((6, 7)));
        assert_eq!(
            map.locate("services.object_store.buckets[1]"),
            Some((10, 9))
        );
        assert_eq!(
            map.locate("services.object_store.tags.b[1]"),
            Some((11, 25))
        );
        assert!(map.root_is_mapping());
        assert!(!map.is_empty_document());
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let map = SourceMap::parse(DOC);
        assert_eq!(map.locate("services.postgres.local.image"), Some((5, 5)));
        assert_eq!(map.locate("engine.concurrency"), None);
        assert!(!map.contains("services.postgres.local.image"));
    }

    #[test]
    fn empty_documents() {
        assert!(SourceMap::parse("").is_empty_document());
        assert!(SourceMap::parse("# only a comment\n").is_empty_document());
        assert!(!SourceMap::parse("a: 1").is_empty_document());
    }
}
