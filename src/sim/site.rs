//! Simulated site physics (PV, load, inverter lag): a pure model stepped with time as an
//! argument.
