//! `journeys destination` for destination functions and delivery health: the `--function`
//! flags of `create`, `test-function`, `stats`, and how a function destination is shown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use journeys_proto::convert::json::{json_to_struct, response_struct_to_json, value_to_json};
use journeys_proto::v1 as pb;
use serde_json::{Map, Value, json};

use super::client::{Clients, Global};
use super::error::{Error, Result};
use super::input;
use super::output::{Table, duration, or_dash, out, print_message, time};

/// The flags that make `destination create` create a destination function.
#[derive(Debug, Args)]
pub struct FunctionFlags {
    /// JavaScript file of a destination function (Segment's `onTrack`, `onIdentify`…
    /// handlers) instead of a webhook
    #[arg(long, value_name = "FILE")]
    pub function: Option<PathBuf>,
    /// A function setting, `NAME=VALUE` (VALUE read as JSON when it is JSON, else as text;
    /// repeatable)
    #[arg(long = "setting", value_name = "NAME=VALUE", requires = "function")]
    pub settings: Vec<String>,
    /// A write-only function setting (an API key, a token), `NAME=VALUE` (repeatable)
    #[arg(long = "secret", value_name = "NAME=VALUE", requires = "function")]
    pub secrets: Vec<String>,
}

/// `--timeout SECONDS` as a proto duration.
pub fn seconds(timeout: Option<u32>) -> Option<prost_types::Duration> {
    timeout.map(|s| prost_types::Duration {
        seconds: i64::from(s),
        nanos: 0,
    })
}

/// The function settings `create --function FILE …` asks for.
pub fn function_settings(
    code: &Path,
    flags: &FunctionFlags,
    timeout: Option<u32>,
) -> Result<pb::FunctionSettings> {
    Ok(pb::FunctionSettings {
        code: read_code(code)?,
        settings: Some(json_to_struct(&Value::Object(settings(&flags.settings)?))),
        secrets: secrets(&flags.secrets)?,
        timeout: seconds(timeout),
    })
}

fn read_code(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))
}

/// `NAME=VALUE` pairs of `flag`, in order; a pair without `=` or with an empty name is a usage
/// error naming it.
fn pairs<'a>(flag: &str, given: &'a [String]) -> Result<Vec<(&'a str, &'a str)>> {
    given
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(name, value)| (name.trim(), value))
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| Error::usage(format!("{flag} {pair:?}: expected NAME=VALUE")))
        })
        .collect()
}

/// `--setting` values: JSON where they parse as JSON, else text.
fn settings(given: &[String]) -> Result<Map<String, Value>> {
    Ok(pairs("--setting", given)?
        .into_iter()
        .map(|(name, value)| {
            let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
            (name.to_owned(), value)
        })
        .collect())
}

fn secrets(given: &[String]) -> Result<HashMap<String, String>> {
    Ok(pairs("--secret", given)?
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// What `test-function` runs.
pub struct TestFunction {
    pub destination: Option<String>,
    pub code: Option<PathBuf>,
    pub payload: Option<PathBuf>,
    pub settings: Vec<String>,
    pub secrets: Vec<String>,
    pub timeout: Option<u32>,
}

/// `destination test-function`: runs the code and prints what it did; an error thrown by the
/// function (or a limit that stopped it) exits 1.
pub async fn test_function(global: &Global, c: &mut Clients, test: TestFunction) -> Result<()> {
    let payload = match &test.payload {
        Some(path) => input::document(path)?,
        None => sample_track(),
    };
    if !payload.is_object() {
        return Err(Error::usage("--payload: the event must be a JSON object"));
    }
    let settings = settings(&test.settings)?;
    let request = pb::TestFunctionRequest {
        code: test
            .code
            .as_deref()
            .map(read_code)
            .transpose()?
            .unwrap_or_default(),
        // Unset with a destination keeps its stored settings.
        settings: (!settings.is_empty() || test.destination.is_none())
            .then(|| json_to_struct(&Value::Object(settings))),
        secrets: secrets(&test.secrets)?,
        payload: Some(json_to_struct(&payload)),
        destination_id: test.destination.unwrap_or_default(),
        timeout: seconds(test.timeout),
    };
    let report = c.destinations.test_function(request).await?.into_inner();
    if !print_message(global.output, &report)? {
        out(&describe_report(&report));
    }
    match &report.error {
        Some(error) => Err(Error::Failed(format!(
            "the function threw {}: {}",
            error.r#type, error.message
        ))),
        None => Ok(()),
    }
}

/// The event a test runs on when none is given.
fn sample_track() -> Value {
    json!({
        "type": "track",
        "event": "checkout_started",
        "userId": "test-user",
        "messageId": "test-message",
        "properties": {"session_id": "s1", "cart_value": 42.5},
        "timestamp": "2026-01-01T00:00:00Z",
    })
}

fn describe_report(report: &pb::TestFunctionResponse) -> String {
    let outcome = match (&report.error, &report.result) {
        (Some(error), _) => format!(
            "threw {}: {} ({})",
            error.r#type,
            error.message,
            if error.retryable {
                "a delivery would be retried"
            } else {
                "a delivery would be dead-lettered"
            }
        ),
        (None, Some(result)) => format!(
            "returned {}",
            value_to_json(result, "result").map_or_else(|e| e.to_string(), |v| v.to_string())
        ),
        (None, None) => "returned".to_owned(),
    };
    let mut text = format!(
        "{outcome}\nDuration: {}\n",
        duration(report.duration.as_ref())
    );
    if !report.fetches.is_empty() {
        let mut fetches = Table::new(&["FETCH", "URL", "STATUS"]);
        for f in &report.fetches {
            let status = if f.status > 0 {
                f.status.to_string()
            } else {
                or_dash(&f.error)
            };
            fetches.row(vec![f.method.clone(), f.url.clone(), status]);
        }
        text.push_str(&fetches.render());
    }
    if !report.logs.is_empty() {
        text.push_str("Logs:\n");
        for line in &report.logs {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// `destination stats`: totals, then one row per hour with deliveries.
pub async fn stats(
    global: &Global,
    c: &mut Clients,
    request: pb::GetDestinationStatsRequest,
) -> Result<()> {
    let stats = c
        .destinations
        .get_destination_stats(request)
        .await?
        .into_inner();
    if print_message(global.output, &stats)? {
        return Ok(());
    }
    let mut totals = Table::new(&["SENT", "FAILED ATTEMPTS", "DEAD-LETTERED"]);
    totals.row(vec![
        stats.sent.to_string(),
        stats.failed.to_string(),
        stats.dead_lettered.to_string(),
    ]);
    let mut text = totals.render();
    if !stats.hours.is_empty() {
        let mut hours = Table::new(&["HOUR", "SENT", "FAILED ATTEMPTS", "DEAD-LETTERED"]);
        for h in &stats.hours {
            hours.row(vec![
                time(h.start_time.as_ref()),
                h.sent.to_string(),
                h.failed.to_string(),
                h.dead_lettered.to_string(),
            ]);
        }
        text.push('\n');
        text.push_str(&hours.render());
    }
    out(&text);
    Ok(())
}

/// The rows `destination get` shows for a function: its kind, code size and handlers,
/// settings, secret names (values never come back) and timeout.
pub fn function_rows(f: &pb::FunctionSettings) -> Vec<(&'static str, String)> {
    let handlers: Vec<&str> = HANDLERS
        .iter()
        .copied()
        .filter(|h| f.code.contains(h))
        .collect();
    let mut secrets: Vec<&str> = f.secrets.keys().map(String::as_str).collect();
    secrets.sort_unstable();
    vec![
        ("Kind:", "function".to_owned()),
        (
            "Code:",
            format!(
                "{} lines; handlers: {}",
                f.code.lines().count(),
                or_dash(&handlers.join(", "))
            ),
        ),
        (
            "Settings:",
            response_struct_to_json(f.settings.as_ref()).to_string(),
        ),
        ("Secrets:", or_dash(&secrets.join(", "))),
        ("Timeout:", duration(f.timeout.as_ref())),
    ]
}

/// Segment's handler names, as `get` looks for them in the code.
const HANDLERS: [&str; 7] = [
    "onTrack",
    "onIdentify",
    "onPage",
    "onScreen",
    "onGroup",
    "onAlias",
    "onDelete",
];
