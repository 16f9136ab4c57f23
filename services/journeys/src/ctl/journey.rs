//! `journeys journey …`: definitions and their lifecycle, validation, statistics and
//! simulation.
//!
//! `apply` is idempotent: the definition in the file is compared with the stored one through
//! the same conversion the control plane reads definitions with
//! (`journeys_proto::convert::journey_in`), so spelling differences that mean the same journey
//! (a default left out, `"3600s"` for one hour) change nothing.

use std::path::PathBuf;

use clap::Subcommand;
use journeys_proto::convert::journey_in;
use journeys_proto::v1 as pb;
use journeys_proto::v1::step::Kind;

use super::client::{Clients, Global};
use super::error::{Error, Problem, Result};
use super::input;
use super::output::{Table, duration, one_line, or_dash, out, print_message, time};

pub const EXAMPLES: &str = "\
Examples:
  journeys journey apply -f examples/abandoned-checkout.json
  journeys journey validate -f my-journey.yaml
  journeys journey list --state published
  journeys journey get abandoned-checkout -o yaml > journey.yaml
  journeys journey publish abandoned-checkout
  journeys journey publish abandoned-checkout-v2 --replaces abandoned-checkout --exclude-active
  journeys journey stats abandoned-checkout
  journeys journey archive abandoned-checkout --mode exit
  journeys journey duplicate abandoned-checkout --name 'Abandoned checkout v2'
  journeys journey simulate -f examples/abandoned-checkout.json --events events.jsonl";

/// The verbs of `journeys journey`.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Create the journey of FILE as a draft, or update the draft it names (by `id`, else by
    /// `name`); applying an unchanged file changes nothing
    #[command(after_help = "\
FILE holds a Journey, or a CreateJourney request ({\"journey\": {…}}, as in examples/), in the
proto3 JSON mapping grpcurl uses, as JSON or YAML. Published journeys never change: apply a
changed definition to a duplicate.

Examples:
  journeys journey apply -f examples/abandoned-checkout.json
  journeys journey get my-journey -o yaml > j.yaml && $EDITOR j.yaml && journeys journey apply -f j.yaml")]
    Apply {
        /// The definition, JSON or YAML (`-` for stdin)
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Check a definition (a file, or a stored journey) and its references; every problem is
    /// listed with its path, and the exit code is 2 when there is any
    #[command(after_help = "\
Examples:
  journeys journey validate -f my-journey.json
  journeys journey validate abandoned-checkout")]
    Validate {
        /// The definition, JSON or YAML
        #[arg(
            short = 'f',
            long = "file",
            value_name = "FILE",
            required_unless_present = "id",
            conflicts_with = "id"
        )]
        file: Option<PathBuf>,
        /// A stored journey instead of a file
        id: Option<String>,
    },
    /// List journeys
    List {
        /// Only journeys in this state
        #[arg(long, value_enum)]
        state: Option<State>,
    },
    /// Show a journey: its entry, rules and steps
    Get { id: String },
    /// Publish a draft; from then on it is immutable
    Publish {
        id: String,
        /// A published journey this one replaces: in one step this one takes the entries
        /// from then on and that one is archived (see --mode)
        #[arg(long, value_name = "ID")]
        replaces: Option<String>,
        /// How the replaced journey is archived: `drain` lets its active instances run to
        /// their end, `exit` ends them now
        #[arg(long, value_enum, requires = "replaces")]
        mode: Option<Mode>,
        /// Keep profiles with an instance still active in the replaced journey from entering
        /// this one until it ends (drain mode)
        #[arg(long, requires = "replaces")]
        exclude_active: bool,
    },
    /// Stop new entries of a published journey
    Archive {
        id: String,
        /// `drain` lets active instances run to their end; `exit` ends them now
        #[arg(long, value_enum, default_value_t = Mode::Drain)]
        mode: Mode,
    },
    /// Copy a journey into a new draft
    Duplicate {
        id: String,
        /// Name of the copy (default: derived from the original's)
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a draft
    Delete { id: String },
    /// Counts per step (entered, waiting, completed, exited, failed), send (sent, failed,
    /// dead-lettered), branch (taken, share), exit reason and skip reason
    #[command(after_help = "\
Examples:
  journeys journey stats abandoned-checkout
  journeys journey stats abandoned-checkout --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z --hourly")]
    Stats {
        id: String,
        /// Only the hours from this time on (RFC 3339; rounded down to its hour)
        #[arg(long)]
        from: Option<String>,
        /// Only the hours before this time (RFC 3339)
        #[arg(long)]
        to: Option<String>,
        /// Also print the entries of each hour
        #[arg(long)]
        hourly: bool,
    },
    /// Run a definition over events on a virtual clock; nothing is stored or sent
    #[command(after_help = "\
EVENTS holds one event per line, as `journeys events send` reads them, optionally wrapped with
the virtual time it arrives at: {\"event\": {…}, \"at\": \"2025-01-31T12:00:00Z\"}.

Examples:
  journeys journey simulate -f examples/abandoned-checkout.json --events checkout.jsonl
  journeys journey simulate --id abandoned-checkout --events checkout.jsonl -o json")]
    Simulate {
        /// The definition to run, JSON or YAML
        #[arg(
            short = 'f',
            long = "file",
            value_name = "FILE",
            required_unless_present = "id",
            conflicts_with = "id"
        )]
        file: Option<PathBuf>,
        /// A stored journey instead of a file
        #[arg(long)]
        id: Option<String>,
        /// The events, one JSON object per line
        #[arg(long, value_name = "EVENTS.jsonl")]
        events: PathBuf,
    },
}

/// Journey states, as `--state` takes them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum State {
    Draft,
    Published,
    Archived,
}

/// Archive modes, as `--mode` takes them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Drain,
    Exit,
}

impl Mode {
    fn proto(self) -> pb::ArchiveMode {
        match self {
            Mode::Drain => pb::ArchiveMode::Drain,
            Mode::Exit => pb::ArchiveMode::Exit,
        }
    }
}

pub async fn run(global: &Global, verb: Verb) -> Result<()> {
    // Files are read before connecting: a bad file fails the same with or without a server.
    let mut clients = match &verb {
        Verb::Apply { file } => {
            let journey = input::journey(file)?;
            return apply(global, &mut global.clients().await?, journey).await;
        }
        Verb::Validate {
            file: Some(file), ..
        } => {
            let journey = input::journey(file)?;
            let target = pb::validate_journey_request::Target::Journey(journey);
            return validate(global, &mut global.clients().await?, target, file.display()).await;
        }
        Verb::Simulate {
            file, id, events, ..
        } => {
            let target = match (file, id) {
                (Some(file), _) => {
                    pb::simulate_journey_request::Target::Journey(input::journey(file)?)
                }
                (None, Some(id)) => pb::simulate_journey_request::Target::Id(id.clone()),
                (None, None) => return Err(Error::usage("give -f FILE or --id ID")),
            };
            let events = simulated_events(events)?;
            return simulate(global, &mut global.clients().await?, target, events).await;
        }
        _ => global.clients().await?,
    };
    let c = &mut clients;
    match verb {
        Verb::Apply { .. } | Verb::Simulate { .. } => Ok(()),
        Verb::Validate { id, .. } => {
            let id = id.unwrap_or_default();
            let target = pb::validate_journey_request::Target::Id(id.clone());
            validate(global, c, target, format!("journey '{id}'")).await
        }
        Verb::List { state } => list(global, c, state).await,
        Verb::Get { id } => get(global, c, &id).await,
        verb @ (Verb::Publish { .. } | Verb::Archive { .. } | Verb::Duplicate { .. }) => {
            lifecycle(global, c, verb).await
        }
        Verb::Delete { id } => {
            c.journeys
                .delete_journey(pb::DeleteJourneyRequest { id: id.clone() })
                .await?;
            out(&format!("journey/{id} deleted\n"));
            Ok(())
        }
        Verb::Stats {
            id,
            from,
            to,
            hourly,
        } => {
            let request = pb::GetJourneyStatsRequest {
                id,
                from: time_flag("--from", from.as_deref())?,
                to: time_flag("--to", to.as_deref())?,
                hourly,
            };
            stats(global, c, request).await
        }
    }
}

/// `publish`, `archive` and `duplicate`.
async fn lifecycle(global: &Global, c: &mut Clients, verb: Verb) -> Result<()> {
    let (journey, what) = match verb {
        Verb::Publish {
            id,
            replaces,
            mode,
            exclude_active,
        } => {
            let what = match &replaces {
                Some(old) => format!("published, replacing journey/{old}"),
                None => "published".to_owned(),
            };
            let request = pb::PublishJourneyRequest {
                id,
                replaces: replaces.unwrap_or_default(),
                replace_mode: mode.map_or(pb::ArchiveMode::Unspecified, Mode::proto) as i32,
                exclude_active,
            };
            (c.journeys.publish_journey(request).await?, what)
        }
        Verb::Archive { id, mode } => {
            let request = pb::ArchiveJourneyRequest {
                id,
                mode: mode.proto() as i32,
            };
            (
                c.journeys.archive_journey(request).await?,
                "archived".to_owned(),
            )
        }
        Verb::Duplicate { id, name } => {
            let request = pb::DuplicateJourneyRequest {
                id: id.clone(),
                name: name.unwrap_or_default(),
            };
            (
                c.journeys.duplicate_journey(request).await?,
                format!("created (a draft copy of {id})"),
            )
        }
        _ => return Ok(()),
    };
    done(global, &journey.into_inner(), &what)
}

/// Prints `journey/<id> <what>`, or the journey in JSON or YAML.
fn done(global: &Global, journey: &pb::Journey, what: &str) -> Result<()> {
    if !print_message(global.output, journey)? {
        out(&format!("journey/{} {what}\n", journey.id));
    }
    Ok(())
}

/// The stored journey `journey` names: by id when it has one, else by name.
async fn find(c: &mut Clients, journey: &pb::Journey) -> Result<Option<pb::Journey>> {
    if !journey.id.is_empty() {
        let request = pb::GetJourneyRequest {
            id: journey.id.clone(),
        };
        return match c.journeys.get_journey(request).await {
            Ok(found) => Ok(Some(found.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        };
    }
    if journey.name.is_empty() {
        return Err(Error::Invalid {
            message: "the journey has neither an id nor a name to apply it by".to_owned(),
            problems: vec![Problem {
                path: "name".to_owned(),
                message: "required".to_owned(),
            }],
        });
    }
    Ok(all_journeys(c, None)
        .await?
        .into_iter()
        .find(|j| j.name == journey.name))
}

/// Whether two journeys define the same thing, read as the control plane reads them.
fn same_definition(a: &pb::Journey, b: &pb::Journey) -> bool {
    let (mut pa, mut pb) = (Vec::new(), Vec::new());
    let da = journey_in::definition(a, &mut pa);
    let db = journey_in::definition(b, &mut pb);
    pa.is_empty() && pb.is_empty() && da == db
}

async fn apply(global: &Global, c: &mut Clients, mut journey: pb::Journey) -> Result<()> {
    let Some(current) = find(c, &journey).await? else {
        let created = c
            .journeys
            .create_journey(pb::CreateJourneyRequest {
                journey: Some(journey),
            })
            .await?
            .into_inner();
        return done(global, &created, "created");
    };
    if same_definition(&current, &journey) {
        return done(global, &current, "unchanged");
    }
    if current.state != pb::JourneyState::Draft as i32 {
        return Err(Error::Failed(format!(
            "journey/{id} is {state} and never changes; to change it, make a draft copy \
             (`journeys journey duplicate {id}`) and apply the file to the copy",
            id = current.id,
            state = state_name(current.state).to_ascii_lowercase(),
        )));
    }
    journey.id.clone_from(&current.id);
    // The file is the definition wanted, whatever revision it was read at.
    journey.revision = 0;
    let updated = c
        .journeys
        .update_journey(pb::UpdateJourneyRequest {
            journey: Some(journey),
        })
        .await?
        .into_inner();
    done(
        global,
        &updated,
        &format!("configured (revision {})", updated.revision),
    )
}

async fn validate(
    global: &Global,
    c: &mut Clients,
    target: pb::validate_journey_request::Target,
    what: impl std::fmt::Display,
) -> Result<()> {
    let response = c
        .journeys
        .validate_journey(pb::ValidateJourneyRequest {
            target: Some(target),
        })
        .await?
        .into_inner();
    let printed = print_message(global.output, &response)?;
    if response.problems.is_empty() {
        if !printed {
            out(&format!("{what} is valid\n"));
        }
        return Ok(());
    }
    let count = response.problems.len();
    Err(Error::Invalid {
        message: format!(
            "{what} has {count} problem{}",
            if count == 1 { "" } else { "s" }
        ),
        problems: response
            .problems
            .into_iter()
            .map(|p| Problem {
                path: p.path,
                message: p.message,
            })
            .collect(),
    })
}

/// Every journey (in `state`), all pages.
async fn all_journeys(c: &mut Clients, state: Option<State>) -> Result<Vec<pb::Journey>> {
    let state = match state {
        None => pb::JourneyState::Unspecified,
        Some(State::Draft) => pb::JourneyState::Draft,
        Some(State::Published) => pb::JourneyState::Published,
        Some(State::Archived) => pb::JourneyState::Archived,
    };
    let mut journeys = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .journeys
            .list_journeys(pb::ListJourneysRequest {
                state: state as i32,
                page_size: 0,
                page_token,
            })
            .await?
            .into_inner();
        journeys.extend(page.journeys);
        if page.next_page_token.is_empty() {
            return Ok(journeys);
        }
        page_token = page.next_page_token;
    }
}

async fn list(global: &Global, c: &mut Clients, state: Option<State>) -> Result<()> {
    let journeys = all_journeys(c, state).await?;
    let response = pb::ListJourneysResponse {
        journeys,
        next_page_token: String::new(),
    };
    if print_message(global.output, &response)? {
        return Ok(());
    }
    let mut table = Table::new(&["ID", "NAME", "STATE", "REVISION", "ENTRY", "UPDATED"]);
    for j in &response.journeys {
        table.row(vec![
            j.id.clone(),
            j.name.clone(),
            state_name(j.state).to_owned(),
            j.revision.to_string(),
            j.entry
                .as_ref()
                .map(|e| e.event.clone())
                .unwrap_or_default(),
            time(j.updated_at.as_ref()),
        ]);
    }
    out(&table.render());
    Ok(())
}

pub fn state_name(state: i32) -> &'static str {
    pb::JourneyState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name())
}

async fn get(global: &Global, c: &mut Clients, id: &str) -> Result<()> {
    let journey = c
        .journeys
        .get_journey(pb::GetJourneyRequest { id: id.to_owned() })
        .await?
        .into_inner();
    if print_message(global.output, &journey)? {
        return Ok(());
    }
    out(&describe(&journey));
    Ok(())
}

/// A journey for people: its facts, then one row per step.
fn describe(j: &pb::Journey) -> String {
    let mut facts = Table::new(&["ID:", &j.id]);
    let entry = j.entry.clone().unwrap_or_default();
    let rule = match pb::EntryRule::try_from(j.entry_rule) {
        Ok(pb::EntryRule::EnterOnce) => "enter once".to_owned(),
        _ => format!("re-enter every time, by {}", or_dash(&j.unique_identifier)),
    };
    let mut entry_text = entry.event.clone();
    if let Some(audience) = &entry.audience_key {
        entry_text.push_str(&format!(" (audience {audience})"));
    }
    if !entry.filters.is_empty() {
        entry_text.push_str(&format!(" where {}", filters(&entry.filters)));
    }
    for (key, value) in [
        ("Name:", j.name.clone()),
        ("Description:", or_dash(&j.description)),
        ("State:", state_name(j.state).to_owned()),
        ("Revision:", j.revision.to_string()),
        ("Entry:", entry_text),
        ("Entry rule:", rule),
        ("Exit rules:", exit_rules(&j.exit_rules)),
        ("Created:", time(j.created_at.as_ref())),
        ("Updated:", time(j.updated_at.as_ref())),
        ("Published:", time(j.published_at.as_ref())),
        ("Archived:", time(j.archived_at.as_ref())),
    ] {
        facts.row(vec![key.to_owned(), value]);
    }
    let mut steps = Table::new(&["STEP", "KIND", "NAME", "THEN"]);
    for step in &j.steps {
        let (kind, then) = step_summary(step);
        let key = if step.key == j.start_step {
            format!("{} (start)", step.key)
        } else {
            step.key.clone()
        };
        steps.row(vec![key, kind.to_owned(), step.name.clone(), then]);
    }
    format!("{}\n{}", facts.render(), steps.render())
}

fn filters(filters: &[pb::Filter]) -> String {
    filters
        .iter()
        .map(|f| match &f.r#match {
            Some(pb::filter::Match::Equals(v)) => format!("{} = {}", f.property, value(v)),
            Some(pb::filter::Match::AnyOf(list)) => format!(
                "{} in [{}]",
                f.property,
                list.values.iter().map(value).collect::<Vec<_>>().join(", ")
            ),
            None => format!("{} (any)", f.property),
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

fn value(v: &prost_types::Value) -> String {
    journeys_proto::convert::json::value_to_json(v, "")
        .map_or_else(|_| "?".to_owned(), |j| j.to_string())
}

fn exit_rules(rules: &[pb::ExitRule]) -> String {
    if rules.is_empty() {
        return "-".to_owned();
    }
    rules
        .iter()
        .map(|r| {
            let mut text = r.event.clone();
            if !r.filters.is_empty() {
                text.push_str(&format!(" where {}", filters(&r.filters)));
            }
            if let Some(send) = &r.send {
                text.push_str(&format!(" (then send to {})", send.destination_id));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn next(key: &str) -> String {
    if key.is_empty() {
        "end".to_owned()
    } else {
        key.to_owned()
    }
}

/// The kind of a step and where it goes.
fn step_summary(step: &pb::Step) -> (&'static str, String) {
    match &step.kind {
        Some(Kind::Delay(d)) => (
            "delay",
            format!(
                "after {} → {}",
                duration(d.duration.as_ref()),
                next(&d.next)
            ),
        ),
        Some(Kind::HoldUntil(h)) => {
            let mut ways: Vec<String> = h
                .branches
                .iter()
                .map(|b| format!("{} ({}) → {}", b.name, b.event, next(&b.next)))
                .collect();
            ways.push(format!(
                "timeout {} → {}",
                duration(h.max_duration.as_ref()),
                next(&h.timeout_next)
            ));
            ("hold until", ways.join("; "))
        }
        Some(Kind::DataSplit(s)) => {
            let mut ways: Vec<String> = s
                .branches
                .iter()
                .map(|b| format!("{} → {}", b.name, next(&b.next)))
                .collect();
            ways.push(format!("else → {}", next(&s.else_next)));
            ("data split", ways.join("; "))
        }
        Some(Kind::RandomSplit(s)) => (
            "random split",
            s.branches
                .iter()
                .map(|b| format!("{} {}% → {}", b.name, b.percent, next(&b.next)))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Some(Kind::Send(s)) => (
            "send",
            format!("to {} → {}", s.destination_id, next(&s.next)),
        ),
        Some(Kind::End(_)) => ("end", "-".to_owned()),
        None => ("?", "-".to_owned()),
    }
}

/// The timestamp of an RFC 3339 time flag.
pub(super) fn time_flag(flag: &str, value: Option<&str>) -> Result<Option<prost_types::Timestamp>> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: 0,
                })
                .map_err(|e| {
                    Error::usage(format!(
                        "{flag} {v:?}: not an RFC 3339 time such as 2026-12-01T00:00:00Z ({e})"
                    ))
                })
        })
        .transpose()
}

async fn stats(
    global: &Global,
    c: &mut Clients,
    request: pb::GetJourneyStatsRequest,
) -> Result<()> {
    let stats = c.journeys.get_journey_stats(request).await?.into_inner();
    if print_message(global.output, &stats)? {
        return Ok(());
    }
    let mut steps = Table::new(&[
        "STEP",
        "ENTERED",
        "WAITING",
        "COMPLETED",
        "EXITED",
        "FAILED",
    ]);
    for s in &stats.steps {
        steps.row(vec![
            s.step_key.clone(),
            s.entered.to_string(),
            s.waiting.to_string(),
            s.completed.to_string(),
            s.exited.to_string(),
            s.failed.to_string(),
        ]);
    }
    let mut sends = Table::new(&["SEND", "SENT", "FAILED", "DEAD-LETTERED"]);
    for s in &stats.sends {
        sends.row(vec![
            s.step_key.clone(),
            s.sent.to_string(),
            s.failed.to_string(),
            s.dead_lettered.to_string(),
        ]);
    }
    let mut branches = Table::new(&["STEP", "BRANCH", "TAKEN", "SHARE"]);
    for b in &stats.branches {
        let of_step: i64 = stats
            .branches
            .iter()
            .filter(|o| o.step_key == b.step_key)
            .map(|o| o.taken)
            .sum();
        let name = if b.timed_out {
            "(timeout)".to_owned()
        } else if b.everyone_else {
            "(everyone else)".to_owned()
        } else {
            b.branch_name.clone()
        };
        branches.row(vec![
            b.step_key.clone(),
            name,
            b.taken.to_string(),
            share(b.taken, of_step),
        ]);
    }
    let mut text = format!(
        "ENTRIES {}\n{}\n{}\n{}\n{}",
        stats.entries,
        steps.render(),
        sends.render(),
        branches.render(),
        ends_table(&stats).render()
    );
    if !stats.hours.is_empty() {
        text.push('\n');
        text.push_str(&hours_table(&stats).render());
    }
    out(&text);
    Ok(())
}

/// Exits by rule and reason, entries skipped by reason.
fn ends_table(stats: &pb::GetJourneyStatsResponse) -> Table {
    let mut ends = Table::new(&["EXIT OR SKIP", "COUNT"]);
    for e in &stats.exits {
        let what = if e.reason == "exit_rule" {
            format!("exit rule {} ({})", e.exit_rule_index, e.event)
        } else {
            format!("exit: {}", e.reason)
        };
        ends.row(vec![what, e.count.to_string()]);
    }
    for s in &stats.skipped {
        ends.row(vec![format!("skipped: {}", s.reason), s.count.to_string()]);
    }
    ends
}

/// Entries and deliveries of each hour.
fn hours_table(stats: &pb::GetJourneyStatsResponse) -> Table {
    let mut hours = Table::new(&["HOUR", "ENTRIES", "SENT", "FAILED", "DEAD-LETTERED"]);
    for h in &stats.hours {
        let start = h
            .start_time
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map_or_else(
                || "-".to_owned(),
                |t| t.format("%Y-%m-%dT%H:00Z").to_string(),
            );
        hours.row(vec![
            start,
            h.entries.to_string(),
            h.sends.iter().map(|s| s.sent).sum::<i64>().to_string(),
            h.sends.iter().map(|s| s.failed).sum::<i64>().to_string(),
            h.sends
                .iter()
                .map(|s| s.dead_lettered)
                .sum::<i64>()
                .to_string(),
        ]);
    }
    hours
}

/// `part` of `whole` as a whole percentage, `-` when nothing was counted.
fn share(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "-".to_owned();
    }
    let percent = (i128::from(part) * 100 + i128::from(whole) / 2) / i128::from(whole);
    format!("{percent}%")
}

fn simulated_events(path: &std::path::Path) -> Result<Vec<pb::SimulatedEvent>> {
    let mut lines = input::Lines::open(path)?;
    let mut events = Vec::new();
    while let Some((number, value)) = lines.next_value()? {
        let event = input::simulated_event(value).map_err(|e| lines.error(number, &e))?;
        events.push(event);
    }
    Ok(events)
}

async fn simulate(
    global: &Global,
    c: &mut Clients,
    target: pb::simulate_journey_request::Target,
    events: Vec<pb::SimulatedEvent>,
) -> Result<()> {
    let result = c
        .journeys
        .simulate_journey(pb::SimulateJourneyRequest {
            target: Some(target),
            events,
            ..Default::default()
        })
        .await?
        .into_inner();
    if print_message(global.output, &result)? {
        return Ok(());
    }
    let mut instances = Table::new(&["INSTANCE", "USER", "UNIQUE", "STATE", "STEP", "SENDS"]);
    let mut paths = Table::new(&["INSTANCE", "AT", "STEP", "CAUSE"]);
    let mut sends = Table::new(&["INSTANCE", "AT", "STEP", "DESTINATION", "PAYLOAD"]);
    for i in &result.instances {
        instances.row(vec![
            i.instance_id.clone(),
            i.user_id.clone(),
            or_dash(&i.unique_value),
            i.final_state.clone(),
            i.final_step.clone(),
            i.sends.len().to_string(),
        ]);
        for p in &i.path {
            paths.row(vec![
                i.instance_id.clone(),
                time(p.at.as_ref()),
                p.step_key.clone(),
                p.cause.clone(),
            ]);
        }
        for s in &i.sends {
            sends.row(vec![
                i.instance_id.clone(),
                time(s.at.as_ref()),
                s.step_key.clone(),
                s.destination_id.clone(),
                one_line(&super::output::compact(s.payload.as_ref()), 100),
            ]);
        }
    }
    let mut text = format!(
        "{}\n{}\n{}",
        instances.render(),
        paths.render(),
        sends.render()
    );
    if !result.skipped.is_empty() {
        let mut skipped = Table::new(&["SKIPPED EVENT", "USER", "REASON"]);
        for s in &result.skipped {
            skipped.row(vec![
                s.message_id.clone(),
                s.user_id.clone(),
                s.reason.clone(),
            ]);
        }
        text.push('\n');
        text.push_str(&skipped.render());
    }
    out(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_to_whole_percent() {
        assert_eq!(share(1, 3), "33%");
        assert_eq!(share(2, 3), "67%");
        assert_eq!(share(0, 0), "-");
    }

    #[test]
    fn a_definition_spelled_differently_is_the_same_definition() {
        let value = serde_json::json!({
            "name": "n", "entry": {"event": "e"}, "entry_rule": "ENTER_ONCE",
            "start_step": "a", "steps": [{"key": "a", "name": "A", "delay": {"duration": "3600s", "next": "b"}},
                                          {"key": "b", "name": "B", "end": {}}]
        });
        let a: pb::Journey = input::message(&value, "a").unwrap();
        let mut b = a.clone();
        b.id = "stored".into();
        b.revision = 7;
        b.state = pb::JourneyState::Draft as i32;
        assert!(same_definition(&a, &b));
        if let Some(Kind::Delay(d)) = &mut b.steps[0].kind {
            d.duration = Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            });
        }
        assert!(!same_definition(&a, &b));
    }
}
