//! Certificates and keys: load PEM identity, LFDI/SFDI, P-256 key and CSR generation,
//! self-signed lab certificates, expiry and key-match checks, and `csipd cert`.

use crate::sep2::identity;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509Builder, X509NameBuilder, X509NameRef, X509Req, X509ReqBuilder};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate or key problem, naming the file.
#[derive(Debug, Clone, PartialEq)]
pub struct PkiError(pub String);

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PkiError {}

fn err(path: &Path, what: impl fmt::Display) -> PkiError {
    PkiError(format!("{}: {what}", path.display()))
}

/// All certificates in a PEM file, leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<X509>, PkiError> {
    let pem = std::fs::read(path).map_err(|e| err(path, e))?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| err(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(err(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The first (leaf) certificate of a PEM file.
pub fn load_cert(path: &Path) -> Result<X509, PkiError> {
    load_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| err(path, "no certificate in the file"))
}

/// A PEM private key (PKCS#8 or SEC1 "EC PRIVATE KEY"), unencrypted.
pub fn load_key(path: &Path) -> Result<PKey<Private>, PkiError> {
    let pem = std::fs::read(path).map_err(|e| err(path, e))?;
    PKey::private_key_from_pem(&pem).map_err(|_| err(path, "not an unencrypted PEM private key"))
}

/// LFDI of a certificate (the `sep2::identity` rule over its DER).
pub fn lfdi_of_cert(cert: &X509) -> Result<String, PkiError> {
    let der = cert
        .to_der()
        .map_err(|e| PkiError(format!("certificate not encodable: {e}")))?;
    identity::lfdi_from_der(&der).map_err(|e| PkiError(e.to_string()))
}

/// LFDI of the leaf certificate in a PEM file.
pub fn lfdi_of_cert_file(path: &Path) -> Result<String, PkiError> {
    lfdi_of_cert(&load_cert(path)?)
}

/// A new P-256 (prime256v1) key, as CSIP-AUS requires.
pub fn generate_p256_key() -> Result<PKey<Private>, PkiError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
        .map_err(|e| PkiError(format!("P-256 unavailable: {e}")))?;
    let ec = EcKey::generate(&group).map_err(|e| PkiError(format!("key generation: {e}")))?;
    PKey::from_ec_key(ec).map_err(|e| PkiError(format!("key generation: {e}")))
}

/// Writes `contents` to `path` via a temporary file and a rename, so a crash never leaves
/// half a file; `mode` applies from creation (a key is never readable by others).
fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(path, format!("cannot write: {e}")));
    }
    Ok(())
}

/// Writes a private key as PKCS#8 PEM with mode 0600.
pub fn write_private_key(path: &Path, key: &PKey<Private>) -> Result<(), PkiError> {
    let pem = key
        .private_key_to_pem_pkcs8()
        .map_err(|e| err(path, format!("key encoding: {e}")))?;
    write_file_atomic(path, &pem, 0o600)
}

/// Uses the key at `path` if there is one, else makes a P-256 key there (0600).
/// Returns the key and whether it was created.
pub fn load_or_create_key(path: &Path) -> Result<(PKey<Private>, bool), PkiError> {
    if path.exists() {
        return Ok((load_key(path)?, false));
    }
    let key = generate_p256_key()?;
    write_private_key(path, &key)?;
    Ok((key, true))
}

fn name_with_cn(common_name: &str) -> Result<openssl::x509::X509Name, PkiError> {
    if common_name.is_empty() {
        return Err(PkiError("the common name must not be empty".into()));
    }
    let mut name = X509NameBuilder::new().map_err(|e| PkiError(e.to_string()))?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .map_err(|e| PkiError(format!("common name {common_name:?}: {e}")))?;
    Ok(name.build())
}

/// A PKCS#10 request for `common_name`, signed with `key` (SHA-256).
pub fn build_csr(key: &PKey<Private>, common_name: &str) -> Result<X509Req, PkiError> {
    let e = |e: openssl::error::ErrorStack| PkiError(format!("CSR: {e}"));
    let mut req = X509ReqBuilder::new().map_err(e)?;
    req.set_version(0).map_err(e)?; // PKCS#10 v1, the only version there is
    let name = name_with_cn(common_name)?;
    req.set_subject_name(&name).map_err(e)?;
    req.set_pubkey(key).map_err(e)?;
    req.sign(key, MessageDigest::sha256()).map_err(e)?;
    Ok(req.build())
}

fn asn1_time(at: SystemTime) -> Result<Asn1Time, PkiError> {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let secs = i64::try_from(secs)
        .map_err(|_| PkiError(format!("time {secs} s after 1970 is out of range")))?;
    asn1_time_from_unix(secs)
}

/// `unix_s` (seconds since 1970, UTC) as an X.509 time: UTCTime up to 2049,
/// GeneralizedTime after (RFC 5280 4.1.2.5).
///
/// Handed to OpenSSL as text, never as a `time_t`: on 32-bit musl targets (mipsel) the
/// `libc` crate's `time_t` is 32 bits while musl 1.2, which OpenSSL is compiled against,
/// has 64, so `ASN1_TIME_set` (`Asn1Time::from_unix`) read a garbled argument there and
/// `csipd cert selfsigned`/`sign` failed with "ASN1_TIME_adj: error getting time".
pub(crate) fn asn1_time_from_unix(unix_s: i64) -> Result<Asn1Time, PkiError> {
    let (year, month, day) = crate::control::tz::civil_from_days(unix_s.div_euclid(86_400));
    let s = unix_s.rem_euclid(86_400);
    let text = format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    Asn1Time::from_str_x509(&text).map_err(|e| PkiError(format!("time {text}: {e}")))
}

/// What a certificate is for: its basicConstraints and keyUsage (both critical).
#[derive(Clone, Copy)]
enum CertRole {
    /// A 2030.5 client or server: CA:FALSE; digitalSignature, keyAgreement.
    EndEntity,
    /// A certificate authority: CA:TRUE; keyCertSign, cRLSign.
    Authority,
}

fn certificate_error(e: openssl::error::ErrorStack) -> PkiError {
    PkiError(format!("certificate: {e}"))
}

/// A serial number from `now` (nanoseconds, 64 bits): distinct for certificates made
/// apart in time without keeping a counter.
fn serial_from_time(now: SystemTime) -> u64 {
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    (nanos & 0xFFFF_FFFF_FFFF_FFFF) as u64
}

/// An unsigned v3 certificate of `role` for `public`, named `subject`, issued by
/// `issuer`, with `serial`, valid from `now` for `days`. Callers add any further
/// extension and sign it.
fn certificate_builder<T: openssl::pkey::HasPublic>(
    role: CertRole,
    subject: &X509NameRef,
    issuer: &X509NameRef,
    public: &openssl::pkey::PKeyRef<T>,
    serial: u64,
    days: u32,
    now: SystemTime,
) -> Result<X509Builder, PkiError> {
    let e = certificate_error;
    let mut cert = X509Builder::new().map_err(e)?;
    cert.set_version(2).map_err(e)?;
    let serial = BigNum::from_dec_str(&serial.to_string()).map_err(e)?;
    let serial = Asn1Integer::from_bn(&serial).map_err(e)?;
    cert.set_serial_number(&serial).map_err(e)?;
    cert.set_subject_name(subject).map_err(e)?;
    cert.set_issuer_name(issuer).map_err(e)?;
    cert.set_pubkey(public).map_err(e)?;
    cert.set_not_before(&*asn1_time(now)?).map_err(e)?;
    let until = now + Duration::from_secs(u64::from(days) * 86_400);
    cert.set_not_after(&*asn1_time(until)?).map_err(e)?;
    let (constraints, usage) = match role {
        CertRole::EndEntity => (
            BasicConstraints::new().critical().build(),
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build(),
        ),
        CertRole::Authority => (
            BasicConstraints::new().critical().ca().build(),
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build(),
        ),
    };
    cert.append_extension(constraints.map_err(e)?).map_err(e)?;
    cert.append_extension(usage.map_err(e)?).map_err(e)?;
    Ok(cert)
}

/// A self-signed certificate for lab use (valid from `now` for `days`).
pub fn self_signed(
    key: &PKey<Private>,
    common_name: &str,
    days: u32,
    now: SystemTime,
) -> Result<X509, PkiError> {
    let e = certificate_error;
    let name = name_with_cn(common_name)?;
    let mut cert = certificate_builder(
        CertRole::EndEntity,
        &name,
        &name,
        key,
        serial_from_time(now),
        days,
        now,
    )?;
    let san = SubjectAlternativeName::new()
        .dns(common_name)
        .build(&cert.x509v3_context(None, None))
        .map_err(e)?;
    cert.append_extension(san).map_err(e)?;
    cert.sign(key, MessageDigest::sha256()).map_err(e)?;
    Ok(cert.build())
}

/// A device certificate for the request `csr`, issued by `ca_cert`/`ca_key` (the
/// manufacturer's or a test CA), valid from `now` for `days`: what a manufacturer CA does
/// before a device certificate goes to the utility (CSIP-AUS: device certificates chain to
/// a manufacturer CA, which chains to the utility's or the SERCA root). The request's
/// signature must verify; the subject is the request's; the key usage is the one 2030.5
/// clients need (digitalSignature, keyAgreement) and the issuer is `ca_cert`'s subject.
pub fn sign_csr(
    csr: &X509Req,
    ca_cert: &X509,
    ca_key: &PKey<Private>,
    days: u32,
    now: SystemTime,
) -> Result<X509, PkiError> {
    let public = csr
        .public_key()
        .map_err(|e| PkiError(format!("the request has no usable public key: {e}")))?;
    if !csr.verify(&public).unwrap_or(false) {
        return Err(PkiError(
            "the request's signature does not verify (corrupted or edited CSR)".into(),
        ));
    }
    if !key_matches(ca_cert, ca_key) {
        return Err(PkiError(
            "the CA key does not belong to the CA certificate".into(),
        ));
    }
    let mut cert = certificate_builder(
        CertRole::EndEntity,
        csr.subject_name(),
        ca_cert.subject_name(),
        &public,
        serial_from_time(now),
        days,
        now,
    )?;
    cert.sign(ca_key, MessageDigest::sha256())
        .map_err(certificate_error)?;
    Ok(cert.build())
}

/// A CA certificate for tests and lab manufacturer CAs (self-signed, `CA:TRUE`,
/// keyCertSign), valid from `now` for `days`.
pub fn self_signed_ca(
    key: &PKey<Private>,
    common_name: &str,
    days: u32,
    now: SystemTime,
) -> Result<X509, PkiError> {
    let name = name_with_cn(common_name)?;
    let mut cert = certificate_builder(CertRole::Authority, &name, &name, key, 1, days, now)?;
    cert.sign(key, MessageDigest::sha256())
        .map_err(certificate_error)?;
    Ok(cert.build())
}

/// One certificate of a chain as the certificate page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainLink {
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub not_after_unix: Option<i64>,
    /// True when the next certificate in the file (or, for the last one, itself when
    /// self-signed) is its issuer and its signature verifies with that key; `None` for
    /// the last certificate when it is not self-signed (its issuer is not in the file).
    pub verified_by_next: Option<bool>,
}

/// The certificates of a PEM file in order (leaf first), each checked against the next:
/// the device certificate, then the manufacturer (MICA) certificate, then any root.
pub fn chain_links(certs: &[X509]) -> Vec<ChainLink> {
    certs
        .iter()
        .enumerate()
        .map(|(i, cert)| {
            let issuer_cert = certs.get(i + 1).or_else(|| {
                (cert.subject_name().to_der().ok() == cert.issuer_name().to_der().ok())
                    .then_some(cert)
            });
            let verified_by_next = issuer_cert.map(|issuer| {
                issuer.subject_name().to_der().ok() == cert.issuer_name().to_der().ok()
                    && issuer
                        .public_key()
                        .is_ok_and(|k| cert.verify(&k).unwrap_or(false))
            });
            ChainLink {
                subject: name_text(cert.subject_name()),
                issuer: name_text(cert.issuer_name()),
                not_after: cert.not_after().to_string(),
                not_after_unix: unix_seconds(cert.not_after()),
                verified_by_next,
            }
        })
        .collect()
}

/// All certificates in PEM text; `what` names the text in errors ("the device
/// certificate", "the CA bundle").
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<X509>, PkiError> {
    let certs = X509::stack_from_pem(pem.as_bytes())
        .map_err(|e| PkiError(format!("{what} is not PEM certificate text ({e})")))?;
    if certs.is_empty() {
        return Err(PkiError(format!(
            "{what} has no certificate (expected -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// Writes `contents` to `path` atomically (temporary file and rename) with `mode`.
pub fn write_public_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_file_atomic(path, contents, 0o644)
}

/// "CN=dev1, O=Utility" style text of a name.
pub fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds since the Unix epoch of an ASN.1 time.
fn unix_seconds(t: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = asn1_time_from_unix(0).ok()?;
    let diff = epoch.diff(t).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// True when `key` is the private half of `cert`'s public key.
pub fn key_matches(cert: &X509, key: &PKey<Private>) -> bool {
    cert.public_key().is_ok_and(|public| public.public_eq(key))
}

/// What `csipd cert show` prints.
#[derive(Clone, Debug, PartialEq)]
pub struct CertSummary {
    pub lfdi: String,
    pub sfdi: u64,
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub not_before_unix: Option<i64>,
    pub not_after_unix: Option<i64>,
    /// e.g. "EC P-256" or "RSA 2048".
    pub key_type: String,
}

pub fn summarize(cert: &X509) -> Result<CertSummary, PkiError> {
    let lfdi = lfdi_of_cert(cert)?;
    let sfdi = identity::sfdi(&lfdi).map_err(|e| PkiError(e.to_string()))?;
    let key_type = match cert.public_key() {
        Ok(key) => match key.ec_key() {
            Ok(ec) => match ec.group().curve_name() {
                Some(Nid::X9_62_PRIME256V1) => "EC P-256".to_string(),
                Some(nid) => format!("EC {}", nid.short_name().unwrap_or("?")),
                None => "EC (unnamed curve)".to_string(),
            },
            Err(_) => format!("{:?} {}", key.id(), key.bits()),
        },
        Err(_) => "unreadable".into(),
    };
    Ok(CertSummary {
        lfdi,
        sfdi,
        subject: name_text(cert.subject_name()),
        issuer: name_text(cert.issuer_name()),
        not_before: cert.not_before().to_string(),
        not_after: cert.not_after().to_string(),
        not_before_unix: unix_seconds(cert.not_before()),
        not_after_unix: unix_seconds(cert.not_after()),
        key_type,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// csipd cannot work with this identity.
    Error,
    /// Works now, needs attention (expires soon, not P-256).
    Warning,
}

/// Which file of the identity a problem is about (so `check-config` can point at the
/// option that names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityFile {
    /// The certificate (unreadable, expired, not yet valid, not P-256), or the pair.
    Cert,
    /// The private key (unreadable, not a PEM key).
    Key,
}

/// One thing wrong with the configured identity, for `check-config`.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityProblem {
    pub severity: Severity,
    /// The file the problem is about.
    pub file: IdentityFile,
    pub message: String,
}

impl fmt::Display for IdentityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.message)
    }
}

/// Certificates closer than this to expiry give a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Checks the device certificate and key at `now`: readable, valid now (not expired,
/// not yet valid), key matches, P-256. Empty when all is well.
pub fn check_identity(cert_path: &Path, key_path: &Path, now: SystemTime) -> Vec<IdentityProblem> {
    let mut problems = Vec::new();
    let error = |message: String| IdentityProblem {
        severity: Severity::Error,
        file: IdentityFile::Cert,
        message,
    };
    let cert = match load_cert(cert_path) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(error(format!("certificate {e}")));
            None
        }
    };
    let key = match load_key(key_path) {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(IdentityProblem {
                file: IdentityFile::Key,
                ..error(format!("key {e}"))
            });
            None
        }
    };
    let now_unix = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if let Some(cert) = &cert {
        let summary = summarize(cert);
        if let Ok(s) = &summary {
            if let Some(until) = s.not_after_unix {
                if until < now_unix {
                    problems.push(error(format!(
                        "certificate {} expired on {} (LFDI {})",
                        cert_path.display(),
                        s.not_after,
                        s.lfdi
                    )));
                } else if until - now_unix < EXPIRY_WARNING.as_secs() as i64 {
                    problems.push(IdentityProblem {
                        severity: Severity::Warning,
                        file: IdentityFile::Cert,
                        message: format!(
                            "certificate {} expires on {} ({} days left)",
                            cert_path.display(),
                            s.not_after,
                            (until - now_unix) / 86_400
                        ),
                    });
                }
            }
            if s.not_before_unix.is_some_and(|from| from > now_unix) {
                problems.push(error(format!(
                    "certificate {} is not valid before {} (is the clock right?)",
                    cert_path.display(),
                    s.not_before
                )));
            }
            if s.key_type != "EC P-256" {
                problems.push(IdentityProblem {
                    severity: Severity::Warning,
                    file: IdentityFile::Cert,
                    message: format!(
                        "certificate {} has a {} key; CSIP-AUS requires EC P-256",
                        cert_path.display(),
                        s.key_type
                    ),
                });
            }
        }
        if let Some(key) = &key {
            if !key_matches(cert, key) {
                problems.push(error(format!(
                    "key {} does not belong to certificate {}",
                    key_path.display(),
                    cert_path.display()
                )));
            }
        }
    }
    problems
}

const CERT_USAGE: &str = "usage:
  csipd cert request --key FILE --csr FILE --cn NAME
      make a P-256 key (mode 0600; an existing key is reused) and a certificate request
  csipd cert show --cert FILE [--key FILE]
      LFDI, SFDI, subject, issuer, validity, and whether the key matches
  csipd cert selfsigned --key FILE --cert FILE --cn NAME [--days N]
      a self-signed certificate for lab servers only (key made if missing)
  csipd cert sign --ca-cert FILE --ca-key FILE --csr FILE --out FILE [--days N]
      the manufacturer step: issue a device certificate for a request with a CA's key
      (default 3650 days); --out gets the device certificate followed by the CA's";

#[derive(Debug)]
enum CliError {
    /// Bad arguments: print the usage.
    Usage(String),
    /// The command could not do its job.
    Failed(String),
}

impl From<PkiError> for CliError {
    fn from(e: PkiError) -> Self {
        CliError::Failed(e.0)
    }
}

fn flags(args: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| CliError::Usage(format!("unexpected argument {flag:?}")))?;
        let value = it
            .next()
            .ok_or_else(|| CliError::Usage(format!("{flag} needs a value")))?;
        out.push((name.to_string(), value.clone()));
    }
    Ok(out)
}

fn flag<'a>(flags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(flags: &'a [(String, String)], name: &str) -> Result<&'a str, CliError> {
    flag(flags, name).ok_or_else(|| CliError::Usage(format!("--{name} is required")))
}

fn check_known(flags: &[(String, String)], known: &[&str]) -> Result<(), CliError> {
    match flags.iter().find(|(n, _)| !known.contains(&n.as_str())) {
        Some((n, _)) => Err(CliError::Usage(format!("unknown option --{n}"))),
        None => Ok(()),
    }
}

/// Entry point of `csipd cert`.
pub fn cert_main(args: &[String]) -> ExitCode {
    let Some((sub, rest)) = args.split_first() else {
        eprintln!("{CERT_USAGE}");
        return ExitCode::from(2);
    };
    let result = flags(rest).and_then(|f| match sub.as_str() {
        "request" => cert_request(&f),
        "show" => cert_show(&f),
        "selfsigned" => cert_selfsigned(&f),
        "sign" => cert_sign(&f),
        other => Err(CliError::Usage(format!("unknown cert command {other:?}"))),
    });
    match result {
        Ok(code) => code,
        Err(CliError::Usage(e)) => {
            eprintln!("csipd cert: {e}\n{CERT_USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(e)) => {
            eprintln!("csipd cert: {e}");
            ExitCode::from(2)
        }
    }
}

fn cert_request(f: &[(String, String)]) -> Result<ExitCode, CliError> {
    check_known(f, &["key", "csr", "cn"])?;
    let key_path = PathBuf::from(required(f, "key")?);
    let csr_path = PathBuf::from(required(f, "csr")?);
    let cn = required(f, "cn")?;
    let (key, created) = load_or_create_key(&key_path)?;
    let csr = build_csr(&key, cn)?;
    let pem = csr
        .to_pem()
        .map_err(|e| PkiError(format!("CSR encoding: {e}")))?;
    write_file_atomic(&csr_path, &pem, 0o644)?;
    println!(
        "key: {} ({})",
        key_path.display(),
        if created {
            "new P-256 key, mode 0600"
        } else {
            "existing key reused"
        }
    );
    println!(
        "csr: {} (CN={cn}); send it to the utility, then install the certificate it returns",
        csr_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn cert_show(f: &[(String, String)]) -> Result<ExitCode, CliError> {
    check_known(f, &["cert", "key"])?;
    let cert_path = PathBuf::from(required(f, "cert")?);
    let cert = load_cert(&cert_path)?;
    let s = summarize(&cert)?;
    println!("certificate: {}", cert_path.display());
    println!("LFDI:        {}", s.lfdi);
    println!("SFDI:        {}", s.sfdi);
    println!("subject:     {}", s.subject);
    println!("issuer:      {}", s.issuer);
    println!("valid from:  {}", s.not_before);
    println!("valid until: {}", s.not_after);
    println!("key type:    {}", s.key_type);
    let now = SystemTime::now();
    let problems = match flag(f, "key") {
        Some(key_path) => {
            let key_path = Path::new(key_path);
            let problems = check_identity(&cert_path, key_path, now);
            let matches = load_key(key_path).is_ok_and(|k| key_matches(&cert, &k));
            println!(
                "key matches: {} ({})",
                if matches { "yes" } else { "NO" },
                key_path.display()
            );
            problems
        }
        None => {
            // No key given: check validity only (the key check needs the key).
            let dummy = cert_path.clone();
            check_identity(&cert_path, &dummy, now)
                .into_iter()
                .filter(|p| p.file != IdentityFile::Key)
                .collect()
        }
    };
    for problem in &problems {
        println!("{problem}");
    }
    Ok(if problems.iter().any(|p| p.severity == Severity::Error) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn days_flag(f: &[(String, String)], default: u32) -> Result<u32, CliError> {
    match flag(f, "days") {
        Some(d) => d
            .parse()
            .ok()
            .filter(|d| (1..=36_500).contains(d))
            .ok_or_else(|| CliError::Usage(format!("--days must be 1..36500, got {d:?}"))),
        None => Ok(default),
    }
}

fn cert_sign(f: &[(String, String)]) -> Result<ExitCode, CliError> {
    check_known(f, &["ca-cert", "ca-key", "csr", "out", "days"])?;
    let ca_cert_path = PathBuf::from(required(f, "ca-cert")?);
    let ca_key_path = PathBuf::from(required(f, "ca-key")?);
    let csr_path = PathBuf::from(required(f, "csr")?);
    let out_path = PathBuf::from(required(f, "out")?);
    let days = days_flag(f, 3650)?;
    let ca_chain = load_certs(&ca_cert_path)?;
    let ca_key = load_key(&ca_key_path)?;
    // Named here, before the request is read: the mistake is in --ca-key/--ca-cert.
    if !key_matches(&ca_chain[0], &ca_key) {
        return Err(CliError::Failed(format!(
            "--ca-key {} is not the key of --ca-cert {}",
            ca_key_path.display(),
            ca_cert_path.display()
        )));
    }
    let csr_pem = std::fs::read(&csr_path).map_err(|e| err(&csr_path, e))?;
    let csr =
        X509Req::from_pem(&csr_pem).map_err(|_| err(&csr_path, "not a PEM certificate request"))?;
    let cert = sign_csr(&csr, &ca_chain[0], &ca_key, days, SystemTime::now())
        .map_err(|e| PkiError(format!("{}: {e}", csr_path.display())))?;
    // A certificate that does not chain to the CA (not CA:TRUE, no keyCertSign, as one
    // from `cert selfsigned`) would be refused by every server: say so, write nothing.
    if let Err(why) = chains_to(&cert, &ca_chain) {
        return Err(CliError::Failed(format!(
            "--ca-cert {} cannot issue certificates: {why} (a CA certificate needs \
             basicConstraints CA:TRUE and keyUsage keyCertSign; `csipd cert selfsigned` makes \
             a server certificate, not a CA)",
            ca_cert_path.display()
        )));
    }
    // The device certificate followed by the CA chain: what the device presents.
    let mut pem = cert
        .to_pem()
        .map_err(|e| PkiError(format!("certificate encoding: {e}")))?;
    for ca in &ca_chain {
        pem.extend(
            ca.to_pem()
                .map_err(|e| PkiError(format!("certificate encoding: {e}")))?,
        );
    }
    write_file_atomic(&out_path, &pem, 0o644)?;
    let s = summarize(&cert)?;
    println!(
        "certificate: {} ({}, issued by {}, {days} days, chain of {})",
        out_path.display(),
        s.subject,
        s.issuer,
        ca_chain.len() + 1
    );
    println!("LFDI:        {}", s.lfdi);
    println!("SFDI:        {}", s.sfdi);
    Ok(ExitCode::SUCCESS)
}

/// Whether `cert` verifies against `ca_chain` (each of it trusted, so an intermediate
/// CA without its root works), as a TLS peer would check it; the verifier's reason if not.
fn chains_to(cert: &X509, ca_chain: &[X509]) -> Result<(), String> {
    use openssl::stack::Stack;
    use openssl::x509::X509StoreContext;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::verify::X509VerifyFlags;
    let setup = |e: openssl::error::ErrorStack| e.to_string();
    let mut store = X509StoreBuilder::new().map_err(setup)?;
    for ca in ca_chain {
        store.add_cert(ca.clone()).map_err(setup)?;
    }
    store
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(setup)?;
    let store = store.build();
    let mut context = X509StoreContext::new().map_err(setup)?;
    let untrusted = Stack::new().map_err(setup)?;
    context
        .init(&store, cert, &untrusted, |c| {
            Ok(if c.verify_cert()? {
                Ok(())
            } else {
                Err(c.error().error_string().to_string())
            })
        })
        .map_err(setup)?
}

fn cert_selfsigned(f: &[(String, String)]) -> Result<ExitCode, CliError> {
    check_known(f, &["key", "cert", "cn", "days"])?;
    let key_path = PathBuf::from(required(f, "key")?);
    let cert_path = PathBuf::from(required(f, "cert")?);
    let cn = required(f, "cn")?;
    let days = days_flag(f, 365)?;
    eprintln!("csipd cert: WARNING: a self-signed certificate is for lab servers only");
    let (key, _) = load_or_create_key(&key_path)?;
    let cert = self_signed(&key, cn, days, SystemTime::now())?;
    let pem = cert
        .to_pem()
        .map_err(|e| PkiError(format!("certificate encoding: {e}")))?;
    write_file_atomic(&cert_path, &pem, 0o644)?;
    let lfdi = lfdi_of_cert(&cert)?;
    println!(
        "certificate: {} (CN={cn}, {days} days)",
        cert_path.display()
    );
    println!("LFDI:        {lfdi}");
    println!("SFDI:        {}", identity::sfdi(&lfdi).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times_round_trip_through_text() {
        // Epoch, a leap day, the last UTCTime second, the first GeneralizedTime one
        // (RFC 5280: 2050 on), and past 2038 (a 32-bit time_t's end).
        for unix_s in [
            0,
            951_782_400 + 3_661,
            2_524_607_999,
            2_524_608_000,
            4_102_444_800,
        ] {
            let t = asn1_time_from_unix(unix_s).unwrap();
            assert_eq!(unix_seconds(&t), Some(unix_s), "{unix_s}: {}", &*t);
        }
        assert_eq!(
            asn1_time_from_unix(2_524_607_999).unwrap().to_string(),
            "Dec 31 23:59:59 2049 GMT"
        );
        let first_generalized = asn1_time_from_unix(2_524_608_000).unwrap();
        assert_eq!(first_generalized.to_string(), "Jan  1 00:00:00 2050 GMT");
    }

    fn tmp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("csipd-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn key_is_0600_csr_and_selfsigned_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp("gen");
        let key_path = dir.join("device.key");
        let (key, created) = load_or_create_key(&key_path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = load_or_create_key(&key_path).unwrap();
        assert!(!created);
        assert!(again.public_eq(&key));
        let csr = build_csr(&key, "site-42").unwrap();
        assert!(csr.verify(&key).unwrap());
        assert_eq!(name_text(csr.subject_name()), "CN=site-42");

        let now = SystemTime::now();
        let cert = self_signed(&key, "lab-server", 10, now).unwrap();
        let s = summarize(&cert).unwrap();
        assert_eq!(s.subject, "CN=lab-server");
        assert_eq!(s.issuer, "CN=lab-server");
        assert_eq!(s.key_type, "EC P-256");
        assert_eq!(
            s.lfdi,
            identity::lfdi_from_der(&cert.to_der().unwrap()).unwrap()
        );
        assert_eq!(Some(s.sfdi), identity::sfdi(&s.lfdi).ok());
        assert_eq!(s.lfdi.len(), 40);
        let span = s.not_after_unix.unwrap() - s.not_before_unix.unwrap();
        assert_eq!(span, 10 * 86_400);
        assert!(key_matches(&cert, &key));
        assert!(!key_matches(&cert, &generate_p256_key().unwrap()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sign_csr_issues_a_chained_device_certificate() {
        let now = SystemTime::now();
        let ca_key = generate_p256_key().unwrap();
        let ca = self_signed_ca(&ca_key, "Test MICA", 100, now).unwrap();
        let device_key = generate_p256_key().unwrap();
        let csr = build_csr(&device_key, "site-7").unwrap();
        let cert = sign_csr(&csr, &ca, &ca_key, 30, now).unwrap();
        assert!(key_matches(&cert, &device_key));
        let s = summarize(&cert).unwrap();
        assert_eq!(s.subject, "CN=site-7");
        assert_eq!(s.issuer, "CN=Test MICA");
        let links = chain_links(&[cert.clone(), ca.clone()]);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].verified_by_next, Some(true));
        assert_eq!(links[1].verified_by_next, Some(true), "self-signed root");
        // A chain in the wrong order, or with a foreign CA, does not verify.
        let other_key = generate_p256_key().unwrap();
        let other = self_signed_ca(&other_key, "Other CA", 100, now).unwrap();
        assert_eq!(
            chain_links(&[cert.clone(), other])[0].verified_by_next,
            Some(false)
        );
        assert_eq!(
            chain_links(std::slice::from_ref(&cert))[0].verified_by_next,
            None
        );
        // The CA key must be the CA certificate's.
        let wrong = sign_csr(&csr, &ca, &other_key, 30, now).unwrap_err();
        assert!(wrong.0.contains("does not belong"), "{wrong}");
    }

    /// `csipd cert sign` names the CA files when the CA key is not the CA certificate's,
    /// and refuses a CA certificate that cannot issue (one from `cert selfsigned`)
    /// instead of writing a device certificate every server would reject.
    #[test]
    fn cert_sign_names_the_ca_files_and_refuses_a_non_ca() {
        let dir = tmp("sign-cli");
        let now = SystemTime::now();
        let path = |name: &str| dir.join(name).display().to_string();
        let ca_key = generate_p256_key().unwrap();
        write_private_key(&dir.join("ca.key"), &ca_key).unwrap();
        let ca = self_signed_ca(&ca_key, "Lab MICA", 100, now).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.to_pem().unwrap()).unwrap();
        let server = self_signed(&ca_key, "not a CA", 100, now).unwrap();
        std::fs::write(dir.join("server.pem"), server.to_pem().unwrap()).unwrap();
        let device_key = generate_p256_key().unwrap();
        write_private_key(&dir.join("device.key"), &device_key).unwrap();
        let csr = build_csr(&device_key, "site-7").unwrap();
        std::fs::write(dir.join("device.csr"), csr.to_pem().unwrap()).unwrap();
        let sign = |ca_cert: &str, ca_key: &str| {
            let args: Vec<String> = [
                "--ca-cert",
                &path(ca_cert),
                "--ca-key",
                &path(ca_key),
                "--csr",
                &path("device.csr"),
                "--out",
                &path("device.pem"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            cert_sign(&flags(&args).unwrap())
        };
        let failed = |r: Result<ExitCode, CliError>| match r {
            Err(CliError::Failed(why)) => why,
            _ => panic!("expected a failure"),
        };
        let wrong_key = failed(sign("ca.pem", "device.key"));
        assert!(
            wrong_key.contains(&format!("--ca-key {}", path("device.key")))
                && wrong_key.contains(&format!("--ca-cert {}", path("ca.pem"))),
            "{wrong_key}"
        );
        let not_ca = failed(sign("server.pem", "ca.key"));
        assert!(
            not_ca.contains("server.pem") && not_ca.contains("cannot issue"),
            "{not_ca}"
        );
        assert!(!dir.join("device.pem").exists(), "nothing written");
        assert!(sign("ca.pem", "ca.key").is_ok());
        let issued = load_certs(&dir.join("device.pem")).unwrap();
        assert_eq!(chains_to(&issued[0], &issued[1..]), Ok(()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn check_identity_reports_expiry_mismatch_and_missing_files() {
        let dir = tmp("check");
        let key_path = dir.join("k.pem");
        let cert_path = dir.join("c.pem");
        let (key, _) = load_or_create_key(&key_path).unwrap();
        let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cert = self_signed(&key, "dev", 100, issued).unwrap();
        std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();

        let day = Duration::from_secs(86_400);
        assert!(check_identity(&cert_path, &key_path, issued + day).is_empty());
        let soon = check_identity(&cert_path, &key_path, issued + 80 * day);
        assert_eq!(soon.len(), 1);
        assert_eq!(soon[0].severity, Severity::Warning);
        let expired = check_identity(&cert_path, &key_path, issued + 101 * day);
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert_eq!(expired[0].severity, Severity::Error);
        assert!(expired[0].message.contains("expired"), "{}", expired[0]);
        let early = check_identity(&cert_path, &key_path, issued - day);
        assert!(early[0].message.contains("not valid before"), "{early:?}");

        let other_key = dir.join("other.pem");
        write_private_key(&other_key, &generate_p256_key().unwrap()).unwrap();
        let mismatch = check_identity(&cert_path, &other_key, issued + day);
        assert_eq!(mismatch.len(), 1);
        assert!(
            mismatch[0].message.contains("does not belong"),
            "{}",
            mismatch[0]
        );

        let missing = check_identity(&dir.join("none.pem"), &key_path, issued);
        assert!(missing[0].message.contains("none.pem"), "{}", missing[0]);
        std::fs::write(dir.join("junk.pem"), "hello").unwrap();
        let junk = check_identity(&cert_path, &dir.join("junk.pem"), issued + day);
        assert!(junk[0].message.contains("junk.pem"), "{}", junk[0]);
        assert_eq!(
            junk[0].file,
            IdentityFile::Key,
            "a bad key is the key's problem"
        );
        assert_eq!(missing[0].file, IdentityFile::Cert);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
