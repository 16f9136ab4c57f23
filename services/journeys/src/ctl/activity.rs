//! `journeys instance|profile|dead-letters …`: what journeys did for whom, and the sends that
//! were given up.

use clap::Subcommand;
use journeys_proto::v1 as pb;
use serde_json::{Value, json};

use super::client::{Clients, Global};
use super::error::{Error, Result};
use super::output::{
    Table, compact, json_value, one_line, or_dash, out, print_message, print_value, time,
};

pub const INSTANCE_EXAMPLES: &str = "\
Examples:
  journeys instance list --journey abandoned-checkout --state active
  journeys instance get <id>
  journeys instance exit <id>";

pub const PROFILE_EXAMPLES: &str = "\
Examples:
  journeys profile get u1
  journeys profile get u1 -o json";

pub const DEAD_LETTER_EXAMPLES: &str = "\
Examples:
  journeys dead-letters list --destination webhook
  journeys dead-letters replay <id> <id>
  journeys dead-letters replay --all --destination webhook";

/// The verbs of `journeys instance`.
#[derive(Debug, Subcommand)]
pub enum InstanceVerb {
    /// List instances
    List {
        /// Only instances of this journey
        #[arg(long)]
        journey: Option<String>,
        /// Only instances of this profile
        #[arg(long)]
        user: Option<String>,
        /// Only instances in this state
        #[arg(long, value_enum)]
        state: Option<InstanceState>,
    },
    /// Show an instance and its timeline: every transition with its time, step and cause
    Get { id: String },
    /// End an active instance now, as an exit rule would
    Exit { id: String },
}

/// Instance states, as `--state` takes them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum InstanceState {
    Active,
    Completed,
    Exited,
    Failed,
}

/// The verbs of `journeys profile`.
#[derive(Debug, Subcommand)]
pub enum ProfileVerb {
    /// Show a profile: traits, audiences, instances, and their timelines merged in time order
    Get {
        /// User id (or anonymous id of a profile without one)
        user: String,
        /// At most this many of the profile's instances, newest first, in the timeline
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Delete a profile: traits, memberships, instances, timers and sends; a tombstone stays
    /// so that events sent before do not bring it back
    Delete {
        /// User id (or anonymous id of a profile without one)
        user: String,
        /// Drop every later event of this id too
        #[arg(long)]
        suppress: bool,
    },
}

/// The verbs of `journeys dead-letters`.
#[derive(Debug, Subcommand)]
pub enum DeadLetterVerb {
    /// List dead letters
    List {
        /// Only those of this destination
        #[arg(long)]
        destination: Option<String>,
        /// Only those of this journey
        #[arg(long)]
        journey: Option<String>,
    },
    /// Queue dead letters for delivery again, with their original message ids
    Replay {
        /// Dead letter ids
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter (of --destination and --journey, when given)
        #[arg(long)]
        all: bool,
        /// With --all: only those of this destination
        #[arg(long, requires = "all")]
        destination: Option<String>,
        /// With --all: only those of this journey
        #[arg(long, requires = "all")]
        journey: Option<String>,
    },
}

pub async fn instance(global: &Global, verb: InstanceVerb) -> Result<()> {
    let c = &mut global.clients().await?;
    match verb {
        InstanceVerb::List {
            journey,
            user,
            state,
        } => {
            let state = match state {
                None => pb::InstanceState::Unspecified,
                Some(InstanceState::Active) => pb::InstanceState::Active,
                Some(InstanceState::Completed) => pb::InstanceState::Completed,
                Some(InstanceState::Exited) => pb::InstanceState::Exited,
                Some(InstanceState::Failed) => pb::InstanceState::Failed,
            };
            let request = pb::ListInstancesRequest {
                journey_id: journey.unwrap_or_default(),
                user_id: user.unwrap_or_default(),
                state: state as i32,
                ..Default::default()
            };
            let instances = all_instances(c, request, usize::MAX).await?;
            let response = pb::ListInstancesResponse {
                instances,
                next_page_token: String::new(),
            };
            if !print_message(global.output, &response)? {
                out(&instances_table(&response.instances));
            }
            Ok(())
        }
        InstanceVerb::Get { id } => {
            let instance = c
                .instances
                .get_instance(pb::GetInstanceRequest { id })
                .await?
                .into_inner();
            if !print_message(global.output, &instance)? {
                out(&describe_instance(&instance));
            }
            Ok(())
        }
        InstanceVerb::Exit { id } => {
            let instance = c
                .instances
                .exit_instance(pb::ExitInstanceRequest { id })
                .await?
                .into_inner();
            if !print_message(global.output, &instance)? {
                out(&format!(
                    "instance/{} {}\n",
                    instance.id,
                    state_name(instance.state).to_ascii_lowercase()
                ));
            }
            Ok(())
        }
    }
}

/// Instances matching `request`, all pages, at most `limit`.
async fn all_instances(
    c: &mut Clients,
    mut request: pb::ListInstancesRequest,
    limit: usize,
) -> Result<Vec<pb::Instance>> {
    let mut all = Vec::new();
    loop {
        let page = c
            .instances
            .list_instances(request.clone())
            .await?
            .into_inner();
        all.extend(page.instances);
        if page.next_page_token.is_empty() || all.len() >= limit {
            all.truncate(limit);
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
}

fn state_name(state: i32) -> &'static str {
    pb::InstanceState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name())
}

fn instances_table(instances: &[pb::Instance]) -> String {
    let mut table = Table::new(&[
        "ID",
        "JOURNEY",
        "USER",
        "UNIQUE",
        "STATE",
        "STEP",
        "WAITING FOR",
        "ENTERED",
    ]);
    for i in instances {
        table.row(vec![
            i.id.clone(),
            i.journey_id.clone(),
            i.user_id.clone(),
            or_dash(&i.unique_value),
            state_name(i.state).to_owned(),
            i.current_step.clone(),
            or_dash(&i.waiting_event),
            time(i.entered_at.as_ref()),
        ]);
    }
    table.render()
}

fn describe_instance(i: &pb::Instance) -> String {
    let mut facts = Table::new(&["ID:", &i.id]);
    for (key, value) in [
        (
            "Journey:",
            format!("{} (revision {})", i.journey_id, i.journey_revision),
        ),
        ("User:", i.user_id.clone()),
        ("Unique value:", or_dash(&i.unique_value)),
        ("State:", state_name(i.state).to_owned()),
        ("Step:", i.current_step.clone()),
        ("Waiting for:", or_dash(&i.waiting_event)),
        ("Entered:", time(i.entered_at.as_ref())),
        ("Updated:", time(i.updated_at.as_ref())),
        ("Ended:", time(i.ended_at.as_ref())),
    ] {
        facts.row(vec![key.to_owned(), value]);
    }
    let mut timeline = Table::new(&["AT", "STEP", "KIND", "CAUSE", "DETAIL"]);
    for t in &i.timeline {
        timeline.row(vec![
            time(t.at.as_ref()),
            t.step_key.clone(),
            t.kind.clone(),
            or_dash(&t.cause),
            compact(t.detail.as_ref()),
        ]);
    }
    format!("{}\n{}", facts.render(), timeline.render())
}

pub async fn profile(global: &Global, verb: ProfileVerb) -> Result<()> {
    let (user, limit) = match verb {
        ProfileVerb::Get { user, limit } => (user, limit),
        ProfileVerb::Delete { user, suppress } => {
            let c = &mut global.clients().await?;
            let deleted = c
                .profiles
                .delete_profile(pb::DeleteProfileRequest {
                    user_id: user,
                    anonymous_id: String::new(),
                    suppress,
                })
                .await?
                .into_inner();
            if global.output != super::output::Format::Table {
                return print_value(global.output, &json_value(&deleted)?);
            }
            let how = if deleted.suppressed {
                ", its later events suppressed"
            } else {
                ""
            };
            out(&format!("profile/{} deleted{how}\n", deleted.user_id));
            return Ok(());
        }
    };
    let c = &mut global.clients().await?;
    let profile = c
        .profiles
        .get_profile(pb::GetProfileRequest {
            user_id: user.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let listed = all_instances(
        c,
        pb::ListInstancesRequest {
            user_id: profile.user_id.clone(),
            ..Default::default()
        },
        usize::MAX,
    )
    .await?;
    // Newest first, then the timeline of each.
    let mut listed = listed;
    listed.sort_by_key(|i| std::cmp::Reverse(i.entered_at.as_ref().map(|t| (t.seconds, t.nanos))));
    listed.truncate(limit);
    let mut instances = Vec::with_capacity(listed.len());
    for i in listed {
        instances.push(
            c.instances
                .get_instance(pb::GetInstanceRequest { id: i.id })
                .await?
                .into_inner(),
        );
    }
    if global.output != super::output::Format::Table {
        let value = json!({
            "profile": json_value(&profile)?,
            "instances": instances.iter().map(json_value).collect::<Result<Vec<Value>>>()?,
        });
        return print_value(global.output, &value);
    }
    out(&describe_profile(&profile, &instances));
    Ok(())
}

fn describe_profile(profile: &pb::Profile, instances: &[pb::Instance]) -> String {
    let mut facts = Table::new(&["User:", &profile.user_id]);
    facts.row(vec![
        "Audiences:".to_owned(),
        or_dash(&profile.audiences.join(", ")),
    ]);
    facts.row(vec![
        "Active instances:".to_owned(),
        profile.active_instances.len().to_string(),
    ]);
    if !profile.identities.is_empty() {
        let ids: Vec<&str> = profile.identities.iter().map(|i| i.id.as_str()).collect();
        facts.row(vec!["Linked ids:".to_owned(), ids.join(", ")]);
    }
    for refused in &profile.refused_links {
        facts.row(vec![
            "Refused link:".to_owned(),
            format!(
                "{} (of {}) for {}, {} time(s)",
                refused.id, refused.profile_id, refused.refused_profile_id, refused.refusals
            ),
        ]);
    }
    let mut traits = Table::new(&["TRAIT", "VALUE"]);
    if let Some(t) = &profile.traits {
        let mut keys: Vec<&String> = t.fields.keys().collect();
        keys.sort();
        for key in keys {
            let value = journeys_proto::convert::json::value_to_json(&t.fields[key], key)
                .map_or_else(|_| "?".to_owned(), |v| v.to_string());
            traits.row(vec![key.clone(), value]);
        }
    }
    let mut timeline = Table::new(&[
        "AT", "JOURNEY", "INSTANCE", "STEP", "KIND", "CAUSE", "DETAIL",
    ]);
    let mut entries: Vec<(&pb::Instance, &pb::TimelineEntry)> = instances
        .iter()
        .flat_map(|i| i.timeline.iter().map(move |t| (i, t)))
        .collect();
    entries.sort_by_key(|(_, t)| t.at.as_ref().map(|t| (t.seconds, t.nanos)));
    for (i, t) in entries {
        timeline.row(vec![
            time(t.at.as_ref()),
            i.journey_id.clone(),
            i.id.clone(),
            t.step_key.clone(),
            t.kind.clone(),
            or_dash(&t.cause),
            compact(t.detail.as_ref()),
        ]);
    }
    format!(
        "{}\n{}\n{}\n{}",
        facts.render(),
        traits.render(),
        instances_table(instances),
        timeline.render()
    )
}

pub async fn dead_letters(global: &Global, verb: DeadLetterVerb) -> Result<()> {
    let c = &mut global.clients().await?;
    match verb {
        DeadLetterVerb::List {
            destination,
            journey,
        } => {
            let letters = all_dead_letters(c, destination, journey).await?;
            let response = pb::ListDeadLettersResponse {
                dead_letters: letters,
                next_page_token: String::new(),
            };
            if print_message(global.output, &response)? {
                return Ok(());
            }
            let mut table = Table::new(&[
                "ID",
                "DESTINATION",
                "JOURNEY",
                "STEP",
                "ATTEMPTS",
                "DEAD-LETTERED",
                "LAST ERROR",
            ]);
            for d in &response.dead_letters {
                table.row(vec![
                    d.id.clone(),
                    d.destination_id.clone(),
                    d.journey_id.clone(),
                    d.step_key.clone(),
                    d.attempts.to_string(),
                    time(d.dead_lettered_at.as_ref()),
                    one_line(&d.last_error, 80),
                ]);
            }
            out(&table.render());
            Ok(())
        }
        DeadLetterVerb::Replay {
            ids,
            all,
            destination,
            journey,
        } => {
            let ids = if all {
                all_dead_letters(c, destination, journey)
                    .await?
                    .into_iter()
                    .map(|d| d.id)
                    .collect()
            } else {
                ids
            };
            if ids.is_empty() {
                return Err(Error::Failed(
                    "there are no dead letters to replay".to_owned(),
                ));
            }
            let response = c
                .destinations
                .replay_dead_letters(pb::ReplayDeadLettersRequest { ids })
                .await?
                .into_inner();
            if !print_message(global.output, &response)? {
                out(&format!(
                    "{} dead letter{} queued for delivery again\n",
                    response.replayed,
                    if response.replayed == 1 { "" } else { "s" }
                ));
            }
            Ok(())
        }
    }
}

async fn all_dead_letters(
    c: &mut Clients,
    destination: Option<String>,
    journey: Option<String>,
) -> Result<Vec<pb::DeadLetter>> {
    let mut request = pb::ListDeadLettersRequest {
        destination_id: destination.unwrap_or_default(),
        journey_id: journey.unwrap_or_default(),
        ..Default::default()
    };
    let mut all = Vec::new();
    loop {
        let page = c
            .destinations
            .list_dead_letters(request.clone())
            .await?
            .into_inner();
        all.extend(page.dead_letters);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
}
