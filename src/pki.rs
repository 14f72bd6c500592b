//! Certificates and keys: load PEM identity, LFDI/SFDI, key and CSR generation, expiry.

use std::process::ExitCode;

/// Entry point of `csipd cert` (being written).
pub fn cert_main(_args: &[String]) -> ExitCode {
    eprintln!("csipd cert: not implemented yet");
    ExitCode::from(2)
}
