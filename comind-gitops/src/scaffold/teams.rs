//! `comind app new` for a team the environment does not list yet: the team added to
//! `platform.teams` in `comind.yaml`, so the next `up` makes its namespace with the
//! baseline's quota, limits, policies and developer binding.
//!
//! The file is the user's, with their comments and layout: the edit is one line (a
//! new `teams:` entry, or the team appended to the existing list, flow or block
//! style), and the result is parsed again before it may be written.

use std::path::{Path, PathBuf};

use comind_core::config::{Config, Origin};
use comind_core::{Error, Result};

/// What [`list_team`] did about a team's place in `platform.teams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamListing {
    /// Listed already (or `user-apps`, which the baseline always makes).
    Listed,
    /// Added to the file.
    Added(PathBuf),
    /// Would be added to the file (a dry run).
    WouldAdd(PathBuf),
    /// Not added: why, and what to do instead.
    ByHand(String),
}

/// Makes sure `team` is in `platform.teams` of `config`'s file, so the next `up`
/// makes its namespace: adds it ([`add_team`]), atomically and keeping the file's
/// permissions (through a symlink to its target), unless `dry_run`. Where the list
/// comes from an environment variable or a flag, or there is no file, or the file's
/// form is not one this edit knows, it says what to do instead and changes nothing.
///
/// # Errors
/// When the file cannot be read or written.
pub fn list_team(config: &Config, team: &str, dry_run: bool) -> Result<TeamListing> {
    if team == "user-apps" || config.platform.teams.iter().any(|t| t.as_str() == team) {
        return Ok(TeamListing::Listed);
    }
    if let Origin::Env(var) | Origin::Flag(var) = config.origin_of("platform.teams") {
        return Ok(TeamListing::ByHand(format!(
            "team `{team}` is not in platform.teams, which {var} sets: add it there so `comind up` makes its namespace"
        )));
    }
    let Some(file) = config.file() else {
        return Ok(TeamListing::ByHand(format!(
            "team `{team}` is not in platform.teams and there is no comind.yaml: `comind init`, \
             then list it, so `comind up` makes its namespace"
        )));
    };
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::invalid_input(format!("cannot read {shown}: {e}")))?;
    let edited = match add_team(&text, &shown, team) {
        Ok(Some(edited)) => edited,
        Ok(None) => return Ok(TeamListing::Listed),
        Err(e) => {
            let hint = e.hint().map(|h| format!("; {h}")).unwrap_or_default();
            return Ok(TeamListing::ByHand(format!("{e}{hint}")));
        }
    };
    if dry_run {
        return Ok(TeamListing::WouldAdd(file.to_path_buf()));
    }
    write_over(file, &edited).map_err(|e| Error::internal(format!("cannot write {shown}: {e}")))?;
    Ok(TeamListing::Added(file.to_path_buf()))
}

/// Writes `text` beside `file` (the link's target, for a linked file) and renames it
/// over it: a reader sees the old or the new file, with the old one's permissions.
fn write_over(file: &Path, text: &str) -> std::io::Result<()> {
    let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let partial = file.with_extension("yaml.comind-partial");
    let permissions = std::fs::metadata(&file)?.permissions();
    std::fs::write(&partial, text)?;
    std::fs::set_permissions(&partial, permissions)?;
    std::fs::rename(&partial, &file)
}

/// `text` (a `comind.yaml`) with `team` added to `platform.teams`, or `None` when it
/// is listed already.
///
/// # Errors
/// `InvalidInput` when the file's `platform` or `platform.teams` is written in a form
/// this edit does not know (say so, and how to add the team by hand), or the edited
/// file would not parse to a configuration listing the team.
pub fn add_team(text: &str, file: &str, team: &str) -> Result<Option<String>> {
    let by_hand = || {
        Error::invalid_input(format!(
            "cannot add team `{team}` to `platform.teams` in {file}: its `platform` section is \
             not in a form Comind edits"
        ))
        .with_hint(format!(
            "add `{team}` to `platform.teams` in {file} by hand"
        ))
    };
    let before = comind_core::Config::from_yaml_str(text, file)
        .map_err(|e| Error::invalid_input(format!("{file} does not load: {e}")))?;
    if before.platform.teams.iter().any(|t| t.as_str() == team) {
        return Ok(None);
    }
    let lines: Vec<&str> = text.lines().collect();
    let top_level = |line: &str| {
        !line.is_empty() && !line.starts_with([' ', '\t', '#', '-']) && line.contains(':')
    };
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match lines.iter().position(|l| l.trim_end() == "platform:") {
        None => {
            if lines.iter().any(|l| l.starts_with("platform:")) {
                // `platform: {...}` in flow style.
                return Err(by_hand());
            }
            if out.last().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
            out.push("platform:".to_string());
            out.push(format!("  teams: [{team}]"));
        }
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| top_level(l))
                .map_or(lines.len(), |i| start + 1 + i);
            let block = &lines[start + 1..end];
            let indent = block
                .iter()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map_or(2, |l| l.len() - l.trim_start().len());
            let key = format!("{}teams:", " ".repeat(indent));
            match block.iter().position(|l| l.starts_with(&key)) {
                None => out.insert(start + 1, format!("{key} [{team}]")),
                Some(at) => {
                    let line = start + 1 + at;
                    let value = lines[line][key.len()..].trim();
                    let value = value.split(" #").next().unwrap_or(value).trim();
                    if value.starts_with('[') && value.ends_with(']') {
                        let inner = value[1..value.len() - 1].trim();
                        let list = if inner.is_empty() {
                            format!("[{team}]")
                        } else {
                            format!("[{inner}, {team}]")
                        };
                        out[line] = lines[line].replacen(value, &list, 1);
                    } else if value.is_empty() {
                        // A block list: items below, one level deeper (or at the same
                        // indent, which YAML allows for a sequence).
                        let items: Vec<usize> = (line + 1..end)
                            .take_while(|i| {
                                let l = lines[*i];
                                l.trim().is_empty() || l.trim_start().starts_with('#') || {
                                    let lead = l.len() - l.trim_start().len();
                                    l.trim_start().starts_with("- ") && lead >= indent
                                }
                            })
                            .filter(|i| lines[*i].trim_start().starts_with("- "))
                            .collect();
                        let Some(last) = items.last() else {
                            return Err(by_hand());
                        };
                        let lead = lines[*last].len() - lines[*last].trim_start().len();
                        out.insert(last + 1, format!("{}- {team}", " ".repeat(lead)));
                    } else {
                        return Err(by_hand());
                    }
                }
            }
        }
    }
    // The file's own line ending (`lines` took off the `\r` of a CRLF file).
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut edited = out.join(newline);
    if text.ends_with('\n') || text.is_empty() {
        edited.push_str(newline);
    }
    let after = comind_core::Config::from_yaml_str(&edited, file).map_err(|_| by_hand())?;
    if !after.platform.teams.iter().any(|t| t.as_str() == team)
        || after.platform.teams.len() != before.platform.teams.len() + 1
    {
        return Err(by_hand());
    }
    Ok(Some(edited))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn added(text: &str) -> String {
        add_team(text, "comind.yaml", "backend")
            .unwrap()
            .expect("an edit")
    }

    #[test]
    fn the_team_is_added_in_the_file_s_own_style_keeping_everything_else() {
        assert_eq!(
            added("environment: dev\n"),
            "environment: dev\n\nplatform:\n  teams: [backend]\n"
        );
        assert_eq!(
            added("# mine\nplatform:\n  quota:\n    pods: 10\n"),
            "# mine\nplatform:\n  teams: [backend]\n  quota:\n    pods: 10\n"
        );
        assert_eq!(
            added("platform:\n  teams: [web]  # ours\nprofile: local\n"),
            "platform:\n  teams: [web, backend]  # ours\nprofile: local\n"
        );
        assert_eq!(
            added("platform:\n    teams: []\n"),
            "platform:\n    teams: [backend]\n"
        );
        assert_eq!(
            added(
                "platform:\n  teams:\n    - web\n    # later\n    - data\n  quota: {}\nprofile: local\n"
            ),
            "platform:\n  teams:\n    - web\n    # later\n    - data\n    - backend\n  quota: {}\nprofile: local\n"
        );
        assert_eq!(
            add_team("platform:\n  teams: [backend]\n", "comind.yaml", "backend").unwrap(),
            None
        );
        assert_eq!(
            added("environment: dev\r\nplatform:\r\n  teams: [web]\r\n"),
            "environment: dev\r\nplatform:\r\n  teams: [web, backend]\r\n"
        );
    }

    #[test]
    fn a_form_it_does_not_know_is_left_alone_with_a_hint() {
        let err = add_team("platform: {teams: [web]}\n", "comind.yaml", "backend").unwrap_err();
        assert!(err.hint().unwrap().contains("by hand"), "{err}");
    }
}
