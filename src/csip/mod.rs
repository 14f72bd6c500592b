//! The CSIP-AUS client engine: discovery, registration, polling, DER reports,
//! metering mirror, responses. One file per 2030.5 function set.

pub mod averaging;
pub mod poller;
