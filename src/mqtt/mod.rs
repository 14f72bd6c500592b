//! MQTT: publishes the limits in force, upcoming events, site flows, device readings and
//! setpoints and the utility connection state to a broker, with Home Assistant
//! discovery, for households running Home Assistant, Node-RED or openHAB.
//!
//! - [`topics`]: the status snapshot as compact JSON topics and the discovery configs
//!   (pure).
//! - [`publisher`]: the sans-IO [`Publisher`] core: MQTT 3.1.1 session (CONNECT with a
//!   last will, keep-alive, QoS 1/2 acknowledgements), what to publish when, reconnect
//!   backoff. Packets are encoded and decoded by the `mqtt-proto` crate.
//! - [`task`]: the socket IO on the daemon's smol executor (TCP, or TLS for `mqtts://`
//!   through `http::tls`).
//!
//! Read-only by design: csipd subscribes to nothing, so nothing on the LAN can change a
//! limit the utility set (README, "MQTT").

pub mod publisher;
pub mod task;
pub mod topics;

pub use publisher::{Event, MqttError, Output, Publisher, Settings};
pub use task::run;
