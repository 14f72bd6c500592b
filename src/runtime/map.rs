//! The wiring left between modules: what the engine and the durable store hand the
//! coordinator. Everything else is owned by the module named for it (config's fixed
//! limits, tariff windows and device roles; control's limit modes and sources, which
//! the status uses as they are).

use crate::config::Config;
use crate::control::{self, UtilityControls};
use crate::schedule;

/// The scheduler's active controls as control's utility input (see
/// [`UtilityControls::from_schedule`]); kept for `runtime::engine` and
/// `runtime::durable`, which call it.
pub fn utility_controls(
    active: &schedule::ActiveControls,
    ramp: schedule::Ramp,
) -> UtilityControls {
    UtilityControls::from_schedule(active, ramp)
}

/// Where to fetch the price from, when enabled and complete (config validation
/// requires site id and token when enabled); `None` also when the price is the
/// utility's (`utility_price_export`: the engine hands it over, nothing is fetched).
pub fn price_source(c: &Config) -> Option<control::PriceSourceConfig> {
    if !c.price.enabled || c.price.utility_price_export {
        return None;
    }
    Some(control::PriceSourceConfig {
        base_url: c.price.url.clone(),
        site_id: c.price.site_id.clone()?,
        token: c.price.token.clone()?,
        timeout_s: 20,
    })
}
