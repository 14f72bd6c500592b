#!/usr/bin/env python3
"""A scripted Tesla Powerwall 2 / Backup Gateway 2 local API for csipd's tests (no
installable peer exists): HTTPS on 127.0.0.1 with a self-signed P-256 certificate made
at start, answering as the gateway does:
  POST /api/login/Basic  {"username":"customer","password":...} -> {"token": ...}; 401 on
                         a wrong password
  GET  /api/meters/aggregates  -> {"site": {...}, "load": {...}, ...}; 401 without a
                         valid token (Authorization: Bearer or Cookie AuthCookie)
  GET  /api/meters/site  -> [{"Cached_readings": {per-phase values}}]
The test steers it through --state FILE (JSON, re-read on every request):
  {"site_w": -3000, "session": 1}: site power (W, import positive); bumping "session"
  ends every session so far (the next GET answers 401, as an expired login does).
Every request is appended to --log as a JSON line {"method", "path", "status"}.
Prints "READY <port> <sha256 fingerprint>" when serving.
"""

import argparse
import hashlib
import http.server
import json
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading

tokens = {}  # token -> session generation
lock = threading.Lock()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--password", required=True)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pwgw-")
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=teg", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    fingerprint = hashlib.sha256(der).hexdigest().upper()

    def state():
        with open(args.state) as f:
            return json.load(f)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a):
            pass

        def answer(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            with lock, open(args.log, "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path,
                                    "status": status}) + "\n")

        def session_ok(self):
            token = None
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                token = auth[7:]
            for part in self.headers.get("Cookie", "").split(";"):
                k, _, v = part.strip().partition("=")
                if k == "AuthCookie":
                    token = token or v
            with lock:
                return token in tokens and tokens[token] == state().get("session", 1)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(n) or b"{}")
            if self.path != "/api/login/Basic":
                return self.answer(404, {"code": 404, "error": "not found"})
            if body.get("username") != "customer" or body.get("password") != args.password:
                return self.answer(401, {"code": 401, "error": "bad credentials",
                                         "message": "Login Error"})
            token = secrets.token_urlsafe(24)
            with lock:
                tokens[token] = state().get("session", 1)
            self.answer(200, {"email": "", "firstname": "Tesla", "lastname": "Energy",
                              "roles": ["Home_Owner"], "token": token,
                              "provider": "Basic", "loginTime": "2026-11-30T10:00:00+10:00"})

        def do_GET(self):
            if not self.session_ok():
                return self.answer(401, {"code": 401, "error": "bad credentials",
                                         "message": "Login Error"})
            st = state()
            w = float(st.get("site_w", 0))
            if self.path == "/api/meters/aggregates":
                site = {"last_communication_time": "2026-11-30T10:00:00+10:00",
                        "instant_power": w, "instant_reactive_power": 85.0,
                        "instant_apparent_power": abs(w) + 5, "frequency": 50.02,
                        "energy_exported": 1234567.0, "energy_imported": 765432.0,
                        "instant_average_voltage": 240.4, "instant_total_current": 0,
                        "i_a_current": 0, "i_b_current": 0, "i_c_current": 0,
                        "timeout": 1500000000}
                return self.answer(200, {"site": site,
                                         "battery": {"instant_power": 0.0},
                                         "load": {"instant_power": 1500.0},
                                         "solar": {"instant_power": 1500.0 - w}})
            if self.path == "/api/meters/site":
                third = w / 3
                return self.answer(200, [{"id": 0, "location": "site", "type": "synchrometerX",
                                          "Cached_readings": {
                                              "v_l1n": 240.1, "v_l2n": 240.4, "v_l3n": 240.7,
                                              "real_power_a": third, "real_power_b": third,
                                              "real_power_c": third,
                                              "reactive_power_a": 28.0, "reactive_power_b": 28.0,
                                              "reactive_power_c": 29.0}}])
            self.answer(404, {"code": 404, "error": "not found"})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"READY {server.server_address[1]} {fingerprint}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
