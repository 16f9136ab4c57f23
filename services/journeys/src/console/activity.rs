//! What happened to whom: the profile and instance explorer (search by user id, each
//! instance's timeline with its causes), and destinations with their delivery health and
//! dead letters (listed with their payloads, replayed from here).

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use journeys_proto::v1 as pb;
use serde::Deserialize;

use super::auth::{Session, csrf_ok};
use super::html::{self, Section, compact, csrf_field, esc, url_part};
use super::journeys::instances_table;
use super::{Console, PageError, respond};

/// Instances per page of a profile.
const INSTANCE_PAGE: i32 = 25;
/// Destinations per page.
const DESTINATION_PAGE: i32 = 50;
/// Dead letters per page of a destination.
const DEAD_LETTER_PAGE: i32 = 25;
/// The span of the hourly delivery table, in seconds.
const HOURLY_WINDOW: i64 = 24 * 3600;

/// The explorer's query.
#[derive(Deserialize, Default)]
pub struct ProfileQuery {
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    page_token: String,
}

/// `GET /console/profiles?user_id=…`: a profile's traits, audiences and instances.
pub async fn profiles(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(query): Query<ProfileQuery>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let user_id = query.user_id.trim().to_owned();
        let mut body = format!(
            "<h1>Profiles and instances</h1>\
             <form method=\"get\" action=\"/console/profiles\" class=\"inline\" role=\"search\">\
             <label for=\"user_id\">User id</label>\
             <input id=\"user_id\" name=\"user_id\" value=\"{}\" required>\
             <button type=\"submit\">Find</button></form>",
            esc(&user_id)
        );
        if !user_id.is_empty() {
            let mut c = console.clients(&session);
            match c
                .profiles
                .get_profile(pb::GetProfileRequest {
                    user_id: user_id.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(profile) => body.push_str(&profile_facts(&profile.into_inner())),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    let _ = write!(
                        body,
                        "<p role=\"status\">No profile with user id <code>{}</code>.</p>",
                        esc(&user_id)
                    );
                }
                Err(status) => return Err(status.into()),
            }
            let instances = c
                .instances
                .list_instances(pb::ListInstancesRequest {
                    user_id: user_id.clone(),
                    page_size: INSTANCE_PAGE,
                    page_token: query.page_token.clone(),
                    ..pb::ListInstancesRequest::default()
                })
                .await?
                .into_inner();
            body.push_str(&instances_table(
                &instances,
                &format!("/console/profiles?user_id={}", url_part(&user_id)),
            ));
        }
        Ok(Html(html::page(
            &session,
            Section::Profiles,
            "Profiles and instances",
            &body,
        ))
        .into_response())
    }
    .await;
    respond(&session, result)
}

fn profile_facts(profile: &pb::Profile) -> String {
    let audiences = if profile.audiences.is_empty() {
        "-".to_owned()
    } else {
        profile
            .audiences
            .iter()
            .map(|a| esc(a))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "<section aria-labelledby=\"profile-heading\" id=\"profile\">\
         <h2 id=\"profile-heading\">Profile <code>{user}</code></h2><dl>\
         <dt>Traits</dt><dd><code>{traits}</code></dd>\
         <dt>Audiences</dt><dd>{audiences}</dd>\
         <dt>Active instances</dt><dd>{active}</dd></dl></section>",
        user = esc(&profile.user_id),
        traits = esc(&compact(profile.traits.as_ref())),
        active = profile.active_instances.len(),
    )
}

/// `GET /console/instances/{id}`: an instance and its timeline.
pub async fn instance(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let mut c = console.clients(&session);
        let i = c
            .instances
            .get_instance(pb::GetInstanceRequest { id })
            .await?
            .into_inner();
        let journey_name = c
            .journeys
            .get_journey(pb::GetJourneyRequest {
                id: i.journey_id.clone(),
            })
            .await
            .map_or_else(|_| i.journey_id.clone(), |j| j.into_inner().name);
        let rows = timeline_rows(&i);
        let body = format!(
            "<h1>Instance <code>{id}</code></h1><dl class=\"facts\">\
             <dt>Journey</dt><dd><a href=\"/console/journeys/{jid_q}\">{jname}</a> (revision {rev})</dd>\
             <dt>User</dt><dd><a href=\"/console/profiles?user_id={user_q}\">{user}</a></dd>\
             <dt>Unique value</dt><dd>{unique}</dd><dt>State</dt><dd>{state}</dd>\
             <dt>Step</dt><dd><code>{step}</code></dd><dt>Waiting for</dt><dd>{waiting}</dd>\
             <dt>Entered</dt><dd>{entered}</dd><dt>Ended</dt><dd>{ended}</dd>\
             <dt>Context</dt><dd><code>{context}</code></dd></dl>\
             <section aria-labelledby=\"timeline-heading\"><h2 id=\"timeline-heading\">Timeline</h2>\
             <table class=\"list\" id=\"timeline\"><thead><tr><th scope=\"col\">At</th>\
             <th scope=\"col\">Step</th><th scope=\"col\">What</th><th scope=\"col\">Cause</th>\
             <th scope=\"col\">Detail</th></tr></thead><tbody>{rows}</tbody></table></section>",
            id = esc(&i.id),
            jid_q = url_part(&i.journey_id),
            jname = esc(&journey_name),
            rev = i.journey_revision,
            user_q = url_part(&i.user_id),
            user = esc(&i.user_id),
            unique = esc(&i.unique_value),
            state = html::instance_state(i.state),
            step = esc(&i.current_step),
            waiting = esc(&i.waiting_event),
            entered = html::time(i.entered_at.as_ref()),
            ended = html::time(i.ended_at.as_ref()),
            context = esc(&compact(i.context.as_ref())),
        );
        Ok(Html(html::page(&session, Section::Profiles, "Instance", &body)).into_response())
    }
    .await;
    respond(&session, result)
}

/// A list page's query.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    replayed: Option<i32>,
}

/// `GET /console/destinations`: destinations with their dead letters waiting.
pub async fn destinations(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(query): Query<PageQuery>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let mut c = console.clients(&session);
        let page = c
            .destinations
            .list_destinations(pb::ListDestinationsRequest {
                page_size: DESTINATION_PAGE,
                page_token: query.page_token.clone(),
            })
            .await?
            .into_inner();
        let health = futures::future::join_all(page.destinations.iter().map(|d| {
            let mut client = c.destinations.clone();
            let destination_id = d.id.clone();
            async move {
                let dead = client
                    .list_dead_letters(pb::ListDeadLettersRequest {
                        destination_id: destination_id.clone(),
                        page_size: 100,
                        ..pb::ListDeadLettersRequest::default()
                    })
                    .await?
                    .into_inner();
                let recent = client
                    .get_destination_stats(pb::GetDestinationStatsRequest {
                        id: destination_id,
                        from: Some(prost_types::Timestamp {
                            seconds: chrono::Utc::now().timestamp() - HOURLY_WINDOW,
                            nanos: 0,
                        }),
                        to: None,
                    })
                    .await?
                    .into_inner();
                Ok::<_, tonic::Status>((dead, recent))
            }
        }))
        .await;
        let mut rows = String::new();
        for (d, health) in page.destinations.iter().zip(health) {
            let (dead, recent) = health?;
            let count = if dead.next_page_token.is_empty() {
                dead.dead_letters.len().to_string()
            } else {
                format!("{}+", dead.dead_letters.len())
            };
            let _ = write!(
                rows,
                "<tr><td><a href=\"/console/destinations/{id}\">{name}</a></td><td><code>{url}</code></td>\
                 <td class=\"num\">{sent}</td><td class=\"num\">{failed}</td>\
                 <td class=\"num\">{dead_recent}</td><td class=\"num\">{count}</td><td>{created}</td></tr>",
                id = url_part(&d.id),
                name = esc(&d.name),
                url = esc(&d.webhook.as_ref().map(|w| w.url.clone()).unwrap_or_default()),
                created = html::time(d.created_at.as_ref()),
                sent = recent.sent,
                failed = recent.failed,
                dead_recent = recent.dead_lettered,
            );
        }
        let body = format!(
            "<h1>Destinations</h1><table class=\"list\" id=\"destinations\"><thead><tr>\
             <th scope=\"col\">Name</th><th scope=\"col\">URL</th><th scope=\"col\">Sent (24 h)</th>\
             <th scope=\"col\">Failed attempts (24 h)</th><th scope=\"col\">Dead-lettered (24 h)</th>\
             <th scope=\"col\">Dead letters waiting</th>\
             <th scope=\"col\">Created</th></tr></thead><tbody>{rows}</tbody></table>{next}",
            next = html::next_page("/console/destinations", &page.next_page_token),
        );
        Ok(Html(html::page(&session, Section::Destinations, "Destinations", &body)).into_response())
    }
    .await;
    respond(&session, result)
}

/// `GET /console/destinations/{id}`: a destination, its delivery health and its dead letters.
pub async fn destination(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let mut c = console.clients(&session);
        let d = c
            .destinations
            .get_destination(pb::GetDestinationRequest { id: id.clone() })
            .await?
            .into_inner();
        let all_time = destination_stats(&mut c, &id, None).await?;
        let recent = destination_stats(&mut c, &id, Some(HOURLY_WINDOW)).await?;
        let letters = c
            .destinations
            .list_dead_letters(pb::ListDeadLettersRequest {
                destination_id: id.clone(),
                page_size: DEAD_LETTER_PAGE,
                page_token: query.page_token.clone(),
                ..pb::ListDeadLettersRequest::default()
            })
            .await?
            .into_inner();
        let notice = query.replayed.map_or_else(String::new, |n| {
            format!("<p class=\"notice\" role=\"status\" id=\"replayed\">Replayed {n} dead letter(s): they are queued for delivery again.</p>")
        });
        let rows = dead_letter_rows(&letters.dead_letters);
        let letters_section = if rows.is_empty() {
            "<p id=\"no-dead-letters\">No dead letters.</p>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/console/destinations/{id_q}/replay\">{csrf}\
                 <table class=\"list\" id=\"dead-letters\"><thead><tr><th scope=\"col\">Select</th>\
                 <th scope=\"col\">Journey and step</th><th scope=\"col\">Instance</th>\
                 <th scope=\"col\">Attempts</th><th scope=\"col\">Last error</th>\
                 <th scope=\"col\">Dead-lettered</th><th scope=\"col\">Payload</th>\
                 <th scope=\"col\">Replay</th></tr></thead><tbody>{rows}</tbody></table>\
                 <button type=\"submit\">Replay selected</button></form>{next}",
                id_q = url_part(&id),
                csrf = csrf_field(&session),
                next = html::next_page(
                    &format!("/console/destinations/{}", url_part(&id)),
                    &letters.next_page_token
                ),
            )
        };
        let body = format!(
            "<h1>{name}</h1>{notice}<dl class=\"facts\"><dt>Id</dt><dd><code>{id}</code></dd>\
             <dt>URL</dt><dd><code>{url}</code></dd><dt>Updated</dt><dd>{updated}</dd></dl>\
             <section aria-labelledby=\"health-heading\"><h2 id=\"health-heading\">Delivery health</h2>\
             <table class=\"list\" id=\"health\"><caption>All time</caption><thead><tr>\
             <th scope=\"col\">Sent</th><th scope=\"col\">Failed attempts</th>\
             <th scope=\"col\">Dead-lettered</th></tr></thead><tbody><tr><td class=\"num\">{sent}</td>\
             <td class=\"num\">{failed}</td><td class=\"num\">{dead}</td></tr></tbody></table>{hourly}</section>\
             <section aria-labelledby=\"dl-heading\"><h2 id=\"dl-heading\">Dead letters</h2>{letters_section}</section>",
            name = esc(&d.name),
            id = esc(&d.id),
            url = esc(&d.webhook.as_ref().map(|w| w.url.clone()).unwrap_or_default()),
            updated = html::time(d.updated_at.as_ref()),
            sent = all_time.sent,
            failed = all_time.failed,
            dead = all_time.dead_lettered,
            hourly = hourly_table(&recent.hours),
        );
        Ok(Html(html::page(&session, Section::Destinations, &d.name, &body)).into_response())
    }
    .await;
    respond(&session, result)
}

fn pretty(payload: Option<&prost_types::Struct>) -> String {
    let value = journeys_proto::convert::json::response_struct_to_json(payload);
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// `POST /console/destinations/{id}/replay`: replays the one dead letter whose button was
/// pressed (`one`), else the selected ones (`ids`).
pub async fn replay(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let csrf = values(&fields, "csrf").next().unwrap_or_default();
        if !csrf_ok(&session, &csrf) {
            return Err(PageError::Csrf);
        }
        let ids: Vec<String> = match values(&fields, "one").next() {
            Some(one) => vec![one],
            None => values(&fields, "ids").collect(),
        };
        if ids.is_empty() {
            return Err(PageError::BadInput(
                "Select the dead letters to replay.".to_owned(),
            ));
        }
        let replayed = console
            .clients(&session)
            .destinations
            .replay_dead_letters(pb::ReplayDeadLettersRequest { ids })
            .await?
            .into_inner()
            .replayed;
        Ok(Redirect::to(&format!(
            "/console/destinations/{}?replayed={replayed}",
            url_part(&id)
        ))
        .into_response())
    }
    .await;
    respond(&session, result)
}

/// The values of the form field `name`, in order.
fn values<'a>(fields: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = String> + 'a {
    fields
        .iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// A timeline row's cause as people read it: the API gives an event's message id, or `timer`
/// or `operator`.
fn cause(cause: &str) -> String {
    match cause {
        "" => "-".to_owned(),
        "timer" | "operator" => cause.to_owned(),
        message_id => format!("event <code>{}</code>", esc(message_id)),
    }
}

/// One row per dead letter: a checkbox, where it came from, why it failed, its payload, and
/// a button replaying it alone.
fn dead_letter_rows(letters: &[pb::DeadLetter]) -> String {
    let mut rows = String::new();
    for (k, l) in letters.iter().enumerate() {
        let _ = write!(
            rows,
            "<tr><td><input type=\"checkbox\" name=\"ids\" value=\"{lid}\" id=\"dl-{k}\">\
                 <label for=\"dl-{k}\" class=\"visually-hidden\">Select dead letter {lid}</label></td>\
                 <td><a href=\"/console/journeys/{jid_q}\">{jid}</a> <code>{step}</code></td>\
                 <td><a href=\"/console/instances/{iid_q}\">{iid}</a></td><td class=\"num\">{attempts}</td>\
                 <td>{error}</td><td>{at}</td>\
                 <td><details><summary>Payload</summary><pre>{payload}</pre></details></td>\
                 <td><button type=\"submit\" name=\"one\" value=\"{lid}\">Replay</button></td></tr>",
            lid = esc(&l.id),
            jid_q = url_part(&l.journey_id),
            jid = esc(&l.journey_id),
            step = esc(&l.step_key),
            iid_q = url_part(&l.instance_id),
            iid = esc(&l.instance_id),
            attempts = l.attempts,
            error = esc(&l.last_error),
            at = html::time(l.dead_lettered_at.as_ref()),
            payload = esc(&pretty(l.payload.as_ref())),
        );
    }
    rows
}

/// The timeline as table rows; a send shows the payload it carried and how its delivery went,
/// while the outbox holds it.
fn timeline_rows(instance: &pb::Instance) -> String {
    let mut rows = String::new();
    for t in &instance.timeline {
        let detail = journeys_proto::convert::json::response_struct_to_json(t.detail.as_ref());
        let send = detail["message_id"]
            .as_str()
            .and_then(|id| instance.sends.iter().find(|s| s.message_id == id));
        let payload = send.map_or_else(String::new, |s| {
            let how = match s.status.as_str() {
                "DEAD" => format!("dead-lettered: {}", s.last_error),
                "SENT" => "delivered".to_owned(),
                _ if s.attempts > 0 => format!("pending after {} failed attempts", s.attempts),
                _ => "pending".to_owned(),
            };
            format!(
                "<details><summary>Payload ({})</summary><pre>{}</pre></details>",
                esc(&how),
                esc(&pretty(s.payload.as_ref()))
            )
        });
        let _ = write!(
            rows,
            "<tr><td>{at}</td><td><code>{step}</code></td><td>{kind}</td><td>{cause}</td>\
             <td><code>{detail}</code>{payload}</td></tr>",
            at = html::time(t.at.as_ref()),
            step = esc(&t.step_key),
            kind = esc(&t.kind),
            cause = cause(&t.cause),
            detail = esc(&compact(t.detail.as_ref())),
        );
    }
    rows
}

/// Deliveries per hour as a table, newest first, with a bar per hour scaled to the busiest.
fn hourly_table(hours: &[pb::DeliveryHourStats]) -> String {
    if hours.is_empty() {
        return format!(
            "<p id=\"hourly\">No deliveries in the last {} hours.</p>",
            HOURLY_WINDOW / 3600
        );
    }
    let busiest = hours
        .iter()
        .map(|h| h.sent + h.failed + h.dead_lettered)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut rows = String::new();
    for h in hours.iter().rev() {
        let total = h.sent + h.failed + h.dead_lettered;
        let _ = write!(
            rows,
            "<tr><td>{at}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td><meter min=\"0\" max=\"{busiest}\" value=\"{total}\" \
             aria-label=\"{total} deliveries\">{total}</meter></td></tr>",
            h.sent,
            h.failed,
            h.dead_lettered,
            at = html::time(h.start_time.as_ref()),
        );
    }
    format!(
        "<table class=\"list\" id=\"hourly\"><caption>Per hour, the last {} hours</caption><thead><tr>\
         <th scope=\"col\">Hour</th><th scope=\"col\">Sent</th><th scope=\"col\">Failed</th>\
         <th scope=\"col\">Dead-lettered</th><th scope=\"col\">Volume</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        HOURLY_WINDOW / 3600
    )
}

/// `GetDestinationStats` of `id`, over the last `seconds` when given (else all time).
async fn destination_stats(
    c: &mut super::Clients,
    id: &str,
    seconds: Option<i64>,
) -> Result<pb::GetDestinationStatsResponse, PageError> {
    let from = seconds.map(|seconds| prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - seconds,
        nanos: 0,
    });
    Ok(c.destinations
        .get_destination_stats(pb::GetDestinationStatsRequest {
            id: id.to_owned(),
            from,
            to: None,
        })
        .await?
        .into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_read_as_events_timers_and_operators() {
        assert_eq!(cause("timer"), "timer");
        assert_eq!(cause("operator"), "operator");
        assert_eq!(cause("m<1>"), "event <code>m&lt;1&gt;</code>");
        assert_eq!(cause(""), "-");
    }

    #[test]
    fn hours_show_newest_first_scaled_to_the_busiest() {
        let hour = |h: i64, sent, failed, dead_lettered| pb::DeliveryHourStats {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_764_900_000 + h * 3600,
                nanos: 0,
            }),
            sent,
            failed,
            dead_lettered,
        };
        let table = hourly_table(&[hour(0, 3, 1, 0), hour(1, 8, 0, 2)]);
        let second = table.find("value=\"10\"").expect("the busier hour");
        let first = table.find("value=\"4\"").expect("the quieter hour");
        assert!(second < first, "newest first: {table}");
        assert!(table.contains("max=\"10\""), "{table}");
    }
}
