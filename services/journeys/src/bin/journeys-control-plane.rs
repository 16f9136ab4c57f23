//! `journeys-control-plane`: a node with the control-plane role.

use clap::Parser;
use journeys_runtime::config::{ConfigArgs, Service};

/// Journeys control plane: journey CRUD and publishing, destinations, audiences, sources,
/// catalog, profiles and instances over gRPC.
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
    journeys::cli::run_service(Service::ControlPlane, &cli.config, None, |node| node).await?;
    Ok(())
}
