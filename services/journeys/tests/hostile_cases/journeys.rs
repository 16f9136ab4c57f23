//! `JourneyService`: invalid definitions of every kind (each refusal names the path), the
//! quadratic-validation input, mapping output bombs, and calls on the wrong journey state.

use std::sync::Arc;

use journeys_proto::v1 as pb;
use journeys_tests::ingest::track;
use journeys_tests::request_from_json;
use serde_json::{Value, json};

use super::{Case, Ctx, Got, case};

/// A valid draft: signup → delay → send → end.
fn base() -> Value {
    json!({
        "name": "Hostile",
        "entry": {"event": "signup"},
        "entry_rule": "ENTER_ONCE",
        "start_step": "wait",
        "steps": [
            {"key": "wait", "name": "Wait", "delay": {"duration": "60s", "next": "send"}},
            {"key": "send", "name": "Send", "send": {"destination_id": "hook", "next": "done"}},
            {"key": "done", "name": "Done", "end": {}}
        ]
    })
}

/// A `CreateJourney` of `base()` changed by `edit`.
fn create(name: &str, status: &str, message: &str, edit: impl Fn(&mut Value)) -> Case {
    let mut journey = base();
    journey["name"] = json!(unique_name(name));
    edit(&mut journey);
    create_json(name, status, message, &journey)
}

fn create_json(name: &str, status: &str, message: &str, journey: &Value) -> Case {
    let request = Arc::new(json!({ "journey": journey }));
    case(name, status, message, move |ctx: Arc<Ctx>| {
        let request = request.clone();
        async move {
            let request: pb::CreateJourneyRequest =
                request_from_json(&request, "journeys.v1.CreateJourneyRequest")?;
            Ok(Got::grpc(ctx.c().journeys.create_journey(request).await))
        }
    })
}

/// A journey name for the case `name` (journey names are unique, at most 73 characters).
fn unique_name(name: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    format!("Hostile {:016x}", hasher.finish())
}

/// `n` delay steps, each pointing back to the first: quadratic to walk naively.
fn back_pointing(n: usize) -> Value {
    let steps: Vec<Value> = (0..n)
        .map(|i| json!({"key": format!("s{i}"), "name": format!("Step {i}"), "data_split": {"branches": [{"name": "b", "conditions": [{"kind": "TRAIT", "path_or_key": "x", "op": "EXISTS"}], "next": "s0"}], "else_next": format!("s{}", (i + 1) % n)}}))
        .collect();
    let mut journey = base();
    journey["name"] = json!(unique_name(&format!("back {n}")));
    journey["start_step"] = json!("s0");
    journey["steps"] = json!(steps);
    journey
}

/// A mapping of `levels` nested `@replace`s, each multiplying the text twenty-fold.
fn replace_bomb(levels: usize) -> Value {
    let mut value = json!({"@path": "$.properties.journey_context.signup.text"});
    for _ in 0..levels {
        value =
            json!({"@replace": {"pattern": "a", "replacement": "a".repeat(20), "value": value}});
    }
    json!({ "body": value })
}

pub fn cases() -> Vec<Case> {
    let mut cases = definitions();
    cases.extend(limits_and_bombs());
    cases.extend(states());
    cases
}

fn definitions() -> Vec<Case> {
    vec![
        create("a journey without a name", "InvalidArgument", "name", |j| {
            j["name"] = json!("");
        }),
        create(
            "a journey name of 10,000 characters",
            "InvalidArgument",
            "name",
            |j| j["name"] = json!("n".repeat(10_000)),
        ),
        create("a journey without steps", "InvalidArgument", "steps", |j| {
            j["steps"] = json!([]);
        }),
        create(
            "a journey without a start step",
            "InvalidArgument",
            "start_step",
            |j| j["start_step"] = json!(""),
        ),
        create(
            "a start step that does not exist",
            "InvalidArgument",
            "start_step",
            |j| j["start_step"] = json!("nowhere"),
        ),
        create(
            "a next step that does not exist",
            "InvalidArgument",
            "steps[0]",
            |j| j["steps"][0]["delay"]["next"] = json!("nowhere"),
        ),
        create(
            "two steps with one key",
            "InvalidArgument",
            "steps[1].key",
            |j| j["steps"][1]["key"] = json!("wait"),
        ),
        create("a step of no kind", "InvalidArgument", "steps[2]", |j| {
            j["steps"][2] = json!({"key": "done", "name": "Done"});
        }),
        create(
            "a step key with a space",
            "InvalidArgument",
            "steps[2].key",
            |j| {
                j["steps"][2]["key"] = json!("all done");
                j["steps"][1]["send"]["next"] = json!("all done");
            },
        ),
        create(
            "a step key of 1,000 characters",
            "InvalidArgument",
            "steps[2].key",
            |j| {
                let key = "k".repeat(1000);
                j["steps"][2]["key"] = json!(key);
                j["steps"][1]["send"]["next"] = json!(key);
            },
        ),
        create(
            "a negative delay",
            "InvalidArgument",
            "steps[0].delay.duration",
            |j| j["steps"][0]["delay"]["duration"] = json!("-60s"),
        ),
        create(
            "a zero delay",
            "InvalidArgument",
            "steps[0].delay.duration",
            |j| j["steps"][0]["delay"]["duration"] = json!("0s"),
        ),
        create(
            "a delay of 300 years",
            "InvalidArgument",
            "steps[0].delay.duration",
            |j| j["steps"][0]["delay"]["duration"] = json!("9460800000s"),
        ),
        create(
            "a hold without a maximum duration",
            "InvalidArgument",
            "max_duration",
            |j| {
                j["steps"][0] = json!({"key": "wait", "name": "Hold", "hold_until": {"branches": [{"name": "Bought", "event": "purchase_completed", "next": "done"}], "timeout_next": "send"}});
            },
        ),
        create(
            "a hold without branches",
            "InvalidArgument",
            "branches",
            |j| {
                j["steps"][0] = json!({"key": "wait", "name": "Hold", "hold_until": {"branches": [], "max_duration": "3600s", "timeout_next": "send"}});
            },
        ),
        create(
            "random split percents summing to 150",
            "InvalidArgument",
            "percent",
            |j| {
                j["steps"][0] = json!({"key": "wait", "name": "Split", "random_split": {"branches": [{"name": "a", "percent": 100, "next": "send"}, {"name": "b", "percent": 50, "next": "done"}]}});
            },
        ),
        create(
            "random split percents summing to 50",
            "InvalidArgument",
            "percent",
            |j| {
                j["steps"][0] = json!({"key": "wait", "name": "Split", "random_split": {"branches": [{"name": "a", "percent": 30, "next": "send"}, {"name": "b", "percent": 20, "next": "done"}]}});
            },
        ),
        create(
            "an unknown condition operator 99",
            "InvalidArgument",
            "op",
            |j| {
                j["steps"][0] = json!({"key": "wait", "name": "Split", "data_split": {"branches": [{"name": "a", "conditions": [{"kind": "TRAIT", "path_or_key": "plan", "op": 99}], "next": "send"}], "else_next": "done"}});
            },
        ),
        create(
            "an unknown entry rule 99",
            "InvalidArgument",
            "entry_rule",
            |j| j["entry_rule"] = json!(99),
        ),
        create(
            "re-entry without a unique identifier",
            "InvalidArgument",
            "unique_identifier",
            |j| j["entry_rule"] = json!("REENTER_EVERY_TIME"),
        ),
        create(
            "a journey without an entry event",
            "InvalidArgument",
            "entry.event",
            |j| j["entry"] = json!({}),
        ),
        create(
            "an entry filter without a value",
            "InvalidArgument",
            "entry.filters[0]",
            |j| j["entry"]["filters"] = json!([{"property": "plan"}]),
        ),
        create(
            "an entry filter without a property",
            "InvalidArgument",
            "entry.filters[0]",
            |j| j["entry"]["filters"] = json!([{"equals": "pro"}]),
        ),
        create(
            "steps that loop without waiting",
            "InvalidArgument",
            "cycle",
            |j| {
                j["steps"][0] = json!({"key": "wait", "name": "Split", "data_split": {"branches": [{"name": "a", "conditions": [{"kind": "TRAIT", "path_or_key": "plan", "op": "EXISTS"}], "next": "send"}], "else_next": "wait"}});
                j["steps"][1]["send"]["next"] = json!("wait");
            },
        ),
        create(
            "a mapping with an unknown directive",
            "InvalidArgument",
            "@nope",
            |j| j["steps"][1]["send"]["mapping"] = json!({"x": {"@nope": 1}}),
        ),
        create(
            "a mapping @path that is not a path",
            "InvalidArgument",
            "@path",
            |j| j["steps"][1]["send"]["mapping"] = json!({"x": {"@path": 5}}),
        ),
        create(
            "an exit rule without an event",
            "InvalidArgument",
            "exit_rules[0]",
            |j| j["exit_rules"] = json!([{"filters": []}]),
        ),
        create("a journey id with a space", "InvalidArgument", "id", |j| {
            j["id"] = json!("has space");
        }),
        create(
            "a journey id of 1,000 characters",
            "InvalidArgument",
            "id",
            |j| j["id"] = json!("j".repeat(1000)),
        ),
        create(
            "a journey id that exists",
            "AlreadyExists",
            "already exists",
            |j| j["id"] = json!("draft"),
        ),
        create(
            "an unreachable step",
            "InvalidArgument",
            "not reachable",
            |j| {
                j["steps"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"key": "orphan", "name": "Orphan", "end": {}}));
            },
        ),
    ]
}

fn limits_and_bombs() -> Vec<Case> {
    let deep_mapping = {
        let mut v = json!("leaf");
        for _ in 0..20 {
            v = json!({ "a": v });
        }
        v
    };
    vec![
        create_json(
            "4,000 steps pointing back to the first",
            "InvalidArgument",
            "steps",
            &back_pointing(4000),
        ),
        create_json(
            "1,000 steps pointing back to the first",
            "InvalidArgument",
            "",
            &back_pointing(1000),
        ),
        create(
            "a description of 1 MB",
            "InvalidArgument",
            "description",
            |j| j["description"] = json!("d".repeat(1 << 20)),
        ),
        create("a mapping nested 20 deep", "Ok", "Draft", move |j| {
            j["steps"][1]["send"]["mapping"] = deep_mapping.clone();
        }),
        create("1,000 entry filters", "Ok", "state: Draft", |j| {
            j["entry"]["filters"] = json!(
                (0..1000)
                    .map(|i| json!({"property": format!("p{i}"), "equals": 1}))
                    .collect::<Vec<_>>()
            );
        }),
        case(
            "a mapping whose output multiplies the event is stopped at its budget",
            "FailedPrecondition",
            "the rendered text would exceed 32768 bytes",
            |ctx: Arc<Ctx>| async move {
                let mut journey = base();
                journey["id"] = json!("bomb");
                journey["name"] = json!("Hostile bomb");
                journey["steps"][1]["send"]["mapping"] = replace_bomb(4);
                let request: pb::CreateJourneyRequest = request_from_json(
                    &json!({"journey": journey}),
                    "journeys.v1.CreateJourneyRequest",
                )?;
                ctx.c().journeys.create_journey(request).await?;
                let sample = track(
                    "bomber",
                    "signup",
                    "",
                    &json!({"text": "a".repeat(20 * 1024)}),
                );
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .preview_payload(pb::PreviewPayloadRequest {
                            journey_id: "bomb".to_owned(),
                            step_key: "send".to_owned(),
                            sample_event: Some(sample),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "a simulation of 100,000 events",
            "InvalidArgument",
            "events",
            |ctx: Arc<Ctx>| async move {
                let events: Vec<Value> = (0..100_000).map(|i| json!({"event": {"type": "TRACK", "userId": "sim", "event": "signup", "messageId": format!("sim-{i}")}})).collect();
                let request: pb::SimulateJourneyRequest = request_from_json(
                    &json!({"id": "draft", "events": events}),
                    "journeys.v1.SimulateJourneyRequest",
                )?;
                Ok(Got::grpc(ctx.c().journeys.simulate_journey(request).await))
            },
        ),
    ]
}

fn states() -> Vec<Case> {
    vec![
        case(
            "updating a published journey",
            "FailedPrecondition",
            "only drafts can be edited",
            |ctx: Arc<Ctx>| async move {
                let mut c = ctx.c();
                let journey = c
                    .journeys
                    .get_journey(pb::GetJourneyRequest {
                        id: "probes".to_owned(),
                    })
                    .await?
                    .into_inner();
                Ok(Got::grpc(
                    c.journeys
                        .update_journey(pb::UpdateJourneyRequest {
                            journey: Some(journey),
                        })
                        .await,
                ))
            },
        ),
        case(
            "deleting a published journey",
            "FailedPrecondition",
            "",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .delete_journey(pb::DeleteJourneyRequest {
                            id: "probes".to_owned(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "publishing an unknown journey",
            "NotFound",
            "nope",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .publish_journey(pb::PublishJourneyRequest {
                            id: "nope".to_owned(),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "publishing with a send to an unknown destination",
            "FailedPrecondition",
            "nope",
            |ctx: Arc<Ctx>| async move {
                let mut journey = base();
                journey["id"] = json!("nowhere-send");
                journey["name"] = json!("Hostile nowhere send");
                journey["steps"][1]["send"]["destination_id"] = json!("nope");
                let request: pb::CreateJourneyRequest = request_from_json(
                    &json!({"journey": journey}),
                    "journeys.v1.CreateJourneyRequest",
                )?;
                let mut c = ctx.c();
                c.journeys.create_journey(request).await?;
                Ok(Got::grpc(
                    c.journeys
                        .publish_journey(pb::PublishJourneyRequest {
                            id: "nowhere-send".to_owned(),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "publishing with an event not in the catalog",
            "FailedPrecondition",
            "never_seen",
            |ctx: Arc<Ctx>| async move {
                let mut journey = base();
                journey["id"] = json!("unseen");
                journey["name"] = json!("Hostile unseen");
                journey["entry"]["event"] = json!("never_seen");
                let request: pb::CreateJourneyRequest = request_from_json(
                    &json!({"journey": journey}),
                    "journeys.v1.CreateJourneyRequest",
                )?;
                let mut c = ctx.c();
                c.journeys.create_journey(request).await?;
                Ok(Got::grpc(
                    c.journeys
                        .publish_journey(pb::PublishJourneyRequest {
                            id: "unseen".to_owned(),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "archiving with an unknown mode 99",
            "InvalidArgument",
            "mode",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .archive_journey(pb::ArchiveJourneyRequest {
                            id: "draft".to_owned(),
                            mode: 99,
                        })
                        .await,
                ))
            },
        ),
        case(
            "a journey without an id",
            "InvalidArgument",
            "id",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .get_journey(pb::GetJourneyRequest { id: String::new() })
                        .await,
                ))
            },
        ),
        case(
            "journeys with a forged page token",
            "Ok",
            "journeys",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .list_journeys(pb::ListJourneysRequest {
                            page_token: "~~forged~~".to_owned(),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "journeys in an unknown state 99",
            "InvalidArgument",
            "state",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .list_journeys(pb::ListJourneysRequest {
                            state: 99,
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "validating nothing",
            "InvalidArgument",
            "journey",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .validate_journey(pb::ValidateJourneyRequest { target: None })
                        .await,
                ))
            },
        ),
        case(
            "duplicating an unknown journey",
            "NotFound",
            "nope",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .duplicate_journey(pb::DuplicateJourneyRequest {
                            id: "nope".to_owned(),
                            name: String::new(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "a preview of a step that does not exist",
            "InvalidArgument",
            "step_key",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .preview_payload(pb::PreviewPayloadRequest {
                            journey_id: "draft".to_owned(),
                            step_key: "nowhere".to_owned(),
                            sample_event: Some(track("u1", "signup", "", &json!({}))),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "a test send from a step that is not a send",
            "InvalidArgument",
            "step_key",
            |ctx: Arc<Ctx>| async move {
                let mut journey = base();
                journey["id"] = json!("with-delay");
                journey["name"] = json!("Hostile with-delay");
                let request: pb::CreateJourneyRequest = request_from_json(
                    &json!({"journey": journey}),
                    "journeys.v1.CreateJourneyRequest",
                )?;
                let mut c = ctx.c();
                c.journeys.create_journey(request).await?;
                Ok(Got::grpc(
                    c.journeys
                        .send_test_event(pb::SendTestEventRequest {
                            journey_id: "with-delay".to_owned(),
                            step_key: "wait".to_owned(),
                            sample_event: Some(track("u1", "signup", "", &json!({}))),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "stats of an unknown journey",
            "NotFound",
            "nope",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .journeys
                        .get_journey_stats(pb::GetJourneyStatsRequest {
                            id: "nope".to_owned(),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
    ]
}
