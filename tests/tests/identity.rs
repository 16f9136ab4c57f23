//! Identity resolution end to end, on every backend, through `journeys dev`'s node and a real
//! webhook sink: an anonymous shopper's checkout (anonymousId only) is linked to the user by an
//! `identify` carrying both ids (gRPC) or by an `alias` (HTTP), and the purchase sent with the
//! user id alone takes the hold-until's "thanks" branch — no nudge. Traits and enter-once
//! records move with the profile; later events with the anonymous id alone reach the user; an
//! anonymous id already linked stays with its user when a second user's event carries it
//! (refused, counted, visible in `GetProfile`).

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::cast_possible_truncation
)]

use std::time::Duration;

use journeys_core::partition::partition_of;
use journeys_proto::v1 as pb;
use journeys_testkit::Sink;
use journeys_tests::ingest::{send_accepted, track};
use journeys_tests::stack::StackClients;
use journeys_tests::{Stack, StackOptions, on_each_backend};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The node's default partitions and lanes: a profile's lane is its partition modulo the lanes.
const PARTITIONS: u32 = 64;
const LANES: u32 = 4;

fn lane(id: &str) -> u32 {
    partition_of(id, PARTITIONS) % LANES
}

/// `<prefix>-<n>` for the first `n` whose lane differs from `other`'s: a merge that crosses lanes.
fn on_another_lane(prefix: &str, other: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| lane(id) != lane(other))
        .unwrap()
}

fn checkout_journey() -> Value {
    json!({"journey": {
        "id": "checkout",
        "name": "Abandoned checkout",
        "entry": {"event": "checkout_started"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "session_id",
        "start_step": "wait",
        "steps": [
            {"key": "wait", "name": "Wait for the purchase", "hold_until": {
                "branches": [{"name": "Purchased", "event": "purchase_completed", "next": "thanks"}],
                "max_duration": "4s",
                "timeout_next": "nudge"
            }},
            {"key": "thanks", "name": "Thanks", "send": {
                "destination_id": "hook",
                "action": {"path": "/thanks"},
                "traits": ["email", "name"]
            }},
            {"key": "nudge", "name": "Nudge", "send": {
                "destination_id": "hook",
                "action": {"path": "/nudge"}
            }}
        ]
    }})
}

fn welcome_once_journey() -> Value {
    json!({"journey": {
        "id": "welcome",
        "name": "Welcome once",
        "entry": {"event": "checkout_started"},
        "entry_rule": "ENTER_ONCE",
        "start_step": "hello",
        "steps": [
            {"key": "hello", "name": "Hello", "send": {
                "destination_id": "hook",
                "action": {"path": "/welcome"}
            }}
        ]
    }})
}

fn anonymous(event: pb::Event, anonymous_id: &str) -> pb::Event {
    pb::Event {
        user_id: String::new(),
        anonymous_id: anonymous_id.to_owned(),
        ..event
    }
}

fn identify_linking(
    user_id: &str,
    anonymous_id: &str,
    message_id: &str,
    traits: &Value,
) -> pb::Event {
    pb::Event {
        anonymous_id: anonymous_id.to_owned(),
        ..journeys_tests::ingest::identify(user_id, message_id, traits)
    }
}

async fn profile_by(
    c: &mut StackClients,
    user_id: &str,
    anonymous_id: &str,
) -> anyhow::Result<pb::Profile> {
    Ok(c.profiles
        .get_profile(pb::GetProfileRequest {
            user_id: user_id.to_owned(),
            anonymous_id: anonymous_id.to_owned(),
        })
        .await?
        .into_inner())
}

fn traits(p: &pb::Profile) -> Value {
    journeys_control_plane::convert::json::opt_struct_to_json(p.traits.as_ref())
}

fn paths(sink: &Sink) -> Vec<String> {
    let mut paths: Vec<String> = sink.requests().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    paths
}

/// `GET /metrics` of the stack's HTTP port.
async fn metrics(stack: &Stack) -> anyhow::Result<String> {
    let addr = stack.http_base().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nhost: journeys\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test]
async fn an_anonymous_checkout_takes_the_thanks_branch_on_the_purchase_of_the_linked_user()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(
            &url,
            StackOptions {
                allow_short_durations: true,
                ..StackOptions::default()
            },
        )
        .await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["checkout_started", "purchase_completed"])
            .await?;
        c.publish(&checkout_journey()).await?;
        c.publish(&welcome_once_journey()).await?;

        let user = "user-1";
        let anon = on_another_lane("anon", user);
        // The shopper, anonymous: traits, a checkout (entering both journeys).
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                anonymous(
                    journeys_tests::ingest::identify(
                        "",
                        "a-1",
                        &json!({"email": "ann@example.com", "plan": "free"}),
                    ),
                    &anon,
                ),
                anonymous(
                    track("", "checkout_started", "a-2", &json!({"session_id": "s1"})),
                    &anon,
                ),
            ],
        )
        .await?;
        sink.wait_for(1, Duration::from_secs(20)).await;
        // Logs in: identify with both ids links the anonymous profile to the user.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![identify_linking(
                user,
                &anon,
                "u-1",
                &json!({"name": "Ann", "plan": "pro"}),
            )],
        )
        .await?;
        // Buys, with the user id alone.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                user,
                "purchase_completed",
                "u-2",
                &json!({"session_id": "s1"}),
            )],
        )
        .await?;
        let received = sink.wait_for(2, Duration::from_secs(20)).await;
        let thanks = received
            .iter()
            .find(|r| r.path == "/thanks")
            .expect("the thanks send");
        assert_eq!(thanks.str_field("userId"), user);
        assert!(
            thanks.body.to_string().contains("ann@example.com"),
            "the anonymous profile's traits moved with it: {}",
            thanks.body
        );

        // The profile, by either id: traits merged (the user's newer values win), the
        // anonymous id among its identities.
        for (u, a) in [(user, ""), ("", anon.as_str())] {
            let p = profile_by(&mut c, u, a).await?;
            assert_eq!(p.user_id, user);
            assert_eq!(
                traits(&p),
                json!({"email": "ann@example.com", "plan": "pro", "name": "Ann"})
            );
            let ids: Vec<&str> = p.identities.iter().map(|i| i.id.as_str()).collect();
            assert_eq!(ids, [anon.as_str()]);
            assert!(p.identities[0].merged_at.is_some(), "the merge is done");
            assert!(p.refused_links.is_empty());
        }

        // The enter-once record moved: the user's own checkout does not enter `welcome` again.
        // An event with the anonymous id alone reaches the user's profile.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track(
                    user,
                    "checkout_started",
                    "u-3",
                    &json!({"session_id": "s2"}),
                ),
                anonymous(
                    track("", "checkout_started", "a-3", &json!({"session_id": "s3"})),
                    &anon,
                ),
            ],
        )
        .await?;
        let p = profile_by(&mut c, user, "").await?;
        let mut sessions: Vec<&str> = p
            .active_instances
            .iter()
            .map(|i| i.unique_value.as_str())
            .collect();
        sessions.sort_unstable();
        let listed = c.instances_of("checkout", "").await?;
        assert_eq!(
            sessions,
            ["s2", "s3"],
            "both checkouts wait on the user's profile: {p:?} {listed:?}"
        );
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track(
                    user,
                    "purchase_completed",
                    "u-4",
                    &json!({"session_id": "s2"}),
                ),
                track(
                    user,
                    "purchase_completed",
                    "u-5",
                    &json!({"session_id": "s3"}),
                ),
            ],
        )
        .await?;
        sink.wait_for(4, Duration::from_secs(20)).await;
        // Past the hold's 4 s: no nudge ever, one welcome.
        let all = sink.settle(Duration::from_secs(6)).await;
        assert_eq!(all.len(), 4, "{:?}", paths(&sink));
        assert_eq!(paths(&sink), ["/thanks", "/thanks", "/thanks", "/welcome"]);

        // The merge is on the moved instance's timeline.
        // The merge is on the moved instance's timeline; the instance is the user's now.
        let of_user = c.instances_of("checkout", user).await?;
        let s1 = of_user
            .iter()
            .find(|i| i.unique_value == "s1")
            .expect("the s1 instance is listed under the user");
        let detail = c.instance(&s1.id).await?;
        assert!(
            detail.timeline.iter().any(|t| t.kind == "merged"),
            "the timeline records the merge: {:?}",
            detail.timeline
        );

        // Deleting the profile by its anonymous id deletes the user's profile and its links:
        // the anonymous id is on its own again.
        c.profiles
            .delete_profile(pb::DeleteProfileRequest {
                anonymous_id: anon.clone(),
                ..Default::default()
            })
            .await?;
        let gone = profile_by(&mut c, user, "").await.unwrap_err();
        assert_eq!(
            gone.downcast_ref::<tonic::Status>()
                .map(tonic::Status::code),
            Some(tonic::Code::NotFound)
        );
        send_accepted(
            &mut c.ingest,
            &key,
            vec![anonymous(
                journeys_tests::ingest::identify("", "a-4", &json!({"email": "new@example.com"})),
                &anon,
            )],
        )
        .await?;
        let again = profile_by(&mut c, "", &anon).await?;
        assert_eq!(again.user_id, anon);
        assert_eq!(traits(&again), json!({"email": "new@example.com"}));
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn alias_links_over_http_and_a_linked_id_stays_with_its_user() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(
            &url,
            StackOptions {
                allow_short_durations: true,
                ..StackOptions::default()
            },
        )
        .await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["checkout_started", "purchase_completed"])
            .await?;
        c.publish(&checkout_journey()).await?;
        c.publish(&welcome_once_journey()).await?;
        let http = stack.http();

        let user = "user-2";
        let other = on_another_lane("user-3", user);
        let anon = on_another_lane("anon-b", user);
        let post = |path: &'static str, body: Value| {
            let http = http.clone();
            let key = key.clone();
            async move {
                let reply = http.post_json(path, Some(&key), &body).await?;
                anyhow::ensure!(reply.status == 200, "{path}: {} {}", reply.status, reply.body);
                Ok::<_, anyhow::Error>(())
            }
        };
        post("/v1/identify", json!({"anonymousId": anon, "messageId": "h-1", "traits": {"email": "bo@example.com"}})).await?;
        post("/v1/track", json!({"anonymousId": anon, "messageId": "h-2", "event": "checkout_started", "properties": {"session_id": "s1"}})).await?;
        // A second checkout, never bought: its hold times out on the user's profile.
        post("/v1/track", json!({"anonymousId": anon, "messageId": "h-2b", "event": "checkout_started", "properties": {"session_id": "s2"}})).await?;
        sink.wait_for(1, Duration::from_secs(20)).await;
        post("/v1/alias", json!({"userId": user, "previousId": anon, "messageId": "h-3"})).await?;
        post("/v1/track", json!({"userId": user, "messageId": "h-4", "event": "purchase_completed", "properties": {"session_id": "s1"}})).await?;
        let received = sink.wait_for(2, Duration::from_secs(20)).await;
        let thanks = received.iter().find(|r| r.path == "/thanks").expect("the thanks send");
        assert_eq!(thanks.str_field("userId"), user);
        assert!(thanks.body.to_string().contains("bo@example.com"));
        // The moved instance's timer fires into the user's profile.
        let received = sink.wait_for(3, Duration::from_secs(20)).await;
        let nudge = received.iter().find(|r| r.path == "/nudge").expect("the s2 nudge");
        assert_eq!(nudge.str_field("userId"), user);
        assert_eq!(nudge.str_field("anonymousId"), anon);

        // A second user's event carrying the linked anonymous id: the id stays put.
        post("/v1/identify", json!({"userId": other, "anonymousId": anon, "messageId": "h-5", "traits": {"name": "Cy"}})).await?;
        post("/v1/track", json!({"userId": other, "anonymousId": anon, "messageId": "h-6", "event": "checkout_started", "properties": {"session_id": "s9"}})).await?;
        let p = profile_by(&mut c, "", &anon).await?;
        assert_eq!(p.user_id, user, "the anonymous id still belongs to the first user");
        assert_eq!(traits(&p), json!({"email": "bo@example.com"}));
        let ids: Vec<&str> = p.identities.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, [anon.as_str()]);
        assert_eq!(p.refused_links.len(), 1, "{:?}", p.refused_links);
        let refused = &p.refused_links[0];
        assert_eq!(
            (refused.id.as_str(), refused.profile_id.as_str(), refused.refused_profile_id.as_str(), refused.refusals),
            (anon.as_str(), user, other.as_str(), 2)
        );
        let o = profile_by(&mut c, &other, "").await?;
        assert_eq!(o.user_id, other);
        assert!(o.identities.is_empty());
        assert_eq!(traits(&o), json!({"name": "Cy"}));
        assert_eq!(o.refused_links.len(), 1, "visible on the refused user too");
        assert_eq!(o.active_instances.len(), 1, "the second user's own checkout");
        // Logging in and buying in one batch: the purchase is applied after the merge.
        let (late, later) = (on_another_lane("anon-c", "user-4"), "user-4");
        post("/v1/track", json!({"anonymousId": late, "messageId": "h-7", "event": "checkout_started", "properties": {"session_id": "s7"}})).await?;
        post("/v1/batch", json!({"batch": [
            {"type": "identify", "userId": later, "anonymousId": late, "messageId": "h-8", "traits": {"name": "Di"}},
            {"type": "track", "userId": later, "messageId": "h-9", "event": "purchase_completed", "properties": {"session_id": "s7"}},
        ]})).await?;
        let received = sink.wait_for(6, Duration::from_secs(20)).await;
        assert!(
            received.iter().any(|r| r.path == "/thanks" && r.str_field("userId") == later),
            "{:?}",
            paths(&sink)
        );
        // An alias of one user id into another, then an anonymous id linked to the old one:
        // the anonymous checkout ends up with the user the old id moved to.
        let (old, new) = ("user-6", "user-5");
        let shopper = on_another_lane("anon-d", new);
        post("/v1/alias", json!({"userId": new, "previousId": old, "messageId": "h-10"})).await?;
        post("/v1/track", json!({"anonymousId": shopper, "messageId": "h-11", "event": "checkout_started", "properties": {"session_id": "s8"}})).await?;
        post("/v1/identify", json!({"userId": old, "anonymousId": shopper, "messageId": "h-12", "traits": {"email": "ed@example.com"}})).await?;
        post("/v1/track", json!({"userId": new, "messageId": "h-13", "event": "purchase_completed", "properties": {"session_id": "s8"}})).await?;
        let received = sink.wait_for(8, Duration::from_secs(20)).await;
        assert!(
            received.iter().any(|r| r.path == "/thanks" && r.str_field("userId") == new),
            "{:?}",
            paths(&sink)
        );
        let p = profile_by(&mut c, "", &shopper).await?;
        assert_eq!(p.user_id, new);
        let mut ids: Vec<&str> = p.identities.iter().map(|i| i.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, [shopper.as_str(), old]);
        assert_eq!(traits(&p), json!({"email": "ed@example.com"}));
        let text = metrics(&stack).await?;
        assert!(
            text.lines().any(|l| l.starts_with("journeys_identity_links_total{outcome=\"refused\"}")),
            "refusals are counted: {text}"
        );
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
