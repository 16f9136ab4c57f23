//! `journeys.v1.SourceService`: ingestion credentials.
//!
//! A write key is 32 random bytes, shown once at creation; only its SHA-256 is stored, so a
//! leaked database does not leak working keys. The first characters are kept for display.

use base64::Engine;
use chrono::Utc;
use journeys_proto::v1 as pb;
use journeys_proto::v1::source_service_server::SourceService;
use journeys_runtime::error::ApiError;
use journeys_store::{SourceRecord, Store};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::convert::json::{opt_timestamp, timestamp};
use crate::{errors, fields};

/// Characters of the key kept for display (`jk_` plus a few random ones).
const PREFIX_CHARS: usize = 8;

#[derive(Clone)]
pub struct Sources {
    store: Store,
}

type Reply<T> = Result<Response<T>, Status>;

/// A fresh write key: `jk_` + 43 URL-safe base64 characters (256 random bits).
pub fn new_write_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "jk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// How a write key is stored and looked up.
pub fn hash_write_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn to_proto(s: &SourceRecord) -> pb::Source {
    pb::Source {
        id: s.id.clone(),
        name: s.name.clone(),
        key_prefix: s.key_prefix.clone(),
        created_at: Some(timestamp(s.created_at)),
        revoked_at: opt_timestamp(s.revoked_at),
    }
}

impl Sources {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl SourceService for Sources {
    async fn create_source(
        &self,
        req: Request<pb::CreateSourceRequest>,
    ) -> Reply<pb::CreateSourceResponse> {
        let req = req.into_inner();
        let mut problems = Vec::new();
        fields::check_name("name", &req.name, &mut problems);
        errors::check("source", &problems)?;
        let write_key = new_write_key();
        let record = SourceRecord {
            id: journeys_store::new_id(),
            name: req.name,
            key_hash: hash_write_key(&write_key),
            key_prefix: write_key.chars().take(PREFIX_CHARS).collect(),
            created_at: Utc::now(),
            revoked_at: None,
        };
        let stored = self
            .store
            .sources()
            .insert(&record)
            .await
            .map_err(errors::store)?;
        Ok(Response::new(pb::CreateSourceResponse {
            id: stored.id.clone(),
            write_key,
            source: Some(to_proto(&stored)),
        }))
    }

    async fn list_sources(
        &self,
        _req: Request<pb::ListSourcesRequest>,
    ) -> Reply<pb::ListSourcesResponse> {
        let sources = self.store.sources().list().await.map_err(errors::store)?;
        Ok(Response::new(pb::ListSourcesResponse {
            sources: sources.iter().map(to_proto).collect(),
        }))
    }

    async fn revoke_source(&self, req: Request<pb::RevokeSourceRequest>) -> Reply<pb::Source> {
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(ApiError::invalid_field("id", "required").into());
        }
        let s = self
            .store
            .sources()
            .revoke(&id, Utc::now())
            .await
            .map_err(errors::store)?;
        Ok(Response::new(to_proto(&s)))
    }
}
