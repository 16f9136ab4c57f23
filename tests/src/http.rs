//! A plain HTTP/1.1 client for the Segment-compatible API (hyper-util's pooled client), with
//! write-key and gzip helpers: what a Segment library or `curl` would send.

use std::io::Write as _;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// What an HTTP call returned.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON; `Null` when it was not JSON.
    pub body: Value,
}

impl HttpReply {
    /// The `code` of a JSON error body (empty when absent).
    pub fn code(&self) -> &str {
        self.body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The `message` of a JSON error body (empty when absent).
    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// Posts to one server. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    /// A client for the server at `base` (`http://127.0.0.1:8088`).
    pub fn new(base: String) -> HttpClient {
        HttpClient {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `POST base+path` with a JSON body, the write key as HTTP Basic user name when given.
    pub async fn post_json(
        &self,
        path: &str,
        write_key: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<HttpReply> {
        let mut headers = vec![(header::CONTENT_TYPE, "application/json".to_owned())];
        if let Some(key) = write_key {
            headers.push((header::AUTHORIZATION, basic_auth(key)));
        }
        self.post(path, &headers, serde_json::to_vec(body)?).await
    }

    /// `POST base+path` with these headers and raw body bytes.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<HttpReply> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = self
            .client
            .request(request.body(Full::new(body.into()))?)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok(HttpReply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }
}

/// `Basic base64("<key>:")`: a write key as HTTP Basic user name with an empty password.
pub fn basic_auth(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}
