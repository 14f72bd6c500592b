//! UCI configuration: the exact OpenWrt file syntax ([`uci`]), the typed [`Config`] for
//! `/etc/config/csipd` with every option validated, and `csipd check-config`.
//!
//! Pure apart from [`load`] and [`cli_check_config`], which read the file: [`from_text`]
//! takes the text and the file name used in messages.
//!
//! ```no_run
//! let (config, warnings) = match csipd::config::load("/etc/config/csipd") {
//!     Ok(ok) => ok,
//!     Err(e) => { eprintln!("{e}"); std::process::exit(2) }
//! };
//! for w in &warnings { log::warn!("{w}") }
//! if let Some(at) = config.cert_location() { println!("certificate set at {at}") }
//! ```

pub mod typed;
pub mod uci;
pub mod zonenames;

use std::fmt;
use std::process::ExitCode;

pub use typed::{BrokerUrl, MQTT_SECTION, MqttConfig, MqttScheme};
pub use typed::{
    Config, ControlConfig, CsipAusNamespace, DeviceConfig, DeviceRole, Diagnostic, FixedLimits,
    LogLevel, MainConfig, Parity, PriceConfig, PriceSource, Profile, SECTION_TYPES, SERVER_SECTION,
    ServerConfig, Severity, SourceLocation, TariffWindow, Transport, Weekday,
};

/// Where csipd reads its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/config/csipd";

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io { path: String, error: std::io::Error },
    /// The file has errors (and maybe warnings); all of them, in file order.
    Invalid(Vec<Diagnostic>),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, error } => write!(f, "{path}: cannot read: {error}"),
            LoadError::Invalid(diagnostics) => {
                let mut first = true;
                for d in diagnostics {
                    if !first {
                        writeln!(f)?;
                    }
                    first = false;
                    write!(f, "{d}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// Every problem as a printable line: the read error, or each diagnostic (errors
    /// and warnings, in file order).
    pub fn lines(&self) -> Vec<String> {
        match self {
            LoadError::Io { .. } => vec![self.to_string()],
            LoadError::Invalid(diagnostics) => diagnostics.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// The errors alone (what made the file unusable), as printable lines.
    pub fn error_lines(&self) -> Vec<String> {
        match self {
            LoadError::Io { .. } => vec![self.to_string()],
            LoadError::Invalid(diagnostics) => diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect(),
        }
    }
}

/// Parses and validates configuration text. `file` names it in messages. Returns the
/// config and its warnings, or every problem when there is at least one error.
pub fn from_text(text: &str, file: &str) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (config, diagnostics) = build_even_with_errors(text, file)?;
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        Err(diagnostics)
    } else {
        Ok((config, diagnostics))
    }
}

/// The typed config (bad values left at their defaults) and every problem, or the
/// syntax error when the text is not UCI.
fn build_even_with_errors(
    text: &str,
    file: &str,
) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    let parsed = uci::parse(text, file).map_err(|e| {
        vec![Diagnostic {
            severity: Severity::Error,
            file: e.file,
            line: e.pos.line,
            col: e.pos.col,
            message: e.message,
        }]
    })?;
    let (config, mut diagnostics) = typed::build(&parsed, file);
    diagnostics.extend(parsed.repeated.iter().map(|r| Diagnostic {
        severity: Severity::Warning,
        file: file.to_string(),
        line: r.pos.line,
        col: r.pos.col,
        message: format!(
            "section '{}' is declared again (first on line {}): its options are merged into \
             that {} section, not a second one; give each {} its own name",
            r.name, r.first_line, r.section_type, r.section_type
        ),
    }));
    Ok((config, diagnostics))
}

/// What `csipd check-config` reports for configuration text: the problems of the text
/// and those of the files its options name (the server's certificate, key and CA
/// bundle; the MQTT files), each at the line of its option and in line order. The files
/// are checked even when the text has errors elsewhere, so one run shows everything
/// to fix; an option whose value already has an error is not checked again.
pub fn check_text_and_files(text: &str, file: &str, now: std::time::SystemTime) -> Vec<Diagnostic> {
    let (config, mut diagnostics) = match build_even_with_errors(text, file) {
        Ok(built) => built,
        Err(syntax) => return syntax,
    };
    let bad_lines: std::collections::HashSet<u32> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.line)
        .collect();
    let files = identity_diagnostics(&config, now)
        .into_iter()
        .chain(server_ca_diagnostics(&config))
        .chain(typed::mqtt::file_diagnostics(&config, now));
    diagnostics.extend(files.filter(|d| !bad_lines.contains(&d.line)));
    diagnostics.sort_by_key(|d| d.line);
    diagnostics
}

/// Reads and validates the file at `path` (what `csipd run` calls).
pub fn load(path: &str) -> Result<(Config, Vec<Diagnostic>), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Io {
        path: path.to_string(),
        error,
    })?;
    from_text(&text, path).map_err(LoadError::Invalid)
}

/// `csipd check-config [FILE]`: prints every problem as `FILE:LINE: severity: message`
/// and exits 2 if there is an error, 0 otherwise.
pub fn cli_check_config(args: &[String]) -> ExitCode {
    let path = match args {
        [] => DEFAULT_PATH,
        [path] if !path.starts_with('-') => path.as_str(),
        _ => {
            eprintln!("usage: csipd check-config [FILE]   (default {DEFAULT_PATH})");
            return ExitCode::from(2);
        }
    };
    // The files the options name are checked here, at the CLI edge: the typed config
    // stays pure.
    let loaded = std::fs::read_to_string(path)
        .map_err(|error| LoadError::Io {
            path: path.to_string(),
            error,
        })
        .and_then(|text| {
            let diagnostics = check_text_and_files(&text, path, std::time::SystemTime::now());
            if diagnostics.iter().any(|d| d.severity == Severity::Error) {
                Err(LoadError::Invalid(diagnostics))
            } else {
                Ok(diagnostics)
            }
        });
    match loaded {
        Ok(warnings) => {
            for w in &warnings {
                println!("{w}");
            }
            println!(
                "{path}: ok ({} warning{})",
                warnings.len(),
                if warnings.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(LoadError::Invalid(diagnostics)) => {
            for d in &diagnostics {
                println!("{d}");
            }
            let errors = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            println!(
                "{path}: {errors} error{}, {} warning{}",
                if errors == 1 { "" } else { "s" },
                diagnostics.len() - errors,
                if diagnostics.len() - errors == 1 {
                    ""
                } else {
                    "s"
                }
            );
            ExitCode::from(2)
        }
        Err(e @ LoadError::Io { .. }) => {
            println!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Problems with the certificate and key the server section names (unreadable,
/// expired, not yet valid, key not matching), located at the `cert` option, or at the
/// `key` option when the key itself cannot be read.
pub fn identity_diagnostics(config: &Config, now: std::time::SystemTime) -> Vec<Diagnostic> {
    let (Some(cert), Some(key)) = (&config.server.cert, &config.server.key) else {
        return Vec::new();
    };
    crate::pki::check_identity(std::path::Path::new(cert), std::path::Path::new(key), now)
        .into_iter()
        .map(|problem| {
            let (option, path) = match problem.file {
                crate::pki::IdentityFile::Cert => ("cert", cert),
                crate::pki::IdentityFile::Key => ("key", key),
            };
            server_diagnostic(
                config,
                option,
                match problem.severity {
                    crate::pki::Severity::Error => Severity::Error,
                    crate::pki::Severity::Warning => Severity::Warning,
                },
                format!("server {option} '{path}': {}", problem.message),
            )
        })
        .collect()
}

/// The server's `ca` bundle: readable, with at least one PEM certificate (else csipd
/// cannot verify the utility server and never connects). At the `ca` option.
pub fn server_ca_diagnostics(config: &Config) -> Vec<Diagnostic> {
    let Some(ca) = &config.server.ca else {
        return Vec::new();
    };
    match crate::pki::load_certs(std::path::Path::new(ca)) {
        Ok(_) => Vec::new(),
        Err(e) => vec![server_diagnostic(
            config,
            "ca",
            Severity::Error,
            format!("server ca '{ca}': CA bundle {e}"),
        )],
    }
}

/// A diagnostic at `option` of the server section (the file's first line if unset).
fn server_diagnostic(
    config: &Config,
    option: &str,
    severity: Severity,
    message: String,
) -> Diagnostic {
    let location = config.location(SERVER_SECTION, option);
    Diagnostic {
        severity,
        file: location
            .as_ref()
            .map_or_else(|| config.file.clone(), |l| l.file.clone()),
        line: location.as_ref().map_or(0, |l| l.line),
        col: 1,
        message,
    }
}

#[cfg(test)]
mod tests;
