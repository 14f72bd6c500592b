#!/usr/bin/env python3
"""SunSpec test peer for csipd's device tests: a pymodbus server (TCP or RTU) whose
holding registers are laid out from the model definitions shipped in pysunspec2
(sunspec2/models/json/model_<id>.json), so the register map is not ours.

Config (JSON file, --config):
  {"devices": [{"unit": 1, "base": 40000,
                "models": [{"id": 103, "values": {"W": 5000, "W_SF": 0, ...}}, ...]}]}
Values are raw register values as the model defines them (integers before scale
factor, floats for float32 points, strings for string points). Points not given are
"not implemented" (0x8000, 0xFFFF, 0x80000000, NaN, ...) as the SunSpec spec says.

The field-input format (`/work/shared/field-inputs/README.md`, copied to
tests/fixtures/field-inputs/) is accepted too: a device with "blocks" instead of "models",
each {"model": N, "values": {...}, "L": optional length} or {"raw": [words]}, points not
given are 0 (strings empty; "fill": "unimplemented" on the device makes them "not
implemented" instead), and "end": false leaves out the end marker so that every
register after the last block is unreadable (Modbus exception 2).

A 7xx curve model (705 volt-var, 706 volt-watt, ...) adopts a curve when AdptCrvReq is
written, as an inverter does (see adopt_curve); "adopt": "fail" on the device makes it
refuse every curve, "adopt": "slow" answers IN_PROGRESS to the first reads after the
request.

Every write request is appended as one JSON line to --write-log (if given), so a test
can see exactly which registers csipd wrote. Prints "READY <port-or-path>" when serving.
"""

import argparse
import asyncio
import json
import os
import struct
import sys

import sunspec2
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

MODELS_DIR = os.path.join(os.path.dirname(sunspec2.__file__), "models", "json")

# Register values meaning "not implemented", per SunSpec point type.
UNIMPL = {
    "int16": [0x8000],
    "sunssf": [0x8000],
    "pad": [0x8000],
    "uint16": [0xFFFF],
    "enum16": [0xFFFF],
    "bitfield16": [0xFFFF],
    "count": [0],
    "acc16": [0],
    "int32": [0x8000, 0x0000],
    "uint32": [0xFFFF, 0xFFFF],
    "enum32": [0xFFFF, 0xFFFF],
    "bitfield32": [0xFFFF, 0xFFFF],
    "acc32": [0, 0],
    "int64": [0x8000, 0, 0, 0],
    "uint64": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF],
    "acc64": [0, 0, 0, 0],
    "float32": [0x7FC0, 0x0000],
}


def load_model(model_id):
    with open(os.path.join(MODELS_DIR, f"model_{model_id}.json"), encoding="utf-8") as f:
        return json.load(f)


def encode(point, value):
    """Register words for one point value."""
    ptype = point["type"]
    size = int(point.get("size", 1))
    if ptype == "string":
        raw = str(value).encode("utf-8")[: size * 2].ljust(size * 2, b"\0")
        return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, size * 2, 2)]
    if ptype == "float32":
        return list(struct.unpack(">HH", struct.pack(">f", float(value))))
    value = int(value)
    if ptype in ("int16", "sunssf", "int32", "int64"):
        value &= (1 << (16 * size)) - 1
    raw = value.to_bytes(size * 2, "big")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, size * 2, 2)]


def layout_group(group, values, prefix="", zero_fill=False):
    words = []
    for point in group.get("points", []):
        name = prefix + point["name"]
        size = int(point.get("size", 1))
        if name in values:
            w = encode(point, values[name])
        elif "value" in point and point["name"] not in ("L",):
            w = encode(point, point["value"])
        elif point["type"] == "string" or zero_fill:
            w = [0] * size
        else:
            w = list(UNIMPL.get(point["type"], [0] * size))
        if len(w) != size:
            raise SystemExit(f"sunspec_sim: point {name}: {len(w)} words, model says {size}")
        words.extend(w)
    for sub in group.get("groups", []):
        count = sub.get("count", 1)
        if not isinstance(count, int):
            # A count point of the enclosing group (126's NCrv) or of the model (705's
            # Crv[i].Pt counted by the top-level NPt).
            count = int(values.get(prefix + str(count), values.get(str(count), 1)))
        elif count == 0:
            # Repeats to the end of the model (e.g. 160's modules): as many as given.
            head = f"{prefix}{sub['name']}["
            given = [int(k[len(head):].split("]")[0]) for k in values if k.startswith(head)]
            count = max(given) + 1 if given else 0
        for i in range(count):
            words.extend(layout_group(sub, values, f"{prefix}{sub['name']}[{i}].", zero_fill))
    return words


def layout_model(model_id, values, zero_fill=False, length=None):
    words = layout_group(load_model(model_id)["group"], values, zero_fill=zero_fill)
    words[0] = model_id
    if length is not None:
        # The device's own L: padded with zeros (or cut) to that many registers.
        body = words[2 : 2 + int(length)]
        words = words[:2] + body + [0] * (int(length) - len(body))
    words[1] = len(words) - 2  # L: model length without ID and L
    return words


def layout_device(dev):
    words = [0x5375, 0x6E53]  # "SunS"
    if "blocks" in dev:
        zero_fill = dev.get("fill", "zero") == "zero"
        for b in dev["blocks"]:
            if "raw" in b:
                words.extend(int(w) & 0xFFFF for w in b["raw"])
            else:
                words.extend(layout_model(int(b["model"]), b.get("values", {}),
                                          zero_fill=zero_fill, length=b.get("L")))
        if dev.get("end", True):
            words.extend([0xFFFF, 0x0000])
        return words
    for m in dev["models"]:
        words.extend(layout_model(int(m["id"]), m.get("values", {})))
    words.extend([0xFFFF, 0x0000])  # end model
    return words


# 7xx curve models: registers of a curve before its points, and where ReadOnly is.
CURVE_7XX = {705: (10, 9), 706: (5, 4), 707: (5, 4), 708: (5, 4), 709: (5, 4),
             710: (5, 4), 712: (5, 4)}


# "adopt": "slow": reads of AdptCrvRslt answered IN_PROGRESS before the adoption is done.
SLOW_READS = 2


def curve_models_7xx(dev, words):
    """(model id, address of its ID register) of each 7xx curve model of a device."""
    found = []
    at = 2
    while at + 1 < len(words) and words[at] != 0xFFFF:
        if words[at] in CURVE_7XX:
            found.append((words[at], int(dev["base"]) + at))
        at += 2 + words[at + 1]
    return found


def adopt_curve(model, start, req, put, reg_at, how):
    """What a 7xx inverter does on AdptCrvReq = req (SunSpec DER models: curve 1 is
    read-only and holds the curve in force): checks stored curve `req` (an index in
    range, ActPt within NPt, voltages increasing) and copies it into curve 1 (all but
    ReadOnly), then AdptCrvRslt = COMPLETED (1); else FAILED (2). `how` "fail" refuses
    every curve (an inverter whose own checks are stricter)."""
    head, read_only = CURVE_7XX[model]
    n_pt, n_crv = reg_at(start + 5), reg_at(start + 6)
    crv_len = head + 2 * n_pt
    first = start + 15

    def curve_ok(i):
        base = first + i * crv_len
        act = reg_at(base)
        volts = [reg_at(base + head + 2 * k) for k in range(act)]
        return 1 <= act <= n_pt and all(a < b for a, b in zip(volts, volts[1:]))

    ok = how != "fail" and 2 <= req <= n_crv and curve_ok(req - 1)
    if ok:
        src = first + (req - 1) * crv_len
        for k in range(crv_len):
            if k != read_only:
                put(first + k, reg_at(src + k))
    put(start + 4, 1 if ok else 2)


def make_devices(config, write_log):
    sim_devices = []
    for dev in config["devices"]:
        words = layout_device(dev)
        unit = int(dev["unit"])
        curves = curve_models_7xx(dev, words) if "models" in dev else []
        how = dev.get("adopt", "check")
        # "slow": an adoption stays IN_PROGRESS for the first SLOW_READS reads of
        # AdptCrvRslt after the request (model start -> [request, reads left]).
        pending = {}

        async def action(fc, start_address, address, count, current, set_values, unit=unit,
                         curves=curves, how=how, pending=pending):
            if set_values is not None and write_log:
                with open(write_log, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"unit": unit, "fc": fc, "address": address,
                                        "values": list(set_values)}) + "\n")

            def reg_at(a):
                return current[a - start_address]

            def put(a, v):
                current[a - start_address] = v

            for model, start in curves:
                if set_values is None:
                    rslt_at = start + 4  # AdptCrvRslt, read
                    if start in pending and address <= rslt_at < address + count:
                        pending[start][1] -= 1
                        if pending[start][1] < 0:
                            adopt_curve(model, start, pending.pop(start)[0], put, reg_at, how)
                    continue
                req_at = start + 3  # AdptCrvReq
                if address <= req_at < address + len(set_values):
                    req = set_values[req_at - address]
                    if how == "slow":
                        put(start + 4, 0)  # IN_PROGRESS
                        pending[start] = [req, SLOW_READS]
                    else:
                        adopt_curve(model, start, req, put, reg_at, how)
                    # The request reads 0 again, as inverters do.
                    set_values[req_at - address] = 0
            return None

        # "extra": register ranges outside the SunSpec map (a vendor's own registers,
        # e.g. SolarEdge's power control block at 0xF300), as {"address", "values"}.
        blocks = [(int(dev["base"]), words)]
        blocks += [(int(e["address"]), [int(v) & 0xFFFF for v in e["values"]])
                   for e in dev.get("extra", [])]
        sim_devices.append(
            SimDevice(
                id=unit,
                simdata=[SimData(address=a, values=w, datatype=DataType.REGISTERS)
                         for a, w in sorted(blocks)],
                action=action,
            )
        )
    return sim_devices


def silence_unknown_units(config):
    """On a real RS-485 line a unit id nobody has gets no answer at all. pymodbus 3.16's
    SimDevice servers answer it with exception 4 instead, so drop those replies here."""
    units = {int(d["unit"]) for d in config["devices"]}

    def trace(sending, data):
        if sending and data and data[0] not in units:
            return b""
        return data

    return trace


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--serial", help="serial device for Modbus RTU (e.g. a socat pty)")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--write-log")
    ap.add_argument("--dump-layout", action="store_true",
                    help="print the register words per device and exit")
    args = ap.parse_args()
    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    if args.dump_layout:
        for dev in config["devices"]:
            print(json.dumps({"unit": dev["unit"], "base": dev["base"],
                              "words": layout_device(dev)}))
        return
    devices = make_devices(config, args.write_log)
    if args.serial:
        server = ModbusSerialServer(devices, port=args.serial, baudrate=args.baud,
                                    bytesize=8, parity="N", stopbits=1,
                                    trace_packet=silence_unknown_units(config))
        where = args.serial
    elif args.port is not None:
        server = ModbusTcpServer(devices, address=("127.0.0.1", args.port))
        where = None
    else:
        raise SystemExit("sunspec_sim: give --port or --serial")
    # READY only once the server listens (a guessed pause races a loaded machine);
    # with --port 0 the line carries the port the system chose.
    await server.serve_forever(background=True)
    if where is None:
        where = str(server.transport.sockets[0].getsockname()[1])
    print(f"READY {where}", flush=True)
    await server.serving


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
