//! Modbus transports (TCP and RTU) and SunSpec device drivers. Register decoding is
//! pure; the transports are the IO edge.
