//! Whether an event starts an instance of a journey, and with which unique-identifier value.
//!
//! Checks run in a fixed order (trigger, profile, filters, audience, unique identifier, entry
//! rule, active duplicate) so the reported reason is stable. Unique-identifier values are
//! compared as canonical strings (see [`canonical_value`]); an empty string or `null` counts
//! as missing.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::Journey;
use crate::eval::{AudienceMembership, filters_match};
use crate::model::{EntryRule, Event, Json};

/// What the runtime knows about the profile that the event alone does not say.
#[derive(Clone, Copy)]
pub struct EntryFacts<'a> {
    /// Audience memberships, checked when the trigger names an audience.
    pub audiences: &'a dyn AudienceMembership,
    /// Whether the profile ever entered this journey (for `ENTER_ONCE`).
    pub already_entered: bool,
    /// Unique values of this profile's *active* instances of this journey (for re-entry).
    pub active_unique_values: &'a [&'a str],
    /// Longest unique-identifier value admitted, in characters
    /// ([`InstanceLimits::max_unique_value_chars`](super::InstanceLimits)).
    pub max_unique_value_chars: usize,
}

/// Permission to enter, with what the new instance needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub profile_id: String,
    /// Canonical unique-identifier value (re-entry only).
    pub unique_value: Option<String>,
}

/// Why an event did not start an instance. The snake_case names are stable: they are counted,
/// stored and shown in simulations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The event is not the journey's entry event.
    NotTriggered,
    /// The event has neither `userId` nor `anonymousId`.
    MissingProfile,
    /// A property filter of the trigger did not match.
    FiltersNotMatched,
    /// The profile is not in the trigger's audience.
    NotInAudience,
    /// Re-entry: the event has no value (or `null`, or `""`) at the unique identifier.
    MissingUniqueIdentifier,
    /// Re-entry: the value is longer than the configured
    /// [`max_unique_value_chars`](super::InstanceLimits::max_unique_value_chars).
    UniqueIdentifierTooLong,
    /// `ENTER_ONCE`: the profile entered before.
    AlreadyEntered,
    /// Re-entry: an active instance already has this value.
    DuplicateEntry,
    /// The instance this entry would create exists already (its event was resent after the
    /// dedupe window): never started twice.
    ReplayedEntry,
    /// The entry would wait while the profile already has the maximum of active instances.
    TooManyInstances,
    /// The journey replaced another with `exclude_active`, and the profile still has an
    /// instance active in that one.
    ActiveInReplacedJourney,
}

impl SkipReason {
    /// The stable snake_case name (what `SkippedEntry.reason` and counters carry).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotTriggered => "not_triggered",
            SkipReason::MissingProfile => "missing_profile",
            SkipReason::FiltersNotMatched => "filters_not_matched",
            SkipReason::NotInAudience => "not_in_audience",
            SkipReason::MissingUniqueIdentifier => "missing_unique_identifier",
            SkipReason::UniqueIdentifierTooLong => "unique_identifier_too_long",
            SkipReason::AlreadyEntered => "already_entered",
            SkipReason::DuplicateEntry => "duplicate_entry",
            SkipReason::ReplayedEntry => "replayed_entry",
            SkipReason::TooManyInstances => "too_many_instances",
            SkipReason::ActiveInReplacedJourney => "active_in_replaced_journey",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides whether `event` enters `journey`.
pub fn decide_entry(
    journey: &Journey,
    event: &Event,
    facts: &EntryFacts<'_>,
) -> Result<Admission, SkipReason> {
    let def = journey.definition();
    if event.event != def.entry.event {
        return Err(SkipReason::NotTriggered);
    }
    let profile_id = event.profile_id().ok_or(SkipReason::MissingProfile)?;
    if !filters_match(&def.entry.filters, &event.properties) {
        return Err(SkipReason::FiltersNotMatched);
    }
    if let Some(key) = &def.entry.audience_key
        && !facts.audiences.is_member(key)
    {
        return Err(SkipReason::NotInAudience);
    }
    let unique_value = match &def.entry_rule {
        EntryRule::EnterOnce => {
            if facts.already_entered {
                return Err(SkipReason::AlreadyEntered);
            }
            None
        }
        EntryRule::ReenterEveryTime { unique_identifier } => {
            let value = event
                .property(unique_identifier)
                .and_then(canonical_value)
                .ok_or(SkipReason::MissingUniqueIdentifier)?;
            if value.chars().count() > facts.max_unique_value_chars {
                return Err(SkipReason::UniqueIdentifierTooLong);
            }
            if facts.active_unique_values.contains(&value.as_str()) {
                return Err(SkipReason::DuplicateEntry);
            }
            Some(value)
        }
    };
    Ok(Admission {
        profile_id: profile_id.to_owned(),
        unique_value,
    })
}

/// The canonical string of a unique-identifier value; `None` for `null` and `""` (missing).
///
/// Strings are taken as they are; numbers in the shortest form with integral values written
/// without a fraction (`1.0` → `"1"`, so `1` and `1.0` key the same instance, as they are
/// equal under JSON-typed comparison); booleans as `true`/`false`; arrays and objects as
/// compact JSON with object keys sorted. Note that `"1"` and `1` therefore share a key: a
/// property holding the same id sometimes as text and sometimes as a number still finds its
/// instance.
pub fn canonical_value(value: &Json) -> Option<String> {
    match value {
        Json::Null => None,
        Json::String(s) if s.is_empty() => None,
        Json::String(s) => Some(s.clone()),
        other => {
            let mut out = String::new();
            write_canonical(other, &mut out);
            Some(out)
        }
    }
}

fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            if n.is_i64() || n.is_u64() {
                let _ = write!(out, "{n}");
            } else if let Some(f) = n.as_f64() {
                // Integral floats within the exact range print as integers.
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    #[allow(clippy::cast_possible_truncation)]
                    let i = f as i64;
                    let _ = write!(out, "{i}");
                } else {
                    let _ = write!(out, "{n}");
                }
            }
        }
        Json::String(s) => {
            let _ = write!(out, "{}", Json::String(s.clone()));
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Json::String(key.clone()));
                write_canonical(&map[key.as_str()], out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::eval::NoAudiences;
    use crate::machine::DEFAULT_MAX_UNIQUE_VALUE_CHARS;
    use crate::machine::tests::{event, journey_with};
    use crate::model::{FilterMatch, PropertyFilter};

    fn facts<'a>(active: &'a [&'a str], already: bool) -> EntryFacts<'a> {
        EntryFacts {
            audiences: &NoAudiences,
            already_entered: already,
            active_unique_values: active,
            max_unique_value_chars: DEFAULT_MAX_UNIQUE_VALUE_CHARS,
        }
    }

    #[test]
    fn canonical_values() {
        assert_eq!(canonical_value(&json!("s1")), Some("s1".into()));
        assert_eq!(canonical_value(&json!(1)), Some("1".into()));
        assert_eq!(canonical_value(&json!(1.0)), Some("1".into()));
        assert_eq!(canonical_value(&json!(1.5)), Some("1.5".into()));
        assert_eq!(canonical_value(&json!(false)), Some("false".into()));
        assert_eq!(canonical_value(&json!(null)), None);
        assert_eq!(canonical_value(&json!("")), None);
        assert_eq!(
            canonical_value(&json!({"b": 1, "a": [2.0, "x"]})),
            Some(r#"{"a":[2,"x"],"b":1}"#.into())
        );
    }

    #[test]
    fn reentry_is_keyed_by_the_unique_value() {
        let j = journey_with(
            EntryRule::ReenterEveryTime {
                unique_identifier: "session.id".into(),
            },
            vec![],
        );
        let e = event("checkout_started", json!({"session": {"id": 7}}));
        let admitted = decide_entry(&j, &e, &facts(&[], false)).unwrap();
        assert_eq!(admitted.unique_value.as_deref(), Some("7"));
        assert_eq!(admitted.profile_id, "u1");
        // Re-entry ignores "already entered"; only an active duplicate blocks.
        assert!(decide_entry(&j, &e, &facts(&["8"], true)).is_ok());
        assert_eq!(
            decide_entry(&j, &e, &facts(&["8", "7"], false)),
            Err(SkipReason::DuplicateEntry)
        );
        let missing = event("checkout_started", json!({"session": {}}));
        assert_eq!(
            decide_entry(&j, &missing, &facts(&[], false)),
            Err(SkipReason::MissingUniqueIdentifier)
        );
        // 500 characters by default (Segment's limit), counted in characters, not bytes.
        let long = event(
            "checkout_started",
            json!({"session": {"id": "x".repeat(501)}}),
        );
        assert_eq!(
            decide_entry(&j, &long, &facts(&[], false)),
            Err(SkipReason::UniqueIdentifierTooLong)
        );
        let just_fits = event(
            "checkout_started",
            json!({"session": {"id": "é".repeat(500)}}),
        );
        assert!(decide_entry(&j, &just_fits, &facts(&[], false)).is_ok());
    }

    #[test]
    fn the_unique_value_length_is_the_configured_one() {
        let j = journey_with(
            EntryRule::ReenterEveryTime {
                unique_identifier: "session_id".into(),
            },
            vec![],
        );
        let tight = EntryFacts {
            max_unique_value_chars: 8,
            ..facts(&[], false)
        };
        let nine = event("checkout_started", json!({"session_id": "123456789"}));
        assert_eq!(
            decide_entry(&j, &nine, &tight),
            Err(SkipReason::UniqueIdentifierTooLong)
        );
        assert!(decide_entry(&j, &nine, &facts(&[], false)).is_ok());
        let eight = event("checkout_started", json!({"session_id": "12345678"}));
        assert!(decide_entry(&j, &eight, &tight).is_ok());
    }

    #[test]
    fn enter_once_blocks_a_second_entry() {
        let j = journey_with(EntryRule::EnterOnce, vec![]);
        let e = event("checkout_started", json!({}));
        assert_eq!(
            decide_entry(&j, &e, &facts(&[], false))
                .unwrap()
                .unique_value,
            None
        );
        assert_eq!(
            decide_entry(&j, &e, &facts(&[], true)),
            Err(SkipReason::AlreadyEntered)
        );
    }

    #[test]
    fn trigger_filters_audience_and_profile() {
        let mut j = journey_with(
            EntryRule::EnterOnce,
            vec![PropertyFilter {
                property: "total".into(),
                matcher: FilterMatch::Equals(json!(10)),
            }],
        );
        let e = event("checkout_started", json!({"total": 10.0}));
        assert_eq!(
            decide_entry(&j, &event("other", json!({})), &facts(&[], false)),
            Err(SkipReason::NotTriggered)
        );
        assert_eq!(
            decide_entry(
                &j,
                &event("checkout_started", json!({"total": "10"})),
                &facts(&[], false)
            ),
            Err(SkipReason::FiltersNotMatched)
        );
        let mut anonymous = e.clone();
        anonymous.user_id = None;
        anonymous.anonymous_id = Some("a1".into());
        assert_eq!(
            decide_entry(&j, &anonymous, &facts(&[], false))
                .unwrap()
                .profile_id,
            "a1"
        );
        anonymous.anonymous_id = None;
        assert_eq!(
            decide_entry(&j, &anonymous, &facts(&[], false)),
            Err(SkipReason::MissingProfile)
        );
        let mut def = j.definition().clone();
        def.entry.audience_key = Some("vip".into());
        j = Journey::new(j.meta().clone(), def);
        assert_eq!(
            decide_entry(&j, &e, &facts(&[], false)),
            Err(SkipReason::NotInAudience)
        );
        let vip = vec!["vip".to_owned()];
        let member = EntryFacts {
            audiences: &vip,
            already_entered: false,
            active_unique_values: &[],
            max_unique_value_chars: DEFAULT_MAX_UNIQUE_VALUE_CHARS,
        };
        assert!(decide_entry(&j, &e, &member).is_ok());
    }

    #[test]
    fn reason_names_are_stable() {
        assert_eq!(SkipReason::DuplicateEntry.as_str(), "duplicate_entry");
        assert_eq!(
            serde_json::to_value(SkipReason::UniqueIdentifierTooLong).unwrap(),
            json!("unique_identifier_too_long")
        );
    }
}
