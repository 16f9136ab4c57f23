//! Several `journeys serve` processes sharing one MariaDB and one NATS JetStream log
//! (SCALE-OUT.md §3–4), run when both `JOURNEYS_TEST_MYSQL_URL` and `JOURNEYS_TEST_NATS_URL`
//! are set (skipped otherwise).
//!
//! Three replicas start together on an empty database (the migrations are serialised by a
//! store lock), own 16 partitions between them, and take events at any front: a bounded
//! generator sends every profile's events in sequence, each to the next front round-robin,
//! while one replica is SIGKILLed mid-load and restarted. The checks: every acknowledged event
//! is applied once and forwarded (the sink's idempotency keys against the acknowledged set),
//! the sink's and the outbox's keys equal the sends of the acknowledged events replayed
//! through journeys-core (SimulateJourney),
//! each profile's events were applied in its sequence, no buyer whose purchase was acknowledged
//! before the hold's deadline is nudged, and the killed replica's partitions moved on to newer
//! epochs.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use journeys_proto::v1 as pb;
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use journeys_testkit::{Sink, eventually};
use journeys_tests::ingest::{keyed, track};
use journeys_tests::stack::wait_serving;
use journeys_tests::{StackClients, on_each_backend};
use serde_json::json;
use tokio::time::Instant;
use tonic::transport::Channel;

/// The two scenarios each start a cluster on this box's two cores: run one at a time, so
/// neither's timing rests on the other's load.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PARTITIONS: u32 = 16;
const REPLICAS: usize = 3;
/// Profiles of the generator, and events per profile.
const PROFILES: usize = 1000;
const EVENTS_PER_PROFILE: usize = 20;
/// The hold-until timeout of the checkout journey.
const HOLD: Duration = Duration::from_secs(8);
/// How long after their checkout the buyers buy: before the deadline, with room for a loaded
/// machine to acknowledge the purchases in time.
const BUY_AFTER: Duration = Duration::from_secs(4);

/// One `journeys serve` process with every role, killed (SIGKILL) when dropped.
struct Replica {
    child: Child,
    grpc: SocketAddr,
    log: PathBuf,
}

struct Cluster {
    database_url: String,
    nats_url: String,
    stream: String,
}

impl Cluster {
    fn spawn(&self, node: usize, grpc: SocketAddr, http: SocketAddr) -> anyhow::Result<Replica> {
        let log = std::env::temp_dir().join(format!(
            "journeys-replica-{}-{}-{node}.log",
            std::process::id(),
            self.stream
        ));
        let out = File::options().create(true).append(true).open(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_journeys"))
            .args([
                "serve",
                "--roles",
                "control-plane,data-plane,scheduler,delivery",
            ])
            .args(["--database-url", &self.database_url])
            .args(["--nats-url", &self.nats_url])
            .args(["--nats-stream", &self.stream])
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--node-id", &format!("node-{node}")])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(["--destination-allow", "127.0.0.1"])
            .args(["--housekeeping-schedule", ""])
            .arg("--allow-short-durations")
            .env_remove("JOURNEYS_ADMIN_TOKEN")
            .env_remove("JOURNEYS_CONFIG")
            .env(
                "RUST_LOG",
                "warn,journeys_engine::log=debug,journeys_engine::ownership=info,journeys_log=debug",
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Replica { child, grpc, log })
    }
}

impl Replica {
    async fn serving(&mut self) -> anyhow::Result<()> {
        let child = &mut self.child;
        let started =
            wait_serving(self.grpc, || child.try_wait().map_or(true, |s| s.is_some())).await;
        if let Err(err) = started {
            anyhow::bail!("{err}; log:\n{}", self.log_text());
        }
        Ok(())
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Fails, with its exit status and log, when the process has ended.
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("the replica exited ({status}); log:\n{}", self.log_text());
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints the acknowledged orders (`u<n>-e<seq>`) a wait about to time out still lacks, with
/// their profiles' partitions: what to look for in the replica logs.
fn report_missing<'a>(missing: impl Iterator<Item = &'a String>, replicas: &[Replica]) {
    for (node, replica) in replicas.iter().enumerate() {
        let text = replica.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("reading the"))
            .collect();
        eprintln!(
            "node-{node}'s log ({}), its last warnings and readers:\n{}",
            replica.log.display(),
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
    }
    let missing: Vec<(&String, u32)> = missing
        .map(|id| {
            let user = id.split("-e").next().unwrap_or_default();
            (id, journeys_core::partition::partition_of(user, PARTITIONS))
        })
        .collect();
    eprintln!(
        "still not forwarded: {} acknowledged orders, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(30)]
    );
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Forwards every `order` to the sink as `{kind, user, seq}`, once per `seq`.
fn forward_journey() -> serde_json::Value {
    json!({"journey": {
        "id": "forward",
        "name": "Forward orders",
        "entry": {"event": "order"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "seq",
        "start_step": "send",
        "steps": [{"key": "send", "name": "Forward", "send": {
            "destination_id": "hook",
            "mapping": {
                "kind": "order",
                "user": {"@path": "$.userId"},
                "seq": {"@path": "$.properties.journey_context.order.seq"}
            }
        }}]
    }})
}

/// One event of the generator: profile `u`'s `seq`-th event.
fn event_of(u: usize, seq: usize) -> pb::Event {
    let user = format!("u{u}");
    let message_id = format!("u{u}-e{seq}");
    match seq {
        0 => track(
            &user,
            "checkout_started",
            &message_id,
            &json!({"session_id": format!("s{u}"), "seq": seq}),
        ),
        _ => track(&user, "order", &message_id, &json!({"seq": seq})),
    }
}

fn purchase_of(u: usize) -> pb::Event {
    track(
        &format!("u{u}"),
        "purchase_completed",
        &format!("u{u}-buy"),
        &json!({"session_id": format!("s{u}")}),
    )
}

/// Sends `events` in one `Batch` call to the fronts, starting at `front` and moving on to the
/// next front after a failure, until every event is acknowledged (accepted or duplicate).
/// Returns the time each was acknowledged.
async fn deliver(
    fronts: &[IngestServiceClient<Channel>],
    key: &str,
    mut front: usize,
    mut events: Vec<pb::Event>,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked = Vec::new();
    while !events.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "events never acknowledged: {events:?}"
        );
        let mut client = fronts[front % fronts.len()].clone();
        front += 1;
        let request = keyed(
            pb::BatchRequest {
                events: events.clone(),
            },
            key,
        )?;
        let Ok(reply) = client.batch(request).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let now = Instant::now();
        let mut retry = Vec::new();
        for (event, ack) in events.into_iter().zip(reply.into_inner().results) {
            let status = pb::AckStatus::try_from(ack.status)?;
            match status {
                pb::AckStatus::Accepted | pb::AckStatus::Duplicate => {
                    acked.push((event.message_id, now));
                }
                _ if ack.code == "unavailable" || ack.code == "overloaded" => retry.push(event),
                _ => anyhow::bail!("event {} refused: {ack:?}", event.message_id),
            }
        }
        events = retry;
        if !events.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(acked)
}

#[tokio::test]
async fn replicas_on_one_log_lose_nothing_when_one_is_killed_mid_load() -> anyhow::Result<()> {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Ok(nats_url) = std::env::var("JOURNEYS_TEST_NATS_URL") else {
        eprintln!("JOURNEYS_TEST_NATS_URL unset: replica test skipped");
        return Ok(());
    };
    on_each_backend(|database_url| {
        let nats_url = nats_url.clone();
        async move {
            if !database_url.starts_with("mysql") {
                eprintln!("replicas share a MariaDB/MySQL store: skipped on {database_url}");
                return Ok(());
            }
            let cluster = Cluster {
                database_url,
                nats_url,
                stream: format!("jr_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            };
            let outcome = run(&cluster).await;
            let log = journeys_engine::PartitionLog::connect(
                &cluster.nats_url,
                &cluster.stream,
                PARTITIONS,
            )
            .await?;
            log.delete_stream().await?;
            outcome
        }
    })
    .await
}

async fn run(cluster: &Cluster) -> anyhow::Result<()> {
    let sink = Sink::start().await;
    // Started together on the empty database.
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..REPLICAS)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let mut replicas: Vec<Replica> = addrs
        .iter()
        .enumerate()
        .map(|(node, (grpc, http))| cluster.spawn(node, *grpc, *http))
        .collect::<anyhow::Result<_>>()?;
    for replica in &mut replicas {
        replica.serving().await?;
    }

    let mut c = StackClients::connect(replicas[0].grpc, None).await?;
    // The source's id scopes the events' message ids; the oracle replays with it.
    let created = c
        .sources
        .create_source(pb::CreateSourceRequest {
            name: "replicas".into(),
        })
        .await?
        .into_inner();
    let (key, source) = (created.write_key, created.id);
    c.webhook("hook", &sink.url(), None).await?;
    c.register_events(&["order", "checkout_started", "purchase_completed"])
        .await?;
    c.publish(&forward_journey()).await?;
    c.publish(&json!({"journey": {
        "id": "checkout",
        "name": "Checkout nudge",
        "entry": {"event": "checkout_started"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "session_id",
        "start_step": "wait",
        "steps": [
            {"key": "wait", "name": "Wait for purchase", "hold_until": {
                "branches": [{"name": "Bought", "event": "purchase_completed", "next": "bought"}],
                "max_duration": format!("{}s", HOLD.as_secs()),
                "timeout_next": "nudge"
            }},
            {"key": "nudge", "name": "Nudge", "send": {
                "destination_id": "hook",
                "mapping": {"kind": "nudge", "user": {"@path": "$.userId"}},
                "next": "done"
            }},
            {"key": "bought", "name": "Bought", "end": {}},
            {"key": "done", "name": "Nudged", "end": {}}
        ]
    }}))
    .await?;

    let mut fronts = Vec::new();
    for replica in &replicas {
        fronts.push(IngestServiceClient::new(
            Channel::from_shared(format!("http://{}", replica.grpc))?.connect_lazy(),
        ));
    }
    let store = journeys_store::Store::connect(&cluster.database_url).await?;
    // Every replica holds partitions before the load starts.
    eventually(
        "the partitions to spread over the replicas",
        Duration::from_secs(30),
        || {
            let store = &store;
            async move {
                let rows = store.partitions().all().await?;
                let owners: BTreeSet<String> =
                    rows.iter().filter_map(|r| r.owner.clone()).collect();
                let all_owned = rows.iter().all(|r| r.owner.is_some());
                Ok::<_, anyhow::Error>((owners.len() == REPLICAS && all_owned).then_some(()))
            }
        },
    )
    .await;

    // The load: each profile's events in sequence, every round one batch per front.
    let mut acked: BTreeMap<String, Instant> = BTreeMap::new();
    let mut checkout_sent: Option<Instant> = None;
    let mut buying = None;
    let mut killed_partitions = Vec::new();
    let mut restarted = None;
    for seq in 0..EVENTS_PER_PROFILE {
        if seq == 0 {
            checkout_sent = Some(Instant::now());
        }
        let mut rounds = Vec::new();
        for f in 0..REPLICAS {
            let events: Vec<pb::Event> = (0..PROFILES)
                .filter(|u| (u + seq) % REPLICAS == f)
                .map(|u| event_of(u, seq))
                .collect();
            rounds.push(deliver(&fronts, &key, f, events));
        }
        for done in futures::future::join_all(rounds).await {
            acked.extend(done?);
        }
        if seq == 0 {
            // The buyers (even profiles) buy shortly before their hold runs out, whatever
            // the rounds are doing then.
            let fronts = fronts.clone();
            let key = key.clone();
            let at = checkout_sent.unwrap() + BUY_AFTER;
            buying = Some(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let purchases: Vec<pb::Event> = (0..PROFILES).step_by(2).map(purchase_of).collect();
                deliver(&fronts, &key, 0, purchases).await
            }));
        }
        if seq == EVENTS_PER_PROFILE / 3 {
            // SIGKILL replica 1 mid-load, once the purchases are in (a purchase held up by the
            // kill would come after the deadline, and prove nothing); restart it a few seconds
            // later, same node id.
            let purchases = buying.take().expect("the purchases started").await??;
            buying = Some(tokio::spawn(async move { Ok(purchases) }));
            killed_partitions = store
                .partitions()
                .all()
                .await?
                .into_iter()
                .filter(|r| r.owner.as_deref() == Some("node-1"))
                .map(|r| (r.partition, r.epoch))
                .collect();
            replicas[1].kill()?;
            let (grpc, http) = addrs[1];
            let spawned = cluster.spawn(1, grpc, http)?;
            restarted = Some(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                spawned
            }));
        }
    }
    let purchases = buying.unwrap().await??;
    let buy_deadline = checkout_sent.unwrap() + HOLD;
    let in_time: BTreeSet<String> = purchases
        .iter()
        .filter(|(_, at)| *at < buy_deadline)
        .map(|(id, _)| id.trim_end_matches("-buy").to_owned())
        .collect();
    let mut restarted = restarted.unwrap().await?;
    restarted.serving().await?;
    replicas[1] = restarted;

    // Every acknowledged order is forwarded (at least once per idempotency key, each order
    // once), and only those.
    let expected_orders: BTreeSet<String> = acked
        .keys()
        .filter(|id| !id.ends_with("-e0"))
        .cloned()
        .collect();
    let received = eventually(
        "a webhook for every acknowledged order",
        Duration::from_secs(120),
        || {
            let sink = &sink;
            let expected = &expected_orders;
            async move {
                let received = sink.requests();
                let orders: BTreeSet<String> = received
                    .iter()
                    .filter(|r| r.str_field("kind") == "order")
                    .map(|r| format!("{}-e{}", r.str_field("user"), r.body["seq"]))
                    .collect();
                Ok::<_, anyhow::Error>((orders.len() >= expected.len()).then_some(received))
            }
        },
    )
    .await;
    let mut keys_by_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in received.iter().filter(|r| r.str_field("kind") == "order") {
        keys_by_order
            .entry(format!(
                "{}-e{}",
                request.str_field("user"),
                request.body["seq"]
            ))
            .or_default()
            .insert(request.idempotency_key().to_owned());
    }
    let forwarded: BTreeSet<String> = keys_by_order.keys().cloned().collect();
    assert_eq!(
        forwarded, expected_orders,
        "forwarded = acknowledged orders"
    );
    assert!(
        keys_by_order.values().all(|keys| keys.len() == 1),
        "each order applied once: one idempotency key per order"
    );

    // Each profile's orders were applied in its sequence.
    let mut c = StackClients::connect(replicas[0].grpc, None).await?;
    let instances = c.instances_of("forward", "").await?;
    assert_eq!(
        instances.len(),
        expected_orders.len(),
        "one instance per order"
    );
    let mut entered: BTreeMap<String, Vec<(u64, prost_types::Timestamp)>> = BTreeMap::new();
    for i in &instances {
        entered
            .entry(i.user_id.clone())
            .or_default()
            .push((i.unique_value.parse()?, i.entered_at.unwrap_or_default()));
    }
    for (user, mut list) in entered {
        list.sort_by_key(|(seq, _)| *seq);
        let times: Vec<(i64, i32)> = list.iter().map(|(_, t)| (t.seconds, t.nanos)).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{user}'s orders applied out of sequence: {list:?}"
        );
    }

    // No buyer whose purchase was acknowledged before the deadline was nudged.
    tokio::time::sleep(HOLD).await;
    let waiting = Instant::now();
    let reported = std::cell::Cell::new(false);
    let nudged: BTreeSet<String> = eventually("every nudge", Duration::from_secs(60), || {
        let sink = &sink;
        let (waiting, reported, replicas) = (&waiting, &reported, &replicas);
        async move {
            let nudged: BTreeSet<String> = sink
                .requests()
                .iter()
                .filter(|r| r.str_field("kind") == "nudge")
                .map(|r| r.str_field("user").to_owned())
                .collect();
            if waiting.elapsed() > Duration::from_secs(50) && !reported.replace(true) {
                let missing: Vec<String> = (1..PROFILES)
                    .step_by(2)
                    .map(|u| format!("u{u}"))
                    .filter(|u| !nudged.contains(u))
                    .map(|u| format!("{u}-nudge"))
                    .collect();
                report_missing(missing.iter(), replicas);
            }
            // The non-buyers (odd profiles) are all nudged.
            Ok::<_, anyhow::Error>((nudged.len() >= PROFILES / 2).then_some(nudged))
        }
    })
    .await;
    let wrongly: Vec<&String> = nudged.intersection(&in_time).collect();
    assert!(
        wrongly.is_empty(),
        "{} buyers nudged although they bought in time, e.g. {:?}",
        wrongly.len(),
        &wrongly[..wrongly.len().min(5)]
    );
    assert!(
        in_time.len() >= PROFILES / 10,
        "most purchases came in time ({} of {})",
        in_time.len(),
        PROFILES / 2
    );

    // The oracle: each profile's acknowledged events replayed through journeys-core (the
    // SimulateJourney call) give the sends there must be; the sink's idempotency keys and the
    // outbox's keys are exactly those. The checkouts count from when they were sent (no later
    // than applied), the purchases from their acknowledgement (no earlier than applied), so a
    // buyer the replay lets off was surely in time; a purchase acknowledged after that deadline
    // may have been applied before or after the real one, and its nudge is left out of the
    // comparison either way.
    let clock = (std::time::SystemTime::now(), Instant::now());
    let virtual_time = |at: Instant| prost_types::Timestamp::from(clock.0 - (clock.1 - at));
    let mut by_profile: Vec<Vec<pb::SimulatedEvent>> = Vec::new();
    for u in 0..PROFILES {
        let events = (1..EVENTS_PER_PROFILE)
            .filter_map(|seq| {
                let at = acked.get(&format!("u{u}-e{seq}"))?;
                Some(pb::SimulatedEvent {
                    event: Some(event_of(u, seq)),
                    at: Some(virtual_time(*at)),
                    source_id: source.clone(),
                })
            })
            .collect();
        by_profile.push(events);
    }
    let mut expected = replay(&mut c, "forward", by_profile).await?;
    let checkout_at = virtual_time(checkout_sent.unwrap());
    let mut checkouts: Vec<Vec<pb::SimulatedEvent>> = (0..PROFILES)
        .map(|u| {
            vec![pb::SimulatedEvent {
                event: Some(event_of(u, 0)),
                at: Some(checkout_at),
                source_id: source.clone(),
            }]
        })
        .collect();
    let mut undecided = BTreeSet::new();
    for (id, at) in &purchases {
        let u: usize = id
            .trim_start_matches('u')
            .trim_end_matches("-buy")
            .parse()?;
        if *at >= buy_deadline {
            undecided.insert(format!("u{u}"));
        }
        checkouts[u].push(pb::SimulatedEvent {
            event: Some(purchase_of(u)),
            at: Some(virtual_time(*at)),
            source_id: source.clone(),
        });
    }
    let nudges = replay(&mut c, "checkout", checkouts).await?;
    let left_out: BTreeSet<String> = nudges
        .iter()
        .filter(|(user, _)| undecided.contains(user))
        .map(|(_, key)| key.clone())
        .collect();
    expected.extend(nudges);
    let expected: BTreeSet<String> = expected
        .into_iter()
        .map(|(_, key)| key)
        .filter(|key| !left_out.contains(key))
        .collect();
    let sent: BTreeSet<String> = eventually(
        "the sink to receive every send of the replay",
        Duration::from_secs(60),
        || {
            let sink = &sink;
            let expected = &expected;
            async move {
                let sent: BTreeSet<String> = sink
                    .requests()
                    .iter()
                    .map(|r| r.idempotency_key().to_owned())
                    .collect();
                Ok::<_, anyhow::Error>(sent.is_superset(expected).then_some(sent))
            }
        },
    )
    .await;
    let sent: BTreeSet<String> = sent
        .into_iter()
        .filter(|key| !left_out.contains(key))
        .collect();
    let extra: Vec<&String> = sent.difference(&expected).take(5).collect();
    assert!(
        extra.is_empty(),
        "sends the replay does not have, e.g. {extra:?}"
    );
    let outbox: BTreeSet<String> = outbox_keys(&cluster.database_url)
        .await?
        .into_iter()
        .filter(|key| !left_out.contains(key))
        .collect();
    assert_eq!(outbox, expected, "outbox keys = the replay's sends");

    // The killed replica's partitions moved on to newer epochs.
    let rows = store.partitions().all().await?;
    for (partition, epoch) in &killed_partitions {
        assert!(
            rows[*partition as usize].epoch > *epoch,
            "partition {partition} still at epoch {epoch}"
        );
    }
    assert!(!killed_partitions.is_empty(), "node-1 held partitions");

    // ListNodes shows the three live nodes and, once drained, no partition lagging its log.
    let cluster_client = pb::cluster_service_client::ClusterServiceClient::new(
        Channel::from_shared(format!("http://{}", replicas[2].grpc))?.connect_lazy(),
    );
    let view = eventually(
        "every partition caught up with its log",
        Duration::from_secs(30),
        || {
            let mut client = cluster_client.clone();
            async move {
                let view = client
                    .list_nodes(pb::ListNodesRequest::default())
                    .await?
                    .into_inner();
                let drained = view.partitions.iter().all(|p| p.lag == Some(0));
                Ok::<_, anyhow::Error>(drained.then_some(view))
            }
        },
    )
    .await;
    let live: BTreeSet<&str> = view
        .nodes
        .iter()
        .filter(|n| n.live)
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(live, BTreeSet::from(["node-0", "node-1", "node-2"]));
    assert!(view.partitions.iter().all(|p| p.log_seq > 0 && p.held));

    eprintln!(
        "replicas: {} events acknowledged, {} sends as the replay has them ({} undecided left out), {} orders forwarded, {} of {} buyers in time, {} nudged, {} partitions taken over",
        acked.len(),
        expected.len(),
        left_out.len(),
        forwarded.len(),
        in_time.len(),
        PROFILES / 2,
        nudged.len(),
        killed_partitions.len()
    );
    store.close().await?;
    drop(replicas);
    sink.stop().await;
    Ok(())
}

/// Replays each profile's events (a list per profile) through `journey` with SimulateJourney,
/// a few hundred profiles per call, and returns every send as (profile, idempotency key).
async fn replay(
    c: &mut StackClients,
    journey: &str,
    by_profile: Vec<Vec<pb::SimulatedEvent>>,
) -> anyhow::Result<Vec<(String, String)>> {
    /// Below the control plane's 10,000 events per simulation.
    const PER_CALL: usize = 8_000;
    let mut sends = Vec::new();
    let mut chunk: Vec<pb::SimulatedEvent> = Vec::new();
    let mut profiles = by_profile.into_iter().peekable();
    while let Some(events) = profiles.next() {
        chunk.extend(events);
        let full = profiles
            .peek()
            .is_none_or(|next| chunk.len() + next.len() > PER_CALL);
        if !full {
            continue;
        }
        let result = c
            .journeys
            .simulate_journey(pb::SimulateJourneyRequest {
                target: Some(pb::simulate_journey_request::Target::Id(journey.to_owned())),
                events: std::mem::take(&mut chunk),
                ..Default::default()
            })
            .await?
            .into_inner();
        for instance in result.instances {
            for send in instance.sends {
                sends.push((instance.user_id.clone(), send.message_id));
            }
        }
    }
    Ok(sends)
}

/// Every outbox row's idempotency key.
async fn outbox_keys(database_url: &str) -> anyhow::Result<BTreeSet<String>> {
    use sea_orm::{ConnectionTrait as _, Database, Statement};
    let db = Database::connect(database_url).await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT message_id FROM outbox",
        ))
        .await?;
    let keys = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    db.close().await?;
    Ok(keys)
}

/// A NATS server with JetStream of this test's own, on a free port, storing in a directory
/// that outlives its restarts.
struct OwnNats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnNats {
    /// `None` when `nats-server` is not installed (`.ci/run` installs it).
    fn start() -> anyhow::Result<Option<OwnNats>> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return Ok(None);
        }
        let port = free_port()?.port();
        let mut nats = OwnNats {
            child: None,
            port,
            dir: tempfile::tempdir()?,
        };
        nats.restart()?;
        Ok(Some(nats))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(replica: &Replica, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &replica.child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} failed");
    Ok(())
}

/// The value of counter `name` on the replica's `/metrics` (0 when absent).
async fn counter(http: SocketAddr, name: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(http).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// One acknowledged order per call, `u{n % 50}-e{n}`, through `fronts` from `front` on.
async fn order_at(
    fronts: &[IngestServiceClient<Channel>],
    key: &str,
    front: usize,
    n: usize,
) -> anyhow::Result<String> {
    let event = event_of(n % 50, n + 1);
    let acked = deliver(fronts, key, front, vec![event]).await?;
    Ok(acked.into_iter().next().expect("acknowledged").0)
}

#[tokio::test]
async fn a_paused_replica_stops_applying_a_stopped_one_hands_over_and_nats_can_restart()
-> anyhow::Result<()> {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    if std::env::var("JOURNEYS_TEST_NATS_URL").is_err() {
        eprintln!("JOURNEYS_TEST_NATS_URL unset: replica test skipped");
        return Ok(());
    }
    on_each_backend(|database_url| async move {
        if !database_url.starts_with("mysql") {
            eprintln!("replicas share a MariaDB/MySQL store: skipped on {database_url}");
            return Ok(());
        }
        let Some(mut nats) = OwnNats::start()? else {
            eprintln!("nats-server is not installed: skipped");
            return Ok(());
        };
        let cluster = Cluster {
            database_url: database_url.clone(),
            nats_url: nats.url(),
            stream: format!("jf_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        let sink = Sink::start().await;
        let addrs: Vec<(SocketAddr, SocketAddr)> = (0..2)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let mut replicas: Vec<Replica> = addrs
            .iter()
            .enumerate()
            .map(|(node, (grpc, http))| cluster.spawn(node, *grpc, *http))
            .collect::<anyhow::Result<_>>()?;
        for replica in &mut replicas {
            replica.serving().await?;
        }
        let mut c = StackClients::connect(replicas[0].grpc, None).await?;
        let key = c.create_source("replicas").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["order"]).await?;
        c.publish(&forward_journey()).await?;
        let store = journeys_store::Store::connect(&database_url).await?;
        let owners = async || -> anyhow::Result<BTreeMap<String, usize>> {
            let mut owners = BTreeMap::new();
            for row in store.partitions().all().await? {
                *owners.entry(row.owner.unwrap_or_default()).or_default() += 1;
            }
            Ok(owners)
        };
        eventually("both replicas to hold partitions", Duration::from_secs(30), || async {
            let owners = owners().await?;
            Ok::<_, anyhow::Error>((owners.len() == 2 && !owners.contains_key("")).then_some(()))
        })
        .await;
        let fronts: Vec<IngestServiceClient<Channel>> = replicas
            .iter()
            .map(|r| {
                Ok(IngestServiceClient::new(
                    Channel::from_shared(format!("http://{}", r.grpc))?.connect_lazy(),
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let only_first = &fronts[..1];
        let mut acked = BTreeSet::new();
        for n in 0..50 {
            acked.insert(order_at(&fronts, &key, n, n).await?);
        }

        // Zombie: node-1 paused for twice its lease while events keep coming through node-0,
        // stopped while it applies a burst of orders from many profiles (so it has work in
        // hand: a batch being evaluated or committed, others queued).
        let applied_before = counter(addrs[1].1, "journeys_entries_total").await?;
        let burst = tokio::spawn({
            let fronts = only_first.to_vec();
            let key = key.clone();
            async move {
                let batches = (0..30).map(|b| {
                    let events = (0..100).map(|i| event_of(100 + b * 100 + i, 1)).collect();
                    deliver(&fronts, &key, 0, events)
                });
                let mut acked = Vec::new();
                for done in futures::future::join_all(batches).await {
                    acked.extend(done?.into_iter().map(|(id, _)| id));
                }
                anyhow::Ok(acked)
            }
        });
        eventually("node-1 to apply the burst", Duration::from_secs(30), || async {
            let applied = counter(addrs[1].1, "journeys_entries_total").await?;
            Ok::<_, anyhow::Error>((applied > applied_before).then_some(()))
        })
        .await;
        signal(&replicas[1], "STOP")?;
        let paused = Instant::now();
        let mut n = 50;
        while paused.elapsed() < Duration::from_secs(10) {
            acked.insert(order_at(only_first, &key, 0, n).await?);
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // (A partition whose row node-1's open commit locked is taken once the server ends that
        // transaction, 10 s idle.)
        eventually("node-0 to take every partition over", Duration::from_secs(20), || async {
            Ok::<_, anyhow::Error>(
                (owners().await?.get("node-0") == Some(&(PARTITIONS as usize))).then_some(()),
            )
        })
        .await;
        signal(&replicas[1], "CONT")?;
        replicas[1].alive()?;
        let resumed = Instant::now();
        while resumed.elapsed() < Duration::from_secs(2) {
            acked.insert(order_at(only_first, &key, 0, n).await?);
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Its work in hand was refused by the fence, or failed with the connections the
        // server closed while it was paused (nothing it applied after losing the lease is
        // visible: the checks at the end, each order once, all of them forwarded). Which it
        // notices first, a refused commit or its leases lapsed, depends on timing: a refused
        // commit drops the partitions it covered, a lapse drops the work in hand.
        replicas[1].alive()?;
        let (fenced, lapsed) = eventually(
            "node-1 to stop applying (a fenced commit or lapsed leases)",
            Duration::from_secs(15),
            || async {
                let fenced = counter(addrs[1].1, "journeys_engine_fenced_commits_total").await?;
                let lapsed = counter(addrs[1].1, "journeys_engine_lease_lapses_total").await?;
                Ok::<_, anyhow::Error>((fenced + lapsed > 0.0).then_some((fenced, lapsed)))
            },
        )
        .await;
        acked.extend(burst.await??);
        // node-1 takes its share back at new epochs, and both fronts work again.
        eventually("node-1 to rejoin", Duration::from_secs(30), || async {
            Ok::<_, anyhow::Error>(owners().await?.contains_key("node-1").then_some(()))
        })
        .await;
        for m in 0..20 {
            acked.insert(order_at(&fronts, &key, m, n).await?);
            n += 1;
        }

        // Graceful: SIGTERM hands node-1's partitions over well within the 5 s lease.
        let stopping = Instant::now();
        signal(&replicas[1], "TERM")?;
        let handed_over = eventually("node-0 to own every partition", Duration::from_secs(10), || async {
            Ok::<_, anyhow::Error>(
                (owners().await?.get("node-0") == Some(&(PARTITIONS as usize)))
                    .then(|| stopping.elapsed()),
            )
        })
        .await;
        assert!(
            handed_over < Duration::from_secs(4),
            "hand-over took {handed_over:?}, as long as a lease"
        );
        for m in 0..20 {
            acked.insert(order_at(only_first, &key, m, n).await?);
            n += 1;
        }

        // NATS down: ingest answers UNAVAILABLE; nothing acknowledged is lost; ingest resumes.
        nats.kill();
        let mut client = fronts[0].clone();
        let ack = client
            .track(keyed(event_of(7, 10_000), &key)?)
            .await?
            .into_inner();
        assert_eq!(ack.status, pb::AckStatus::Rejected as i32, "{ack:?}");
        assert_eq!(ack.code, "unavailable", "{ack:?}");
        nats.restart()?;
        // The refused event may have reached the log after all (the client library sends what it
        // buffered once NATS is back): resent, as a client does, it is applied once.
        let resent = deliver(only_first, &key, 0, vec![event_of(7, 10_000)]).await?;
        acked.extend(resent.into_iter().map(|(id, _)| id));
        for m in 0..20 {
            acked.insert(order_at(only_first, &key, m, n).await?);
            n += 1;
        }

        let waiting = Instant::now();
        let reported = std::cell::Cell::new(false);
        let forwarded = eventually("every acknowledged order forwarded", Duration::from_secs(120), || {
            let sink = &sink;
            let acked = &acked;
            let (waiting, reported, replicas) = (&waiting, &reported, &replicas);
            async move {
                let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for r in sink.requests() {
                    keys.entry(format!("{}-e{}", r.str_field("user"), r.body["seq"]))
                        .or_default()
                        .insert(r.idempotency_key().to_owned());
                }
                let forwarded: BTreeSet<String> = keys.keys().cloned().collect();
                if waiting.elapsed() > Duration::from_secs(100) && !reported.replace(true) {
                    report_missing(acked.difference(&forwarded), replicas);
                }
                Ok::<_, anyhow::Error>(forwarded.is_superset(acked).then_some(keys))
            }
        })
        .await;
        let extra: Vec<&String> = forwarded.keys().filter(|k| !acked.contains(*k)).collect();
        assert!(extra.is_empty(), "forwarded but never acknowledged: {extra:?}");
        assert!(
            forwarded.values().all(|keys| keys.len() == 1),
            "each order applied once"
        );
        eprintln!(
            "replicas: {} orders acknowledged and forwarded once; the paused node: {lapsed} lapsed leases, {fenced} fenced batches; hand-over in {handed_over:?}",
            acked.len()
        );
        store.close().await?;
        drop(replicas);
        sink.stop().await;
        let log =
            journeys_engine::PartitionLog::connect(&nats.url(), &cluster.stream, PARTITIONS).await?;
        log.delete_stream().await?;
        Ok(())
    })
    .await
}

/// The first `<prefix>-<n>` whose partition `node` owns in `rows`.
fn id_owned_by(rows: &[journeys_store::PartitionRecord], node: &str, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| {
            let p = journeys_core::partition::partition_of(id, PARTITIONS);
            rows.iter()
                .any(|r| r.partition == p && r.owner.as_deref() == Some(node))
        })
        .unwrap()
}

#[tokio::test]
async fn an_anonymous_checkout_linked_on_another_replica_takes_the_users_purchase()
-> anyhow::Result<()> {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Ok(nats_url) = std::env::var("JOURNEYS_TEST_NATS_URL") else {
        eprintln!("JOURNEYS_TEST_NATS_URL unset: replica test skipped");
        return Ok(());
    };
    on_each_backend(|database_url| {
        let nats_url = nats_url.clone();
        async move {
            if !database_url.starts_with("mysql") {
                eprintln!("replicas share a MariaDB/MySQL store: skipped on {database_url}");
                return Ok(());
            }
            let cluster = Cluster {
                database_url,
                nats_url,
                stream: format!("ji_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            };
            let outcome = link_across_replicas(&cluster).await;
            let log = journeys_engine::PartitionLog::connect(
                &cluster.nats_url,
                &cluster.stream,
                PARTITIONS,
            )
            .await?;
            log.delete_stream().await?;
            outcome
        }
    })
    .await
}

/// Two replicas: the anonymous id's partition on node-0, the user's on node-1. The shopper
/// checks out anonymously through node-1, logs in and buys through node-0: the hold takes the
/// purchase (no nudge), and either replica's `GetProfile` finds the user by the anonymous id.
async fn link_across_replicas(cluster: &Cluster) -> anyhow::Result<()> {
    let sink = Sink::start().await;
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..2)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let mut replicas: Vec<Replica> = addrs
        .iter()
        .enumerate()
        .map(|(node, (grpc, http))| cluster.spawn(node, *grpc, *http))
        .collect::<anyhow::Result<_>>()?;
    for replica in &mut replicas {
        replica.serving().await?;
    }
    let mut c = StackClients::connect(replicas[0].grpc, None).await?;
    let key = c.create_source("identities").await?;
    c.webhook("hook", &sink.url(), None).await?;
    c.register_events(&["checkout_started", "purchase_completed"])
        .await?;
    c.publish(&json!({"journey": {
        "id": "checkout",
        "name": "Checkout nudge",
        "entry": {"event": "checkout_started"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "session_id",
        "start_step": "wait",
        "steps": [
            {"key": "wait", "name": "Wait for purchase", "hold_until": {
                "branches": [{"name": "Bought", "event": "purchase_completed", "next": "thanks"}],
                "max_duration": "4s",
                "timeout_next": "nudge"
            }},
            {"key": "nudge", "name": "Nudge", "send": {
                "destination_id": "hook",
                "mapping": {"kind": "nudge", "user": {"@path": "$.userId"}}
            }},
            {"key": "thanks", "name": "Thanks", "send": {
                "destination_id": "hook",
                "traits": ["email"],
                "mapping": {"kind": "thanks", "user": {"@path": "$.userId"}, "email": {"@path": "$.properties.email"}}
            }}
        ]
    }}))
    .await?;
    let store = journeys_store::Store::connect(&cluster.database_url).await?;
    let rows = eventually(
        "both replicas to hold partitions",
        Duration::from_secs(30),
        || {
            let store = &store;
            async move {
                let rows = store.partitions().all().await?;
                let owners: BTreeSet<String> =
                    rows.iter().filter_map(|r| r.owner.clone()).collect();
                let spread = owners.len() == 2 && rows.iter().all(|r| r.owner.is_some());
                Ok::<_, anyhow::Error>(spread.then_some(rows))
            }
        },
    )
    .await;
    let anon = id_owned_by(&rows, "node-0", "anon");
    let user = id_owned_by(&rows, "node-1", "user");
    let mut fronts: Vec<IngestServiceClient<Channel>> = Vec::new();
    for replica in &replicas {
        fronts.push(IngestServiceClient::new(
            Channel::from_shared(format!("http://{}", replica.grpc))?.connect_lazy(),
        ));
    }
    let accepted = |ack: pb::Ack| {
        anyhow::ensure!(ack.status == pb::AckStatus::Accepted as i32, "{ack:?}");
        Ok(())
    };
    let anonymous = |event: pb::Event| pb::Event {
        user_id: String::new(),
        anonymous_id: anon.clone(),
        ..event
    };
    let identify = pb::Event {
        r#type: pb::EventType::Identify as i32,
        message_id: "a-1".into(),
        traits: Some(journeys_control_plane::convert::json::json_to_struct(
            &json!({"email": "ann@example.com"}),
        )),
        ..Default::default()
    };
    accepted(
        fronts[1]
            .identify(keyed(anonymous(identify.clone()), &key)?)
            .await?
            .into_inner(),
    )?;
    let started = track("", "checkout_started", "a-2", &json!({"session_id": "s1"}));
    accepted(
        fronts[1]
            .track(keyed(anonymous(started), &key)?)
            .await?
            .into_inner(),
    )?;
    let login = pb::Event {
        user_id: user.clone(),
        anonymous_id: anon.clone(),
        message_id: "u-1".into(),
        traits: None,
        ..identify
    };
    accepted(fronts[0].identify(keyed(login, &key)?).await?.into_inner())?;
    let bought = track(
        &user,
        "purchase_completed",
        "u-2",
        &json!({"session_id": "s1"}),
    );
    accepted(fronts[0].track(keyed(bought, &key)?).await?.into_inner())?;

    let received = sink.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(
        received[0].str_field("kind"),
        "thanks",
        "{:?}",
        received[0].body
    );
    assert_eq!(received[0].str_field("user"), user);
    assert_eq!(received[0].str_field("email"), "ann@example.com");
    // Past the hold: no nudge.
    let all = sink.settle(Duration::from_secs(6)).await;
    assert_eq!(
        all.len(),
        1,
        "{:?}",
        all.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    for replica in &replicas {
        let mut c = StackClients::connect(replica.grpc, None).await?;
        let p = c
            .profiles
            .get_profile(pb::GetProfileRequest {
                anonymous_id: anon.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(p.user_id, user);
        let ids: Vec<&str> = p.identities.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, [anon.as_str()]);
    }
    drop(replicas);
    sink.stop().await;
    Ok(())
}
