//! One test kit for every Journeys test crate, so that each fixture has one home:
//!
//! - [`db`]: throw-away, migrated databases and running a test body on every configured
//!   backend (SQLite always, MariaDB when `JOURNEYS_TEST_MYSQL_URL` is set);
//! - [`wait`]: [`eventually`], polling until a condition holds, with a timeout and a message;
//! - [`sink`]: one real HTTP webhook receiver on `127.0.0.1:0` with scripted answers;
//! - [`events`] and [`journeys`]: builders for events and journey definitions, and publishing;
//! - [`clock`]: a paused tokio clock and a settable instant for code that takes `now`.
//!
//! This crate is a dev-dependency only; nothing here is compiled into a release binary.

pub mod clock;
pub mod db;
pub mod events;
pub mod journeys;
pub mod sink;
pub mod wait;

pub use db::{MYSQL_URL_ENV, TestDb, backends, each_backend};
pub use events::{identify, object, track};
pub use sink::{Received, Reply, Sink};
pub use wait::eventually;
