# Devices tests (tests/devices_*.rs): a socat serial pair for Modbus RTU, and the
# pymodbus SunSpec peer (tests/peers/sunspec_sim.py) with pysunspec2's model definitions.
apt_need socat
pip_need "pymodbus==3.16.1" "pyserial==3.5" "pysunspec2==1.3.7"
# tests/devices_powerwall.rs: the scripted Powerwall gateway (tests/peers/powerwall_gw.py,
# Python standard library only) makes its certificate with the openssl CLI.
apt_need openssl
