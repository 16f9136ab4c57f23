//! The web console: server-rendered pages at `/console/` on the HTTP port of a node with the
//! control-plane role (`journeys dev`: <http://127.0.0.1:8088/console/>).
//!
//! Everything it shows or does goes through the public gRPC API: it is a tonic client of the
//! node's own gRPC address, passing the operator's admin token on, so it can do nothing another
//! backend service could not. Who may use it follows the admin API's rule ([`auth`]).
//!
//! Pages: journeys ([`journeys`]: list, graph with live counts, editor, lifecycle actions, test
//! sends), profiles and instances, destinations and dead letters ([`activity`]). The style
//! sheet and the script are embedded in the binary; nothing is fetched from elsewhere.

mod activity;
mod auth;
mod graph;
mod html;
mod journeys;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use journeys_proto::v1::destination_service_client::DestinationServiceClient;
use journeys_proto::v1::instance_service_client::InstanceServiceClient;
use journeys_proto::v1::journey_service_client::JourneyServiceClient;
use journeys_proto::v1::profile_service_client::ProfileServiceClient;
use journeys_runtime::auth::AdminAuth;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub use auth::Session;

use html::{Section, esc};

/// The console's shared state: the channel to the node's gRPC API and the admin check.
#[derive(Clone)]
pub struct Console {
    channel: Channel,
    auth: AdminAuth,
}

/// The console's routes, to merge into the node's HTTP router. `grpc_addr` is where the node
/// serves gRPC (an unspecified address is reached over loopback); `admin_token` is the node's.
pub fn router(grpc_addr: SocketAddr, admin_token: Option<String>) -> Router {
    let ip = match grpc_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let target = SocketAddr::new(ip, grpc_addr.port());
    // A socket address always makes a valid URI; connected on first use, since the gRPC
    // server starts beside the HTTP one.
    let channel = Endpoint::from(
        format!("http://{target}")
            .parse::<http::Uri>()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:50051")),
    )
    .connect_lazy();
    let console = Console {
        channel,
        auth: AdminAuth::new(admin_token),
    };
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(journeys::list))
        .route("/console/login", get(auth::login_form).post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/journeys/{id}", get(journeys::show))
        .route(
            "/console/journeys/{id}/stats.json",
            get(journeys::stats_json),
        )
        .route(
            "/console/journeys/{id}/edit",
            get(journeys::edit).post(journeys::save),
        )
        .route(
            "/console/journeys/{id}/validate.json",
            post(journeys::validate_json),
        )
        .route("/console/journeys/{id}/publish", post(journeys::publish))
        .route("/console/journeys/{id}/archive", post(journeys::archive))
        .route(
            "/console/journeys/{id}/duplicate",
            post(journeys::duplicate),
        )
        .route(
            "/console/journeys/{id}/test-send",
            get(journeys::test_send_form).post(journeys::test_send),
        )
        .route("/console/profiles", get(activity::profiles))
        .route("/console/instances/{id}", get(activity::instance))
        .route("/console/destinations", get(activity::destinations))
        .route("/console/destinations/{id}", get(activity::destination))
        .route("/console/destinations/{id}/replay", post(activity::replay))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::guard,
        ))
        .with_state(console)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("assets/console.js"),
    )
        .into_response()
}

/// Adds the operator's admin token to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Bearer>;

/// The clients a page uses, with the session's token.
pub struct Clients {
    pub journeys: JourneyServiceClient<Svc>,
    pub destinations: DestinationServiceClient<Svc>,
    pub profiles: ProfileServiceClient<Svc>,
    pub instances: InstanceServiceClient<Svc>,
}

impl Console {
    /// Clients calling as `session`.
    fn clients(&self, session: &Session) -> Clients {
        let bearer = Bearer(
            session
                .token
                .as_deref()
                .and_then(|t| format!("Bearer {t}").parse().ok()),
        );
        let svc = || InterceptedService::new(self.channel.clone(), bearer.clone());
        Clients {
            journeys: JourneyServiceClient::new(svc()),
            destinations: DestinationServiceClient::new(svc()),
            profiles: ProfileServiceClient::new(svc()),
            instances: InstanceServiceClient::new(svc()),
        }
    }
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// The API refused or failed; its message is meant for clients.
    Api(tonic::Status),
    /// A form field is wrong.
    BadInput(String),
    /// A form's CSRF token is missing or stale.
    Csrf,
}

impl From<tonic::Status> for PageError {
    fn from(status: tonic::Status) -> Self {
        PageError::Api(status)
    }
}

impl PageError {
    fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            PageError::Api(status) => {
                let code = match status.code() {
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                        StatusCode::BAD_REQUEST
                    }
                    tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
                        StatusCode::CONFLICT
                    }
                    tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                    tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                    tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let message = if status.message().is_empty() {
                    format!("{:?}", status.code())
                } else {
                    status.message().to_owned()
                };
                (code, message)
            }
            PageError::BadInput(message) => (StatusCode::BAD_REQUEST, message.clone()),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "The form expired; reload the page and try again.".to_owned(),
            ),
        }
    }

    /// The error as a page of the console.
    pub fn page(&self, session: &Session) -> Response {
        let (code, message) = self.status_and_message();
        if code == StatusCode::UNAUTHORIZED {
            return Redirect::to("/console/login").into_response();
        }
        let body = format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>\
             <p><a href=\"/console/\">Back to the journeys</a></p>",
            esc(code.canonical_reason().unwrap_or("Error")),
            esc(&message)
        );
        (
            code,
            Html(html::page(session, Section::None, "Error", &body)),
        )
            .into_response()
    }
}

/// A page's outcome: the page, or an error page.
pub fn respond(session: &Session, result: Result<Response, PageError>) -> Response {
    result.unwrap_or_else(|e| e.page(session))
}
