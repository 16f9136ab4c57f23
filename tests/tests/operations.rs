//! What an operator sees and does on live data, on every backend: `GetJourneyStats`,
//! `ProfileService/GetProfile` (traits, audiences, active instances), `ExitInstance`, and
//! `ArchiveJourney` in `EXIT` and `DRAIN` modes on journeys with instances still waiting.

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

use std::time::Duration;

use journeys_proto::v1 as pb;
use journeys_testkit::{Sink, eventually};
use journeys_tests::ingest::{identify, send_accepted, track};
use journeys_tests::{Stack, StackClients, StackOptions, on_each_backend};
use serde_json::{Value, json};
use tonic::Code;

fn trials_journey(id: &str) -> Value {
    json!({"journey": {
        "id": id,
        "name": format!("Trial conversion {id}"),
        "entry": {"event": "trial_started"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "trial_id",
        "start_step": "welcome",
        "steps": [
            {"key": "welcome", "name": "Welcome", "send": {
                "destination_id": "hook",
                "action": {"path": format!("/{id}/welcome")},
                "next": "wait"
            }},
            {"key": "wait", "name": "Wait for a subscription", "hold_until": {
                "branches": [{"name": "converted", "event": "subscribed", "next": "thanks"}],
                "max_duration": "3600s",
                "timeout_next": ""
            }},
            {"key": "thanks", "name": "Thank you", "send": {
                "destination_id": "hook",
                "action": {"path": format!("/{id}/thanks")}
            }}
        ]
    }})
}

fn state(instance: &pb::Instance) -> pb::InstanceState {
    pb::InstanceState::try_from(instance.state).unwrap_or(pb::InstanceState::Unspecified)
}

async fn profile(c: &mut StackClients, user: &str) -> Result<pb::Profile, tonic::Status> {
    c.profiles
        .get_profile(pb::GetProfileRequest {
            user_id: user.to_owned(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// `(entered, waiting, completed, exited)` of each step, in definition order.
fn step_counts(stats: &pb::GetJourneyStatsResponse) -> Vec<(&str, [i64; 4])> {
    stats
        .steps
        .iter()
        .map(|s| {
            (
                s.step_key.as_str(),
                [s.entered, s.waiting, s.completed, s.exited],
            )
        })
        .collect()
}

#[tokio::test]
async fn stats_profiles_exits_and_archiving_follow_live_instances() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("app").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["trial_started", "subscribed"]).await?;
        c.audience("vip", &["u1"]).await?;
        c.audience("beta", &[]).await?;
        let journey = c.publish(&trials_journey("trials")).await?;

        // A boolean trait named like an audience keeps that membership in sync.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                identify(
                    "u1",
                    "i-1",
                    &json!({"name": "Ann", "beta": true, "seats": 3}),
                ),
                track("u1", "trial_started", "t-1", &json!({"trial_id": "T1"})),
                track("u1", "trial_started", "t-2", &json!({"trial_id": "T2"})),
                track("u2", "trial_started", "t-3", &json!({"trial_id": "T3"})),
                track(
                    "u1",
                    "subscribed",
                    "s-1",
                    &json!({"trial_id": "T1", "plan": "pro"}),
                ),
            ],
        )
        .await?;
        sink.wait_for(4, Duration::from_secs(20)).await;

        let u1 = profile(&mut c, "u1").await?;
        assert_eq!(
            journeys_control_plane::convert::json::opt_struct_to_json(u1.traits.as_ref()),
            json!({"name": "Ann", "beta": true, "seats": 3})
        );
        let mut audiences = u1.audiences.clone();
        audiences.sort();
        assert_eq!(audiences, ["beta", "vip"]);
        let mut active: Vec<&str> = u1
            .active_instances
            .iter()
            .map(|i| i.unique_value.as_str())
            .collect();
        active.sort_unstable();
        assert_eq!(active, ["T2"], "T1 converted and completed");
        let u2 = profile(&mut c, "u2").await?;
        assert!(u2.audiences.is_empty());
        assert_eq!(u2.active_instances.len(), 1);
        assert_eq!(
            profile(&mut c, "nobody")
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
            Code::NotFound
        );

        // Identify with `beta: false` removes the membership again.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![identify("u1", "i-2", &json!({"beta": false}))],
        )
        .await?;
        assert_eq!(profile(&mut c, "u1").await?.audiences, ["vip"]);

        let stats = eventually("both sends counted", Duration::from_secs(10), || {
            let mut c = c.clone();
            async move {
                let stats = c.stats("trials").await?;
                let sent: i64 = stats.sends.iter().map(|s| s.sent).sum();
                Ok::<_, anyhow::Error>((sent == 4).then_some(stats))
            }
        })
        .await;
        assert_eq!(
            step_counts(&stats),
            [
                ("welcome", [3, 0, 3, 0]),
                ("wait", [3, 2, 1, 0]),
                ("thanks", [1, 0, 1, 0])
            ]
        );
        let sends: Vec<(&str, i64, i64, i64)> = stats
            .sends
            .iter()
            .map(|s| (s.step_key.as_str(), s.sent, s.failed, s.dead_lettered))
            .collect();
        assert_eq!(sends, [("welcome", 3, 0, 0), ("thanks", 1, 0, 0)]);
        let branches: Vec<(&str, &str, i64)> = stats
            .branches
            .iter()
            .map(|b| (b.step_key.as_str(), b.branch_name.as_str(), b.taken))
            .collect();
        // The hold's timeout branch is listed too (taken by no one yet).
        assert_eq!(branches, [("wait", "converted", 1), ("wait", "", 0)]);
        assert!(stats.branches[1].timed_out);
        assert_eq!(stats.entries, 3);

        // The same figures for a range around now, in one hourly bucket; none for a range
        // in the past; a range that ends before it starts is refused, naming the field.
        let now = chrono::Utc::now();
        let at = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        };
        let ranged = |start, end| pb::GetJourneyStatsRequest {
            id: "trials".into(),
            from: Some(at(start)),
            to: Some(at(end)),
            hourly: true,
        };
        let hour = chrono::TimeDelta::hours(1);
        let this_hour = c
            .journeys
            .get_journey_stats(ranged(now - hour, now + hour))
            .await?
            .into_inner();
        assert_eq!(this_hour.entries, 3);
        let bucket_entries: i64 = this_hour.hours.iter().map(|h| h.entries).sum();
        assert_eq!(bucket_entries, 3, "{:?}", this_hour.hours);
        let past = c
            .journeys
            .get_journey_stats(ranged(now - hour * 48, now - hour * 24))
            .await?
            .into_inner();
        assert_eq!((past.entries, past.hours.len()), (0, 0));
        assert_eq!(step_counts(&past)[0], ("welcome", [0, 0, 0, 0]));
        let backwards = c
            .journeys
            .get_journey_stats(ranged(now, now - hour))
            .await
            .unwrap_err();
        assert_eq!(backwards.code(), Code::InvalidArgument);
        assert!(
            backwards.message().contains("to: must be after from"),
            "{backwards:?}"
        );
        // The destination's deliveries of this hour.
        let delivered = c
            .destinations
            .get_destination_stats(pb::GetDestinationStatsRequest {
                id: "hook".into(),
                from: Some(at(now - hour)),
                to: None,
            })
            .await?
            .into_inner();
        assert_eq!(
            (delivered.sent, delivered.failed, delivered.dead_lettered),
            (4, 0, 0)
        );
        assert_eq!(delivered.hours.iter().map(|h| h.sent).sum::<i64>(), 4);

        // An operator exits u1's T2.
        let t2 = u1.active_instances[0].id.clone();
        let exited = c
            .instances
            .exit_instance(pb::ExitInstanceRequest { id: t2.clone() })
            .await?
            .into_inner();
        assert_eq!(state(&exited), pb::InstanceState::Exited);
        assert_eq!(
            exited
                .timeline
                .last()
                .map(|t| (t.kind.as_str(), t.cause.as_str())),
            Some(("exited", "operator"))
        );
        let again = c
            .instances
            .exit_instance(pb::ExitInstanceRequest { id: t2.clone() })
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition);
        let missing = c
            .instances
            .exit_instance(pb::ExitInstanceRequest {
                id: "no-such-instance".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert!(profile(&mut c, "u1").await?.active_instances.is_empty());
        // Its subscription now comes too late: nothing is sent.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track("u1", "subscribed", "s-2", &json!({"trial_id": "T2"}))],
        )
        .await?;
        let stats = c.stats("trials").await?;
        assert_eq!(step_counts(&stats)[1], ("wait", [3, 1, 1, 1]));

        // Archive in EXIT mode: u2's T3 ends at once, and no one enters any more.
        let archived = c
            .journeys
            .archive_journey(pb::ArchiveJourneyRequest {
                id: journey.id.clone(),
                mode: pb::ArchiveMode::Exit as i32,
            })
            .await?
            .into_inner();
        assert_eq!(archived.state, pb::JourneyState::Archived as i32);
        let t3 = &c.instances_of("trials", "u2").await?[0];
        assert_eq!(state(t3), pb::InstanceState::Exited);
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track("u3", "trial_started", "t-4", &json!({"trial_id": "T4"})),
                track("u2", "subscribed", "s-3", &json!({"trial_id": "T3"})),
            ],
        )
        .await?;
        assert!(c.instances_of("trials", "u3").await?.is_empty());
        let stats = c.stats("trials").await?;
        assert_eq!(step_counts(&stats)[1], ("wait", [3, 0, 1, 2]));
        let exits: Vec<(&str, i64)> = stats
            .exits
            .iter()
            .map(|e| (e.reason.as_str(), e.count))
            .collect();
        assert_eq!(exits, [("journey_archived", 1), ("operator", 1)]);
        assert_eq!(
            sink.settle(Duration::from_millis(800)).await.len(),
            4,
            "nothing is sent after the exits"
        );
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn archiving_in_drain_mode_lets_waiting_instances_finish() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("app").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["trial_started", "subscribed"]).await?;
        let journey = c.publish(&trials_journey("drained")).await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "trial_started",
                "t-1",
                &json!({"trial_id": "T1"}),
            )],
        )
        .await?;
        sink.wait_for(1, Duration::from_secs(20)).await;

        c.journeys
            .archive_journey(pb::ArchiveJourneyRequest {
                id: journey.id.clone(),
                mode: pb::ArchiveMode::Drain as i32,
            })
            .await?;
        let waiting = &c.instances_of("drained", "u1").await?[0];
        assert_eq!(state(waiting), pb::InstanceState::Active);
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track("u2", "trial_started", "t-2", &json!({"trial_id": "T2"})),
                track("u1", "subscribed", "s-1", &json!({"trial_id": "T1"})),
            ],
        )
        .await?;
        assert!(
            c.instances_of("drained", "u2").await?.is_empty(),
            "no new entries"
        );
        assert_eq!(
            state(&c.instance(&waiting.id).await?),
            pb::InstanceState::Completed,
            "the waiting instance still takes its branch"
        );
        let received = sink.wait_for(2, Duration::from_secs(20)).await;
        assert_eq!(received[1].path, "/drained/thanks");
        assert_eq!(sink.settle(Duration::from_millis(800)).await.len(), 2);
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

/// Creates the draft of `json` and returns its id.
async fn draft(c: &mut StackClients, json: &Value) -> anyhow::Result<String> {
    Ok(c.journeys
        .create_journey(journeys_tests::journey_request_from_json(json)?)
        .await?
        .into_inner()
        .id)
}

fn replacing(
    id: &str,
    replaces: &str,
    mode: pb::ArchiveMode,
    exclude: bool,
) -> pb::PublishJourneyRequest {
    pb::PublishJourneyRequest {
        id: id.to_owned(),
        replaces: replaces.to_owned(),
        replace_mode: mode as i32,
        exclude_active: exclude,
    }
}

#[tokio::test]
async fn a_published_journey_is_replaced_in_one_step_draining_or_exiting_the_old_one()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("app").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["trial_started", "subscribed"]).await?;
        c.publish(&trials_journey("v1")).await?;
        let trial = |user: &str, n: u32| {
            track(
                user,
                "trial_started",
                &format!("t-{user}-{n}"),
                &json!({"trial_id": format!("T{user}{n}")}),
            )
        };
        send_accepted(&mut c.ingest, &key, vec![trial("u1", 1)]).await?;
        sink.wait_for(1, Duration::from_secs(20)).await;

        // Refused, each for its field, changing nothing.
        let v2 = draft(&mut c, &trials_journey("v2")).await?;
        let refusals = [
            (
                replacing(&v2, "v1", pb::ArchiveMode::Exit, true),
                Code::InvalidArgument,
                "exclude_active",
            ),
            (
                replacing(&v2, &v2, pb::ArchiveMode::Drain, false),
                Code::InvalidArgument,
                "replaces",
            ),
            (
                replacing(&v2, "nope", pb::ArchiveMode::Drain, false),
                Code::NotFound,
                "nope",
            ),
            (
                replacing(&v2, "", pb::ArchiveMode::Exit, false),
                Code::InvalidArgument,
                "replace_mode",
            ),
        ];
        for (request, code, names) in refusals {
            let err = c.journeys.publish_journey(request).await.unwrap_err();
            assert_eq!(err.code(), code, "{err:?}");
            assert!(err.message().contains(names), "{}", err.message());
        }
        let v3 = draft(&mut c, &trials_journey("v3")).await?;
        let err = c
            .journeys
            .publish_journey(replacing(&v2, &v3, pb::ArchiveMode::Drain, false))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "a draft is not replaced"
        );
        let v1 = c
            .journeys
            .get_journey(pb::GetJourneyRequest { id: "v1".into() })
            .await?
            .into_inner();
        assert_eq!(
            v1.state,
            pb::JourneyState::Published as i32,
            "nothing changed"
        );

        // Drain with exclusion: v2 takes the entries, u1 (waiting in v1) stays out of it until
        // that instance ends; v1's instance still takes its branch.
        let published = c
            .journeys
            .publish_journey(replacing(&v2, "v1", pb::ArchiveMode::Drain, true))
            .await?
            .into_inner();
        assert_eq!(published.state, pb::JourneyState::Published as i32);
        assert_eq!(published.replaces, "v1");
        assert!(published.replace_excludes_active);
        let v1 = c
            .journeys
            .get_journey(pb::GetJourneyRequest { id: "v1".into() })
            .await?
            .into_inner();
        assert_eq!(v1.state, pb::JourneyState::Archived as i32);
        send_accepted(&mut c.ingest, &key, vec![trial("u1", 2), trial("u2", 1)]).await?;
        let received = sink.wait_for(2, Duration::from_secs(20)).await;
        assert_eq!(received[1].path, "/v2/welcome");
        assert_eq!(received[1].body["userId"], "u2");
        assert!(c.instances_of(&v2, "u1").await?.is_empty(), "u1 excluded");
        assert_eq!(
            c.instances_of("v1", "u1").await?.len(),
            1,
            "no new entries in v1"
        );
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track("u1", "subscribed", "s-1", &json!({"trial_id": "Tu11"})),
                trial("u1", 3),
            ],
        )
        .await?;
        let received = sink.wait_for(4, Duration::from_secs(20)).await;
        let paths: Vec<(&str, &str)> = received[2..]
            .iter()
            .map(|r| (r.path.as_str(), r.str_field("userId")))
            .collect();
        assert_eq!(
            paths,
            [("/v1/thanks", "u1"), ("/v2/welcome", "u1")],
            "u1 enters v2 once done in v1"
        );

        // Exit mode: v2's waiting instances end at once; v3 takes the entries.
        let before = c.instances_of(&v2, "").await?;
        assert!(before.iter().all(|i| state(i) == pb::InstanceState::Active));
        c.journeys
            .publish_journey(replacing(&v3, &v2, pb::ArchiveMode::Exit, false))
            .await?;
        for instance in c.instances_of(&v2, "").await? {
            assert_eq!(state(&instance), pb::InstanceState::Exited, "{instance:?}");
        }
        send_accepted(&mut c.ingest, &key, vec![trial("u2", 2)]).await?;
        let received = sink.wait_for(5, Duration::from_secs(20)).await;
        assert_eq!(received[4].path, "/v3/welcome");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

/// Rows of `table` whose `column` is `id`.
async fn rows_of(db: &sea_orm::DatabaseConnection, table: &str, column: &str, id: &str) -> i64 {
    use sea_orm::{ConnectionTrait as _, Statement};
    let statement = Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?"),
        [id.into()],
    );
    let row = db.query_one_raw(statement).await.unwrap().unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

fn delete(user: &str, suppress: bool) -> pb::DeleteProfileRequest {
    pb::DeleteProfileRequest {
        user_id: user.to_owned(),
        anonymous_id: String::new(),
        suppress,
    }
}

#[tokio::test]
async fn a_deleted_profile_leaves_only_its_tombstone_and_its_queued_sends_never_go_out()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        // The first send is refused with a long Retry-After: it is still queued when the
        // profile is deleted.
        sink.script(vec![
            journeys_testkit::Reply::status(429).header("retry-after", "60"),
        ]);
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("app").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["trial_started", "subscribed", "signed_up"])
            .await?;
        c.audience("vip", &["u1", "u2"]).await?;
        c.publish(&trials_journey("trials")).await?;
        c.publish(&json!({"journey": {
            "id": "once",
            "name": "Signed up once",
            "entry": {"event": "signed_up"},
            "entry_rule": "ENTER_ONCE",
            "start_step": "done",
            "steps": [{"key": "done", "name": "Done", "end": {}}]
        }}))
        .await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                identify("u1", "i-1", &json!({"email": "u1@example.com"})),
                track("u1", "signed_up", "su-1", &json!({})),
                track("u1", "trial_started", "t-1", &json!({"trial_id": "T1"})),
                track("u2", "trial_started", "t-2", &json!({"trial_id": "T2"})),
            ],
        )
        .await?;
        sink.wait_for(2, Duration::from_secs(20)).await;
        let db = sea_orm::Database::connect(url.as_str()).await?;
        for (table, column) in [
            ("audience_members", "user_id"),
            ("enter_once", "profile_id"),
            ("instances", "profile_id"),
            ("timeline", "profile_id"),
            ("timers", "profile_id"),
            ("outbox", "profile_id"),
        ] {
            assert!(
                rows_of(&db, table, column, "u1").await > 0,
                "u1 has {table} rows"
            );
        }

        // Refused, each for its field, changing nothing.
        for (request, field) in [
            (delete("", false), "user_id"),
            (
                pb::DeleteProfileRequest {
                    anonymous_id: "a1".into(),
                    ..delete("u1", false)
                },
                "anonymous_id",
            ),
            (delete(&"x".repeat(200), false), "user_id"),
        ] {
            let err = c.profiles.delete_profile(request).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains(field), "{}", err.message());
        }

        let deleted = c
            .profiles
            .delete_profile(delete("u1", false))
            .await?
            .into_inner();
        assert_eq!(deleted.user_id, "u1");
        assert!(deleted.deleted_at.is_some() && !deleted.suppressed);
        let err = profile(&mut c, "u1").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        for (table, column) in [
            ("audience_members", "user_id"),
            ("enter_once", "profile_id"),
            ("instances", "profile_id"),
            ("timeline", "profile_id"),
            ("timers", "profile_id"),
            ("outbox", "profile_id"),
        ] {
            assert_eq!(
                rows_of(&db, table, column, "u1").await,
                0,
                "u1's {table} rows"
            );
        }
        assert_eq!(
            rows_of(&db, "profiles", "user_id", "u1").await,
            1,
            "the tombstone"
        );
        assert_eq!(
            c.instances_of("trials", "u2").await?.len(),
            1,
            "u2 untouched"
        );

        // An event sent before the deletion, arriving after it, does not bring u1 back.
        let mut late = track("u1", "trial_started", "t-late", &json!({"trial_id": "T9"}));
        late.timestamp = Some(prost_types::Timestamp::from(
            std::time::SystemTime::now() - Duration::from_secs(60),
        ));
        send_accepted(&mut c.ingest, &key, vec![late]).await?;
        assert!(c.instances_of("trials", "u1").await?.is_empty());
        assert_eq!(
            profile(&mut c, "u1").await.unwrap_err().code(),
            Code::NotFound
        );

        // u1's queued send never goes out; u2's does.
        sink.answer_by_default(journeys_testkit::Reply::status(200));
        let received = sink.settle(Duration::from_secs(2)).await;
        let to_u1 = received.iter().filter(|r| r.body["userId"] == "u1").count();
        assert_eq!(to_u1, 1, "only the attempt refused before the deletion");

        // Not suppressed: a later event starts afresh.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "trial_started",
                "t-3",
                &json!({"trial_id": "T3"}),
            )],
        )
        .await?;
        assert_eq!(c.instances_of("trials", "u1").await?.len(), 1);

        // Suppressed: later events of u2 are dropped.
        c.profiles.delete_profile(delete("u2", true)).await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u2",
                "trial_started",
                "t-4",
                &json!({"trial_id": "T4"}),
            )],
        )
        .await?;
        assert!(c.instances_of("trials", "u2").await?.is_empty());
        assert_eq!(rows_of(&db, "outbox", "profile_id", "u2").await, 0);
        db.close().await?;
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
