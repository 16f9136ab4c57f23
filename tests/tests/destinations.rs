//! Destination addresses and credentials end to end, on every backend: the address policy at
//! create, update and send time (`SendTestEvent`), the operator allow-list, and credentials in
//! destination URLs shown masked but used for the request.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use base64::Engine as _;
use journeys_proto::v1 as pb;
use journeys_store::{DestinationKind, DestinationRecord, Store};
use journeys_testkit::sink::Sink;
use journeys_tests::ingest::track;
use journeys_tests::{Clients, ControlPlane, Options, example, on_each_backend};
use serde_json::json;
use tonic::Code;

fn destination(id: &str, url: &str) -> pb::CreateDestinationRequest {
    pb::CreateDestinationRequest {
        destination: Some(pb::Destination {
            id: id.to_owned(),
            name: format!("Webhook {id}"),
            webhook: Some(pb::WebhookSettings {
                url: url.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A `SendTestEvent` of the forwarding example, which sends to destination `webhook`.
fn test_send() -> pb::SendTestEventRequest {
    pb::SendTestEventRequest {
        journey_id: "form-forwarding".to_owned(),
        step_key: "forward".to_owned(),
        sample_event: Some(track(
            "u1",
            "form_submitted",
            "sample-1",
            &json!({"form_type": "contact", "submission_id": "f1", "email": "a@example.com"}),
        )),
        traits: None,
        sample_events: vec![],
    }
}

async fn forwarding_journey(c: &mut Clients) -> anyhow::Result<()> {
    c.catalog
        .register_event(pb::RegisterEventRequest {
            name: "form_submitted".to_owned(),
        })
        .await?;
    c.journeys
        .create_journey(example("realtime-forwarding.json")?)
        .await?;
    Ok(())
}

#[tokio::test]
async fn destinations_on_loopback_private_link_local_or_unspecified_addresses_are_refused()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let port = sink.addr().port();
        let cp = ControlPlane::start(
            &url,
            Options {
                destination_allow: Some(Vec::new()),
                ..Options::default()
            },
        )
        .await?;
        let mut c = cp.clients().await?;

        // At create (and update): literal IPs in any form, and localhost, with the reason.
        for (target, why) in [
            (format!("http://127.0.0.1:{port}/hook"), "127.0.0.1 is a loopback address"),
            ("http://0.0.0.0/".to_owned(), "0.0.0.0 is an unspecified"),
            (format!("http://2130706433:{port}/"), "127.0.0.1 is a loopback address"),
            ("http://0x7f.1/".to_owned(), "127.0.0.1 is a loopback address"),
            (
                "http://169.254.169.254/latest/meta-data/".to_owned(),
                "169.254.169.254 is a link-local address",
            ),
            ("http://10.0.0.8/".to_owned(), "10.0.0.8 is a private address"),
            ("http://[::1]/".to_owned(), "::1 is a loopback address"),
            (format!("http://localhost:{port}/"), "localhost names this machine"),
        ] {
            let err = c
                .destinations
                .create_destination(destination("", &target))
                .await
                .expect_err(&target);
            assert_eq!(err.code(), Code::InvalidArgument, "{target}: {err:?}");
            assert!(
                err.message().contains("destination.webhook.url") && err.message().contains(why),
                "{target}: {}",
                err.message()
            );
        }
        let ok = c
            .destinations
            .create_destination(destination("public", "https://hooks.example.com/in"))
            .await?
            .into_inner();
        let mut moved = ok.clone();
        moved.webhook.as_mut().unwrap().url = "http://192.168.1.10/in".to_owned();
        let err = c
            .destinations
            .update_destination(pb::UpdateDestinationRequest {
                destination: Some(moved),
            })
            .await
            .expect_err("a private address on update");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("192.168.1.10 is a private address"), "{}", err.message());

        // At send: a name that resolves to loopback (stored before the policy, say) is refused
        // on what it resolves to, and no request is made.
        let store = Store::connect(&url).await?;
        let mut record = DestinationRecord::new(
            "Resolves to loopback",
            DestinationKind::Webhook,
            json!({"url": format!("http://localhost:{port}/hook"), "headers": {}, "timeout_ms": 5000}),
            chrono::Utc::now(),
        );
        record.id = "webhook".to_owned();
        store.destinations().insert(&record).await?;
        store.close().await?;
        forwarding_journey(&mut c).await?;
        let err = c
            .journeys
            .send_test_event(test_send())
            .await
            .expect_err("a loopback destination must not be reached");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains("destination address refused")
                && err.message().contains("localhost: 127.0.0.1 is a loopback address"),
            "{}",
            err.message()
        );
        assert_eq!(sink.count(), 0, "no request reached the sink");
        cp.stop().await?;

        // On the allow-list, the same destination is reached.
        let cp = ControlPlane::start(
            &url,
            Options {
                destination_allow: Some(vec!["127.0.0.0/8".to_owned()]),
                ..Options::default()
            },
        )
        .await?;
        let mut c = cp.clients().await?;
        let sent = c.journeys.send_test_event(test_send()).await?.into_inner();
        assert_eq!(sent.status_code, 200);
        assert_eq!(sink.count(), 1);
        c.destinations
            .create_destination(destination("local", &format!("http://127.0.0.1:{port}/hook")))
            .await?;
        cp.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn url_credentials_are_masked_in_answers_kept_on_update_and_sent_as_basic_auth()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let port = sink.addr().port();
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        let secret_url = format!("http://hook-user:s3cret@127.0.0.1:{port}/hook");
        let masked_url = format!("http://hook-user:********@127.0.0.1:{port}/hook");

        let created = c
            .destinations
            .create_destination(destination("webhook", &secret_url))
            .await?
            .into_inner();
        assert_eq!(created.webhook.as_ref().unwrap().url, masked_url);
        let got = c
            .destinations
            .get_destination(pb::GetDestinationRequest {
                id: "webhook".to_owned(),
            })
            .await?
            .into_inner();
        assert_eq!(got.webhook.as_ref().unwrap().url, masked_url);
        let listed = c
            .destinations
            .list_destinations(pb::ListDestinationsRequest::default())
            .await?
            .into_inner();
        assert!(!format!("{listed:?}").contains("s3cret"), "{listed:?}");

        // Sending back what was shown (renamed) keeps the stored credentials.
        let mut renamed = got.clone();
        renamed.name = "Renamed".to_owned();
        let updated = c
            .destinations
            .update_destination(pb::UpdateDestinationRequest {
                destination: Some(renamed),
            })
            .await?
            .into_inner();
        assert_eq!(updated.webhook.as_ref().unwrap().url, masked_url);

        // The mask with another host stands for nothing: refused, with the field named.
        let mut moved = got.clone();
        moved.webhook.as_mut().unwrap().url =
            "http://hook-user:********@example.com/hook".to_owned();
        let err = c
            .destinations
            .update_destination(pb::UpdateDestinationRequest {
                destination: Some(moved),
            })
            .await
            .expect_err("the mask on another host");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("destination.webhook.url"),
            "{}",
            err.message()
        );

        // The request goes to the URL without credentials, with them as Basic auth.
        forwarding_journey(&mut c).await?;
        let sent = c.journeys.send_test_event(test_send()).await?.into_inner();
        assert_eq!(sent.status_code, 200);
        let received = sink.wait_for(1, std::time::Duration::from_secs(5)).await;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("hook-user:s3cret")
        );
        assert_eq!(received[0].header("authorization"), Some(expected.as_str()));
        cp.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
