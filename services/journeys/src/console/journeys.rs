//! Journey pages: the list, one journey drawn as its graph with live counts (and, for a
//! draft, its validation problems on the nodes they belong to), the definition editor with
//! validation as you type, the lifecycle actions (publish, archive, duplicate) and test sends.

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use journeys_proto::v1 as pb;
use journeys_proto::v1::step::Kind;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Session, csrf_ok};
use super::graph::{self, Graph};
use super::html::{self, Section, csrf_field, esc, url_part};
use super::{Console, PageError, respond};
use crate::ctl;

/// Journeys per page of the list (each row reads its statistics).
const LIST_PAGE: i32 = 25;
/// Instances per page of a journey's instance list.
const INSTANCE_PAGE: i32 = 25;

/// The list's query: a state filter and the page.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    page_token: String,
}

/// `GET /console/`: journeys with state, entries today and active instances.
pub async fn list(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(query): Query<ListQuery>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let mut c = console.clients(&session);
        let state = pb::JourneyState::from_str_name(&query.state).unwrap_or_default();
        let page = c
            .journeys
            .list_journeys(pb::ListJourneysRequest {
                state: state as i32,
                page_size: LIST_PAGE,
                page_token: query.page_token.clone(),
            })
            .await?
            .into_inner();
        let today = start_of_today();
        let stats = futures::future::join_all(page.journeys.iter().map(|j| {
            let mut client = c.journeys.clone();
            let id = j.id.clone();
            let today = &today;
            async move {
                client
                    .get_journey_stats(pb::GetJourneyStatsRequest {
                        id,
                        from: Some(*today),
                        ..pb::GetJourneyStatsRequest::default()
                    })
                    .await
                    .map(tonic::Response::into_inner)
            }
        }))
        .await;
        let mut rows = String::new();
        for (journey, stats) in page.journeys.iter().zip(stats) {
            let stats = stats?;
            let entries = stats.entries;
            let active: i64 = stats.steps.iter().map(|s| s.waiting).sum();
            let _ = write!(
                rows,
                "<tr><td><a href=\"/console/journeys/{id}\">{name}</a></td>\
                 <td><span class=\"state state-{state}\">{state}</span></td><td class=\"num\">{rev}</td>\
                 <td class=\"num\">{entries}</td><td class=\"num\">{active}</td><td>{updated}</td></tr>",
                id = url_part(&journey.id),
                name = esc(&journey.name),
                state = html::journey_state(journey.state),
                rev = journey.revision,
                updated = html::time(journey.updated_at.as_ref()),
            );
        }
        let filter = state_filter(&query.state);
        let empty = if rows.is_empty() {
            "<p>No journeys yet. Create one with <code>journeys journey apply -f FILE</code> \
             or the API's <code>CreateJourney</code>.</p>"
        } else {
            ""
        };
        let base = format!("/console/?state={}", url_part(&query.state));
        let body = format!(
            "<h1>Journeys</h1>{filter}{empty}\
             <table class=\"list\" id=\"journeys\"><caption>Journeys, {LIST_PAGE} a page</caption>\
             <thead><tr><th scope=\"col\">Name</th><th scope=\"col\">State</th>\
             <th scope=\"col\">Revision</th><th scope=\"col\">Entries today (UTC)</th>\
             <th scope=\"col\">Active instances</th><th scope=\"col\">Updated</th></tr></thead>\
             <tbody>{rows}</tbody></table>{next}",
            next = html::next_page(&base, &page.next_page_token),
        );
        Ok(Html(html::page(&session, Section::Journeys, "Journeys", &body)).into_response())
    }
    .await;
    respond(&session, result)
}

/// A journey page's query: the page of its instances.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    page_token: String,
}

/// `GET /console/journeys/{id}`: the journey as its graph with live counts, its steps' table,
/// its actions and a page of its instances.
pub async fn show(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let mut c = console.clients(&session);
        let journey = c
            .journeys
            .get_journey(pb::GetJourneyRequest { id: id.clone() })
            .await?
            .into_inner();
        let draft = journey.state == pb::JourneyState::Draft as i32;
        let problems = if draft {
            c.journeys
                .validate_journey(pb::ValidateJourneyRequest {
                    target: Some(pb::validate_journey_request::Target::Id(id.clone())),
                })
                .await?
                .into_inner()
                .problems
        } else {
            Vec::new()
        };
        let stats = c
            .journeys
            .get_journey_stats(pb::GetJourneyStatsRequest {
                id: id.clone(),
                ..pb::GetJourneyStatsRequest::default()
            })
            .await?
            .into_inner();
        let instances = c
            .instances
            .list_instances(pb::ListInstancesRequest {
                journey_id: id.clone(),
                page_size: INSTANCE_PAGE,
                page_token: query.page_token.clone(),
                ..pb::ListInstancesRequest::default()
            })
            .await?
            .into_inner();
        let graph = graph::layout(&journey, &problems);
        let values = graph::live_values(&graph, &stats);
        let mut body = format!(
            "<h1>{name} <span class=\"state state-{state}\">{state}</span></h1>\
             <p class=\"meta\">Id <code>{id}</code> · revision {rev} · updated {updated}</p>\
             <p>{description}</p>{actions}",
            name = esc(&journey.name),
            state = html::journey_state(journey.state),
            id = esc(&journey.id),
            rev = journey.revision,
            updated = html::time(journey.updated_at.as_ref()),
            description = esc(&journey.description),
            actions = actions(&session, &journey),
        );
        body.push_str(&problems_list(&problems));
        let _ = write!(
            body,
            "<section aria-labelledby=\"graph-heading\"><h2 id=\"graph-heading\">Graph</h2>\
             <p class=\"hint\" id=\"live\" data-stats=\"/console/journeys/{id}/stats.json\">\
             Counts refresh every few seconds.</p><div class=\"graph-wrap\">{svg}</div></section>",
            id = url_part(&journey.id),
            svg = graph::svg(&graph, &format!("Graph of {}", journey.name), &values),
        );
        body.push_str(&steps_table(&graph, &values, &stats));
        body.push_str(&instances_table(
            &instances,
            &format!("/console/journeys/{}", url_part(&journey.id)),
        ));
        Ok(Html(html::page(
            &session,
            Section::Journeys,
            &journey.name,
            &body,
        ))
        .into_response())
    }
    .await;
    respond(&session, result)
}

/// The buttons of a journey in its state.
fn actions(session: &Session, journey: &pb::Journey) -> String {
    let id = url_part(&journey.id);
    let csrf = csrf_field(session);
    let mut out = String::from("<div class=\"actions\">");
    if journey.state == pb::JourneyState::Draft as i32 {
        let _ = write!(
            out,
            "<a class=\"button\" href=\"/console/journeys/{id}/edit\">Edit definition</a>\
             <form method=\"post\" action=\"/console/journeys/{id}/publish\">{csrf}\
             <button type=\"submit\">Publish</button></form>"
        );
    }
    if journey.state == pb::JourneyState::Published as i32 {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/console/journeys/{id}/archive\">{csrf}\
             <label for=\"archive-mode\">Archive, and active instances</label>\
             <select id=\"archive-mode\" name=\"mode\"><option value=\"DRAIN\">finish (drain)</option>\
             <option value=\"EXIT\">exit now</option></select>\
             <button type=\"submit\">Archive</button></form>"
        );
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/console/journeys/{id}/duplicate\">{csrf}\
         <label for=\"duplicate-name\">Copy named</label>\
         <input id=\"duplicate-name\" name=\"name\" placeholder=\"(same name)\">\
         <button type=\"submit\">Duplicate</button></form>"
    );
    if journey
        .steps
        .iter()
        .any(|s| matches!(s.kind, Some(Kind::Send(_))))
    {
        let _ = write!(
            out,
            "<a class=\"button\" href=\"/console/journeys/{id}/test-send\">Send a test event</a>"
        );
    }
    out.push_str("</div>");
    out
}

fn problems_list(problems: &[pb::Problem]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<section class=\"problems\" aria-labelledby=\"problems-heading\">\
         <h2 id=\"problems-heading\">Validation problems</h2><ul>",
    );
    for p in problems {
        let _ = write!(
            out,
            "<li><code>{}</code>: {}</li>",
            esc(&p.path),
            esc(&p.message)
        );
    }
    out.push_str("</ul></section>");
    out
}

/// The graph's counts as a table (the same live values, for reading and for screen readers).
fn steps_table(
    graph: &Graph,
    values: &[(String, String)],
    stats: &pb::GetJourneyStatsResponse,
) -> String {
    let value = |id: &str| {
        values
            .iter()
            .find(|(k, _)| k == id)
            .map_or("-", |(_, v)| v.as_str())
            .to_owned()
    };
    let mut rows = String::new();
    for (i, node) in graph.nodes.iter().enumerate().skip(1) {
        let _ = write!(
            rows,
            "<tr><th scope=\"row\">{name}</th><td>{kind}</td><td><code>{key}</code></td>",
            name = esc(&node.name),
            kind = node.kind,
            key = esc(&node.key),
        );
        for count in ["entered", "waiting", "completed", "exited"] {
            let id = format!("n{i}-{count}");
            let _ = write!(
                rows,
                "<td class=\"num\" id=\"t-{id}\">{}</td>",
                esc(&value(&id))
            );
        }
        rows.push_str("</tr>");
    }
    let mut sends = String::new();
    for s in &stats.sends {
        let _ = write!(
            sends,
            "<tr><th scope=\"row\"><code>{}</code></th><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&s.step_key),
            s.sent,
            s.failed,
            s.dead_lettered
        );
    }
    let sends = if sends.is_empty() {
        String::new()
    } else {
        format!(
            "<table class=\"list\"><caption>Deliveries of send steps</caption><thead><tr>\
             <th scope=\"col\">Step</th><th scope=\"col\">Sent</th><th scope=\"col\">Failed</th>\
             <th scope=\"col\">Dead-lettered</th></tr></thead><tbody>{sends}</tbody></table>"
        )
    };
    format!(
        "<section aria-labelledby=\"steps-heading\"><h2 id=\"steps-heading\">Steps</h2>\
         <table class=\"list\" id=\"steps\"><thead><tr><th scope=\"col\">Step</th>\
         <th scope=\"col\">Kind</th><th scope=\"col\">Key</th><th scope=\"col\">Entered</th>\
         <th scope=\"col\">Waiting</th><th scope=\"col\">Completed</th><th scope=\"col\">Exited</th>\
         </tr></thead><tbody>{rows}</tbody></table>{sends}</section>"
    )
}

/// A page of instances with links to their timelines.
pub fn instances_table(instances: &pb::ListInstancesResponse, base: &str) -> String {
    let mut rows = String::new();
    for i in &instances.instances {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/console/instances/{id}\">{short}</a></td>\
             <td><a href=\"/console/profiles?user_id={user_q}\">{user}</a></td><td>{state}</td>\
             <td><code>{step}</code></td><td>{entered}</td></tr>",
            id = url_part(&i.id),
            short = esc(&i.id),
            user_q = url_part(&i.user_id),
            user = esc(&i.user_id),
            state = html::instance_state(i.state),
            step = esc(&i.current_step),
            entered = html::time(i.entered_at.as_ref()),
        );
    }
    if rows.is_empty() {
        return "<section><h2>Instances</h2><p>No instances.</p></section>".to_owned();
    }
    format!(
        "<section aria-labelledby=\"instances-heading\"><h2 id=\"instances-heading\">Instances</h2>\
         <table class=\"list\" id=\"instances\"><thead><tr><th scope=\"col\">Instance</th>\
         <th scope=\"col\">User</th><th scope=\"col\">State</th><th scope=\"col\">Step</th>\
         <th scope=\"col\">Entered</th></tr></thead><tbody>{rows}</tbody></table>{next}</section>",
        next = html::next_page(base, &instances.next_page_token),
    )
}

/// `GET /console/journeys/{id}/stats.json`: the live values of the graph, by element id.
pub async fn stats_json(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let mut c = console.clients(&session);
        let journey = c
            .journeys
            .get_journey(pb::GetJourneyRequest { id: id.clone() })
            .await?
            .into_inner();
        let stats = c
            .journeys
            .get_journey_stats(pb::GetJourneyStatsRequest {
                id,
                ..pb::GetJourneyStatsRequest::default()
            })
            .await?
            .into_inner();
        let graph = graph::layout(&journey, &[]);
        let values: serde_json::Map<String, Value> = graph::live_values(&graph, &stats)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        Ok((
            [(header::CACHE_CONTROL, "no-store")],
            Json(Value::Object(values)),
        )
            .into_response())
    }
    .await;
    result.unwrap_or_else(|e| {
        let (code, message) = e.status_and_message();
        (code, Json(json!({ "error": message }))).into_response()
    })
}

/// The fields of a journey the server owns, left out of the editor.
const SERVER_FIELDS: [&str; 8] = [
    "id",
    "state",
    "revision",
    "createdAt",
    "updatedAt",
    "publishedAt",
    "archivedAt",
    "replaces",
];

/// The editable definition of `journey` as indented JSON.
fn definition_text(journey: &pb::Journey) -> Result<String, PageError> {
    let mut value =
        ctl::output::json_value(journey).map_err(|e| PageError::BadInput(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        for field in SERVER_FIELDS {
            map.remove(field);
        }
    }
    serde_json::to_string_pretty(&value).map_err(|e| PageError::BadInput(e.to_string()))
}

/// `text` read as a journey definition (a `Journey`, or `{"journey": {…}}`).
fn parse_definition(text: &str) -> Result<pb::Journey, pb::Problem> {
    let value: Value = serde_json::from_str(text).map_err(|e| pb::Problem {
        path: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    let inner = match value.get("journey") {
        Some(inner) if inner.is_object() => inner.clone(),
        _ => value,
    };
    ctl::input::message::<pb::Journey>(&inner, "definition").map_err(|e| pb::Problem {
        path: String::new(),
        message: e.to_string(),
    })
}

/// `GET /console/journeys/{id}/edit`: the definition editor (drafts only).
pub async fn edit(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let journey = console
            .clients(&session)
            .journeys
            .get_journey(pb::GetJourneyRequest { id })
            .await?
            .into_inner();
        let text = definition_text(&journey)?;
        Ok(editor(&session, &journey, &text, None, StatusCode::OK))
    }
    .await;
    respond(&session, result)
}

fn editor(
    session: &Session,
    journey: &pb::Journey,
    text: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let id = url_part(&journey.id);
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))
    });
    let editable = journey.state == pb::JourneyState::Draft as i32;
    let notice = if editable {
        ""
    } else {
        "<p class=\"error\">Only drafts can be edited: duplicate this journey to change it.</p>"
    };
    let body = format!(
        "<h1>Edit {name}</h1>{notice}{error}\
         <form method=\"post\" action=\"/console/journeys/{id}/edit\" class=\"editor\" \
         data-validate=\"/console/journeys/{id}/validate.json\">{csrf}\
         <input type=\"hidden\" name=\"revision\" value=\"{rev}\">\
         <label for=\"definition\">Definition (JSON, as the API's <code>Journey</code>)</label>\
         <textarea id=\"definition\" name=\"definition\" rows=\"30\" spellcheck=\"false\" \
         aria-describedby=\"validation\">{text}</textarea>\
         <div id=\"validation\" role=\"status\" aria-live=\"polite\">Validation runs as you type.</div>\
         <button type=\"submit\"{disabled}>Save</button> \
         <a href=\"/console/journeys/{id}\">Cancel</a></form>",
        name = esc(&journey.name),
        csrf = csrf_field(session),
        rev = journey.revision,
        text = esc(text),
        disabled = if editable { "" } else { " disabled" },
    );
    (
        status,
        Html(html::page(
            session,
            Section::Journeys,
            &format!("Edit {}", journey.name),
            &body,
        )),
    )
        .into_response()
}

/// The editor's form.
#[derive(Deserialize)]
pub struct SaveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    revision: i64,
    #[serde(default)]
    definition: String,
}

/// `POST /console/journeys/{id}/edit`: saves the definition (`UpdateJourney`).
pub async fn save(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<SaveForm>,
) -> Response {
    let result: Result<Response, PageError> = async {
        if !csrf_ok(&session, &form.csrf) {
            return Err(PageError::Csrf);
        }
        let mut c = console.clients(&session);
        let current = c
            .journeys
            .get_journey(pb::GetJourneyRequest { id: id.clone() })
            .await?
            .into_inner();
        let mut journey = match parse_definition(&form.definition) {
            Ok(journey) => journey,
            Err(problem) => {
                return Ok(editor(
                    &session,
                    &current,
                    &form.definition,
                    Some(&problem.message),
                    StatusCode::BAD_REQUEST,
                ));
            }
        };
        journey.id.clone_from(&id);
        journey.revision = form.revision;
        match c
            .journeys
            .update_journey(pb::UpdateJourneyRequest {
                journey: Some(journey),
            })
            .await
        {
            Ok(_) => {
                Ok(Redirect::to(&format!("/console/journeys/{}", url_part(&id))).into_response())
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) =>
            {
                Ok(editor(
                    &session,
                    &current,
                    &form.definition,
                    Some(status.message()),
                    StatusCode::BAD_REQUEST,
                ))
            }
            Err(status) => Err(status.into()),
        }
    }
    .await;
    respond(&session, result)
}

/// `POST /console/journeys/{id}/validate.json`: the editor's text (the body) checked by
/// `ValidateJourney`; `{"valid", "problems": [{"path", "message"}]}`. The CSRF token comes in
/// the `x-csrf-token` header.
pub async fn validate_json(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    let posted = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !csrf_ok(&session, posted) {
        return (StatusCode::FORBIDDEN, Json(json!({"error": "stale form"}))).into_response();
    }
    let problems = match parse_definition(&body) {
        Err(problem) => vec![problem],
        Ok(journey) => match console
            .clients(&session)
            .journeys
            .validate_journey(pb::ValidateJourneyRequest {
                target: Some(pb::validate_journey_request::Target::Journey(journey)),
            })
            .await
        {
            Ok(reply) => reply.into_inner().problems,
            Err(status) => {
                let (code, message) = PageError::Api(status).status_and_message();
                return (code, Json(json!({ "error": message }))).into_response();
            }
        },
    };
    let problems: Vec<Value> = problems
        .iter()
        .map(|p| json!({"path": p.path, "message": p.message}))
        .collect();
    Json(json!({"valid": problems.is_empty(), "problems": problems})).into_response()
}

/// `POST /console/journeys/{id}/publish`.
pub async fn publish(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let result: Result<Response, PageError> = async {
        if !csrf_ok(&session, &form.csrf) {
            return Err(PageError::Csrf);
        }
        let journey = console
            .clients(&session)
            .journeys
            .publish_journey(pb::PublishJourneyRequest {
                id,
                ..pb::PublishJourneyRequest::default()
            })
            .await?
            .into_inner();
        Ok(to_journey(&journey))
    }
    .await;
    respond(&session, result)
}

/// A form with only its CSRF field.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The archive form.
#[derive(Deserialize)]
pub struct ArchiveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
}

/// `POST /console/journeys/{id}/archive` (`mode` DRAIN or EXIT).
pub async fn archive(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<ArchiveForm>,
) -> Response {
    let result: Result<Response, PageError> = async {
        if !csrf_ok(&session, &form.csrf) {
            return Err(PageError::Csrf);
        }
        let mode = match form.mode.as_str() {
            "DRAIN" => pb::ArchiveMode::Drain,
            "EXIT" => pb::ArchiveMode::Exit,
            other => {
                return Err(PageError::BadInput(format!(
                    "archive mode {other:?}: choose DRAIN or EXIT"
                )));
            }
        };
        let journey = console
            .clients(&session)
            .journeys
            .archive_journey(pb::ArchiveJourneyRequest {
                id,
                mode: mode as i32,
            })
            .await?
            .into_inner();
        Ok(to_journey(&journey))
    }
    .await;
    respond(&session, result)
}

/// The duplicate form.
#[derive(Deserialize)]
pub struct DuplicateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// `POST /console/journeys/{id}/duplicate`: a new draft copy; shows it.
pub async fn duplicate(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<DuplicateForm>,
) -> Response {
    let result: Result<Response, PageError> = async {
        if !csrf_ok(&session, &form.csrf) {
            return Err(PageError::Csrf);
        }
        let journey = console
            .clients(&session)
            .journeys
            .duplicate_journey(pb::DuplicateJourneyRequest {
                id,
                name: form.name.trim().to_owned(),
            })
            .await?
            .into_inner();
        Ok(to_journey(&journey))
    }
    .await;
    respond(&session, result)
}

fn to_journey(journey: &pb::Journey) -> Response {
    Redirect::to(&format!("/console/journeys/{}", url_part(&journey.id))).into_response()
}

/// A sample event to start the test-send form with.
const SAMPLE_EVENT: &str = r#"{
  "type": "track",
  "userId": "test-user",
  "event": "checkout_started",
  "properties": { "session_id": "test-session" },
  "traits": { "email": "test@example.com" }
}"#;

/// `GET /console/journeys/{id}/test-send`: the "send test event" form.
pub async fn test_send_form(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let result: Result<Response, PageError> = async {
        let journey = console
            .clients(&session)
            .journeys
            .get_journey(pb::GetJourneyRequest { id })
            .await?
            .into_inner();
        let sample = journey.entry.as_ref().map_or_else(
            || SAMPLE_EVENT.to_owned(),
            |e| SAMPLE_EVENT.replace("checkout_started", &e.event),
        );
        Ok(test_send_page(
            &session,
            &journey,
            "",
            &sample,
            None,
            StatusCode::OK,
        ))
    }
    .await;
    respond(&session, result)
}

fn test_send_page(
    session: &Session,
    journey: &pb::Journey,
    step: &str,
    event: &str,
    answer: Option<String>,
    status: StatusCode,
) -> Response {
    let mut options = String::new();
    for s in journey
        .steps
        .iter()
        .filter(|s| matches!(s.kind, Some(Kind::Send(_))))
    {
        let selected = if s.key == step { " selected" } else { "" };
        let _ = write!(
            options,
            "<option value=\"{key}\"{selected}>{name} ({key})</option>",
            key = esc(&s.key),
            name = esc(&s.name)
        );
    }
    let body = format!(
        "<h1>Send a test event: {name}</h1>\
         <p>Renders the step's payload from the event below and delivers it to the step's \
         destination for real (no retries, no outbox), then shows the destination's answer.</p>\
         <form method=\"post\" action=\"/console/journeys/{id}/test-send\" class=\"editor\">{csrf}\
         <label for=\"step\">Send step</label><select id=\"step\" name=\"step\">{options}</select>\
         <label for=\"event\">Sample event (Segment JSON)</label>\
         <textarea id=\"event\" name=\"event\" rows=\"10\" spellcheck=\"false\">{event}</textarea>\
         <button type=\"submit\">Send</button> <a href=\"/console/journeys/{id}\">Back to the journey</a>\
         </form>{answer}",
        name = esc(&journey.name),
        id = url_part(&journey.id),
        csrf = csrf_field(session),
        event = esc(event),
        answer = answer.unwrap_or_default(),
    );
    (
        status,
        Html(html::page(
            session,
            Section::Journeys,
            "Send a test event",
            &body,
        )),
    )
        .into_response()
}

/// The test-send form.
#[derive(Deserialize)]
pub struct TestSendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    event: String,
}

/// `POST /console/journeys/{id}/test-send`: `SendTestEvent`, and the destination's answer.
pub async fn test_send(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<TestSendForm>,
) -> Response {
    let result: Result<Response, PageError> = async {
        if !csrf_ok(&session, &form.csrf) {
            return Err(PageError::Csrf);
        }
        let mut c = console.clients(&session);
        let journey = c
            .journeys
            .get_journey(pb::GetJourneyRequest { id: id.clone() })
            .await?
            .into_inner();
        let event = serde_json::from_str::<Value>(&form.event)
            .map_err(|e| format!("the sample event is not valid JSON: {e}"))
            .and_then(ctl::input::event);
        let event = match event {
            Ok(event) => event,
            Err(message) => {
                let answer = format!("<p class=\"error\" role=\"alert\">{}</p>", esc(&message));
                return Ok(test_send_page(
                    &session,
                    &journey,
                    &form.step,
                    &form.event,
                    Some(answer),
                    StatusCode::BAD_REQUEST,
                ));
            }
        };
        let reply = c
            .journeys
            .send_test_event(pb::SendTestEventRequest {
                journey_id: id,
                step_key: form.step.clone(),
                sample_event: Some(event),
                ..pb::SendTestEventRequest::default()
            })
            .await;
        let (answer, status) = match reply {
            Ok(reply) => {
                let reply = reply.into_inner();
                (
                    format!(
                        "<section aria-labelledby=\"answer-heading\" id=\"answer\" role=\"status\">\
                         <h2 id=\"answer-heading\">The destination answered</h2>\
                         <p>Status <strong id=\"answer-status\">{}</strong> after {}</p>\
                         <pre id=\"answer-body\">{}</pre></section>",
                        reply.status_code,
                        ctl::output::duration(reply.latency.as_ref()),
                        esc(&reply.body)
                    ),
                    StatusCode::OK,
                )
            }
            Err(status) => {
                let (code, message) = PageError::Api(status).status_and_message();
                (
                    format!("<p class=\"error\" role=\"alert\">{}</p>", esc(&message)),
                    code,
                )
            }
        };
        Ok(test_send_page(
            &session,
            &journey,
            &form.step,
            &form.event,
            Some(answer),
            status,
        ))
    }
    .await;
    respond(&session, result)
}

/// Midnight UTC of today, as the API's timestamps.
fn start_of_today() -> prost_types::Timestamp {
    let midnight = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp());
    prost_types::Timestamp {
        seconds: midnight,
        nanos: 0,
    }
}

/// The list's state filter, with `state` selected.
fn state_filter(state: &str) -> String {
    let mut filter = String::from(
        "<form method=\"get\" action=\"/console/\" class=\"inline\">\
         <label for=\"state\">State</label><select id=\"state\" name=\"state\">",
    );
    for (value, label) in [
        ("", "Any"),
        ("DRAFT", "Draft"),
        ("PUBLISHED", "Published"),
        ("ARCHIVED", "Archived"),
    ] {
        let selected = if value == state { " selected" } else { "" };
        let _ = write!(
            filter,
            "<option value=\"{value}\"{selected}>{label}</option>"
        );
    }
    filter.push_str("</select> <button type=\"submit\">Show</button></form>");
    filter
}
