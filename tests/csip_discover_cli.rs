//! `csipd discover --config FILE` against the hand-scripted CSIP-AUS server (plain HTTP
//! lab mode), with a client certificate made by `openssl` in the test: the LFDI printed
//! is the certificate's, and the tree shows the device, its program, default and control.

#[path = "common/csip_server.rs"]
mod csip_server;

use std::path::Path;
use std::process::Command;

use csip_server::{Control, Scenario, ScriptedServer, now_s, volt_var_curve_xml};

fn make_cert(dir: &Path) -> (String, String) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=csipd-discover-test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl not found: run `bash tests/setup.sh`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn discover_prints_the_tree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tmp")
        .join(format!("csip-discover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let (cert, key) = make_cert(&dir);
    let identity =
        csipd::sep2::identity_from_pem(&std::fs::read(&cert).expect("cert")).expect("identity");
    let now = now_s();
    let mut control = Control::new("DERC1", now + 600, 300);
    control.exp_lim_w = Some(1500);
    control.storage_target_w = Some(-2000);
    control.volt_var = Some("/edev/1/derp/1/dc/1".into());
    control.fixed_pf_inject = Some((95, true));
    let mut scenario = Scenario {
        lfdi: identity.lfdi.clone(),
        sfdi: identity.sfdi,
        ..Scenario::default()
    };
    scenario.fsas[0][0].controls.push(control);
    scenario.fsas[0][0]
        .curves
        .push(volt_var_curve_xml("/edev/1/derp/1/dc/1", "VV1"));
    let server = ScriptedServer::start(scenario);
    let config = dir.join("csipd");
    std::fs::write(
        &config,
        format!(
            "config server 'utility'\n\toption dcap_url '{}/dcap'\n\toption allow_plain_http '1'\n\toption cert '{cert}'\n\toption key '{key}'\n\toption pen '12345'\n\toption registration_pin '111115'\n",
            server.base_url
        ),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["discover", "--config"])
        .arg(&config)
        .output()
        .expect("run csipd");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&identity.lfdi), "{text}");
    assert!(text.contains("state    polling"), "{text}");
    assert!(text.contains("this device /edev/1"), "{text}");
    assert!(text.contains("registration PIN 111115"), "{text}");
    assert!(
        text.contains("DERProgram /edev/1/derp/1 primacy 0"),
        "{text}"
    );
    assert!(text.contains("default: export 0 W import 0 W"), "{text}");
    assert!(text.contains("setGradW 27"), "{text}");
    assert!(text.contains("export 1500 W"), "{text}");
    assert!(text.contains("storage target -2000 W"), "{text}");
    // Its volt-var curve resolved in the program's DERCurveList, and its power factor.
    assert!(
        text.contains(
            " volt-var 4 points 90.4 %V → 44 %, 95.6 %V → 0 %, 104.3 %V → 0 %, 110.0 %V → -60 %"
        ),
        "{text}"
    );
    assert!(
        text.contains(" fixed PF cos φ 0.950 absorbing vars"),
        "{text}"
    );
    // The start as in the XML and as a date (UTC) an engineer reads at a glance.
    let start = now + 600;
    let date = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(start as u64),
    );
    assert!(
        text.contains(&format!("start {start} ({date}) for 300 s")),
        "{text}"
    );
    assert!(text.contains("(poll every 2 s)"), "{text}");
    // One walk: no report or reading was sent by `discover`.
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.method == "PUT" || r.method == "POST"),
        "discover must only read"
    );
}
