//! `journeys <noun> <verb>`: the operators' command line, in the manner of kubectl and gh.
//!
//! Every command is a client of the public gRPC API (the clients generated in
//! `journeys-proto`), so nothing here is out of reach of any other service. Shared flags
//! ([`client::Global`]): `--addr` (`JOURNEYS_ADDR`), `--token` (`JOURNEYS_ADMIN_TOKEN`) and
//! `-o table|json|yaml`. Exit codes: 0 done, 1 the server refused or failed (or the network),
//! 2 bad usage or invalid input (clap's own usage errors exit 2 as well).

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub mod client;
pub mod error;
pub mod input;
pub mod output;

mod activity;
mod events;
mod functions;
mod journey;
mod resources;

pub use error::Error;

use client::Global;

/// A noun with its verb, and the shared flags (accepted before or after the verb).
#[derive(Debug, Args)]
pub struct Noun<V: Subcommand> {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub verb: V,
}

/// The client commands of `journeys`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define journeys and follow them: apply, validate, list, get, publish, archive,
    /// duplicate, delete, stats, simulate
    #[command(after_help = journey::EXAMPLES)]
    Journey(Noun<journey::Verb>),
    /// Send events from a JSON-lines file over the gRPC ingest stream
    #[command(after_help = events::EXAMPLES)]
    Events(Noun<events::Verb>),
    /// Webhook destinations that send steps deliver to
    #[command(after_help = resources::DESTINATION_EXAMPLES)]
    Destination(Noun<resources::DestinationVerb>),
    /// Sources: the write keys applications send events with
    #[command(after_help = resources::SOURCE_EXAMPLES)]
    Source(Noun<resources::SourceVerb>),
    /// Audiences: keyed sets of profiles for entry filters and data splits
    #[command(after_help = resources::AUDIENCE_EXAMPLES)]
    Audience(Noun<resources::AudienceVerb>),
    /// The event catalog: event names journeys may use
    #[command(after_help = resources::CATALOG_EXAMPLES)]
    Catalog(Noun<resources::CatalogVerb>),
    /// Journey instances and their timelines
    #[command(after_help = activity::INSTANCE_EXAMPLES)]
    Instance(Noun<activity::InstanceVerb>),
    /// A profile: its traits, audiences and the timeline of its instances
    #[command(after_help = activity::PROFILE_EXAMPLES)]
    Profile(Noun<activity::ProfileVerb>),
    /// Sends given up after their retry budget, and their replay
    #[command(after_help = activity::DEAD_LETTER_EXAMPLES)]
    DeadLetters(Noun<activity::DeadLetterVerb>),
}

/// Runs `command`; failures are reported on stderr and give the exit code.
pub async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Journey(noun) => journey::run(&noun.global, noun.verb).await,
        Command::Events(noun) => events::run(&noun.global, noun.verb).await,
        Command::Destination(noun) => resources::destination(&noun.global, noun.verb).await,
        Command::Source(noun) => resources::source(&noun.global, noun.verb).await,
        Command::Audience(noun) => resources::audience(&noun.global, noun.verb).await,
        Command::Catalog(noun) => resources::catalog(&noun.global, noun.verb).await,
        Command::Instance(noun) => activity::instance(&noun.global, noun.verb).await,
        Command::Profile(noun) => activity::profile(&noun.global, noun.verb).await,
        Command::DeadLetters(noun) => activity::dead_letters(&noun.global, noun.verb).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprint!("{}", error.report());
            error.exit_code()
        }
    }
}
