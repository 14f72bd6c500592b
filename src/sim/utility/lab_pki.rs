//! The simulated utility's lab PKI, made at start: a CA (its key kept too, so more
//! device certificates can be issued: `csipd fleet`), the server's certificate (for
//! 127.0.0.1 and localhost) and one device certificate, all P-256 ECDSA with SHA-256
//! (the CSIP-AUS / 2030.5 suite), written as PEM files into a directory so a client can
//! be pointed at them.

use crate::pki::{PkiError, generate_p256_key, write_private_key};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKeyRef, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder, X509Ref};
use std::path::{Path, PathBuf};

/// The files of a lab PKI and the device's identity.
#[derive(Debug, Clone)]
pub struct LabPki {
    pub dir: PathBuf,
    /// The CA certificate (PEM): the client's trust anchor and the server's client-cert CA.
    pub ca_cert: PathBuf,
    /// The CA's private key (PEM, mode 0600): `csipd fleet --ca-cert --ca-key` issues
    /// device certificates the simulated utility accepts with it. Lab use only.
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The device (client) certificate and key.
    pub device_cert: PathBuf,
    pub device_key: PathBuf,
    /// The device certificate's LFDI (40 uppercase hex digits) and SFDI.
    pub device_lfdi: String,
    pub device_sfdi: u64,
}

const DAY_S: i64 = 86_400;

fn e(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> PkiError {
    move |err| PkiError(format!("lab PKI, {what}: {err}"))
}

fn time(unix_s: i64) -> Result<Asn1Time, PkiError> {
    // Not Asn1Time::from_unix: its time_t is garbled on 32-bit musl (see the function).
    crate::pki::asn1_time_from_unix(unix_s)
        .map_err(|err| PkiError(format!("lab PKI, validity: {err}")))
}

/// One certificate: `cn` with `key`, signed by `issuer` (self-signed when `None`).
fn certificate(
    cn: &str,
    key: &PKeyRef<Private>,
    issuer: Option<(&X509Ref, &PKeyRef<Private>)>,
    serial: u32,
    now_utc_s: i64,
    kind: Kind,
    server_ip: Option<std::net::IpAddr>,
) -> Result<X509, PkiError> {
    let mut b = X509Builder::new().map_err(e("certificate"))?;
    b.set_version(2).map_err(e("version"))?;
    let serial = BigNum::from_u32(serial)
        .and_then(|bn| Asn1Integer::from_bn(&bn))
        .map_err(e("serial"))?;
    b.set_serial_number(&serial).map_err(e("serial"))?;
    let mut name = X509NameBuilder::new().map_err(e("name"))?;
    name.append_entry_by_text("O", "csipd simulated utility")
        .map_err(e("name"))?;
    name.append_entry_by_text("CN", cn).map_err(e("name"))?;
    let name = name.build();
    b.set_subject_name(&name).map_err(e("name"))?;
    match issuer {
        Some((ca, _)) => b.set_issuer_name(ca.subject_name()),
        None => b.set_issuer_name(&name),
    }
    .map_err(e("issuer"))?;
    b.set_pubkey(key).map_err(e("key"))?;
    // Valid from an hour ago (clock skew) for ten years: a lab identity.
    let not_before = time(now_utc_s - 3600)?;
    let not_after = time(now_utc_s + 3650 * DAY_S)?;
    b.set_not_before(&not_before).map_err(e("validity"))?;
    b.set_not_after(&not_after).map_err(e("validity"))?;
    match kind {
        Kind::Ca => {
            b.append_extension(
                BasicConstraints::new()
                    .critical()
                    .ca()
                    .build()
                    .map_err(e("ca"))?,
            )
            .map_err(e("ca"))?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .map_err(e("key usage"))?,
            )
            .map_err(e("key usage"))?;
        }
        Kind::Server | Kind::Device => {
            b.append_extension(
                BasicConstraints::new()
                    .critical()
                    .build()
                    .map_err(e("leaf"))?,
            )
            .map_err(e("leaf"))?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_agreement()
                    .build()
                    .map_err(e("key usage"))?,
            )
            .map_err(e("key usage"))?;
            let mut eku = ExtendedKeyUsage::new();
            if kind == Kind::Server {
                eku.server_auth();
            } else {
                eku.client_auth();
            }
            b.append_extension(eku.build().map_err(e("extended key usage"))?)
                .map_err(e("extended key usage"))?;
        }
    }
    if kind == Kind::Server {
        let ctx = b.x509v3_context(issuer.map(|(ca, _)| ca), None);
        let mut san = SubjectAlternativeName::new();
        san.ip("127.0.0.1").dns("localhost");
        // The address clients are told to use (`--listen`), so they can verify it.
        let listen_ip = server_ip.map(|ip| ip.to_string());
        if let Some(ip) = &listen_ip {
            san.ip(ip);
        }
        let san = san.build(&ctx).map_err(e("subject alternative name"))?;
        b.append_extension(san)
            .map_err(e("subject alternative name"))?;
    }
    let signer = issuer.map_or(key, |(_, k)| k);
    b.sign(signer, MessageDigest::sha256())
        .map_err(e("signing"))?;
    Ok(b.build())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ca,
    Server,
    Device,
}

fn write_pem(path: &Path, cert: &X509) -> Result<(), PkiError> {
    let pem = cert.to_pem().map_err(e("PEM"))?;
    std::fs::write(path, pem).map_err(|err| PkiError(format!("{}: {err}", path.display())))
}

impl LabPki {
    /// Makes a fresh CA, server and device identity in `dir` (created if missing;
    /// existing files there are replaced). `now_utc_s` anchors the validity.
    pub fn create(dir: &Path, now_utc_s: i64) -> Result<LabPki, PkiError> {
        Self::create_for(dir, now_utc_s, None)
    }

    /// As [`LabPki::create`], with `server_ip` (the address the server listens on, when
    /// it is neither loopback nor unspecified) in the server certificate beside
    /// 127.0.0.1 and localhost, so a client elsewhere can verify the name it connects to.
    pub fn create_for(
        dir: &Path,
        now_utc_s: i64,
        server_ip: Option<std::net::IpAddr>,
    ) -> Result<LabPki, PkiError> {
        std::fs::create_dir_all(dir)
            .map_err(|err| PkiError(format!("{}: {err}", dir.display())))?;
        let ca_key = generate_p256_key()?;
        let ca = certificate("csipd lab CA", &ca_key, None, 1, now_utc_s, Kind::Ca, None)?;
        let server_key = generate_p256_key()?;
        let server = certificate(
            "127.0.0.1",
            &server_key,
            Some((&ca, &ca_key)),
            2,
            now_utc_s,
            Kind::Server,
            server_ip,
        )?;
        let device_key = generate_p256_key()?;
        let device = certificate(
            "csipd lab device",
            &device_key,
            Some((&ca, &ca_key)),
            3,
            now_utc_s,
            Kind::Device,
            None,
        )?;
        let pki = LabPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            device_cert: dir.join("device.pem"),
            device_key: dir.join("device.key"),
            device_lfdi: String::new(),
            device_sfdi: 0,
        };
        write_pem(&pki.ca_cert, &ca)?;
        write_private_key(&pki.ca_key, &ca_key)?;
        write_pem(&pki.server_cert, &server)?;
        write_private_key(&pki.server_key, &server_key)?;
        write_pem(&pki.device_cert, &device)?;
        write_private_key(&pki.device_key, &device_key)?;
        let der = device.to_der().map_err(e("DER"))?;
        let lfdi = crate::sep2::lfdi_from_der(&der)
            .map_err(|err| PkiError(format!("lab device LFDI: {err}")))?;
        let sfdi =
            crate::sep2::sfdi(&lfdi).map_err(|err| PkiError(format!("lab device SFDI: {err}")))?;
        Ok(LabPki {
            device_lfdi: lfdi,
            device_sfdi: sfdi,
            ..pki
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server certificate names the listen address (for `--utility-only --listen`
    /// on a routable address) beside 127.0.0.1 and localhost.
    #[test]
    fn server_certificate_names_the_listen_address() {
        let dir = std::env::temp_dir().join(format!("csipd-labpki-{}", std::process::id()));
        let ip: std::net::IpAddr = "192.0.2.10".parse().unwrap();
        let pki = LabPki::create_for(&dir, 1_760_000_000, Some(ip)).expect("lab PKI");
        let server = crate::pki::load_cert(&pki.server_cert).unwrap();
        let ips: Vec<Vec<u8>> = server
            .subject_alt_names()
            .expect("SAN")
            .iter()
            .filter_map(|n| n.ipaddress().map(<[u8]>::to_vec))
            .collect();
        assert_eq!(ips, [vec![127, 0, 0, 1], vec![192, 0, 2, 10]]);
        let plain = LabPki::create(&dir, 1_760_000_000).expect("lab PKI");
        let server = crate::pki::load_cert(&plain.server_cert).unwrap();
        assert_eq!(server.subject_alt_names().expect("SAN").len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
