//! `journeys-load`: the end-to-end load generator.
//!
//! It runs its own webhook sink, creates a source, a destination pointing at the sink and a
//! published journey for the `--workload`, streams its events over gRPC or HTTP, and reports
//! acknowledged events/s and what arrived at the sink: for the forwarding workloads delivered
//! webhooks/s, event-to-webhook latency, repeats and missing webhooks; for the abandonment
//! workloads the nudges' lateness, missing nudges and nudges wrongly sent to buyers. With
//! `--embedded` it also starts the stack itself (the node `journeys serve` runs, through
//! `journeys::Node`) over a fresh database, and removes the database afterwards.
//!
//! ```text
//! journeys-load --embedded --database-url sqlite:// --transport grpc --events 100000
//! journeys-load --embedded --database-url mysql://root@127.0.0.1:3306 --rate 5000
//! journeys-load --embedded --database-url sqlite:// --workload abandonment --rate 1000
//! journeys-load --grpc-addr 127.0.0.1:50051 --http-addr 127.0.0.1:8088 --transport http
//! ```

mod cli;
mod console;
mod grpc_load;
mod http_load;
mod nudges;
mod record;
mod report;
mod sessions;
mod setup;
mod sink;
mod stack;
mod workload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

use crate::cli::{Args, Settings, Transport};
use crate::nudges::Nudges;
use crate::record::Recorder;
use crate::report::RunInfo;
use crate::setup::ControlPlane;
use crate::sink::Sink;
use crate::stack::{Embedded, FreshDb};
use crate::workload::{Pace, Workload};

/// Time the data plane is given to load a just-published journey into its cache (it polls
/// every 500 ms) before the first event is sent.
const PUBLISH_SETTLE: Duration = Duration::from_millis(1500);
/// Time to keep listening after the last webhook arrived, for immediate repeats.
const REPEAT_GRACE: Duration = Duration::from_millis(300);

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = args.settings()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("journeys-load")
        .enable_all()
        .build()?;
    runtime.block_on(run(args, settings))
}

async fn run(args: Args, settings: Settings) -> anyhow::Result<()> {
    let mut embedded = None;
    let mut fresh = None;
    let (grpc, http, target) = if args.embedded {
        let url = args.database_url.as_deref().unwrap_or_default();
        let (db, url) = FreshDb::create(url).await?;
        eprintln!("fresh database: {}", db.describe());
        let started = Embedded::start(&url, args.server_threads).await;
        let backend = match &db {
            FreshDb::Sqlite { .. } => "sqlite",
            FreshDb::MySql { .. } => "mysql",
        };
        fresh = Some(db);
        match started {
            Ok(stack) => {
                let addrs = (stack.grpc, stack.http, format!("embedded {backend}"));
                embedded = Some(stack);
                addrs
            }
            Err(err) => {
                remove(fresh.as_ref(), args.keep_database).await;
                return Err(err);
            }
        }
    } else {
        (args.grpc_addr, args.http_addr, args.grpc_addr.to_string())
    };

    let outcome = tokio::select! {
        outcome = async {
            match args.console_pages {
                Some(pages) => {
                    console::measure(&settings, pages, args.admin_token.as_deref(), grpc, http)
                        .await
                }
                None => measure(&args, &settings, grpc, http, target).await,
            }
        } => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };

    if let Some(mut stack) = embedded
        && let Err(err) = stack.stop().await
    {
        eprintln!("the embedded stack stopped with an error: {err:#}");
    }
    remove(fresh.as_ref(), args.keep_database).await;
    let text = outcome?;
    print!("{text}");
    Ok(())
}

async fn remove(db: Option<&FreshDb>, keep: bool) {
    let Some(db) = db else { return };
    if keep {
        eprintln!("kept {}", db.describe());
    } else if let Err(err) = db.remove().await {
        eprintln!("could not remove {}: {err:#}", db.describe());
    }
}

/// Sets up, drives the load, waits for the webhooks, cleans up; returns the report.
async fn measure(
    args: &Args,
    settings: &Settings,
    grpc: SocketAddr,
    http: SocketAddr,
    target: String,
) -> anyhow::Result<String> {
    let kind = settings.workload;
    let workload = Arc::new(Workload::new(kind, settings.events, settings.profiles));
    let recorder = {
        let workload = Arc::clone(&workload);
        // The progress lines' latency: a nudge's lateness after its checkout + the hold.
        let offset = if kind.sessions() {
            Duration::from_secs(settings.hold_secs)
        } else {
            Duration::ZERO
        };
        Recorder::new(workload.slots(), args.max_retries)
            .expecting(move |seq| workload.forwarded(seq))
            .latency_offset(offset)
    };
    let recorder = Arc::new(recorder);
    let hold = Duration::from_secs(settings.hold_secs);
    let sink = Sink::start(Arc::clone(&workload), Arc::clone(&recorder)).await?;
    let channel = grpc_load::connect(grpc).await?;
    let control = ControlPlane::new(channel.clone(), args.admin_token.as_deref())?;
    let prepared = control.prepare(&workload, hold, &sink.url()).await?;
    eprintln!(
        "run {} ({}): journey {} -> destination {} at {}",
        workload.run,
        kind.name(),
        prepared.journey_id,
        prepared.destination_id,
        sink.url()
    );
    tokio::time::sleep(PUBLISH_SETTLE).await;

    let driven = drive(
        args,
        settings,
        channel,
        http,
        &prepared.write_key,
        &workload,
        &recorder,
    )
    .await;
    let timers = if kind.sessions() {
        control.timer_stats().await
    } else {
        None
    };
    control.clean_up(&prepared).await;
    driven?;
    drop(sink);

    let concurrency = match args.transport {
        Transport::Grpc => format!("{} requests in flight", settings.in_flight),
        Transport::Http => format!("{} connections", settings.connections),
    };
    let info = RunInfo {
        workload: kind,
        sessions: kind
            .sessions()
            .then(|| (hold, Duration::from_millis(settings.purchase_after_ms))),
        target,
        transport: args.transport.name(),
        events: settings.events,
        profiles: settings.profiles,
        batch: settings.batch,
        concurrency,
        rate: settings.rate,
    };
    let summary = recorder.summary();
    if kind.sessions() {
        let mut nudges = Nudges::collect(&workload, &recorder, hold);
        nudges.timers = timers;
        Ok(nudges::render(&info, &summary, &nudges))
    } else {
        Ok(report::render(&info, &summary))
    }
}

/// Streams every event, then waits for the webhooks (at most `--delivery-timeout`; session
/// workloads: the hold plus that).
async fn drive(
    args: &Args,
    settings: &Settings,
    channel: tonic::transport::Channel,
    http: SocketAddr,
    write_key: &str,
    workload: &Arc<Workload>,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<()> {
    let progress = (!args.quiet).then(|| tokio::spawn(report::progress(Arc::clone(recorder))));
    let (work_tx, work_rx) = mpsc::channel(settings.in_flight.max(settings.connections));
    let (resend_tx, resend_rx) = mpsc::unbounded_channel();
    let pace = Pace {
        events: settings.events,
        batch: settings.batch,
        rate: settings.rate,
    };
    let producer = async {
        if settings.workload.sessions() {
            let after = Duration::from_millis(settings.purchase_after_ms);
            let (workload, recorder) = (Arc::clone(workload), Arc::clone(recorder));
            sessions::produce(pace, after, workload, recorder, resend_rx, work_tx).await;
        } else {
            workload::produce(pace, Arc::clone(recorder), resend_rx, work_tx).await;
        }
    };
    let sent = async {
        match args.transport {
            Transport::Grpc => {
                grpc_load::run(
                    channel,
                    write_key,
                    settings.in_flight,
                    Arc::clone(workload),
                    Arc::clone(recorder),
                    work_rx,
                    resend_tx,
                )
                .await
            }
            Transport::Http => {
                http_load::run(
                    http,
                    write_key,
                    settings.connections,
                    Arc::clone(workload),
                    Arc::clone(recorder),
                    work_rx,
                    resend_tx,
                )
                .await
            }
        }
    };
    let ((), sent) = tokio::join!(producer, sent);
    let waited = async {
        sent?;
        let timeout = Duration::from_secs(args.delivery_timeout);
        if settings.workload.sessions() {
            let hold = Duration::from_secs(settings.hold_secs);
            nudges::wait(workload, recorder, hold, timeout).await;
        } else {
            let deadline = Instant::now() + timeout;
            while recorder.delivered() < recorder.expected() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        tokio::time::sleep(REPEAT_GRACE).await;
        Ok(())
    }
    .await;
    if let Some(progress) = progress {
        progress.abort();
    }
    waited
}
