//! The steps that were tested only in the core, now end to end through the node on every
//! backend, with a real webhook sink: a hold-until branch that returns to the start of its
//! step (and the configured pass limit after which it continues onward), data splits on traits
//! and audiences, a randomized split over 1,000 profiles (its shares, its agreement with
//! `SimulateJourney` profile by profile, and the same branch on re-entry when asked), and an
//! exit rule's send that runs before the exit.

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
use std::time::Duration;

use journeys_control_plane::convert::json::struct_to_json;
use journeys_proto::v1 as pb;
use journeys_testkit::{Sink, eventually};
use journeys_tests::ingest::{IngestStream, identify, send_accepted, track};
use journeys_tests::{Stack, StackClients, StackOptions, on_each_backend};
use serde_json::{Value, json};

fn state(instance: &pb::Instance) -> pb::InstanceState {
    pb::InstanceState::try_from(instance.state).unwrap_or(pb::InstanceState::Unspecified)
}

fn kinds(instance: &pb::Instance) -> Vec<&str> {
    instance.timeline.iter().map(|t| t.kind.as_str()).collect()
}

/// A send to `hook` whose body names the branch taken and the user.
fn send_named(branch: &str, extra: &Value) -> Value {
    let mut mapping = json!({"user": {"@path": "$.userId"}, "branch": branch});
    if let (Some(map), Some(more)) = (mapping.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    json!({"destination_id": "hook", "mapping": mapping})
}

/// The one instance of `journey` for `user`, with its timeline.
async fn only_instance(
    c: &mut StackClients,
    journey: &str,
    user: &str,
) -> anyhow::Result<pb::Instance> {
    let listed = c.instances_of(journey, user).await?;
    anyhow::ensure!(listed.len() == 1, "{user}: {listed:?}");
    c.instance(&listed[0].id).await
}

/// Checkout with a hold that returns to its start on every `item_viewed` of the session
/// (collecting the item into the context and restarting its 3-second timer); a purchase
/// thanks, a timeout nudges with the last item viewed. Past the pass limit a view continues
/// onward to `keen`.
fn browsing_journey() -> Value {
    let item = json!({"item": {"@path": "$.properties.journey_context.item_viewed.sku"}});
    json!({"journey": {
        "id": "browsing",
        "name": "Browse before buying",
        "entry": {"event": "checkout_started"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "session_id",
        "start_step": "wait",
        "steps": [
            {"key": "wait", "name": "Wait for the purchase", "hold_until": {
                "branches": [
                    {"name": "viewed", "event": "item_viewed", "return_to_start": true, "next": "keen"},
                    {"name": "bought", "event": "purchase_completed", "next": "thanks"}
                ],
                "max_duration": "3s",
                "timeout_next": "nudge"
            }},
            {"key": "keen", "name": "Keen", "send": send_named("keen", &item)},
            {"key": "thanks", "name": "Thanks", "send": send_named("thanks", &item)},
            {"key": "nudge", "name": "Nudge", "send": send_named("nudge", &item)}
        ]
    }})
}

fn session(user: &str, event: &str, id: &str, session: &str, sku: Option<&str>) -> pb::Event {
    let mut properties = json!({"session_id": session});
    if let Some(sku) = sku {
        properties["sku"] = json!(sku);
    }
    track(user, event, id, &properties)
}

#[tokio::test]
async fn return_to_start_restarts_the_hold_and_keeps_the_newest_event() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let options = StackOptions {
            allow_short_durations: true,
            ..StackOptions::default()
        };
        let stack = Stack::start(&url, options).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["checkout_started", "item_viewed", "purchase_completed"])
            .await?;
        c.publish(&browsing_journey()).await?;

        send_accepted(
            &mut c.ingest,
            &key,
            vec![session("u1", "checkout_started", "c-1", "s1", None)],
        )
        .await?;
        // Two views, each more than a second apart: each restarts the 3-second hold, so the
        // nudge comes 3 s after the last view, not after the checkout.
        for (id, sku) in [("v-1", "A"), ("v-2", "B")] {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            send_accepted(
                &mut c.ingest,
                &key,
                vec![session("u1", "item_viewed", id, "s1", Some(sku))],
            )
            .await?;
        }
        let last_view = std::time::Instant::now();
        let instance = only_instance(&mut c, "browsing", "u1").await?;
        assert_eq!(state(&instance), pb::InstanceState::Active);
        assert_eq!(instance.current_step, "wait");
        assert_eq!(
            kinds(&instance)
                .iter()
                .filter(|k| **k == "returned_to_start")
                .count(),
            2,
            "{:?}",
            kinds(&instance)
        );
        assert!(sink.requests().is_empty(), "nothing sent while browsing");

        let nudge = sink.wait_for(1, Duration::from_secs(20)).await;
        let waited = last_view.elapsed();
        assert!(
            waited >= Duration::from_millis(2500),
            "the hold restarted at the last view: nudged {waited:?} after it"
        );
        assert_eq!(
            nudge[0].body,
            json!({"user": "u1", "branch": "nudge", "item": "B"}),
            "the newest view replaced the older one in the context"
        );
        let instance = only_instance(&mut c, "browsing", "u1").await?;
        assert_eq!(state(&instance), pb::InstanceState::Completed);
        assert!(kinds(&instance).contains(&"timed_out"));

        // A purchase during the hold, after a view: the bought branch, with the view in the
        // context.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                session("u2", "checkout_started", "c-2", "s2", None),
                session("u2", "item_viewed", "v-3", "s2", Some("C")),
                session("u2", "purchase_completed", "p-1", "s2", None),
            ],
        )
        .await?;
        let all = sink.wait_for(2, Duration::from_secs(20)).await;
        assert_eq!(
            all[1].body,
            json!({"user": "u2", "branch": "thanks", "item": "C"})
        );
        let received = sink.settle(Duration::from_millis(3500)).await;
        assert_eq!(received.len(), 2, "no nudge after the purchase");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn past_the_configured_passes_a_return_to_start_branch_continues_onward() -> anyhow::Result<()>
{
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let options = StackOptions {
            allow_short_durations: true,
            configure: Some(|c| c.max_return_to_start_passes = 2),
            ..StackOptions::default()
        };
        let stack = Stack::start(&url, options).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["checkout_started", "item_viewed", "purchase_completed"])
            .await?;
        c.publish(&browsing_journey()).await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                session("u1", "checkout_started", "c-1", "s1", None),
                session("u1", "item_viewed", "v-1", "s1", Some("A")),
                session("u1", "item_viewed", "v-2", "s1", Some("B")),
            ],
        )
        .await?;
        let instance = only_instance(&mut c, "browsing", "u1").await?;
        assert_eq!(state(&instance), pb::InstanceState::Active, "two passes");
        // The third view is past the limit of 2 (the default is 100): onward to `keen`.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![session("u1", "item_viewed", "v-3", "s1", Some("C"))],
        )
        .await?;
        let keen = sink.wait_for(1, Duration::from_secs(20)).await;
        assert_eq!(
            keen[0].body,
            json!({"user": "u1", "branch": "keen", "item": "C"})
        );
        let instance = only_instance(&mut c, "browsing", "u1").await?;
        assert_eq!(state(&instance), pb::InstanceState::Completed);
        assert_eq!(
            kinds(&instance)
                .iter()
                .filter(|k| **k == "returned_to_start")
                .count(),
            2
        );
        let received = sink.settle(Duration::from_millis(3500)).await;
        assert_eq!(received.len(), 1, "no nudge: the instance went onward");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_data_split_routes_by_traits_and_audiences_first_match_wins() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["signed_up"]).await?;
        c.audience("vip", &["ada"]).await?;
        c.audience("churned", &["dan"]).await?;
        let condition = |kind: &str, path: &str, op: &str, value: Option<Value>| {
            let mut c = json!({"kind": kind, "path_or_key": path, "op": op});
            if let Some(value) = value {
                c["value"] = value;
            }
            c
        };
        c.publish(&json!({"journey": {
            "id": "segments",
            "name": "Welcome by segment",
            "entry": {"event": "signed_up"},
            "entry_rule": "REENTER_EVERY_TIME",
            "unique_identifier": "signup_id",
            "start_step": "split",
            "steps": [
                {"key": "split", "name": "Who is it", "data_split": {
                    "branches": [
                        {"name": "VIP", "next": "vip", "conditions": [
                            condition("AUDIENCE", "vip", "IN_AUDIENCE", None)
                        ]},
                        {"name": "Pro adults", "next": "pro", "conditions": [
                            condition("TRAIT", "plan", "EQUALS", Some(json!("pro"))),
                            condition("TRAIT", "age", "GTE", Some(json!(18)))
                        ]},
                        {"name": "Europe", "next": "europe", "conditions": [
                            condition("TRAIT", "address.country", "ANY_OF", Some(json!(["DE", "FR"]))),
                            condition("AUDIENCE", "churned", "NOT_IN_AUDIENCE", None)
                        ]}
                    ],
                    "else_next": "other"
                }},
                {"key": "vip", "name": "VIP", "send": send_named("vip", &json!({}))},
                {"key": "pro", "name": "Pro", "send": send_named("pro", &json!({}))},
                {"key": "europe", "name": "Europe", "send": send_named("europe", &json!({}))},
                {"key": "other", "name": "Everyone else", "send": send_named("other", &json!({}))}
            ]
        }}))
        .await?;

        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                // In the VIP audience and a pro adult: the first branch wins.
                identify("ada", "i-1", &json!({"plan": "pro", "age": 40})),
                identify("bob", "i-2", &json!({"plan": "pro", "age": 30})),
                // A pro, but too young: the next branch that holds.
                identify("cy", "i-3", &json!({"plan": "pro", "age": 16, "address": {"country": "DE"}})),
                // European but churned: nobody's branch.
                identify("dan", "i-4", &json!({"address": {"country": "FR"}})),
                // A boolean trait named like an active audience makes the profile a member.
                identify("eve", "i-5", &json!({"vip": true})),
            ],
        )
        .await?;
        let signup = |user: &str, n: u32| {
            track(
                user,
                "signed_up",
                &format!("s-{user}-{n}"),
                &json!({"signup_id": format!("{user}-{n}")}),
            )
        };
        send_accepted(
            &mut c.ingest,
            &key,
            ["ada", "bob", "cy", "dan", "eve", "fay"]
                .into_iter()
                .map(|u| signup(u, 1))
                .collect(),
        )
        .await?;
        let received = sink.wait_for(6, Duration::from_secs(20)).await;
        let by_user: BTreeMap<String, String> = received
            .iter()
            .map(|r| (r.str_field("user").to_owned(), r.str_field("branch").to_owned()))
            .collect();
        assert_eq!(
            by_user,
            BTreeMap::from(
                [
                    ("ada", "vip"),
                    ("bob", "pro"),
                    ("cy", "europe"),
                    ("dan", "other"),
                    ("eve", "vip"),
                    ("fay", "other")
                ]
                .map(|(u, b)| (u.to_owned(), b.to_owned()))
            )
        );

        // Traits are read when the split runs: bob downgraded signs up again as everyone else.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![identify("bob", "i-6", &json!({"plan": "free"})), signup("bob", 2)],
        )
        .await?;
        let received = sink.wait_for(7, Duration::from_secs(20)).await;
        assert_eq!(received[6].body, json!({"user": "bob", "branch": "other"}));

        let stats = c.stats("segments").await?;
        let taken: BTreeMap<&str, i64> = stats
            .branches
            .iter()
            .filter(|b| b.step_key == "split")
            .map(|b| (b.branch_name.as_str(), b.taken))
            .collect();
        assert_eq!(taken.get("VIP"), Some(&2), "{taken:?}");
        assert_eq!(taken.get("Pro adults"), Some(&1), "{taken:?}");
        assert_eq!(taken.get("Europe"), Some(&1), "{taken:?}");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

fn experiment(id: &str, sticky: bool) -> Value {
    let send = |branch: &str| {
        json!({"destination_id": "hook", "mapping": {
            "journey": id, "user": {"@path": "$.userId"}, "branch": branch,
            "visit": {"@path": "$.properties.journey_context.visited.visit_id"}
        }})
    };
    json!({"journey": {
        "id": id,
        "name": format!("Experiment {id}"),
        "entry": {"event": "visited"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "visit_id",
        "start_step": "split",
        "steps": [
            {"key": "split", "name": "Split", "random_split": {
                "branches": [
                    {"name": "A", "percent": 20, "next": "a"},
                    {"name": "B", "percent": 30, "next": "b"},
                    {"name": "C", "percent": 50, "next": "c"}
                ],
                "same_branch_on_reentry": sticky
            }},
            {"key": "a", "name": "A", "send": send("A")},
            {"key": "b", "name": "B", "send": send("B")},
            {"key": "c", "name": "C", "send": send("C")}
        ]
    }})
}

#[tokio::test]
async fn a_randomized_split_keeps_its_shares_and_agrees_with_the_simulation() -> anyhow::Result<()>
{
    const PROFILES: usize = 1_000;
    const AGAIN: usize = 100;
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["visited"]).await?;
        c.publish(&experiment("experiment", false)).await?;
        c.publish(&experiment("sticky", true)).await?;

        // Every profile visits once; the first hundred visit a second time.
        let visit = |user: usize, n: usize| {
            track(
                &format!("user-{user:04}"),
                "visited",
                &format!("visit-{user:04}-{n}"),
                &json!({"visit_id": format!("{user}-{n}")}),
            )
        };
        let events: Vec<pb::Event> = (0..PROFILES)
            .map(|u| visit(u, 1))
            .chain((0..AGAIN).map(|u| visit(u, 2)))
            .collect();
        let mut stream = IngestStream::open(&mut c.ingest, &key).await?;
        for batch in events.chunks(500) {
            stream.send_batch(batch.to_vec()).await?;
        }
        let acks = stream.acks(events.len(), Duration::from_secs(60)).await?;
        assert!(
            acks.iter().all(|a| a.status == pb::AckStatus::Accepted as i32),
            "every visit accepted"
        );
        stream.close();
        let total = 2 * (PROFILES + AGAIN);
        let received = sink.wait_for(total, Duration::from_secs(120)).await;
        assert_eq!(received.len(), total);

        // (journey, user, visit) -> branch, as delivered.
        let mut delivered: BTreeMap<(String, String, String), String> = BTreeMap::new();
        for r in &received {
            let key = (
                r.str_field("journey").to_owned(),
                r.str_field("user").to_owned(),
                r.str_field("visit").to_owned(),
            );
            let previous = delivered.insert(key.clone(), r.str_field("branch").to_owned());
            assert!(previous.is_none(), "one send per instance: {key:?}");
        }

        // The shares, over the first visits of 1,000 profiles: within about four standard
        // deviations of 20/30/50 % (the assignment is deterministic, so this never flakes).
        for journey in ["experiment", "sticky"] {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for ((j, _, visit), branch) in &delivered {
                if j == journey && visit.ends_with("-1") {
                    *counts.entry(branch.as_str()).or_default() += 1;
                }
            }
            for (branch, share) in [("A", 0.2), ("B", 0.3), ("C", 0.5)] {
                let n = counts.get(branch).copied().unwrap_or_default() as f64;
                let expected = share * PROFILES as f64;
                let sd = (PROFILES as f64 * share * (1.0 - share)).sqrt();
                assert!(
                    (n - expected).abs() <= 4.0 * sd,
                    "{journey}: branch {branch} took {n} of {PROFILES}, expected about {expected}: {counts:?}"
                );
            }
        }

        // Same branch on re-entry: the sticky journey gives each returning profile its first
        // branch; the other draws per instance, so some returning profiles change branch.
        let branch = |journey: &str, user: usize, n: usize| {
            delivered[&(
                journey.to_owned(),
                format!("user-{user:04}"),
                format!("{user}-{n}"),
            )]
            .clone()
        };
        for u in 0..AGAIN {
            assert_eq!(branch("sticky", u, 1), branch("sticky", u, 2), "user {u}");
        }
        let changed = (0..AGAIN)
            .filter(|&u| branch("experiment", u, 1) != branch("experiment", u, 2))
            .count();
        assert!(changed > 0, "per-instance draws differ for some returning profiles");

        // Deterministic: SimulateJourney over the same events draws exactly the same branches.
        for journey in ["experiment", "sticky"] {
            let simulated = c
                .journeys
                .simulate_journey(pb::SimulateJourneyRequest {
                    target: Some(pb::simulate_journey_request::Target::Id(journey.to_owned())),
                    events: events
                        .iter()
                        .map(|e| pb::SimulatedEvent {
                            event: Some(e.clone()),
                            at: None,
                            source_id: String::new(),
                        })
                        .collect(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            assert_eq!(simulated.instances.len(), PROFILES + AGAIN);
            for instance in &simulated.instances {
                let payload =
                    struct_to_json(instance.sends[0].payload.as_ref().unwrap(), "payload")?;
                let key = (
                    journey.to_owned(),
                    instance.user_id.clone(),
                    payload["visit"].as_str().unwrap_or_default().to_owned(),
                );
                assert_eq!(
                    payload["branch"].as_str(),
                    delivered.get(&key).map(String::as_str),
                    "{key:?}"
                );
            }
        }
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_exit_rule_sends_before_the_exit_with_the_exit_event_in_context() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["checkout_started", "purchase_completed", "cart_emptied"])
            .await?;
        c.publish(&json!({"journey": {
            "id": "cart",
            "name": "Cart reminder",
            "entry": {"event": "checkout_started"},
            "entry_rule": "REENTER_EVERY_TIME",
            "unique_identifier": "session_id",
            "start_step": "wait",
            "steps": [
                {"key": "wait", "name": "Wait for the purchase", "hold_until": {
                    "branches": [{"name": "bought", "event": "purchase_completed", "next": "thanks"}],
                    "max_duration": "3600s",
                    "timeout_next": "nudge"
                }},
                {"key": "thanks", "name": "Thanks", "send": send_named("thanks", &json!({}))},
                {"key": "nudge", "name": "Nudge", "send": send_named("nudge", &json!({}))}
            ],
            "exit_rules": [{
                "event": "cart_emptied",
                "match_unique_identifier": true,
                "send": {
                    "destination_id": "hook",
                    "action": {"path": "/exits/{{session}}"},
                    "mapping": {
                        "user": {"@path": "$.userId"},
                        "session": {"@path": "$.properties.journey_context.checkout_started.session_id"},
                        "reason": {"@path": "$.properties.journey_context.cart_emptied.reason"}
                    }
                }
            }]
        }}))
        .await?;

        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                session("u1", "checkout_started", "c-1", "s1", None),
                session("u1", "checkout_started", "c-2", "s2", None),
            ],
        )
        .await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "cart_emptied",
                "e-1",
                &json!({"session_id": "s1", "reason": "changed my mind"}),
            )],
        )
        .await?;
        let exits = sink.wait_for(1, Duration::from_secs(20)).await;
        assert_eq!(exits[0].path, "/exits/s1");
        assert_eq!(exits[0].body["user"], json!("u1"));
        assert_eq!(exits[0].body["session"], json!("s1"));
        assert_eq!(exits[0].body["reason"], json!("changed my mind"));

        let mut instances = c.instances_of("cart", "u1").await?;
        instances.sort_by(|a, b| a.unique_value.cmp(&b.unique_value));
        let s1 = c.instance(&instances[0].id).await?;
        assert_eq!(state(&s1), pb::InstanceState::Exited);
        // The send is recorded before the exit, both caused by the exit event.
        let tail: Vec<(&str, &str)> = s1
            .timeline
            .iter()
            .rev()
            .take(2)
            .map(|t| (t.kind.as_str(), t.cause.as_str()))
            .collect();
        assert_eq!(tail, [("exited", "e-1"), ("send", "e-1")], "{:?}", kinds(&s1));
        assert_eq!(
            state(&c.instance(&instances[1].id).await?),
            pb::InstanceState::Active,
            "the other session is not touched"
        );

        // The exited instance sends nothing more; the other one still thanks.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                session("u1", "purchase_completed", "p-1", "s1", None),
                session("u1", "purchase_completed", "p-2", "s2", None),
            ],
        )
        .await?;
        let received = eventually("the thanks of s2", Duration::from_secs(20), || {
            let requests = sink.requests();
            async move { (requests.len() >= 2).then_some(requests) }
        })
        .await;
        assert_eq!(received[1].body, json!({"user": "u1", "branch": "thanks"}));
        assert_eq!(sink.settle(Duration::from_millis(700)).await.len(), 2);
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
