//! The Segment-compatible HTTP API: bad JSON, wrong types in every field, missing and
//! oversize ids, size, depth and batch limits, gzip, write keys in every place, numbers
//! beyond 2^53, trailing-space ids, and an overloaded engine.

use std::sync::Arc;

use journeys_proto::v1 as pb;
use serde_json::{Value, json};

use super::{Case, Ctx, Got, case, keyed, post_request, raw};

/// Which write key a request carries.
#[derive(Clone, Debug)]
pub enum Auth {
    /// The key of source `web` as Basic user name.
    Key,
    /// The key of the revoked source.
    Revoked,
    /// No `authorization` header.
    None,
    /// This `authorization` header as is.
    Header(String),
}

fn headers(ctx: &Ctx, auth: &Auth) -> Vec<(&'static str, String)> {
    match auth {
        Auth::Key => keyed(&ctx.key),
        Auth::Revoked => keyed(&ctx.revoked),
        Auth::None => Vec::new(),
        Auth::Header(value) => vec![("authorization", value.clone())],
    }
}

/// A POST of `body` to `path` with `auth` and `extra` headers.
fn segment_with(
    name: impl Into<String>,
    path: &'static str,
    auth: Auth,
    extra: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: &str,
    message: &str,
) -> Case {
    let body = Arc::new(body);
    case(name, status, message, move |ctx: Arc<Ctx>| {
        let mut all = headers(&ctx, &auth);
        all.extend(extra.iter().cloned());
        let body = body.clone();
        async move { Ok(raw(ctx.http, post_request(path, &all, &body)).await) }
    })
}

/// A POST of `body` to `path` with the `web` source's key.
fn segment(
    name: impl Into<String>,
    path: &'static str,
    body: Vec<u8>,
    status: &str,
    message: &str,
) -> Case {
    segment_with(name, path, Auth::Key, Vec::new(), body, status, message)
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// A JSON value nested `depth` levels deep (`{"a":{"a":…}}`), as text.
pub fn nested(depth: usize) -> String {
    let mut text = String::with_capacity(depth * 6 + 2);
    for _ in 0..depth {
        text.push_str("{\"a\":");
    }
    text.push('1');
    for _ in 0..depth {
        text.push('}');
    }
    text
}

pub fn cases() -> Vec<Case> {
    let mut cases = malformed_bodies();
    cases.extend(wrong_types());
    cases.extend(missing_and_oversize());
    cases.extend(write_keys());
    cases.extend(encodings());
    cases.extend(numbers_and_ids());
    cases.extend(overloaded());
    cases
}

fn malformed_bodies() -> Vec<Case> {
    let track = |raw_body: &[u8]| raw_body.to_vec();
    let mut bad_utf8 = b"{\"userId\":\"u".to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(b"\",\"event\":\"signup\"}");
    vec![
        segment(
            "truncated JSON",
            "/v1/track",
            track(b"{\"userId\": \"u1\", "),
            "400",
            "invalid_json",
        ),
        segment(
            "a JSON array body",
            "/v1/batch",
            track(b"[1, 2]"),
            "400",
            "must be a JSON object, not an array",
        ),
        segment(
            "a JSON string body",
            "/v1/track",
            track(b"\"hello\""),
            "400",
            "invalid_json",
        ),
        segment(
            "a JSON null body",
            "/v1/identify",
            track(b"null"),
            "400",
            "invalid_json",
        ),
        segment(
            "an empty body",
            "/v1/track",
            Vec::new(),
            "400",
            "invalid_json",
        ),
        segment(
            "whitespace only",
            "/v1/page",
            track(b"   \n  "),
            "400",
            "invalid_json",
        ),
        segment(
            "trailing garbage after the object",
            "/v1/track",
            track(b"{\"userId\":\"u1\",\"event\":\"signup\"} x"),
            "400",
            "invalid_json",
        ),
        segment(
            "two objects",
            "/v1/track",
            track(b"{\"userId\":\"u1\",\"event\":\"a\"}{\"userId\":\"u1\",\"event\":\"b\"}"),
            "400",
            "invalid_json",
        ),
        segment(
            "a duplicated key: the last one wins, as in JavaScript",
            "/v1/track",
            track(b"{\"userId\":\"u1\",\"userId\":\"u2\",\"event\":\"signup\"}"),
            "200",
            "success",
        ),
        segment(
            "invalid UTF-8 in a string",
            "/v1/track",
            bad_utf8,
            "400",
            "invalid_json",
        ),
        segment(
            "a lone surrogate escape",
            "/v1/track",
            track(br#"{"userId":"\ud800","event":"signup"}"#),
            "400",
            "invalid_json",
        ),
        segment(
            "a NUL byte outside strings",
            "/v1/track",
            track(b"{\"userId\":\"u1\",\0\"event\":\"signup\"}"),
            "400",
            "invalid_json",
        ),
        segment(
            "single-quoted JSON",
            "/v1/track",
            track(b"{'userId':'u1','event':'signup'}"),
            "400",
            "invalid_json",
        ),
        segment(
            "a comment in JSON",
            "/v1/track",
            track(b"{\"userId\":\"u1\", /* c */ \"event\":\"signup\"}"),
            "400",
            "invalid_json",
        ),
        segment(
            "NaN as a property",
            "/v1/track",
            track(b"{\"userId\":\"u1\",\"event\":\"signup\",\"properties\":{\"n\":NaN}}"),
            "400",
            "invalid_json",
        ),
        segment(
            "a number beyond f64",
            "/v1/track",
            track(b"{\"userId\":\"u1\",\"event\":\"signup\",\"properties\":{\"n\":1e400}}"),
            "400",
            "invalid_json",
        ),
        segment(
            "nesting 10,000 deep",
            "/v1/track",
            nested(10_000).into_bytes(),
            "400",
            "recursion limit",
        ),
        segment(
            "properties nested 100 deep are parsed, then refused past the stored depth",
            "/v1/track",
            format!(
                "{{\"userId\":\"u1\",\"event\":\"signup\",\"properties\":{}}}",
                nested(100)
            )
            .into_bytes(),
            "400",
            "properties: is nested 100 levels deep (objects and arrays); at most 24 are accepted",
        ),
        segment(
            "traits nested 24 deep, the most that is kept",
            "/v1/identify",
            format!("{{\"userId\":\"deep-traits\",\"traits\":{}}}", nested(24)).into_bytes(),
            "200",
            "success",
        ),
        segment(
            "properties nested 130 deep",
            "/v1/track",
            format!(
                "{{\"userId\":\"u1\",\"event\":\"signup\",\"properties\":{}}}",
                nested(130)
            )
            .into_bytes(),
            "400",
            "recursion limit",
        ),
        segment(
            "a batch that is not an array",
            "/v1/batch",
            bytes(&json!({"batch": {"type": "track"}})),
            "400",
            "batch",
        ),
        segment(
            "a batch item that is not an object",
            "/v1/batch",
            bytes(&json!({"batch": [1]})),
            "400",
            "batch[0]",
        ),
        segment(
            "a batch without items",
            "/v1/batch",
            bytes(&json!({})),
            "400",
            "missing_batch",
        ),
        segment(
            "an unknown type in a batch",
            "/v1/batch",
            bytes(&json!({"batch": [{"type": "explode", "userId": "u1"}]})),
            "400",
            "invalid_type",
        ),
        segment(
            "a batch item without its type",
            "/v1/batch",
            bytes(&json!({"batch": [{"userId": "u1", "event": "signup"}]})),
            "400",
            "missing_type",
        ),
        segment(
            "one bad item refuses the whole batch",
            "/v1/batch",
            bytes(&json!({"batch": [
                {"type": "track", "userId": "whole-1", "event": "signup"},
                {"type": "track", "userId": "whole-2"}
            ]})),
            "400",
            "batch[1]",
        ),
    ]
}

/// Each field of a Segment call, given values of the wrong JSON type.
fn wrong_types() -> Vec<Case> {
    let fields: [(&str, &'static str, Value); 16] = [
        ("userId", "/v1/track", json!({"id": 1})),
        ("userId", "/v1/identify", json!(["u1"])),
        ("userId", "/v1/track", json!(true)),
        ("anonymousId", "/v1/page", json!({"a": 1})),
        ("messageId", "/v1/track", json!(["m"])),
        ("event", "/v1/track", json!(5)),
        ("event", "/v1/track", json!({"name": "signup"})),
        ("properties", "/v1/track", json!("plan=pro")),
        ("properties", "/v1/screen", json!([1, 2])),
        ("traits", "/v1/identify", json!("vip")),
        ("traits", "/v1/group", json!(7)),
        ("context", "/v1/track", json!(12)),
        ("timestamp", "/v1/track", json!(1_700_000_000)),
        ("timestamp", "/v1/track", json!("yesterday")),
        ("groupId", "/v1/group", json!({"g": 1})),
        ("previousId", "/v1/alias", json!([1])),
    ];
    fields
        .into_iter()
        .map(|(field, path, value)| {
            let mut body = json!({
                "userId": "typed", "event": "signup", "groupId": "g1", "previousId": "p1"
            });
            body[field] = value.clone();
            let kind = if field == "timestamp" && value.is_string() {
                "invalid_timestamp"
            } else {
                field
            };
            segment(
                format!("{path} with {field} = {value}"),
                path,
                bytes(&body),
                "400",
                kind,
            )
        })
        .collect()
}

fn missing_and_oversize() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        "/v1/track",
        "/v1/identify",
        "/v1/page",
        "/v1/screen",
        "/v1/group",
        "/v1/alias",
    ]
    .into_iter()
    .map(|path| {
        segment(
            format!("{path} without userId or anonymousId"),
            path,
            bytes(&json!({"event": "signup", "groupId": "g", "previousId": "p"})),
            "400",
            "missing_user_id",
        )
    })
    .collect();
    let big = "x".repeat(33 * 1024);
    let heavy: Vec<Value> = (0..20)
        .map(|i| json!({"type": "track", "userId": format!("heavy{i}"), "event": "signup", "properties": {"blob": "y".repeat(30 * 1024)}}))
        .collect();
    let many: Vec<Value> = (0..2501)
        .map(|i| json!({"type": "track", "userId": format!("many{i}"), "event": "signup"}))
        .collect();
    let wide: Vec<u32> = (0..20_000).collect();
    cases.extend([
        segment(
            "empty userId and anonymousId",
            "/v1/identify",
            bytes(&json!({"userId": "", "anonymousId": "", "traits": {"a": 1}})),
            "400",
            "missing_user_id",
        ),
        segment(
            "a blank userId is an id, as in Segment",
            "/v1/track",
            bytes(&json!({"userId": "   ", "event": "signup"})),
            "200",
            "success",
        ),
        segment(
            "a track without event",
            "/v1/track",
            bytes(&json!({"userId": "u1"})),
            "400",
            "missing_event",
        ),
        segment(
            "an empty event name",
            "/v1/track",
            bytes(&json!({"userId": "u1", "event": ""})),
            "400",
            "missing_event",
        ),
        segment(
            "a group without groupId",
            "/v1/group",
            bytes(&json!({"userId": "u1"})),
            "400",
            "missing_group_id",
        ),
        segment(
            "an alias without previousId",
            "/v1/alias",
            bytes(&json!({"userId": "u1"})),
            "400",
            "missing_previous_id",
        ),
        segment(
            "a userId of 10,000 characters",
            "/v1/track",
            bytes(&json!({"userId": "u".repeat(10_000), "event": "signup"})),
            "400",
            "userId",
        ),
        segment(
            "a messageId of 5,000 characters",
            "/v1/track",
            bytes(&json!({"userId": "u1", "event": "signup", "messageId": "m".repeat(5_000)})),
            "400",
            "messageId",
        ),
        segment(
            "an event name of 5,000 characters",
            "/v1/track",
            bytes(&json!({"userId": "u1", "event": "e".repeat(5_000)})),
            "400",
            "event",
        ),
        segment(
            "an event over 32 KB",
            "/v1/track",
            bytes(&json!({"userId": "u1", "event": "signup", "properties": {"blob": big}})),
            "400",
            "event_too_large",
        ),
        segment(
            "a request over 500 KB",
            "/v1/batch",
            bytes(&json!({"batch": heavy})),
            "400",
            "request_too_large",
        ),
        segment(
            "a batch of 2,501 events",
            "/v1/batch",
            bytes(&json!({"batch": many})),
            "400",
            "too_many_events",
        ),
        segment(
            "an array of 20,000 numbers",
            "/v1/track",
            bytes(&json!({"userId": "u1", "event": "signup", "properties": {"wide": wide}})),
            "400",
            "event_too_large",
        ),
        segment(
            "a body of 5 MB",
            "/v1/track",
            format!(
                "{{\"userId\":\"u1\",\"event\":\"signup\",\"properties\":{{\"b\":\"{}\"}}}}",
                "z".repeat(5 << 20)
            )
            .into_bytes(),
            "400",
            "request_too_large",
        ),
    ]);
    cases
}

fn write_keys() -> Vec<Case> {
    let good = bytes(&json!({"userId": "wk-user", "event": "signup"}));
    let garbage_after_key = b"{\"writeKey\":\"wk_nope\", \"userId\": [[[[[".to_vec();
    let mut oversize_bad_key = b"{\"writeKey\":\"wk_nope\",\"pad\":\"".to_vec();
    oversize_bad_key.extend(std::iter::repeat_n(b'p', 600 * 1024));
    oversize_bad_key.extend_from_slice(b"\"}");
    vec![
        segment_with(
            "no write key",
            "/v1/track",
            Auth::None,
            vec![],
            good.clone(),
            "401",
            "write key",
        ),
        segment_with(
            "an unknown write key",
            "/v1/track",
            Auth::Header(journeys_tests::http::basic_auth("wk_unknown")),
            vec![],
            good.clone(),
            "401",
            "write key",
        ),
        segment_with(
            "a revoked write key",
            "/v1/track",
            Auth::Revoked,
            vec![],
            good.clone(),
            "401",
            "write key",
        ),
        segment_with(
            "Basic auth that is not base64",
            "/v1/track",
            Auth::Header("Basic %%%not-base64".to_owned()),
            vec![],
            good.clone(),
            "401",
            "write key",
        ),
        segment_with(
            "a Bearer token instead of Basic",
            "/v1/track",
            Auth::Header("Bearer something".to_owned()),
            vec![],
            good.clone(),
            "401",
            "write key",
        ),
        segment_with(
            "an empty Basic user name",
            "/v1/track",
            Auth::Header(journeys_tests::http::basic_auth("")),
            vec![],
            good.clone(),
            "401",
            "write key",
        ),
        segment_with(
            "a write key with 64 KB of padding",
            "/v1/track",
            Auth::Header(journeys_tests::http::basic_auth(&"k".repeat(40_000))),
            vec![],
            good,
            "401",
            "write key",
        ),
        segment_with(
            "an unknown writeKey in the body",
            "/v1/track",
            Auth::None,
            vec![],
            bytes(&json!({"writeKey": "wk_nope", "userId": "u1", "event": "signup"})),
            "401",
            "write key",
        ),
        segment_with(
            "a writeKey of the wrong type",
            "/v1/track",
            Auth::None,
            vec![],
            bytes(&json!({"writeKey": 12, "userId": "u1", "event": "signup"})),
            "400",
            "writeKey",
        ),
        segment_with(
            "a bad writeKey before malformed JSON",
            "/v1/track",
            Auth::None,
            vec![],
            garbage_after_key,
            "401",
            "write key",
        ),
        segment_with(
            "a bad writeKey in an oversize body is refused unparsed",
            "/v1/track",
            Auth::None,
            vec![],
            oversize_bad_key,
            "400",
            "request_too_large",
        ),
        case(
            "a bad header key before an oversize body",
            "401",
            "write key",
            |ctx: Arc<Ctx>| async move {
                let body = vec![b' '; 2 << 20];
                Ok(raw(
                    ctx.http,
                    post_request("/v1/batch", &keyed("wk_nope"), &body),
                )
                .await)
            },
        ),
        case(
            "the write key with a trailing space",
            "401",
            "write key",
            |ctx: Arc<Ctx>| async move {
                let key = format!("{} ", ctx.key);
                let body = bytes(&json!({"userId": "u1", "event": "signup"}));
                Ok(raw(ctx.http, post_request("/v1/track", &keyed(&key), &body)).await)
            },
        ),
        case(
            "the valid writeKey in the body",
            "200",
            "success",
            |ctx: Arc<Ctx>| async move {
                let body = bytes(
                    &json!({"writeKey": ctx.key, "userId": "body-key-user", "event": "probe"}),
                );
                let got = raw(ctx.http, post_request("/v1/track", &[], &body)).await;
                if got.status == "200" {
                    ctx.sent("body-key-user");
                }
                Ok(got)
            },
        ),
    ]
}

fn encodings() -> Vec<Case> {
    let event = bytes(&json!({"userId": "gz-user", "event": "probe"}));
    let gzipped = journeys_tests::http::gzip(&event).unwrap();
    let bomb = journeys_tests::http::gzip(&vec![b' '; 64 << 20]).unwrap();
    let mut truncated = gzipped.clone();
    truncated.truncate(gzipped.len() / 2);
    let gz = || vec![("content-encoding", "gzip".to_owned())];
    vec![
        case(
            "a gzip body is decoded",
            "200",
            "success",
            move |ctx: Arc<Ctx>| {
                let body = gzipped.clone();
                async move {
                    let mut headers = keyed(&ctx.key);
                    headers.push(("content-encoding", "gzip".to_owned()));
                    let got = raw(ctx.http, post_request("/v1/track", &headers, &body)).await;
                    if got.status == "200" {
                        ctx.sent("gz-user");
                    }
                    Ok(got)
                }
            },
        ),
        segment_with(
            "a gzip bomb (64 MB of spaces)",
            "/v1/track",
            Auth::Key,
            gz(),
            bomb,
            "400",
            "request_too_large",
        ),
        segment_with(
            "gzip that is not gzip",
            "/v1/track",
            Auth::Key,
            gz(),
            event.clone(),
            "400",
            "invalid_gzip",
        ),
        segment_with(
            "truncated gzip",
            "/v1/track",
            Auth::Key,
            gz(),
            truncated,
            "400",
            "invalid_gzip",
        ),
        segment_with(
            "brotli",
            "/v1/track",
            Auth::Key,
            vec![("content-encoding", "br".to_owned())],
            event,
            "415",
            "unsupported_encoding",
        ),
        segment_with(
            "a chunked body with a bad chunk size",
            "/v1/track",
            Auth::Key,
            vec![("transfer-encoding", "chunked".to_owned())],
            b"zz\r\n{}\r\n0\r\n\r\n".to_vec(),
            "400",
            "",
        ),
        segment_with(
            "a text/plain content type is read as JSON",
            "/v1/track",
            Auth::Key,
            vec![("content-type", "text/plain".to_owned())],
            bytes(&json!({"userId": "ct-user", "event": "signup"})),
            "200",
            "success",
        ),
    ]
}

/// Numbers as ids beyond 2^53 stay distinct; ids that differ by trailing spaces stay distinct;
/// a message id with a trailing space is another message.
fn numbers_and_ids() -> Vec<Case> {
    vec![
        case(
            "numeric userIds beyond 2^53 stay distinct",
            "200",
            "distinct",
            |ctx: Arc<Ctx>| async move {
                for (id, plan) in [("9007199254740993", "odd"), ("9007199254740992", "even")] {
                    let body = format!("{{\"userId\":{id},\"traits\":{{\"plan\":\"{plan}\"}}}}");
                    let got = raw(
                        ctx.http,
                        post_request("/v1/identify", &keyed(&ctx.key), body.as_bytes()),
                    )
                    .await;
                    if got.status != "200" {
                        return Ok(got);
                    }
                    ctx.acked(id);
                }
                let traits = profile_traits(&ctx, "9007199254740993").await?;
                Ok(Got::new(
                    "200",
                    if traits.contains("odd") && !traits.contains("even") {
                        "distinct"
                    } else {
                        "merged"
                    },
                ))
            },
        ),
        segment(
            "a fractional numeric userId",
            "/v1/identify",
            b"{\"userId\":1.5,\"traits\":{}}".to_vec(),
            "400",
            "userId",
        ),
        case(
            "userIds that differ by a trailing space stay distinct",
            "200",
            "distinct",
            |ctx: Arc<Ctx>| async move {
                for (id, nickname) in [("pad", "plain"), ("pad ", "spaced")] {
                    let body = bytes(&json!({"userId": id, "traits": {"nickname": nickname}}));
                    let got = raw(
                        ctx.http,
                        post_request("/v1/identify", &keyed(&ctx.key), &body),
                    )
                    .await;
                    if got.status != "200" {
                        return Ok(got);
                    }
                    ctx.acked(id);
                }
                let traits = profile_traits(&ctx, "pad").await?;
                Ok(Got::new(
                    "200",
                    if traits.contains("plain") {
                        "distinct".to_owned()
                    } else {
                        traits
                    },
                ))
            },
        ),
        case(
            "a messageId with a trailing space is another message",
            "200",
            "applied twice",
            |ctx: Arc<Ctx>| async move {
                for (id, v) in [("tm-1", 1), ("tm-1 ", 2)] {
                    let body =
                        bytes(&json!({"userId": "msg-pad", "messageId": id, "traits": {"v": v}}));
                    let got = raw(
                        ctx.http,
                        post_request("/v1/identify", &keyed(&ctx.key), &body),
                    )
                    .await;
                    if got.status != "200" {
                        return Ok(got);
                    }
                }
                ctx.acked("msg-pad");
                let traits = profile_traits(&ctx, "msg-pad").await?;
                Ok(Got::new(
                    "200",
                    if traits.contains("\"v\": Number(2.0)") || traits.contains("NumberValue(2.0)")
                    {
                        "applied twice".to_owned()
                    } else {
                        traits
                    },
                ))
            },
        ),
        case(
            "a resent messageId is a success, applied once",
            "200",
            "success",
            |ctx: Arc<Ctx>| async move {
                let body =
                    bytes(&json!({"userId": "resent", "messageId": "same-1", "event": "probe"}));
                let first = raw(ctx.http, post_request("/v1/track", &keyed(&ctx.key), &body)).await;
                if first.status != "200" {
                    return Ok(first);
                }
                ctx.sent("resent");
                Ok(raw(ctx.http, post_request("/v1/track", &keyed(&ctx.key), &body)).await)
            },
        ),
        case(
            "the same messageId from two sources applies in each",
            "200",
            "both",
            |ctx: Arc<Ctx>| async move {
                for (key, v) in [(ctx.key.clone(), 1), (ctx.key2.clone(), 2)] {
                    let body = bytes(
                        &json!({"userId": "two-sources", "messageId": "shared-1", "traits": {"v": v}}),
                    );
                    let got =
                        raw(ctx.http, post_request("/v1/identify", &keyed(&key), &body)).await;
                    if got.status != "200" {
                        return Ok(got);
                    }
                }
                ctx.acked("two-sources");
                let traits = profile_traits(&ctx, "two-sources").await?;
                Ok(Got::new(
                    "200",
                    if traits.contains("2.0") {
                        "both".to_owned()
                    } else {
                        traits
                    },
                ))
            },
        ),
    ]
}

/// The profile's traits, in debug form.
pub async fn profile_traits(ctx: &Ctx, user_id: &str) -> anyhow::Result<String> {
    let profile = ctx
        .c()
        .profiles
        .get_profile(pb::GetProfileRequest {
            user_id: user_id.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(format!("{:?}", profile.traits))
}

fn overloaded() -> Vec<Case> {
    let post = |name: &str, path: &'static str, body: Value| {
        case(name, "503", "retry-after", move |ctx: Arc<Ctx>| {
            let body = bytes(&body);
            async move {
                let got = raw(
                    ctx.overloaded_http,
                    post_request(path, &keyed(&ctx.key), &body),
                )
                .await;
                // The code and the header both: a Segment client retries on 503 with it.
                let ok = got.message.contains("overloaded");
                Ok(Got::new(
                    got.status,
                    if ok { got.message } else { String::new() },
                ))
            }
        })
    };
    vec![
        post(
            "an overloaded engine answers a track 503",
            "/v1/track",
            json!({"userId": "u1", "event": "signup"}),
        ),
        post(
            "an overloaded engine answers a batch 503",
            "/v1/batch",
            json!({"batch": [{"type": "track", "userId": "u1", "event": "signup"}]}),
        ),
        post(
            "an overloaded engine answers an identify 503",
            "/v1/identify",
            json!({"userId": "u1", "traits": {}}),
        ),
    ]
}
