//! `journeys.v1.ClusterService` over [`ClusterApi`]: conversion only.

use chrono::DateTime;
use journeys_proto::convert::json::{duration, from_duration, timestamp};
use journeys_proto::v1 as pb;
use journeys_proto::v1::cluster_service_server::ClusterService;
use tonic::{Request, Response};

use super::Reply;
use crate::api::ClusterApi;
use crate::api::cluster::{DEFAULT_SEEN_WITHIN, NodeView, PartitionView};
use crate::error::ServiceError;

/// The tonic face of the cluster service.
#[derive(Clone)]
pub struct ClusterGrpc {
    api: ClusterApi,
}

impl ClusterGrpc {
    pub fn new(api: ClusterApi) -> Self {
        Self { api }
    }
}

/// Microseconds since the Unix epoch as a `Timestamp`; `None` for `0` (never).
fn micros_timestamp(micros: i64) -> Option<prost_types::Timestamp> {
    if micros <= 0 {
        return None;
    }
    DateTime::from_timestamp_micros(micros).map(timestamp)
}

fn node(n: NodeView) -> pb::ClusterNode {
    pb::ClusterNode {
        heartbeat_at: micros_timestamp(n.heartbeat_at),
        heartbeat_age: Some(duration(n.heartbeat_age)),
        lease_until: micros_timestamp(n.lease_until),
        live: n.live,
        partitions: n.partitions,
        id: n.id,
    }
}

fn partition(p: PartitionView) -> pb::ClusterPartition {
    pb::ClusterPartition {
        id: p.record.partition,
        owner: p.record.owner.unwrap_or_default(),
        epoch: p.record.epoch,
        last_seq: p.record.last_seq,
        log_seq: p.record.log_seq,
        committed_at: micros_timestamp(p.record.committed_at),
        held: p.held,
        lag: p.lag,
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterGrpc {
    async fn list_nodes(&self, req: Request<pb::ListNodesRequest>) -> Reply<pb::ListNodesResponse> {
        let seen_within = match req.into_inner().seen_within {
            Some(d) => {
                from_duration(&d).map_err(|why| ServiceError::invalid_field("seen_within", why))?
            }
            None => DEFAULT_SEEN_WITHIN,
        };
        let view = self.api.list_nodes(seen_within).await?;
        Ok(Response::new(pb::ListNodesResponse {
            read_at: micros_timestamp(view.read_at),
            nodes: view.nodes.into_iter().map(node).collect(),
            partitions: view.partitions.into_iter().map(partition).collect(),
        }))
    }
}
