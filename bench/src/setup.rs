//! What a run creates through the control plane before sending anything: a source (write key),
//! a webhook destination pointing at the sink, the entry event in the catalog, and a published
//! forwarding journey — entry `load_event` filtered on this run, re-entry keyed by `seq`,
//! send, end. Afterwards the journey is archived and the source revoked, so a shared stack is
//! left as it was (apart from history).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use journeys_proto::v1 as pb;
use journeys_proto::v1::catalog_service_client::CatalogServiceClient;
use journeys_proto::v1::destination_service_client::DestinationServiceClient;
use journeys_proto::v1::journey_service_client::JourneyServiceClient;
use journeys_proto::v1::source_service_client::SourceServiceClient;
use prost_types::value::Kind;
use serde_json::{Value, json};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::workload::{EVENT_NAME, Workload};

/// The send step of the journey.
const SEND_STEP: &str = "forward";

/// The control-plane side of a run.
pub struct ControlPlane {
    channel: Channel,
    bearer: Option<MetadataValue<tonic::metadata::Ascii>>,
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

    /// Creates the source, destination, catalog entry and the published journey.
    pub async fn prepare(&self, workload: &Workload, sink_url: &str) -> anyhow::Result<Prepared> {
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
        CatalogServiceClient::new(self.channel.clone())
            .register_event(self.request(pb::RegisterEventRequest {
                name: EVENT_NAME.to_owned(),
            }))
            .await
            .context("RegisterEvent")?;
        let mut journeys = JourneyServiceClient::new(self.channel.clone());
        let journey = journeys
            .create_journey(self.request(pb::CreateJourneyRequest {
                journey: Some(forwarding_journey(&name, workload, &destination.id)),
            }))
            .await
            .context("CreateJourney")?
            .into_inner();
        journeys
            .publish_journey(self.request(pb::PublishJourneyRequest {
                id: journey.id.clone(),
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
        entry: Some(pb::Entry {
            event: EVENT_NAME.to_owned(),
            audience_key: None,
            filters: vec![pb::Filter {
                property: "run".to_owned(),
                r#match: Some(pb::filter::Match::Equals(to_proto(&Value::from(
                    workload.run.as_str(),
                )))),
            }],
        }),
        entry_rule: pb::EntryRule::ReenterEveryTime.into(),
        unique_identifier: "seq".to_owned(),
        start_step: SEND_STEP.to_owned(),
        steps: vec![
            pb::Step {
                key: SEND_STEP.to_owned(),
                name: "Forward".to_owned(),
                kind: Some(pb::step::Kind::Send(pb::SendStep {
                    destination_id: destination_id.to_owned(),
                    action: Some(pb::SendAction {
                        method: "POST".to_owned(),
                        path: String::new(),
                    }),
                    event_name: "Load Forwarded".to_owned(),
                    traits: Vec::new(),
                    mapping: match to_proto(&mapping).kind {
                        Some(Kind::StructValue(mapping)) => Some(mapping),
                        _ => None,
                    },
                    next: "done".to_owned(),
                })),
            },
            pb::Step {
                key: "done".to_owned(),
                name: "Done".to_owned(),
                kind: Some(pb::step::Kind::End(pb::EndStep {})),
            },
        ],
        ..pb::Journey::default()
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
        let w = Workload::new(1);
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
}
