//! The `journeys` package: the composition root ([`node`]) that every Journeys process starts
//! through, the command-line pieces its binaries share ([`cli`]), the operators' client
//! commands (`journeys journey …`, [`ctl`]), the web console at `/console/` ([`console`]) and
//! the demo webhook sink of `journeys dev` ([`sink`]).
//!
//! Binaries (thin mains over [`Node`]): `journeys` (`journeys dev`, `journeys serve --roles …`,
//! `journeys migrate`), `journeys-control-plane`, `journeys-data-plane` and
//! `journeys-scheduler`. Tests start the same [`Node`] on `127.0.0.1:0`.

pub mod cli;
pub mod console;
pub mod ctl;
pub mod node;
pub mod sink;

pub use node::{Error, Listeners, Node, Role, Roles};
