//! Device identity: LFDI and SFDI from the device certificate (IEEE 2030.5 §6.3.4).
//!
//! LFDI = the first 160 bits of SHA-256 over the certificate's DER bytes, written as 40
//! uppercase hex digits. SFDI = the first 36 bits of the LFDI as a decimal number, times
//! ten, plus a check digit that makes the digit sum a multiple of ten.

use std::fmt;

use openssl::sha::sha256;
use openssl::x509::X509;

/// What went wrong deriving an identity, naming the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The PEM text holds no `CERTIFICATE` block.
    NoCertificate,
    /// The PEM text could not be decoded.
    BadPem(String),
    /// The bytes are not an X.509 certificate.
    BadCertificate(String),
    /// An LFDI string that is not at least 9 hex digits.
    BadLfdi(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCertificate => write!(f, "no CERTIFICATE block in the PEM data"),
            Self::BadPem(e) => write!(f, "PEM data could not be decoded: {e}"),
            Self::BadCertificate(e) => write!(f, "not an X.509 certificate: {e}"),
            Self::BadLfdi(s) => write!(f, "LFDI \"{s}\" must start with at least 9 hex digits"),
        }
    }
}

impl std::error::Error for IdentityError {}

/// LFDI and SFDI of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// 40 uppercase hex digits.
    pub lfdi: String,
    pub sfdi: u64,
}

/// LFDI of a certificate given as DER bytes (checked to be an X.509 certificate, so a
/// key or CSR passed by mistake is an error rather than a wrong identity).
pub fn lfdi_from_der(der: &[u8]) -> Result<String, IdentityError> {
    X509::from_der(der).map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    Ok(lfdi_of_bytes(der))
}

/// LFDI over raw bytes, without checking what they are.
fn lfdi_of_bytes(der: &[u8]) -> String {
    let digest = sha256(der);
    digest[..20].iter().map(|b| format!("{b:02X}")).collect()
}

/// LFDI of the first certificate in PEM text (a chain file gives the leaf, which comes
/// first; private-key blocks before it are skipped).
pub fn lfdi_from_pem(pem: &[u8]) -> Result<String, IdentityError> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(pem, BEGIN).ok_or(IdentityError::NoCertificate)? + BEGIN.len();
    let len = find(&pem[start..], END)
        .ok_or_else(|| IdentityError::BadPem("no END CERTIFICATE line".into()))?;
    // The DER bytes exactly as written (hashing a re-encoding could differ from them).
    let base64: String = String::from_utf8_lossy(&pem[start..start + len])
        .split_whitespace()
        .collect();
    let der = openssl::base64::decode_block(&base64)
        .map_err(|e| IdentityError::BadPem(format!("bad base64: {e}")))?;
    lfdi_from_der(&der)
}

/// SFDI from an LFDI (either case).
pub fn sfdi(lfdi: &str) -> Result<u64, IdentityError> {
    let head = lfdi.trim().get(..9).unwrap_or("");
    let value = if head.len() == 9 && head.bytes().all(|b| b.is_ascii_hexdigit()) {
        u64::from_str_radix(head, 16).map_err(|_| IdentityError::BadLfdi(lfdi.to_string()))?
    } else {
        return Err(IdentityError::BadLfdi(lfdi.to_string()));
    };
    let mut digit_sum = 0u64;
    let mut rest = value;
    while rest > 0 {
        digit_sum += rest % 10;
        rest /= 10;
    }
    Ok(value * 10 + (10 - digit_sum % 10) % 10)
}

/// LFDI and SFDI of the first certificate in PEM text.
pub fn identity_from_pem(pem: &[u8]) -> Result<Identity, IdentityError> {
    let lfdi = lfdi_from_pem(pem)?;
    let sfdi = sfdi(&lfdi)?;
    Ok(Identity { lfdi, sfdi })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sfdi_examples_from_peers_md() {
        assert_eq!(sfdi("7AD980E2F").unwrap(), 329771945436);
        assert_eq!(sfdi("a2393ac7a").unwrap(), 435465534669);
        // Fixture EndDevices carry SFDIs consistent with their LFDIs.
        assert_eq!(
            sfdi("4075DE6031E562ACF4D9EAA765A5B2ED00057269").unwrap(),
            173034634270
        );
        assert_eq!(
            sfdi("B1857F74B5DA25E82E78BE34877221CB89D55F45").unwrap(),
            476530583793
        );
    }

    #[test]
    fn sfdi_check_digit_makes_digit_sum_a_multiple_of_ten() {
        for lfdi in ["000000000", "FFFFFFFFF", "123456789", "0000000A1"] {
            let s = sfdi(lfdi).unwrap();
            let digits: u64 = s.to_string().bytes().map(|b| u64::from(b - b'0')).sum();
            assert_eq!(digits % 10, 0, "{lfdi} -> {s}");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(sfdi("12345"), Err(IdentityError::BadLfdi("12345".into())));
        assert!(sfdi("12345678G0").is_err());
        assert!(sfdi("ÄÄÄÄÄÄÄÄÄÄ").is_err());
        assert_eq!(
            lfdi_from_pem(b"nothing here"),
            Err(IdentityError::NoCertificate)
        );
        assert!(matches!(
            lfdi_from_der(b"\x30\x03\x02\x01\x01"),
            Err(IdentityError::BadCertificate(_))
        ));
        let not_base64 = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(lfdi_from_pem(not_base64).is_err());
    }
}
