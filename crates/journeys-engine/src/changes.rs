//! Translation of core transitions into store rows: timers, outbox rows, timeline rows,
//! instance rows and counters, gathered into the one [`Changes`] a lane commits.
//!
//! Writes are kept lean:
//! - Timers set and cancelled within one batch cancel out, so the commit never inserts and
//!   deletes the same row.
//! - A transition is one compact timeline row ([`TimelineEntry::transition`]), however many
//!   entries (steps, branch, send, end) the core recorded for it.
//! - An instance that starts and ends within the batch gets no instance row: its last timeline
//!   row stands in for it ([`TimelineEntry::stand_in_for`]). Such an instance is never read
//!   back by the runtime (only active instances are), and the control plane reads it from that
//!   row. A resent entry event is then caught by the dedupe window only, not also by the
//!   instance id until the instance is purged.
//! - Journey statistics are counters summed per batch ([`Changes::counters`]), so they survive
//!   purges of finished instances and their timelines.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use journeys_core::machine::{
    BRANCH_DETAIL_KEY, Effect, Instance, InstanceState as CoreState, TimelineKind,
};
use journeys_store::{
    Changes, CounterKey, CounterKind, InstanceRecord, InstanceState, OutboxRecord, OutboxStatus,
    TimelineEntry, TimerRecord, TransitionEntry,
};
use sha2::{Digest, Sha256};

use crate::stats::StatsDelta;

/// The row id of a core timer id.
///
/// Core timer ids are deterministic (`<instance>:<step>:<pass>`) but longer than the store's
/// 36-character id column, so the row id is a UUID-shaped SHA-256 of the core id: still
/// deterministic, so a fired timer is matched against the timer its instance waits on by
/// comparing row ids.
pub(crate) fn timer_row_id(core_id: &str) -> String {
    let digest = Sha256::digest(core_id.as_bytes());
    let x = hex::encode(&digest[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The exit-reason counter label of an `exited` timeline entry's detail (a serialized
/// `ExitReason`): `exit_rule:<index>` for an exit rule, else the reason's code.
fn exit_reason_label(detail: &serde_json::Value) -> String {
    let code = detail
        .get("code")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    match detail.get("index").and_then(serde_json::Value::as_u64) {
        Some(index) if code == "exit_rule" => format!("exit_rule:{index}"),
        _ => code.to_owned(),
    }
}

/// Rows gathered for one commit.
#[derive(Debug, Default)]
pub(crate) struct ChangeSet {
    pub changes: Changes,
    timers_new: BTreeMap<String, TimerRecord>,
    timers_deleted: BTreeSet<String>,
    /// Instance id -> index in `changes.timeline` of its last row in this batch.
    last_rows: HashMap<String, usize>,
}

impl ChangeSet {
    pub fn set_timer(&mut self, timer: TimerRecord) {
        self.timers_deleted.remove(&timer.id);
        self.timers_new.insert(timer.id.clone(), timer);
    }

    pub fn delete_timer(&mut self, row_id: String) {
        if self.timers_new.remove(&row_id).is_none() {
            self.timers_deleted.insert(row_id);
        }
    }

    /// Ids of the instances this change set creates.
    pub fn new_instance_ids(&self) -> Vec<String> {
        self.changes
            .instances_new
            .iter()
            .map(|i| i.id.clone())
            .collect()
    }

    /// Records the effects of a transition of `inst` (the caller keeps the new instance and
    /// writes its row once, at the end of the batch): timers, sends, one compact timeline row
    /// and the counters. Counts sends and endings into `delta`.
    pub fn record(
        &mut self,
        inst: &Instance,
        from_step: Option<&str>,
        effects: &[Effect],
        now: DateTime<Utc>,
        delta: &mut StatsDelta,
    ) {
        let mut entries = Vec::new();
        let mut first = None;
        let mut at_step = from_step;
        for effect in effects {
            match effect {
                Effect::SetTimer(timer) => self.set_timer(TimerRecord {
                    id: timer_row_id(&timer.id),
                    instance_id: inst.id.clone(),
                    profile_id: inst.profile_id.clone(),
                    journey_id: inst.journey_id.clone(),
                    due_at: timer.due_at,
                    kind: timer.kind.as_str().to_owned(),
                    step_key: timer.step_key.clone(),
                }),
                Effect::CancelTimer { id } => self.delete_timer(timer_row_id(id)),
                Effect::Send(send) => {
                    delta.sends_queued += 1;
                    self.changes.outbox_new.push(outbox_record(inst, send, now));
                }
                Effect::Completed => delta.instances_completed += 1,
                Effect::Exited { .. } => {}
                Effect::Failed { reason } => {
                    delta.instances_failed += 1;
                    tracing::warn!(
                        instance_id = %inst.id,
                        journey_id = %inst.journey_id,
                        code = reason.code(),
                        reason = %reason,
                        "instance failed"
                    );
                }
                Effect::Timeline(entry) => {
                    self.count(&inst.journey_id, at_step, entry);
                    at_step = Some(&entry.step_key);
                    first.get_or_insert(entry);
                    entries.push(TransitionEntry {
                        step_key: entry.step_key.clone(),
                        kind: entry.kind.as_str().to_owned(),
                        detail: entry.detail.clone(),
                    });
                }
            }
        }
        if let Some(first) = first
            && let Some(row) = TimelineEntry::transition(
                &inst.id,
                &inst.profile_id,
                first.at,
                first.cause.label(),
                entries,
            )
        {
            self.last_rows
                .insert(inst.id.clone(), self.changes.timeline.len());
            self.changes.timeline.push(row);
        }
    }

    /// Adds a timeline entry of `journey_id` to the counters it feeds, in the hour of the
    /// entry. `at_step` is the step the instance was at before the entry: reaching another
    /// step completes that one.
    fn count(
        &mut self,
        journey_id: &str,
        at_step: Option<&str>,
        entry: &journeys_core::machine::TimelineEntry,
    ) {
        let at = entry.at;
        let key = |kind| CounterKey::new(journey_id, &entry.step_key, kind).at(at);
        match entry.kind {
            TimelineKind::Entered => self.add(key(CounterKind::Entered)),
            TimelineKind::Step => {
                if let Some(left) = at_step.filter(|left| *left != entry.step_key) {
                    self.add(CounterKey::new(journey_id, left, CounterKind::Completed).at(at));
                }
                self.add(key(CounterKind::Step));
            }
            TimelineKind::Send => self.add(key(CounterKind::Send)),
            TimelineKind::Completed => self.add(key(CounterKind::Completed)),
            TimelineKind::Failed => self.add(key(CounterKind::Failed)),
            TimelineKind::TimedOut => self.add(key(CounterKind::TimedOut)),
            TimelineKind::Exited => {
                self.add(key(CounterKind::Exited));
                self.add(
                    CounterKey::with_branch(
                        journey_id,
                        "",
                        CounterKind::ExitReason,
                        &exit_reason_label(&entry.detail),
                    )
                    .at(at),
                );
            }
            TimelineKind::Branch => {
                // A data split's "everyone else" carries no branch name: counted as the empty
                // branch.
                let name = entry
                    .detail
                    .get(BRANCH_DETAIL_KEY)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                self.add(
                    CounterKey::with_branch(journey_id, &entry.step_key, CounterKind::Branch, name)
                        .at(at),
                );
            }
            TimelineKind::ReturnedToStart => {}
        }
    }

    /// Counts an entry into `journey_id` not made for `reason`, at `now`.
    pub fn count_skip(&mut self, journey_id: &str, reason: &str, now: DateTime<Utc>) {
        self.add(CounterKey::with_branch(journey_id, "", CounterKind::Skipped, reason).at(now));
    }

    fn add(&mut self, key: CounterKey) {
        *self.changes.counters.entry(key).or_default() += 1;
    }

    /// Adds the row of an instance changed in this batch: new when `stored_version` is
    /// `None`, else an update expected to find that version. A new instance that already
    /// ended gets no row: its last timeline row of the batch stands in for it. The row expires
    /// `lifetime` after the instance entered (the configured maximum lifetime).
    pub fn write_instance(
        &mut self,
        inst: &Instance,
        stored_version: Option<i64>,
        lifetime: TimeDelta,
    ) -> Result<(), serde_json::Error> {
        if stored_version.is_none()
            && !inst.is_active()
            && let Some(&last) = self.last_rows.get(&inst.id)
            && let Some(row) = self.changes.timeline.get_mut(last)
        {
            row.stand_in_for(
                &inst.journey_id,
                inst.journey_version,
                inst.unique_value.as_deref(),
            );
            return Ok(());
        }
        let version = stored_version.map_or(1, |v| v + 1);
        let record = instance_record(inst, version, lifetime)?;
        match stored_version {
            None => self.changes.instances_new.push(record),
            Some(expected) => self.changes.instances_updated.push((record, expected)),
        }
        Ok(())
    }

    /// The finished change set.
    pub fn into_changes(mut self) -> Changes {
        self.changes.timers_new = self.timers_new.into_values().collect();
        self.changes.timers_deleted = self.timers_deleted.into_iter().collect();
        self.changes
    }
}

/// The outbox row of a send queued by `inst`.
fn outbox_record(
    inst: &Instance,
    send: &journeys_core::machine::SendRequest,
    now: DateTime<Utc>,
) -> OutboxRecord {
    OutboxRecord {
        id: journeys_store::new_id(),
        instance_id: inst.id.clone(),
        profile_id: inst.profile_id.clone(),
        journey_id: inst.journey_id.clone(),
        step_key: send.step_key.clone(),
        destination_id: send.destination_id.clone(),
        message_id: send.message_id.clone(),
        method: send.method.clone(),
        path: send.path.clone(),
        payload: send.payload.clone(),
        status: OutboxStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        traceparent: None,
        created_at: now,
        sent_at: None,
        dead_at: None,
    }
}

/// The stored form of a core instance at `version`, expiring `lifetime` after it entered.
fn instance_record(
    inst: &Instance,
    version: i64,
    lifetime: TimeDelta,
) -> Result<InstanceRecord, serde_json::Error> {
    let state = match inst.state {
        CoreState::Active => InstanceState::Active,
        CoreState::Completed => InstanceState::Completed,
        CoreState::Exited => InstanceState::Exited,
        CoreState::Failed => InstanceState::Failed,
    };
    let active_key = match (&inst.unique_value, inst.is_active()) {
        (Some(value), true) => Some(InstanceRecord::active_key_for(
            &inst.journey_id,
            &inst.profile_id,
            value,
        )),
        _ => None,
    };
    let passes = inst.passes.get(&inst.current_step).copied().unwrap_or(0);
    Ok(InstanceRecord {
        id: inst.id.clone(),
        journey_id: inst.journey_id.clone(),
        journey_revision: inst.journey_version,
        profile_id: inst.profile_id.clone(),
        unique_value: inst.unique_value.clone(),
        state,
        current_step: Some(inst.current_step.clone()),
        waiting_event: inst.waiting_events().first().cloned(),
        context: serde_json::Value::Object(inst.context.clone()),
        state_blob: serde_json::to_value(inst)?,
        passes: i32::try_from(passes).unwrap_or(i32::MAX),
        version,
        entered_at: inst.entered_at,
        updated_at: inst.updated_at,
        ended_at: inst.ended_at,
        active_key,
        expires_at: inst.entered_at + lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(id: &str) -> TimerRecord {
        TimerRecord {
            id: id.to_owned(),
            instance_id: "i".into(),
            profile_id: "p".into(),
            journey_id: "j".into(),
            due_at: Utc::now(),
            kind: "delay".into(),
            step_key: "wait".into(),
        }
    }

    #[test]
    fn timer_row_ids_are_deterministic_uuid_shaped() {
        let a = timer_row_id("0b4e2c1a-0000-0000-0000-000000000000:hold:0");
        assert_eq!(a.len(), 36);
        assert_eq!(
            a,
            timer_row_id("0b4e2c1a-0000-0000-0000-000000000000:hold:0")
        );
        assert_ne!(
            a,
            timer_row_id("0b4e2c1a-0000-0000-0000-000000000000:hold:1")
        );
    }

    #[test]
    fn timers_set_and_cancelled_in_one_batch_cancel_out() {
        let mut set = ChangeSet::default();
        set.set_timer(timer("t1"));
        set.set_timer(timer("t2"));
        set.delete_timer("t1".into());
        set.delete_timer("t0".into());
        let changes = set.into_changes();
        assert_eq!(
            changes
                .timers_new
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>(),
            vec!["t2"]
        );
        assert_eq!(changes.timers_deleted, vec!["t0".to_owned()]);
    }
}
