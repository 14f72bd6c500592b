//! Simulated site and SunSpec device simulator for the demo and tests.

pub mod site;
pub mod sunspec_server;
pub mod utility;
