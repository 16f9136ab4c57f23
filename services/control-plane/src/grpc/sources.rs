//! `journeys.v1.SourceService` over [`SourceApi`]: conversion only.

use journeys_proto::convert::json::{opt_timestamp, timestamp};
use journeys_proto::v1 as pb;
use journeys_proto::v1::source_service_server::SourceService;
use journeys_store::SourceRecord;
use tonic::{Request, Response};

use super::Reply;
use crate::api::SourceApi;

/// The tonic face of the source service.
#[derive(Clone)]
pub struct SourceGrpc {
    api: SourceApi,
}

impl SourceGrpc {
    pub fn new(api: SourceApi) -> Self {
        Self { api }
    }
}

fn source(s: &SourceRecord) -> pb::Source {
    pb::Source {
        id: s.id.clone(),
        name: s.name.clone(),
        key_prefix: s.key_prefix.clone(),
        created_at: Some(timestamp(s.created_at)),
        revoked_at: opt_timestamp(s.revoked_at),
    }
}

#[tonic::async_trait]
impl SourceService for SourceGrpc {
    async fn create_source(
        &self,
        req: Request<pb::CreateSourceRequest>,
    ) -> Reply<pb::CreateSourceResponse> {
        let (stored, write_key) = self.api.create(req.into_inner().name).await?;
        Ok(Response::new(pb::CreateSourceResponse {
            id: stored.id.clone(),
            write_key,
            source: Some(source(&stored)),
        }))
    }

    async fn list_sources(
        &self,
        _req: Request<pb::ListSourcesRequest>,
    ) -> Reply<pb::ListSourcesResponse> {
        let sources = self.api.list().await?;
        Ok(Response::new(pb::ListSourcesResponse {
            sources: sources.iter().map(source).collect(),
        }))
    }

    async fn revoke_source(&self, req: Request<pb::RevokeSourceRequest>) -> Reply<pb::Source> {
        let revoked = self.api.revoke(&req.into_inner().id).await?;
        Ok(Response::new(source(&revoked)))
    }
}
