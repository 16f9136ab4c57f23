//! `journeys-load`: the end-to-end load generator.
//!
//! It runs its own webhook sink, creates a source, a destination pointing at the sink and a
//! published forwarding journey, streams `--events` events over gRPC or HTTP, and reports
//! acknowledged events/s, delivered webhooks/s, event-to-webhook latency, repeats and missing
//! webhooks. With `--embedded` it also starts the stack itself (the node `journeys serve` runs,
//! through `journeys::Node`) over a fresh database, and removes the database afterwards.
//!
//! ```text
//! journeys-load --embedded --database-url sqlite:// --transport grpc --events 100000
//! journeys-load --embedded --database-url mysql://root@127.0.0.1:3306 --rate 5000
//! journeys-load --grpc-addr 127.0.0.1:50051 --http-addr 127.0.0.1:8088 --transport http
//! ```

mod cli;
mod grpc_load;
mod http_load;
mod record;
mod report;
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

use crate::cli::{Args, Transport};
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
    args.validate()?;
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
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
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
        outcome = measure(&args, grpc, http, target) => outcome,
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
    grpc: SocketAddr,
    http: SocketAddr,
    target: String,
) -> anyhow::Result<String> {
    let workload = Arc::new(Workload::new(args.profiles));
    let recorder = Arc::new(Recorder::new(args.events, args.max_retries));
    let sink = Sink::start(Arc::clone(&workload), Arc::clone(&recorder)).await?;
    let channel = grpc_load::connect(grpc).await?;
    let control = ControlPlane::new(channel.clone(), args.admin_token.as_deref())?;
    let prepared = control.prepare(&workload, &sink.url()).await?;
    eprintln!(
        "run {}: journey {} -> destination {} at {}",
        workload.run,
        prepared.journey_id,
        prepared.destination_id,
        sink.url()
    );
    tokio::time::sleep(PUBLISH_SETTLE).await;

    let driven = drive(
        args,
        channel,
        http,
        &prepared.write_key,
        &workload,
        &recorder,
    )
    .await;
    control.clean_up(&prepared).await;
    driven?;
    drop(sink);

    let concurrency = match args.transport {
        Transport::Grpc => format!("{} requests in flight", args.in_flight),
        Transport::Http => format!("{} connections", args.connections),
    };
    let info = RunInfo {
        target,
        transport: args.transport.name(),
        events: args.events,
        profiles: args.profiles,
        batch: args.batch,
        concurrency,
        rate: args.rate,
    };
    Ok(report::render(&info, &recorder.summary()))
}

/// Streams every event, then waits for the webhooks (at most `--delivery-timeout`).
async fn drive(
    args: &Args,
    channel: tonic::transport::Channel,
    http: SocketAddr,
    write_key: &str,
    workload: &Arc<Workload>,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<()> {
    let progress = (!args.quiet).then(|| tokio::spawn(report::progress(Arc::clone(recorder))));
    let (work_tx, work_rx) = mpsc::channel(args.in_flight.max(args.connections));
    let (resend_tx, resend_rx) = mpsc::unbounded_channel();
    let pace = Pace {
        events: args.events,
        batch: args.batch,
        rate: args.rate,
    };
    let producer = workload::produce(pace, Arc::clone(recorder), resend_rx, work_tx);
    let sent = async {
        match args.transport {
            Transport::Grpc => {
                grpc_load::run(
                    channel,
                    write_key,
                    args.in_flight,
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
                    args.connections,
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
        let deadline = Instant::now() + Duration::from_secs(args.delivery_timeout);
        while recorder.delivered() < recorder.accepted() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
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
