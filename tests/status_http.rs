//! The status server over real HTTP on loopback: /status JSON shape, /metrics parsed as
//! Prometheus text, /events, errors, and `csipd status` run as a process against it.

mod status_common;

use csipd::status::{Snapshot, client, start_server};
use serde_json::Value;
use status_common::*;
use std::collections::{HashMap, HashSet};
use std::process::Command;

fn get_with_headers(url: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().expect("GET works");
    let code = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.body_mut().read_to_string().expect("body");
    (code, content_type, body)
}

#[test]
fn status_json_has_the_documented_shape() {
    let (server, handle) = start_sample_server();
    let asked_at = now_unix_s();
    let (code, content_type, body) = get_with_headers(&format!("{}/status", server.url()));
    let answered_at = now_unix_s();
    assert_eq!(code, 200);
    assert_eq!(content_type, "application/json");
    let v: Value = serde_json::from_str(&body).expect("/status is JSON");

    assert_eq!(v["version"], csipd::VERSION);
    let now = v["now_unix_s"].as_i64().expect("now_unix_s is an integer");
    // Read while answering: between the test's clock before and after the request
    // (however long a loaded machine took in between).
    assert!(
        (asked_at..=answered_at).contains(&now),
        "now_unix_s {now} is the server clock at the request ({asked_at}..={answered_at})"
    );
    let u = &v["utility"];
    assert_eq!(u["state"], "polling");
    assert!(u["since_unix_s"].is_i64());
    assert_eq!(u["lfdi"], LFDI);
    assert_eq!(u["sfdi"].as_u64(), Some(SFDI));
    assert_eq!(u["clock_offset_s"].as_f64(), Some(0.4));
    assert!(u["registration_problem"].is_null());
    assert_eq!(u["resources"][0]["name"], "DERControlList");
    assert!(u["resources"][0]["next_poll_unix_s"].is_i64());
    assert_eq!(u["resources"][0]["last_error"], "HTTP 503 from server");

    let export = &v["limits"][0];
    assert_eq!(export["mode"], "export");
    assert_eq!(export["value_w"].as_f64(), Some(1500.0));
    assert_eq!(export["source"]["kind"], "utility_event");
    assert_eq!(export["source"]["mrid"], MRID);
    assert!(export["end_unix_s"].is_i64());
    assert_eq!(v["limits"][1]["source"]["kind"], "program_default");
    assert_eq!(v["limits"][2]["source"]["kind"], "fixed");
    assert_eq!(v["upcoming_events"][0]["limits"][0]["mode"], "export");

    let site = &v["site"];
    assert_eq!(site["site_w"].as_f64(), Some(-1480.0));
    assert_eq!(site["export_w"].as_f64(), Some(1480.0));
    assert_eq!(site["pv_w"].as_f64(), Some(4230.0));
    assert_eq!(site["load_w"].as_f64(), Some(2750.0));

    let inverter = &v["devices"][1];
    assert_eq!(inverter["name"], "fronius_1");
    assert_eq!(inverter["role"], "inverter");
    assert_eq!(inverter["stale"], true);
    for key in ["w", "var", "v", "hz"] {
        assert!(inverter["readings"][key].is_number(), "readings.{key}");
    }
    assert_eq!(inverter["stats"]["reads_failed"].as_u64(), Some(7));
    assert_eq!(v["setpoints"][0]["device"], "fronius_1");
    assert_eq!(v["setpoints"][0]["limit_w"].as_f64(), Some(4321.0));
    assert_eq!(v["last_errors"][0]["source"], "csip");

    let history = &v["history"];
    assert_eq!(history["interval_s"], 10);
    let points = history["points"]
        .as_array()
        .expect("history.points is a list");
    assert_eq!(points.len(), 361, "an hour at one point per 10 s");
    assert!(points[0]["export_w"].is_number() && points[0]["export_limit_w"].is_number());

    // The JSON is the Snapshot type, so `csipd status` can read it back losslessly.
    let mut parsed: Snapshot = serde_json::from_str(&body).expect("/status parses as Snapshot");
    parsed.now_unix_s = handle.get().now_unix_s;
    // The summary line is made when the snapshot is served.
    assert!(
        parsed
            .summary
            .starts_with("Export limited to 1500 W by your network operator until "),
        "{}",
        parsed.summary
    );
    parsed.summary.clear();
    assert_eq!(parsed, handle.get());

    // Updates through the handle are visible on the next request.
    handle.update(|s| s.limits[0].value_w = Some(0.0));
    let v = client::get_json(&server.url(), "/status").unwrap();
    assert_eq!(v["limits"][0]["value_w"].as_f64(), Some(0.0));
}

/// One sample line of the Prometheus text format: name, labels, value.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value in sample line: {line}"));
    let name = &line[..name_end];
    assert!(
        name.chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic()
                || c == '_'
                || c == ':'
                || (i > 0 && c.is_ascii_digit())),
        "bad metric name {name:?}"
    );
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut end = None;
        loop {
            let start = match chars.peek() {
                Some((_, '}')) => {
                    end = Some(chars.next().unwrap().0);
                    break;
                }
                Some((i, _)) => *i,
                None => break,
            };
            let eq = after[start..].find('=').expect("label has =") + start;
            let key = &after[start..eq];
            assert!(
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad label name {key:?} in {line}"
            );
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            assert_eq!(
                chars.next().map(|(_, c)| c),
                Some('"'),
                "label value quoted: {line}"
            );
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?} in {line}"),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line}"),
                }
            }
            labels.push((key.to_string(), value));
            if let Some((_, ',')) = chars.peek() {
                chars.next();
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated label set in {line}"));
        rest = &after[end + 1..];
    }
    let value_text = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("one space before the value: {line}"));
    let value = match value_text {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        t => t
            .parse()
            .unwrap_or_else(|_| panic!("value {t:?} is not a number in {line}")),
    };
    (name.to_string(), labels, value)
}

#[test]
fn metrics_are_valid_prometheus_text() {
    let (server, _handle) = start_sample_server();
    let (code, content_type, body) = get_with_headers(&format!("{}/metrics", server.url()));
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(body.ends_with('\n'));

    let mut help = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples: HashMap<(String, Vec<(String, String)>), f64> = HashMap::new();
    for line in body.lines() {
        assert!(!line.is_empty(), "no blank lines");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP has a text");
            assert!(!text.is_empty());
            assert!(help.insert(name.to_string()), "one HELP per family: {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(help.contains(name), "HELP before TYPE for {name}");
            assert!(["gauge", "counter"].contains(&kind), "{kind}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none());
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line}");
            let (name, labels, value) = parse_sample(line);
            let kind = types
                .get(&name)
                .unwrap_or_else(|| panic!("sample {name} before its TYPE line"));
            assert!(name.starts_with("csipd_"), "{name} has the csipd_ prefix");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} ends in _total");
            }
            let unit_ok = ["_watts", "_seconds", "_vars", "_volts", "_hertz", "_total"]
                .iter()
                .any(|u| name.ends_with(u))
                || [
                    "csipd_info",
                    "csipd_utility_state",
                    "csipd_registration_problem",
                ]
                .contains(&name.as_str())
                || name.ends_with("_stale")
                || name.ends_with("_error")
                || name.ends_with("_connect")
                || name.ends_with("_events")
                || name.ends_with("_errors");
            assert!(unit_ok, "{name} names its unit or is a count/flag");
            assert!(
                samples.insert((name.clone(), labels), value).is_none(),
                "duplicate sample {line}"
            );
        }
    }

    let get = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let key = (
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        );
        *samples
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{body}"))
    };
    assert_eq!(get("csipd_info", &[("version", csipd::VERSION)]), 1.0);
    assert_eq!(get("csipd_utility_state", &[("state", "polling")]), 1.0);
    assert_eq!(get("csipd_utility_state", &[("state", "offline")]), 0.0);
    assert_eq!(get("csipd_clock_offset_seconds", &[]), 0.4);
    assert_eq!(
        get(
            "csipd_limit_watts",
            &[("mode", "export"), ("source", "utility_event")]
        ),
        1500.0
    );
    assert_eq!(
        get(
            "csipd_limit_watts",
            &[("mode", "import"), ("source", "program_default")]
        ),
        10000.0
    );
    assert_eq!(get("csipd_site_import_watts", &[]), -1480.0);
    assert_eq!(get("csipd_site_export_watts", &[]), 1480.0);
    assert_eq!(get("csipd_pv_watts", &[]), 4230.0);
    assert_eq!(
        get(
            "csipd_device_stale",
            &[("device", "fronius_1"), ("role", "inverter")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "csipd_device_voltage_volts",
            &[("device", "meter_main"), ("role", "meter")]
        ),
        241.3
    );
    assert_eq!(
        get(
            "csipd_device_modbus_reads_total",
            &[("device", "fronius_1"), ("result", "failed")]
        ),
        7.0
    );
    assert_eq!(
        get("csipd_setpoint_limit_watts", &[("device", "fronius_1")]),
        4321.0
    );
    assert_eq!(
        get("csipd_resource_error", &[("resource", "DERControlList")]),
        1.0
    );
}

#[test]
fn events_and_unknown_paths() {
    let (server, _handle) = start_sample_server();
    let v = client::get_json(&server.url(), "/events").unwrap();
    let events = v["events"].as_array().expect("events is a list");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["level"], "warn");
    assert!(events[1]["message"].as_str().unwrap().contains("HTTP 503"));

    let (code, _, body) = get_with_headers(&format!("{}/nothing", server.url()));
    assert_eq!(code, 404);
    assert!(body.contains("/status"), "404 names the real pages: {body}");
    let (code, content_type, body) = get_with_headers(&server.url());
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/html"));
    assert!(
        !body.contains("src=\"http") && !body.contains("href=\"http"),
        "no external assets"
    );
}

#[test]
fn non_loopback_listen_is_refused_without_the_allow_flag() {
    let handle = csipd::status::SnapshotHandle::new(Snapshot::new(0));
    let err = start_server("0.0.0.0:0", false, handle.clone())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not loopback"), "{err}");
    let err = start_server("127.0.0.1:notaport", false, handle)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("must be IP:port"), "{err}");
}

#[test]
fn csipd_status_prints_the_summary_and_json() {
    let made_at = now_unix_s();
    let (server, _handle) = start_sample_server();
    let out = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["status", "--url", &server.url()])
        .output()
        .expect("csipd runs");
    let shown_at = now_unix_s();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("export limit"))
        .unwrap_or_else(|| panic!("no export limit line in\n{stdout}"));
    assert!(
        line.starts_with("  export limit 1500 W — utility event 3f2a09b1…, until "),
        "{line}"
    );
    // The event ends 12 minutes after the snapshot was made; the countdown is in whole
    // minutes as the CLI saw it, however long the machine took to run it.
    let minutes: i64 = line
        .rsplit_once("(in ")
        .and_then(|(_, m)| m.strip_suffix(" min)"))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no countdown in {line}"));
    let late_min = (shown_at - made_at + 59) / 60;
    assert!(
        (11 - late_min..=12).contains(&minutes),
        "{line} ({} s after the snapshot)",
        shown_at - made_at
    );
    for expected in [
        "utility     polling since",
        LFDI,
        "import limit 10000 W — program default (SAPN dynamic)",
        "generation limit 8000 W — fixed limit",
        "export 0 W (event a1b2c3d4…, starts in",
        "export 1480 W",
        "fronius_1",
        "STALE",
        "limit 4321 W (86.4 %)",
        "DERControlList",
        "csip: GET /derp/0/derc: HTTP 503 from server",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }

    // --json, with the URL from the environment this time.
    let out = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["status", "--json"])
        .env("CSIPD_STATUS_URL", server.url())
        .output()
        .expect("csipd runs");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["utility"]["lfdi"], LFDI);

    // No daemon: a clear error and exit 1.
    let url = server.url();
    drop(server);
    let out = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["status", "--url", &url])
        .output()
        .expect("csipd runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the csipd status server"),
        "{stderr}"
    );
    // One line: the URL once, from --url, what failed and what to check.
    assert_eq!(
        stderr.trim_end(),
        format!(
            "csipd status: cannot reach the csipd status server at {url}/status (from \
             --url): connection refused; is csipd running (/etc/init.d/csipd status; \
             logread -e csipd)? If it is, compare the port with its option status_listen."
        )
    );
    // Not a URL at all: said so, with the form expected.
    let out = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["status", "--url", "127.0.0.1:8080"])
        .output()
        .expect("csipd runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'127.0.0.1:8080' (from --url) is not a status server URL")
            && stderr.contains("expected http://HOST:PORT"),
        "{stderr}"
    );
}
