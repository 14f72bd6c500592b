//! Site coordinator core: limit merging (CSIP-AUS, fixed, tariff, price) with
//! provenance, the closed-loop control law, ramps and fail-safe. Pure: time is an argument.
