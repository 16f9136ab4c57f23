//! `journeys-data-plane`: a node with the data-plane and delivery roles — ingestion (gRPC and
//! the Segment-compatible HTTP API), the evaluator engine and the outbox dispatcher. Run
//! `journeys-scheduler` beside it for delays and hold-until timeouts, and
//! `journeys-control-plane` to manage journeys.

use clap::Parser;
use journeys_runtime::config::{ConfigArgs, Service};

/// Journeys data plane: event ingestion over gRPC and the Segment-compatible HTTP API,
/// journey evaluation and webhook delivery.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    journeys::cli::run_service(Service::DataPlane, &cli.config, None, |node| node).await?;
    Ok(())
}
