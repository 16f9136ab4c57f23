//! `journeys-data-plane`: ingestion (gRPC and the Segment-compatible HTTP API) as its own
//! process.

use clap::Parser;
use journeys_runtime::config::{self, ConfigArgs, Service};

/// Journeys data plane: event ingestion over gRPC and the Segment-compatible HTTP API.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config::load(Service::DataPlane, &cli.config)?;
    if cli.config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    // The process needs the evaluator engine as its event sink; until that is wired in here,
    // the data plane runs inside `journeys dev`.
    anyhow::bail!("journeys-data-plane cannot run standalone yet; use `journeys dev`")
}
