//! Wires the tasks together on one smol `LocalExecutor`; the only module that knows
//! all the others.
