//! csipd's notification listener (`runtime::notify`, `option notification_listen`)
//! over real mutual TLS: lab certificates made with the openssl CLI (P-256), curl as the
//! utility server POSTing Notifications (TLS 1.2 with CCM8, as CSIP-AUS requires).
//! A client without a certificate, or with one from another CA, is refused at the
//! handshake; a body that is not a Notification gets 400. Waits are for conditions
//! with generous deadlines, never fixed sleeps. The last test runs `csipd run` against
//! the scripted CSIP-AUS server (plain HTTP lab mode) with `notification_listen`: it
//! subscribes, and a control the server adds is read on the Notification although the
//! program list is polled only every 900 s.

#[path = "common/csip_server.rs"]
mod csip_server;
mod runtime_common;
#[path = "common/test_pki.rs"]
mod test_pki;

use csip_server::{Control, Scenario, ScriptedServer, element_text, now_s};
use csipd::runtime::notify::NotificationListener;
use runtime_common::*;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;
use test_pki::{KeyPair, TempDir, make_ca, make_leaf};

const NOTIFICATION: &str = r#"<Notification xmlns="urn:ieee:std:2030.5:ns" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><subscribedResource>/edev/1/derp/1/derc</subscribedResource><Resource xsi:type="DERControlList" all="1" results="0"/><status>0</status><subscriptionURI>https://utility.example/edev/1/sub/3</subscriptionURI></Notification>"#;

/// POSTs `body` with curl; `client`: the certificate and key to present. Returns the
/// HTTP status (0 when there was none: the handshake failed) and curl's stderr.
fn post(port: u16, ca: &KeyPair, client: Option<&KeyPair>, body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-v", "--max-time", "60", "--tls-max", "1.2"])
        .args(["--ciphers", "ECDHE-ECDSA-AES128-CCM8"])
        .arg("--cacert")
        .arg(&ca.cert)
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Content-Type: application/sep+xml"])
        .args(["--data-binary", body]);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    cmd.arg(format!("https://127.0.0.1:{port}/notify"));
    let out = cmd
        .output()
        .expect("curl missing: run `bash tests/setup.sh`");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn notifications_need_the_utility_cas_client_certificate() {
    let dir = TempDir::new("notify");
    let ca = make_ca(dir.path(), "utility-ca");
    let device = make_leaf(dir.path(), &ca, "device");
    let utility = make_leaf(dir.path(), &ca, "utility");
    let rogue_ca = make_ca(dir.path(), "rogue-ca");
    let rogue = make_leaf(dir.path(), &rogue_ca, "rogue");

    let listener = NotificationListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        &device.cert,
        &device.key,
        &ca.cert,
    )
    .expect("listener");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    // The test's own thread runs the listener's future (csipd runs it on its loop).
    std::thread::spawn(move || {
        smol::block_on(listener.serve(|body| {
            let _ = tx.send(body);
        }))
    });

    // The utility's client certificate: accepted, 201, CCM8 negotiated, delivered.
    let (code, log) = post(port, &ca, Some(&utility), NOTIFICATION);
    assert_eq!(code, 201, "{log}");
    assert!(log.contains("ECDHE-ECDSA-AES128-CCM8"), "{log}");
    let body = rx.recv_timeout(Duration::from_secs(30)).expect("delivered");
    assert_eq!(body, NOTIFICATION.as_bytes());

    // No client certificate: refused at the handshake, nothing delivered.
    let (code, log) = post(port, &ca, None, NOTIFICATION);
    assert_eq!(
        code, 0,
        "no HTTP answer without a client certificate: {log}"
    );
    // Another CA's certificate: refused too.
    let (code, log) = post(port, &ca, Some(&rogue), NOTIFICATION);
    assert_eq!(
        code, 0,
        "no HTTP answer for another CA's certificate: {log}"
    );
    // Not a Notification: 400, nothing delivered.
    let (code, log) = post(port, &ca, Some(&utility), "<DERControlList/>");
    assert_eq!(code, 400, "{log}");
    assert!(rx.try_recv().is_err(), "refused requests are not delivered");

    // The listener carries on after the refusals.
    let (code, log) = post(port, &ca, Some(&utility), NOTIFICATION);
    assert_eq!(code, 201, "{log}");
    rx.recv_timeout(Duration::from_secs(30)).expect("delivered");
}

#[test]
fn a_listener_with_a_missing_ca_says_which_file() {
    let dir = TempDir::new("notify-ca");
    let ca = make_ca(dir.path(), "utility-ca");
    let device = make_leaf(dir.path(), &ca, "device");
    let missing = dir.path().join("nope.crt");
    let err = NotificationListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        &device.cert,
        &device.key,
        &missing,
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("nope.crt"), "{err}");
}

/// A port that was free a moment ago (csipd must put its listener's port in the
/// notificationURI it sends, so the test chooses it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn csipd_run_subscribes_and_reads_a_notified_control_at_once() {
    let dir = temp_dir("runtime-notify");
    let pki = TempDir::new("runtime-notify-pki");
    let ca = make_ca(pki.path(), "utility-ca");
    let utility = make_leaf(pki.path(), &ca, "utility");
    // csipd's device certificate from the same lab CA (valid for 127.0.0.1, so curl,
    // playing the utility, can check the listener too).
    let device = make_leaf(pki.path(), &ca, "device");
    let (key, cert) = (device.key.clone(), device.cert.clone());
    let id = csipd::sep2::identity_from_pem(&std::fs::read(&cert).unwrap()).expect("identity");
    let (lfdi, sfdi) = (id.lfdi, id.sfdi);
    let server = ScriptedServer::start(Scenario {
        lfdi,
        sfdi,
        subscription_list: true,
        derp_list_poll_s: 900,
        fsa_list_poll_s: 900,
        edev_list_poll_s: 900,
        ..Scenario::default()
    });
    let port = free_port();
    let notify_url = format!("https://127.0.0.1:{port}/notify");
    let config = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'

config server 'utility'
\toption dcap_url '{url}/dcap'
\toption cert '{cert}'
\toption key '{key}'
\toption ca '{ca}'
\toption allow_plain_http '1'
\toption pen '12345'
\toption nmi '4102345678'
\toption notification_listen '127.0.0.1:{port}'
\toption notification_url '{notify_url}'
",
        d = dir.display(),
        url = server.base_url,
        cert = cert.display(),
        key = key.display(),
        ca = ca.cert.display(),
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    let (mut run, _url) = start_run(&path.display().to_string());
    run.stdout_containing("notifications: listening on ", PATIENCE);
    let subscribed = |r: &[csip_server::Recorded]| {
        r.iter()
            .filter(|r| r.method == "POST" && r.path == "/edev/1/sub")
            .filter(|r| {
                element_text(&r.body, "notificationURI").as_deref() == Some(notify_url.as_str())
            })
            .filter_map(|r| element_text(&r.body, "subscribedResource"))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 5
    };
    assert!(
        server.wait_for(PATIENCE, subscribed),
        "five Subscriptions: {:#?}",
        server.requests_to("POST", "/edev/1/sub")
    );
    let reads = server.requests_to("GET", "/edev/1/derp/1/derc").len();
    let start = now_s() - 5;
    server.update(|s| {
        let mut c = Control::new("notified-900", start, 3600);
        c.exp_lim_w = Some(900);
        c.status = 1;
        s.fsas[0][0].controls.push(c);
    });
    let notification = NOTIFICATION;
    let (code, log) = post(port, &ca, Some(&utility), notification);
    assert_eq!(code, 201, "{log}");
    assert!(
        server.wait_for(PATIENCE, |r| r
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/edev/1/derp/1/derc")
            .count()
            > reads),
        "the DERControlList is read on the notification, not after 900 s"
    );
    // The control is answered (Received), i.e. the engine took it in.
    assert!(
        server.wait_for(PATIENCE, |r| r.iter().any(|r| r.method == "POST"
            && r.path == "/edev/1/rsps/site_control/rsp"
            && r.body.contains(&csip_server::mrid_of("notified-900"))))
    );
    // A client without the utility CA's certificate gets nothing in.
    let (code, _) = post(port, &ca, None, notification);
    assert_eq!(code, 0);
    assert!(run.alive(), "csipd still runs");

    // A reload that changes the utility section restarts the engine: the listener is
    // bound again on the same port and notifications keep arriving.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("'4102345678'", "'4102345679'")).unwrap();
    run.signal("HUP");
    run.stdout_containing("notifications: listening on ", PATIENCE);
    let reads = server.requests_to("GET", "/edev/1/derp/1/derc").len();
    let (code, log) = wait_until(PATIENCE, "the listener answers after the reload", || {
        let (code, log) = post(port, &ca, Some(&utility), notification);
        if code == 201 {
            Ok((code, log))
        } else {
            Err(log)
        }
    });
    assert_eq!(code, 201, "{log}");
    assert!(server.wait_for(PATIENCE, |r| {
        r.iter()
            .filter(|r| r.method == "GET" && r.path == "/edev/1/derp/1/derc")
            .count()
            > reads
    }));
    assert!(run.alive(), "csipd still runs after the reload");
}
