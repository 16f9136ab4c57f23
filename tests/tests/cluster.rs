//! `ClusterService/ListNodes` end to end, on every backend: the node that `journeys dev`
//! starts shows up live, owning every partition at an epoch of at least 1, commits move its
//! partitions' sequence on, and the read needs the admin token like every admin call.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

use std::time::Duration;

use journeys_proto::v1 as pb;
use journeys_proto::v1::cluster_service_client::ClusterServiceClient;
use journeys_runtime::config::DEFAULT_PARTITIONS;
use journeys_testkit::eventually;
use journeys_tests::ingest::{send_accepted, track};
use journeys_tests::{Stack, StackOptions, on_each_backend};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

const NODE: &str = "node-a";

#[tokio::test]
async fn a_running_node_owns_every_partition_and_is_listed_live() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let stack = Stack::start(
            &url,
            StackOptions {
                admin_token: Some("t0ken".to_owned()),
                node_id: Some(NODE.to_owned()),
                ..StackOptions::default()
            },
        )
        .await?;
        let mut c = stack.clients().await?;

        // The admin token rule of every admin call.
        let channel = Channel::from_shared(format!("http://{}", stack.grpc_addr()))?
            .connect()
            .await?;
        let err = ClusterServiceClient::new(channel)
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .expect_err("a call without the admin token must fail");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

        // The node takes every partition in its first ownership rounds.
        let mut cluster = c.cluster.clone();
        let view = eventually("every partition owned", Duration::from_secs(20), || {
            let mut cluster = cluster.clone();
            async move {
                let view = cluster
                    .list_nodes(pb::ListNodesRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                view.partitions
                    .iter()
                    .all(|p| p.held && p.owner == NODE)
                    .then_some(view)
            }
        })
        .await;
        let all: Vec<u32> = (0..DEFAULT_PARTITIONS).collect();
        assert_eq!(
            view.partitions.iter().map(|p| p.id).collect::<Vec<_>>(),
            all
        );
        for p in &view.partitions {
            assert!(p.epoch >= 1, "partition {} at epoch {}", p.id, p.epoch);
            assert_eq!(p.lag, None, "no log tail on the in-process path");
        }
        assert_eq!(view.nodes.len(), 1, "{:?}", view.nodes);
        let node = &view.nodes[0];
        assert_eq!(node.id, NODE);
        assert!(node.live);
        assert_eq!(node.partitions, all);
        let read_at = view.read_at.unwrap();
        let lease_until = node.lease_until.unwrap();
        assert!(
            (lease_until.seconds, lease_until.nanos) > (read_at.seconds, read_at.nanos),
            "the lease runs past the read: {lease_until:?} vs {read_at:?}"
        );
        let age = node.heartbeat_age.unwrap();
        assert!(age.seconds < 2, "heartbeat {age:?} old");

        // An accepted event is committed under its partition's fence: that partition's
        // sequence moves on and its commit time is set.
        let before: i64 = view.partitions.iter().map(|p| p.last_seq).sum();
        let key = c.create_source("web").await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track("u1", "page_viewed", "m1", &json!({}))],
        )
        .await?;
        let view = cluster
            .list_nodes(pb::ListNodesRequest::default())
            .await?
            .into_inner();
        let after: i64 = view.partitions.iter().map(|p| p.last_seq).sum();
        assert!(after > before, "last_seq {before} → {after}");
        assert!(view.partitions.iter().any(|p| p.committed_at.is_some()));

        // A negative window is refused with the field named.
        let err = cluster
            .list_nodes(pb::ListNodesRequest {
                seen_within: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
            })
            .await
            .expect_err("a negative window must be refused");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("seen_within"), "{}", err.message());
        stack.stop().await
    })
    .await
}
