//! temporary
use chrono::{Duration, Utc};
use serde_json::json;
use journeys_store::testing::each_backend;
use journeys_store::*;

#[tokio::test]
async fn perf() {
    for db in each_backend().await {
        let t = Utc::now();
        let mk = |n: usize| {
            let mut c = Changes::default();
            let mut ups = Vec::new();
            for i in 0..n {
                let p = format!("p{}", journeys_store::new_id());
                let inst = InstanceRecord { id: new_id(), journey_id: "j1".into(), journey_revision: 1, profile_id: p.clone(), unique_value: None, state: InstanceState::Active, current_step: Some("s".into()), waiting_event: None, context: json!({"a": i}), state_blob: json!({"b": i}), passes: 0, version: 1, entered_at: t, updated_at: t, ended_at: None, active_key: None, expires_at: t + Duration::days(365) };
                c.dedupe.push((new_id(), t));
                c.traits.push((p.clone(), serde_json::Map::from_iter([("k".to_owned(), json!(i))])));
                c.catalog_seen.push(("Ev".into(), t));
                c.timeline.push(TimelineEntry { instance_id: inst.id.clone(), profile_id: p.clone(), at: t, step_key: "s".into(), kind: "entered".into(), cause: "m".into(), detail: json!({}) });
                c.outbox_new.push(OutboxRecord { id: new_id(), instance_id: inst.id.clone(), profile_id: p.clone(), journey_id: "j1".into(), step_key: "s".into(), destination_id: "d".into(), message_id: new_id(), method: "POST".into(), path: "/".into(), payload: json!({"x": i}), status: OutboxStatus::Pending, attempts: 0, next_attempt_at: t, last_error: None, traceparent: None, created_at: t, sent_at: None, dead_at: None });
                let mut u = inst.clone(); u.version = 2; u.current_step = Some("t".into());
                ups.push((u, 1));
                c.instances_new.push(inst);
            }
            (c, ups)
        };
        let rounds = 10; let n = 500;
        let parts: Vec<(&str, fn(&Changes) -> Changes)> = vec![
            ("dedupe", |c| Changes { dedupe: c.dedupe.clone(), ..Default::default() }),
            ("traits", |c| Changes { traits: c.traits.clone(), ..Default::default() }),
            ("catalog", |c| Changes { catalog_seen: c.catalog_seen.clone(), ..Default::default() }),
            ("timeline", |c| Changes { timeline: c.timeline.clone(), ..Default::default() }),
            ("outbox", |c| Changes { outbox_new: c.outbox_new.clone(), ..Default::default() }),
            ("instances", |c| Changes { instances_new: c.instances_new.clone(), ..Default::default() }),
        ];
        for (name, f) in parts {
            let mut total = std::time::Duration::ZERO;
            let mut utotal = std::time::Duration::ZERO;
            for _ in 0..rounds {
                let (c, ups) = mk(n);
                let part = f(&c);
                let s = std::time::Instant::now();
                db.runtime().commit(&part).await.unwrap();
                total += s.elapsed();
                if name == "instances" {
                    let s = std::time::Instant::now();
                    db.runtime().commit(&Changes { instances_updated: ups, ..Default::default() }).await.unwrap();
                    utotal += s.elapsed();
                }
            }
            let ev = (rounds * n) as f64;
            eprintln!("PERF {} {name}: {:.0} rows/s; updates {:.0}/s", db.backend(), ev / total.as_secs_f64(), ev / utotal.as_secs_f64());
        }
        db.close().await.unwrap();
    }
}
