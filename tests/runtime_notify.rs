//! csipd's notification listener (`runtime::notify`, `option notification_listen`)
//! over real mutual TLS: lab certificates made with the openssl CLI (P-256), curl as the
//! utility server POSTing Notifications (TLS 1.2 with CCM8, as CSIP-AUS requires).
//! A client without a certificate, or with one from another CA, is refused at the
//! handshake; a body that is not a Notification gets 400. Waits are for conditions
//! with generous deadlines, never fixed sleeps.

#[path = "common/test_pki.rs"]
mod test_pki;

use csipd::runtime::notify::NotificationListener;
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
