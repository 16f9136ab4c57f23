//! Tests of the Segment request bodies: accepted shapes, and the field and reason of each refusal.

use chrono::TimeZone;
use serde_json::json;

use super::*;

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()
}

fn events(endpoint: Endpoint, body: &Json) -> Result<Vec<Event>, EventError> {
    let bytes = serde_json::to_vec(body).unwrap();
    Body::parse(&bytes)?.into_events(endpoint, now())
}

fn one(kind: EventType, body: &Json) -> Result<Event, EventError> {
    events(Endpoint::Single(kind), body).map(|mut e| e.remove(0))
}

#[test]
fn numeric_ids_are_kept_exactly_or_refused_never_rounded() {
    let parse = |text: &str| {
        let body: Json = serde_json::from_str(text).unwrap();
        one(EventType::Track, &body)
    };
    // Beyond 2^53 but within 64 bits: exact.
    let event = parse(r#"{"userId": 9007199254740993, "event": "e"}"#).unwrap();
    assert_eq!(event.user_id.as_deref(), Some("9007199254740993"));
    let event = parse(r#"{"userId": 18446744073709551615, "event": "e"}"#).unwrap();
    assert_eq!(event.user_id.as_deref(), Some("18446744073709551615"));
    // Beyond 64 bits, two neighbours would round to one float: refused, not merged.
    for text in [
        r#"{"userId": 123456789012345678901234, "event": "e"}"#,
        r#"{"userId": 123456789012345678901235, "event": "e"}"#,
        r#"{"anonymousId": 1.5, "event": "e"}"#,
    ] {
        let err = parse(text).unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongType, "{text}");
        assert!(
            err.to_string().contains("send this id as a string"),
            "{err}"
        );
    }
}

#[test]
fn track_keeps_what_was_sent() {
    let event = one(
        EventType::Track,
        &json!({
            "userId": "u1", "anonymousId": "a1", "messageId": "m1", "event": "Order Completed",
            "properties": {"total": 12.5}, "context": {"ip": "1.2.3.4"},
            "timestamp": "2024-05-01T12:00:00.250Z", "integrations": {"All": true}
        }),
    )
    .unwrap();
    assert_eq!(event.kind, EventType::Track);
    assert_eq!(event.message_id, "m1");
    assert_eq!(event.user_id.as_deref(), Some("u1"));
    assert_eq!(event.anonymous_id.as_deref(), Some("a1"));
    assert_eq!(event.event, "Order Completed");
    assert_eq!(event.properties, json!({"total": 12.5}));
    assert_eq!(event.context, json!({"ip": "1.2.3.4"}));
    assert_eq!(
        event.timestamp,
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::milliseconds(250)
    );
}

#[test]
fn defaults_fill_in_message_id_timestamp_and_empty_objects() {
    let event = one(EventType::Track, &json!({"anonymousId": 42, "event": "e"})).unwrap();
    assert_eq!(event.anonymous_id.as_deref(), Some("42"));
    assert!(uuid::Uuid::parse_str(&event.message_id).is_ok());
    assert_eq!(event.timestamp, now());
    assert_eq!(event.properties, json!({}));
    assert_eq!(event.traits, json!({}));
}

#[test]
fn identify_merges_context_traits_under_its_own() {
    let event = one(
        EventType::Identify,
        &json!({
            "userId": "u1",
            "traits": {"plan": "pro"},
            "context": {"traits": {"plan": "free", "email": "a@b.c"}}
        }),
    )
    .unwrap();
    assert_eq!(event.event, "identify");
    assert_eq!(event.traits, json!({"plan": "pro", "email": "a@b.c"}));
}

#[test]
fn page_screen_group_alias_move_their_fields_into_properties() {
    let page = one(
        EventType::Page,
        &json!({"userId": "u", "name": "Home", "category": "Docs", "properties": {"path": "/"}}),
    )
    .unwrap();
    assert_eq!(
        page.properties,
        json!({"path": "/", "name": "Home", "category": "Docs"})
    );
    let screen = one(EventType::Screen, &json!({"userId": "u", "name": "Cart"})).unwrap();
    assert_eq!(screen.properties, json!({"name": "Cart"}));
    let group = one(
        EventType::Group,
        &json!({"userId": "u", "groupId": "g1", "traits": {"seats": 5}}),
    )
    .unwrap();
    assert_eq!(group.properties, json!({"groupId": "g1"}));
    assert_eq!(group.traits, json!({"seats": 5}));
    let alias = one(EventType::Alias, &json!({"userId": "u", "previousId": "a"})).unwrap();
    assert_eq!(alias.properties, json!({"previousId": "a"}));

    let err = one(EventType::Group, &json!({"userId": "u"})).unwrap_err();
    assert_eq!(err.code, ErrorCode::MissingGroupId);
    let err = one(EventType::Alias, &json!({"userId": "u"})).unwrap_err();
    assert_eq!(err.code, ErrorCode::MissingPreviousId);
}

#[test]
fn batch_items_take_their_type_and_the_batch_context() {
    let events = events(
        Endpoint::Batch,
        &json!({
            "batch": [
                {"type": "track", "userId": "u", "event": "a", "context": {"ip": "9.9.9.9"}},
                {"type": "Identify", "userId": "u", "traits": {"x": 1}}
            ],
            "context": {"ip": "1.1.1.1", "library": {"name": "analytics-python"}},
            "sentAt": "2024-05-01T12:00:00Z"
        }),
    )
    .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventType::Track);
    assert_eq!(
        events[0].context,
        json!({"ip": "9.9.9.9", "library": {"name": "analytics-python"}})
    );
    assert_eq!(events[1].kind, EventType::Identify);
    assert_eq!(events[1].traits, json!({"x": 1}));
}

#[test]
#[allow(clippy::too_many_lines)] // a table of cases
fn each_problem_names_its_field() {
    let cases = [
        (
            Endpoint::Single(EventType::Track),
            json!({"userId": "u", "event": "e", "properties": [1]}),
            ErrorCode::WrongType,
            "properties: must be an object, not an array",
        ),
        (
            Endpoint::Single(EventType::Track),
            json!({"userId": "u"}),
            ErrorCode::MissingEvent,
            "event: is required for track",
        ),
        (
            Endpoint::Single(EventType::Track),
            json!({"event": "e", "userId": ""}),
            ErrorCode::MissingUserId,
            "userId: userId or anonymousId is required",
        ),
        (
            Endpoint::Single(EventType::Track),
            json!({"userId": "u", "event": "e", "timestamp": "yesterday"}),
            ErrorCode::InvalidTimestamp,
            "timestamp: 'yesterday' is not an ISO 8601 date-time (e.g. 2024-05-01T12:00:00Z)",
        ),
        (
            Endpoint::Single(EventType::Identify),
            json!({"userId": "u", "traits": "x"}),
            ErrorCode::WrongType,
            "traits: must be an object, not a string",
        ),
        (
            Endpoint::Single(EventType::Track),
            json!({"userId": true, "event": "e"}),
            ErrorCode::WrongType,
            "userId: must be a string or a number, not a boolean",
        ),
        (
            Endpoint::Batch,
            json!({"batch": [{"type": "track", "userId": "u", "event": "e"}, {"userId": "u"}]}),
            ErrorCode::MissingType,
            "batch[1].type: is required: track, identify, page, screen, group or alias",
        ),
        (
            Endpoint::Batch,
            json!({"batch": [{"type": "click", "userId": "u"}]}),
            ErrorCode::InvalidType,
            "batch[0].type: 'click' is not one of track, identify, page, screen, group, alias",
        ),
        (
            Endpoint::Batch,
            json!({"batch": [{"type": "track", "event": "e"}]}),
            ErrorCode::MissingUserId,
            "batch[0].userId: userId or anonymousId is required",
        ),
        (
            Endpoint::Batch,
            json!({"batch": {}}),
            ErrorCode::WrongType,
            "batch: must be an array, not an object",
        ),
        (
            Endpoint::Batch,
            json!({}),
            ErrorCode::MissingBatch,
            "batch: is required: an array of events",
        ),
        (
            Endpoint::Batch,
            json!({"batch": [], "context": 3}),
            ErrorCode::WrongType,
            "context: must be an object, not a number",
        ),
    ];
    for (endpoint, body, code, message) in cases {
        let err = events(endpoint, &body).unwrap_err();
        assert_eq!(
            (err.code, err.message().as_str()),
            (code, message),
            "{body}"
        );
    }
}

#[test]
fn limits_on_event_size_and_batch_length() {
    let big = "x".repeat(MAX_EVENT_BYTES);
    let err = one(
        EventType::Track,
        &json!({"userId": "u", "event": "e", "properties": {"p": big}}),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::EventTooLarge);
    let err = events(
        Endpoint::Batch,
        &json!({"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"p": big}}]}),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::EventTooLarge);
    assert_eq!(err.field, "batch[0]");

    let item = json!({"type": "track", "userId": "u", "event": "e"});
    let ok = json!({"batch": vec![item.clone(); MAX_BATCH_EVENTS]});
    assert_eq!(
        events(Endpoint::Batch, &ok).unwrap().len(),
        MAX_BATCH_EVENTS
    );
    let too_many = json!({"batch": vec![item; MAX_BATCH_EVENTS + 1]});
    let err = events(Endpoint::Batch, &too_many).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooManyEvents);
}

#[test]
fn invalid_json_and_non_objects_are_refused() {
    assert_eq!(
        Body::parse(b"{\"userId\": ").unwrap_err().code,
        ErrorCode::InvalidJson
    );
    assert_eq!(
        Body::parse(b"[1]").unwrap_err().code,
        ErrorCode::InvalidJson
    );
}

#[test]
fn timestamps_in_the_forms_client_libraries_send() {
    let expected = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    for text in [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.000Z",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01T12:00:00+0000",
        "2024-05-01T12:00:00.0000000Z",
        "2024-05-01T12:00:00",
    ] {
        assert_eq!(parse_timestamp(text), Some(expected), "{text}");
    }
    assert_eq!(
        parse_timestamp("2024-05-01"),
        Some(Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(parse_timestamp("1714564800"), None);
}

#[test]
fn write_key_from_the_body() {
    let peek = Body::peek_write_key;
    assert_eq!(
        peek(br#"{"writeKey": "k1", "batch": []}"#).unwrap(),
        Some("k1".to_owned())
    );
    assert_eq!(
        peek(br#"{"batch": [{"a": {"b": [1, "x"]}}], "writeKey": "k2"}"#).unwrap(),
        Some("k2".to_owned())
    );
    assert_eq!(peek(br#"{"batch": []}"#).unwrap(), None);
    assert_eq!(peek(br#"{"writeKey": ""}"#).unwrap(), None);
    assert_eq!(
        peek(br#"{"writeKey": 5}"#).unwrap_err().code,
        ErrorCode::WrongType
    );
    // The scan stops at the key: what follows is not read before the key is checked.
    assert_eq!(
        peek(br#"{"writeKey": "k3", "batch": [{"type": "#).unwrap(),
        Some("k3".to_owned())
    );
    // Before the key, or without one, a body that is no JSON object is refused as before.
    for bad in [&br#"{"batch": [tru"#[..], b"[1]", b"", br#"{"a": 1"#] {
        assert_eq!(
            peek(bad).unwrap_err().code,
            ErrorCode::InvalidJson,
            "{bad:?}"
        );
    }
}
