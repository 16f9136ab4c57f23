//! The control plane end to end, over real gRPC, on every backend: the journey lifecycle,
//! validation errors with paths, references checked at publish, error codes, auth and
//! durability across a restart.

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

use journeys_proto::v1 as pb;
use journeys_tests::{Clients, ControlPlane, Options, example, on_each_backend};
use tonic::Code;
use tonic_types::StatusExt;

fn get(id: &str) -> pb::GetJourneyRequest {
    pb::GetJourneyRequest { id: id.to_owned() }
}

async fn webhook_destination(c: &mut Clients, id: &str) -> anyhow::Result<pb::Destination> {
    Ok(c.destinations
        .create_destination(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                id: id.to_owned(),
                name: format!("Webhook {id}"),
                webhook: Some(pb::WebhookSettings {
                    url: "http://127.0.0.1:9/hook".to_owned(),
                    signing_secret: "s3cret".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner())
}

async fn register(c: &mut Clients, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        c.catalog
            .register_event(pb::RegisterEventRequest {
                name: (*name).to_owned(),
            })
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn journey_lifecycle_from_draft_to_archive() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        webhook_destination(&mut c, "webhook").await?;

        // Create → Get.
        let created = c
            .journeys
            .create_journey(example("abandoned-checkout.json")?)
            .await?
            .into_inner();
        assert_eq!(created.id, "abandoned-checkout");
        assert_eq!(created.state, pb::JourneyState::Draft as i32);
        assert_eq!(created.revision, 1);
        let fetched = c.journeys.get_journey(get(&created.id)).await?.into_inner();
        assert_eq!(fetched, created);

        // Update the draft: a new description, revision bumps.
        let mut edited = fetched.clone();
        edited.description = "Nudges shoppers who did not buy within the hour.".to_owned();
        let updated = c
            .journeys
            .update_journey(pb::UpdateJourneyRequest {
                journey: Some(edited),
            })
            .await?
            .into_inner();
        assert_eq!(updated.revision, 2);
        assert_eq!(
            updated.description,
            "Nudges shoppers who did not buy within the hour."
        );

        // Validate by id: the definition is fine but its events are not in the catalog yet.
        let v = c
            .journeys
            .validate_journey(pb::ValidateJourneyRequest {
                target: Some(pb::validate_journey_request::Target::Id(created.id.clone())),
            })
            .await?
            .into_inner();
        assert!(!v.valid);
        let paths: Vec<&str> = v.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["entry.event", "steps[0].hold_until.branches[0].event"]
        );

        // Publishing names the missing entry event …
        let err = c
            .journeys
            .publish_journey(pb::PublishJourneyRequest {
                id: created.id.clone(),
                ..Default::default()
            })
            .await
            .expect_err("publish without catalog events must fail");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("checkout_started"),
            "{}",
            err.message()
        );
        assert_eq!(
            c.journeys
                .get_journey(get(&created.id))
                .await?
                .into_inner()
                .state,
            pb::JourneyState::Draft as i32,
            "a refused publish changes nothing"
        );

        // … and succeeds once the events are registered.
        register(&mut c, &["checkout_started", "purchase_completed"]).await?;
        let published = c
            .journeys
            .publish_journey(pb::PublishJourneyRequest {
                id: created.id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(published.state, pb::JourneyState::Published as i32);
        assert!(published.published_at.is_some());

        // Published journeys are immutable.
        let mut change = published.clone();
        change.description = "changed".to_owned();
        let err = c
            .journeys
            .update_journey(pb::UpdateJourneyRequest {
                journey: Some(change),
            })
            .await
            .expect_err("updating a published journey must fail");
        assert_eq!(err.code(), Code::FailedPrecondition);
        let err = c
            .journeys
            .delete_journey(pb::DeleteJourneyRequest {
                id: created.id.clone(),
            })
            .await
            .expect_err("deleting a published journey must fail");
        assert_eq!(err.code(), Code::FailedPrecondition);

        // Duplicate gives a new, editable draft with the same definition.
        let copy = c
            .journeys
            .duplicate_journey(pb::DuplicateJourneyRequest {
                id: created.id.clone(),
                name: String::new(),
            })
            .await?
            .into_inner();
        assert_ne!(copy.id, created.id);
        assert_eq!(copy.name, "Abandoned checkout nudge (copy)");
        assert_eq!(copy.state, pb::JourneyState::Draft as i32);
        assert_eq!(copy.steps, published.steps);
        let mut copy_edit = copy.clone();
        copy_edit.name = "Abandoned checkout nudge v2".to_owned();
        let copy_updated = c
            .journeys
            .update_journey(pb::UpdateJourneyRequest {
                journey: Some(copy_edit),
            })
            .await?
            .into_inner();
        assert_eq!(copy_updated.name, "Abandoned checkout nudge v2");

        // Archive the published one; archiving again is a no-op.
        let archived = c
            .journeys
            .archive_journey(pb::ArchiveJourneyRequest {
                id: created.id.clone(),
                mode: pb::ArchiveMode::Drain as i32,
            })
            .await?
            .into_inner();
        assert_eq!(archived.state, pb::JourneyState::Archived as i32);
        assert!(archived.archived_at.is_some());

        // Listing by state sees each journey where it belongs.
        let drafts = c
            .journeys
            .list_journeys(pb::ListJourneysRequest {
                state: pb::JourneyState::Draft as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(drafts.journeys.len(), 1);
        assert_eq!(drafts.journeys[0].id, copy.id);

        cp.stop().await
    })
    .await
}

#[tokio::test]
async fn a_definition_with_many_defects_lists_each_with_its_path() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        let bad = serde_json::json!({
            "journey": {
                "name": "x".repeat(80),
                "entry": { "event": "" },
                "entry_rule": "REENTER_EVERY_TIME",
                "start_step": "missing_start",
                "steps": [
                    { "key": "Bad Key", "name": "Bad key", "end": {} },
                    { "key": "wait", "name": "Wait", "delay": { "duration": "5s", "next": "nowhere" } },
                    { "key": "split", "name": "Split", "random_split": { "branches": [
                        { "name": "a", "percent": 50, "next": "wait" },
                        { "name": "b", "percent": 30, "next": "wait" }
                    ] } },
                    { "key": "hold", "name": "Hold", "hold_until": {
                        "branches": [
                            { "name": "one", "event": "paid", "next": "wait" },
                            { "name": "two", "event": "paid", "next": "wait" }
                        ],
                        "max_duration": "600s"
                    } },
                    { "key": "wait", "name": "Duplicate key", "end": {} },
                    { "key": "nothing", "name": "No kind" }
                ]
            }
        });
        let err = c
            .journeys
            .create_journey(journeys_tests::journey_request_from_json(&bad)?)
            .await
            .expect_err("an invalid definition must be refused");
        assert_eq!(err.code(), Code::InvalidArgument);
        let details = err.get_error_details();
        let violations: Vec<String> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        for path in [
            "name",
            "entry.event",
            "unique_identifier",
            "start_step",
            "steps[0].key",
            "steps[1].delay.duration",
            "steps[1].delay.next",
            "steps[2].random_split.branches",
            "steps[4].key",
            "steps[5]",
        ] {
            assert!(
                violations.iter().any(|v| v == path),
                "expected a problem at {path}, got {violations:?}"
            );
            assert!(err.message().contains(path), "message lacks {path}: {}", err.message());
        }
        assert!(
            violations.iter().any(|v| v.starts_with("steps[3].hold_until")),
            "overlapping hold branches must be reported: {violations:?}"
        );
        assert!(violations.len() >= 11, "{violations:?}");

        // Nothing was stored.
        let all = c
            .journeys
            .list_journeys(pb::ListJourneysRequest::default())
            .await?
            .into_inner();
        assert!(all.journeys.is_empty());

        // ValidateJourney reports the same problems without an error status.
        let v = c
            .journeys
            .validate_journey(pb::ValidateJourneyRequest {
                target: Some(pb::validate_journey_request::Target::Journey(
                    journeys_tests::journey_request_from_json(&bad)?
                        .journey
                        .unwrap_or_default(),
                )),
            })
            .await?
            .into_inner();
        assert!(!v.valid);
        assert_eq!(v.problems.len(), violations.len());
        cp.stop().await
    })
    .await
}

#[tokio::test]
async fn names_ids_and_tokens_get_precise_codes() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let token = "let-me-in";
        let cp = ControlPlane::start(
            &url,
            Options {
                admin_token: Some(token.to_owned()),
                ..Options::default()
            },
        )
        .await?;
        let channel = cp.channel().await?;

        // No token, wrong token → UNAUTHENTICATED; nothing is created.
        let mut anonymous = pb::journey_service_client::JourneyServiceClient::new(channel.clone());
        let err = anonymous
            .list_journeys(pb::ListJourneysRequest::default())
            .await
            .expect_err("a call without a token must fail");
        assert_eq!(err.code(), Code::Unauthenticated);
        let mut wrong = pb::journey_service_client::JourneyServiceClient::with_interceptor(
            channel.clone(),
            |mut req: tonic::Request<()>| {
                req.metadata_mut().insert(
                    "authorization",
                    "Bearer not-the-token"
                        .parse()
                        .map_err(|_| tonic::Status::internal("header"))?,
                );
                Ok(req)
            },
        );
        let err = wrong
            .create_journey(example("realtime-forwarding.json")?)
            .await
            .expect_err("a wrong token must fail");
        assert_eq!(err.code(), Code::Unauthenticated);

        let mut authed = pb::journey_service_client::JourneyServiceClient::with_interceptor(
            channel,
            move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}")
                        .parse()
                        .map_err(|_| tonic::Status::internal("header"))?,
                );
                Ok(req)
            },
        );
        assert!(
            authed
                .list_journeys(pb::ListJourneysRequest::default())
                .await?
                .into_inner()
                .journeys
                .is_empty(),
            "the refused create stored nothing"
        );

        // Same name twice → ALREADY_EXISTS (under another id).
        let mut first = example("realtime-forwarding.json")?;
        authed.create_journey(first.clone()).await?;
        if let Some(j) = first.journey.as_mut() {
            j.id = String::new();
        }
        let err = authed
            .create_journey(first)
            .await
            .expect_err("a duplicate name must fail");
        assert_eq!(err.code(), Code::AlreadyExists);
        assert!(
            err.message().contains("Forward form submissions"),
            "{}",
            err.message()
        );

        // Unknown id → NOT_FOUND.
        let err = authed
            .get_journey(get("no-such-journey"))
            .await
            .expect_err("an unknown id must fail");
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("no-such-journey"));
        cp.stop().await
    })
    .await
}

#[tokio::test]
async fn examples_validate_once_their_references_exist() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        webhook_destination(&mut c, "webhook").await?;
        register(
            &mut c,
            &[
                "checkout_started",
                "purchase_completed",
                "form_submitted",
                "content_downloaded",
            ],
        )
        .await?;
        for file in [
            "abandoned-checkout.json",
            "realtime-forwarding.json",
            "content-follow-up.json",
        ] {
            let journey = example(file)?.journey.unwrap_or_default();
            let v = c
                .journeys
                .validate_journey(pb::ValidateJourneyRequest {
                    target: Some(pb::validate_journey_request::Target::Journey(journey)),
                })
                .await?
                .into_inner();
            assert!(v.valid, "{file}: {:?}", v.problems);
            let created = c
                .journeys
                .create_journey(example(file)?)
                .await?
                .into_inner();
            c.journeys
                .publish_journey(pb::PublishJourneyRequest {
                    id: created.id,
                    ..Default::default()
                })
                .await?;
        }
        cp.stop().await
    })
    .await
}

#[tokio::test]
async fn destinations_hide_secrets_and_stay_while_published_journeys_use_them() -> anyhow::Result<()>
{
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        let d = webhook_destination(&mut c, "webhook").await?;
        let hook = d.webhook.clone().unwrap_or_default();
        assert_eq!(
            hook.signing_secret, "********",
            "the secret is never returned"
        );
        assert_eq!(hook.timeout.map(|t| t.seconds), Some(10));

        // Bad settings are refused with the field named.
        let err = c
            .destinations
            .create_destination(pb::CreateDestinationRequest {
                destination: Some(pb::Destination {
                    name: "Broken".to_owned(),
                    webhook: Some(pb::WebhookSettings {
                        url: "ftp://example".to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .await
            .expect_err("a non-http URL must be refused");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("destination.webhook.url"));

        register(&mut c, &["form_submitted"]).await?;
        let j = c
            .journeys
            .create_journey(example("realtime-forwarding.json")?)
            .await?
            .into_inner();
        c.journeys
            .publish_journey(pb::PublishJourneyRequest {
                id: j.id.clone(),
                ..Default::default()
            })
            .await?;
        let err = c
            .destinations
            .delete_destination(pb::DeleteDestinationRequest { id: d.id.clone() })
            .await
            .expect_err("a destination in use must stay");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains(&j.id));

        // Sending the mask back keeps the stored secret (still masked, still set).
        let mut renamed = d.clone();
        renamed.name = "Renamed webhook".to_owned();
        let updated = c
            .destinations
            .update_destination(pb::UpdateDestinationRequest {
                destination: Some(renamed),
            })
            .await?
            .into_inner();
        assert_eq!(updated.name, "Renamed webhook");
        assert_eq!(
            updated.webhook.unwrap_or_default().signing_secret,
            "********"
        );

        c.journeys
            .archive_journey(pb::ArchiveJourneyRequest {
                id: j.id,
                mode: pb::ArchiveMode::Drain as i32,
            })
            .await?;
        c.destinations
            .delete_destination(pb::DeleteDestinationRequest { id: d.id.clone() })
            .await?;
        let err = c
            .destinations
            .get_destination(pb::GetDestinationRequest { id: d.id })
            .await
            .expect_err("deleted");
        assert_eq!(err.code(), Code::NotFound);
        cp.stop().await
    })
    .await
}

/// Everything a user can read, for comparing before and after a restart.
async fn snapshot(c: &mut Clients) -> anyhow::Result<String> {
    let journeys = c
        .journeys
        .list_journeys(pb::ListJourneysRequest::default())
        .await?
        .into_inner();
    let destinations = c
        .destinations
        .list_destinations(pb::ListDestinationsRequest::default())
        .await?
        .into_inner();
    let audiences = c
        .audiences
        .list_audiences(pb::ListAudiencesRequest::default())
        .await?
        .into_inner();
    let members = c
        .audiences
        .list_members(pb::ListMembersRequest {
            key: "vip_customers".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let sources = c
        .sources
        .list_sources(pb::ListSourcesRequest {})
        .await?
        .into_inner();
    let events = c
        .catalog
        .list_events(pb::ListEventsRequest {})
        .await?
        .into_inner();
    Ok(format!(
        "{journeys:?}\n{destinations:?}\n{audiences:?}\n{members:?}\n{sources:?}\n{events:?}"
    ))
}

#[tokio::test]
async fn everything_survives_a_restart_unchanged() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        webhook_destination(&mut c, "webhook").await?;
        register(&mut c, &["checkout_started", "purchase_completed"]).await?;
        c.audiences
            .create_audience(pb::CreateAudienceRequest {
                key: "vip_customers".to_owned(),
                name: "VIP customers".to_owned(),
            })
            .await?;
        let added = c
            .audiences
            .add_members(pb::AddMembersRequest {
                key: "vip_customers".to_owned(),
                user_ids: vec!["u1".to_owned(), "u2".to_owned(), "u1".to_owned()],
            })
            .await?
            .into_inner();
        assert_eq!(added.added, 2, "a repeated id is added once");
        let source = c
            .sources
            .create_source(pb::CreateSourceRequest {
                name: "web".to_owned(),
            })
            .await?
            .into_inner();
        assert!(
            source.write_key.len() >= 40,
            "write keys are long and random"
        );
        c.sources
            .revoke_source(pb::RevokeSourceRequest {
                id: source.id.clone(),
            })
            .await?;
        let j = c
            .journeys
            .create_journey(example("abandoned-checkout.json")?)
            .await?
            .into_inner();
        c.journeys
            .publish_journey(pb::PublishJourneyRequest {
                id: j.id,
                ..Default::default()
            })
            .await?;
        c.journeys
            .create_journey(example("content-follow-up.json")?)
            .await?;
        let before = snapshot(&mut c).await?;
        drop(c);
        cp.stop().await?;

        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        let after = snapshot(&mut c).await?;
        assert_eq!(before, after);
        assert!(
            !before.contains(&source.write_key),
            "the write key is never stored or shown again"
        );
        let member = c
            .audiences
            .check_membership(pb::CheckMembershipRequest {
                key: "vip_customers".to_owned(),
                user_id: "u2".to_owned(),
            })
            .await?
            .into_inner();
        assert!(member.member);
        cp.stop().await
    })
    .await
}
