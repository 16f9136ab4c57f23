//! `--console-pages N`: how fast the web console answers over a journey with many instances.
//!
//! Creates the abandonment journey (its hold is an hour, so nothing times out during the run),
//! enters it with `--events` checkouts over `--profiles` users (unary `IngestService.Batch`
//! calls of 500), sends the purchases of every other session (those instances end), waits
//! until the journey's statistics show every instance, then requests each console page `N`
//! times in turn over one HTTP/1.1 connection and prints its answer time (p50 / p99 / max)
//! and size. The console reads everything through the node's gRPC API, as in production.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use journeys_proto::v1 as pb;
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use journeys_proto::v1::instance_service_client::InstanceServiceClient;
use journeys_proto::v1::journey_service_client::JourneyServiceClient;
use tokio::time::Instant;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::cli::{Settings, WorkloadKind};
use crate::report::{latency_line, quantile};
use crate::setup::{ControlPlane, Prepared};
use crate::workload::Workload;

/// The journey holds each checkout this long: longer than any run.
const HOLD: Duration = Duration::from_secs(3600);
/// Events per `Batch` call.
const BATCH: usize = 500;

/// Runs the console measurement against the stack at `grpc` / `http`; returns the report.
pub async fn measure(
    settings: &Settings,
    requests: usize,
    admin_token: Option<&str>,
    grpc: SocketAddr,
    http: SocketAddr,
) -> anyhow::Result<String> {
    let channel = crate::grpc_load::connect(grpc).await?;
    let workload = Workload::new(
        WorkloadKind::Abandonment,
        settings.events,
        settings.profiles,
    );
    let control = ControlPlane::new(channel.clone(), admin_token)?;
    // Nothing is ever sent: the hold outlasts the run.
    let prepared = control
        .prepare(&workload, HOLD, "http://127.0.0.1:9/unused")
        .await?;
    let outcome = async {
        let started = Instant::now();
        let sent = enter(&channel, &prepared, &workload).await?;
        let (waiting, instances) = settle(&channel, &prepared, &workload).await?;
        let loaded = started.elapsed();
        let pages = pages(&channel, &prepared, &workload).await?;
        let mut out = format!(
            "journeys-load --console-pages: {sent} events into journey {} ({instances} \
             instances, {waiting} waiting) in {:.1} s; each page requested {requests} times\n",
            prepared.journey_id,
            loaded.as_secs_f64(),
        );
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        for (name, path) in pages {
            let (times, bytes) = time_page(&client, http, &path, requests).await?;
            #[allow(clippy::cast_precision_loss, reason = "kilobytes for display")]
            let kb = bytes as f64 / 1024.0;
            out.push_str(&format!(
                "  {name:<20} {}, {kb:.1} KB\n",
                latency_line(&times)
            ));
            let p99 = quantile(&times, 0.99).unwrap_or_default() / 1000;
            out.push_str(&format!(
                "RESULT console_page={name} instances={instances} waiting={waiting} \
                 p99_us={p99} bytes={bytes}\n"
            ));
        }
        anyhow::Ok(out)
    }
    .await;
    control.clean_up(&prepared).await;
    outcome
}

/// Sends every checkout, then the purchases of the sessions that buy; returns how many events.
async fn enter(channel: &Channel, prepared: &Prepared, workload: &Workload) -> anyhow::Result<u64> {
    let mut client = IngestServiceClient::new(channel.clone());
    let key = MetadataValue::try_from(prepared.write_key.as_str()).context("write key")?;
    let purchases = (0..workload.events)
        .filter(|session| workload.buys(*session))
        .map(|session| workload.purchase_of(session));
    let seqs: Vec<u64> = (0..workload.events).chain(purchases).collect();
    for chunk in seqs.chunks(BATCH) {
        let events = chunk.iter().map(|seq| workload.proto_event(*seq)).collect();
        let mut request = Request::new(pb::BatchRequest { events });
        request.metadata_mut().insert("x-write-key", key.clone());
        let answer = client.batch(request).await.context("Batch")?.into_inner();
        let refused = answer
            .results
            .iter()
            .filter(|ack| ack.status == pb::AckStatus::Rejected as i32)
            .count();
        anyhow::ensure!(
            refused == 0,
            "{refused} events refused; spread them over more --profiles"
        );
    }
    Ok(seqs.len() as u64)
}

/// Waits until the journey counts an entry per checkout and none still being applied; returns
/// (waiting, entries).
async fn settle(
    channel: &Channel,
    prepared: &Prepared,
    workload: &Workload,
) -> anyhow::Result<(i64, i64)> {
    let mut journeys = JourneyServiceClient::new(channel.clone());
    let buyers = (0..workload.events)
        .filter(|session| workload.buys(*session))
        .count();
    let expected_waiting = i64::try_from(workload.events)? - i64::try_from(buyers)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stats = journeys
            .get_journey_stats(pb::GetJourneyStatsRequest {
                id: prepared.journey_id.clone(),
                ..Default::default()
            })
            .await
            .context("GetJourneyStats")?
            .into_inner();
        let waiting: i64 = stats.steps.iter().map(|s| s.waiting).sum();
        if stats.entries == i64::try_from(workload.events)? && waiting == expected_waiting {
            return Ok((waiting, stats.entries));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the journey did not settle: {} entries, {waiting} waiting",
            stats.entries
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pages to time, by name: the journeys list, the journey's graph page and its live
/// counts, a profile search, an instance's timeline, the destinations and the destination.
async fn pages(
    channel: &Channel,
    prepared: &Prepared,
    workload: &Workload,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let instance = InstanceServiceClient::new(channel.clone())
        .list_instances(pb::ListInstancesRequest {
            journey_id: prepared.journey_id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .context("ListInstances")?
        .into_inner()
        .instances
        .into_iter()
        .next()
        .context("the journey has no instance")?;
    let journey = &prepared.journey_id;
    let destination = &prepared.destination_id;
    Ok(vec![
        ("journeys list", "/console/".to_owned()),
        ("journey graph", format!("/console/journeys/{journey}")),
        (
            "journey live counts",
            format!("/console/journeys/{journey}/stats.json"),
        ),
        (
            "profile search",
            format!("/console/profiles?user_id={}", workload.user_id(0)),
        ),
        (
            "instance timeline",
            format!("/console/instances/{}", instance.id),
        ),
        ("destinations", "/console/destinations".to_owned()),
        (
            "destination",
            format!("/console/destinations/{destination}"),
        ),
    ])
}

/// Requests `path` `requests` times; returns the sorted answer times in ns and the body size.
async fn time_page(
    client: &Client<HttpConnector, Empty<Bytes>>,
    http: SocketAddr,
    path: &str,
    requests: usize,
) -> anyhow::Result<(Vec<u64>, usize)> {
    let uri: http::Uri = format!("http://{http}{path}").parse()?;
    let mut times = Vec::with_capacity(requests);
    let mut size = 0;
    for _ in 0..requests.max(1) {
        let started = Instant::now();
        let response = client
            .get(uri.clone())
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        times.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        size = body.len();
    }
    times.sort_unstable();
    Ok((times, size))
}
