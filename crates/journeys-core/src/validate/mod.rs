//! Journey validation: every rule of SPEC.md sections 2, 3 and 5 that a definition can be checked
//! against on its own, without the store (catalog events, destinations and audiences are checked
//! at publish time by the control plane).
//!
//! [`validate`] never stops at the first fault: it returns every problem, each located by the
//! path of the offending field in the gRPC naming of API.md (`steps[3].hold_until.branches[1].next`),
//! so one round trip is enough for a user to fix a draft. Problems come in definition order,
//! except that references between steps, reachability and cycles follow the per-step checks.

mod filters;
mod graph;
mod send;
mod steps;
#[cfg(test)]
mod testkit;

use std::time::Duration;

use crate::model::{EntryRule, ExitRule, JourneyDefinition};
use crate::problem::Problem;

pub use filters::{filters_overlap, validate_hold_branches_exclusive};

/// How strict validation is. Operators set these in configuration; the defaults are the
/// numbers of SPEC.md.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationOptions {
    /// Accept second-scale delays and holds (`JOURNEYS_ALLOW_SHORT_DURATIONS`), for tests and
    /// demos that cannot wait minutes.
    pub allow_short_durations: bool,
    pub limits: Limits,
}

/// Size and duration limits of a definition. The delay and hold bounds are operator settings
/// (the control plane validates with the configured ones); the limits that only matter while
/// instances run are [`InstanceLimits`](crate::machine::InstanceLimits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_steps: usize,
    pub max_hold_branches: usize,
    pub max_split_branches: usize,
    pub max_random_branches: usize,
    pub max_exit_rules: usize,
    /// Journey names, step names and send event names, counted in characters (not bytes).
    pub max_name_chars: usize,
    pub max_description_chars: usize,
    pub max_step_key_len: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub min_hold: Duration,
    pub max_hold: Duration,
    /// Lower bound of delays and holds when short durations are allowed.
    pub min_short_duration: Duration,
    pub max_mapped_fields: usize,
}

const DAY: u64 = 24 * 60 * 60;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: 50,
            max_hold_branches: 9,
            max_split_branches: 9,
            max_random_branches: 5,
            max_exit_rules: 10,
            max_name_chars: 73,
            max_description_chars: 1000,
            max_step_key_len: 64,
            min_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(182 * DAY),
            min_hold: Duration::from_secs(5 * 60),
            max_hold: Duration::from_secs(182 * DAY),
            min_short_duration: Duration::from_secs(1),
            max_mapped_fields: 100,
        }
    }
}

/// Every problem with `def`, in definition order; empty when the definition is valid.
pub fn validate(def: &JourneyDefinition, opts: &ValidationOptions) -> Vec<Problem> {
    let mut r = Report::default();
    let limits = &opts.limits;

    check_text(&mut r, "name", "name", &def.name, limits.max_name_chars);
    let description_chars = def.description.chars().count();
    if description_chars > limits.max_description_chars {
        r.push(
            "description",
            format!(
                "description is {description_chars} characters long, at most {} allowed",
                limits.max_description_chars
            ),
        );
    }

    if def.entry.event.trim().is_empty() {
        r.push("entry.event", "entry event is required");
    }
    if def
        .entry
        .audience_key
        .as_deref()
        .is_some_and(|k| k.trim().is_empty())
    {
        r.push(
            "entry.audience_key",
            "audience key is empty; leave it unset to admit every profile",
        );
    }
    filters::check_filters(&mut r, "entry.filters", &def.entry.filters);

    if let EntryRule::ReenterEveryTime { unique_identifier } = &def.entry_rule {
        check_property_path(
            &mut r,
            "unique_identifier",
            "unique_identifier",
            unique_identifier,
            " with REENTER_EVERY_TIME",
        );
    }

    if def.steps.is_empty() {
        r.push("steps", "a journey needs at least one step");
    } else if def.steps.len() > limits.max_steps {
        r.push(
            "steps",
            format!(
                "{} steps, at most {} allowed",
                def.steps.len(),
                limits.max_steps
            ),
        );
    }
    // Over the limit, the steps are not examined one by one: the limit is the problem, and
    // the graph checks grow with the square of the step count for hostile drafts.
    if def.steps.len() <= limits.max_steps {
        graph::check_keys_and_start(&mut r, def, limits);
        for (i, step) in def.steps.iter().enumerate() {
            steps::check_step(&mut r, &format!("steps[{i}]"), step, opts);
        }
        graph::check_graph(&mut r, def);
    }

    if def.exit_rules.len() > limits.max_exit_rules {
        r.push(
            "exit_rules",
            format!(
                "{} exit rules, at most {} allowed",
                def.exit_rules.len(),
                limits.max_exit_rules
            ),
        );
    }
    if def.exit_rules.len() <= limits.max_exit_rules {
        for (i, rule) in def.exit_rules.iter().enumerate() {
            check_exit_rule(&mut r, &format!("exit_rules[{i}]"), rule, def, limits);
        }
    }

    r.finish()
}

/// Whether `key` is a well-formed step key: `[a-z0-9_]{1,64}`.
pub fn is_valid_step_key(key: &str) -> bool {
    is_valid_step_key_within(key, Limits::default().max_step_key_len)
}

fn is_valid_step_key_within(key: &str, max_len: usize) -> bool {
    !key.is_empty()
        && key.len() <= max_len
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_exit_rule(
    r: &mut Report,
    path: &str,
    rule: &ExitRule,
    def: &JourneyDefinition,
    limits: &Limits,
) {
    if rule.event.trim().is_empty() {
        r.push(format!("{path}.event"), "exit event is required");
    }
    filters::check_filters(r, &format!("{path}.filters"), &rule.filters);
    if rule.match_unique_identifier && def.unique_identifier().is_none() {
        r.push(
            format!("{path}.match_unique_identifier"),
            "match_unique_identifier needs entry_rule REENTER_EVERY_TIME, which defines the unique identifier",
        );
    }
    if let Some(spec) = &rule.send {
        send::check_send_spec(r, &format!("{path}.send"), spec, false, limits);
    }
}

/// Collects problems; paths and messages are built by the checks.
#[derive(Default)]
struct Report {
    problems: Vec<Problem>,
    /// Problems found past [`MAX_PROBLEMS`], counted but not kept.
    dropped: usize,
}

/// The most problems one validation reports; a hostile draft can have one per field, and every
/// problem travels back in the error's details.
pub const MAX_PROBLEMS: usize = 100;
/// The longest message of one problem, in characters; messages quote the draft's own text.
pub const MAX_PROBLEM_MESSAGE_CHARS: usize = 500;

impl Report {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.dropped += 1;
            return;
        }
        let mut message = message.into();
        if let Some((cut, _)) = message.char_indices().nth(MAX_PROBLEM_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        self.problems.push(Problem::new(path, message));
    }

    fn finish(mut self) -> Vec<Problem> {
        if self.dropped > 0 {
            self.problems.push(Problem::new(
                "",
                format!(
                    "{} more problems not listed; fix the ones above and validate again",
                    self.dropped
                ),
            ));
        }
        self.problems
    }
}

/// A required, length-limited display text (`what` names it in messages).
fn check_text(r: &mut Report, path: &str, what: &str, value: &str, max_chars: usize) {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        r.push(path, format!("{what} is required"));
    } else if chars > max_chars {
        r.push(
            path,
            format!("{what} is {chars} characters long, at most {max_chars} allowed"),
        );
    }
}

/// A required dot path into JSON (`cart.total`, `items[0].sku`).
fn check_property_path(r: &mut Report, path: &str, what: &str, value: &str, required_note: &str) {
    if value.trim().is_empty() {
        r.push(path, format!("{what} is required{required_note}"));
    } else if !crate::path::is_valid(value) {
        r.push(
            path,
            format!(
                "'{value}' is not a valid property path (expected dot-separated keys with optional [n] indexes, e.g. 'cart.items[0].sku')"
            ),
        );
    }
}

/// `90s` → `1m 30s`; durations in messages read like the ones users typed.
fn human_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let mut parts = Vec::new();
    for (unit, len) in [("d", DAY), ("h", 3600), ("m", 60)] {
        if secs >= len {
            parts.push(format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        parts.push(format!("{secs}.{}s", frac.trim_end_matches('0')));
    } else if secs > 0 || parts.is_empty() {
        parts.push(format!("{secs}s"));
    }
    parts.join(" ")
}

/// A duration within `[min, max]`, where `min` drops to `min_short_duration` under the dev setting.
fn check_duration(
    r: &mut Report,
    path: &str,
    what: &str,
    d: Duration,
    (min, max): (Duration, Duration),
    opts: &ValidationOptions,
) {
    let effective_min = if opts.allow_short_durations {
        opts.limits.min_short_duration.min(min)
    } else {
        min
    };
    if d < effective_min {
        let hint = if !opts.allow_short_durations && d >= opts.limits.min_short_duration {
            " (shorter durations need the allow-short-durations setting)"
        } else {
            ""
        };
        r.push(
            path,
            format!(
                "{what} of {} is shorter than the minimum of {}{hint}",
                human_duration(d),
                human_duration(effective_min)
            ),
        );
    } else if d > max {
        r.push(
            path,
            format!(
                "{what} of {} is longer than the maximum of {}",
                human_duration(d),
                human_duration(max)
            ),
        );
    }
}

#[cfg(test)]
mod tests;
