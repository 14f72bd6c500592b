//! Site coordinator core: limit merging (CSIP-AUS, fixed, tariff, price) with
//! provenance, the closed-loop control law, ramps and fail-safe. Pure: time is an
//! argument. The one IO edge is `price::fetch_feed_in_price` (a blocking HTTP GET).
//!
//! - [`tz`]: POSIX TZ strings (`/etc/TZ`) and UTC → local time.
//! - [`limits`]: per-mode merge, most restrictive wins, with source and end time.
//! - [`price`]: retailer feed-in price (Amber-style API), last-known-price tracker.
//! - [`ramp`]: setGradW / rampTms, rises only.
//! - [`law`]: the controller (`Controller::step(now_ms, &limits, &readings)`).
//! - [`step`]: the coordinator's whole decision per cycle (`step(&mut State, Inputs,
//!   now) -> Outputs`): merge, law, commands, status view, telemetry, transitions.

pub mod law;
pub mod limits;
pub mod price;
pub mod ramp;
pub mod step;
pub mod tz;

// Against the simulated site physics (`crate::sim`, the `lab` feature).
#[cfg(all(test, feature = "lab"))]
mod closed_loop_tests;

pub use law::{
    Controller, ControllerParams, InverterParams, InverterSetpoint, PowerSample, Readings, Reason,
    Setpoints,
};
pub use limits::{
    FailSafeCause, FallbackCause, FixedLimits, InverterSettings, Limit, LimitMode, LimitSource,
    MergeInputs, MergedLimits, PriceRule, Setting, Sourced, TariffWindow, UtilityControls,
    fallback_export_limit, merge,
};
pub use price::{
    FeedInPrice, PriceError, PriceErrorKind, PriceSourceConfig, PriceTracker, fetch_feed_in_price,
};
pub use ramp::Ramp;
pub use step::{Command, DeviceInput, Inputs, Outputs, State, StatusView, Transition, step};
pub use tz::PosixTz;
