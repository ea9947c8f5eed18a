//! `down` of a data service: a final snapshot first unless purging, then the resource
//! and its subnet group; the newest final snapshots stay (older ones of ours go), or
//! all go with `--purge`.

use std::time::SystemTime;

use comind_core::{Change, Kept, Result};

use super::{Datastore, Run, snapshot};

impl<S: Datastore> Run<'_, S> {
    /// Removes what is ours, keeping the data unless `purge`; what it keeps.
    pub(crate) async fn destroy(&mut self, purge: bool) -> Result<Vec<Kept>> {
        let mut kept = Vec::new();
        if let Some(live) = S::describe(self.clients, &self.name).await? {
            let live_tags = S::tags(self.clients, &live).await?;
            if !self.env.owns(&live_tags, Some(S::COMPONENT)) {
                kept.push(Kept {
                    kind: S::KIND.into(),
                    name: self.name.clone(),
                    reason: "not created by Comind (no ownership tags); left untouched".into(),
                });
                return Ok(kept);
            }
            if S::status(&live) != "deleting" {
                S::prepare_delete(self, &live).await?;
                let final_snapshot = if !purge && S::can_snapshot(&live) {
                    let taken: Vec<String> = S::snapshots(self.clients, &self.name)
                        .await?
                        .into_iter()
                        .map(|s| s.id)
                        .collect();
                    let id = snapshot::final_name(&self.name, SystemTime::now(), &taken);
                    self.pass.record([Change::create(S::SNAPSHOT_KIND, &id)
                        .because(format!("final snapshot of {}", self.name))]);
                    Some(id)
                } else {
                    None
                };
                S::delete(self, &live, &live_tags, final_snapshot.as_deref()).await?;
            }
            self.pass.record([Change::delete(S::KIND, &self.name)]);
            self.wait_gone().await?;
        }
        self.ctx.checkpoint()?;

        self.remove_subnet_group().await?;

        let snapshots = self.final_snapshots().await?;
        if purge {
            for snap in &snapshots {
                self.pass
                    .record([Change::delete(S::SNAPSHOT_KIND, &snap.id)]);
                S::delete_snapshot(self.clients, &snap.id).await?;
            }
        } else {
            let keep = S::final_snapshots_kept(self.env);
            let older = snapshot::superseded(&snapshots, keep);
            for snap in &snapshots[..older] {
                self.pass
                    .record([Change::delete(S::SNAPSHOT_KIND, &snap.id).because(format!(
                        "older than the newest {keep} final snapshot(s) of {} that `{}` keeps",
                        self.name,
                        S::FINAL_SNAPSHOTS_SETTING
                    ))]);
                S::delete_snapshot(self.clients, &snap.id).await?;
            }
            for snap in &snapshots[older..] {
                kept.push(snapshot::kept(S::SNAPSHOT_KIND, &snap.id, &self.name));
            }
        }
        if purge {
            // The secret protected data that is gone now.
            self.env.state().remove_credentials(S::COMPONENT)?;
        }
        Ok(kept)
    }
}
