//! `journeys-data-plane`: ingestion (gRPC and the Segment-compatible HTTP API), the evaluator
//! engine and the outbox dispatcher as their own process. Run `journeys-scheduler` beside it
//! for delays and hold-until timeouts, and `journeys-control-plane` to manage journeys.

use anyhow::Context;
use clap::Parser;
use journeys_runtime::config::{self, ConfigArgs, Service};
use journeys_runtime::shutdown::Shutdown;

/// Journeys data plane: event ingestion over gRPC and the Segment-compatible HTTP API,
/// journey evaluation and webhook delivery.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config::load(Service::DataPlane, &cli.config)?;
    if cli.config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let _telemetry = journeys_runtime::telemetry::init(&config, Service::DataPlane.name())?;
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let shutdown = Shutdown::on_signal();
    journeys_data_plane::serve(config, grpc, http, shutdown.wait()).await?;
    Ok(())
}
