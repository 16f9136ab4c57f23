//! The runtime's batched commit and reads on every configured backend.

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

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use journeys_store::{
    BranchCounts, Changes, CounterKey, CounterKind, InstanceRecord, InstanceState, JourneyRecord,
    JourneyState, OutboxMark, OutboxRecord, OutboxStatus, PurgePace, SendCounts, StatsRange,
    StepCounts, StoreError, TimelineEntry, TimerRecord, hour_start,
};
use journeys_testkit::each_backend;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// An active instance at `step`; with a unique value it takes the active key.
fn instance(
    journey: &str,
    profile: &str,
    unique: Option<&str>,
    at: DateTime<Utc>,
) -> InstanceRecord {
    InstanceRecord {
        id: journeys_store::new_id(),
        journey_id: journey.into(),
        journey_revision: 1,
        profile_id: profile.into(),
        unique_value: unique.map(Into::into),
        state: InstanceState::Active,
        current_step: Some("wait".into()),
        waiting_event: Some("Order Completed".into()),
        context: json!({"Signed Up": {"plan": "pro"}}),
        state_blob: json!({"step": "wait"}),
        passes: 0,
        version: 1,
        entered_at: at,
        updated_at: at,
        ended_at: None,
        active_key: unique.map(|u| InstanceRecord::active_key_for(journey, profile, u)),
        expires_at: at + Duration::days(365),
    }
}

/// `i` finished in `state` at `at`, version bumped.
fn finished(i: &InstanceRecord, state: InstanceState, at: DateTime<Utc>) -> InstanceRecord {
    InstanceRecord {
        state,
        waiting_event: None,
        ended_at: Some(at),
        updated_at: at,
        active_key: None,
        version: i.version + 1,
        ..i.clone()
    }
}

fn entry(i: &InstanceRecord, step: &str, kind: &str, detail: Value) -> TimelineEntry {
    TimelineEntry {
        instance_id: i.id.clone(),
        profile_id: i.profile_id.clone(),
        at: now(),
        step_key: step.into(),
        kind: kind.into(),
        cause: "msg".into(),
        detail,
        journey_id: None,
    }
}

fn timer(i: &InstanceRecord, due_at: DateTime<Utc>) -> TimerRecord {
    TimerRecord {
        id: journeys_store::new_id(),
        instance_id: i.id.clone(),
        profile_id: i.profile_id.clone(),
        journey_id: i.journey_id.clone(),
        due_at,
        kind: "delay".into(),
        step_key: "wait".into(),
    }
}

fn send(i: &InstanceRecord, step: &str, at: DateTime<Utc>) -> OutboxRecord {
    OutboxRecord {
        id: journeys_store::new_id(),
        instance_id: i.id.clone(),
        profile_id: i.profile_id.clone(),
        journey_id: i.journey_id.clone(),
        step_key: step.into(),
        destination_id: "d1".into(),
        message_id: journeys_store::new_id(),
        method: "POST".into(),
        path: "/hooks/welcome".into(),
        payload: json!({"email": "a@example.com"}),
        status: OutboxStatus::Pending,
        attempts: 0,
        next_attempt_at: at,
        last_error: None,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        created_at: at,
        sent_at: None,
        dead_at: None,
    }
}

fn traits(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("traits literal is an object"),
    }
}

fn is_conflict(result: &Result<(), StoreError>, mentions: &str) -> bool {
    matches!(*result, Err(StoreError::Conflict(ref m)) if m.contains(mentions))
}

#[tokio::test]
async fn commit_writes_everything_in_one_go() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        db.audiences().insert("vip", "VIP", t).await.unwrap();
        db.audiences().insert("old", "Old", t).await.unwrap();
        db.audiences().archive("old", t).await.unwrap();
        db.audiences()
            .add_members("vip", &["gone".to_owned()], t)
            .await
            .unwrap();
        db.profiles()
            .merge_traits("u1", &traits(json!({"plan": "free", "age": 3})), t)
            .await
            .unwrap();

        let i = instance("j1", "u1", Some("cart-1"), t);
        let tm = timer(&i, t + Duration::hours(1));
        let out = send(&i, "welcome", t);
        let changes = Changes {
            partitions: 8,
            dedupe: vec![("m1".into(), t), ("m2".into(), t)],
            dedupe_expired_before: None,
            traits: vec![
                ("u1".into(), traits(json!({"plan": "pro", "name": "Ada"}))),
                ("u2".into(), traits(json!({"x": 1}))),
                ("u1".into(), traits(json!({"name": "Ada L."}))),
            ],
            catalog_seen: vec![
                ("Signed Up".into(), t),
                ("Signed Up".into(), t + Duration::seconds(1)),
            ],
            audience_adds: vec![
                ("vip".into(), "u1".into()),
                ("vip".into(), "u1".into()),
                ("old".into(), "u1".into()),
                ("nope".into(), "u1".into()),
            ],
            audience_removes: vec![
                ("vip".into(), "gone".into()),
                ("vip".into(), "never".into()),
            ],
            enter_once: vec![("j1".into(), "u1".into())],
            instances_new: vec![i.clone()],
            instances_updated: vec![],
            timeline: vec![entry(&i, "wait", "entered", json!({}))],
            timers_new: vec![tm.clone()],
            timers_deleted: vec!["no-such-timer".into()],
            outbox_new: vec![out.clone()],
            counters: BTreeMap::from([(CounterKey::new("j1", "wait", CounterKind::Entered), 1)]),
            deletions: vec![],
            ..Changes::default()
        };
        db.batches().commit(&changes).await.unwrap();
        assert_eq!(
            db.batches().journey_stats("j1").await.unwrap().entries,
            1,
            "{b}"
        );

        let seen = db
            .batches()
            .seen_message_ids(&["m1".into(), "m2".into(), "m3".into()], t)
            .await
            .unwrap();
        assert_eq!(seen.len(), 2, "{b}");
        assert!(seen.contains("m1") && seen.contains("m2"), "{b}");
        let u1 = db.profiles().get("u1").await.unwrap();
        assert_eq!(
            Value::Object(u1.traits),
            json!({"plan": "pro", "age": 3, "name": "Ada L."}),
            "{b}"
        );
        assert_eq!(
            Value::Object(db.profiles().get("u2").await.unwrap().traits),
            json!({"x": 1})
        );
        assert_eq!(db.catalog().get("Signed Up").await.unwrap().count, 2, "{b}");
        assert_eq!(
            db.audiences().audiences_of("u1").await.unwrap(),
            ["vip"],
            "{b}"
        );
        assert!(
            !db.audiences().is_member("vip", "gone").await.unwrap(),
            "{b}"
        );
        let detail = db.instances().get(&i.id).await.unwrap();
        assert_eq!(detail.instance, i, "{b}");
        assert_eq!(detail.timeline.len(), 1, "{b}");
        assert_eq!(db.timers().get(&tm.id).await.unwrap(), Some(tm), "{b}");
        assert_eq!(db.outbox().get(&out.id).await.unwrap(), out, "{b}");
        let state = &db.batches().load_profiles(&["u1".into()]).await.unwrap()["u1"];
        assert_eq!(state.entered_once, ["j1"], "{b}");
        db.batches().commit(&Changes::default()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn failing_commit_writes_nothing() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let existing = instance("j1", "u1", None, t);
        db.batches()
            .commit(&Changes {
                dedupe: vec![("old".into(), t)],
                instances_new: vec![existing.clone()],
                ..Changes::default()
            })
            .await
            .unwrap();

        let fresh = instance("j2", "u2", Some("v"), t);
        let tm = timer(&fresh, t);
        let out = send(&fresh, "s", t);
        let mut stale = existing.clone();
        stale.version = 7;
        stale.current_step = Some("moved".into());
        // Everything before the stale update is written by then; the conflict must undo it.
        let batch = Changes {
            dedupe: vec![("new".into(), t)],
            traits: vec![("u2".into(), traits(json!({"a": 1})))],
            catalog_seen: vec![("Ev".into(), t)],
            enter_once: vec![("j2".into(), "u2".into())],
            instances_new: vec![fresh.clone()],
            instances_updated: vec![(stale, 6)],
            timeline: vec![entry(&fresh, "s", "entered", json!({}))],
            timers_new: vec![tm.clone()],
            outbox_new: vec![out.clone()],
            ..Changes::default()
        };
        let result = db.batches().commit(&batch).await;
        assert!(is_conflict(&result, &existing.id), "{b}");

        assert!(
            db.batches()
                .seen_message_ids(&["new".into()], t - Duration::days(1))
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        assert!(
            matches!(
                db.profiles().get("u2").await,
                Err(StoreError::NotFound { .. })
            ),
            "{b}"
        );
        assert!(
            matches!(
                db.catalog().get("Ev").await,
                Err(StoreError::NotFound { .. })
            ),
            "{b}"
        );
        assert!(
            matches!(
                db.instances().get(&fresh.id).await,
                Err(StoreError::NotFound { .. })
            ),
            "{b}"
        );
        assert_eq!(db.timers().get(&tm.id).await.unwrap(), None, "{b}");
        assert!(
            matches!(
                db.outbox().get(&out.id).await,
                Err(StoreError::NotFound { .. })
            ),
            "{b}"
        );
        let state = &db.batches().load_profiles(&["u2".into()]).await.unwrap()["u2"];
        assert!(state.entered_once.is_empty(), "{b}");
        assert_eq!(
            db.instances().get(&existing.id).await.unwrap().instance,
            existing
        );

        // The same batch without the stale update goes through: nothing was left half-done.
        let mut retry = batch.clone();
        retry.instances_updated.clear();
        db.batches().commit(&retry).await.unwrap();
        assert!(db.instances().get(&fresh.id).await.is_ok(), "{b}");
    })
    .await;
}

#[tokio::test]
async fn instance_updates_check_versions() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let a = instance("j1", "u1", None, t);
        let c = instance("j1", "u2", None, t);
        db.batches()
            .commit(&Changes {
                instances_new: vec![a.clone(), c.clone()],
                ..Changes::default()
            })
            .await
            .unwrap();

        let mut a2 = a.clone();
        a2.version = 2;
        a2.current_step = Some("next".into());
        a2.waiting_event = None;
        a2.context = json!({"more": [1, 2]});
        a2.passes = 3;
        a2.updated_at = t + Duration::seconds(5);
        let mut a3 = a2.clone();
        a3.version = 3;
        a3.state = InstanceState::Completed;
        a3.ended_at = Some(t + Duration::seconds(6));
        let mut c2 = c.clone();
        c2.version = 2;
        // Two updates of one instance in one batch apply in order.
        db.batches()
            .commit(&Changes {
                instances_updated: vec![(a2.clone(), 1), (c2.clone(), 1), (a3.clone(), 2)],
                ..Changes::default()
            })
            .await
            .unwrap();
        assert_eq!(db.instances().get(&a.id).await.unwrap().instance, a3, "{b}");
        assert_eq!(db.instances().get(&c.id).await.unwrap().instance, c2, "{b}");

        // A stale expected version conflicts, names the instance, and changes nothing.
        let mut c3 = c2.clone();
        c3.version = 3;
        let mut stale = a3.clone();
        stale.version = 3;
        stale.passes = 99;
        let result = db
            .batches()
            .commit(&Changes {
                instances_updated: vec![(c3, 2), (stale, 2)],
                ..Changes::default()
            })
            .await;
        assert!(is_conflict(&result, &a.id), "{b}");
        assert_eq!(db.instances().get(&c.id).await.unwrap().instance, c2, "{b}");
        assert_eq!(db.instances().get(&a.id).await.unwrap().instance, a3, "{b}");

        let mut ghost = a3.clone();
        ghost.id = journeys_store::new_id();
        let result = db
            .batches()
            .commit(&Changes {
                instances_updated: vec![(ghost.clone(), 1)],
                ..Changes::default()
            })
            .await;
        assert!(is_conflict(&result, &ghost.id), "{b}");
    })
    .await;
}

#[tokio::test]
async fn active_key_allows_one_active_instance_per_value() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let first = instance("j1", "u1", Some("cart-1"), t);
        let commit_new = |i: InstanceRecord| {
            let store = db.store().clone();
            async move {
                store
                    .batches()
                    .commit(&Changes {
                        instances_new: vec![i],
                        ..Changes::default()
                    })
                    .await
            }
        };
        commit_new(first.clone()).await.unwrap();
        let second = instance("j1", "u1", Some("cart-1"), t);
        assert!(
            is_conflict(&commit_new(second.clone()).await, "active key"),
            "{b}"
        );
        // Another value, another profile, no value at all: all fine.
        commit_new(instance("j1", "u1", Some("cart-2"), t))
            .await
            .unwrap();
        commit_new(instance("j1", "u2", Some("cart-1"), t))
            .await
            .unwrap();
        commit_new(instance("j1", "u1", None, t)).await.unwrap();
        commit_new(instance("j1", "u1", None, t)).await.unwrap();
        // Two in one batch collide as well.
        let result = db
            .batches()
            .commit(&Changes {
                instances_new: vec![
                    instance("j1", "u9", Some("x"), t),
                    instance("j1", "u9", Some("x"), t),
                ],
                ..Changes::default()
            })
            .await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{b}");

        // Once the first finished, its key is free again.
        db.batches()
            .commit(&Changes {
                instances_updated: vec![(finished(&first, InstanceState::Completed, t), 1)],
                ..Changes::default()
            })
            .await
            .unwrap();
        commit_new(second).await.unwrap();

        // Keys too long for the column are hashed to a fixed, distinct length.
        let long = "v".repeat(150);
        let profile = "p".repeat(60);
        let k1 = InstanceRecord::active_key_for("j1", &profile, &long);
        let k2 = InstanceRecord::active_key_for("j1", "u2", &"w".repeat(190));
        assert!(k1.chars().count() <= 191 && k1 != k2 && k1.starts_with("j1|#"));
        assert_eq!(InstanceRecord::active_key_for("j1", "u1", "v"), "j1|u1|v");
        commit_new(instance("j1", &profile, Some(&long), t))
            .await
            .unwrap();
        assert!(
            is_conflict(
                &commit_new(instance("j1", &profile, Some(&long), t)).await,
                "active key"
            ),
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_dedupe_key_past_the_window_is_replaced_not_a_conflict() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let seen = |ids: &[&str], at: DateTime<Utc>| Changes {
            dedupe: ids.iter().map(|id| ((*id).to_owned(), at)).collect(),
            dedupe_expired_before: Some(t - Duration::hours(1)),
            ..Changes::default()
        };
        db.batches()
            .commit(&seen(&["old"], t - Duration::hours(2)))
            .await
            .unwrap();
        db.batches()
            .commit(&seen(&["recent"], t - Duration::minutes(5)))
            .await
            .unwrap();
        // Past the window, not purged yet: seen again now, and remembered from now on.
        db.batches().commit(&seen(&["old", "x"], t)).await.unwrap();
        let recent = db
            .batches()
            .seen_message_ids(&["old".into()], t - Duration::minutes(1))
            .await
            .unwrap();
        assert_eq!(recent.len(), 1, "{b}");
        // Within the window a key still conflicts, and the batch writes nothing.
        assert!(
            is_conflict(
                &db.batches().commit(&seen(&["y", "recent"], t)).await,
                "messageId"
            ),
            "{b}"
        );
        let y = db
            .batches()
            .seen_message_ids(&["y".into()], t - Duration::days(1))
            .await
            .unwrap();
        assert!(y.is_empty(), "{b}");
    })
    .await;
}

#[tokio::test]
async fn a_paced_purge_deletes_everything_due_in_small_chunks_and_nothing_newer() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let old: Vec<(String, DateTime<Utc>)> = (0..7)
            .map(|i| (format!("old-{i}"), t - Duration::hours(30)))
            .collect();
        let fresh = vec![("fresh".to_owned(), t)];
        let changes = Changes {
            dedupe: old.into_iter().chain(fresh).collect(),
            ..Changes::default()
        };
        db.batches().commit(&changes).await.unwrap();
        // 7 due keys in chunks of 2 (the last chunk holds one): every one goes, in four
        // transactions with a rest after each but the last.
        let pace = PurgePace { chunk: 2, rest: 1 };
        let purged = db
            .batches()
            .purge_dedupe(t - Duration::hours(24), pace)
            .await
            .unwrap();
        assert_eq!(purged, 7, "{b}");
        let ids: Vec<String> = (0..7)
            .map(|i| format!("old-{i}"))
            .chain(["fresh".to_owned()])
            .collect();
        let left = db
            .batches()
            .seen_message_ids(&ids, t - Duration::days(3))
            .await
            .unwrap();
        assert_eq!(left.into_iter().collect::<Vec<_>>(), ["fresh"], "{b}");
        // A chunk exactly as long as what is left ends with one more (empty) look.
        assert_eq!(
            db.batches()
                .purge_dedupe(t + Duration::hours(1), PurgePace { chunk: 1, rest: 0 })
                .await
                .unwrap(),
            1,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn dedupe_and_enter_once_conflict() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let dedupe = |ids: &[&str], at: DateTime<Utc>| Changes {
            dedupe: ids.iter().map(|id| ((*id).to_owned(), at)).collect(),
            ..Changes::default()
        };
        db.batches()
            .commit(&dedupe(&["a", "b"], t - Duration::hours(30)))
            .await
            .unwrap();
        db.batches().commit(&dedupe(&["c"], t)).await.unwrap();
        assert!(
            is_conflict(
                &db.batches().commit(&dedupe(&["d", "b"], t)).await,
                "messageId"
            ),
            "{b}"
        );
        assert!(
            is_conflict(
                &db.batches().commit(&dedupe(&["e", "e"], t)).await,
                "messageId"
            ),
            "{b}"
        );
        let ids: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
        let recent = db
            .batches()
            .seen_message_ids(&ids, t - Duration::hours(24))
            .await
            .unwrap();
        assert_eq!(recent.into_iter().collect::<Vec<_>>(), ["c"], "{b}");
        let all = db
            .batches()
            .seen_message_ids(&ids, t - Duration::days(2))
            .await
            .unwrap();
        assert_eq!(all.len(), 3, "{b}");

        let once = Changes {
            enter_once: vec![("j1".into(), "u1".into())],
            ..Changes::default()
        };
        db.batches().commit(&once).await.unwrap();
        assert!(
            is_conflict(&db.batches().commit(&once).await, "enter-once"),
            "{b}"
        );

        assert_eq!(
            db.batches()
                .purge_dedupe(t - Duration::hours(24), PurgePace::UNPACED)
                .await
                .unwrap(),
            2,
            "{b}"
        );
        assert_eq!(
            db.batches()
                .purge_dedupe(t - Duration::hours(24), PurgePace::UNPACED)
                .await
                .unwrap(),
            0,
            "{b}"
        );
        assert_eq!(
            db.batches()
                .seen_message_ids(&ids, t - Duration::days(2))
                .await
                .unwrap()
                .len(),
            1,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn load_profiles_reads_several_profiles() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        db.audiences().insert("vip", "VIP", t).await.unwrap();
        db.audiences().insert("beta", "Beta", t).await.unwrap();
        db.audiences().insert("old", "Old", t).await.unwrap();
        let a1 = instance("j1", "u1", None, t);
        let a2 = instance("j2", "u1", Some("x"), t);
        let done = instance("j3", "u1", None, t);
        let other = instance("j1", "u3", None, t);
        db.batches()
            .commit(&Changes {
                traits: vec![("u1".into(), traits(json!({"plan": "pro"})))],
                audience_adds: vec![
                    ("vip".into(), "u1".into()),
                    ("beta".into(), "u1".into()),
                    ("old".into(), "u1".into()),
                    ("vip".into(), "u3".into()),
                ],
                enter_once: vec![("j9".into(), "u1".into()), ("j4".into(), "u1".into())],
                instances_new: vec![a1.clone(), a2.clone(), done.clone(), other.clone()],
                ..Changes::default()
            })
            .await
            .unwrap();
        db.batches()
            .commit(&Changes {
                instances_updated: vec![(finished(&done, InstanceState::Exited, t), 1)],
                ..Changes::default()
            })
            .await
            .unwrap();
        db.audiences().archive("old", t).await.unwrap();

        let ids: Vec<String> = ["u1", "u2", "u3", "u1"].map(String::from).into();
        let states = db.batches().load_profiles(&ids).await.unwrap();
        assert_eq!(states.len(), 3, "{b}");
        let u1 = &states["u1"];
        assert_eq!(
            Value::Object(u1.traits.clone()),
            json!({"plan": "pro"}),
            "{b}"
        );
        assert_eq!(u1.audiences, ["beta", "vip"], "{b}");
        let mut expected = vec![a1, a2];
        expected.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(u1.active_instances, expected, "{b}");
        assert_eq!(u1.entered_once, ["j4", "j9"], "{b}");
        assert_eq!(states["u2"], Default::default(), "{b}");
        let u3 = &states["u3"];
        assert!(u3.traits.is_empty(), "{b}");
        assert_eq!(u3.audiences, ["vip"], "{b}");
        assert_eq!(u3.active_instances, vec![other.clone()], "{b}");
        assert!(db.batches().load_profiles(&[]).await.unwrap().is_empty());

        let found = db
            .batches()
            .instances_by_ids(&[other.id.clone(), "missing".into(), done.id.clone()])
            .await
            .unwrap();
        let mut want = vec![other.id.clone(), done.id.clone()];
        want.sort();
        assert_eq!(
            found.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
            want,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn journey_instance_queries_and_purge() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let mut active: Vec<InstanceRecord> = (0..5)
            .map(|n| instance("j1", &format!("u{n}"), None, t))
            .collect();
        let mut old = instance("j1", "old", None, t - Duration::days(400));
        old.expires_at = t - Duration::days(35);
        let ended = instance("j1", "e1", None, t - Duration::days(200));
        let recent = instance("j1", "e2", None, t);
        let elsewhere = instance("j2", "u0", None, t);
        let tm = timer(&ended, t);
        db.batches()
            .commit(&Changes {
                instances_new: active
                    .iter()
                    .chain([&old, &ended, &recent, &elsewhere])
                    .cloned()
                    .collect(),
                timeline: vec![
                    entry(&ended, "a", "entered", json!({})),
                    entry(&recent, "a", "entered", json!({})),
                ],
                timers_new: vec![tm.clone()],
                ..Changes::default()
            })
            .await
            .unwrap();
        db.batches()
            .commit(&Changes {
                instances_updated: vec![
                    (
                        finished(&ended, InstanceState::Completed, t - Duration::days(100)),
                        1,
                    ),
                    (finished(&recent, InstanceState::Exited, t), 1),
                ],
                ..Changes::default()
            })
            .await
            .unwrap();

        active.push(old.clone());
        active.sort_by(|x, y| x.id.cmp(&y.id));
        let page = db
            .batches()
            .active_instances_of_journey("j1", 4)
            .await
            .unwrap();
        assert_eq!(page, active[..4], "{b}");
        assert_eq!(
            db.batches()
                .active_instances_of_journey("j1", 100)
                .await
                .unwrap()
                .len(),
            6,
            "{b}"
        );
        let expired = db.batches().expired_active_instances(t, 10).await.unwrap();
        assert_eq!(expired, vec![old.clone()], "{b}");
        assert!(
            db.batches()
                .expired_active_instances(t - Duration::days(36), 10)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );

        let purged = db
            .batches()
            .purge_finished_instances(t - Duration::days(90), PurgePace::UNPACED)
            .await
            .unwrap();
        assert_eq!(purged, 1, "{b}");
        assert!(
            matches!(
                db.instances().get(&ended.id).await,
                Err(StoreError::NotFound { .. })
            ),
            "{b}"
        );
        assert_eq!(db.timers().get(&tm.id).await.unwrap(), None, "{b}");
        assert_eq!(
            db.instances().get(&recent.id).await.unwrap().timeline.len(),
            1
        );
        assert!(db.instances().get(&old.id).await.is_ok(), "{b}");
    })
    .await;
}

#[tokio::test]
async fn journey_stats_count_steps_sends_and_branches() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        // Three instances entered at `start` and moved to `check`; one waits there, one exited
        // there, one went on through branch "yes" to `done` and completed.
        let waiting = instance("j1", "u1", None, t);
        let exited = instance("j1", "u2", None, t);
        let through = instance("j1", "u3", None, t);
        let other = instance("j2", "u4", None, t);
        let mut timeline = Vec::new();
        // As the state machine writes them: an `entered` marker, then a `step` row for every
        // step reached, the start step included.
        for i in [&waiting, &exited, &through] {
            timeline.push(entry(i, "start", "entered", json!({})));
            timeline.push(entry(i, "start", "step", json!({})));
            timeline.push(entry(i, "check", "step", json!({})));
        }
        timeline.push(entry(&through, "check", "branch", json!({"branch": "yes"})));
        timeline.push(entry(&exited, "check", "branch", json!({"branch": "no"})));
        timeline.push(entry(&waiting, "check", "branch", json!({"branch": "yes"})));
        timeline.push(entry(&through, "done", "step", json!({})));
        timeline.push(entry(&through, "check", "waiting", json!({})));
        timeline.push(entry(&other, "start", "entered", json!({})));
        timeline.push(entry(&other, "check", "branch", json!({"branch": "yes"})));

        // Five sends; their outcomes are recorded below as the dispatcher records them.
        let sent = send(&through, "notify", t);
        let retried = send(&waiting, "notify", t);
        let dead = send(&exited, "notify", t);
        let pending = send(&waiting, "remind", t);
        let foreign = send(&other, "notify", t);
        let (sent_id, retried_id, dead_id) = (sent.id.clone(), retried.id.clone(), dead.id.clone());

        let at_check = |i: &InstanceRecord| {
            let mut i = i.clone();
            i.current_step = Some("check".into());
            i
        };
        let mut through_done = at_check(&through);
        through_done.current_step = Some("done".into());
        // The counters the engine sums from those rows, split over the two batches.
        let count = |journey: &str, step: &str, kind, branch: &str, n| {
            (CounterKey::with_branch(journey, step, kind, branch), n)
        };
        db.batches()
            .commit(&Changes {
                instances_new: vec![
                    at_check(&waiting),
                    at_check(&exited),
                    through_done.clone(),
                    other.clone(),
                ],
                timeline,
                outbox_new: vec![sent, retried, dead, pending, foreign],
                counters: BTreeMap::from([
                    count("j1", "start", CounterKind::Entered, "", 3),
                    count("j1", "start", CounterKind::Step, "", 3),
                    count("j1", "check", CounterKind::Step, "", 2),
                    count("j1", "check", CounterKind::Branch, "yes", 1),
                    count("j1", "check", CounterKind::Branch, "no", 1),
                    count("j1", "done", CounterKind::Step, "", 1),
                    count("j2", "start", CounterKind::Entered, "", 1),
                    count("j2", "check", CounterKind::Branch, "yes", 1),
                    count("j1", "", CounterKind::Skipped, "filters_not_matched", 2),
                    count("j1", "start", CounterKind::Completed, "", 3),
                ]),
                ..Changes::default()
            })
            .await
            .unwrap();
        // Failed attempts: 1 before the delivery of `sent`, 2 of `retried`, 5 of `dead` (the
        // last one dead-letters it) = 8 on `notify`. A mark repeated for a row already sent
        // is not counted again.
        let retry = |id: &str, attempts| OutboxMark::Retry {
            id: id.to_owned(),
            send: None,
            attempts,
            next_attempt_at: t,
            last_error: "HTTP 500".into(),
        };
        let outbox = db.outbox();
        outbox
            .record(
                &[
                    retry(&sent_id, 1),
                    retry(&retried_id, 1),
                    retry(&dead_id, 1),
                ],
                t,
            )
            .await
            .unwrap();
        outbox
            .record(&[retry(&retried_id, 2), retry(&dead_id, 2)], t)
            .await
            .unwrap();
        outbox
            .record(
                &[
                    retry(&dead_id, 3),
                    OutboxMark::Sent {
                        id: sent_id.clone(),
                        send: None,
                    },
                ],
                t,
            )
            .await
            .unwrap();
        outbox
            .record(
                &[
                    retry(&dead_id, 4),
                    OutboxMark::Sent {
                        id: sent_id.clone(),
                        send: None,
                    },
                ],
                t,
            )
            .await
            .unwrap();
        outbox
            .record(
                &[OutboxMark::Dead {
                    id: dead_id.clone(),
                    send: None,
                    attempts: 5,
                    last_error: "HTTP 500".into(),
                }],
                t,
            )
            .await
            .unwrap();
        db.batches()
            .commit(&Changes {
                instances_updated: vec![
                    (finished(&at_check(&exited), InstanceState::Exited, t), 1),
                    (finished(&through_done, InstanceState::Completed, t), 1),
                ],
                counters: BTreeMap::from([
                    count("j1", "check", CounterKind::Step, "", 1),
                    count("j1", "check", CounterKind::Branch, "yes", 1),
                    count("j1", "check", CounterKind::Exited, "", 1),
                    count("j1", "", CounterKind::Skipped, "filters_not_matched", 1),
                    count("j1", "", CounterKind::Skipped, "already_entered", 1),
                    count("j1", "", CounterKind::ExitReason, "exit_rule:0", 1),
                    count("j1", "check", CounterKind::Completed, "", 1),
                    count("j1", "done", CounterKind::Completed, "", 1),
                    count("j1", "check", CounterKind::TimedOut, "", 1),
                    count("j1", "check", CounterKind::Branch, "", 1),
                ]),
                ..Changes::default()
            })
            .await
            .unwrap();

        let stats = db.batches().journey_stats("j1").await.unwrap();
        assert_eq!(stats.entries, 3, "{b}");
        assert_eq!(
            stats.entries_skipped,
            BTreeMap::from([
                ("already_entered".to_owned(), 1),
                ("filters_not_matched".to_owned(), 3)
            ]),
            "{b}"
        );
        assert_eq!(
            stats.exits,
            BTreeMap::from([("exit_rule:0".to_owned(), 1)]),
            "{b}"
        );
        let step = |key: &str, entered, waiting, completed, exited| StepCounts {
            step_key: key.into(),
            entered,
            waiting,
            completed,
            exited,
            failed: 0,
        };
        assert_eq!(
            stats.steps,
            [
                step("check", 3, 1, 1, 1),
                step("done", 1, 0, 1, 0),
                step("start", 3, 0, 3, 0),
            ],
            "{b}"
        );
        let branch = |name: &str, taken, timed_out: bool| BranchCounts {
            step_key: "check".into(),
            branch_name: name.into(),
            taken,
            everyone_else: name.is_empty() && !timed_out,
            timed_out,
        };
        assert_eq!(
            stats.branches,
            [
                branch("", 1, false),
                branch("", 1, true),
                branch("no", 1, false),
                branch("yes", 2, false)
            ],
            "{b}"
        );
        assert_eq!(
            stats.sends,
            [SendCounts {
                step_key: "notify".into(),
                sent: 1,
                failed: 8,
                dead_lettered: 1,
            },],
            "{b}"
        );
        assert_eq!(
            db.batches().journey_stats("none").await.unwrap(),
            Default::default()
        );

        // The destination's deliveries by the hour.
        let hours = db
            .batches()
            .destination_stats("d1", &StatsRange::default())
            .await
            .unwrap();
        assert_eq!(hours.len(), 1, "{b}");
        assert_eq!(
            (
                hours[0].start.timestamp(),
                hours[0].sent,
                hours[0].failed,
                hours[0].dead_lettered
            ),
            (hour_start(t), 1, 8, 1),
            "{b}"
        );

        // Purging the two finished instances and their timelines changes no figure: the
        // counters stay, and the waiting instance is still active.
        let purged = db
            .batches()
            .purge_finished_instances(t + Duration::days(1), PurgePace::UNPACED)
            .await
            .unwrap();
        assert_eq!(purged, 2, "{b}");
        assert_eq!(
            db.batches().journey_stats("j1").await.unwrap(),
            stats,
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn journey_stats_by_the_hour_and_in_a_time_range() {
    each_backend(async |db| {
        let b = db.backend();
        let base = DateTime::from_timestamp(hour_start(now()) - 5 * 3600, 0).unwrap();
        let hour = |h: i64| base + Duration::hours(h);
        let at = |h: i64, kind, n| {
            (
                CounterKey::new("j1", "start", kind).at(hour(h) + Duration::minutes(7)),
                n,
            )
        };
        // Hour 0 (counts older than hourly counting), then entries at hours 1, 2 and 4.
        db.batches()
            .commit(&Changes {
                counters: BTreeMap::from([
                    (CounterKey::new("j1", "start", CounterKind::Entered), 10),
                    at(1, CounterKind::Entered, 1),
                    at(2, CounterKind::Entered, 2),
                    at(4, CounterKind::Entered, 4),
                    at(4, CounterKind::Step, 4),
                ]),
                ..Changes::default()
            })
            .await
            .unwrap();
        let all = db.batches().journey_stats("j1").await.unwrap();
        assert_eq!(all.entries, 17, "{b}");
        assert!(all.hours.is_empty(), "{b}");

        // [hour 2 + 30 min, hour 4): the hour holding the start, not the hour the end starts.
        let range = StatsRange {
            start: Some(hour(2) + Duration::minutes(30)),
            end: Some(hour(4)),
        };
        let ranged = db
            .batches()
            .journey_stats_in("j1", &range, true)
            .await
            .unwrap();
        assert_eq!(ranged.entries, 2, "{b}");
        assert_eq!(ranged.hours.len(), 1, "{b}");
        assert_eq!(ranged.hours[0].start, hour(2), "{b}");
        assert_eq!(ranged.hours[0].stats.entries, 2, "{b}");

        // Open-ended from hour 1: hours 1, 2 and 4, each its own bucket; hour 0 left out.
        let from = StatsRange {
            start: Some(hour(1)),
            end: None,
        };
        let stats = db
            .batches()
            .journey_stats_in("j1", &from, true)
            .await
            .unwrap();
        assert_eq!(stats.entries, 7, "{b}");
        let buckets: Vec<_> = stats
            .hours
            .iter()
            .map(|h| (h.start, h.stats.entries))
            .collect();
        assert_eq!(buckets, [(hour(1), 1), (hour(2), 2), (hour(4), 4)], "{b}");
        assert_eq!(stats.hours[2].stats.steps[0].entered, 4, "{b}");
    })
    .await;
}

#[tokio::test]
async fn published_stamp_changes_on_publish_and_archive() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        assert_eq!(
            db.journeys().published_stamp().await.unwrap(),
            (0, None),
            "{b}"
        );
        let j = db
            .journeys()
            .insert(&JourneyRecord::new_draft("J", "", json!({}), t))
            .await
            .unwrap();
        assert_eq!(
            db.journeys().published_stamp().await.unwrap(),
            (0, None),
            "{b}"
        );
        let published = db
            .journeys()
            .set_state(&j.id, JourneyState::Published, t + Duration::seconds(1))
            .await
            .unwrap();
        let stamp = db.journeys().published_stamp().await.unwrap();
        assert_eq!(stamp, (1, Some(published.updated_at)), "{b}");
        db.journeys()
            .set_state(&j.id, JourneyState::Archived, t + Duration::seconds(2))
            .await
            .unwrap();
        let archived = db.journeys().published_stamp().await.unwrap();
        assert_eq!(archived.0, 1, "{b}");
        assert_ne!(archived, stamp, "{b}");
    })
    .await;
}

#[tokio::test]
async fn many_instance_updates_span_statements_and_stay_atomic() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let all: Vec<InstanceRecord> = (0..250)
            .map(|n| instance("j1", &format!("u{n}"), None, t))
            .collect();
        db.batches()
            .commit(&Changes {
                instances_new: all.clone(),
                ..Changes::default()
            })
            .await
            .unwrap();
        let bumped: Vec<(InstanceRecord, i64)> = all
            .iter()
            .map(|i| {
                let mut next = i.clone();
                next.version = 2;
                next.passes = 1;
                (next, 1)
            })
            .collect();
        // One stale row late in the batch undoes the statements that already ran.
        let mut stale = bumped.clone();
        stale[230].1 = 5;
        let result = db
            .batches()
            .commit(&Changes {
                instances_updated: stale,
                ..Changes::default()
            })
            .await;
        assert!(is_conflict(&result, &all[230].id), "{b}: {result:?}");
        let ids: Vec<String> = all.iter().map(|i| i.id.clone()).collect();
        let stored = db.batches().instances_by_ids(&ids).await.unwrap();
        assert!(stored.iter().all(|i| i.version == 1), "{b}");

        db.batches()
            .commit(&Changes {
                instances_updated: bumped,
                ..Changes::default()
            })
            .await
            .unwrap();
        let stored = db.batches().instances_by_ids(&ids).await.unwrap();
        assert_eq!(stored.len(), 250, "{b}");
        assert!(
            stored.iter().all(|i| i.version == 2 && i.passes == 1),
            "{b}"
        );
    })
    .await;
}

/// Lanes fenced on different partitions add to their own shard rows of a counter and of an
/// event catalog entry (so they do not queue on one row); every read adds the shards up, and
/// housekeeping folds the shards of past hours into one row per key and hour without changing
/// a count.
#[tokio::test]
async fn lanes_count_in_their_own_shards_and_past_hours_fold_into_one_row() {
    use sea_orm::{ConnectionTrait, Database, Statement};
    each_backend(async |db| {
        let b = db.backend();
        let parts = db.partitions();
        parts.ensure(32).await.unwrap();
        parts
            .acquire("n", &[1, 2, 17], std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let held = parts.held_by("n").await.unwrap();
        assert_eq!(held.len(), 3, "{b}");
        let old = now() - Duration::hours(3);
        let current = now();
        let batch = |n: i64| Changes {
            counters: BTreeMap::from([
                (
                    CounterKey::new("j1", "start", CounterKind::Entered).at(old),
                    n,
                ),
                (
                    CounterKey::new("j1", "start", CounterKind::Entered).at(current),
                    n,
                ),
            ]),
            catalog_seen: vec![("Order Completed".to_owned(), current)],
            ..Changes::default()
        };
        // Partitions 1 and 17 share shard 1; partition 2 writes shard 2.
        for (held, n) in held.iter().zip([1, 2, 4]) {
            db.batches()
                .commit_fenced(&batch(n), &[*held])
                .await
                .unwrap();
        }
        let raw = Database::connect(db.url()).await.unwrap();
        let rows_in = async |hour: i64| -> Vec<(i64, i64)> {
            raw.query_all_raw(Statement::from_sql_and_values(
                raw.get_database_backend(),
                "SELECT shard, n FROM journey_counters WHERE hour = ? ORDER BY shard",
                [hour.into()],
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| {
                (
                    i64::from(row.try_get::<i16>("", "shard").unwrap()),
                    row.try_get::<i64>("", "n").unwrap(),
                )
            })
            .collect()
        };
        assert_eq!(rows_in(hour_start(old)).await, [(1, 5), (2, 2)], "{b}");
        assert_eq!(db.batches().journey_stats("j1").await.unwrap().entries, 14);
        let entry = db.catalog().get("Order Completed").await.unwrap();
        assert_eq!((entry.count, entry.registered), (3, false), "{b}");
        assert_eq!(entry.first_seen, Some(current), "{b}");
        db.catalog().register("Order Completed").await.unwrap();
        let listed = db.catalog().list().await.unwrap();
        assert_eq!(listed.len(), 1, "{b}: one entry per name");
        assert_eq!((listed[0].count, listed[0].registered), (3, true), "{b}");

        let folded = db
            .batches()
            .fold_counter_shards(current - Duration::hours(1), PurgePace::UNPACED)
            .await
            .unwrap();
        assert_eq!(folded, 2, "{b}: the old hour's two shard rows");
        assert_eq!(rows_in(hour_start(old)).await, [(0, 7)], "{b}");
        assert_eq!(rows_in(hour_start(current)).await.len(), 2, "{b}");
        assert_eq!(db.batches().journey_stats("j1").await.unwrap().entries, 14);
        let again = db
            .batches()
            .fold_counter_shards(current - Duration::hours(1), PurgePace::UNPACED)
            .await
            .unwrap();
        assert_eq!(again, 0, "{b}");
        raw.close().await.unwrap();
    })
    .await;
}
