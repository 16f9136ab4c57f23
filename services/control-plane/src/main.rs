//! `journeys-control-plane`: the control plane as its own process.

use anyhow::Context;
use clap::Parser;
use journeys_runtime::config::{self, ConfigArgs, Service};
use journeys_runtime::shutdown::Shutdown;

/// Journeys control plane: journey CRUD and publishing, destinations, audiences, sources,
/// catalog, profiles and instances over gRPC.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config::load(Service::ControlPlane, &cli.config)?;
    if cli.config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let _telemetry = journeys_runtime::telemetry::init(&config, "journeys-control-plane")?;
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    tracing::info!(addr = %config.grpc_addr, "control plane listening");
    let shutdown = Shutdown::on_signal();
    journeys_control_plane::serve(config, listener, shutdown.wait()).await?;
    Ok(())
}
