//! A SunSpec device simulator served over Modbus TCP (the demo's inverter and meter).
