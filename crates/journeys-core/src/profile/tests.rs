//! Unit tests of the profile rules: one rule each, through [`apply`].

use std::collections::HashSet;

use serde_json::json;

use super::*;
use crate::machine::tests::{event, journey_with, t0};
use crate::model::{EntryRule, ExitRule};

fn session() -> EntryRule {
    EntryRule::ReenterEveryTime {
        unique_identifier: "session_id".into(),
    }
}

struct Fixture {
    index: JourneyIndex,
    archived: HashSet<String>,
    exclusions: std::collections::HashMap<String, String>,
    audiences: HashSet<String>,
    known: HashSet<String>,
    max_active: usize,
}

impl Fixture {
    fn new(journeys: Vec<Journey>) -> Self {
        Self {
            index: JourneyIndex::new(journeys),
            archived: HashSet::new(),
            exclusions: std::collections::HashMap::new(),
            audiences: HashSet::new(),
            known: HashSet::new(),
            max_active: 25,
        }
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            journeys: &self.index,
            archived: &self.archived,
            excluded_while_active_in: &self.exclusions,
            audience_keys: &self.audiences,
            max_active_instances: self.max_active,
            instance_limits: InstanceLimits::DEFAULT,
            known_instance_ids: &self.known,
            now: t0(),
        }
    }

    fn event(&self, state: &mut ProfileState, e: &Event) -> Vec<ProfileEffect> {
        apply(state, &self.rules(), ProfileInput::Event(e)).effects
    }
}

fn checkout(id: &str, session_id: &str) -> Event {
    let mut e = event("checkout_started", json!({ "session_id": session_id }));
    e.message_id = id.into();
    e
}

fn skips(effects: &[ProfileEffect]) -> Vec<SkipReason> {
    effects
        .iter()
        .filter_map(|e| match e {
            ProfileEffect::EntrySkipped { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn changes(effects: &[ProfileEffect]) -> Vec<(usize, ChangeCause)> {
    effects
        .iter()
        .filter_map(|e| match e {
            ProfileEffect::Instance(c) => Some((c.position, c.why)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_resent_entry_event_is_a_replay_never_a_second_instance() {
    let mut fx = Fixture::new(vec![journey_with(session(), vec![])]);
    let mut state = ProfileState::default();
    let first = fx.event(&mut state, &checkout("m1", "s1"));
    assert_eq!(changes(&first), [(0, ChangeCause::Entered)]);
    // The same message again (after the dedupe window), even with another session.
    let again = fx.event(&mut state, &checkout("m1", "s2"));
    assert_eq!(skips(&again), [SkipReason::ReplayedEntry]);
    assert_eq!(state.instances.len(), 1);
    // An instance known to exist elsewhere (finished, not loaded) counts too.
    fx.known.insert(crate::machine::instance_id(
        fx.index.journeys()[0].id(),
        "m2",
    ));
    let mut fresh = ProfileState::default();
    let replay = fx.event(&mut fresh, &checkout("m2", "s3"));
    assert_eq!(skips(&replay), [SkipReason::ReplayedEntry]);
    assert!(fresh.instances.is_empty());
}

#[test]
fn entries_that_would_wait_stop_at_the_active_limit() {
    let mut fx = Fixture::new(vec![journey_with(session(), vec![])]);
    fx.max_active = 1;
    let mut state = ProfileState::default();
    fx.event(&mut state, &checkout("m1", "s1"));
    let second = apply(
        &mut state,
        &fx.rules(),
        ProfileInput::Event(&checkout("m2", "s2")),
    );
    assert_eq!(skips(&second.effects), [SkipReason::TooManyInstances]);
    assert_eq!(
        second.outcome,
        InputOutcome::TooManyInstances {
            journey_ids: vec!["j1".into()]
        }
    );
    assert_eq!(state.active_count(), 1);
}

#[test]
fn an_event_refused_at_the_active_limit_changes_nothing() {
    // Two journeys entered by one event: at the limit, the first could still be entered but
    // the second not. The event is refused whole: no traits, no first entry.
    let first = journey_with(session(), vec![]);
    let second = Journey::new(
        crate::model::JourneyMeta {
            id: "j2".into(),
            version: 1,
            name: "second".into(),
        },
        first.definition().clone(),
    );
    let mut fx = Fixture::new(vec![first, second]);
    let mut state = ProfileState {
        traits: json!({"plan": "free"}),
        ..ProfileState::default()
    };
    fx.event(&mut state, &checkout("m1", "s1"));
    assert_eq!(state.active_count(), 2);
    fx.max_active = 3;
    let before = state.clone();
    let mut both = checkout("m2", "s2");
    both.kind = EventType::Identify;
    both.traits = json!({"plan": "pro"});
    let applied = apply(&mut state, &fx.rules(), ProfileInput::Event(&both));
    assert_eq!(
        applied.outcome,
        InputOutcome::TooManyInstances {
            journey_ids: vec!["j2".into()]
        }
    );
    assert_eq!(skips(&applied.effects), [SkipReason::TooManyInstances]);
    assert_eq!(applied.effects.len(), 1, "{:?}", applied.effects);
    assert_eq!(state, before, "nothing of the refused event applied");

    // Below the limit the same event applies in full.
    fx.max_active = 4;
    let applied = apply(&mut state, &fx.rules(), ProfileInput::Event(&both));
    assert_eq!(applied.outcome, InputOutcome::Event);
    assert_eq!(state.active_count(), 4);
    assert_eq!(state.traits["plan"], json!("pro"));
}

#[test]
fn archived_journeys_drain_but_are_never_entered() {
    let mut fx = Fixture::new(vec![journey_with(session(), vec![])]);
    let mut state = ProfileState::default();
    fx.event(&mut state, &checkout("m1", "s1"));
    fx.archived.insert(fx.index.journeys()[0].id().to_owned());
    let entry = fx.event(&mut state, &checkout("m2", "s2"));
    assert!(entry.is_empty(), "{entry:?}");
    let mut bought = event("purchase_completed", json!({ "session_id": "s1" }));
    bought.message_id = "m3".into();
    let hold = fx.event(&mut state, &bought);
    assert_eq!(changes(&hold), [(0, ChangeCause::HoldMatched)]);
    assert_eq!(state.active_count(), 0);
}

#[test]
fn enter_once_is_recorded_and_holds() {
    let fx = Fixture::new(vec![journey_with(EntryRule::EnterOnce, vec![])]);
    let mut state = ProfileState::default();
    let first = fx.event(&mut state, &checkout("m1", "s1"));
    assert!(first.contains(&ProfileEffect::EnteredOnce {
        journey_id: "j1".into()
    }));
    let second = fx.event(&mut state, &checkout("m2", "s2"));
    assert_eq!(skips(&second), [SkipReason::AlreadyEntered]);
}

#[test]
fn an_event_exits_before_it_enters() {
    let base = journey_with(session(), vec![]);
    let mut def = base.definition().clone();
    def.exit_rules = vec![ExitRule {
        event: "checkout_started".into(),
        filters: vec![],
        match_unique_identifier: false,
        send: None,
    }];
    let fx = Fixture::new(vec![Journey::new(base.meta().clone(), def)]);
    let mut state = ProfileState::default();
    fx.event(&mut state, &checkout("m1", "s1"));
    let effects = fx.event(&mut state, &checkout("m2", "s1"));
    // The old instance exits, so the same session may enter again (no duplicate_entry).
    assert_eq!(
        changes(&effects),
        [(0, ChangeCause::ExitRule), (1, ChangeCause::Entered)]
    );
}

#[test]
fn an_identify_syncs_the_audience_the_trigger_needs() {
    let base = journey_with(session(), vec![]);
    let mut def = base.definition().clone();
    def.entry.audience_key = Some("vip".into());
    let mut fx = Fixture::new(vec![Journey::new(base.meta().clone(), def)]);
    fx.audiences.insert("vip".into());
    let mut state = ProfileState::default();
    let before = fx.event(&mut state, &checkout("m1", "s1"));
    assert_eq!(skips(&before), [SkipReason::NotInAudience]);
    let mut identify = event("identify", json!({}));
    identify.kind = EventType::Identify;
    identify.traits = json!({ "vip": true });
    fx.event(&mut state, &identify);
    let after = fx.event(&mut state, &checkout("m2", "s1"));
    assert_eq!(changes(&after), [(0, ChangeCause::Entered)]);
}

#[test]
fn only_the_awaited_timer_fires_and_operator_exits_end_active_instances() {
    let fx = Fixture::new(vec![journey_with(session(), vec![])]);
    let mut state = ProfileState::default();
    fx.event(&mut state, &checkout("m1", "s1"));
    let id = state.instances[0].id.clone();
    let awaited = state.instances[0].waiting_timer().map(|t| t.id.clone());
    let rules = fx.rules();
    let stale = apply(
        &mut state,
        &rules,
        ProfileInput::TimerFired {
            instance_id: &id,
            is_fired: &|_| false,
        },
    );
    assert_eq!(stale.outcome, InputOutcome::Timer(TimerFiring::Discarded));
    let is_fired = |t: &Timer| Some(&t.id) == awaited.as_ref();
    let fired = apply(
        &mut state,
        &rules,
        ProfileInput::TimerFired {
            instance_id: &id,
            is_fired: &is_fired,
        },
    );
    assert_eq!(fired.outcome, InputOutcome::Timer(TimerFiring::Fired));
    assert!(!state.instances[0].is_active());

    let mut fresh = ProfileState::default();
    fx.event(&mut fresh, &checkout("m2", "s2"));
    let id = fresh.instances[0].id.clone();
    let reason = ExitReason::Operator;
    let input = ProfileInput::Terminate {
        instance_id: &id,
        reason: &reason,
    };
    let ended = apply(&mut fresh, &rules, input);
    assert_eq!(ended.outcome, InputOutcome::Terminate(Termination::Exited));
    let again = apply(&mut fresh, &rules, input);
    assert_eq!(
        again.outcome,
        InputOutcome::Terminate(Termination::NotActive)
    );
    let unloaded = Fixture::new(vec![]);
    let mut other = ProfileState::default();
    fx.event(&mut other, &checkout("m3", "s3"));
    let id = other.instances[0].id.clone();
    let input = ProfileInput::Terminate {
        instance_id: &id,
        reason: &reason,
    };
    assert_eq!(
        apply(&mut other, &unloaded.rules(), input).outcome,
        InputOutcome::Terminate(Termination::JourneyNotLoaded {
            journey_id: "j1".into()
        })
    );
}

#[test]
fn a_replacement_with_exclusion_is_not_entered_while_active_in_the_replaced_journey() {
    let old = journey_with(session(), vec![]);
    let new = Journey::new(
        crate::model::JourneyMeta {
            id: "j2".into(),
            version: 1,
            name: "replacement".into(),
        },
        old.definition().clone(),
    );
    let mut fx = Fixture::new(vec![old, new]);
    let mut state = ProfileState::default();
    fx.archived.insert("j2".into());
    fx.event(&mut state, &checkout("m1", "s1"));
    assert_eq!(state.active_count(), 1, "waiting in j1");

    // j2 replaces j1 (archived), keeping out profiles still active there.
    fx.archived.clear();
    fx.archived.insert("j1".into());
    fx.exclusions.insert("j2".into(), "j1".into());
    let refused = fx.event(&mut state, &checkout("m2", "s2"));
    assert_eq!(skips(&refused), [SkipReason::ActiveInReplacedJourney]);

    // Once the j1 instance ends, the profile enters j2.
    let mut bought = event("purchase_completed", json!({ "session_id": "s1" }));
    bought.message_id = "m3".into();
    fx.event(&mut state, &bought);
    assert_eq!(state.active_count(), 0);
    let entered = fx.event(&mut state, &checkout("m4", "s4"));
    assert!(skips(&entered).is_empty(), "{entered:?}");
    assert_eq!(
        state.instances.last().map(|i| i.journey_id.as_str()),
        Some("j2")
    );
}
