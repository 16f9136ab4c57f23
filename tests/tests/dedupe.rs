//! De-duplication by `messageId` end to end, on every backend: a resent event is acknowledged
//! `DUPLICATE` on the gRPC stream, by the unary calls and in batches, and `{"success": true}`
//! over HTTP, and changes nothing: no second instance, no second webhook, no trait update, no
//! catalog count.

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
use journeys_testkit::Sink;
use journeys_tests::ingest::{IngestStream, identify, keyed, statuses, track};
use journeys_tests::{Stack, StackOptions, on_each_backend};
use serde_json::json;

#[tokio::test]
async fn a_resent_message_id_is_acknowledged_duplicate_and_causes_nothing() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("shop").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["purchase"]).await?;
        c.publish(&json!({"journey": {
            "id": "purchases",
            "name": "Forward purchases",
            "entry": {"event": "purchase"},
            "entry_rule": "REENTER_EVERY_TIME",
            "unique_identifier": "order_id",
            "start_step": "forward",
            "steps": [{"key": "forward", "name": "Forward purchase", "send": {
                "destination_id": "hook", "traits": ["tier"]
            }}]
        }}))
        .await?;

        let mut stream = IngestStream::open(&mut c.ingest, &key).await?;
        stream
            .send(identify("u1", "i-1", &json!({"tier": "gold"})))
            .await?;
        stream
            .send(track("u1", "purchase", "p-1", &json!({"order_id": "1"})))
            .await?;
        let acks = stream.acks(2, Duration::from_secs(10)).await?;
        assert!(
            statuses(&acks)
                .values()
                .all(|s| *s == pb::AckStatus::Accepted),
            "{acks:?}"
        );

        // The same ids again, with other content: one at a time, then in a batch beside a
        // new event.
        stream
            .send(identify("u1", "i-1", &json!({"tier": "bronze"})))
            .await?;
        stream
            .send(track("u1", "purchase", "p-1", &json!({"order_id": "2"})))
            .await?;
        stream
            .send_batch(vec![
                track("u1", "purchase", "p-2", &json!({"order_id": "3"})),
                track("u1", "purchase", "p-1", &json!({"order_id": "4"})),
            ])
            .await?;
        let acks = stream.acks(4, Duration::from_secs(10)).await?;
        let got: Vec<(&str, i32)> = acks
            .iter()
            .map(|a| (a.message_id.as_str(), a.status))
            .collect();
        assert_eq!(
            got,
            [
                ("i-1", pb::AckStatus::Duplicate as i32),
                ("p-1", pb::AckStatus::Duplicate as i32),
                ("p-2", pb::AckStatus::Accepted as i32),
                ("p-1", pb::AckStatus::Duplicate as i32),
            ]
        );
        stream.close();
        assert!(stream.next_acks().await?.is_none(), "the stream ends cleanly");

        // Unary and HTTP resends.
        let ack = c
            .ingest
            .track(keyed(
                track("u1", "purchase", "p-2", &json!({"order_id": "5"})),
                &key,
            )?)
            .await?
            .into_inner();
        assert_eq!(ack.status, pb::AckStatus::Duplicate as i32, "{ack:?}");
        let http = stack.http();
        for path in ["/v1/track", "/v1/t"] {
            let reply = http
                .post_json(
                    path,
                    Some(&key),
                    &json!({"userId": "u1", "messageId": "p-1", "event": "purchase",
                            "properties": {"order_id": "6"}}),
                )
                .await?;
            assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
            assert_eq!(reply.body, json!({"success": true}));
        }
        let reply = http
            .post_json(
                "/v1/batch",
                Some(&key),
                &json!({"batch": [
                    {"type": "identify", "userId": "u1", "messageId": "i-1", "traits": {"tier": "tin"}},
                    {"type": "track", "userId": "u1", "messageId": "p-2", "event": "purchase",
                     "properties": {"order_id": "7"}}
                ]}),
            )
            .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body, json!({"success": true}));

        // Only the two accepted purchases had effects.
        let mut orders: Vec<String> = c
            .instances_of("purchases", "u1")
            .await?
            .into_iter()
            .map(|i| i.unique_value)
            .collect();
        orders.sort();
        assert_eq!(orders, ["1", "3"]);
        sink.wait_for(2, Duration::from_secs(20)).await;
        let received = sink.settle(Duration::from_millis(800)).await;
        let mut sent: Vec<(String, String)> = received
            .iter()
            .map(|r| {
                (
                    r.body["properties"]["journey_context"]["purchase"]["order_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    r.body["properties"]["tier"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        sent.sort();
        assert_eq!(
            sent,
            [
                ("1".to_owned(), "gold".to_owned()),
                ("3".to_owned(), "gold".to_owned())
            ]
        );
        let profile = c
            .profiles
            .get_profile(pb::GetProfileRequest {
                user_id: "u1".to_owned(),
..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(
            journeys_control_plane::convert::json::opt_struct_to_json(profile.traits.as_ref()),
            json!({"tier": "gold"}),
            "a duplicate identify does not touch the traits"
        );
        let catalog = c
            .catalog
            .list_events(pb::ListEventsRequest {})
            .await?
            .into_inner();
        let purchase = catalog
            .events
            .iter()
            .find(|e| e.name == "purchase")
            .ok_or_else(|| anyhow::anyhow!("purchase missing from the catalog"))?;
        assert_eq!(purchase.count, 2, "duplicates are not counted");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn message_ids_are_scoped_per_source() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let web = c.create_source("web").await?;
        let mobile = c.create_source("mobile").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["purchase"]).await?;
        c.publish(&json!({"journey": {
            "id": "purchases",
            "name": "Forward purchases",
            "entry": {"event": "purchase"},
            "entry_rule": "REENTER_EVERY_TIME",
            "unique_identifier": "order_id",
            "start_step": "forward",
            "steps": [{"key": "forward", "name": "Forward purchase", "send": {
                "destination_id": "hook"
            }}]
        }}))
        .await?;

        // The same messageId through two sources: two events, as Segment scopes ids per
        // source. The web source cannot suppress the mobile source's event.
        let http = stack.http();
        let purchase = |order: &str| {
            json!({"userId": "u1", "messageId": "m-1", "event": "purchase",
                   "properties": {"order_id": order}})
        };
        for (key, order) in [(&web, "web-1"), (&mobile, "mobile-1")] {
            let reply = http
                .post_json("/v1/track", Some(key), &purchase(order))
                .await?;
            assert_eq!(reply.status, 200, "{:?}", reply.body);
        }
        // A resend through either source is a duplicate of that source's event only.
        let ack = c
            .ingest
            .track(keyed(
                track("u1", "purchase", "m-1", &json!({"order_id": "mobile-2"})),
                &mobile,
            )?)
            .await?
            .into_inner();
        assert_eq!(ack.status, pb::AckStatus::Duplicate as i32, "{ack:?}");
        let reply = http
            .post_json("/v1/track", Some(&web), &purchase("web-2"))
            .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);

        let mut orders: Vec<String> = c
            .instances_of("purchases", "u1")
            .await?
            .into_iter()
            .map(|i| i.unique_value)
            .collect();
        orders.sort();
        assert_eq!(orders, ["mobile-1", "web-1"]);
        sink.wait_for(2, Duration::from_secs(20)).await;
        let received = sink.settle(Duration::from_millis(800)).await;
        assert_eq!(received.len(), 2, "one delivery per source's event");
        let keys: std::collections::BTreeSet<String> = received
            .iter()
            .map(|r| r.idempotency_key().to_owned())
            .collect();
        assert_eq!(keys.len(), 2, "each with its own idempotency key");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
