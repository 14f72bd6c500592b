# MQTT: tests/mqtt_*.rs start a real mosquitto broker on a free loopback port with their
# own configuration file, and read what csipd publishes with mosquitto_sub.
apt_need mosquitto mosquitto-clients
