//! Events through the engine on every configured backend: entries, sends, enter-once,
//! re-entry with hold matching by unique value, exit rules, dedupe, per-profile order and the
//! per-profile rate limit.

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

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{
    checkout, engine, engine_waking, engine_with, forwarding, instances, sends, sent_steps, timers,
    unique, welcome_once,
};
use futures::future::join_all;
use journeys_engine::{Ack, AckStatus, EngineConfig};
use journeys_store::InstanceState;
use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, identify, track};
use serde_json::json;

fn accepted(acks: &[Ack]) -> bool {
    acks.iter().all(|a| a.status == AckStatus::Accepted)
}

#[tokio::test]
async fn forwarding_queues_exactly_the_matching_sends() {
    each_backend(async |db| {
        db.audiences()
            .insert("vip", "VIP", chrono::Utc::now())
            .await
            .unwrap();
        let journey = publish(db, &forwarding()).await;
        let wakeups = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&wakeups);
        let engine = engine_waking(
            db,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .await;

        let acks = engine
            .submit(vec![
                identify("ada", "i1", json!({"vip": true, "name": "Ada"})),
                identify("bob", "i2", json!({"vip": false, "name": "Bob"})),
                track(
                    "ada",
                    "order_completed",
                    "o1",
                    json!({"order_id": "A1", "plan": "pro", "total": 30}),
                ),
                track(
                    "ada",
                    "order_completed",
                    "o2",
                    json!({"order_id": "A2", "plan": "free", "total": 5}),
                ),
                track(
                    "bob",
                    "order_completed",
                    "o3",
                    json!({"order_id": "B1", "plan": "pro", "total": 9}),
                ),
                track(
                    "ada",
                    "order_completed",
                    "o4",
                    json!({"order_id": "A3", "plan": "enterprise", "total": 70}),
                ),
                track("ada", "page_viewed", "o5", json!({})),
            ])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        assert_eq!(
            acks.iter()
                .map(|a| a.message_id.as_str())
                .collect::<Vec<_>>(),
            ["i1", "i2", "o1", "o2", "o3", "o4", "o5"]
        );

        let rows = sends(db).await;
        let mut bodies: Vec<_> = rows.iter().map(|r| r.payload.clone()).collect();
        bodies.sort_by_key(|b| b["order"].as_str().map(str::to_owned));
        assert_eq!(
            bodies,
            vec![
                json!({"order": "A1", "total": 30, "customer": "Ada", "event": "forward"}),
                json!({"order": "A3", "total": 70, "customer": "Ada", "event": "forward"}),
            ]
        );
        for row in &rows {
            assert_eq!(row.profile_id, "ada");
            assert_eq!(row.journey_id, journey);
            assert_eq!(row.destination_id, "dest_1");
            assert_eq!(row.method, "POST");
            assert_eq!(row.step_key, "forward");
        }
        // Forwarding instances end at once.
        let ada = instances(db, &journey, "ada").await;
        assert_eq!(ada.len(), 2);
        assert!(ada.iter().all(|i| i.state == InstanceState::Completed));
        // The identify synced the audience and merged the traits.
        assert!(db.audiences().is_member("vip", "ada").await.unwrap());
        assert!(!db.audiences().is_member("vip", "bob").await.unwrap());
        assert_eq!(
            db.profiles().get("ada").await.unwrap().traits["name"],
            json!("Ada")
        );
        assert!(db.catalog().contains("page_viewed").await.unwrap());

        assert!(
            wakeups.load(Ordering::SeqCst) >= 1,
            "the dispatcher is woken after the commit"
        );
        let stats = engine.stats();
        assert_eq!(stats.events_accepted, 7);
        assert_eq!(stats.entries, 2);
        assert_eq!(stats.sends_queued, 2);
        assert_eq!(stats.entries_skipped.get("filters_not_matched"), Some(&1));
        assert_eq!(stats.entries_skipped.get("not_in_audience"), Some(&1));
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn enter_once_enters_at_most_once_across_batches() {
    each_backend(async |db| {
        let journey = publish(db, &welcome_once()).await;
        let engine = engine(db).await;
        let first = engine
            .submit(vec![
                track("u1", "signed_up", "s1", json!({})),
                track("u1", "signed_up", "s2", json!({})),
            ])
            .await;
        assert!(accepted(&first));
        let later = engine
            .submit(vec![track("u1", "signed_up", "s3", json!({}))])
            .await;
        assert!(accepted(&later));

        let all = instances(db, &journey, "u1").await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, InstanceState::Active);
        assert_eq!(all[0].current_step.as_deref(), Some("wait"));
        assert_eq!(timers(db, &all[0].id).await.len(), 1);
        assert_eq!(
            engine.stats().entries_skipped.get("already_entered"),
            Some(&2)
        );
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn reentry_runs_parallel_instances_and_holds_match_by_unique_value() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        let acks = engine
            .submit(vec![
                track("u1", "checkout_started", "c1", json!({"session_id": "s1"})),
                track("u1", "checkout_started", "c2", json!({"session_id": "s2"})),
                // Same value as an active instance: no second one.
                track("u1", "checkout_started", "c3", json!({"session_id": "s1"})),
            ])
            .await;
        assert!(accepted(&acks));
        let running = instances(db, &journey, "u1").await;
        assert_eq!(running.len(), 2);
        assert!(running.iter().all(|i| i.state == InstanceState::Active));
        assert!(
            running
                .iter()
                .all(|i| i.waiting_event.as_deref() == Some("purchase_completed"))
        );
        assert_eq!(
            engine.stats().entries_skipped.get("duplicate_entry"),
            Some(&1)
        );

        // A later batch: the purchase of session s2 reaches only that instance.
        let acks = engine
            .submit(vec![track(
                "u1",
                "purchase_completed",
                "p1",
                json!({"session_id": "s2"}),
            )])
            .await;
        assert!(accepted(&acks));
        let after = instances(db, &journey, "u1").await;
        let s1 = after.iter().find(|i| unique(i) == "s1").unwrap();
        let s2 = after.iter().find(|i| unique(i) == "s2").unwrap();
        assert_eq!(s1.state, InstanceState::Active);
        assert_eq!(s2.state, InstanceState::Completed);
        assert_eq!(s2.version, 2);
        assert!(
            timers(db, &s2.id).await.is_empty(),
            "the hold timer is cancelled"
        );
        assert_eq!(timers(db, &s1.id).await.len(), 1);
        let rows = sends(db).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].instance_id, s2.id);
        assert_eq!(rows[0].step_key, "thanks");
        assert_eq!(
            rows[0].payload["properties"]["journey_context"]["purchase_completed"],
            json!({"session_id": "s2"})
        );
        assert_eq!(engine.stats().hold_matches, 1);

        // With s1 still running, a new session still enters.
        engine
            .submit(vec![track(
                "u1",
                "checkout_started",
                "c4",
                json!({"session_id": "s2"}),
            )])
            .await;
        assert_eq!(instances(db, &journey, "u1").await.len(), 3);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn exit_rules_end_instances_and_their_timers() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let wakeups = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&wakeups);
        let engine = engine_waking(
            db,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .await;
        engine
            .submit(vec![
                track("u1", "checkout_started", "c1", json!({"session_id": "s1"})),
                track("u1", "checkout_started", "c2", json!({"session_id": "s2"})),
                track("u2", "checkout_started", "c3", json!({"session_id": "s1"})),
            ])
            .await;
        // Same-session exit rule: only u1's s1.
        let acks = engine
            .submit(vec![track(
                "u1",
                "session_cancelled",
                "x1",
                json!({"session_id": "s1"}),
            )])
            .await;
        assert!(accepted(&acks));
        let u1 = instances(db, &journey, "u1").await;
        let s1 = u1.iter().find(|i| unique(i) == "s1").unwrap();
        assert_eq!(s1.state, InstanceState::Exited);
        assert!(s1.active_key.is_none());
        assert!(timers(db, &s1.id).await.is_empty());
        assert_eq!(
            u1.iter().find(|i| unique(i) == "s2").unwrap().state,
            InstanceState::Active
        );
        assert_eq!(
            instances(db, &journey, "u2").await[0].state,
            InstanceState::Active
        );

        // Profile-wide exit rule, then the same event name again changes nothing.
        engine
            .submit(vec![
                track("u1", "account_deleted", "x2", json!({})),
                track("u1", "account_deleted", "x3", json!({})),
            ])
            .await;
        let u1 = instances(db, &journey, "u1").await;
        assert!(u1.iter().all(|i| i.state == InstanceState::Exited));
        assert_eq!(engine.stats().exits, 2);
        assert!(sends(db).await.is_empty());
        assert_eq!(wakeups.load(Ordering::SeqCst), 0, "no sends, no wake-up");
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_exit_and_a_reentry_with_the_same_value_in_one_batch() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        engine
            .submit(vec![track(
                "u1",
                "checkout_started",
                "c1",
                json!({"session_id": "s1"}),
            )])
            .await;
        let acks = engine
            .submit(vec![
                track("u1", "session_cancelled", "x1", json!({"session_id": "s1"})),
                track("u1", "checkout_started", "c2", json!({"session_id": "s1"})),
            ])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        let all = instances(db, &journey, "u1").await;
        assert_eq!(all.len(), 2);
        assert_eq!(
            all.iter()
                .filter(|i| i.state == InstanceState::Active)
                .count(),
            1
        );
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_resent_message_id_is_a_duplicate_and_causes_nothing() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        let start = track("u1", "checkout_started", "m1", json!({"session_id": "s1"}));
        let first = engine.submit(vec![start.clone(), start.clone()]).await;
        assert_eq!(first[0].status, AckStatus::Accepted);
        assert_eq!(first[1].status, AckStatus::Duplicate);
        let again = engine.submit(vec![start]).await;
        assert_eq!(again[0].status, AckStatus::Duplicate);

        let buy = track(
            "u1",
            "purchase_completed",
            "m2",
            json!({"session_id": "s1"}),
        );
        engine.submit(vec![buy.clone()]).await;
        // The resent purchase must not count twice (it could not, but it must not even be
        // evaluated: a new instance for s1 would otherwise be free to take it).
        engine
            .submit(vec![track(
                "u1",
                "checkout_started",
                "m3",
                json!({"session_id": "s1"}),
            )])
            .await;
        let resent = engine.submit(vec![buy]).await;
        assert_eq!(resent[0].status, AckStatus::Duplicate);

        let all = instances(db, &journey, "u1").await;
        assert_eq!(all.len(), 2);
        assert_eq!(
            all.iter()
                .filter(|i| i.state == InstanceState::Active)
                .count(),
            1
        );
        assert_eq!(sent_steps(db, "u1").await, ["thanks"]);
        let stats = engine.stats();
        assert_eq!(stats.events_duplicate, 3);
        assert_eq!(stats.events_accepted, 3);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn per_profile_order_is_kept_under_concurrent_submits() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine_with(
            db,
            EngineConfig {
                lanes: 3,
                max_batch_events: 7,
                ..EngineConfig::default()
            },
        )
        .await;
        // For each profile: start a session, then buy in it — one submit per event, every
        // submit issued before any is awaited, profiles interleaved. Reordering the two would
        // leave the purchase unmatched and the instance waiting.
        let mut pending = Vec::new();
        for session in 0..3 {
            for user in 0..12 {
                let profile = format!("u{user}");
                let s = format!("s{session}");
                pending.push(engine.submit(vec![track(
                    &profile,
                    "checkout_started",
                    &format!("c-{user}-{session}"),
                    json!({"session_id": s}),
                )]));
                pending.push(engine.submit(vec![track(
                    &profile,
                    "purchase_completed",
                    &format!("p-{user}-{session}"),
                    json!({"session_id": s}),
                )]));
            }
        }
        // Several tasks await them in reverse order.
        let mut handles = Vec::new();
        while !pending.is_empty() {
            let chunk: Vec<_> = pending.drain(..pending.len().min(10)).rev().collect();
            handles.push(tokio::spawn(join_all(chunk)));
        }
        for handle in handles {
            for acks in handle.await.unwrap() {
                assert!(accepted(&acks), "{acks:?}");
            }
        }
        for user in 0..12 {
            let profile = format!("u{user}");
            let all = instances(db, &journey, &profile).await;
            assert_eq!(all.len(), 3, "{profile}");
            assert!(
                all.iter().all(|i| i.state == InstanceState::Completed),
                "{profile}"
            );
            assert_eq!(
                sent_steps(db, &profile).await,
                ["thanks", "thanks", "thanks"]
            );
        }
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_twenty_sixth_event_in_a_second_is_rate_limited() {
    each_backend(async |db| {
        let engine = engine(db).await;
        let events = (0..26)
            .map(|i| track("busy", "page_viewed", &format!("r{i}"), json!({})))
            .collect();
        let acks = engine.submit(events).await;
        assert!(accepted(&acks[..25]));
        match &acks[25].status {
            AckStatus::Rejected { code, .. } => assert_eq!(code, "rate_limited"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        // Another profile is not affected.
        let other = engine
            .submit(vec![track("calm", "page_viewed", "c1", json!({}))])
            .await;
        assert!(accepted(&other));
        // The rejected event was not stored: resent after a second it is accepted.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let retry = engine
            .submit(vec![track("busy", "page_viewed", "r25", json!({}))])
            .await;
        assert!(accepted(&retry), "{retry:?}");
        let stats = engine.stats();
        assert_eq!(stats.events_rejected.get("rate_limited"), Some(&1));
        assert_eq!(stats.events_accepted, 27);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn events_over_the_active_instance_limit_are_rejected_and_counted() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine_with(
            db,
            EngineConfig {
                max_active_instances_per_profile: 3,
                ..EngineConfig::default()
            },
        )
        .await;
        let events = (0..5)
            .map(|i| {
                track(
                    "u1",
                    "checkout_started",
                    &format!("c{i}"),
                    json!({"session_id": format!("s{i}")}),
                )
            })
            .collect();
        let acks = engine.submit(events).await;
        let codes: Vec<Option<&str>> = acks
            .iter()
            .map(|a| match &a.status {
                AckStatus::Rejected { code, .. } => Some(code.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            codes,
            [
                None,
                None,
                None,
                Some("too_many_instances"),
                Some("too_many_instances")
            ]
        );
        let AckStatus::Rejected { message, .. } = &acks[3].status else {
            unreachable!()
        };
        assert!(
            message.contains("maximum of 3 active instances"),
            "{message}"
        );
        assert_eq!(instances(db, &journey, "u1").await.len(), 3);
        let stats = engine.stats();
        assert_eq!(stats.entries_skipped.get("too_many_instances"), Some(&2));
        assert_eq!(stats.events_rejected.get("too_many_instances"), Some(&2));

        // Not stored: once an instance ended, the same event is applied, not a duplicate.
        let acks = engine
            .submit(vec![
                track("u1", "session_cancelled", "x1", json!({"session_id": "s0"})),
                track("u1", "checkout_started", "c3", json!({"session_id": "s3"})),
            ])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        let active = instances(db, &journey, "u1")
            .await
            .into_iter()
            .filter(|i| i.state == InstanceState::Active)
            .count();
        assert_eq!(active, 3);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_configured_unique_value_length_and_lifetime_apply() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine_with(
            db,
            EngineConfig {
                instance_limits: journeys_engine::InstanceLimits {
                    max_unique_value_chars: 10,
                    ..journeys_engine::InstanceLimits::default()
                },
                max_instance_lifetime: std::time::Duration::from_secs(7 * 86_400),
                ..EngineConfig::default()
            },
        )
        .await;
        let acks = engine
            .submit(vec![
                track(
                    "u1",
                    "checkout_started",
                    "c1",
                    json!({"session_id": "0123456789"}),
                ),
                track(
                    "u1",
                    "checkout_started",
                    "c2",
                    json!({"session_id": "0123456789a"}),
                ),
            ])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        let stored = instances(db, &journey, "u1").await;
        assert_eq!(stored.len(), 1, "the 11-character value is refused");
        assert_eq!(unique(&stored[0]), "0123456789");
        assert_eq!(
            stored[0].expires_at - stored[0].entered_at,
            chrono::TimeDelta::days(7)
        );
        assert_eq!(
            engine
                .stats()
                .entries_skipped
                .get("unique_identifier_too_long"),
            Some(&1)
        );
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unique_values_of_the_default_500_characters_are_stored() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        // Longer than the 191 characters of an indexed key, in multi-byte characters.
        let long = "é".repeat(500);
        let acks = engine
            .submit(vec![
                track("u1", "checkout_started", "c1", json!({"session_id": long})),
                track(
                    "u1",
                    "checkout_started",
                    "c2",
                    json!({"session_id": "x".repeat(501)}),
                ),
            ])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        let stored = instances(db, &journey, "u1").await;
        assert_eq!(stored.len(), 1);
        assert_eq!(unique(&stored[0]), long);
        // A purchase with that value takes the hold branch of exactly that instance.
        let acks = engine
            .submit(vec![track(
                "u1",
                "purchase_completed",
                "p1",
                json!({"session_id": long}),
            )])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        let stored = instances(db, &journey, "u1").await;
        assert_eq!(stored[0].state, InstanceState::Completed);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn archived_journeys_take_no_entries_but_drain() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        engine
            .submit(vec![track(
                "u1",
                "checkout_started",
                "c1",
                json!({"session_id": "s1"}),
            )])
            .await;
        db.journeys()
            .set_state(
                &journey,
                journeys_store::JourneyState::Archived,
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        // The poller picks the archive up within the refresh interval.
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        engine
            .submit(vec![
                track("u1", "checkout_started", "c2", json!({"session_id": "s2"})),
                track(
                    "u1",
                    "purchase_completed",
                    "p1",
                    json!({"session_id": "s1"}),
                ),
            ])
            .await;
        let all = instances(db, &journey, "u1").await;
        assert_eq!(all.len(), 1, "no entry into an archived journey");
        assert_eq!(
            all[0].state,
            InstanceState::Completed,
            "the running instance drained"
        );
        assert_eq!(sent_steps(db, "u1").await, ["thanks"]);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_queued_events_then_refuses_new_ones() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        let pending: Vec<_> = (0..20)
            .map(|i| {
                engine.submit(vec![track(
                    &format!("u{i}"),
                    "checkout_started",
                    &format!("c{i}"),
                    json!({"session_id": "s"}),
                )])
            })
            .collect();
        engine.shutdown().await;
        for acks in join_all(pending).await {
            assert!(accepted(&acks), "{acks:?}");
        }
        for i in 0..20 {
            assert_eq!(instances(db, &journey, &format!("u{i}")).await.len(), 1);
        }
        let late = engine
            .submit(vec![track("u1", "checkout_started", "late", json!({}))])
            .await;
        assert!(
            matches!(&late[0].status, AckStatus::Rejected { code, .. } if code == "unavailable")
        );
    })
    .await;
}

#[tokio::test]
async fn one_event_can_exit_an_instance_and_reenter_with_the_same_value() {
    each_backend(async |db| {
        // "Restart the session": the entry event is also an exit rule for the same session.
        let mut definition = checkout();
        definition.exit_rules.push(journeys_core::model::ExitRule {
            event: "checkout_started".into(),
            filters: Vec::new(),
            match_unique_identifier: true,
            send: None,
        });
        let journey = publish(db, &definition).await;
        let engine = engine(db).await;
        engine
            .submit(vec![track(
                "u1",
                "checkout_started",
                "c1",
                json!({"session_id": "s1"}),
            )])
            .await;
        let acks = engine
            .submit(vec![track(
                "u1",
                "checkout_started",
                "c2",
                json!({"session_id": "s1"}),
            )])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        let all = instances(db, &journey, "u1").await;
        let states: Vec<_> = all.iter().map(|i| i.state).collect();
        assert_eq!(states.len(), 2);
        assert!(states.contains(&InstanceState::Exited) && states.contains(&InstanceState::Active));
        assert_eq!(engine.stats().conflicts, 0);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_identify_growing_traits_past_their_limits_is_rejected_and_not_stored() {
    each_backend(async |db| {
        let engine = engine_with(
            db,
            EngineConfig {
                trait_limits: journeys_engine::TraitLimits {
                    max_count: 3,
                    max_bytes: 200,
                },
                ..EngineConfig::default()
            },
        )
        .await;
        let acks = engine
            .submit(vec![
                identify("grower", "i1", json!({"a": 1, "b": 2})),
                identify("grower", "i2", json!({"c": 3, "d": 4})),
                identify("grower", "i3", json!({"c": 3})),
                identify("grower", "i4", json!({"a": "x".repeat(300)})),
                identify("grower", "i5", json!({"a": "replaced"})),
            ])
            .await;
        let codes: Vec<Option<&str>> = acks
            .iter()
            .map(|a| match &a.status {
                AckStatus::Rejected { code, .. } => Some(code.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            codes,
            [None, Some("traits_limit"), None, Some("traits_limit"), None],
            "{acks:?}"
        );
        let AckStatus::Rejected { message, .. } = &acks[1].status else {
            unreachable!()
        };
        assert!(message.contains("4 traits; at most 3"), "{message}");
        let traits = db.profiles().get("grower").await.unwrap().traits;
        assert_eq!(
            serde_json::Value::Object(traits),
            json!({"a": "replaced", "b": 2, "c": 3})
        );
        // A rejected identify is not deduplicated: resent within the limits, it is applied.
        let retry = engine
            .submit(vec![identify("grower", "i2", json!({"c": 4}))])
            .await;
        assert!(accepted(&retry), "{retry:?}");
        assert_eq!(engine.stats().events_rejected.get("traits_limit"), Some(&2));
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_event_catalog_records_at_most_its_bound_of_names_and_every_event_still_applies() {
    each_backend(async |db| {
        let b = db.backend();
        let engine = common::engine_with(
            db,
            EngineConfig {
                max_catalog_events: 2,
                ..EngineConfig::default()
            },
        )
        .await;
        let events = ["a", "b", "c", "a", "d"]
            .iter()
            .enumerate()
            .map(|(i, name)| track("u1", name, &format!("m{i}"), json!({})))
            .collect();
        for ack in engine.submit(events).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}: every event applies");
        }
        let catalog = db.catalog().list().await.unwrap();
        let names: Vec<(&str, i64)> = catalog.iter().map(|e| (e.name.as_str(), e.count)).collect();
        assert_eq!(names, [("a", 2), ("b", 1)], "{b}");
        engine.shutdown().await;
    })
    .await;
}
