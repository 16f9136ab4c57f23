//! What a run creates through the control plane before sending anything: a source (write key),
//! a webhook destination pointing at the sink, the workload's events in the catalog, and a
//! published journey, entered only by this run's events (a filter on `run`):
//!
//! - forwarding: entry `load_event`, re-entry keyed by `seq`, a send with an 8-field mapping,
//!   end;
//! - forwarding-half: entry `form_submitted` with `matches: true`, re-entry keyed by `seq`, a
//!   send with a 4-field mapping, end;
//! - abandonment, burst: entry `checkout_started`, re-entry keyed by `session_id`, a hold until
//!   `purchase_completed` (of the same session: the unique identifier) for `--hold-secs`, whose
//!   branch ends the instance and whose timeout sends the nudge (4-field mapping), end.
//!
//! Afterwards the journey is archived and the source revoked, so a shared stack is left as it
//! was (apart from history).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use journeys_proto::v1 as pb;
use journeys_proto::v1::catalog_service_client::CatalogServiceClient;
use journeys_proto::v1::destination_service_client::DestinationServiceClient;
use journeys_proto::v1::journey_service_client::JourneyServiceClient;
use journeys_proto::v1::scheduler_service_client::SchedulerServiceClient;
use journeys_proto::v1::source_service_client::SourceServiceClient;
use prost_types::value::Kind;
use serde_json::{Value, json};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::cli::WorkloadKind;
use crate::workload::{CHECKOUT_EVENT, EVENT_NAME, FORM_EVENT, PURCHASE_EVENT, Workload};

/// The send step of the forwarding journeys.
const SEND_STEP: &str = "forward";
/// The end step of every journey.
const END_STEP: &str = "done";

/// The control-plane side of a run.
pub struct ControlPlane {
    channel: Channel,
    bearer: Option<MetadataValue<tonic::metadata::Ascii>>,
}

/// The target's own timer figures (`GetSchedulerStats`), since its scheduler started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimerStats {
    /// Timers fired (applied or discarded).
    pub fired: i64,
    /// Lateness from the due time to the firing's commit: median and 99th percentile.
    pub p50: Duration,
    pub p99: Duration,
    /// Due time -> handed to the engine, 99th percentile: the watermark wait.
    pub wait_p99: Duration,
    /// One engine call firing a batch, 99th percentile.
    pub apply_p99: Duration,
}

/// What [`ControlPlane::prepare`] created.
pub struct Prepared {
    pub write_key: String,
    pub source_id: String,
    pub destination_id: String,
    pub journey_id: String,
}

impl ControlPlane {
    pub fn new(channel: Channel, admin_token: Option<&str>) -> anyhow::Result<ControlPlane> {
        let bearer = admin_token
            .map(|token| MetadataValue::try_from(format!("Bearer {token}")))
            .transpose()
            .context("the admin token is not a valid header value")?;
        Ok(ControlPlane { channel, bearer })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        request.set_timeout(Duration::from_secs(30));
        request
    }

    /// Creates the source, destination, catalog entries and the published journey; `hold` is
    /// the abandonment journey's hold.
    pub async fn prepare(
        &self,
        workload: &Workload,
        hold: Duration,
        sink_url: &str,
    ) -> anyhow::Result<Prepared> {
        let name = format!("journeys-load {}", workload.run);
        let source = SourceServiceClient::new(self.channel.clone())
            .create_source(self.request(pb::CreateSourceRequest { name: name.clone() }))
            .await
            .context("CreateSource")?
            .into_inner();
        let destination = DestinationServiceClient::new(self.channel.clone())
            .create_destination(self.request(pb::CreateDestinationRequest {
                destination: Some(pb::Destination {
                    name: name.clone(),
                    webhook: Some(pb::WebhookSettings {
                        url: sink_url.to_owned(),
                        ..pb::WebhookSettings::default()
                    }),
                    ..pb::Destination::default()
                }),
            }))
            .await
            .context("CreateDestination")?
            .into_inner();
        for event in catalog_events(workload.kind) {
            CatalogServiceClient::new(self.channel.clone())
                .register_event(self.request(pb::RegisterEventRequest {
                    name: (*event).to_owned(),
                }))
                .await
                .with_context(|| format!("RegisterEvent {event}"))?;
        }
        let journey = match workload.kind {
            WorkloadKind::Forwarding => forwarding_journey(&name, workload, &destination.id),
            WorkloadKind::ForwardingHalf => half_journey(&name, workload, &destination.id),
            WorkloadKind::Abandonment | WorkloadKind::Burst => {
                abandonment_journey(&name, workload, &destination.id, hold)
            }
        };
        let mut journeys = JourneyServiceClient::new(self.channel.clone());
        let journey = journeys
            .create_journey(self.request(pb::CreateJourneyRequest {
                journey: Some(journey),
            }))
            .await
            .context("CreateJourney")?
            .into_inner();
        journeys
            .publish_journey(self.request(pb::PublishJourneyRequest {
                id: journey.id.clone(),
                ..Default::default()
            }))
            .await
            .context("PublishJourney")?;
        Ok(Prepared {
            write_key: source.write_key,
            source_id: source.id,
            destination_id: destination.id,
            journey_id: journey.id,
        })
    }

    /// The target's timer figures, or `None` when it serves no scheduler (a stand-alone data
    /// plane) or the call fails: the report then goes without them.
    pub async fn timer_stats(&self) -> Option<TimerStats> {
        let stats = SchedulerServiceClient::new(self.channel.clone())
            .get_scheduler_stats(self.request(pb::GetSchedulerStatsRequest {}))
            .await
            .ok()?
            .into_inner();
        let duration = |d: Option<prost_types::Duration>| {
            d.and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default()
        };
        Some(TimerStats {
            fired: stats.fired_total,
            p50: duration(stats.lateness_p50),
            p99: duration(stats.lateness_p99),
            wait_p99: duration(stats.wait_p99),
            apply_p99: duration(stats.apply_p99),
        })
    }

    /// Archives the journey (ending any instance left) and revokes the source; best effort.
    pub async fn clean_up(&self, prepared: &Prepared) {
        let archived = JourneyServiceClient::new(self.channel.clone())
            .archive_journey(self.request(pb::ArchiveJourneyRequest {
                id: prepared.journey_id.clone(),
                mode: pb::ArchiveMode::Exit.into(),
            }))
            .await;
        if let Err(status) = archived {
            eprintln!("could not archive the load journey: {}", status.message());
        }
        let revoked = SourceServiceClient::new(self.channel.clone())
            .revoke_source(self.request(pb::RevokeSourceRequest {
                id: prepared.source_id.clone(),
            }))
            .await;
        if let Err(status) = revoked {
            eprintln!("could not revoke the load source: {}", status.message());
        }
    }
}

/// The events a workload sends, to register in the catalog.
fn catalog_events(kind: WorkloadKind) -> &'static [&'static str] {
    match kind {
        WorkloadKind::Forwarding => &[EVENT_NAME],
        WorkloadKind::ForwardingHalf => &[FORM_EVENT],
        WorkloadKind::Abandonment | WorkloadKind::Burst => &[CHECKOUT_EVENT, PURCHASE_EVENT],
    }
}

/// Entry `load_event` with `run` equal to this run, one instance per `seq`, a send with a
/// small mapping, then the end.
fn forwarding_journey(name: &str, workload: &Workload, destination_id: &str) -> pb::Journey {
    let context = format!("$.properties.journey_context.{EVENT_NAME}");
    let mapping = json!({
        "type": "track",
        "event": "Load Forwarded",
        "userId": {"@path": "$.userId"},
        "messageId": {"@path": "$.messageId"},
        "run": {"@path": format!("{context}.run")},
        "seq": {"@path": format!("{context}.seq")},
        "plan": {"@path": format!("{context}.plan")},
        "amount": {"@path": format!("{context}.amount")},
    });
    pb::Journey {
        name: name.to_owned(),
        description: "Forwards every load_event of one journeys-load run to its sink.".to_owned(),
        entry: Some(entry(
            EVENT_NAME,
            vec![equals("run", workload.run.as_str())],
        )),
        entry_rule: pb::EntryRule::ReenterEveryTime.into(),
        unique_identifier: "seq".to_owned(),
        start_step: SEND_STEP.to_owned(),
        steps: vec![
            send(SEND_STEP, "Load Forwarded", destination_id, &mapping),
            end(),
        ],
        ..pb::Journey::default()
    }
}

/// Entry `form_submitted` with `run` equal to this run and `matches: true`, one instance per
/// `seq`, a send with a 4-field mapping, then the end.
fn half_journey(name: &str, workload: &Workload, destination_id: &str) -> pb::Journey {
    let context = format!("$.properties.journey_context.{FORM_EVENT}");
    let mapping = json!({
        "run": {"@path": format!("{context}.run")},
        "seq": {"@path": format!("{context}.seq")},
        "userId": {"@path": "$.userId"},
        "form_id": {"@path": format!("{context}.form_id")},
    });
    pb::Journey {
        name: name.to_owned(),
        description: "Forwards the matching form_submitted events of one journeys-load run."
            .to_owned(),
        entry: Some(entry(
            FORM_EVENT,
            vec![
                equals("run", workload.run.as_str()),
                equals("matches", true),
            ],
        )),
        entry_rule: pb::EntryRule::ReenterEveryTime.into(),
        unique_identifier: "seq".to_owned(),
        start_step: SEND_STEP.to_owned(),
        steps: vec![
            send(SEND_STEP, "Form Forwarded", destination_id, &mapping),
            end(),
        ],
        ..pb::Journey::default()
    }
}

/// Entry `checkout_started` of this run, one instance per `session_id`; holds until the
/// session's `purchase_completed` (then ends) for `hold`, else sends the nudge.
fn abandonment_journey(
    name: &str,
    workload: &Workload,
    destination_id: &str,
    hold: Duration,
) -> pb::Journey {
    let context = format!("$.properties.journey_context.{CHECKOUT_EVENT}");
    let mapping = json!({
        "run": {"@path": format!("{context}.run")},
        "seq": {"@path": format!("{context}.seq")},
        "userId": {"@path": "$.userId"},
        "session_id": {"@path": format!("{context}.session_id")},
    });
    let hold_step = pb::Step {
        key: "wait_for_purchase".to_owned(),
        name: "Wait for the purchase".to_owned(),
        kind: Some(pb::step::Kind::HoldUntil(pb::HoldUntilStep {
            branches: vec![pb::HoldBranch {
                name: "bought".to_owned(),
                event: PURCHASE_EVENT.to_owned(),
                filters: vec![equals("run", workload.run.as_str())],
                next: END_STEP.to_owned(),
                return_to_start: false,
            }],
            max_duration: Some(prost_types::Duration {
                seconds: i64::try_from(hold.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(hold.subsec_nanos()).unwrap_or_default(),
            }),
            timeout_next: "nudge".to_owned(),
        })),
    };
    pb::Journey {
        name: name.to_owned(),
        description: "Nudges the checkouts of one journeys-load run that were not bought in time."
            .to_owned(),
        entry: Some(entry(
            CHECKOUT_EVENT,
            vec![equals("run", workload.run.as_str())],
        )),
        entry_rule: pb::EntryRule::ReenterEveryTime.into(),
        unique_identifier: "session_id".to_owned(),
        start_step: hold_step.key.clone(),
        steps: vec![
            hold_step,
            send("nudge", "Checkout Abandoned", destination_id, &mapping),
            end(),
        ],
        ..pb::Journey::default()
    }
}

/// An entry trigger on `event` with `filters`.
fn entry(event: &str, filters: Vec<pb::Filter>) -> pb::Entry {
    pb::Entry {
        event: event.to_owned(),
        audience_key: None,
        filters,
    }
}

/// A filter: property `property` equals `value`.
fn equals(property: &str, value: impl Into<Value>) -> pb::Filter {
    pb::Filter {
        property: property.to_owned(),
        r#match: Some(pb::filter::Match::Equals(to_proto(&value.into()))),
    }
}

/// The send step `key` to `destination_id` with `mapping`, then the end.
fn send(key: &str, event_name: &str, destination_id: &str, mapping: &Value) -> pb::Step {
    pb::Step {
        key: key.to_owned(),
        name: event_name.to_owned(),
        kind: Some(pb::step::Kind::Send(pb::SendStep {
            destination_id: destination_id.to_owned(),
            action: Some(pb::SendAction {
                method: "POST".to_owned(),
                path: String::new(),
            }),
            event_name: event_name.to_owned(),
            traits: Vec::new(),
            mapping: match to_proto(mapping).kind {
                Some(Kind::StructValue(mapping)) => Some(mapping),
                _ => None,
            },
            next: END_STEP.to_owned(),
        })),
    }
}

/// The end step.
fn end() -> pb::Step {
    pb::Step {
        key: END_STEP.to_owned(),
        name: "Done".to_owned(),
        kind: Some(pb::step::Kind::End(pb::EndStep {})),
    }
}

/// A JSON value as a protobuf `Value`.
fn to_proto(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), to_proto(v)))
                .collect::<BTreeMap<_, _>>(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journey_forwards_run_and_seq() {
        let w = Workload::new(WorkloadKind::Forwarding, 1, 1);
        let j = forwarding_journey("n", &w, "d1");
        let Some(pb::step::Kind::Send(send)) = &j.steps[0].kind else {
            panic!("first step is the send");
        };
        let mapping = send.mapping.as_ref().unwrap();
        assert!(mapping.fields.contains_key("run"));
        assert!(mapping.fields.contains_key("seq"));
        assert_eq!(send.next, "done");
        assert_eq!(j.unique_identifier, "seq");
    }

    #[test]
    fn the_half_journey_filters_on_matches_and_maps_four_fields() {
        let w = Workload::new(WorkloadKind::ForwardingHalf, 1, 1);
        let j = half_journey("n", &w, "d1");
        let filters = &j.entry.as_ref().unwrap().filters;
        assert!(filters.iter().any(|f| f.property == "matches"
            && f.r#match == Some(pb::filter::Match::Equals(to_proto(&Value::Bool(true))))));
        let Some(pb::step::Kind::Send(send)) = &j.steps[0].kind else {
            panic!("first step is the send");
        };
        assert_eq!(send.mapping.as_ref().unwrap().fields.len(), 4);
    }

    #[test]
    fn the_abandonment_journey_holds_per_session_then_nudges() {
        let w = Workload::new(WorkloadKind::Abandonment, 1, 1);
        let j = abandonment_journey("n", &w, "d1", Duration::from_secs(5));
        assert_eq!(j.unique_identifier, "session_id");
        let Some(pb::step::Kind::HoldUntil(hold)) = &j.steps[0].kind else {
            panic!("first step is the hold");
        };
        assert_eq!(hold.max_duration.as_ref().unwrap().seconds, 5);
        assert_eq!(hold.branches[0].event, PURCHASE_EVENT);
        assert_eq!(hold.timeout_next, "nudge");
        let Some(pb::step::Kind::Send(send)) = &j.steps[1].kind else {
            panic!("the hold times out into the nudge");
        };
        let mapping = send.mapping.as_ref().unwrap();
        assert!(mapping.fields.contains_key("run") && mapping.fields.contains_key("seq"));
    }
}
