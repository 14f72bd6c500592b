//! Status: the snapshot the runtime keeps up to date, and everything that shows it — the
//! HTTP server (`/status` JSON, `/metrics` Prometheus text, `/events`, the built-in page
//! `/`), `csipd status`, and the rpcd plugin behind `ubus call csipd …` that LuCI uses.
//!
//! The runtime owns a [`SnapshotHandle`], changes it with [`SnapshotHandle::update`] and
//! starts the server with [`start_server`]; the server thread only reads clones.

pub mod cli;
pub mod client;
pub mod metrics;
pub mod onboarding;
pub mod render;
pub mod rpcd;
pub mod server;
pub mod snapshot;
pub mod summary;
pub mod validate;

pub use server::{
    DEFAULT_LISTEN, ServerError, StatusServer, start as start_server, start_from_config,
};
pub use snapshot::*;
