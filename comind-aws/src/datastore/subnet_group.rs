//! The subnet group of a data service: over the environment's private subnets, found
//! by name, ours only with our tags.

use std::collections::BTreeSet;

use comind_core::{Change, Error, Result};

use super::{Datastore, Run, SubnetGroup};
use crate::create::{self, Made};
use crate::network::Placement;
use crate::tags;

impl<S: Datastore> Run<'_, S> {
    /// Creates the subnet group, or moves it onto the network's subnets.
    pub(crate) async fn subnet_group(&mut self, placement: Option<&Placement>) -> Result<()> {
        let resource = format!("{} {}", S::SUBNET_GROUP_KIND, self.name);
        let live = match S::describe_subnet_group(self.clients, &self.name).await? {
            Some(live) => {
                self.require_own_subnet_group(&live).await?;
                live
            }
            None => {
                if !self
                    .pass
                    .will(Change::create(S::SUBNET_GROUP_KIND, &self.name))
                {
                    return Ok(());
                }
                let placement = placement.ok_or_else(|| {
                    Error::internal(format!("{resource} needs the network's subnets"))
                })?;
                let ours = tags::ownership(self.env, S::COMPONENT, None);
                let made = create::once(
                    &resource,
                    || S::create_subnet_group(self.clients, &self.name, &placement.subnets, &ours),
                    || async {
                        match S::describe_subnet_group(self.clients, &self.name).await? {
                            Some(live) => {
                                self.require_own_subnet_group(&live).await?;
                                Ok(Some(live))
                            }
                            None => Ok(None),
                        }
                    },
                )
                .await?;
                match made {
                    Made::Created(()) => return Ok(()),
                    // Made by a lost answer or a dying earlier run: converged below.
                    Made::Found(live) => live,
                }
            }
        };
        if let Some(placement) = placement {
            let want: BTreeSet<String> = placement.subnets.iter().cloned().collect();
            if live.subnets != want
                && self.pass.will(
                    Change::update(S::SUBNET_GROUP_KIND, &self.name)
                        .because("subnets differ from the network's"),
                )
            {
                S::modify_subnet_group(self.clients, &self.name, &placement.subnets).await?;
            }
        }
        Ok(())
    }

    /// Ok when the subnet group `live` (of our name) carries our tags.
    async fn require_own_subnet_group(&self, live: &SubnetGroup) -> Result<()> {
        let resource = format!("{} {}", S::SUBNET_GROUP_KIND, self.name);
        let live_tags = S::tags_of(self.clients, &live.arn, &resource).await?;
        tags::require_owned(
            self.env,
            S::COMPONENT,
            S::SUBNET_GROUP_KIND,
            &self.name,
            &live_tags,
        )
    }

    /// Deletes the subnet group if it is ours.
    pub(crate) async fn remove_subnet_group(&mut self) -> Result<()> {
        let Some(group) = S::describe_subnet_group(self.clients, &self.name).await? else {
            return Ok(());
        };
        let resource = format!("{} {}", S::SUBNET_GROUP_KIND, self.name);
        let live = S::tags_of(self.clients, &group.arn, &resource).await?;
        if self.env.owns(&live, Some(S::COMPONENT)) {
            self.pass
                .record([Change::delete(S::SUBNET_GROUP_KIND, &self.name)]);
            S::delete_subnet_group(self.clients, &self.name).await?;
        }
        Ok(())
    }
}
