//! The 2030.5 client against the GridAPPS-D IEEE 2030.5 server (a real peer from PyPI;
//! `bash tests/setup.sh` installs it): mutual TLS with the client certificate the server
//! generated, `GET /dcap` and `/edev`, HTTP/1.0 + `Connection: close` handled.

#[path = "common/gridappsd.rs"]
mod gridappsd;

use csipd::http::{Client, ClientConfig};
use gridappsd::{GridappsdOptions, GridappsdServer};

#[test]
fn dcap_and_edev_with_the_generated_client_certificate() {
    let server = GridappsdServer::start(&GridappsdOptions::default());
    let identity = server.identity("dev1");
    let mut config = ClientConfig::new(&server.url);
    config.client_cert = Some(identity.cert.clone());
    config.client_key = Some(identity.key.clone());
    config.ca_bundle = Some(server.ca_cert.clone());
    let mut client = Client::new(config).expect("client");
    let (dcap, edev) = smol::block_on(async {
        let dcap = client.get("/dcap").await.expect("GET /dcap");
        let edev = client.get("/edev").await.expect("GET /edev");
        (dcap, edev)
    });
    assert_eq!(dcap.status, 200);
    let dcap_xml = dcap.body_text();
    assert!(dcap_xml.contains("DeviceCapability"), "{dcap_xml}");
    assert!(dcap_xml.contains("EndDeviceListLink"), "{dcap_xml}");
    assert_eq!(edev.status, 200);
    let edev_xml = edev.body_text();
    assert!(edev_xml.contains("EndDeviceList"), "{edev_xml}");
    // The server identified us by our certificate: our LFDI is in the list.
    let lfdi = csipd::pki::lfdi_of_cert_file(&identity.cert).expect("lfdi");
    assert!(
        edev_xml.to_ascii_uppercase().contains(&lfdi),
        "LFDI {lfdi} not in {edev_xml}"
    );
    let info = client.connection_info().expect("tls info").clone();
    assert!(
        info.protocol == "TLSv1.2" || info.protocol == "TLSv1.3",
        "{info:?}"
    );
    // HTTP/1.0 + close: every request was its own connection, and nothing failed.
    assert_eq!(client.stats().responses, 2);
    assert!(client.stats().handshakes >= 1);
}

#[test]
fn unknown_client_certificate_is_refused_by_gridappsd() {
    let server = GridappsdServer::start(&GridappsdOptions::default());
    // Right CA for the server, but a client certificate from elsewhere.
    let dir = server.dir.join("stranger");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k.pem");
    let cert = dir.join("c.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=stranger", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(status.status.success());
    let mut config = ClientConfig::new(&server.url);
    config.client_cert = Some(cert);
    config.client_key = Some(key);
    config.ca_bundle = Some(server.ca_cert.clone());
    let mut client = Client::new(config).unwrap();
    let result = smol::block_on(client.get("/dcap"));
    assert!(
        result.is_err(),
        "server accepted an unknown client certificate"
    );
}
