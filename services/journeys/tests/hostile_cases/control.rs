//! The control plane's services other than journeys: the admin token, destinations (SSRF in
//! every spelling, credentials masking, bad settings), sources, audiences, the catalog,
//! profiles, instances and the scheduler.

use std::sync::Arc;

use journeys_proto::v1 as pb;
use journeys_proto::v1::source_service_client::SourceServiceClient;
use journeys_tests::request_from_json;
use serde_json::{Value, json};
use tonic::Request;
use tonic::transport::Channel;

use super::{Case, Ctx, Got, case};

/// A `CreateDestination` of this JSON (`{"destination": {...}}`).
fn create_destination(name: &str, status: &str, message: &str, json: Value) -> Case {
    let json = Arc::new(json);
    case(name, status, message, move |ctx: Arc<Ctx>| {
        let json = json.clone();
        async move {
            let request: pb::CreateDestinationRequest =
                request_from_json(&json, "journeys.v1.CreateDestinationRequest")?;
            Ok(Got::grpc(
                ctx.c().destinations.create_destination(request).await,
            ))
        }
    })
}

fn webhook(url: &str) -> Value {
    json!({"destination": {"name": format!("SSRF {url}"), "webhook": {"url": url}}})
}

pub fn cases() -> Vec<Case> {
    let mut cases = admin_token();
    cases.extend(ssrf());
    cases.extend(destinations());
    cases.extend(sources_audiences_catalog());
    cases.extend(profiles_instances_scheduler());
    cases
}

fn admin_token() -> Vec<Case> {
    let call = |name: &str, header: Option<&'static str>| {
        case(
            name,
            "Unauthenticated",
            "token",
            move |ctx: Arc<Ctx>| async move {
                let channel = Channel::from_shared(format!("http://{}", ctx.grpc))?
                    .connect()
                    .await?;
                let mut client = SourceServiceClient::new(channel);
                let mut request = Request::new(pb::ListSourcesRequest {});
                if let Some(value) = header {
                    request
                        .metadata_mut()
                        .insert("authorization", value.parse()?);
                }
                Ok(Got::grpc(client.list_sources(request).await))
            },
        )
    };
    vec![
        call("a control-plane call without the admin token", None),
        call(
            "a control-plane call with a wrong admin token",
            Some("Bearer nope"),
        ),
        call("the admin token as Basic auth", Some("Basic aG9zdGlsZTo=")),
    ]
}

/// Destination URLs at loopback, private, link-local and unspecified addresses in every
/// spelling: refused at create, naming the field and the kind of address.
fn ssrf() -> Vec<Case> {
    let refused = [
        ("http://127.0.0.2/", "127.0.0.2 is a loopback"),
        ("http://2130706434/", "127.0.0.2 is a loopback"),
        ("http://0x7f000002/", "127.0.0.2 is a loopback"),
        ("http://0177.0.0.2/", "127.0.0.2 is a loopback"),
        ("http://0x7f.0.0.2/", "127.0.0.2 is a loopback"),
        ("http://127.2/", "127.0.0.2 is a loopback"),
        ("http://[::1]/", "::1 is a loopback"),
        ("http://[0:0:0:0:0:0:0:1]/", "::1 is a loopback"),
        ("http://[::ffff:127.0.0.2]/", "is a loopback"),
        ("http://[::ffff:7f00:2]/", "is a loopback"),
        ("http://[::ffff:169.254.169.254]/", "is a link-local"),
        ("http://0.0.0.0/", "0.0.0.0 is an unspecified"),
        ("http://0/", "0.0.0.0 is an unspecified"),
        ("http://[::]/", ":: is an unspecified"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is a link-local",
        ),
        ("http://2852039166/", "169.254.169.254 is a link-local"),
        ("http://0xa9fea9fe/", "169.254.169.254 is a link-local"),
        (
            "http://0251.0376.0251.0376/",
            "169.254.169.254 is a link-local",
        ),
        ("http://169.254.43518/", "169.254.169.254 is a link-local"),
        ("http://[fe80::1]/", "is a link-local"),
        ("http://[fd00::1]/", "is a private"),
        ("http://10.0.0.1/", "10.0.0.1 is a private"),
        ("http://172.16.5.4/", "172.16.5.4 is a private"),
        ("http://192.168.0.1:8080/", "192.168.0.1 is a private"),
        ("http://100.64.0.1/", "100.64.0.1 is a shared"),
        ("http://224.0.0.1/", "224.0.0.1 is a multicast"),
        ("http://255.255.255.255/", "is a reserved"),
        ("http://[2002:7f00:1::]/", "is a loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", "is a link-local"),
        ("http://localhost/", "localhost names this machine"),
        ("http://LOCALHOST./", "names this machine"),
        ("http://metadata.localhost/", "names this machine"),
        ("http://user:pw@10.1.2.3/", "10.1.2.3 is a private"),
    ];
    let mut cases: Vec<Case> = refused
        .into_iter()
        .map(|(url, why)| {
            create_destination(
                &format!("a destination at {url}"),
                "InvalidArgument",
                why,
                webhook(url),
            )
        })
        .collect();
    cases.push(case(
        "an update to 169.254.169.254 is refused",
        "InvalidArgument",
        "169.254.169.254 is a link-local",
        |ctx: Arc<Ctx>| async move {
            let mut c = ctx.c();
            let mut hook = c
                .destinations
                .get_destination(pb::GetDestinationRequest {
                    id: "hook".to_owned(),
                })
                .await?
                .into_inner();
            hook.webhook.as_mut().unwrap().url = "http://169.254.169.254/".to_owned();
            Ok(Got::grpc(
                c.destinations
                    .update_destination(pb::UpdateDestinationRequest {
                        destination: Some(hook),
                    })
                    .await,
            ))
        },
    ));
    cases
}

fn destinations() -> Vec<Case> {
    vec![
        case(
            "URL credentials are masked in the answer",
            "Ok",
            "cred-user:********@127.0.0.1",
            |ctx: Arc<Ctx>| async move {
                let url = ctx
                    .sink_url
                    .replace("http://", "http://cred-user:s3cret-pw@");
                let request: pb::CreateDestinationRequest = request_from_json(
                    &json!({"destination": {"id": "creds", "name": "With credentials", "webhook": {"url": url}}}),
                    "journeys.v1.CreateDestinationRequest",
                )?;
                let got = Got::grpc(ctx.c().destinations.create_destination(request).await);
                let listed = format!(
                    "{:?}",
                    ctx.c()
                        .destinations
                        .list_destinations(pb::ListDestinationsRequest::default())
                        .await?
                        .into_inner()
                );
                Ok(
                    if got.message.contains("s3cret") || listed.contains("s3cret") {
                        Got::new("leaked", got.message)
                    } else {
                        got
                    },
                )
            },
        ),
        create_destination(
            "a destination without a name",
            "InvalidArgument",
            "destination.name",
            json!({"destination": {"webhook": {"url": "https://hooks.example.com/"}}}),
        ),
        create_destination(
            "a destination name of 10,000 characters",
            "InvalidArgument",
            "destination.name",
            json!({"destination": {"name": "n".repeat(10_000), "webhook": {"url": "https://hooks.example.com/"}}}),
        ),
        create_destination(
            "a destination of no kind",
            "InvalidArgument",
            "destination",
            json!({"destination": {"name": "Kindless"}}),
        ),
        create_destination(
            "a webhook without a URL",
            "InvalidArgument",
            "destination.webhook.url",
            json!({"destination": {"name": "No URL", "webhook": {}}}),
        ),
        create_destination(
            "a webhook URL that is not a URL",
            "InvalidArgument",
            "destination.webhook.url",
            webhook("not a url"),
        ),
        create_destination(
            "an ftp:// webhook",
            "InvalidArgument",
            "destination.webhook.url",
            webhook("ftp://hooks.example.com/"),
        ),
        create_destination(
            "a file:// webhook",
            "InvalidArgument",
            "destination.webhook.url",
            webhook("file:///etc/passwd"),
        ),
        create_destination(
            "a URL of 100 KB",
            "InvalidArgument",
            "destination.webhook.url",
            webhook(&format!(
                "https://hooks.example.com/{}",
                "p".repeat(100 * 1024)
            )),
        ),
        create_destination(
            "a header value with CR LF",
            "InvalidArgument",
            "destination.webhook.headers",
            json!({"destination": {"name": "Injected", "webhook": {"url": "https://hooks.example.com/", "headers": {"x-a": "1\r\nx-injected: 2"}}}}),
        ),
        create_destination(
            "a header name with a space",
            "InvalidArgument",
            "destination.webhook.headers",
            json!({"destination": {"name": "Bad header", "webhook": {"url": "https://hooks.example.com/", "headers": {"bad name": "1"}}}}),
        ),
        create_destination(
            "a negative timeout",
            "InvalidArgument",
            "destination.webhook.timeout",
            json!({"destination": {"name": "Negative", "webhook": {"url": "https://hooks.example.com/", "timeout": "-5s"}}}),
        ),
        create_destination(
            "a timeout of a year",
            "InvalidArgument",
            "destination.webhook.timeout",
            json!({"destination": {"name": "Forever", "webhook": {"url": "https://hooks.example.com/", "timeout": "31536000s"}}}),
        ),
        create_destination(
            "an id with a space",
            "InvalidArgument",
            "destination.id",
            json!({"destination": {"id": "has space", "name": "Spaced id", "webhook": {"url": "https://hooks.example.com/"}}}),
        ),
        create_destination(
            "an id of 1,000 characters",
            "InvalidArgument",
            "destination.id",
            json!({"destination": {"id": "d".repeat(1000), "name": "Long id", "webhook": {"url": "https://hooks.example.com/"}}}),
        ),
        create_destination(
            "a duplicate id",
            "AlreadyExists",
            "hook",
            json!({"destination": {"id": "hook", "name": "Again", "webhook": {"url": "https://hooks.example.com/"}}}),
        ),
        create_destination(
            "a function that does not parse",
            "InvalidArgument",
            "destination.function.code",
            json!({"destination": {"name": "Broken function", "function": {"code": "function onSend( {"}}}),
        ),
        case(
            "an unknown destination",
            "NotFound",
            "nope",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .destinations
                        .get_destination(pb::GetDestinationRequest {
                            id: "nope".to_owned(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "deleting a destination in use",
            "FailedPrecondition",
            "probes",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .destinations
                        .delete_destination(pb::DeleteDestinationRequest {
                            id: "hook".to_owned(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "replaying unknown dead letters replays none",
            "Ok",
            "replayed: 0",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .destinations
                        .replay_dead_letters(pb::ReplayDeadLettersRequest {
                            ids: vec!["nope".to_owned()],
                        })
                        .await,
                ))
            },
        ),
        case(
            "dead letters with a forged page token",
            "Ok",
            "dead_letters: []",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .destinations
                        .list_dead_letters(pb::ListDeadLettersRequest {
                            page_token: "%%forged%%".to_owned(),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "a function that loops forever is stopped",
            "Ok",
            "",
            |ctx: Arc<Ctx>| async move {
                let request: pb::TestFunctionRequest = request_from_json(
                    &json!({"code": "async function onSend(event) { while (true) {} }", "payload": {"a": 1}}),
                    "journeys.v1.TestFunctionRequest",
                )?;
                let got = Got::grpc(ctx.c().destinations.test_function(request).await);
                Ok(if got.message.contains("error: Some") {
                    Got::new("Ok", "")
                } else {
                    got
                })
            },
        ),
        case(
            "a function that allocates without bound is stopped",
            "Ok",
            "",
            |ctx: Arc<Ctx>| async move {
                let request: pb::TestFunctionRequest = request_from_json(
                    &json!({"code": "async function onSend(event) { let a = []; while (true) { a.push('x'.repeat(1 << 20)); } }", "payload": {"a": 1}}),
                    "journeys.v1.TestFunctionRequest",
                )?;
                let got = Got::grpc(ctx.c().destinations.test_function(request).await);
                Ok(if got.message.contains("error: Some") {
                    Got::new("Ok", "")
                } else {
                    got
                })
            },
        ),
        case(
            "a function fetching the metadata address is refused",
            "Ok",
            "",
            |ctx: Arc<Ctx>| async move {
                let request: pb::TestFunctionRequest = request_from_json(
                    &json!({"code": "async function onSend(event) { const r = await fetch('http://169.254.169.254/latest/meta-data/'); return await r.text(); }", "payload": {"a": 1}}),
                    "journeys.v1.TestFunctionRequest",
                )?;
                let got = Got::grpc(ctx.c().destinations.test_function(request).await);
                Ok(if got.message.contains("169.254.169.254 is a link-local") {
                    Got::new("Ok", "")
                } else {
                    got
                })
            },
        ),
    ]
}

fn sources_audiences_catalog() -> Vec<Case> {
    let source = |name: &str, source_name: String, status: &str, message: &str| {
        case(name, status, message, move |ctx: Arc<Ctx>| {
            let source_name = source_name.clone();
            async move {
                Ok(Got::grpc(
                    ctx.c()
                        .sources
                        .create_source(pb::CreateSourceRequest { name: source_name })
                        .await,
                ))
            }
        })
    };
    let audience = |name: &str, key: String, audience_name: String, status: &str, message: &str| {
        case(name, status, message, move |ctx: Arc<Ctx>| {
            let (key, audience_name) = (key.clone(), audience_name.clone());
            async move {
                Ok(Got::grpc(
                    ctx.c()
                        .audiences
                        .create_audience(pb::CreateAudienceRequest {
                            key,
                            name: audience_name,
                        })
                        .await,
                ))
            }
        })
    };
    let register = |name: &str, event: String, status: &str, message: &str| {
        case(name, status, message, move |ctx: Arc<Ctx>| {
            let event = event.clone();
            async move {
                Ok(Got::grpc(
                    ctx.c()
                        .catalog
                        .register_event(pb::RegisterEventRequest { name: event })
                        .await,
                ))
            }
        })
    };
    let members = |name: &str, key: &'static str, ids: Vec<String>, status: &str, message: &str| {
        case(name, status, message, move |ctx: Arc<Ctx>| {
            let user_ids = ids.clone();
            async move {
                Ok(Got::grpc(
                    ctx.c()
                        .audiences
                        .add_members(pb::AddMembersRequest {
                            key: key.to_owned(),
                            user_ids,
                        })
                        .await,
                ))
            }
        })
    };
    vec![
        source(
            "a source without a name",
            String::new(),
            "InvalidArgument",
            "name",
        ),
        source(
            "a source named by spaces",
            "   ".to_owned(),
            "InvalidArgument",
            "name",
        ),
        source(
            "a source name of 10,000 characters",
            "s".repeat(10_000),
            "InvalidArgument",
            "name",
        ),
        source(
            "a source name with control characters is kept as given",
            "web\u{0}\u{7}".to_owned(),
            "Ok",
            "write_key",
        ),
        case(
            "revoking an unknown source",
            "NotFound",
            "nope",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .sources
                        .revoke_source(pb::RevokeSourceRequest {
                            id: "nope".to_owned(),
                        })
                        .await,
                ))
            },
        ),
        audience(
            "an audience without a key",
            String::new(),
            "VIPs".to_owned(),
            "InvalidArgument",
            "key",
        ),
        audience(
            "an audience key with a space",
            "vip list".to_owned(),
            "VIPs".to_owned(),
            "InvalidArgument",
            "key",
        ),
        audience(
            "an audience key of 1,000 characters",
            "k".repeat(1000),
            "VIPs".to_owned(),
            "InvalidArgument",
            "key",
        ),
        audience(
            "an audience without a name",
            "vips".to_owned(),
            String::new(),
            "InvalidArgument",
            "name",
        ),
        case(
            "an audience for the member cases",
            "Ok",
            "members",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .audiences
                        .create_audience(pb::CreateAudienceRequest {
                            key: "members".to_owned(),
                            name: "Members".to_owned(),
                        })
                        .await,
                ))
            },
        ),
        members(
            "an empty member id",
            "members",
            vec![String::new()],
            "InvalidArgument",
            "user_ids[0]",
        ),
        members(
            "a member id of 10,000 characters",
            "members",
            vec!["m".repeat(10_000)],
            "InvalidArgument",
            "user_ids[0]: is 10000 characters long, at most 191",
        ),
        members(
            "100,000 members in one call",
            "members",
            (0..100_000).map(|i| format!("m{i}")).collect(),
            "InvalidArgument",
            "user_ids",
        ),
        members(
            "members of an unknown audience",
            "nope",
            vec!["u1".to_owned()],
            "NotFound",
            "nope",
        ),
        members(
            "member ids differing by a trailing space are two members",
            "members",
            vec!["mem".to_owned(), "mem ".to_owned()],
            "Ok",
            "added: 2",
        ),
        case(
            "a membership check without a user",
            "InvalidArgument",
            "user_id",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .audiences
                        .check_membership(pb::CheckMembershipRequest {
                            key: "members".to_owned(),
                            user_id: String::new(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "members with a forged page token",
            "Ok",
            "user_ids",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .audiences
                        .list_members(pb::ListMembersRequest {
                            key: "members".to_owned(),
                            page_size: 10,
                            page_token: "forged!".to_owned(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "members with a negative page size",
            "InvalidArgument",
            "page_size",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .audiences
                        .list_members(pb::ListMembersRequest {
                            key: "members".to_owned(),
                            page_size: -5,
                            page_token: String::new(),
                        })
                        .await,
                ))
            },
        ),
        register(
            "an empty event name",
            String::new(),
            "InvalidArgument",
            "name",
        ),
        register(
            "an event name of 10,000 characters",
            "e".repeat(10_000),
            "InvalidArgument",
            "name",
        ),
        register(
            "an event name with a trailing space is its own name",
            "signup ".to_owned(),
            "Ok",
            "signup ",
        ),
        case(
            "event names sent past the catalog bound are applied but not listed",
            "200",
            "bounded",
            |ctx: Arc<Ctx>| async move {
                let batch: Vec<Value> = (0..500).map(|i| json!({"type": "track", "userId": format!("namer-{i}"), "event": format!("name-{i}")})).collect();
                let body = serde_json::to_vec(&json!({"batch": batch}))?;
                let got = super::raw(
                    ctx.http,
                    super::post_request("/v1/batch", &super::keyed(&ctx.key), &body),
                )
                .await;
                if got.status != "200" {
                    return Ok(got);
                }
                let listed = ctx
                    .c()
                    .catalog
                    .list_events(pb::ListEventsRequest {})
                    .await?
                    .into_inner()
                    .events
                    .len();
                Ok(Got::new(
                    "200",
                    if listed < 410 {
                        "bounded".to_owned()
                    } else {
                        format!("{listed} names listed")
                    },
                ))
            },
        ),
    ]
}

fn profiles_instances_scheduler() -> Vec<Case> {
    vec![
        case(
            "a profile without a user id",
            "InvalidArgument",
            "user_id",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .profiles
                        .get_profile(pb::GetProfileRequest {
                            user_id: String::new(),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "an unknown profile",
            "NotFound",
            "",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .profiles
                        .get_profile(pb::GetProfileRequest {
                            user_id: "nobody".to_owned(),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "a profile id of 10,000 characters",
            "NotFound",
            "bytes in all",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .profiles
                        .get_profile(pb::GetProfileRequest {
                            user_id: "p".repeat(10_000),
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "deleting a profile with both ids",
            "InvalidArgument",
            "",
            |ctx: Arc<Ctx>| async move {
                let request: pb::DeleteProfileRequest = request_from_json(
                    &json!({"user_id": "a", "anonymous_id": "b"}),
                    "journeys.v1.DeleteProfileRequest",
                )?;
                Ok(Got::grpc(ctx.c().profiles.delete_profile(request).await))
            },
        ),
        case(
            "deleting a profile with neither id",
            "InvalidArgument",
            "",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .profiles
                        .delete_profile(pb::DeleteProfileRequest::default())
                        .await,
                ))
            },
        ),
        case(
            "an unknown instance",
            "NotFound",
            "",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .instances
                        .get_instance(pb::GetInstanceRequest {
                            id: "nope".to_owned(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "an instance without an id",
            "InvalidArgument",
            "id",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .instances
                        .get_instance(pb::GetInstanceRequest { id: String::new() })
                        .await,
                ))
            },
        ),
        case(
            "exiting an unknown instance",
            "NotFound",
            "",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .instances
                        .exit_instance(pb::ExitInstanceRequest {
                            id: "nope".to_owned(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "instances in an unknown state 99",
            "InvalidArgument",
            "state",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .instances
                        .list_instances(pb::ListInstancesRequest {
                            state: 99,
                            ..Default::default()
                        })
                        .await,
                ))
            },
        ),
        case(
            "instances with a forged page token",
            "Ok",
            "a page",
            |ctx: Arc<Ctx>| async move {
                let listed = ctx
                    .c()
                    .instances
                    .list_instances(pb::ListInstancesRequest {
                        page_token: "AAAA####".to_owned(),
                        page_size: 5,
                        ..Default::default()
                    })
                    .await;
                Ok(match listed {
                    Ok(page) => Got::new(
                        "Ok",
                        format!("a page of {}", page.into_inner().instances.len()),
                    ),
                    Err(status) => Got::new(format!("{:?}", status.code()), status.message()),
                })
            },
        ),
        case(
            "timers of no instance",
            "InvalidArgument",
            "instance_id",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .scheduler
                        .list_timers(pb::ListTimersRequest {
                            instance_id: String::new(),
                        })
                        .await,
                ))
            },
        ),
        case(
            "scheduler stats answer",
            "Ok",
            "pending_timers",
            |ctx: Arc<Ctx>| async move {
                Ok(Got::grpc(
                    ctx.c()
                        .scheduler
                        .get_scheduler_stats(pb::GetSchedulerStatsRequest {})
                        .await,
                ))
            },
        ),
    ]
}
