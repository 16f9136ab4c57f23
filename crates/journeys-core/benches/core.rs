//! Core benchmarks against the performance targets of ARCHITECTURE.md:
//! - dispatching events that match nothing among 100 published journeys (≥ 2,000,000/s/core);
//! - an entry + send transition with a 20-field mapping (≥ 300,000/s/core);
//! - a hold-until match among 100,000 waiting instances of other profiles (≤ 5 µs).
//!
//! Run with `cargo bench -p journeys-core --bench core`; figures go to BENCHMARKS.md. The
//! benchmarks run on the allocator of the service binaries (mimalloc).

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

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use journeys_core::eval::NoAudiences;
use journeys_core::index::{JourneyIndex, WaitingIndex};
use journeys_core::machine::{
    DEFAULT_MAX_RETURN_TO_START_PASSES, DEFAULT_MAX_UNIQUE_VALUE_CHARS, EntryFacts, Input,
    Instance, Journey, StepContext, decide_entry, enter, instance_id, step,
};
use journeys_core::model::{Event, JourneyDefinition, JourneyMeta, Timestamp};
use serde_json::{Value, json};

// The allocator the service binaries use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2025, 6, 1, 9, 0, 0).unwrap()
}

fn journey(id: &str, definition: &Value) -> Journey {
    let definition: JourneyDefinition =
        serde_json::from_value(definition.clone()).expect("definition");
    Journey::new(
        JourneyMeta {
            id: id.into(),
            version: 1,
            name: definition.name.clone(),
        },
        definition,
    )
}

fn track(message_id: &str, user: &str, name: &str, properties: Value) -> Event {
    let mut event: Event = serde_json::from_value(json!({
        "type": "track",
        "message_id": message_id,
        "user_id": user,
        "event": name,
        "timestamp": now(),
    }))
    .expect("event");
    event.properties = properties;
    event
}

/// A journey entered on `checkout_started_<n>` that holds for `purchase_completed_<n>` with an
/// exit rule on `unsubscribed_<n>`: 100 of them mention 300 event names.
fn abandoned(n: usize) -> Journey {
    journey(
        &format!("journey-{n}"),
        &json!({
            "name": format!("Abandoned checkout {n}"),
            "entry": {"event": format!("checkout_started_{n}")},
            "entry_rule": {"rule": "reenter_every_time", "unique_identifier": "session_id"},
            "start_step": "hold",
            "steps": [
                {"key": "hold", "name": "Hold", "kind": {
                    "type": "hold_until",
                    "branches": [{"name": "Bought", "event": format!("purchase_completed_{n}"), "next": null}],
                    "max_duration": {"secs": 3600, "nanos": 0},
                    "timeout_next": "nudge"
                }},
                {"key": "nudge", "name": "Nudge", "kind": {"type": "send", "destination_id": "d", "next": null}}
            ],
            "exit_rules": [{"event": format!("unsubscribed_{n}")}]
        }),
    )
}

fn dispatch_non_matching(c: &mut Criterion) {
    let index = JourneyIndex::new((0..100).map(abandoned));
    // Realistic event names that no journey mentions, cycled so the lookup is not a single
    // hot key.
    let names: Vec<String> = (0..256)
        .map(|i| {
            format!(
                "{} {i}",
                ["Page Viewed", "Product Clicked", "identify", "Screen"][i % 4]
            )
        })
        .collect();
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("dispatch_non_matching_100_journeys", |b| {
        b.iter(|| {
            i = (i + 1) & 255;
            black_box(index.routes(black_box(&names[i])).is_some())
        });
    });
    group.finish();
}

fn entry_send_journey() -> Journey {
    let mut mapping = serde_json::Map::new();
    for k in 0..20 {
        let value = match k % 4 {
            0 => {
                json!({"@path": format!("$.properties.journey_context.order_completed.field_{k}")})
            }
            1 => {
                json!({"@template": format!("{{{{userId}}}}-{{{{properties.journey_context.order_completed.field_{k}}}}}")})
            }
            2 => {
                json!({"@if": {"exists": {"@path": "$.properties.email"}, "then": {"@path": "$.properties.email"}, "else": "none"}})
            }
            _ => json!(format!("literal {k}")),
        };
        mapping.insert(format!("out_{k}"), value);
    }
    journey(
        "journey-forward",
        &json!({
            "name": "Forward orders",
            "entry": {"event": "order_completed", "filters": [{"property": "currency", "any_of": ["EUR", "USD"]}]},
            "entry_rule": {"rule": "reenter_every_time", "unique_identifier": "order_id"},
            "start_step": "forward",
            "steps": [
                {"key": "forward", "name": "Forward", "kind": {
                    "type": "send", "destination_id": "warehouse", "traits": ["email", "plan"],
                    "mapping": Value::Object(mapping), "next": null
                }}
            ]
        }),
    )
}

fn entry_and_send(c: &mut Criterion) {
    let j = entry_send_journey();
    let mut props = serde_json::Map::new();
    for k in 0..20 {
        props.insert(format!("field_{k}"), json!(format!("value {k}")));
    }
    props.insert("order_id".into(), json!("o-1"));
    props.insert("currency".into(), json!("EUR"));
    let event = track("m-1", "u1", "order_completed", Value::Object(props));
    let traits = json!({"email": "u1@example.com", "plan": "pro", "name": "Ada"});
    let ctx = StepContext {
        traits: &traits,
        audiences: &NoAudiences,
        now: now(),
        max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
    };
    let active: [&str; 2] = ["o-0", "o-9"];
    let facts = EntryFacts {
        audiences: &NoAudiences,
        already_entered: false,
        active_unique_values: &active,
        max_unique_value_chars: DEFAULT_MAX_UNIQUE_VALUE_CHARS,
    };
    // Sanity: the transition sends one payload with the 20 mapped fields.
    {
        let admission = decide_entry(&j, &event, &facts).unwrap();
        let inst = Instance::new(
            &j,
            instance_id(j.id(), &event.message_id),
            &event,
            admission,
            now(),
        );
        let t = step(&j, &inst, Input::Enter(&event), &ctx);
        let send = t.sends().next().expect("one send");
        assert_eq!(send.payload.as_object().unwrap().len(), 20);
    }
    // For the record in BENCHMARKS.md: the share of the mapping engine alone (render + drop
    // of the 20 mapped fields, against the default payload this transition builds).
    let mapping = j
        .definition()
        .steps
        .iter()
        .find_map(|s| match &s.kind {
            journeys_core::model::StepKind::Send(send) => send.spec.mapping.clone(),
            _ => None,
        })
        .unwrap();
    let compiled = journeys_core::mapping::compile(&mapping).unwrap();
    let default_payload = {
        let admission = decide_entry(&j, &event, &facts).unwrap();
        let plain = journey(
            "journey-plain",
            &json!({
                "name": "Forward orders",
                "entry": {"event": "order_completed"},
                "entry_rule": {"rule": "enter_once"},
                "start_step": "forward",
                "steps": [{"key": "forward", "name": "Forward", "kind": {
                    "type": "send", "destination_id": "warehouse", "traits": ["email", "plan"], "next": null
                }}]
            }),
        );
        let t = enter(&plain, "i-1".into(), &event, admission, &ctx);
        t.sends().next().unwrap().payload.clone()
    };
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(1));
    group.bench_function("mapping_render_20_fields_only", |b| {
        b.iter(|| black_box(compiled.render(black_box(&default_payload)).unwrap()));
    });
    group.bench_function("entry_and_send_20_field_mapping", |b| {
        b.iter(|| {
            let event = black_box(&event);
            let admission = decide_entry(&j, event, &facts).unwrap();
            black_box(enter(
                &j,
                instance_id(j.id(), &event.message_id),
                event,
                admission,
                &ctx,
            ))
        });
    });
    group.finish();
}

fn hold_match(c: &mut Criterion) {
    let j = abandoned(0);
    let traits = json!({});
    let enter_ctx = StepContext {
        traits: &traits,
        audiences: &NoAudiences,
        now: now(),
        max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
    };
    let facts = EntryFacts {
        audiences: &NoAudiences,
        already_entered: false,
        active_unique_values: &[],
        max_unique_value_chars: DEFAULT_MAX_UNIQUE_VALUE_CHARS,
    };
    // 100,000 instances of other profiles waiting for the same event, plus the target.
    let mut store: HashMap<String, Instance> = HashMap::with_capacity(100_001);
    let mut waiting = WaitingIndex::new();
    for n in 0..=100_000usize {
        let user = if n == 100_000 {
            "target".to_owned()
        } else {
            format!("user-{n}")
        };
        let e = track(
            &format!("m-{n}"),
            &user,
            "checkout_started_0",
            json!({"session_id": format!("s-{n}"), "cart": [{"sku": "a", "qty": 1}], "total": 42.5}),
        );
        let admission = decide_entry(&j, &e, &facts).unwrap();
        let inst = Instance::new(&j, instance_id(j.id(), &e.message_id), &e, admission, now());
        let inst = step(&j, &inst, Input::Enter(&e), &enter_ctx).instance;
        waiting.insert(&inst);
        store.insert(inst.id.clone(), inst);
    }
    assert_eq!(waiting.len(), 100_001);
    let bought = track(
        "m-bought",
        "target",
        "purchase_completed_0",
        json!({"session_id": "s-100000", "order_id": "o-1"}),
    );
    let later = StepContext {
        traits: &traits,
        audiences: &NoAudiences,
        now: now() + chrono::TimeDelta::minutes(5),
        max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
    };
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hold_match_among_100k_waiting", |b| {
        b.iter(|| {
            let event = black_box(&bought);
            let profile = event.profile_id().unwrap();
            let mut matched = 0;
            for id in waiting.waiting_for(profile, &event.event) {
                let inst = &store[id];
                let t = step(&j, inst, Input::Event(event), &later);
                matched += usize::from(!t.is_noop());
                black_box(t);
            }
            assert_eq!(matched, 1);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = dispatch_non_matching, entry_and_send, hold_match
}
criterion_main!(benches);
