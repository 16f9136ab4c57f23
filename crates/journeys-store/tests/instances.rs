//! Instances and timelines on every configured backend.

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

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;

use journeys_store::{
    InstanceFilter, InstanceRecord, InstanceState, StoreError, TimelineEntry, TransitionEntry,
};
use journeys_testkit::each_backend;

fn instance(
    journey: &str,
    profile: &str,
    state: InstanceState,
    at: DateTime<Utc>,
) -> InstanceRecord {
    InstanceRecord {
        id: journeys_store::new_id(),
        journey_id: journey.into(),
        journey_revision: 3,
        profile_id: profile.into(),
        unique_value: Some("app-1".into()),
        state,
        current_step: Some("wait_for_purchase".into()),
        waiting_event: Some("Order Completed".into()),
        context: json!({"Signed Up": {"plan": "pro"}}),
        state_blob: json!({"step": "wait_for_purchase", "passes": 0}),
        passes: 0,
        version: 1,
        entered_at: at,
        updated_at: at,
        ended_at: (state != InstanceState::Active).then_some(at),
        active_key: None,
        expires_at: at + Duration::days(365),
    }
}

fn entry(instance: &InstanceRecord, at: DateTime<Utc>, step: &str) -> TimelineEntry {
    TimelineEntry {
        instance_id: instance.id.clone(),
        profile_id: instance.profile_id.clone(),
        at,
        step_key: step.into(),
        kind: "step".into(),
        cause: "msg-1".into(),
        detail: json!({"step": step}),
        journey_id: None,
    }
}

#[tokio::test]
async fn get_returns_instance_with_timeline_in_time_then_insert_order() {
    each_backend(async |db| {
        let b = db.backend();
        let t0 = Utc::now().trunc_subsecs(6);
        let i = db
            .instances()
            .insert_instance(&instance("j1", "u1", InstanceState::Active, t0))
            .await
            .unwrap();
        let other = db
            .instances()
            .insert_instance(&instance("j1", "u2", InstanceState::Active, t0))
            .await
            .unwrap();
        let t1 = t0 + Duration::milliseconds(1);
        let t2 = t0 + Duration::seconds(2);
        db.instances()
            .insert_timeline(&[
                entry(&i, t2, "late"),
                entry(&i, t1, "first_at_t1"),
                entry(&other, t0, "not_mine"),
                entry(&i, t1, "second_at_t1"),
                entry(&i, t0, "entered"),
            ])
            .await
            .unwrap();
        let detail = db.instances().get(&i.id).await.unwrap();
        assert_eq!(detail.instance, i, "{b}");
        let steps: Vec<_> = detail
            .timeline
            .iter()
            .map(|t| t.step_key.as_str())
            .collect();
        assert_eq!(
            steps,
            ["entered", "first_at_t1", "second_at_t1", "late"],
            "{b}"
        );
        assert_eq!(detail.timeline[0].at, t0);
        assert_eq!(detail.timeline[3].detail, json!({"step": "late"}));
        assert!(matches!(
            db.instances().get("missing").await,
            Err(StoreError::NotFound { .. })
        ));

        let err = db.instances().insert_instance(&i).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::AlreadyExists {
                    entity: "instance",
                    ..
                }
            ),
            "{b}: {err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn list_filters_and_pages_and_counts_active() {
    each_backend(async |db| {
        let b = db.backend();
        let now = Utc::now();
        let mut all = Vec::new();
        for (journey, profile, state) in [
            ("j1", "u1", InstanceState::Active),
            ("j1", "u1", InstanceState::Completed),
            ("j1", "u2", InstanceState::Active),
            ("j2", "u1", InstanceState::Active),
            ("j2", "u1", InstanceState::Exited),
            ("j2", "u3", InstanceState::Failed),
        ] {
            all.push(
                db.instances()
                    .insert_instance(&instance(journey, profile, state, now))
                    .await
                    .unwrap(),
            );
        }
        let list = |filter: InstanceFilter| {
            let store = db.store().clone();
            async move {
                let mut ids = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let page = store
                        .instances()
                        .list(&filter, 2, token.as_deref())
                        .await
                        .unwrap();
                    ids.extend(page.items.into_iter().map(|i| i.id));
                    match page.next_token {
                        Some(t) => token = Some(t),
                        None => break ids,
                    }
                }
            }
        };
        let expect = |pred: &dyn Fn(&InstanceRecord) -> bool| {
            let mut ids: Vec<_> = all
                .iter()
                .filter(|i| pred(i))
                .map(|i| i.id.clone())
                .collect();
            ids.sort();
            ids
        };

        assert_eq!(
            list(InstanceFilter::default()).await,
            expect(&|_| true),
            "{b}"
        );
        assert_eq!(
            list(InstanceFilter {
                journey_id: Some("j1".into()),
                ..Default::default()
            })
            .await,
            expect(&|i| i.journey_id == "j1"),
            "{b}"
        );
        assert_eq!(
            list(InstanceFilter {
                profile_id: Some("u1".into()),
                state: Some(InstanceState::Active),
                ..Default::default()
            })
            .await,
            expect(&|i| i.profile_id == "u1" && i.state == InstanceState::Active),
            "{b}"
        );
        assert_eq!(
            list(InstanceFilter {
                journey_id: Some("j2".into()),
                profile_id: Some("u3".into()),
                state: Some(InstanceState::Failed),
            })
            .await
            .len(),
            1
        );

        assert_eq!(
            db.instances().count_active_by_profile("u1").await.unwrap(),
            2,
            "{b}"
        );
        assert_eq!(
            db.instances().count_active_by_profile("u3").await.unwrap(),
            0,
            "{b}"
        );
        assert_eq!(
            db.instances()
                .count_active_by_profile("nobody")
                .await
                .unwrap(),
            0
        );
    })
    .await;
}

#[tokio::test]
async fn compact_rows_expand_and_stand_ins_list_among_stored_instances() {
    each_backend(async |db| {
        let b = db.backend();
        let t = Utc::now().trunc_subsecs(6);
        let step = |key: &str, kind: &str, detail| TransitionEntry {
            step_key: key.into(),
            kind: kind.into(),
            detail,
        };
        // Two stored instances of j1 and three stand-ins (two of j1, one of j2), ids chosen so
        // that stored and stood-in instances alternate in id order.
        let mut stored = Vec::new();
        for id in ["b", "d"] {
            let mut i = instance("j1", "u1", InstanceState::Active, t);
            i.id = format!("{id}-stored");
            stored.push(db.instances().insert_instance(&i).await.unwrap());
        }
        // A stored instance's compact row, and a row written in the old one-entry form.
        let mut rows = vec![
            TimelineEntry::transition(
                &stored[0].id,
                "u1",
                t,
                "m1",
                vec![
                    step("start", "entered", json!(null)),
                    step("start", "step", json!(null)),
                    step("check", "branch", json!({"branch": "yes"})),
                    step("wait", "step", json!(null)),
                ],
            )
            .unwrap(),
            TimelineEntry::transition(
                &stored[0].id,
                "u1",
                t + Duration::seconds(1),
                "m2",
                vec![step("wait", "returned_to_start", json!({"pass": 1}))],
            )
            .unwrap(),
        ];
        assert_eq!(
            rows[1].detail,
            json!({"pass": 1}),
            "one entry is stored as itself"
        );
        for (id, journey, kind) in [
            ("a", "j1", "completed"),
            ("c", "j1", "failed"),
            ("e", "j2", "completed"),
        ] {
            let mut row = TimelineEntry::transition(
                &format!("{id}-stood-in"),
                "u1",
                t,
                "m3",
                vec![
                    step("start", "entered", json!(null)),
                    step("forward", "send", json!({"message_id": "jm_1"})),
                    step("forward", kind, json!(null)),
                ],
            )
            .unwrap();
            row.stand_in_for(journey, 7, Some("order-1"));
            rows.push(row);
        }
        db.instances().insert_timeline(&rows).await.unwrap();

        let detail = db.instances().get(&stored[0].id).await.unwrap();
        let path: Vec<(&str, &str, &str)> = detail
            .timeline
            .iter()
            .map(|e| (e.kind.as_str(), e.step_key.as_str(), e.cause.as_str()))
            .collect();
        assert_eq!(
            path,
            [
                ("entered", "start", "m1"),
                ("step", "start", "m1"),
                ("branch", "check", "m1"),
                ("step", "wait", "m1"),
                ("returned_to_start", "wait", "m2"),
            ],
            "{b}"
        );
        assert_eq!(detail.timeline[2].detail, json!({"branch": "yes"}), "{b}");
        assert_eq!(detail.timeline[0].detail, json!(null), "{b}");
        assert_eq!(detail.timeline[4].detail, json!({"pass": 1}), "{b}");

        let failed = db.instances().get("c-stood-in").await.unwrap();
        assert_eq!(failed.instance.state, InstanceState::Failed, "{b}");
        assert_eq!(failed.instance.journey_id, "j1", "{b}");
        assert_eq!(failed.instance.journey_revision, 7, "{b}");
        assert_eq!(
            failed.instance.unique_value.as_deref(),
            Some("order-1"),
            "{b}"
        );
        assert_eq!(
            failed.instance.current_step.as_deref(),
            Some("forward"),
            "{b}"
        );
        assert_eq!(failed.timeline.len(), 3, "{b}");
        assert_eq!(
            failed.timeline[1].detail,
            json!({"message_id": "jm_1"}),
            "{b}"
        );

        // Pages of two through j1: stored and stood-in instances in one id order.
        let j1 = InstanceFilter {
            journey_id: Some("j1".into()),
            ..InstanceFilter::default()
        };
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = db.instances().list(&j1, 2, token.as_deref()).await.unwrap();
            assert!(page.items.len() <= 2, "{b}");
            ids.extend(page.items.into_iter().map(|i| i.id));
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(
            ids,
            ["a-stood-in", "b-stored", "c-stood-in", "d-stored"],
            "{b}"
        );
        let listed = |filter: InstanceFilter| async move {
            db.instances()
                .list(&filter, 100, None)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(listed(InstanceFilter::default()).await.len(), 5, "{b}");
        assert_eq!(
            listed(InstanceFilter {
                state: Some(InstanceState::Completed),
                ..InstanceFilter::default()
            })
            .await,
            ["a-stood-in", "e-stood-in"],
            "{b}"
        );
        assert_eq!(
            listed(InstanceFilter {
                profile_id: Some("u2".into()),
                ..InstanceFilter::default()
            })
            .await,
            Vec::<String>::new(),
            "{b}"
        );
    })
    .await;
}
