//! Timer benchmark: a million pending timers due over a minute, one scheduler, and how late
//! each fires.
//!
//! ```text
//! cargo bench -p journeys-scheduler --bench timers -- --backend sqlite
//! JOURNEYS_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306 \
//!   cargo bench -p journeys-scheduler --bench timers -- --backend mysql
//! ```
//!
//! Options: `--timers N` (default 1,000,000), `--spread-secs S` (default 60; 0 makes every
//! timer due at the same instant, which measures the fastest drain), `--lanes N` (engine lanes,
//! default 4), `--pending N` (more timers due a day later, which stay pending and never fire:
//! `--timers 300000 --spread-secs 60 --pending 700000` fires 5,000/s for a minute with a
//! million pending), `--in-flight N` (engine calls in flight, default the scheduler's 4).
//!
//! The instances of a "delay, then send" journey and their timers are written straight to the
//! store with `Batches::commit` in large batches, exactly as the engine would have written
//! them after the entry event (same serialized core instance, same timer row id rule), with due
//! times spread evenly over the window. The window starts once every row is in, so all of them
//! are pending when the scheduler starts. A small calibration batch (due a day later, so it
//! stays pending and never fires) predicts how long the load takes. The scheduler then runs
//! with its defaults and an in-process engine; lateness is fired-at (after the commit of the
//! timer's lane batch) minus due-at. No dispatcher runs: the sends stay queued in the outbox.

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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use journeys_core::machine::{Instance, InstanceState as CoreState, Timer, TimerKind, Waiting};
use journeys_core::model::{
    DelayStep, EntryRule, EntryTrigger, JourneyDefinition, SendAction, SendSpec, SendStep, Step,
    StepKind,
};
use journeys_engine::{Engine, EngineConfig, OwnerConfig};
use journeys_scheduler::{HousekeepingConfig, Scheduler, SchedulerConfig, WallClock};
use journeys_store::{
    Changes, DestinationKind, DestinationRecord, InstanceRecord, InstanceState, JourneyRecord,
    JourneyState, Store, TimerRecord,
};
use journeys_testkit::TestDb;
use sha2::{Digest, Sha256};

/// The allocator of the production binaries (`journeys`, `journeys-load`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Instances (and timers) per store commit.
const COMMIT_ROWS: usize = 5_000;
/// Calibration rows used to predict the load time.
const CALIBRATION_ROWS: usize = 10_000;

struct Args {
    mysql: bool,
    timers: usize,
    spread: Duration,
    lanes: usize,
    pending: usize,
    in_flight: usize,
}

fn args() -> Args {
    let mut parsed = Args {
        mysql: false,
        timers: 1_000_000,
        spread: Duration::from_secs(60),
        lanes: EngineConfig::default().lanes,
        pending: 0,
        in_flight: SchedulerConfig::default().max_in_flight,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--backend" => parsed.mysql = value() == "mysql",
            "--timers" => parsed.timers = value().parse().unwrap_or(parsed.timers),
            "--spread-secs" => {
                parsed.spread = Duration::from_secs(value().parse().unwrap_or(60));
            }
            "--lanes" => parsed.lanes = value().parse().unwrap_or(parsed.lanes),
            "--pending" => parsed.pending = value().parse().unwrap_or(parsed.pending),
            "--in-flight" => parsed.in_flight = value().parse().unwrap_or(parsed.in_flight),
            // `cargo bench` passes `--bench`; anything else is ignored as well.
            _ => {}
        }
    }
    parsed
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args));
}

/// What the load needs to know about the journey.
struct Target {
    journey_id: String,
    revision: i64,
}

async fn run(args: Args) {
    let db = if args.mysql {
        TestDb::mysql()
            .await
            .expect("MySQL test database")
            .expect("set JOURNEYS_TEST_MYSQL_URL for --backend mysql")
    } else {
        TestDb::sqlite().await.expect("SQLite test database")
    };
    let store = db.store().clone();
    println!(
        "timers benchmark: backend {}, {} timers due over {:?}, {} more pending, engine lanes {}",
        db.backend(),
        args.timers,
        args.spread,
        args.pending,
        args.lanes
    );
    let target = journey(&store).await;
    let writers = if args.mysql { 4 } else { 1 };

    // Calibrate: how fast do instance + timer rows go in?
    let calibration = CALIBRATION_ROWS.min(args.timers / 10).max(1);
    let started = Instant::now();
    let far = Utc::now() + TimeDelta::days(1);
    load(&store, &target, 0, calibration, writers, |_| far).await;
    let per_row = started.elapsed().as_secs_f64() / calibration as f64;
    let predicted = Duration::from_secs_f64(per_row * args.timers as f64);
    if args.pending > 0 {
        let started = Instant::now();
        load(
            &store,
            &target,
            calibration,
            calibration + args.pending,
            writers,
            |_| far,
        )
        .await;
        println!(
            "loaded {} pending instances + timers (due in a day) in {:.1} s",
            args.pending,
            started.elapsed().as_secs_f64()
        );
    }
    let first = calibration + args.pending;
    let window_start = Utc::now()
        + TimeDelta::from_std(predicted.mul_f64(2.0) + Duration::from_secs(10)).expect("delta");

    let started = Instant::now();
    let spread_micros = i64::try_from(args.spread.as_micros()).expect("spread fits");
    let n = i64::try_from(args.timers).expect("count fits");
    load(&store, &target, first, first + args.timers, writers, |i| {
        let i = i64::try_from(i - first).expect("index fits");
        window_start + TimeDelta::microseconds(spread_micros * i / n)
    })
    .await;
    let loaded = started.elapsed();
    let loaded_at = Utc::now();
    println!(
        "loaded {} instances + timers in {:.1} s ({:.0} timers/s); window starts {:.1} s later",
        args.timers,
        loaded.as_secs_f64(),
        args.timers as f64 / loaded.as_secs_f64(),
        (window_start - loaded_at).as_seconds_f64()
    );
    if loaded_at > window_start {
        println!("WARNING: the load overran the window start; early timers start out overdue");
    }
    let queue = store.timers().stats(Utc::now()).await.expect("timer stats");
    println!(
        "pending timers: {} ({} of them due in a day)",
        queue.pending,
        calibration + args.pending
    );

    let engine = Engine::start(
        store.clone(),
        EngineConfig {
            lanes: args.lanes,
            // A partition owner, as in `journeys serve`: fenced commits, profiles in memory.
            owner: Some(OwnerConfig::default()),
            ..EngineConfig::default()
        },
        None,
    );
    engine.refresh_now().await.expect("load journeys");
    engine.ownership_ready().await;
    let config = SchedulerConfig {
        housekeeping: HousekeepingConfig {
            schedule: String::new(),
            ..HousekeepingConfig::default()
        },
        max_in_flight: args.in_flight,
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::start(store.clone(), engine.clone(), WallClock, config)
        .await
        .expect("scheduler");

    let deadline =
        window_start + TimeDelta::from_std(args.spread + Duration::from_secs(1800)).expect("delta");
    let total = args.timers as u64;
    let mut last_report = Instant::now();
    let finished_at = loop {
        let stats = scheduler.stats();
        if stats.fired_total >= total {
            break Utc::now();
        }
        if Utc::now() > deadline {
            println!("gave up: {} of {total} fired", stats.fired_total);
            break Utc::now();
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            println!(
                "  {:>8} fired, {:>6} held, lateness p50 {:.1} ms, p99 {:.1} ms; engine call p50 {:.1} ms",
                stats.fired_total,
                stats.held,
                ms(stats.lateness_p50()),
                ms(stats.lateness_p99()),
                ms(stats.apply_time.quantile(0.5)),
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let stats = scheduler.stats();
    let window = (finished_at - window_start).as_seconds_f64();
    let h = &stats.lateness;
    println!(
        "fired {} timers ({} applied, {} discarded, {} retried)",
        stats.fired_total, stats.applied, stats.discarded, stats.retried
    );
    println!(
        "first due → last fired: {window:.1} s, {:.0} fired/s",
        stats.fired_total as f64 / window
    );
    println!(
        "lateness: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        ms(h.quantile(0.5)),
        ms(h.quantile(0.9)),
        ms(h.quantile(0.99)),
        ms(h.quantile(0.999)),
        ms(h.max()),
        ms(h.mean())
    );
    let a = &stats.apply_time;
    println!(
        "engine calls: {} (up to {} timers each, {} in flight), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        a.count(),
        SchedulerConfig::default().fire_batch,
        args.in_flight,
        ms(a.quantile(0.5)),
        ms(a.quantile(0.99)),
        ms(a.max())
    );
    let engine_stats = engine.stats();
    println!(
        "engine: {} commits, {} conflicts, {} sends queued",
        engine_stats.commits, engine_stats.conflicts, engine_stats.sends_queued
    );

    scheduler.shutdown().await;
    engine.shutdown().await;
    db.close().await.expect("drop benchmark database");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Publishes "signed up → wait a minute → send" with a destination nobody delivers to.
async fn journey(store: &Store) -> Target {
    let now = Utc::now();
    let destination = store
        .destinations()
        .insert(&DestinationRecord {
            id: journeys_store::new_id(),
            name: "bench sink".to_owned(),
            kind: DestinationKind::Webhook,
            settings: serde_json::json!({"url": "http://127.0.0.1:9/unused"}),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("destination");
    let definition = JourneyDefinition {
        name: "timer bench".to_owned(),
        description: String::new(),
        entry: EntryTrigger {
            event: "signed_up".to_owned(),
            audience_key: None,
            filters: Vec::new(),
        },
        entry_rule: EntryRule::EnterOnce,
        start_step: "wait".to_owned(),
        steps: vec![
            Step {
                key: "wait".to_owned(),
                name: "wait".to_owned(),
                kind: StepKind::Delay(DelayStep {
                    duration: Duration::from_secs(60),
                    next: Some("notify".to_owned()),
                }),
            },
            Step {
                key: "notify".to_owned(),
                name: "notify".to_owned(),
                kind: StepKind::Send(SendStep {
                    spec: SendSpec {
                        destination_id: destination.id,
                        action: SendAction::default(),
                        event_name: None,
                        traits: Vec::new(),
                        mapping: None,
                    },
                    next: None,
                }),
            },
        ],
        exit_rules: Vec::new(),
    };
    let draft = JourneyRecord::new_draft(
        definition.name.clone(),
        "",
        serde_json::to_value(&definition).expect("definition"),
        now,
    );
    let stored = store.journeys().insert(&draft).await.expect("journey");
    let published = store
        .journeys()
        .set_state(&stored.id, JourneyState::Published, now)
        .await
        .expect("publish");
    Target {
        journey_id: published.id,
        revision: published.revision,
    }
}

/// Writes instances `from..to` waiting in the delay, each with its timer due at `due(i)`, in
/// commits of [`COMMIT_ROWS`], `writers` commits at a time.
async fn load(
    store: &Store,
    target: &Target,
    from: usize,
    to: usize,
    writers: usize,
    due: impl Fn(usize) -> DateTime<Utc>,
) {
    let mut commits = tokio::task::JoinSet::new();
    let mut start = from;
    while start < to {
        let end = (start + COMMIT_ROWS).min(to);
        let mut changes = Changes::default();
        for i in start..end {
            let (instance, timer) = waiting_instance(target, i, due(i));
            changes.instances_new.push(instance);
            changes.timers_new.push(timer);
        }
        let store = store.clone();
        commits.spawn(async move { store.batches().commit(&changes).await });
        if commits.len() >= writers {
            commits
                .join_next()
                .await
                .expect("a commit")
                .expect("commit task")
                .expect("commit");
        }
        start = end;
    }
    while let Some(done) = commits.join_next().await {
        done.expect("commit task").expect("commit");
    }
}

/// Instance `i` as the engine stores it right after entering: waiting in `wait` on a delay
/// timer due at `due`; and that timer's row.
fn waiting_instance(
    target: &Target,
    i: usize,
    due: DateTime<Utc>,
) -> (InstanceRecord, TimerRecord) {
    let entered = Utc::now();
    let id = journeys_store::new_id();
    let profile_id = format!("bench-user-{i}");
    let timer = Timer {
        id: format!("{id}:wait:0"),
        due_at: due,
        kind: TimerKind::Delay,
        step_key: "wait".to_owned(),
    };
    let row = TimerRecord {
        id: timer_row_id(&timer.id),
        instance_id: id.clone(),
        profile_id: profile_id.clone(),
        journey_id: target.journey_id.clone(),
        due_at: due,
        kind: TimerKind::Delay.as_str().to_owned(),
        step_key: "wait".to_owned(),
    };
    let instance = Instance {
        id: id.clone(),
        journey_id: target.journey_id.clone(),
        journey_version: target.revision,
        profile_id: profile_id.clone(),
        user_id: Some(profile_id.clone()),
        anonymous_id: None,
        unique_value: None,
        state: CoreState::Active,
        current_step: "wait".to_owned(),
        waiting: Some(Waiting::Timer(timer)),
        context: serde_json::Map::new(),
        passes: BTreeMap::new(),
        entered_at: entered,
        updated_at: entered,
        ended_at: None,
    };
    let record = InstanceRecord {
        id,
        journey_id: target.journey_id.clone(),
        journey_revision: target.revision,
        profile_id,
        unique_value: None,
        state: InstanceState::Active,
        current_step: Some("wait".to_owned()),
        waiting_event: None,
        context: serde_json::json!({}),
        state_blob: serde_json::to_value(&instance).expect("instance serializes"),
        passes: 0,
        version: 1,
        entered_at: entered,
        updated_at: entered,
        ended_at: None,
        active_key: None,
        expires_at: entered + TimeDelta::days(365),
    };
    (record, row)
}

/// The engine's row id of a core timer id: a UUID-shaped SHA-256 prefix (core ids are longer
/// than the id column). Should the engine's rule change, every timer here would be discarded
/// instead of applied, which the summary line shows.
fn timer_row_id(core_id: &str) -> String {
    let x = hex::encode(&Sha256::digest(core_id.as_bytes())[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}
