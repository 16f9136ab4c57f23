//! `journeys.v1.CatalogService` over [`CatalogApi`]: conversion only.

use journeys_proto::convert::json::opt_timestamp;
use journeys_proto::v1 as pb;
use journeys_proto::v1::catalog_service_server::CatalogService;
use journeys_store::CatalogEventRecord;
use tonic::{Request, Response};

use super::Reply;
use crate::api::CatalogApi;

/// The tonic face of the catalog service.
#[derive(Clone)]
pub struct CatalogGrpc {
    api: CatalogApi,
}

impl CatalogGrpc {
    pub fn new(api: CatalogApi) -> Self {
        Self { api }
    }
}

fn catalog_event(e: &CatalogEventRecord) -> pb::CatalogEvent {
    pb::CatalogEvent {
        name: e.name.clone(),
        first_seen: opt_timestamp(e.first_seen),
        last_seen: opt_timestamp(e.last_seen),
        count: e.count,
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogGrpc {
    async fn list_events(
        &self,
        _req: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let events = self.api.list().await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(catalog_event).collect(),
        }))
    }

    async fn register_event(
        &self,
        req: Request<pb::RegisterEventRequest>,
    ) -> Reply<pb::CatalogEvent> {
        let event = self.api.register(&req.into_inner().name).await?;
        Ok(Response::new(catalog_event(&event)))
    }
}
