//! `IngestService` over gRPC: unary calls with bad keys and bad events, and the `Ingest`
//! stream with undecodable, oversize and too-deep messages, mixed good and bad events, dedupe
//! across sources, and an overloaded engine.

use std::sync::Arc;
use std::time::Duration;

use journeys_control_plane::convert::json::json_to_struct;
use journeys_proto::v1 as pb;
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use journeys_tests::ingest::{IngestStream, identify, keyed, track};
use prost_types::value::Kind;
use serde_json::json;
use tonic::Request;
use tonic::transport::Channel;

use super::{Case, Ctx, Got, case};

async fn client(addr: std::net::SocketAddr) -> anyhow::Result<IngestServiceClient<Channel>> {
    Ok(IngestServiceClient::connect(format!("http://{addr}"))
        .await?
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20))
}

/// A unary `Track` of `event` with the `web` key; an accepted event's user is recorded.
fn unary(name: &str, status: &str, message: &str, event: pb::Event) -> Case {
    let event = Arc::new(event);
    case(name, status, message, move |ctx: Arc<Ctx>| {
        let event = (*event).clone();
        async move {
            let mut client = client(ctx.grpc).await?;
            let user = event.user_id.clone();
            let identify = event.r#type == pb::EventType::Identify as i32;
            let is_probe = event.event == "probe";
            let request = keyed(event, &ctx.key)?;
            let result = if identify {
                client.identify(request).await
            } else {
                client.track(request).await
            };
            Ok(match result {
                Ok(ack) => {
                    let ack = ack.into_inner();
                    if ack.status == pb::AckStatus::Accepted as i32 {
                        if identify {
                            ctx.acked(&user);
                        } else if is_probe {
                            ctx.sent(&user);
                        }
                    }
                    Got::ack(&ack)
                }
                Err(status) => Got::new(format!("{:?}", status.code()), status.message()),
            })
        }
    })
}

/// A unary `Track` with this metadata instead of the write key.
fn unauthenticated(name: &str, metadata: Option<(&'static str, String)>) -> Case {
    case(
        name,
        "Unauthenticated",
        "write key",
        move |ctx: Arc<Ctx>| {
            let metadata = metadata.clone();
            async move {
                let mut client = client(ctx.grpc).await?;
                let mut request = Request::new(track("u1", "signup", "", &json!({})));
                if let Some((name, value)) = metadata {
                    let value = value.replace("{key}", &ctx.key);
                    request.metadata_mut().insert(name, value.parse()?);
                }
                Ok(Got::grpc(client.track(request).await))
            }
        },
    )
}

fn deep_struct(depth: usize) -> prost_types::Struct {
    let mut value = prost_types::Value {
        kind: Some(Kind::NumberValue(1.0)),
    };
    for _ in 0..depth {
        value = prost_types::Value {
            kind: Some(Kind::StructValue(prost_types::Struct {
                fields: [("a".to_owned(), value)].into_iter().collect(),
            })),
        };
    }
    prost_types::Struct {
        fields: [("deep".to_owned(), value)].into_iter().collect(),
    }
}

fn with_number(n: f64) -> pb::Event {
    let mut event = track("numbers", "signup", "", &json!({}));
    event.properties = Some(prost_types::Struct {
        fields: [(
            "n".to_owned(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(n)),
            },
        )]
        .into_iter()
        .collect(),
    });
    event
}

pub fn cases() -> Vec<Case> {
    let mut cases = unary_cases();
    cases.extend(too_deep_cases());
    cases.extend(stream_cases());
    cases
}

/// A refusal's message, replaced by its length when it is not one short line (prost's decode
/// trace is about a kilobyte for 40 levels).
fn short(got: Got) -> Got {
    if got.message.len() > 200 {
        let length = got.message.len();
        Got::new(got.status, format!("a message of {length} characters"))
    } else {
        got
    }
}

/// Unary messages nested past the decoder's limit, on the data plane (`Track`) and the control
/// plane (`TestFunction`): INVALID_ARGUMENT naming the problem and the field, in one line.
fn too_deep_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for depth in [40, 200] {
        cases.push(case(
            format!("a unary Track with properties nested {depth} deep"),
            "InvalidArgument",
            "could not be decoded: it is nested too deeply (at most 100 levels of messages), in Event.properties",
            move |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.grpc).await?;
                let mut event = track("deep", "signup", "", &json!({}));
                event.properties = Some(deep_struct(depth));
                Ok(short(Got::grpc(client.track(keyed(event, &ctx.key)?).await)))
            },
        ));
        cases.push(case(
            format!("a TestFunction payload nested {depth} deep"),
            "InvalidArgument",
            "could not be decoded: it is nested too deeply (at most 100 levels of messages), in TestFunctionRequest.payload",
            move |ctx: Arc<Ctx>| async move {
                let request = pb::TestFunctionRequest {
                    code: "export async function onTrack() {}".to_owned(),
                    payload: Some(deep_struct(depth)),
                    ..Default::default()
                };
                Ok(short(Got::grpc(
                    ctx.c().destinations.test_function(request).await,
                )))
            },
        ));
    }
    cases
}

fn unary_cases() -> Vec<Case> {
    // `deep_struct(n)` is n + 1 levels: the properties object holds the nest.
    let deep = |nest: usize| {
        let mut event = track(&format!("deep-{nest}"), "probe", "", &json!({}));
        event.properties = Some(deep_struct(nest));
        event
    };
    let mut typeless = track("typeless", "probe", "", &json!({}));
    typeless.r#type = 0;
    let mut unknown_type = track("unknown-type", "signup", "", &json!({}));
    unknown_type.r#type = 99;
    let mut bad_nanos = track("nanos", "signup", "", &json!({}));
    bad_nanos.timestamp = Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 2_000_000_000,
    });
    let mut far_future = track("future", "probe", "", &json!({}));
    far_future.timestamp = Some(prost_types::Timestamp {
        seconds: 400_000_000_000,
        nanos: 0,
    });
    let mut oversize_context = track("ctx", "signup", "", &json!({}));
    oversize_context.context = Some(json_to_struct(&json!({"blob": "c".repeat(40 * 1024)})));
    vec![
        unauthenticated("Track without a write key", None),
        unauthenticated(
            "Track with an unknown x-write-key",
            Some(("x-write-key", "wk_nope".to_owned())),
        ),
        unauthenticated(
            "Track with a Bearer token",
            Some(("authorization", "Bearer {key}".to_owned())),
        ),
        case(
            "Track with the revoked source's key",
            "Unauthenticated",
            "write key",
            |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.grpc).await?;
                Ok(Got::grpc(
                    client
                        .track(keyed(track("u1", "signup", "", &json!({})), &ctx.revoked)?)
                        .await,
                ))
            },
        ),
        unary(
            "Track without a user id",
            "InvalidArgument",
            "user_id",
            track("", "signup", "", &json!({})),
        ),
        unary(
            "Track without an event name",
            "InvalidArgument",
            "event: is required",
            track("u1", "", "", &json!({})),
        ),
        unary(
            "Track of type UNSPECIFIED is a track",
            "ACCEPTED",
            "",
            typeless,
        ),
        unary(
            "Track of an unknown type 99",
            "InvalidArgument",
            "type",
            unknown_type,
        ),
        case(
            "Identify carrying a track event",
            "InvalidArgument",
            "type: this call takes IDENTIFY events only",
            |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.grpc).await?;
                let mut event = identify("u1", "", &json!({}));
                event.r#type = pb::EventType::Track as i32;
                Ok(Got::grpc(client.identify(keyed(event, &ctx.key)?).await))
            },
        ),
        unary(
            "a user id of 10,000 characters",
            "InvalidArgument",
            "user_id",
            track(&"u".repeat(10_000), "signup", "", &json!({})),
        ),
        unary(
            "a message id of 5,000 characters",
            "InvalidArgument",
            "message_id",
            track("u1", "signup", &"m".repeat(5_000), &json!({})),
        ),
        unary(
            "an event name of 5,000 characters",
            "InvalidArgument",
            "event",
            track("u1", &"e".repeat(5_000), "", &json!({})),
        ),
        unary(
            "properties over 32 KB",
            "InvalidArgument",
            "at most 32768 are accepted",
            track("u1", "signup", "", &json!({"blob": "x".repeat(33 * 1024)})),
        ),
        unary(
            "a context over 32 KB",
            "InvalidArgument",
            "at most 32768 are accepted",
            oversize_context,
        ),
        unary("properties nested 24 deep", "ACCEPTED", "", deep(23)),
        unary(
            "properties nested 25 deep, past the stored depth",
            "InvalidArgument",
            "properties: is nested 25 levels deep (objects and arrays); at most 24 are accepted",
            deep(24),
        ),
        unary(
            "a NaN property",
            "InvalidArgument",
            "properties",
            with_number(f64::NAN),
        ),
        unary(
            "an infinite property",
            "InvalidArgument",
            "properties",
            with_number(f64::INFINITY),
        ),
        unary(
            "timestamp nanos out of range",
            "InvalidArgument",
            "timestamp",
            bad_nanos,
        ),
        unary(
            "a timestamp in the year 14,000 is kept as sent",
            "ACCEPTED",
            "",
            far_future,
        ),
        unary(
            "a user id with a trailing space is its own profile",
            "ACCEPTED",
            "",
            track("grpc-pad ", "probe", "", &json!({})),
        ),
        unary(
            "a user id with a NUL is an id",
            "ACCEPTED",
            "",
            track("nul\0user", "probe", "", &json!({})),
        ),
        case(
            "Batch of 2,501 events",
            "InvalidArgument",
            "2500",
            |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.grpc).await?;
                let events = vec![track("u1", "signup", "", &json!({})); 2501];
                Ok(Got::grpc(
                    client
                        .batch(keyed(pb::BatchRequest { events }, &ctx.key)?)
                        .await,
                ))
            },
        ),
        case(
            "Batch with one bad event rejects that event only",
            "Ok",
            "events[1].user_id: user_id or anonymous_id is required",
            |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.grpc).await?;
                let events = vec![
                    track("batch-ok", "signup", "", &json!({})),
                    track("", "signup", "", &json!({})),
                ];
                Ok(Got::grpc(
                    client
                        .batch(keyed(pb::BatchRequest { events }, &ctx.key)?)
                        .await,
                ))
            },
        ),
        case(
            "an empty Batch",
            "Ok",
            "results: []",
            |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.grpc).await?;
                Ok(Got::grpc(
                    client
                        .batch(keyed(pb::BatchRequest { events: vec![] }, &ctx.key)?)
                        .await,
                ))
            },
        ),
        case(
            "a 5 MB unary message",
            "OutOfRange",
            "decoded message length too large",
            |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.grpc).await?;
                let event = track("u1", "signup", "", &json!({"blob": "x".repeat(5 << 20)}));
                Ok(Got::grpc(client.track(keyed(event, &ctx.key)?).await))
            },
        ),
        case(
            "an overloaded engine rejects a Track as retryable",
            "REJECTED",
            "overloaded",
            |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.overloaded_grpc).await?;
                let ack = client
                    .track(keyed(track("u1", "signup", "", &json!({})), &ctx.key)?)
                    .await?
                    .into_inner();
                Ok(Got::ack(&ack))
            },
        ),
    ]
}

/// Opens a stream with `key` on `addr`, sends `requests`, closes, and reads until the end: the
/// acks, then the stream's end (`"Ok"` or its error code and message).
async fn stream(
    addr: std::net::SocketAddr,
    key: &str,
    requests: Vec<pb::IngestRequest>,
) -> anyhow::Result<(Vec<pb::Ack>, Got)> {
    let mut client = client(addr).await?;
    let mut responses = client
        .ingest(keyed(tokio_stream::iter(requests), key)?)
        .await?
        .into_inner();
    let mut acks = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), responses.message()).await {
            Err(_) => return Ok((acks, Got::new("hung", "no end within 30 s"))),
            Ok(Ok(Some(reply))) => acks.extend(reply.acks),
            Ok(Ok(None)) => return Ok((acks, Got::new("Ok", ""))),
            Ok(Err(status)) => {
                return Ok((
                    acks,
                    Got::new(format!("{:?}", status.code()), status.message()),
                ));
            }
        }
    }
}

fn one(event: pb::Event) -> pb::IngestRequest {
    pb::IngestRequest {
        payload: Some(pb::ingest_request::Payload::Event(event)),
    }
}

/// `acks` as `id=STATUS` pairs.
fn summary(acks: &[pb::Ack]) -> String {
    let mut text = acks
        .iter()
        .take(5)
        .map(|a| format!("{}={}", a.message_id, Got::ack(a).status))
        .collect::<Vec<_>>()
        .join(",");
    if acks.len() > 5 {
        let rest = &acks[1..];
        let rejected = rest
            .iter()
            .filter(|a| a.status == pb::AckStatus::Rejected as i32)
            .count();
        text.push_str(&format!(
            " … after the first, {} more: {rejected} REJECTED",
            rest.len()
        ));
    }
    text
}

/// A stream case: `requests` after a good event `s-<name>-before`; the got message lists the
/// acks then the end.
fn stream_case(name: &str, status: &str, message: &str, requests: Vec<pb::IngestRequest>) -> Case {
    let tag = name.replace(' ', "-");
    let requests = Arc::new(requests);
    case(name, status, message, move |ctx: Arc<Ctx>| {
        let before = format!("s-{tag}-before");
        let mut all = vec![one(track(&before, "probe", &before, &json!({})))];
        all.extend(requests.iter().cloned());
        async move {
            let (acks, end) = stream(ctx.grpc, &ctx.key, all).await?;
            if acks.first().is_some_and(|a| {
                a.message_id == before && a.status == pb::AckStatus::Accepted as i32
            }) {
                ctx.sent(&before);
            }
            Ok(Got::new(
                end.status,
                format!("{} | {}", summary(&acks), end.message),
            ))
        }
    })
}

fn stream_cases() -> Vec<Case> {
    let mut deep = track("s-deep", "signup", "s-deep", &json!({}));
    deep.properties = Some(deep_struct(150));
    let after = || one(track("s-after", "signup", "s-after", &json!({})));
    vec![
        stream_case(
            "a stream message over 4 MB ends the stream with an error",
            "ResourceExhausted",
            "could not be read",
            vec![
                one(track(
                    "s-huge",
                    "signup",
                    "s-huge",
                    &json!({"blob": "x".repeat(5 << 20)}),
                )),
                after(),
            ],
        ),
        stream_case(
            "a stream message nested too deep ends the stream with an error",
            "InvalidArgument",
            "could not be read (the message could not be decoded: it is nested too deeply",
            vec![one(deep), after()],
        ),
        stream_case(
            "a stream request without a payload is skipped",
            "Ok",
            "before=ACCEPTED | ",
            vec![pb::IngestRequest { payload: None }],
        ),
        stream_case(
            "bad events in a stream are rejected one by one and the stream goes on",
            "Ok",
            "s-no-event=REJECTED,s-good=ACCEPTED",
            vec![
                one(track("", "signup", "s-no-user", &json!({}))),
                one(track("u1", "", "s-no-event", &json!({}))),
                one(track("s-good", "signup", "s-good", &json!({}))),
            ],
        ),
        stream_case(
            "an oversize batch in a stream is rejected per event",
            "Ok",
            "2501 more: 2501 REJECTED",
            vec![pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Batch(pb::EventBatch {
                    events: vec![track("u1", "signup", "", &json!({})); 2501],
                })),
            }],
        ),
        stream_case(
            "an empty batch in a stream",
            "Ok",
            "",
            vec![pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Batch(pb::EventBatch {
                    events: vec![],
                })),
            }],
        ),
        case(
            "the same message id from two sources applies in each; resent, a duplicate",
            "Ok",
            "ACCEPTED ACCEPTED DUPLICATE",
            |ctx: Arc<Ctx>| async move {
                let event = || one(track("cross-source", "probe", "cross-1", &json!({})));
                let (a, _) = stream(ctx.grpc, &ctx.key, vec![event()]).await?;
                let (b, _) = stream(ctx.grpc, &ctx.key2, vec![event()]).await?;
                let (c, end) = stream(ctx.grpc, &ctx.key, vec![event()]).await?;
                for ack in a.iter().chain(&b) {
                    if ack.status == pb::AckStatus::Accepted as i32 {
                        ctx.sent("cross-source");
                    }
                }
                let statuses: Vec<String> = a
                    .iter()
                    .chain(&b)
                    .chain(&c)
                    .map(|x| Got::ack(x).status)
                    .collect();
                Ok(Got::new(end.status, statuses.join(" ")))
            },
        ),
        case(
            "a stream to an overloaded engine rejects as retryable",
            "Ok",
            "overloaded",
            |ctx: Arc<Ctx>| async move {
                let (acks, end) = stream(
                    ctx.overloaded_grpc,
                    &ctx.key,
                    vec![one(track("u1", "signup", "ov-1", &json!({})))],
                )
                .await?;
                Ok(Got::new(
                    end.status,
                    acks.iter()
                        .map(|a| format!("{}:{}", Got::ack(a).status, a.code))
                        .collect::<String>(),
                ))
            },
        ),
        case(
            "a stream with a revoked key",
            "Unauthenticated",
            "write key",
            |ctx: Arc<Ctx>| async move {
                let mut client = client(ctx.grpc).await?;
                let opened = IngestStream::open(&mut client, &ctx.revoked).await;
                Ok(match opened {
                    Err(err) => match err.downcast_ref::<tonic::Status>() {
                        Some(status) => Got::new(format!("{:?}", status.code()), status.message()),
                        None => Got::new("error", err.to_string()),
                    },
                    Ok(mut stream) => match stream.next_acks().await {
                        Err(err) => Got::new("Unauthenticated", err.to_string()),
                        Ok(_) => Got::new("Ok", "opened"),
                    },
                })
            },
        ),
    ]
}
