//! Counters of what the engine did: events by outcome, entries and why some were skipped,
//! hold matches, exits, timers, sends, commits and conflicts.
//!
//! A lane gathers a [`StatsDelta`] while it evaluates a batch and adds it only after the
//! commit, so the counters describe committed effects. Scalar counters are atomics; the
//! by-reason maps sit behind a mutex taken once per batch. Every delta also goes to the
//! process's [`journeys_telemetry::metrics`] (`/metrics`, OTLP).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the engine's counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub events_accepted: u64,
    pub events_duplicate: u64,
    /// Rejected events by code (`rate_limited`, `unavailable`, `overloaded`, `invalid`…).
    pub events_rejected: BTreeMap<String, u64>,
    /// Instances started.
    pub entries: u64,
    /// Entries not made, by reason: the core's skip reasons (`filters_not_matched`,
    /// `already_entered`, `duplicate_entry`…), `too_many_instances` for the per-profile limit
    /// and `replayed_entry` for an entry event whose instance already exists.
    pub entries_skipped: BTreeMap<String, u64>,
    /// Hold-until branches taken by an event.
    pub hold_matches: u64,
    /// Instances ended by an exit rule.
    pub exits: u64,
    /// Instances ended by an operator or by archiving in exit mode.
    pub terminations: u64,
    /// Timers that advanced their instance.
    pub timers_fired: u64,
    /// Timers deleted without effect (instance gone, finished, or waiting on another timer).
    pub timers_discarded: u64,
    pub instances_completed: u64,
    pub instances_failed: u64,
    /// Outbox rows written.
    pub sends_queued: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Commits that lost an optimistic-concurrency check and were retried.
    pub conflicts: u64,
    /// Batches refused by the epoch fence (the partition had moved to another node).
    pub fenced: u64,
    /// Ids linked to a user's profile (identity resolution).
    pub identities_linked: u64,
    /// Linked profiles whose state was moved into the user's profile.
    pub profiles_merged: u64,
    /// Links refused: the id already belonged to another profile.
    pub links_refused: u64,
}

/// What one batch adds to the counters, applied after its commit.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatsDelta {
    pub events_accepted: u64,
    pub events_duplicate: u64,
    pub events_rejected: BTreeMap<String, u64>,
    pub entries: u64,
    pub entries_skipped: BTreeMap<&'static str, u64>,
    pub hold_matches: u64,
    pub exits: u64,
    pub terminations: u64,
    pub timers_fired: u64,
    pub timers_discarded: u64,
    pub instances_completed: u64,
    pub instances_failed: u64,
    pub sends_queued: u64,
    pub identities_linked: u64,
    pub profiles_merged: u64,
    pub links_refused: u64,
}

impl StatsDelta {
    pub fn skip(&mut self, reason: &'static str) {
        *self.entries_skipped.entry(reason).or_default() += 1;
    }

    pub fn reject(&mut self, code: &str) {
        match self.events_rejected.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.events_rejected.insert(code.to_owned(), 1);
            }
        }
    }
}

/// The live counters, shared by the lanes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    events_accepted: AtomicU64,
    events_duplicate: AtomicU64,
    entries: AtomicU64,
    hold_matches: AtomicU64,
    exits: AtomicU64,
    terminations: AtomicU64,
    timers_fired: AtomicU64,
    timers_discarded: AtomicU64,
    instances_completed: AtomicU64,
    instances_failed: AtomicU64,
    sends_queued: AtomicU64,
    commits: AtomicU64,
    conflicts: AtomicU64,
    fenced: AtomicU64,
    identities_linked: AtomicU64,
    profiles_merged: AtomicU64,
    links_refused: AtomicU64,
    by_reason: Mutex<ByReason>,
}

#[derive(Debug, Default)]
struct ByReason {
    rejected: BTreeMap<String, u64>,
    skipped: BTreeMap<String, u64>,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Adds `delta` to the process-wide metrics.
fn export(delta: &StatsDelta) {
    let m = journeys_telemetry::metrics::metrics();
    m.events.add(&["accepted"], delta.events_accepted);
    m.events.add(&["duplicate"], delta.events_duplicate);
    for (code, n) in &delta.events_rejected {
        m.events.add(&["rejected", code], *n);
    }
    m.entries.add(delta.entries);
    for (reason, n) in &delta.entries_skipped {
        m.entries_skipped.add(&[reason], *n);
    }
    m.hold_matches.add(delta.hold_matches);
    m.exits.add(delta.exits);
    m.sends_queued.add(delta.sends_queued);
    m.identity_links.add(&["linked"], delta.identities_linked);
    m.identity_links.add(&["merged"], delta.profiles_merged);
    m.identity_links.add(&["refused"], delta.links_refused);
}

impl Counters {
    pub fn apply(&self, delta: &StatsDelta) {
        export(delta);
        add(&self.events_accepted, delta.events_accepted);
        add(&self.events_duplicate, delta.events_duplicate);
        add(&self.entries, delta.entries);
        add(&self.hold_matches, delta.hold_matches);
        add(&self.exits, delta.exits);
        add(&self.terminations, delta.terminations);
        add(&self.timers_fired, delta.timers_fired);
        add(&self.timers_discarded, delta.timers_discarded);
        add(&self.instances_completed, delta.instances_completed);
        add(&self.instances_failed, delta.instances_failed);
        add(&self.sends_queued, delta.sends_queued);
        add(&self.identities_linked, delta.identities_linked);
        add(&self.profiles_merged, delta.profiles_merged);
        add(&self.links_refused, delta.links_refused);
        if delta.events_rejected.is_empty() && delta.entries_skipped.is_empty() {
            return;
        }
        let mut maps = self
            .by_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (code, n) in &delta.events_rejected {
            *maps.rejected.entry(code.clone()).or_default() += n;
        }
        for (reason, n) in &delta.entries_skipped {
            *maps.skipped.entry((*reason).to_owned()).or_default() += n;
        }
    }

    pub fn commit(&self) {
        add(&self.commits, 1);
    }

    pub fn conflict(&self) {
        add(&self.conflicts, 1);
        journeys_telemetry::metrics::metrics()
            .engine_conflicts
            .add(1);
    }

    pub fn fenced(&self) {
        add(&self.fenced, 1);
        journeys_telemetry::metrics::metrics()
            .engine_fenced_commits
            .add(1);
    }

    pub fn snapshot(&self) -> EngineStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let maps = self
            .by_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        EngineStats {
            events_accepted: get(&self.events_accepted),
            events_duplicate: get(&self.events_duplicate),
            events_rejected: maps.rejected.clone(),
            entries: get(&self.entries),
            entries_skipped: maps.skipped.clone(),
            hold_matches: get(&self.hold_matches),
            exits: get(&self.exits),
            terminations: get(&self.terminations),
            timers_fired: get(&self.timers_fired),
            timers_discarded: get(&self.timers_discarded),
            instances_completed: get(&self.instances_completed),
            instances_failed: get(&self.instances_failed),
            sends_queued: get(&self.sends_queued),
            commits: get(&self.commits),
            conflicts: get(&self.conflicts),
            fenced: get(&self.fenced),
            identities_linked: get(&self.identities_linked),
            profiles_merged: get(&self.profiles_merged),
            links_refused: get(&self.links_refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_accumulate_by_reason() {
        let counters = Counters::default();
        let mut delta = StatsDelta {
            events_accepted: 2,
            ..StatsDelta::default()
        };
        delta.reject("rate_limited");
        delta.reject("rate_limited");
        delta.skip("too_many_instances");
        counters.apply(&delta);
        counters.apply(&delta);
        counters.commit();
        let stats = counters.snapshot();
        assert_eq!(stats.events_accepted, 4);
        assert_eq!(stats.events_rejected.get("rate_limited"), Some(&4));
        assert_eq!(stats.entries_skipped.get("too_many_instances"), Some(&2));
        assert_eq!(stats.commits, 1);
    }
}
