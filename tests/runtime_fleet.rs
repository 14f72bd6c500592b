//! `csipd fleet` as a process against `csipd demo --utility-only` on loopback: 20
//! devices, each with a certificate issued from the utility's lab CA (`--pki-dir`),
//! run until every one has posted a meter reading (`--until-reporting`, a generous
//! limit: the machine may be loaded). Checked from both ends: the fleet's JSON report
//! (every device connected, discovered, registered, reporting, one keep-alive TLS
//! connection each, no errors) and the simulated utility's own record of what it
//! received (a record per LFDI with its EndDevice read, DER PUTs, ConnectionPoint,
//! readings and responses, nothing refused).

mod runtime_common;

use runtime_common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const N: usize = 20;

/// GET the simulated utility's report (no client certificate, the lab CA as trust).
fn sim_report(report_url: &str, ca: &str) -> serde_json::Value {
    let (origin, path) = csipd::http::split_url(report_url).expect("report URL");
    let mut config = csipd::http::ClientConfig::new(&origin);
    config.ca_bundle = Some(ca.into());
    let mut client = csipd::http::Client::new(config).expect("client");
    let r = smol::block_on(client.get(&path)).unwrap_or_else(|e| panic!("GET {report_url}: {e}"));
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("report is JSON")
}

#[test]
fn twenty_devices_discover_register_and_post_readings_to_the_simulated_utility() {
    let dir = temp_dir("fleet");
    let pki = dir.join("pki");
    let pki_arg = pki.to_string_lossy().into_owned();
    let mut utility = spawn(&[
        "demo",
        "--utility-only",
        "--pki-dir",
        &pki_arg,
        "--seconds",
        "600",
    ]);
    let dcap = utility.stdout_line("dcap: ", Duration::from_secs(60));
    let ca = utility.stdout_line("ca: ", Duration::from_secs(5));
    let ca_key = utility
        .stdout_line("ca key: ", Duration::from_secs(5))
        .split(' ')
        .next()
        .expect("path")
        .to_string();
    let report_url = utility
        .stdout_line("report: ", Duration::from_secs(5))
        .split(' ')
        .next()
        .expect("url")
        .to_string();
    assert!(std::path::Path::new(&ca_key).is_file(), "{ca_key}");

    let fleet_report = dir.join("fleet.json");
    let out = std::process::Command::new(BIN)
        .args([
            "fleet",
            "--devices",
            &N.to_string(),
            "--dcap",
            &dcap,
            "--ca-cert",
            &ca,
            "--ca-key",
            &ca_key,
            "--ramp-s",
            "5",
            "--summary-s",
            "5",
            "--until-reporting",
            // The limit, not the expected time: readings go out on the utility's 20 s
            // postRate boundaries, so this takes about 30 s on an idle machine.
            "--seconds",
            "300",
            "--report",
            &fleet_report.to_string_lossy(),
        ])
        .output()
        .expect("csipd fleet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "fleet: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("fleet ") && l.contains("req/s")),
        "a live summary line: {stdout}"
    );

    // The fleet's own report.
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fleet_report).expect("report written"))
            .expect("report is JSON");
    for key in [
        "started",
        "connected",
        "discovered",
        "registered",
        "reporting",
    ] {
        assert_eq!(r[key], N, "{key}: {r:#}");
    }
    assert_eq!(r["errors"], serde_json::json!({}), "{r:#}");
    assert!(r["latency_p50_ms"].as_f64().is_some_and(|v| v > 0.0));
    assert!(r["latency_p99_ms"].as_f64() >= r["latency_p50_ms"].as_f64());
    assert!(r["requests_per_s"].as_f64().is_some_and(|v| v > 0.0));
    assert!(r["rss_per_device_kib"].as_f64().is_some_and(|v| v > 0.0));
    assert!(r["cpu_s"].as_f64().is_some_and(|v| v > 0.0));
    let devices = r["per_device"].as_array().expect("per_device");
    assert_eq!(devices.len(), N);
    let mut fleet_lfdis = BTreeMap::new();
    for d in devices {
        // Connection reuse: one keep-alive TLS connection carried all its requests.
        assert_eq!(d["tls_connections"], 1, "{d:#}");
        assert!(d["requests"].as_u64().is_some_and(|n| n >= 10), "{d:#}");
        assert!(
            d["readings_posted"].as_u64().is_some_and(|n| n >= 1),
            "{d:#}"
        );
        fleet_lfdis.insert(d["lfdi"].as_str().expect("lfdi").to_string(), d.clone());
    }
    assert_eq!(fleet_lfdis.len(), N, "every device its own LFDI");

    // What the utility received, by LFDI.
    let u = sim_report(&report_url, &ca);
    assert_eq!(u["forbidden"], 0, "{u:#}");
    assert_eq!(u["rejected"].as_array().map(Vec::len), Some(0), "{u:#}");
    assert_eq!(u["duplicate_responses"], 0);
    let records = u["devices"].as_array().expect("devices");
    // The pre-registered lab device (never connected here) and the fleet.
    assert_eq!(records.len(), N + 1, "{u:#}");
    let mut seen = 0;
    for rec in records {
        let lfdi = rec["lfdi"].as_str().expect("lfdi");
        let Some(fleet_side) = fleet_lfdis.get(lfdi) else {
            assert_eq!(rec["registered_by"], "lab");
            continue;
        };
        seen += 1;
        assert_eq!(rec["registered_by"], "certificate");
        assert!(rec["end_device_reads"].as_u64() >= Some(1), "{rec:#}");
        assert!(rec["der_control_list_reads"].as_u64() >= Some(1), "{rec:#}");
        assert!(rec["der_puts"].as_u64() >= Some(4), "DER reports: {rec:#}");
        assert!(rec["connection_point_id"].is_string(), "{rec:#}");
        assert_eq!(rec["usage_points"], 2, "site and DER: {rec:#}");
        assert!(rec["readings_accepted"].as_u64() >= Some(1), "{rec:#}");
        // Both ends count the same accepted reading posts (the report is read after
        // the fleet stopped).
        assert!(
            rec["reading_posts"].as_u64() >= fleet_side["readings_posted"].as_u64(),
            "{rec:#} vs {fleet_side:#}"
        );
        // The server saw what the device sent (plus at most the one in flight when
        // the fleet stopped).
        let (got, sent) = (rec["requests"].as_u64(), fleet_side["requests"].as_u64());
        assert!(got >= sent && got <= sent.map(|n| n + 1), "{rec:#}");
    }
    assert_eq!(seen, N);
    let _ = utility.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}
