//! `csipd fleet` against the GridAPPS-D IEEE 2030.5 server (a real plain-2030.5 peer
//! from the peers venv): a small fleet, because GridAPPS-D only serves devices listed in
//! its config.yml (it makes each one's certificate at start, under its `tls_repository`)
//! and spends 100-450 ms per request (an `openssl` process per request, HTTP/1.0 with a
//! new TLS connection each time). The fleet reads those identities with `--certs`
//! (GridAPPS-D's `certs/NAME.crt` + `private/NAME.pem` layout; its server certificate,
//! named after its address, is left out) and runs until every device has posted a
//! reading: several minutes, as GridAPPS-D's own postRate decides when. Checked from the fleet's report and from the server's
//! own log of what it was sent.

#[path = "common/gridappsd.rs"]
mod gridappsd;

use gridappsd::{GridappsdDevice, GridappsdOptions, GridappsdServer};

const N: usize = 3;

#[test]
#[ignore = "3-6 minutes (GridAPPS-D states its own postRate); run: cargo test --test fleet_gridappsd -- --ignored"]
fn a_small_fleet_discovers_and_posts_readings_to_gridappsd() {
    let devices = (1..=N)
        .map(|i| {
            let mut d = GridappsdDevice::new(&format!("dev{i}"), 111115);
            d.fsas = vec!["fsa1".into()];
            d.ders = vec![format!("der{i}")];
            d
        })
        .collect();
    let server = GridappsdServer::start(&GridappsdOptions {
        devices,
        ..GridappsdOptions::default()
    });
    let report = server.dir.join("fleet.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args([
            "fleet",
            "--devices",
            &N.to_string(),
            "--dcap",
            &format!("{}/dcap", server.url),
            "--certs",
            &server.dir.join("tls").to_string_lossy(),
            "--ca-cert",
            &server.ca_cert.to_string_lossy(),
            // GridAPPS-D answers 500 to any csipaus element.
            "--plain",
            // It states pollRate 900 everywhere and no postRate.
            "--max-poll-s",
            "30",
            "--post-rate-s",
            "10",
            "--ramp-s",
            "2",
            "--until-reporting",
            // A limit, not the expected time. GridAPPS-D states its own postRate (the
            // fleet's --post-rate-s only applies until a server states one), so the
            // first readings wait for its first complete interval: seen 345 s.
            "--seconds",
            "900",
            "--report",
            &report.to_string_lossy(),
        ])
        .output()
        .expect("csipd fleet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "fleet: {:?}\n{stdout}\n{stderr}\nserver:\n{}",
        out.status,
        server.output().join("\n")
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written"))
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
    let per_device = r["per_device"].as_array().expect("per_device");
    let names: Vec<&str> = per_device
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["dev1", "dev2", "dev3"],
        "the server's device identities"
    );

    // The server's own log: the devices' MirrorUsagePoints were created (201) and
    // readings accepted (204) on at least one per device (GridAPPS-D names them
    // /mup_K, K counting over all devices).
    let log = server.output();
    let created = log
        .iter()
        .filter(|l| l.contains("POST /mup ") && l.contains("201"))
        .count();
    assert!(created >= N, "{}", log.join("\n"));
    let mut with_readings: Vec<&str> = log
        .iter()
        .filter(|l| l.contains("204"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/mup_")))
        .collect();
    with_readings.sort();
    with_readings.dedup();
    assert!(
        with_readings.len() >= N,
        "{with_readings:?}\n{}",
        log.join("\n")
    );
}
