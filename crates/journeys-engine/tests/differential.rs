//! Differential property test: random small journeys and random event sequences, run through
//! `journeys_core::simulate` and through the real engine on SQLite (timers fired through the
//! engine's timer path in due order, on the same virtual clock), must give the same sends and
//! the same final instances. The core's profile rules are the truth both sides share; a
//! difference here means one side stopped calling them faithfully.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use journeys_core::machine::Journey;
use journeys_core::model::{Event, EventType, JourneyDefinition, JourneyMeta, Json};
use journeys_core::simulate::{SimulatedEvent, Simulation, SimulationResult, simulate};
use journeys_engine::{AckStatus, Clock, Engine, EngineConfig, TimerStatus};
use journeys_store::{InstanceFilter, InstanceState, JourneyRecord, JourneyState, Store};
use journeys_testkit::TestDb;
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::journeys::{AUDIENCE, definition, journey_spec};

#[path = "differential/journeys.rs"]
mod journeys;

#[derive(Clone, Debug)]
struct EventSpec {
    user: u8,
    kind: u8,
    session: u8,
    flag: bool,
    /// Minutes after the previous event (0: the same instant).
    gap: u8,
    /// Resend an earlier event's `messageId` (the position modulo the events before).
    resend: Option<u8>,
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    // Mostly entries, so instances meet; then identifies and hold events.
    let kind = prop::sample::select(vec![0u8, 0, 0, 0, 1, 1, 2, 3, 4, 4, 5]);
    let resend = prop::option::weighted(0.1, any::<u8>());
    (0u8..2, kind, 0u8..3, any::<bool>(), 0u8..25, resend).prop_map(
        |(user, kind, session, flag, gap, resend)| EventSpec {
            user,
            kind,
            session,
            flag,
            gap,
            resend,
        },
    )
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The events at their virtual times, in order.
fn events(specs: &[EventSpec]) -> Vec<(DateTime<Utc>, Event)> {
    let mut at = t0();
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            at += TimeDelta::minutes(i64::from(s.gap));
            let sid = format!("sess{}", s.session);
            let (kind, name, properties, traits) = match s.kind {
                0 => (
                    EventType::Track,
                    "start",
                    json!({"sid": sid, "tier": if s.flag { "gold" } else { "bronze" }}),
                    json!({}),
                ),
                1 => (
                    EventType::Track,
                    "buy",
                    json!({"sid": sid, "amount": if s.flag { 1 } else { 2 }}),
                    json!({}),
                ),
                2 => (EventType::Track, "cancel", json!({"sid": sid}), json!({})),
                3 => (EventType::Track, "quit", json!({"sid": sid}), json!({})),
                4 => (
                    EventType::Identify,
                    "identify",
                    json!({}),
                    json!({"plan": if s.flag { "pro" } else { "free" }, AUDIENCE: s.flag}),
                ),
                _ => (EventType::Track, "browse", json!({"sid": sid}), json!({})),
            };
            let event = Event {
                kind,
                message_id: match s.resend {
                    Some(earlier) if i > 0 => format!("m{}", usize::from(earlier) % i),
                    _ => format!("m{i}"),
                },
                user_id: Some(format!("user{}", s.user)),
                anonymous_id: None,
                event: name.into(),
                properties,
                traits,
                context: json!({}),
                timestamp: at,
                source_id: None,
            };
            (at, event)
        })
        .collect()
}

/// What both sides must agree on.
#[derive(Debug, PartialEq)]
struct Observed {
    /// By instance id: state, step and the stored instance.
    instances: BTreeMap<String, (String, String, Json)>,
    /// By message id: instance, step, destination and payload.
    sends: BTreeMap<String, (String, String, String, Json)>,
    /// Skipped entries by reason.
    skipped: BTreeMap<String, u64>,
}

/// The engine stores no instance row (so no state blob) for an instance that started and ended
/// within one batch; each event here is its own batch, so such an instance entered and ended at
/// the same instant. Drops the simulated blob of exactly those, so the rest still compares.
fn forget_unstored_blobs(engine: &Observed, simulated: &mut Observed) {
    for (id, (_, _, blob)) in &engine.instances {
        if !blob.is_null() {
            continue;
        }
        if let Some((state, _, sim)) = simulated.instances.get_mut(id)
            && state != "ACTIVE"
            && sim.get("entered_at").is_some()
            && sim.get("entered_at") == sim.get("ended_at")
        {
            *sim = Json::Null;
        }
    }
}

fn observed_in_simulation(result: &SimulationResult) -> Observed {
    let mut observed = Observed {
        instances: BTreeMap::new(),
        sends: BTreeMap::new(),
        skipped: BTreeMap::new(),
    };
    for i in &result.instances {
        let stored = serde_json::to_value(&i.instance).unwrap_or_default();
        let row = (
            i.final_state.as_str().to_owned(),
            i.final_step.clone(),
            stored,
        );
        observed.instances.insert(i.instance_id.clone(), row);
        for s in &i.sends {
            let row = (
                i.instance_id.clone(),
                s.step_key.clone(),
                s.destination_id.clone(),
                s.payload.clone(),
            );
            observed.sends.insert(s.message_id.clone(), row);
        }
    }
    for s in &result.skipped {
        *observed
            .skipped
            .entry(s.reason.as_str().to_owned())
            .or_default() += 1;
    }
    observed
}

/// The engine and its virtual clock.
struct Rig {
    store: Store,
    engine: Engine,
    clock: Arc<Mutex<DateTime<Utc>>>,
    journey_id: String,
}

impl Rig {
    fn set_clock(&self, at: DateTime<Utc>) {
        *self.clock.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Fires, one at a time in due order, every pending timer `due` admits (including those
    /// set by the timers fired meanwhile), each at its due time.
    async fn fire_timers(&self, due: impl Fn(DateTime<Utc>) -> bool) {
        loop {
            let mut pending = Vec::new();
            for instance in self.instances(Some(InstanceState::Active)).await {
                pending.extend(
                    self.store
                        .timers()
                        .list_for_instance(&instance.id)
                        .await
                        .unwrap(),
                );
            }
            pending.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
            let Some(timer) = pending.into_iter().next().filter(|t| due(t.due_at)) else {
                return;
            };
            self.set_clock(timer.due_at);
            let outcome = self.engine.apply_timers(vec![timer]).await.unwrap();
            assert_eq!(outcome[0].status, TimerStatus::Fired, "{outcome:?}");
        }
    }

    async fn instances(&self, state: Option<InstanceState>) -> Vec<journeys_store::InstanceRecord> {
        let filter = InstanceFilter {
            journey_id: Some(self.journey_id.clone()),
            profile_id: None,
            state,
        };
        self.store
            .instances()
            .list(&filter, 1000, None)
            .await
            .unwrap()
            .items
    }

    async fn observed(&self) -> Observed {
        let instances = self
            .instances(None)
            .await
            .into_iter()
            .map(|i| {
                let step = i.current_step.clone().unwrap_or_default();
                (i.id, (i.state.as_str().to_owned(), step, i.state_blob))
            })
            .collect();
        let far = t0() + TimeDelta::days(3650);
        let sends = self
            .store
            .outbox()
            .claim_due(far, 1000, far)
            .await
            .unwrap()
            .into_iter()
            .map(|s| {
                let row = (s.instance_id, s.step_key, s.destination_id, s.payload);
                (s.message_id, row)
            })
            .collect();
        Observed {
            instances,
            sends,
            skipped: self.engine.stats().entries_skipped,
        }
    }
}

/// Publishes `definition` on a fresh SQLite store and runs `events` through the engine.
async fn run_engine(
    definition: &JourneyDefinition,
    events: &[(DateTime<Utc>, Event)],
    max_active: usize,
) -> (Observed, JourneyMeta) {
    let db = TestDb::sqlite().await.unwrap();
    let store = db.store().clone();
    store
        .audiences()
        .insert(AUDIENCE, "VIP", t0())
        .await
        .unwrap();
    let draft = JourneyRecord::new_draft(
        definition.name.clone(),
        "",
        serde_json::to_value(definition).unwrap(),
        t0(),
    );
    let stored = store.journeys().insert(&draft).await.unwrap();
    store
        .journeys()
        .set_state(&stored.id, JourneyState::Published, t0())
        .await
        .unwrap();
    let record = store.journeys().get(&stored.id).await.unwrap();
    let meta = JourneyMeta {
        id: record.id.clone(),
        version: record.revision,
        name: record.name.clone(),
    };
    let clock = Arc::new(Mutex::new(t0()));
    let reader = Arc::clone(&clock);
    let config = EngineConfig {
        lanes: 2,
        max_active_instances_per_profile: max_active,
        max_events_per_profile_per_sec: 0,
        clock: Clock::from_fn(move || *reader.lock().unwrap_or_else(PoisonError::into_inner)),
        ..EngineConfig::default()
    };
    let engine = Engine::start(store.clone(), config, None);
    engine.refresh_now().await.unwrap();
    let rig = Rig {
        store,
        engine,
        clock,
        journey_id: record.id.clone(),
    };
    let mut seen = BTreeSet::new();
    for (at, event) in events {
        // Timers due strictly before the event first; one due at its instant waits for it.
        rig.fire_timers(|due| due < *at).await;
        rig.set_clock(*at);
        let acks = rig.engine.submit(vec![event.clone()]).await;
        // A resent messageId is a duplicate: all events are within one dedupe window. An event
        // refused at the active-instance limit is not stored, so it is new when resent.
        if seen.insert(event.message_id.clone()) {
            match &acks[0].status {
                AckStatus::Accepted => {}
                AckStatus::Rejected { code, .. } if code == "too_many_instances" => {
                    seen.remove(&event.message_id);
                }
                other => panic!("unexpected ack {other:?}"),
            }
        } else {
            assert_eq!(acks[0].status, AckStatus::Duplicate, "{acks:?}");
        }
    }
    rig.fire_timers(|_| true).await;
    let observed = rig.observed().await;
    rig.engine.shutdown().await;
    db.close().await.unwrap();
    (observed, meta)
}

fn run_simulation(
    definition: &JourneyDefinition,
    meta: JourneyMeta,
    events: &[(DateTime<Utc>, Event)],
    max_active: usize,
) -> Observed {
    let journey = Journey::new(meta, definition.clone());
    let simulation = Simulation {
        events: events
            .iter()
            .map(|(at, event)| SimulatedEvent {
                event: event.clone(),
                at: Some(*at),
            })
            .collect(),
        audience_keys: Some(BTreeSet::from([AUDIENCE.to_owned()])),
        max_active_instances: Some(max_active),
        ..Simulation::default()
    };
    observed_in_simulation(&simulate(&journey, &simulation))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn simulation_and_engine_agree(
        spec in journey_spec(),
        specs in prop::collection::vec(event_spec(), 1..=16),
        // Active instances one profile may have, on both sides (small, so it is reached).
        max_active in prop_oneof![2 => Just(1usize), 1 => 2usize..=3],
    ) {
        let definition = definition(&spec);
        let events = events(&specs);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (engine, meta) = runtime.block_on(run_engine(&definition, &events, max_active));
        let mut simulated = run_simulation(&definition, meta, &events, max_active);
        forget_unstored_blobs(&engine, &mut simulated);
        prop_assert_eq!(&engine.instances, &simulated.instances);
        prop_assert_eq!(&engine.sends, &simulated.sends);
        prop_assert_eq!(&engine.skipped, &simulated.skipped);
    }
}
