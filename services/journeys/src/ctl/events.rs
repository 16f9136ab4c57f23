//! `journeys events send`: streams a JSON-lines file of events over `IngestService/Ingest`.
//!
//! The file is read twice, never held in memory: once to check every line (a bad line fails
//! the command before anything is sent), then to send it in batches with a bounded window of
//! batches awaiting their acknowledgement. The server answers each request, in order, once
//! its events are committed; events refused with a retryable code (`rate_limited`,
//! `overloaded`, `unavailable`) are sent again after a pause, under the same message id (an
//! event without one is given one here, so that a resend is recognised). Progress goes to
//! stderr, a live line on a terminal and a plain line every few seconds otherwise; the summary
//! goes to stdout.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use journeys_proto::v1 as pb;
use journeys_proto::v1::ingest_request::Payload;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::client::Global;
use super::error::{Error, Result};
use super::input::{self, Lines};
use super::output::{Format, Table, out};

pub const EXAMPLES: &str = "\
Each line of the file is one event, as Segment writes them:
  {\"type\":\"track\",\"userId\":\"u1\",\"event\":\"checkout_started\",\"properties\":{\"session_id\":\"s1\"}}
  {\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"ada@example.com\"}}

Examples:
  journeys events send --write-key \"$WRITE_KEY\" -f events.jsonl
  journeys events send -f events.jsonl -o json        # with JOURNEYS_WRITE_KEY set
  journeys --addr http://data-plane:50052 events send -f events.jsonl";

/// Codes the server marks retryable: the event was not taken, send it again later.
const RETRYABLE: [&str; 3] = ["rate_limited", "overloaded", "unavailable"];

/// Rejections kept to show in the summary.
const SHOWN_REJECTIONS: usize = 5;

/// The verbs of `journeys events`.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Send every event of a JSON-lines file and wait until each is acknowledged
    Send {
        /// A source's write key
        #[arg(long, env = "JOURNEYS_WRITE_KEY", hide_env_values = true)]
        write_key: String,
        /// The events, one JSON object per line
        #[arg(short = 'f', long = "file", value_name = "EVENTS.jsonl")]
        file: PathBuf,
        /// Events per request (at most 2,500, the server's limit)
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=2500))]
        batch: u16,
        /// Requests awaiting their acknowledgement at once
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
        window: u16,
        /// How often an event refused with a retryable code is sent again
        #[arg(long, default_value_t = 10)]
        retries: u32,
        /// Seconds between progress lines when stderr is not a terminal (0: none)
        #[arg(long, value_name = "SECONDS", default_value_t = 5)]
        progress_every: u64,
    },
}

pub async fn run(global: &Global, verb: Verb) -> Result<()> {
    let Verb::Send {
        write_key,
        file,
        batch,
        window,
        retries,
        progress_every,
    } = verb;
    if write_key.is_empty() {
        return Err(Error::usage(
            "--write-key (or JOURNEYS_WRITE_KEY) is required",
        ));
    }
    let total = check_file(&file)?;
    let key = write_key
        .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
        .map_err(|_| Error::usage("--write-key holds characters a header cannot carry"))?;
    let mut client = global.ingest().await?;

    let (requests, outbound) = mpsc::channel(usize::from(window) + 1);
    let mut request = tonic::Request::new(ReceiverStream::new(outbound));
    request.metadata_mut().insert("x-write-key", key);
    // The server answers once it has read the write key; the first batch may wait for that.
    let mut sender = Sender {
        lines: Lines::open(&file)?,
        requests,
        batch: usize::from(batch),
        window: usize::from(window),
        retries,
        in_flight: VecDeque::new(),
        retry: VecDeque::new(),
        eof: false,
        counts: Counts::default(),
    };
    let progress_every = (progress_every > 0).then(|| Duration::from_secs(progress_every));
    let mut progress = Progress::new(total, progress_every);
    sender.fill().await?;
    let mut responses = client.ingest(request).await?.into_inner();
    let mut tick = tokio::time::interval(progress.interval());
    loop {
        sender.fill().await?;
        if sender.finished() {
            break;
        }
        let next_retry = sender.retry.front().map(|(due, _)| *due);
        tokio::select! {
            message = responses.message() => match message {
                Ok(Some(response)) => sender.acknowledged(response.acks),
                Ok(None) => return Err(sender.cut_short("the server ended the stream")),
                Err(status) => {
                    progress.clear();
                    return Err(sender.cut_short(&format!("the stream failed: {}", Error::from(status))));
                }
            },
            () = sleep_until(next_retry), if next_retry.is_some() => {}
            _ = tick.tick() => progress.show(&sender.counts),
        }
    }
    drop(sender.requests);
    // The server ends its side once ours is closed and every answer is out.
    while let Ok(Some(_)) = responses.message().await {}
    progress.clear();
    summary(global.output, &file, &sender.counts, progress.elapsed())
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// Checks every line of `path`; the number of events.
fn check_file(path: &Path) -> Result<u64> {
    if path == Path::new("-") {
        return Err(Error::usage(
            "events send reads a file (it is read twice: checked, then sent); save stdin to a file first",
        ));
    }
    let mut lines = Lines::open(path)?;
    let mut count = 0;
    while let Some((number, value)) = lines.next_value()? {
        input::event(value).map_err(|e| lines.error(number, &e))?;
        count += 1;
    }
    if count == 0 {
        return Err(Error::usage(format!("{} holds no events", path.display())));
    }
    Ok(count)
}

/// One event on its way: its line and how often it was sent.
struct Pending {
    line: usize,
    attempt: u32,
    event: pb::Event,
}

/// What happened to the events so far.
#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    retried: u64,
    by_code: BTreeMap<String, u64>,
    shown: Vec<String>,
}

impl Counts {
    fn answered(&self) -> u64 {
        self.accepted + self.duplicates + self.rejected
    }
}

/// The sending side of one stream.
struct Sender {
    lines: Lines,
    requests: mpsc::Sender<pb::IngestRequest>,
    batch: usize,
    window: usize,
    retries: u32,
    /// Requests sent and not answered yet, oldest first (the server answers in order).
    in_flight: VecDeque<Vec<Pending>>,
    /// Events to send again, each batch with the time it is due.
    retry: VecDeque<(Instant, Vec<Pending>)>,
    eof: bool,
    counts: Counts,
}

impl Sender {
    fn finished(&self) -> bool {
        self.eof && self.in_flight.is_empty() && self.retry.is_empty()
    }

    /// Sends requests until the window is full: due retries first, then the file.
    async fn fill(&mut self) -> Result<()> {
        while self.in_flight.len() < self.window {
            let batch = match self.retry.front() {
                Some((due, _)) if *due <= Instant::now() => {
                    self.retry.pop_front().map(|(_, b)| b).unwrap_or_default()
                }
                _ if !self.eof => self.read_batch()?,
                _ => break,
            };
            if batch.is_empty() {
                continue;
            }
            let events = batch.iter().map(|p| p.event.clone()).collect();
            self.counts.sent += u64::try_from(batch.len()).unwrap_or(u64::MAX);
            self.requests
                .send(pb::IngestRequest {
                    payload: Some(Payload::Batch(pb::EventBatch { events })),
                })
                .await
                .map_err(|_| Error::Failed("the stream closed while sending".to_owned()))?;
            self.in_flight.push_back(batch);
        }
        Ok(())
    }

    fn read_batch(&mut self) -> Result<Vec<Pending>> {
        let mut batch = Vec::with_capacity(self.batch);
        while batch.len() < self.batch {
            let Some((line, value)) = self.lines.next_value()? else {
                self.eof = true;
                break;
            };
            let mut event = input::event(value).map_err(|e| self.lines.error(line, &e))?;
            if event.message_id.is_empty() {
                event.message_id = uuid::Uuid::new_v4().to_string();
            }
            batch.push(Pending {
                line,
                attempt: 0,
                event,
            });
        }
        Ok(batch)
    }

    /// Counts the answer to the oldest request, and schedules retryable refusals again.
    fn acknowledged(&mut self, acks: Vec<pb::Ack>) {
        let batch = self.in_flight.pop_front().unwrap_or_default();
        let mut by_id: HashMap<String, Vec<Pending>> = HashMap::new();
        for pending in batch {
            by_id
                .entry(pending.event.message_id.clone())
                .or_default()
                .push(pending);
        }
        let mut again = Vec::new();
        for ack in acks {
            let pending = by_id.get_mut(&ack.message_id).and_then(Vec::pop);
            match pb::AckStatus::try_from(ack.status) {
                Ok(pb::AckStatus::Accepted) => self.counts.accepted += 1,
                Ok(pb::AckStatus::Duplicate) => self.counts.duplicates += 1,
                _ => match pending {
                    Some(mut pending)
                        if RETRYABLE.contains(&ack.code.as_str())
                            && pending.attempt < self.retries =>
                    {
                        pending.attempt += 1;
                        self.counts.retried += 1;
                        self.counts.sent -= 1;
                        again.push(pending);
                    }
                    pending => self.rejected(&ack, pending.map(|p| p.line)),
                },
            }
        }
        if !again.is_empty() {
            let attempt = again.iter().map(|p| p.attempt).max().unwrap_or(1);
            self.retry
                .push_back((Instant::now() + backoff(attempt), again));
        }
    }

    fn rejected(&mut self, ack: &pb::Ack, line: Option<usize>) {
        self.counts.rejected += 1;
        *self.counts.by_code.entry(ack.code.clone()).or_default() += 1;
        if self.counts.shown.len() < SHOWN_REJECTIONS {
            let at = line.map_or_else(String::new, |l| format!("line {l}, "));
            self.counts.shown.push(format!(
                "{at}message {}: {}: {}",
                ack.message_id, ack.code, ack.message
            ));
        }
    }

    /// The error of a stream that ended before every event was answered.
    fn cut_short(&self, why: &str) -> Error {
        let waiting: usize = self.in_flight.iter().map(Vec::len).sum();
        Error::Failed(format!(
            "{why}; {} events were answered ({} accepted, {} duplicates, {} rejected), {waiting} \
             sent were not; send the file again: events with a message id are not taken twice",
            self.counts.answered(),
            self.counts.accepted,
            self.counts.duplicates,
            self.counts.rejected,
        ))
    }
}

/// Pause before the `attempt`th resend: 100 ms doubling, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

/// The progress line on stderr.
struct Progress {
    started: Instant,
    total: u64,
    terminal: bool,
    /// Seconds between plain lines when stderr is no terminal; `None`: none.
    every: Option<Duration>,
    last_plain: Instant,
    drawn: bool,
}

impl Progress {
    fn new(total: u64, every: Option<Duration>) -> Self {
        let now = Instant::now();
        Self {
            started: now,
            total,
            terminal: std::io::stderr().is_terminal(),
            every,
            last_plain: now,
            drawn: false,
        }
    }

    /// How often to look at the counts.
    fn interval(&self) -> Duration {
        if self.terminal {
            Duration::from_millis(200)
        } else {
            self.every
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(1))
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn line(&self, counts: &Counts) -> String {
        let seconds = self.elapsed().as_secs_f64().max(0.001);
        #[allow(clippy::cast_precision_loss, reason = "a rate for people")]
        let rate = counts.answered() as f64 / seconds;
        #[allow(clippy::cast_precision_loss, reason = "a percentage for people")]
        let percent = counts.answered() as f64 * 100.0 / self.total.max(1) as f64;
        format!(
            "{answered}/{total} ({percent:.0}%)  {rate:.0} events/s  acknowledged {accepted}  \
             duplicates {duplicates}  rejected {rejected}{retried}",
            answered = counts.answered(),
            total = self.total,
            accepted = counts.accepted,
            duplicates = counts.duplicates,
            rejected = counts.rejected,
            retried = if counts.retried > 0 {
                format!("  retried {}", counts.retried)
            } else {
                String::new()
            },
        )
    }

    fn show(&mut self, counts: &Counts) {
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r\x1b[2K{}", self.line(counts));
            self.drawn = true;
        } else if let Some(every) = self.every
            && self.last_plain.elapsed() >= every
        {
            self.last_plain = Instant::now();
            let _ = writeln!(stderr, "{}", self.line(counts));
        }
        let _ = stderr.flush();
    }

    /// Removes the live line, so the summary starts on a clean line.
    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}

fn summary(format: Format, file: &Path, counts: &Counts, elapsed: Duration) -> Result<()> {
    let seconds = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "a rate for people")]
    let rate = counts.answered() as f64 / seconds.max(0.001);
    let value = json!({
        "file": file.display().to_string(),
        "events": counts.answered(),
        "acknowledged": counts.accepted,
        "duplicates": counts.duplicates,
        "rejected": counts.rejected,
        "rejectedByCode": counts.by_code,
        "retried": counts.retried,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "eventsPerSecond": rate.round(),
    });
    match format {
        Format::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )),
        Format::Yaml => out(&serde_yaml_ng::to_string(&value).unwrap_or_default()),
        Format::Table => {
            let mut table = Table::new(&[
                "EVENTS",
                "ACKNOWLEDGED",
                "DUPLICATES",
                "REJECTED",
                "SECONDS",
                "EVENTS/S",
            ]);
            table.row(vec![
                counts.answered().to_string(),
                counts.accepted.to_string(),
                counts.duplicates.to_string(),
                counts.rejected.to_string(),
                format!("{seconds:.1}"),
                format!("{rate:.0}"),
            ]);
            out(&table.render());
        }
    }
    if counts.rejected == 0 {
        return Ok(());
    }
    let codes = counts
        .by_code
        .iter()
        .map(|(code, n)| format!("{n} {code}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut message = format!(
        "{} of {} events were rejected ({codes})",
        counts.rejected,
        counts.answered()
    );
    for shown in &counts.shown {
        message.push_str("\n  ");
        message.push_str(shown);
    }
    Err(Error::Failed(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_back_off_up_to_five_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
