//! The webhook client: one pooled HTTP/1.1 client (plain `http://`, or TLS by rustls on the
//! `ring` provider with bundled Mozilla roots) that builds, signs and times one request.
//!
//! Every connection goes through the [`AddressPolicy`]: host names are resolved by the
//! [`PolicyResolver`] (once per connection, every address checked, the connection made to
//! those addresses only) and literal IP hosts are checked before the request is made.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::address::{AddressPolicy, PolicyResolver, ResolveError};
use crate::destination::WebhookDestination;
use crate::error::DeliveryError;
use crate::signature::{SIGNATURE_HEADER, sign};

/// `User-Agent` of every request.
const USER_AGENT_VALUE: &str = concat!("journeys/", env!("CARGO_PKG_VERSION"));
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Idle pooled connections are closed after this; most servers close theirs after 60–120 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// One request to a destination.
pub(crate) struct WebhookRequest<'a> {
    pub destination: &'a WebhookDestination,
    pub method: &'a str,
    pub path: &'a str,
    /// The JSON body, serialized once (the signature covers these exact bytes).
    pub body: Bytes,
    /// Sent as `Idempotency-Key`: the same on every attempt of one send.
    pub message_id: &'a str,
    /// W3C trace context of the transition that queued the send.
    pub traceparent: Option<&'a str>,
    /// Signing time.
    pub now: DateTime<Utc>,
    /// Response body bytes kept; the rest is discarded.
    pub body_limit: usize,
}

/// What the destination answered.
#[derive(Debug)]
pub(crate) struct WebhookResponse {
    pub status: StatusCode,
    /// Raw `Retry-After` header, when present and readable.
    pub retry_after: Option<String>,
    /// At most `body_limit` bytes of the body.
    pub body: Bytes,
    /// From sending the request to the end of the (kept part of the) body.
    pub latency: Duration,
}

/// One request a destination function makes with `fetch`.
pub(crate) struct FetchRequest {
    pub method: String,
    /// Absolute `http(s)` URL, already checked against the address policy's URL rules.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Whole exchange, body included.
    pub timeout: Duration,
    /// Longest response body accepted; a longer one fails the fetch.
    pub body_limit: usize,
}

/// What a function's `fetch` got back.
#[derive(Debug)]
pub(crate) struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub(crate) struct WebhookClient {
    http: Client<HttpsConnector<HttpConnector<PolicyResolver>>, Full<Bytes>>,
    policy: AddressPolicy,
}

impl WebhookClient {
    /// A client keeping up to `max_idle_per_host` idle connections per destination host, and
    /// connecting only where `policy` allows.
    pub fn new(max_idle_per_host: usize, policy: AddressPolicy) -> Self {
        let mut http = HttpConnector::new_with_resolver(PolicyResolver {
            policy: policy.clone(),
        });
        // The https connector wraps this one and needs it to accept `https://` URIs.
        http.enforce_http(false);
        http.set_nodelay(true);
        // The ring provider supports the default protocol versions, so this cannot fail; the
        // expect guards against a rustls change, not against input.
        #[allow(clippy::expect_used)]
        let tls = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports rustls' default protocol versions");
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(max_idle_per_host)
            .build(connector);
        Self { http, policy }
    }

    /// The policy this client connects under.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Sends one request and reads the response within the destination's timeout.
    ///
    /// Any status is a response; only no response at all (timeout, connection failure) or a
    /// request that cannot be built is an error.
    pub async fn send(&self, req: WebhookRequest<'_>) -> Result<WebhookResponse, DeliveryError> {
        let destination = req.destination;
        let request = build(&req)?;
        // The connector resolves host names through the policy but connects to literal IPs
        // directly: those are checked here.
        if let Some(host) = request.uri().host() {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = host.parse::<IpAddr>() {
                self.policy
                    .check_ip(ip)
                    .map_err(|denied| DeliveryError::AddressDenied(denied.to_string()))?;
            }
        }
        let started = Instant::now();
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| transport_error(&e))?;
            let (parts, body) = response.into_parts();
            let body = read_limited(body, req.body_limit).await;
            Ok::<_, DeliveryError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(destination.timeout, exchange)
            .await
            .map_err(|_| DeliveryError::Timeout(destination.timeout))??;
        Ok(WebhookResponse {
            status: parts.status,
            retry_after: parts
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            latency: started.elapsed(),
        })
    }
}

impl WebhookClient {
    /// Makes one request of a destination function: through the same pool and address policy
    /// as webhooks, with the function's own method, headers and body. A response body longer
    /// than `body_limit` is an error ([`DeliveryError::ResponseTooLarge`]), not a cut-off body:
    /// a function reading half a JSON document would act on garbage.
    pub async fn fetch(&self, req: FetchRequest) -> Result<FetchResponse, DeliveryError> {
        let parsed = url::Url::parse(&req.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                DeliveryError::InvalidRequest(format!(
                    "{:?} is not an absolute http:// or https:// URL",
                    req.url
                ))
            })?;
        // Literal IP hosts in any spelling (the URL parser normalises them) and loopback names
        // are refused before connecting; other names are checked by the resolver.
        self.policy
            .check_url(&parsed)
            .map_err(DeliveryError::AddressDenied)?;
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| DeliveryError::InvalidRequest(format!("method {:?}", req.method)))?;
        let uri: http::Uri = parsed
            .as_str()
            .parse()
            .map_err(|e| DeliveryError::InvalidRequest(format!("url {:?}: {e}", req.url)))?;
        let mut request = http::Request::new(Full::new(req.body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                DeliveryError::InvalidRequest(format!("header name {name:?} is not valid"))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                DeliveryError::InvalidRequest(format!("value of header {name} is not valid"))
            })?;
            headers.insert(name, value);
        }
        let limit = req.body_limit;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| transport_error(&e))?;
            let (parts, body) = response.into_parts();
            let body = read_limited(body, limit.saturating_add(1)).await;
            if body.len() > limit {
                return Err(DeliveryError::ResponseTooLarge(limit));
            }
            Ok((parts, body))
        };
        let (parts, body) = tokio::time::timeout(req.timeout, exchange)
            .await
            .map_err(|_| DeliveryError::Timeout(req.timeout))??;
        Ok(FetchResponse {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect(),
            body,
        })
    }
}

fn build(req: &WebhookRequest<'_>) -> Result<http::Request<Full<Bytes>>, DeliveryError> {
    let destination = req.destination;
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| DeliveryError::InvalidRequest(format!("method {:?}", req.method)))?;
    let uri = destination.uri_for(req.path)?;
    let idempotency_key = HeaderValue::from_str(req.message_id).map_err(|_| {
        DeliveryError::InvalidRequest(format!(
            "message id {:?} is not a valid header value",
            req.message_id
        ))
    })?;
    let mut request = http::Request::new(Full::new(req.body.clone()));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    // Configured headers first, so that the protocol's own headers below always win.
    headers.extend(destination.headers.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers.insert(IDEMPOTENCY_KEY, idempotency_key);
    if let Some(secret) = &destination.signing_secret {
        let signature = sign(secret, req.now.timestamp(), &req.body);
        // Hex digits and ASCII punctuation only, so always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&signature) {
            headers.insert(HeaderName::from_static(SIGNATURE_HEADER), value);
        }
    }
    if let Some(traceparent) = req.traceparent {
        match HeaderValue::from_str(traceparent) {
            Ok(value) => {
                headers.insert(TRACEPARENT, value);
            }
            Err(_) => tracing::debug!(traceparent, "ignoring unreadable traceparent"),
        }
    }
    Ok(request)
}

/// Up to `limit` bytes of `body`. A body that breaks off is kept as far as it came: the status
/// has already been received, and it is what decides the delivery.
async fn read_limited(mut body: Incoming, limit: usize) -> Bytes {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => {
                tracing::debug!(error = %err, "response body broke off");
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = limit - buf.len();
        if data.len() >= room {
            // Dropping the rest closes the connection instead of reading an unbounded body.
            buf.extend_from_slice(&data[..room]);
            break;
        }
        buf.extend_from_slice(&data);
    }
    buf.freeze()
}

/// A failed exchange as a [`DeliveryError`]: a refused address is final, anything else is a
/// transport error.
fn transport_error(err: &(dyn std::error::Error + 'static)) -> DeliveryError {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(ResolveError::Denied(why)) = cause.downcast_ref::<ResolveError>() {
            return DeliveryError::AddressDenied(why.clone());
        }
        source = cause.source();
    }
    DeliveryError::Transport(error_chain(err))
}

/// An error with its causes, `a: b: c`: hyper's own messages are too terse to act on.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
