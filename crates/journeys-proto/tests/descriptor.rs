//! Checks that the compiled contract covers API.md: every service and RPC is
//! present with the agreed shapes, `SERVICE_NAMES` lists exactly the services
//! in the descriptor set, and the generated Rust types round-trip.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

use std::collections::{BTreeMap, BTreeSet};

use journeys_proto::{FILE_DESCRIPTOR_SET, SERVICE_NAMES, v1};
use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto};

const PACKAGE: &str = "journeys.v1";

/// Every service of API.md with every RPC it names.
const API: &[(&str, &[&str])] = &[
    (
        "journeys.v1.JourneyService",
        &[
            "CreateJourney",
            "GetJourney",
            "ListJourneys",
            "UpdateJourney",
            "DeleteJourney",
            "ValidateJourney",
            "PublishJourney",
            "ArchiveJourney",
            "DuplicateJourney",
            "PreviewPayload",
            "SendTestEvent",
            "SimulateJourney",
            "GetJourneyStats",
        ],
    ),
    (
        "journeys.v1.DestinationService",
        &[
            "CreateDestination",
            "GetDestination",
            "ListDestinations",
            "UpdateDestination",
            "DeleteDestination",
            "ListDeadLetters",
            "ReplayDeadLetters",
        ],
    ),
    (
        "journeys.v1.AudienceService",
        &[
            "CreateAudience",
            "GetAudience",
            "ListAudiences",
            "ArchiveAudience",
            "AddMembers",
            "RemoveMembers",
            "ListMembers",
            "CheckMembership",
        ],
    ),
    (
        "journeys.v1.SourceService",
        &["CreateSource", "ListSources", "RevokeSource"],
    ),
    (
        "journeys.v1.CatalogService",
        &["ListEvents", "RegisterEvent"],
    ),
    ("journeys.v1.ProfileService", &["GetProfile"]),
    (
        "journeys.v1.InstanceService",
        &["ListInstances", "GetInstance", "ExitInstance"],
    ),
    (
        "journeys.v1.IngestService",
        &["Ingest", "Track", "Identify", "Batch"],
    ),
    (
        "journeys.v1.SchedulerService",
        &["GetSchedulerStats", "ListTimers"],
    ),
    ("journeys.v1.ClusterService", &["ListNodes"]),
];

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

fn package_files(fds: &FileDescriptorSet) -> impl Iterator<Item = &FileDescriptorProto> {
    fds.file.iter().filter(|f| f.package() == PACKAGE)
}

/// Fully qualified service name to its methods, by method name.
fn services(fds: &FileDescriptorSet) -> BTreeMap<String, BTreeMap<String, MethodDescriptorProto>> {
    let mut out = BTreeMap::new();
    for file in package_files(fds) {
        for service in &file.service {
            let methods = service
                .method
                .iter()
                .map(|m| (m.name().to_owned(), m.clone()))
                .collect();
            let previous = out.insert(format!("{PACKAGE}.{}", service.name()), methods);
            assert!(
                previous.is_none(),
                "service {} defined twice",
                service.name()
            );
        }
    }
    out
}

#[test]
fn every_service_and_rpc_of_the_api_is_present() {
    let services = services(&descriptor_set());
    for (service, rpcs) in API {
        let methods = services
            .get(*service)
            .unwrap_or_else(|| panic!("service {service} missing from the descriptor set"));
        for rpc in *rpcs {
            assert!(methods.contains_key(*rpc), "{service}/{rpc} missing");
        }
    }
}

#[test]
fn service_names_lists_exactly_the_services_in_the_descriptor_set() {
    let listed: BTreeSet<&str> = SERVICE_NAMES.iter().copied().collect();
    assert_eq!(
        listed.len(),
        SERVICE_NAMES.len(),
        "SERVICE_NAMES has duplicates"
    );
    let services = services(&descriptor_set());
    let described: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(listed, described);
    let in_api: BTreeSet<&str> = API.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed, in_api);
}

#[test]
fn rpc_signatures_follow_the_contract() {
    let services = services(&descriptor_set());
    let method = |service: &str, rpc: &str| services[&format!("{PACKAGE}.{service}")][rpc].clone();

    let ingest = method("IngestService", "Ingest");
    assert_eq!(ingest.input_type(), ".journeys.v1.IngestRequest");
    assert_eq!(ingest.output_type(), ".journeys.v1.IngestResponse");
    assert!(ingest.client_streaming() && ingest.server_streaming());

    for rpc in ["Track", "Identify"] {
        let m = method("IngestService", rpc);
        assert_eq!(m.input_type(), ".journeys.v1.Event", "{rpc}");
        assert_eq!(m.output_type(), ".journeys.v1.Ack", "{rpc}");
    }

    for rpc in [
        "CreateJourney",
        "GetJourney",
        "UpdateJourney",
        "PublishJourney",
        "ArchiveJourney",
        "DuplicateJourney",
    ] {
        let m = method("JourneyService", rpc);
        assert_eq!(m.input_type(), format!(".journeys.v1.{rpc}Request"));
        assert_eq!(m.output_type(), ".journeys.v1.Journey", "{rpc}");
    }

    // Apart from the bidirectional Ingest stream, every RPC is unary, and none
    // uses google.protobuf.Empty so that each can grow fields.
    for (service, methods) in &services {
        for (name, m) in methods {
            if name != "Ingest" {
                assert!(
                    !m.client_streaming() && !m.server_streaming(),
                    "{service}/{name}"
                );
            }
            for ty in [m.input_type(), m.output_type()] {
                assert!(
                    ty.starts_with(".journeys.v1."),
                    "{service}/{name} uses {ty}"
                );
            }
        }
    }
}

#[test]
fn every_enum_starts_with_unspecified_and_values_are_unique() {
    let fds = descriptor_set();
    let mut seen = BTreeSet::new();
    let mut enums = BTreeSet::new();
    for file in package_files(&fds) {
        for e in &file.enum_type {
            enums.insert(e.name().to_owned());
            let first = &e.value[0];
            assert_eq!(first.number(), 0, "{}", e.name());
            assert!(first.name().ends_with("_UNSPECIFIED"), "{}", e.name());
            for v in &e.value {
                assert!(seen.insert(v.name().to_owned()), "{} reused", v.name());
            }
        }
    }
    let expected: BTreeSet<String> = [
        "JourneyState",
        "EntryRule",
        "ConditionKind",
        "ConditionOp",
        "ArchiveMode",
        "EventType",
        "AckStatus",
        "InstanceState",
    ]
    .map(String::from)
    .into();
    assert!(
        enums.is_superset(&expected),
        "missing: {:?}",
        expected.difference(&enums)
    );
}

#[test]
fn well_known_types_are_bundled_for_reflection() {
    let fds = descriptor_set();
    let names: BTreeSet<&str> = fds
        .file
        .iter()
        .map(prost_types::FileDescriptorProto::name)
        .collect();
    for wkt in [
        "google/protobuf/duration.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(names.contains(wkt), "{wkt} missing");
    }
}

#[test]
fn comments_are_kept_for_grpcurl_describe() {
    let fds = descriptor_set();
    let journey_file = package_files(&fds)
        .find(|f| f.name() == "journeys/v1/journey.proto")
        .expect("journey.proto");
    let info = journey_file
        .source_code_info
        .as_ref()
        .expect("source info is kept");
    let journey_index = journey_file
        .message_type
        .iter()
        .position(|m| m.name() == "Journey")
        .expect("Journey message");
    // Path [4, i] is the i-th top-level message of the file.
    let path = [4, i32::try_from(journey_index).unwrap()];
    let location = info
        .location
        .iter()
        .find(|l| l.path == path)
        .expect("location of Journey");
    assert!(location.leading_comments().contains("journey"));
}

#[test]
fn a_journey_round_trips_through_the_generated_types() {
    let journey = v1::Journey {
        name: "abandoned checkout".into(),
        entry: Some(v1::Entry {
            event: "checkout_started".into(),
            audience_key: Some("vip_customers".into()),
            filters: vec![v1::Filter {
                property: "cart.total".into(),
                r#match: Some(v1::filter::Match::Equals(prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(10.0)),
                })),
            }],
        }),
        entry_rule: v1::EntryRule::ReenterEveryTime.into(),
        unique_identifier: "session_id".into(),
        start_step: "wait".into(),
        steps: vec![
            v1::Step {
                key: "wait".into(),
                name: "Wait an hour".into(),
                kind: Some(v1::step::Kind::Delay(v1::DelayStep {
                    duration: Some(prost_types::Duration {
                        seconds: 3600,
                        nanos: 0,
                    }),
                    next: "done".into(),
                })),
            },
            v1::Step {
                key: "done".into(),
                name: "Done".into(),
                kind: Some(v1::step::Kind::End(v1::EndStep {})),
            },
        ],
        ..Default::default()
    };
    let decoded = v1::Journey::decode(journey.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, journey);
    assert_eq!(decoded.entry_rule(), v1::EntryRule::ReenterEveryTime);
    assert_eq!(decoded.state(), v1::JourneyState::Unspecified);
}
