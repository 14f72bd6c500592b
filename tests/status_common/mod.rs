//! A status server fed with a snapshot whose values the tests set, for the status tests.
//! (The integration engineer can switch these tests to a running `csipd demo`.)
#![allow(dead_code)]

use csipd::status::*;
use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

pub const MRID: &str = "3F2A09B1C0FFEE00112233445566778A";
pub const LFDI: &str = "3E4F45AB31EDFE5B67E343E5E4562E31984E23E5";
pub const SFDI: u64 = 167261211391;

pub fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A site exporting 1480 W under a 1500 W utility event limit that ends in 12 minutes.
pub fn sample_snapshot(now: i64) -> Snapshot {
    let mut s = Snapshot::new(now - 3 * 3600);
    s.utility = Utility {
        state: ConnectionState::Polling,
        since_unix_s: now - 2 * 3600,
        server_url: Some("https://sep2.example.net/dcap".into()),
        lfdi: Some(LFDI.into()),
        sfdi: Some(SFDI),
        clock_offset_s: Some(0.4),
        registration_problem: None,
        csipaus_version: Some("v1.3".into()),
        readings_posted: 42,
        readings_pending: 1,
        responses_pending: 0,
        prices: Vec::new(),
        resources: vec![
            ResourcePoll {
                name: "DERControlList".into(),
                href: "/derp/0/derc".into(),
                last_poll_unix_s: Some(now - 20),
                next_poll_unix_s: Some(now + 40),
                next_read: None,
                last_error: Some("HTTP 503 from server".into()),
            },
            // Read with its program list: no poll time of its own.
            ResourcePoll {
                name: "DefaultDERControl".into(),
                href: "/derp/0/dderc".into(),
                last_poll_unix_s: Some(now - 20),
                next_poll_unix_s: None,
                next_read: Some(csipd::csip::NextRead::With("DERProgramList".into())),
                last_error: None,
            },
            ResourcePoll {
                name: "ReadingType".into(),
                href: "/rt/1".into(),
                last_poll_unix_s: Some(now - 300),
                next_poll_unix_s: None,
                next_read: Some(csipd::csip::NextRead::Once),
                last_error: None,
            },
        ],
    };
    s.limits = vec![
        ActiveLimit {
            mode: LimitMode::Export,
            value_w: Some(1500.0),
            connect: None,
            source: LimitSource::UtilityEvent { mrid: MRID.into() },
            end_unix_s: Some(now + 12 * 60),
            unsupported: false,
            not_enforceable: None,
        },
        ActiveLimit {
            mode: LimitMode::Import,
            value_w: Some(10000.0),
            connect: None,
            source: LimitSource::UtilityDefault {
                program: "SAPN dynamic".into(),
            },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        },
        ActiveLimit {
            mode: LimitMode::Generation,
            value_w: Some(8000.0),
            connect: None,
            source: LimitSource::Fixed {
                option: "generation_limit_w".into(),
            },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        },
    ];
    s.upcoming_events = vec![UpcomingEvent {
        mrid: "A1B2C3D4E5F60718293A4B5C6D7E8F90".into(),
        description: Some("evening peak".into()),
        program: Some("SAPN dynamic".into()),
        start_unix_s: now + 12 * 60,
        end_unix_s: now + 42 * 60,
        limits: vec![EventLimit {
            mode: LimitMode::Export,
            value_w: Some(0.0),
            connect: None,
        }],
    }];
    s.push_response(csipd::status::ResponseSent {
        mrid: "3F2A09B1C4D5E6F708192A3B4C5D6E7F".into(),
        status: csipd::schedule::ResponseStatus::Started,
        delivery: "accepted".into(),
        at_unix_s: now - 20,
    });
    s.site = SiteFlows::from_site_and_pv(-1480.0, 4230.0, now - 1);
    s.devices = vec![
        Device {
            name: "meter_main".into(),
            role: DeviceRole::Meter,
            stale: false,
            last_reading_age_s: Some(1.0),
            readings: Readings {
                w: Some(-1480.0),
                var: Some(120.0),
                v: Some(241.3),
                hz: Some(50.01),
            },
            stats: DeviceStats {
                reads_ok: 1200,
                reads_failed: 3,
                ..Default::default()
            },
            read_only: None,
            tls_fingerprint: None,
        },
        Device {
            name: "fronius_1".into(),
            role: DeviceRole::Inverter,
            stale: true,
            last_reading_age_s: Some(42.0),
            readings: Readings {
                w: Some(4230.0),
                var: Some(0.0),
                v: Some(243.0),
                hz: Some(50.0),
            },
            stats: DeviceStats {
                reads_ok: 600,
                reads_failed: 7,
                writes_ok: 55,
                writes_failed: 1,
                last_error: Some("timeout after 1 s reading model 103".into()),
            },
            read_only: None,
            tls_fingerprint: None,
        },
    ];
    s.setpoints = vec![Setpoint {
        charge_limit_w: None,
        device: "fronius_1".into(),
        limit_w: Some(4321.0),
        limit_pct: Some(86.4),
        connect: Some(true),
        written_unix_s: Some(now - 3),
    }];
    s.last_errors = VecDeque::new();
    s.push_error(now - 30, "csip", "GET /derp/0/derc: HTTP 503 from server");
    // An hour of history: export creeping up to the limit, which dropped from 5000 W.
    for i in 0..=360 {
        let t = now - 3600 + i * 10;
        let limit = if i < 180 { 5000.0 } else { 1500.0 };
        let export = if i < 180 {
            2000.0 + i as f64 * 10.0
        } else {
            1480.0
        };
        s.history.record(t, Some(export), Some(limit));
    }
    s
}

/// The utility's prices as the engine shows them: import 0.28 AUD/kWh now and 0.35
/// next; export costing 0.03 AUD/kWh now (a negative feed-in price) and earning 0.05
/// next. Intervals of 30 minutes from `now - 600`.
pub fn sample_prices(now: i64) -> Vec<csipd::csip::pricing::RatePrice> {
    use csipd::csip::pricing::{PriceBlock, PriceDirection, PricePoint, RatePrice};
    let point = |start: i64, price: i64| PricePoint {
        mrid: format!("7B{start:030X}"),
        description: None,
        start_unix_s: start,
        end_unix_s: start + 1800,
        blocks: vec![PriceBlock {
            start_value: 0,
            price,
            price_per_unit: csipd::sep2::types::decimal(price, -4),
        }],
    };
    let rate = |n: u32, direction, now_price: i64, next_price: i64| RatePrice {
        tariff_profile_href: "/tp/1".into(),
        rate_component_href: format!("/tp/1/rc/{n}"),
        description: None,
        primacy: 0,
        direction,
        unit: "kWh".into(),
        currency: Some(36),
        price_power_of_ten_multiplier: -4,
        current: Some(point(now - 600, now_price)),
        next: Some(point(now + 1200, next_price)),
    };
    vec![
        rate(1, PriceDirection::Import, 2800, 3500),
        rate(2, PriceDirection::Export, 300, -500),
    ]
}

/// A status server on a free loopback port serving `sample_snapshot`.
pub fn start_sample_server() -> (StatusServer, SnapshotHandle) {
    let handle = SnapshotHandle::new(sample_snapshot(now_unix_s()));
    handle.log_event(
        now_unix_s() - 60,
        "info",
        "csip",
        "registered as SFDI 167261211391",
    );
    handle.log_event(
        now_unix_s() - 30,
        "warn",
        "csip",
        "DERControlList poll failed: HTTP 503",
    );
    let server = start_server("127.0.0.1:0", false, handle.clone()).expect("status server starts");
    (server, handle)
}

pub fn chromium() -> &'static str {
    for candidate in ["chromium", "chromium-browser"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate;
        }
    }
    panic!("headless Chromium is missing: run `bash tests/setup.sh` (installs Debian chromium)");
}

/// How long one headless Chromium run may take before it is killed and the test fails:
/// a page that never settles must not hang the run (generous: the machine is loaded).
pub const CHROMIUM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs headless Chromium on `url` with the flags of the env notes; returns stdout.
/// Killed, and the test failed, if it has not finished within [`CHROMIUM_DEADLINE`].
pub fn run_chromium(profile: &Path, extra: &[&str], url: &str) -> String {
    use std::io::Read;
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .env("TZ", "UTC")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium runs");
    let pid = child.id();
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Chromium's exit (the reader sees the end of its stdout, then reaps it), or the
    // deadline: whichever comes first.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = done.send((child.wait(), text));
    });
    let (status, text) = match finished.recv_timeout(CHROMIUM_DEADLINE) {
        Ok((status, text)) => (status.expect("wait for chromium"), text),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("chromium did not finish {url} within {CHROMIUM_DEADLINE:?}");
        }
    };
    assert!(
        status.success(),
        "chromium failed on {url}: {}",
        err_reader.join().unwrap_or_default()
    );
    text
}

/// Runs `cmd`; its stdout, or a panic with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A CA made by the openssl command line (a real manufacturer CA stand-in), subject
/// "CN=NAME, O=csipd test": (key path, certificate path) in `dir`.
pub fn openssl_ca(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    run_ok(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        &format!("/CN={name}/O=csipd test"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]));
    (key, cert)
}
