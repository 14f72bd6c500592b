//! csipd: a CSIP-AUS (IEEE 2030.5, Australian profile) gateway for OpenWrt routers.
//!
//! The module map follows `DESIGN.md`: pure cores (`config`, `sep2`, `schedule`,
//! `control`, SunSpec decoding in `devices`, `sim`) take time as an argument and do no
//! IO; `http`, `csip`, `store`, `status` and `runtime` are the edges.

pub mod clock;
pub mod config;
pub mod control;
pub mod csip;
pub mod devices;
pub mod http;
pub mod logging;
pub mod mqtt;
pub mod pki;
pub mod runtime;
pub mod schedule;
pub mod sep2;
#[cfg(feature = "lab")]
pub mod sim;
pub mod status;
pub mod store;

/// The version string printed by `csipd version` and reported in the status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
