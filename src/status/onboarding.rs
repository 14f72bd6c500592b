//! Certificate onboarding behind LuCI's Certificate page (`ubus call csipd cert_*`):
//! where the key, request, certificate and CA bundle live, making the key and request,
//! installing the signed certificate (with its manufacturer/MICA chain) and the utility's
//! CA bundle, and what the installed identity is (LFDI/SFDI, key match, chain, expiry).
//!
//! Paths come from the `utility` server section's `key`, `cert` and `ca` options, read
//! straight from the UCI text so the page works while the rest of the file has errors;
//! an option that is not set defaults to a file in the `main` section's `data_dir`
//! (`/etc/csipd/client.key`, `client.crt`, `utility-ca.pem`), and installing a file at a
//! default path writes the option into the file, right after the section's `config` line.

use crate::config::uci;
use crate::pki;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The files of the device identity and whether each path is set in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityPaths {
    pub key: PathBuf,
    pub csr: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
    pub key_configured: bool,
    pub cert_configured: bool,
    pub ca_configured: bool,
}

/// Why an onboarding step failed: shown to the installer as is.
#[derive(Debug, Clone, PartialEq)]
pub struct OnboardingError(pub String);

impl std::fmt::Display for OnboardingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OnboardingError {}

impl From<pki::PkiError> for OnboardingError {
    fn from(e: pki::PkiError) -> Self {
        OnboardingError(e.0)
    }
}

fn option_of(file: &uci::UciFile, section: &str, option: &str) -> Option<String> {
    file.section(section)
        .and_then(|s| s.get(option))
        .and_then(|o| o.values.first())
        .map(|v| v.text.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The identity files named by the config text (defaults where unset).
pub fn identity_paths(config_text: &str) -> IdentityPaths {
    let file = uci::parse(config_text, "config").unwrap_or_default();
    let dir = option_of(&file, "main", "data_dir").unwrap_or_else(|| "/etc/csipd".into());
    let dir = Path::new(&dir);
    let key = option_of(&file, crate::config::SERVER_SECTION, "key");
    let cert = option_of(&file, crate::config::SERVER_SECTION, "cert");
    let ca = option_of(&file, crate::config::SERVER_SECTION, "ca");
    let key_path = key
        .as_ref()
        .map_or_else(|| dir.join("client.key"), PathBuf::from);
    IdentityPaths {
        csr: key_path.with_extension("csr"),
        key: key_path,
        cert: cert
            .as_ref()
            .map_or_else(|| dir.join("client.crt"), PathBuf::from),
        ca: ca
            .as_ref()
            .map_or_else(|| dir.join("utility-ca.pem"), PathBuf::from),
        key_configured: key.is_some(),
        cert_configured: cert.is_some(),
        ca_configured: ca.is_some(),
    }
}

/// Sets `option` of the `utility` server section in the UCI file at `config_path` to
/// `value`, when it is not set yet: one `option` line right after the section's `config`
/// line (or a new section at the end). The rest of the file is kept byte for byte.
pub fn set_server_option(
    config_path: &Path,
    option: &str,
    value: &str,
) -> Result<(), OnboardingError> {
    let text = std::fs::read_to_string(config_path).unwrap_or_default();
    let file = uci::parse(&text, &config_path.display().to_string()).map_err(|e| {
        OnboardingError(format!(
            "{}:{}: {} (fix the file before installing certificates)",
            e.file, e.pos.line, e.message
        ))
    })?;
    if option_of(&file, crate::config::SERVER_SECTION, option).is_some() {
        return Ok(());
    }
    let line = format!("\toption {option} '{}'", value.replace('\'', "'\\''"));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match file.section(crate::config::SERVER_SECTION) {
        Some(section) => {
            let at = (section.pos.line as usize).min(lines.len());
            lines.insert(at, line);
        }
        None => {
            lines.push(String::new());
            lines.push(format!("config server '{}'", crate::config::SERVER_SECTION));
            lines.push(line);
        }
    }
    let mut new_text = lines.join("\n");
    new_text.push('\n');
    pki::write_public_file(config_path, new_text.as_bytes()).map_err(OnboardingError::from)
}

fn unix_now(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn cert_json(
    certs: &[openssl::x509::X509],
    key: Option<&openssl::pkey::PKey<openssl::pkey::Private>>,
    now: SystemTime,
) -> Value {
    let leaf = &certs[0];
    let now_s = unix_now(now);
    let summary = pki::summarize(leaf);
    let links = pki::chain_links(certs);
    let chain: Vec<Value> = links
        .iter()
        .map(|l| {
            json!({
                "subject": l.subject,
                "issuer": l.issuer,
                "not_after": l.not_after,
                "not_after_unix": l.not_after_unix,
                "verified_by_next": l.verified_by_next,
            })
        })
        .collect();
    // The chain holds when every link with an issuer in the file verifies.
    let chain_ok = links.iter().all(|l| l.verified_by_next != Some(false));
    match summary {
        Ok(s) => {
            let days_left = s.not_after_unix.map(|t| (t - now_s).div_euclid(86_400));
            json!({
                "lfdi": s.lfdi,
                "sfdi": s.sfdi,
                "subject": s.subject,
                "issuer": s.issuer,
                "not_before": s.not_before,
                "not_after": s.not_after,
                "not_after_unix": s.not_after_unix,
                "days_left": days_left,
                "expired": s.not_after_unix.is_some_and(|t| t < now_s),
                "not_yet_valid": s.not_before_unix.is_some_and(|t| t > now_s),
                "expires_soon": s.not_after_unix.is_some_and(|t| {
                    t >= now_s && t - now_s < pki::EXPIRY_WARNING.as_secs() as i64
                }),
                "key_type": s.key_type,
                "key_matches": key.map(|k| pki::key_matches(leaf, k)),
                "chain": chain,
                "chain_ok": chain_ok,
            })
        }
        Err(e) => json!({ "problem": e.0 }),
    }
}

/// What the Certificate page shows: the paths, which steps are done, the installed
/// certificate's identity and health, and the CA bundle. `step` is the next thing to do:
/// `make_key`, `send_request`, `install_certificate`, `install_ca` or `done`.
pub fn cert_info(config_text: &str, now: SystemTime) -> Value {
    let paths = identity_paths(config_text);
    let key = pki::load_key(&paths.key);
    let key_ok = key.as_ref().ok();
    let cert_loaded = paths.cert.exists().then(|| pki::load_certs(&paths.cert));
    let ca_loaded = paths.ca.exists().then(|| pki::load_certs(&paths.ca));
    let mut problems: Vec<String> = Vec::new();
    if paths.key.exists() {
        if let Err(e) = &key {
            problems.push(e.0.clone());
        }
    }
    let cert = match &cert_loaded {
        Some(Ok(certs)) => {
            let info = cert_json(certs, key_ok, now);
            if info["key_matches"] == false {
                problems.push(format!(
                    "the certificate {} was not issued for the key {}",
                    paths.cert.display(),
                    paths.key.display()
                ));
            }
            if info["expired"] == true {
                problems.push(format!(
                    "the certificate expired on {}",
                    info["not_after"].as_str().unwrap_or("?")
                ));
            }
            if info["chain_ok"] == false {
                problems.push("the certificate chain does not verify: each certificate must be followed by the one that issued it".into());
            }
            info
        }
        Some(Err(e)) => {
            problems.push(e.0.clone());
            Value::Null
        }
        None => Value::Null,
    };
    let ca = match &ca_loaded {
        Some(Ok(certs)) => json!({
            "certs": certs.iter().map(|c| json!({
                "subject": pki::name_text(c.subject_name()),
                "not_after": c.not_after().to_string(),
            })).collect::<Vec<_>>(),
        }),
        Some(Err(e)) => {
            problems.push(e.0.clone());
            Value::Null
        }
        None => Value::Null,
    };
    let csr_pem = std::fs::read_to_string(&paths.csr).ok();
    let step = if key_ok.is_none() {
        "make_key"
    } else if cert.is_null() {
        if csr_pem.is_some() {
            "install_certificate"
        } else {
            "send_request"
        }
    } else if ca.is_null() {
        "install_ca"
    } else {
        "done"
    };
    json!({
        "step": step,
        "key_path": paths.key.display().to_string(),
        "csr_path": paths.csr.display().to_string(),
        "cert_path": paths.cert.display().to_string(),
        "ca_path": paths.ca.display().to_string(),
        "key_exists": key_ok.is_some(),
        "csr_exists": csr_pem.is_some(),
        "certificate": cert,
        "ca": ca,
        "problems": problems,
    })
}

/// The stored certificate request, for showing and downloading it again.
pub fn cert_csr(config_text: &str) -> Result<Value, OnboardingError> {
    let paths = identity_paths(config_text);
    let pem = std::fs::read_to_string(&paths.csr).map_err(|e| {
        OnboardingError(format!(
            "no certificate request at {} ({e}): generate one first",
            paths.csr.display()
        ))
    })?;
    let subject = openssl::x509::X509Req::from_pem(pem.as_bytes())
        .map(|r| pki::name_text(r.subject_name()))
        .map_err(|_| {
            OnboardingError(format!(
                "{} is not a PEM certificate request",
                paths.csr.display()
            ))
        })?;
    let file_name = paths.csr.file_name().map_or_else(
        || "client.csr".to_string(),
        |n| n.to_string_lossy().to_string(),
    );
    Ok(json!({
        "csr": pem,
        "csr_path": paths.csr.display().to_string(),
        "file_name": file_name,
        "subject": subject,
    }))
}

/// Makes (or reuses) the key, mode 0600, and a request for `common_name` next to it;
/// sets the `key` option when the default path was used.
pub fn cert_request(config_path: &Path, common_name: &str) -> Result<Value, OnboardingError> {
    let text = std::fs::read_to_string(config_path).unwrap_or_default();
    let paths = identity_paths(&text);
    if let Some(dir) = paths.key.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| OnboardingError(format!("cannot make {}: {e}", dir.display())))?;
    }
    let (key, created) = pki::load_or_create_key(&paths.key)?;
    let csr = pki::build_csr(&key, common_name)?;
    let pem = csr
        .to_pem()
        .map_err(|e| OnboardingError(format!("CSR encoding: {e}")))?;
    pki::write_public_file(&paths.csr, &pem)?;
    if !paths.key_configured {
        set_server_option(config_path, "key", &paths.key.display().to_string())?;
    }
    Ok(json!({
        "csr": String::from_utf8_lossy(&pem),
        "csr_path": paths.csr.display().to_string(),
        "key_path": paths.key.display().to_string(),
        "key_created": created,
    }))
}

/// Installs the signed device certificate (PEM: the device certificate first, then its
/// manufacturer/MICA chain) and/or the utility's CA bundle, after checking them: the
/// certificate must be for this router's key, valid now, and its chain must verify.
/// Sets the `cert`/`ca` options when the default paths were used. Returns what changed.
pub fn cert_install(
    config_path: &Path,
    cert_pem: Option<&str>,
    ca_pem: Option<&str>,
    now: SystemTime,
) -> Result<Vec<String>, OnboardingError> {
    let text = std::fs::read_to_string(config_path).unwrap_or_default();
    let paths = identity_paths(&text);
    let mut installed = Vec::new();
    let cert_pem = cert_pem.map(str::trim).filter(|p| !p.is_empty());
    let ca_pem = ca_pem.map(str::trim).filter(|p| !p.is_empty());
    if cert_pem.is_none() && ca_pem.is_none() {
        return Err(OnboardingError(
            "nothing to install: give the signed certificate, the CA bundle, or both".into(),
        ));
    }
    // Check both before writing either, so a bad CA bundle never half-installs.
    let certs = cert_pem
        .map(|pem| pki::certs_from_pem(pem, "the signed certificate"))
        .transpose()?;
    let ca_certs = ca_pem
        .map(|pem| pki::certs_from_pem(pem, "the CA bundle"))
        .transpose()?;
    if let Some(certs) = &certs {
        let key = pki::load_key(&paths.key).map_err(|e| {
            OnboardingError(format!(
                "this router has no key yet ({e}): generate the key and request first"
            ))
        })?;
        if !pki::key_matches(&certs[0], &key) {
            return Err(OnboardingError(format!(
                "this certificate ({}) was not issued for this router's key {}: is it the \
                 certificate for another site, or for an older request?",
                pki::name_text(certs[0].subject_name()),
                paths.key.display()
            )));
        }
        let info = cert_json(certs, Some(&key), now);
        if info["expired"] == true {
            return Err(OnboardingError(format!(
                "this certificate expired on {}",
                info["not_after"].as_str().unwrap_or("?")
            )));
        }
        if info["chain_ok"] == false {
            return Err(OnboardingError(
                "the certificate chain does not verify: paste the device certificate first, \
                 then the manufacturer (MICA) certificate that issued it, then its issuer"
                    .into(),
            ));
        }
    }
    if let Some(certs) = &certs {
        install_pem(
            certs,
            &paths.cert,
            "cert",
            paths.cert_configured,
            config_path,
        )?;
        installed.push(paths.cert.display().to_string());
    }
    if let Some(certs) = &ca_certs {
        install_pem(certs, &paths.ca, "ca", paths.ca_configured, config_path)?;
        installed.push(paths.ca.display().to_string());
    }
    Ok(installed)
}

/// Writes `certs` as one PEM file at `path` (public: no secret in it) and, unless the
/// configuration already names a file there (`configured`), sets the utility section's
/// `option` to it.
fn install_pem(
    certs: &[openssl::x509::X509],
    path: &Path,
    option: &str,
    configured: bool,
    config_path: &Path,
) -> Result<(), OnboardingError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| OnboardingError(format!("cannot make {}: {e}", dir.display())))?;
    }
    let mut pem = Vec::new();
    for c in certs {
        pem.extend(
            c.to_pem()
                .map_err(|e| OnboardingError(format!("encoding: {e}")))?,
        );
    }
    pki::write_public_file(path, &pem)?;
    if !configured {
        set_server_option(config_path, option, &path.display().to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths_follow_data_dir_and_options_win() {
        let p = identity_paths("config csipd 'main'\n\toption data_dir '/srv/c'\n");
        assert_eq!(p.key, PathBuf::from("/srv/c/client.key"));
        assert_eq!(p.csr, PathBuf::from("/srv/c/client.csr"));
        assert_eq!(p.cert, PathBuf::from("/srv/c/client.crt"));
        assert!(!p.key_configured);
        let p = identity_paths("config server 'utility'\n\toption key '/k/dev.pem'\n");
        assert_eq!(p.key, PathBuf::from("/k/dev.pem"));
        assert_eq!(p.csr, PathBuf::from("/k/dev.csr"));
        assert!(p.key_configured);
        // A file that does not parse still gets the defaults.
        assert_eq!(
            identity_paths("config 'x").key,
            PathBuf::from("/etc/csipd/client.key")
        );
    }

    #[test]
    fn set_server_option_inserts_once_and_keeps_the_rest() {
        let dir = std::env::temp_dir().join(format!("csipd-onb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("csipd");
        let original =
            "# top\nconfig server 'utility'\n\toption dcap_url ''\n\nconfig control 'site'\n";
        std::fs::write(&path, original).unwrap();
        set_server_option(&path, "cert", "/etc/csipd/client.crt").unwrap();
        set_server_option(&path, "cert", "/other").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# top\nconfig server 'utility'\n\toption cert '/etc/csipd/client.crt'\n\toption dcap_url ''\n\nconfig control 'site'\n"
        );
        std::fs::write(&path, "config control 'site'\n").unwrap();
        set_server_option(&path, "ca", "/etc/csipd/utility-ca.pem").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with("config server 'utility'\n\toption ca '/etc/csipd/utility-ca.pem'\n"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
