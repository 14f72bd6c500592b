//! The 2030.5 / CSIP-AUS event scheduler as a pure function of programs, controls,
//! time, a seeded RNG and the previous state.
