//! Identity resolution in a batch: links, refusals, hand-overs of linked ids and merges.
//!
//! A link is made by the owner of the linked id's partition (the id's lane): it records the
//! link (`identities` row, its merge pending) in its own commit and hands the event on to the
//! user's profile, preceded by an [`Item::Merge`]. From then on, everything that still reaches
//! the id (events carrying it alone, timers of its instances, operator exits) is handed on.
//! The user's lane merges the pending linked profiles the first time a batch touches the
//! user's profile after loading it from the store, so a merge committed by the id's lane is
//! never lost, even if the hand-over is (a crash in between): it happens with the profile's
//! next item.

use journeys_store::{IdentityLink, IdentityRefusal, ProfileMerge, TimelineEntry};
use serde_json::json;

use super::Planner;
use crate::job::{Item, Outcome};

impl Planner<'_> {
    /// Where an item of `profile_id` belongs when the id is linked to another profile.
    pub(super) fn redirect(&self, profile_id: &str, item: &Item) -> Option<String> {
        if matches!(item, Item::Link(_)) {
            return None;
        }
        self.profiles.get(profile_id)?.linked_to.clone()
    }

    /// An event linking `identity` (this item's profile) to its user: links it unless it
    /// belongs to another profile already, and hands the event on to the user's profile.
    pub(super) fn link(&mut self, identity: &str, event: &journeys_core::model::Event) -> Outcome {
        let Some(user) = event.user_id.clone().filter(|u| !u.is_empty()) else {
            return self.event(identity, event);
        };
        let now = self.ctx.now;
        let Some(work) = self.profiles.get_mut(identity) else {
            return Outcome::Forward {
                to: user,
                merge: false,
            };
        };
        let owner = match (&work.linked_to, work.tombstone) {
            (Some(owner), _) if *owner == user => None,
            (Some(owner), _) => Some(owner.clone()),
            // A deleted id is not linked: the event goes to the user alone.
            (None, Some(_)) => None,
            // An id that other ids are linked to is a profile of its own: not moved.
            (None, None) if !work.identities.is_empty() => Some(identity.to_owned()),
            (None, None) => {
                work.linked_to = Some(user.clone());
                self.out.changes.links.push(IdentityLink {
                    identity: identity.to_owned(),
                    profile_id: user.clone(),
                    linked_at: now,
                });
                self.delta.identities_linked += 1;
                tracing::info!(identity, profile_id = %user, "identity linked");
                return Outcome::Forward {
                    to: user,
                    merge: true,
                };
            }
        };
        if let Some(owner) = owner {
            self.refuse(identity, &user, &owner);
        }
        Outcome::Forward {
            to: user,
            merge: false,
        }
    }

    /// A merge told by the owner of `from`: the merges waiting for the profile were applied
    /// when it was loaded; `from`'s link must be among its ids by now. On the log the owner of
    /// `from` publishes the merge before it commits the link, so a merge read first is refused
    /// (`link_pending`: read again after a pause, for up to about half a minute, the time for
    /// the linking partition to commit or change owners; skipped after that, the merge then
    /// waiting for the profile's next load from the store).
    pub(super) fn merge_item(&mut self, profile_id: &str, from: &str) -> Outcome {
        let linked = self
            .profiles
            .get(profile_id)
            .is_some_and(|work| work.identities.iter().any(|id| id == from));
        if linked {
            return Outcome::Merged;
        }
        tracing::debug!(profile_id, from, "merge before its link is committed");
        Outcome::rejected(crate::ack::LINK_PENDING, "the link is not committed yet")
    }

    /// A merge of `from` told to `profile_id`, which is itself linked to `to` by now: the
    /// pending link of `from` moves on to `to`, where the merge goes next.
    pub(super) fn relink(&mut self, profile_id: &str, from: &str, to: &str) {
        let pending = self
            .profiles
            .get(profile_id)
            .is_some_and(|work| work.identities.iter().any(|id| id == from));
        if !pending {
            return;
        }
        tracing::info!(
            identity = from,
            from = profile_id,
            to,
            "pending link moved on"
        );
        self.out.changes.relinks.push(IdentityLink {
            identity: from.to_owned(),
            profile_id: to.to_owned(),
            linked_at: self.ctx.now,
        });
    }

    fn refuse(&mut self, identity: &str, user: &str, owner: &str) {
        tracing::warn!(
            identity,
            profile_id = %user,
            linked_to = %owner,
            "identity link refused: the id belongs to another profile"
        );
        self.delta.links_refused += 1;
        self.out.changes.refusals.push(IdentityRefusal {
            identity: identity.to_owned(),
            refused_profile_id: user.to_owned(),
            profile_id: owner.to_owned(),
            refused_at: self.ctx.now,
        });
    }

    /// Merges the linked profiles waiting for `profile_id` (loaded with it) into it.
    pub(super) fn merge_pending(&mut self, profile_id: &str) {
        let now = self.ctx.now;
        let Some(work) = self.profiles.get_mut(profile_id) else {
            return;
        };
        if work.linked_to.is_some() {
            return;
        }
        for (from, state) in std::mem::take(&mut work.pending) {
            let merged = work.merge_from(profile_id, &from, &state);
            for journey_id in merged.entered_once {
                self.out
                    .changes
                    .enter_once_merged
                    .push((journey_id, profile_id.to_owned()));
            }
            for &position in &merged.moved {
                let Some(inst) = work.state.instances.get(position) else {
                    continue;
                };
                self.out.changes.timeline.push(TimelineEntry {
                    instance_id: inst.id.clone(),
                    profile_id: profile_id.to_owned(),
                    at: now,
                    step_key: inst.current_step.clone(),
                    kind: "merged".into(),
                    cause: format!("identity:{from}"),
                    detail: json!({"from": from, "into": profile_id}),
                    journey_id: None,
                });
            }
            tracing::info!(
                from = %from,
                into = profile_id,
                instances = merged.moved.len(),
                "linked profile merged"
            );
            self.delta.profiles_merged += 1;
            self.out.changes.merges.push(ProfileMerge {
                from,
                into: profile_id.to_owned(),
                merged_at: now,
            });
        }
    }
}
