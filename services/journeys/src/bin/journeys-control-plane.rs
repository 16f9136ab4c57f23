//! `journeys-control-plane`: a node with the control-plane role.

use clap::Parser;
use journeys::{Node, Roles};
use journeys_runtime::config::{self, ConfigArgs, Service};

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
    let node = Node::new(config, Roles::of_service(Service::ControlPlane));
    journeys::cli::run(node, Service::ControlPlane.name()).await?;
    Ok(())
}
