//! The daemon's status shows the configured certificate's identity (LFDI/SFDI) before a
//! utility server is set up — the installer gives it to the utility first — and keeps
//! it right across SIGHUP reloads (a new certificate, a server removed).

mod runtime_common;

use runtime_common::*;
use std::time::Duration;

fn config(
    dir: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    dcap: &str,
) -> String {
    format!(
        "config csipd 'main'\n\toption status_listen '127.0.0.1:0'\n\toption data_dir '{d}/state'\n\toption telemetry_dir '{d}/telemetry'\n\n\
         config server 'utility'\n\toption cert '{c}'\n\toption key '{k}'\n{dcap}\n",
        d = dir.display(),
        c = cert.display(),
        k = key.display(),
    )
}

#[test]
fn lfdi_from_the_configured_certificate_without_a_server_and_after_reload() {
    let dir = temp_dir("status-identity");
    let first = dir.join("first");
    let second = dir.join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let (key1, cert1, lfdi1, sfdi1) = selfsigned_identity(&first, "site-1");
    let (key2, cert2, lfdi2, sfdi2) = selfsigned_identity(&second, "site-2");
    let path = dir.join("csipd");
    std::fs::write(&path, config(&dir, &cert1, &key1, "")).unwrap();

    let (run, url) = start_run(path.to_str().unwrap());
    let s = wait_for(&url, Duration::from_secs(30), "the configured LFDI", |s| {
        s.utility.lfdi.is_some()
    });
    assert_eq!(s.utility.lfdi.as_deref(), Some(lfdi1.as_str()));
    assert_eq!(s.utility.sfdi, Some(sfdi1));
    assert_eq!(s.utility.state.as_str(), "not_configured");

    // A new certificate installed and csipd reloaded: the new identity, not the old.
    std::fs::write(&path, config(&dir, &cert2, &key2, "")).unwrap();
    run.signal("HUP");
    let s = wait_for(
        &url,
        Duration::from_secs(30),
        "the new LFDI after SIGHUP",
        |s| s.utility.lfdi.as_deref() == Some(lfdi2.as_str()),
    );
    assert_eq!(s.utility.sfdi, Some(sfdi2));
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}
