//! `journeys.v1.CatalogService`: the event names seen (or registered), which journeys may use.

use journeys_proto::v1 as pb;
use journeys_proto::v1::catalog_service_server::CatalogService;
use journeys_runtime::error::ApiError;
use journeys_store::{CatalogEventRecord, Store};
use tonic::{Request, Response, Status};

use crate::convert::json::opt_timestamp;
use crate::errors;

/// Longest event name accepted (it is a key in the catalog and in journey context).
pub const MAX_EVENT_NAME_CHARS: usize = 191;

#[derive(Clone)]
pub struct CatalogApi {
    store: Store,
}

type Reply<T> = Result<Response<T>, Status>;

fn to_proto(e: &CatalogEventRecord) -> pb::CatalogEvent {
    pb::CatalogEvent {
        name: e.name.clone(),
        first_seen: opt_timestamp(e.first_seen),
        last_seen: opt_timestamp(e.last_seen),
        count: e.count,
    }
}

impl CatalogApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_events(
        &self,
        _req: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let events = self.store.catalog().list().await.map_err(errors::store)?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(to_proto).collect(),
        }))
    }

    async fn register_event(
        &self,
        req: Request<pb::RegisterEventRequest>,
    ) -> Reply<pb::CatalogEvent> {
        let name = req.into_inner().name;
        if name.trim().is_empty() {
            return Err(ApiError::invalid_field("name", "required").into());
        }
        if name.chars().count() > MAX_EVENT_NAME_CHARS {
            return Err(ApiError::invalid_field(
                "name",
                format!("at most {MAX_EVENT_NAME_CHARS} characters"),
            )
            .into());
        }
        let e = self
            .store
            .catalog()
            .register(&name)
            .await
            .map_err(errors::store)?;
        Ok(Response::new(to_proto(&e)))
    }
}
