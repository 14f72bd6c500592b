# Devices tests (tests/devices_*.rs): a socat serial pair for Modbus RTU, and the
# pymodbus SunSpec peer (tests/peers/sunspec_sim.py) with pysunspec2's model definitions.
apt_need socat
pip_need "pymodbus==3.16.1" "pyserial==3.5" "pysunspec2==1.3.7"
