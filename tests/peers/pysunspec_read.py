#!/usr/bin/env python3
"""Reads a SunSpec device with pysunspec2's own Modbus TCP client (a foreign reader for
csipd's simulator), optionally writes model 123 WMaxLimPct, and prints what it decoded as
one JSON object. Usage: pysunspec_read.py PORT UNIT [LIMIT_PCT]"""

import json
import sys

import sunspec2.modbus.client as client


def main():
    port, unit = int(sys.argv[1]), int(sys.argv[2])
    d = client.SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=2)
    d.scan()
    out = {"models": sorted(k for k in d.models if isinstance(k, int))}
    common = d.models["common"][0]
    out["Mn"] = common.Mn.value
    if 103 in d.models:
        inv = d.models[103][0]
        out["W"] = inv.W.cvalue
        out["Hz"] = inv.Hz.cvalue
        out["VAr"] = inv.VAr.cvalue
    if 203 in d.models:
        out["meter_W"] = d.models[203][0].W.cvalue
    if len(sys.argv) > 3 and 123 in d.models:
        ctl = d.models[123][0]
        ctl.WMaxLimPct.cvalue = float(sys.argv[3])
        ctl.WMaxLim_Ena.value = 1
        ctl.write()
        ctl.read()
        out["WMaxLimPct"] = ctl.WMaxLimPct.cvalue
    d.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
