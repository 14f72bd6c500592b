//! Simulated site (PV, load, inverter lag) and SunSpec device simulator for the demo
//! and tests. Pure models; the Modbus server that exposes them is the IO edge.
