//! `journeys destination|source|audience|catalog …`: the resources journeys refer to.

use std::path::PathBuf;

use clap::Subcommand;
use journeys_proto::v1 as pb;

use super::client::{Clients, Global};
use super::error::{Error, Result};
use super::functions::{self, FunctionFlags};
use super::input;
use super::journey::time_flag;
use super::output::{Table, duration, or_dash, out, print_message, time};

pub const DESTINATION_EXAMPLES: &str = "\
Examples:
  journeys destination create --id webhook --name 'Demo sink' --url http://127.0.0.1:8088/dev/sink --signing-secret change-me
  journeys destination create -f destination.yaml
  journeys destination list
  journeys destination get webhook -o json
  journeys destination delete webhook";

pub const SOURCE_EXAMPLES: &str = "\
Examples:
  journeys source create web
  WRITE_KEY=$(journeys source create web --key-only)
  journeys source list
  journeys source revoke <id>";

pub const AUDIENCE_EXAMPLES: &str = "\
Examples:
  journeys audience create vip_customers --name 'VIP customers'
  journeys audience add vip_customers u1 u2
  journeys audience members vip_customers
  journeys audience check vip_customers u1
  journeys audience archive vip_customers";

pub const CATALOG_EXAMPLES: &str = "\
Examples:
  journeys catalog register checkout_started purchase_completed
  journeys catalog list";

/// The verbs of `journeys destination`.
#[derive(Debug, Subcommand)]
pub enum DestinationVerb {
    /// List destinations
    List,
    /// Show a destination (its signing secret masked)
    Get { id: String },
    /// Create a webhook destination (--url) or a destination function (--function) from
    /// flags, or either from a file
    #[command(after_help = "\
Examples:
  journeys destination create --id webhook --name Sink --url https://example.com/hooks --signing-secret s3cret
  journeys destination create --id crm --name CRM --function crm.js --setting url=https://crm.example.com/api --secret apiKey=k3y
  journeys destination create -f destination.yaml")]
    Create {
        /// A Destination (or `{"destination": {…}}`), JSON or YAML, instead of the flags
        #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with_all = ["id", "name", "url", "function"])]
        file: Option<PathBuf>,
        /// The id send steps name (default: assigned by the server)
        #[arg(long)]
        id: Option<String>,
        /// Unique display name
        #[arg(long, required_unless_present = "file")]
        name: Option<String>,
        /// Webhook base URL
        #[arg(long, required_unless_present_any = ["file", "function"], conflicts_with = "function")]
        url: Option<String>,
        /// Extra request header, `Name=value` (repeatable)
        #[arg(
            long = "header",
            value_name = "NAME=VALUE",
            conflicts_with = "function"
        )]
        headers: Vec<String>,
        /// HMAC-SHA256 key of the `Journeys-Signature` header
        #[arg(long, conflicts_with = "function")]
        signing_secret: Option<String>,
        /// Per-request (webhook) or per-invocation (function) timeout in seconds (default:
        /// the server's)
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
        #[command(flatten)]
        function: FunctionFlags,
    },
    /// Delivery health: sends delivered, failed attempts and sends dead-lettered, in all and
    /// per hour
    #[command(after_help = "\
Examples:
  journeys destination stats webhook
  journeys destination stats webhook --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z")]
    Stats {
        id: String,
        /// Only the hours from this time on (RFC 3339; rounded down to its hour)
        #[arg(long)]
        from: Option<String>,
        /// Only the hours before this time (RFC 3339)
        #[arg(long)]
        to: Option<String>,
    },
    /// Run a function's code once on an event and show what it did (result or error, logs,
    /// fetches); nothing is stored and no send is queued. Exits 1 when the function threw
    #[command(after_help = "\
Examples:
  journeys destination test-function --code crm.js --setting url=https://crm.example.com/api --payload event.json
  journeys destination test-function --destination crm")]
    TestFunction {
        /// A function destination whose stored code, settings, secrets and timeout stand in
        /// for what the flags leave out
        #[arg(long, required_unless_present = "code")]
        destination: Option<String>,
        /// The JavaScript to run
        #[arg(long, value_name = "FILE")]
        code: Option<PathBuf>,
        /// The event the handler gets (a Segment call as JSON or YAML; its `type` picks the
        /// handler); default: a sample `track` call
        #[arg(long, value_name = "FILE")]
        payload: Option<PathBuf>,
        /// A setting, `NAME=VALUE` (VALUE read as JSON when it is JSON, else as text;
        /// repeatable)
        #[arg(long = "setting", value_name = "NAME=VALUE")]
        settings: Vec<String>,
        /// A secret setting, `NAME=VALUE` (repeatable)
        #[arg(long = "secret", value_name = "NAME=VALUE")]
        secrets: Vec<String>,
        /// Time limit in seconds (default: the destination's, else the server's)
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
    },
    /// Delete a destination no published journey uses
    Delete { id: String },
}

/// The verbs of `journeys source`.
#[derive(Debug, Subcommand)]
pub enum SourceVerb {
    /// List sources (write keys show only their prefix)
    List,
    /// Create a source; its write key is shown this once
    Create {
        name: String,
        /// Print only the write key (for `WRITE_KEY=$(…)`)
        #[arg(long)]
        key_only: bool,
    },
    /// Revoke a source's write key at once
    Revoke { id: String },
}

/// The verbs of `journeys audience`.
#[derive(Debug, Subcommand)]
pub enum AudienceVerb {
    /// List audiences
    List,
    /// Show an audience
    Get { key: String },
    /// Create an audience
    Create {
        key: String,
        /// Display name (default: the key)
        #[arg(long)]
        name: Option<String>,
    },
    /// Archive an audience (journeys can no longer be published with it)
    Archive { key: String },
    /// Add profiles to an audience
    Add {
        key: String,
        #[arg(required = true, value_name = "USER_ID")]
        users: Vec<String>,
    },
    /// Remove profiles from an audience
    Remove {
        key: String,
        #[arg(required = true, value_name = "USER_ID")]
        users: Vec<String>,
    },
    /// List an audience's members
    Members { key: String },
    /// Whether a profile is a member (exit code 0 either way)
    Check { key: String, user: String },
}

/// The verbs of `journeys catalog`.
#[derive(Debug, Subcommand)]
pub enum CatalogVerb {
    /// List the event names received or registered
    List,
    /// Register event names before their first event arrives
    Register {
        #[arg(required = true, value_name = "EVENT")]
        names: Vec<String>,
    },
}

pub async fn destination(global: &Global, verb: DestinationVerb) -> Result<()> {
    let wanted = wanted_destination(&verb)?;
    let c = &mut global.clients().await?;
    match verb {
        DestinationVerb::List => list_destinations(global, c).await,
        DestinationVerb::Get { id } => {
            let d = c
                .destinations
                .get_destination(pb::GetDestinationRequest { id })
                .await?
                .into_inner();
            if !print_message(global.output, &d)? {
                out(&describe_destination(&d));
            }
            Ok(())
        }
        DestinationVerb::Create { .. } => {
            let d = c
                .destinations
                .create_destination(pb::CreateDestinationRequest {
                    destination: wanted,
                })
                .await?
                .into_inner();
            if !print_message(global.output, &d)? {
                out(&format!("destination/{} created\n", d.id));
            }
            Ok(())
        }
        DestinationVerb::Stats { id, from, to } => {
            let request = pb::GetDestinationStatsRequest {
                id,
                from: time_flag("--from", from.as_deref())?,
                to: time_flag("--to", to.as_deref())?,
            };
            functions::stats(global, c, request).await
        }
        DestinationVerb::TestFunction {
            destination,
            code,
            payload,
            settings,
            secrets,
            timeout,
        } => {
            let test = functions::TestFunction {
                destination,
                code,
                payload,
                settings,
                secrets,
                timeout,
            };
            functions::test_function(global, c, test).await
        }
        DestinationVerb::Delete { id } => {
            c.destinations
                .delete_destination(pb::DeleteDestinationRequest { id: id.clone() })
                .await?;
            out(&format!("destination/{id} deleted\n"));
            Ok(())
        }
    }
}

/// The destination `create` asks for (from its file or its flags); `None` for other verbs.
fn wanted_destination(verb: &DestinationVerb) -> Result<Option<pb::Destination>> {
    Ok(match verb {
        DestinationVerb::Create {
            file: Some(file), ..
        } => Some(destination_file(file)?),
        DestinationVerb::Create {
            id,
            name,
            url,
            headers,
            signing_secret,
            timeout,
            function,
            ..
        } => Some(pb::Destination {
            id: id.clone().unwrap_or_default(),
            name: name.clone().unwrap_or_default(),
            webhook: match &function.function {
                Some(_) => None,
                None => Some(pb::WebhookSettings {
                    url: url.clone().unwrap_or_default(),
                    headers: header_map(headers)?,
                    signing_secret: signing_secret.clone().unwrap_or_default(),
                    timeout: functions::seconds(*timeout),
                }),
            },
            function: function
                .function
                .as_deref()
                .map(|code| functions::function_settings(code, function, *timeout))
                .transpose()?,
            ..Default::default()
        }),
        _ => None,
    })
}

fn destination_file(path: &std::path::Path) -> Result<pb::Destination> {
    let value = input::document(path)?;
    let what = path.display().to_string();
    match value.get("destination") {
        Some(inner) if inner.is_object() => input::message(inner, &format!("{what}: destination")),
        _ => input::message(&value, &what),
    }
}

fn header_map(headers: &[String]) -> Result<std::collections::HashMap<String, String>> {
    headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .filter(|(name, _)| !name.trim().is_empty())
                .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
                .ok_or_else(|| Error::usage(format!("--header {h:?}: expected NAME=VALUE")))
        })
        .collect()
}

async fn list_destinations(global: &Global, c: &mut Clients) -> Result<()> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .destinations
            .list_destinations(pb::ListDestinationsRequest {
                page_size: 0,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.destinations);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let response = pb::ListDestinationsResponse {
        destinations: all,
        next_page_token: String::new(),
    };
    if print_message(global.output, &response)? {
        return Ok(());
    }
    let mut table = Table::new(&["ID", "NAME", "KIND", "URL", "CREATED"]);
    for d in &response.destinations {
        let (kind, url) = match (&d.webhook, &d.function) {
            (Some(w), _) => ("webhook", w.url.clone()),
            (None, Some(_)) => ("function", "-".to_owned()),
            (None, None) => ("-", "-".to_owned()),
        };
        table.row(vec![
            d.id.clone(),
            d.name.clone(),
            kind.to_owned(),
            url,
            time(d.created_at.as_ref()),
        ]);
    }
    out(&table.render());
    Ok(())
}

fn describe_destination(d: &pb::Destination) -> String {
    let mut rows = vec![("Name:", d.name.clone())];
    match &d.function {
        Some(function) => rows.extend(functions::function_rows(function)),
        None => rows.extend(webhook_rows(&d.webhook.clone().unwrap_or_default())),
    }
    rows.push(("Created:", time(d.created_at.as_ref())));
    rows.push(("Updated:", time(d.updated_at.as_ref())));
    let mut table = Table::new(&["ID:", &d.id]);
    for (key, value) in rows {
        table.row(vec![key.to_owned(), value]);
    }
    table.render()
}

fn webhook_rows(webhook: &pb::WebhookSettings) -> Vec<(&'static str, String)> {
    let mut headers: Vec<String> = webhook
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    headers.sort();
    vec![
        ("Kind:", "webhook".to_owned()),
        ("URL:", webhook.url.clone()),
        ("Headers:", or_dash(&headers.join(", "))),
        ("Signing secret:", or_dash(&webhook.signing_secret)),
        ("Timeout:", duration(webhook.timeout.as_ref())),
    ]
}

pub async fn source(global: &Global, verb: SourceVerb) -> Result<()> {
    let c = &mut global.clients().await?;
    match verb {
        SourceVerb::List => {
            let response = c
                .sources
                .list_sources(pb::ListSourcesRequest {})
                .await?
                .into_inner();
            if print_message(global.output, &response)? {
                return Ok(());
            }
            let mut table = Table::new(&["ID", "NAME", "KEY PREFIX", "CREATED", "REVOKED"]);
            for s in &response.sources {
                table.row(vec![
                    s.id.clone(),
                    s.name.clone(),
                    s.key_prefix.clone(),
                    time(s.created_at.as_ref()),
                    time(s.revoked_at.as_ref()),
                ]);
            }
            out(&table.render());
            Ok(())
        }
        SourceVerb::Create { name, key_only } => {
            let created = c
                .sources
                .create_source(pb::CreateSourceRequest { name })
                .await?
                .into_inner();
            if key_only {
                out(&format!("{}\n", created.write_key));
            } else if !print_message(global.output, &created)? {
                out(&format!(
                    "source/{} created\nwrite key: {}\n(shown only now: keep it)\n",
                    created.id, created.write_key
                ));
            }
            Ok(())
        }
        SourceVerb::Revoke { id } => {
            let source = c
                .sources
                .revoke_source(pb::RevokeSourceRequest { id })
                .await?
                .into_inner();
            if !print_message(global.output, &source)? {
                out(&format!("source/{} revoked\n", source.id));
            }
            Ok(())
        }
    }
}

pub async fn audience(global: &Global, verb: AudienceVerb) -> Result<()> {
    let c = &mut global.clients().await?;
    match verb {
        AudienceVerb::List => list_audiences(global, c).await,
        AudienceVerb::Get { key } => {
            let a = c
                .audiences
                .get_audience(pb::GetAudienceRequest { key })
                .await?
                .into_inner();
            print_audiences(global, &[a], true)
        }
        AudienceVerb::Create { key, name } => {
            let name = name.unwrap_or_else(|| key.clone());
            let a = c
                .audiences
                .create_audience(pb::CreateAudienceRequest { key, name })
                .await?
                .into_inner();
            if !print_message(global.output, &a)? {
                out(&format!("audience/{} created\n", a.key));
            }
            Ok(())
        }
        AudienceVerb::Archive { key } => {
            let a = c
                .audiences
                .archive_audience(pb::ArchiveAudienceRequest { key })
                .await?
                .into_inner();
            if !print_message(global.output, &a)? {
                out(&format!("audience/{} archived\n", a.key));
            }
            Ok(())
        }
        verb @ (AudienceVerb::Add { .. }
        | AudienceVerb::Remove { .. }
        | AudienceVerb::Check { .. }) => membership(global, c, verb).await,
        AudienceVerb::Members { key } => members(global, c, key).await,
    }
}

/// `add`, `remove` and `check`.
async fn membership(global: &Global, c: &mut Clients, verb: AudienceVerb) -> Result<()> {
    match verb {
        AudienceVerb::Add { key, users } => {
            let asked = users.len();
            let r = c
                .audiences
                .add_members(pb::AddMembersRequest {
                    key: key.clone(),
                    user_ids: users,
                })
                .await?
                .into_inner();
            if !print_message(global.output, &r)? {
                out(&format!(
                    "audience/{key}: {} added ({} already members)\n",
                    r.added,
                    asked.saturating_sub(usize::try_from(r.added).unwrap_or(0))
                ));
            }
            Ok(())
        }
        AudienceVerb::Remove { key, users } => {
            let r = c
                .audiences
                .remove_members(pb::RemoveMembersRequest {
                    key: key.clone(),
                    user_ids: users,
                })
                .await?
                .into_inner();
            if !print_message(global.output, &r)? {
                out(&format!("audience/{key}: {} removed\n", r.removed));
            }
            Ok(())
        }
        AudienceVerb::Check { key, user } => {
            let r = c
                .audiences
                .check_membership(pb::CheckMembershipRequest {
                    key: key.clone(),
                    user_id: user.clone(),
                })
                .await?
                .into_inner();
            if !print_message(global.output, &r)? {
                let verdict = if r.member { "is" } else { "is not" };
                out(&format!("{user} {verdict} a member of {key}\n"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn list_audiences(global: &Global, c: &mut Clients) -> Result<()> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .audiences
            .list_audiences(pb::ListAudiencesRequest {
                page_size: 0,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.audiences);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    print_audiences(global, &all, false)
}

/// One audience (`get`) prints as the message itself, several (`list`) as the list response.
fn print_audiences(global: &Global, audiences: &[pb::Audience], single: bool) -> Result<()> {
    let printed = if let (true, [one]) = (single, audiences) {
        print_message(global.output, one)?
    } else {
        print_message(
            global.output,
            &pb::ListAudiencesResponse {
                audiences: audiences.to_vec(),
                next_page_token: String::new(),
            },
        )?
    };
    if printed {
        return Ok(());
    }
    let mut table = Table::new(&["KEY", "NAME", "ACTIVE", "MEMBERS", "CREATED", "ARCHIVED"]);
    for a in audiences {
        table.row(vec![
            a.key.clone(),
            a.name.clone(),
            if a.active { "yes" } else { "no" }.to_owned(),
            a.member_count.to_string(),
            time(a.created_at.as_ref()),
            time(a.archived_at.as_ref()),
        ]);
    }
    out(&table.render());
    Ok(())
}

async fn members(global: &Global, c: &mut Clients, key: String) -> Result<()> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .audiences
            .list_members(pb::ListMembersRequest {
                key: key.clone(),
                page_size: 0,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.user_ids);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let response = pb::ListMembersResponse {
        user_ids: all,
        next_page_token: String::new(),
    };
    if !print_message(global.output, &response)? {
        let mut table = Table::new(&["USER"]);
        for user in &response.user_ids {
            table.row(vec![user.clone()]);
        }
        out(&table.render());
    }
    Ok(())
}

pub async fn catalog(global: &Global, verb: CatalogVerb) -> Result<()> {
    let c = &mut global.clients().await?;
    match verb {
        CatalogVerb::List => {
            let response = c
                .catalog
                .list_events(pb::ListEventsRequest {})
                .await?
                .into_inner();
            if print_message(global.output, &response)? {
                return Ok(());
            }
            let mut table = Table::new(&["EVENT", "COUNT", "FIRST SEEN", "LAST SEEN"]);
            for e in &response.events {
                table.row(vec![
                    e.name.clone(),
                    e.count.to_string(),
                    time(e.first_seen.as_ref()),
                    time(e.last_seen.as_ref()),
                ]);
            }
            out(&table.render());
            Ok(())
        }
        CatalogVerb::Register { names } => {
            let mut events = Vec::new();
            for name in names {
                events.push(
                    c.catalog
                        .register_event(pb::RegisterEventRequest { name })
                        .await?
                        .into_inner(),
                );
            }
            let response = pb::ListEventsResponse { events };
            if !print_message(global.output, &response)? {
                for e in &response.events {
                    out(&format!("event/{} registered\n", e.name));
                }
            }
            Ok(())
        }
    }
}
