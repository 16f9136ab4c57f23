//! Destination functions in the control plane: the rules on their settings (code checked by
//! the delivery's engine, write-only secrets, timeout) and `TestFunction`.

use std::collections::BTreeMap;
use std::time::Duration;

use journeys_core::Problem;
use journeys_delivery::function::{FunctionCode, FunctionRuntime, Invocation, InvocationReport};
use journeys_store::FunctionSettings;
use serde_json::{Map, Value};

use super::DestinationApi;
use super::destinations::MASK;
use crate::error::{Result, ServiceError};

/// Longest function source accepted.
pub const MAX_CODE_BYTES: usize = 64 * 1024;

/// Function settings as a request gives them, before the rules are applied.
#[derive(Debug, Clone)]
pub struct FunctionInput {
    pub code: String,
    /// The `settings` object; `Err` with a reason when it cannot be JSON.
    pub settings: std::result::Result<Map<String, Value>, String>,
    /// Secret values, [`MASK`] to keep a stored one.
    pub secrets: Vec<(String, String)>,
    /// `None` when unset; `Err` with a reason when malformed.
    pub timeout: Option<std::result::Result<Duration, &'static str>>,
}

/// What a `TestFunction` request gives.
#[derive(Debug, Clone, Default)]
pub struct TestFunctionInput {
    pub code: String,
    /// `None` when unset.
    pub settings: Option<std::result::Result<Map<String, Value>, String>>,
    pub secrets: Vec<(String, String)>,
    /// `None` when unset; `Err` with a reason when it cannot be JSON.
    pub payload: Option<std::result::Result<Value, String>>,
    pub destination_id: String,
    pub timeout: Option<std::result::Result<Duration, &'static str>>,
}

/// Checks function settings (the code by running its top level in the engine); `current`
/// supplies the secrets sent back masked.
pub(crate) async fn function_settings(
    input: FunctionInput,
    current: Option<&FunctionSettings>,
    runtime: &FunctionRuntime,
    problems: &mut Vec<Problem>,
) -> FunctionSettings {
    const CODE: &str = "destination.function.code";
    if input.code.trim().is_empty() {
        problems.push(Problem::new(CODE, "required"));
    } else if input.code.len() > MAX_CODE_BYTES {
        problems.push(Problem::new(
            CODE,
            format!("at most {MAX_CODE_BYTES} bytes"),
        ));
    } else if let Err(err) = runtime.check(&input.code).await {
        problems.push(Problem::new(CODE, err.to_string()));
    }
    let settings = input.settings.unwrap_or_else(|why| {
        problems.push(Problem::new("destination.function.settings", why));
        Map::new()
    });
    let secrets = secrets(
        input.secrets,
        current.map(|c| &c.secrets),
        "destination.function.secrets",
        problems,
    );
    let timeout = timeout(input.timeout, "destination.function.timeout", problems);
    FunctionSettings {
        code: input.code,
        settings,
        secrets,
        // Stored resolved, so a later change of the default does not move existing ones.
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Secret settings with masks resolved against `stored`.
fn secrets(
    given: Vec<(String, String)>,
    stored: Option<&BTreeMap<String, String>>,
    path: &str,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, String> {
    let mut secrets = BTreeMap::new();
    for (name, value) in given {
        if name.trim().is_empty() {
            problems.push(Problem::new(path, "secret names must not be empty"));
            continue;
        }
        if value == MASK {
            match stored.and_then(|s| s.get(&name)) {
                Some(kept) => {
                    secrets.insert(name, kept.clone());
                }
                None => problems.push(Problem::new(
                    format!("{path}[{name}]"),
                    "the mask only keeps a secret stored under this name; give the value",
                )),
            }
            continue;
        }
        secrets.insert(name, value);
    }
    secrets
}

fn timeout(
    timeout: Option<std::result::Result<Duration, &'static str>>,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Duration {
    match timeout {
        None => FunctionSettings::DEFAULT_TIMEOUT,
        Some(Ok(d)) if d.is_zero() => FunctionSettings::DEFAULT_TIMEOUT,
        Some(Ok(d)) if d <= FunctionSettings::MAX_TIMEOUT => d,
        Some(Ok(_)) => {
            problems.push(Problem::new(
                path,
                format!("at most {}s", FunctionSettings::MAX_TIMEOUT.as_secs()),
            ));
            FunctionSettings::DEFAULT_TIMEOUT
        }
        Some(Err(why)) => {
            problems.push(Problem::new(path, why));
            FunctionSettings::DEFAULT_TIMEOUT
        }
    }
}

/// A function destination's invocations on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStats {
    pub invocations: u64,
    /// Failed invocations by error name.
    pub errors: BTreeMap<String, u64>,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

impl DestinationApi {
    /// The invocations of function destination `id` on this node, from its metrics.
    pub async fn function_stats(&self, id: &str) -> Result<FunctionStats> {
        let destination = self
            .get(id)
            .await
            .map_err(|e| e.renaming_field("destination_id"))?;
        if destination.function().is_none() {
            return Err(ServiceError::invalid_field(
                "destination_id",
                format!("'{id}' is a webhook, not a function"),
            ));
        }
        let m = journeys_telemetry::metrics::metrics();
        let mut stats = FunctionStats {
            invocations: 0,
            errors: BTreeMap::new(),
            p50: m.function_duration.quantile(&[id], 0.5),
            p99: m.function_duration.quantile(&[id], 0.99),
        };
        for (values, total) in m.function_invocations.series() {
            let [destination, outcome] = values.as_slice() else {
                continue;
            };
            if destination != id {
                continue;
            }
            stats.invocations += total;
            if outcome != "ok" {
                *stats.errors.entry(outcome.clone()).or_default() += total;
            }
        }
        Ok(stats)
    }

    /// Runs function code once on a sample payload (`TestFunction`): the request's code and
    /// settings, or a stored function's where the request leaves them out.
    pub async fn test_function(&self, input: TestFunctionInput) -> Result<InvocationReport> {
        let stored = if input.destination_id.is_empty() {
            None
        } else {
            let destination = self
                .get(&input.destination_id)
                .await
                .map_err(|e| e.renaming_field("destination_id"))?;
            let Some(function) = destination.function().cloned() else {
                return Err(ServiceError::invalid_field(
                    "destination_id",
                    format!("'{}' is a webhook, not a function", input.destination_id),
                ));
            };
            Some(function)
        };
        let mut problems = Vec::new();
        let code = match (&stored, input.code.trim().is_empty()) {
            (Some(stored), true) => stored.code.clone(),
            (None, true) => {
                problems.push(Problem::new("code", "required (or a destination_id)"));
                String::new()
            }
            (_, false) => input.code,
        };
        let settings = match (input.settings, &stored) {
            (Some(Ok(given)), _) => given,
            (Some(Err(why)), _) => {
                problems.push(Problem::new("settings", why));
                Map::new()
            }
            (None, Some(stored)) => stored.settings.clone(),
            (None, None) => Map::new(),
        };
        let secrets = match &stored {
            Some(stored) if input.secrets.is_empty() => stored.secrets.clone(),
            stored => secrets(
                input.secrets,
                stored.as_ref().map(|s| &s.secrets),
                "secrets",
                &mut problems,
            ),
        };
        let payload = match input.payload {
            Some(Ok(payload)) => payload,
            Some(Err(why)) => {
                problems.push(Problem::new("payload", why));
                Value::Null
            }
            None => {
                problems.push(Problem::new("payload", "required"));
                Value::Null
            }
        };
        let timeout = match (&input.timeout, &stored) {
            (None, Some(stored)) => stored.timeout(
                FunctionSettings::DEFAULT_TIMEOUT,
                FunctionSettings::MAX_TIMEOUT,
            ),
            _ => timeout(input.timeout, "timeout", &mut problems),
        };
        ServiceError::check("request", problems)?;
        let function = FunctionSettings {
            code,
            settings,
            secrets,
            timeout_ms: 0,
        };
        Ok(self
            .functions
            .functions()
            .invoke(Invocation {
                code: FunctionCode::new(&function.code),
                payload,
                settings: function.runtime_settings(),
                message_id: format!("test-{}", uuid::Uuid::now_v7()),
                timeout,
            })
            .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_secrets_keep_stored_values_only() {
        let stored = BTreeMap::from([("apiKey".to_owned(), "s3cret".to_owned())]);
        let mut problems = Vec::new();
        let kept = secrets(
            vec![
                ("apiKey".to_owned(), MASK.to_owned()),
                ("other".to_owned(), "v".to_owned()),
            ],
            Some(&stored),
            "destination.function.secrets",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(kept.get("apiKey").map(String::as_str), Some("s3cret"));
        assert_eq!(kept.get("other").map(String::as_str), Some("v"));
        secrets(
            vec![("missing".to_owned(), MASK.to_owned())],
            Some(&stored),
            "destination.function.secrets",
            &mut problems,
        );
        assert_eq!(problems[0].path, "destination.function.secrets[missing]");
    }

    #[test]
    fn timeouts_default_and_are_capped() {
        let mut problems = Vec::new();
        assert_eq!(
            timeout(None, "t", &mut problems),
            FunctionSettings::DEFAULT_TIMEOUT
        );
        timeout(Some(Ok(Duration::from_secs(61))), "t", &mut problems);
        assert_eq!(problems[0].to_string(), "t: at most 60s");
    }
}
