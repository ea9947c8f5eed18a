//! Final snapshots: what `down` keeps of the data of RDS and ElastiCache.
//!
//! A plain `down` deletes the database and the cache but first snapshots them under
//! a name of their own, `<resource>-final-<UTC time>`, tagged like the resource (and
//! with the user's own tags of it). The next `up` restores the newest of them, so data
//! survives a `down`/`up` cycle; `down --purge` deletes them.

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
/// single hyphens, as RDS and ElastiCache require.
pub(crate) fn final_name(resource: &str, now: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{}{stamp}", prefix(resource))
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
        let name = final_name("comind-dev-postgres", now);
        assert_eq!(name, "comind-dev-postgres-final-20231114221320");
        assert!(!name.contains("--"));
        assert!(name.starts_with(&prefix("comind-dev-postgres")));
    }
}
