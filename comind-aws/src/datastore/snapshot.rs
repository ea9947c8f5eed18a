//! Final snapshots: what `down` keeps of the data of RDS and ElastiCache.
//!
//! A plain `down` deletes the database and the cache but first snapshots them under
//! a name of their own, `<resource>-final-<UTC time>`, tagged like the resource (and
//! with the user's own tags of it). The next `up` restores the newest of them, so data
//! survives a `down`/`up` cycle. `down` keeps the newest of them, as many as the
//! service's `final_snapshots` setting says, and removes older ones of ours (their
//! data is in the newer ones: each `up` restores the newest); `down --purge` deletes
//! them all.

use std::time::SystemTime;

use comind_core::{Kept, Result};

use super::{Datastore, Run};
use crate::tags::{Selector, Tags};

/// A manual snapshot as the service lists it, before the checks that make it ours.
pub(crate) struct Listed {
    pub(crate) id: String,
    pub(crate) arn: String,
    pub(crate) available: bool,
    /// When it was taken, if the listing says (RDS); final snapshots sort by it, then
    /// by name, whose end is the time it was taken.
    pub(crate) taken: Option<(i64, u32)>,
    /// Its tags, if the listing carries them (RDS); otherwise they are asked for.
    pub(crate) tags: Option<Tags>,
}

/// A final snapshot of ours.
#[derive(Debug, Clone)]
pub(crate) struct FinalSnapshot {
    pub(crate) id: String,
    pub(crate) available: bool,
    /// Its tags: ours, and the user's own tags of the resource it was taken of.
    pub(crate) tags: Tags,
    taken: Option<(i64, u32)>,
}

impl<S: Datastore> Run<'_, S> {
    /// Our final snapshots of the resource, oldest first: named with its final prefix
    /// and tagged as ours.
    pub(crate) async fn final_snapshots(&self) -> Result<Vec<FinalSnapshot>> {
        let prefix = prefix(&self.name);
        let mut found = Vec::new();
        for listed in S::snapshots(self.clients, &self.name).await? {
            if !listed.id.starts_with(&prefix) {
                continue;
            }
            let tags = match listed.tags {
                Some(tags) => tags,
                None => {
                    let resource = format!("snapshot {}", listed.id);
                    S::tags_of(self.clients, &listed.arn, &resource).await?
                }
            };
            if Selector::new(self.env, S::COMPONENT).check(S::SNAPSHOT_KIND, &listed.id, &tags) {
                found.push(FinalSnapshot {
                    id: listed.id,
                    available: listed.available,
                    tags,
                    taken: listed.taken,
                });
            }
        }
        found.sort_by(|a, b| (a.taken, &a.id).cmp(&(b.taken, &b.id)));
        Ok(found)
    }
}

/// The name of a final snapshot of `resource` taken at `now`: letters, digits and
/// single hyphens, as RDS and ElastiCache require, and none of `taken`.
///
/// Two `down`s in one second (a fast test account) would otherwise pick one name,
/// and the second would take the first snapshot for its own and lose its data; the
/// suffix keeps names in the order they were taken (`-` sorts before any digit).
pub(crate) fn final_name(resource: &str, now: SystemTime, taken: &[String]) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let base = format!("{}{stamp}", prefix(resource));
    let free = |name: &String| !taken.contains(name);
    std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(free)
        .unwrap_or(base)
}

/// How many of `snapshots` (ours, oldest first) are older than the newest `keep`
/// available ones, and go: nothing goes until `keep` of them are available, so a
/// snapshot still being taken never costs an older, complete one.
pub(crate) fn superseded(snapshots: &[FinalSnapshot], keep: u32) -> usize {
    let keep = usize::try_from(keep.max(1)).unwrap_or(usize::MAX);
    let mut available = 0;
    for (i, snap) in snapshots.iter().enumerate().rev() {
        if snap.available {
            available += 1;
            if available == keep {
                return i;
            }
        }
    }
    0
}

/// What every final snapshot of `resource` is named like.
pub(crate) fn prefix(resource: &str) -> String {
    format!("{resource}-final-")
}

/// How `down` reports a final snapshot it keeps.
pub(crate) fn kept(kind: &str, name: &str, of: &str) -> Kept {
    Kept {
        kind: kind.to_string(),
        name: name.to_string(),
        reason: format!(
            "final snapshot of {of}, restored by the next `comind up`; `comind down --purge` \
             deletes it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_are_valid_identifiers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let name = final_name("comind-dev-postgres", now, &[]);
        assert_eq!(name, "comind-dev-postgres-final-20231114221320");
        assert!(!name.contains("--"));
        assert!(name.starts_with(&prefix("comind-dev-postgres")));
    }

    #[test]
    fn a_second_snapshot_in_the_same_second_gets_a_name_of_its_own_that_sorts_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let first = final_name("comind-dev-cache", now, &[]);
        let second = final_name("comind-dev-cache", now, std::slice::from_ref(&first));
        let third = final_name("comind-dev-cache", now, &[first.clone(), second.clone()]);
        assert_eq!(second, format!("{first}-2"));
        assert_eq!(third, format!("{first}-3"));
        let next_second = final_name("comind-dev-cache", now + Duration::from_secs(1), &[]);
        let mut sorted = vec![next_second.clone(), third.clone(), first.clone()];
        sorted.sort();
        assert_eq!(sorted, vec![first, third, next_second]);
    }

    fn snap(id: &str, available: bool) -> FinalSnapshot {
        FinalSnapshot {
            id: id.to_string(),
            available,
            tags: Tags::new(),
            taken: None,
        }
    }

    #[test]
    fn only_snapshots_older_than_the_newest_available_ones_are_superseded() {
        let all = [snap("a", true), snap("b", true), snap("c", true)];
        assert_eq!(superseded(&all, 1), 2);
        assert_eq!(superseded(&all, 2), 1);
        assert_eq!(superseded(&all, 3), 0);
        assert_eq!(superseded(&all, 5), 0);
        assert_eq!(
            superseded(&all, 0),
            2,
            "0 is read as 1: the newest always stays"
        );
        // The newest is still being taken: the complete one before it stays too.
        let pending = [snap("a", true), snap("b", true), snap("c", false)];
        assert_eq!(superseded(&pending, 1), 1);
        let none_ready = [snap("a", false), snap("b", false)];
        assert_eq!(superseded(&none_ready, 1), 0);
        assert_eq!(superseded(&[], 1), 0);
    }
}
