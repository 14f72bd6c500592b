//! Stable mRIDs for what csipd creates on the server (mirror usage points, meter
//! readings, reading sets).
//!
//! An mRID is 128 bits (32 hex digits). The last 8 digits are the owner's IANA Private
//! Enterprise Number; the certification harness and real servers write it as 8 decimal
//! digits (PEN 28547 → `...00028547`), so that is what this module does. The first 24
//! digits are the start of SHA-256 over the device LFDI and the names of the thing, so
//! the same thing gets the same mRID after a restart or a reinstall, and different
//! devices never collide.

use openssl::sha::Sha256;

/// Largest PEN that fits in 8 decimal digits.
pub const MAX_PEN: u32 = 99_999_999;

/// Error: a PEN that does not fit the mRID's 8 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PenTooLarge(pub u32);

impl std::fmt::Display for PenTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PEN {} is larger than {MAX_PEN} (8 digits)", self.0)
    }
}

impl std::error::Error for PenTooLarge {}

/// mRID for `parts` (e.g. `["mup", "site"]`) of device `lfdi`, ending in `pen`.
/// `lfdi` is compared case-insensitively; parts are case-sensitive names.
pub fn stable_mrid(lfdi: &str, parts: &[&str], pen: u32) -> Result<String, PenTooLarge> {
    if pen > MAX_PEN {
        return Err(PenTooLarge(pen));
    }
    let mut hasher = Sha256::new();
    hasher.update(b"csipd-mrid-v1\0");
    hasher.update(lfdi.trim().to_ascii_uppercase().as_bytes());
    for part in parts {
        // Length-prefixed so ["ab", "c"] and ["a", "bc"] differ.
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finish();
    let mut mrid: String = digest[..12].iter().map(|b| format!("{b:02X}")).collect();
    mrid.push_str(&format!("{pen:08}"));
    Ok(mrid)
}

/// mRID of a MirrorUsagePoint, e.g. role `"site"` or `"der"`.
pub fn mirror_usage_point(lfdi: &str, role: &str, pen: u32) -> Result<String, PenTooLarge> {
    stable_mrid(lfdi, &["mup", role], pen)
}

/// mRID of a MirrorMeterReading of a usage point, e.g. reading `"w-total"`.
pub fn mirror_meter_reading(
    lfdi: &str,
    role: &str,
    reading: &str,
    pen: u32,
) -> Result<String, PenTooLarge> {
    stable_mrid(lfdi, &["mmr", role, reading], pen)
}

/// mRID of a MirrorReadingSet: one per reading and period start (Unix seconds).
pub fn mirror_reading_set(
    lfdi: &str,
    role: &str,
    reading: &str,
    period_start: i64,
    pen: u32,
) -> Result<String, PenTooLarge> {
    stable_mrid(
        lfdi,
        &["mrs", role, reading, &period_start.to_string()],
        pen,
    )
}

/// True if `mrid` is 32 hex digits ending in `pen` as written by this module.
pub fn ends_with_pen(mrid: &str, pen: u32) -> bool {
    mrid.len() == 32
        && mrid.bytes().all(|b| b.is_ascii_hexdigit())
        && mrid.ends_with(&format!("{pen:08}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LFDI: &str = "4075DE6031E562ACF4D9EAA765A5B2ED00057269";

    #[test]
    fn mrids_are_stable_distinct_and_pen_suffixed() {
        let site = mirror_usage_point(LFDI, "site", 28547).unwrap();
        // Same inputs (LFDI in either case), same mRID: survives restarts.
        assert_eq!(
            site,
            mirror_usage_point(&LFDI.to_lowercase(), "site", 28547).unwrap()
        );
        // Pinned value (computed independently with Python hashlib): changing the derivation would orphan every MUP already created.
        assert_eq!(site, "72140829CA0C095C1B4B9AD400028547");
        assert!(ends_with_pen(&site, 28547));
        let der = mirror_usage_point(LFDI, "der", 28547).unwrap();
        let w = mirror_meter_reading(LFDI, "site", "w", 28547).unwrap();
        let var = mirror_meter_reading(LFDI, "site", "var", 28547).unwrap();
        let other = mirror_usage_point("B1857F74B5DA25E82E78BE34877221CB89D55F45", "site", 28547);
        let set1 = mirror_reading_set(LFDI, "site", "w", 1_700_000_000, 28547).unwrap();
        let set2 = mirror_reading_set(LFDI, "site", "w", 1_700_000_060, 28547).unwrap();
        let all = [&site, &der, &w, &var, &other.unwrap(), &set1, &set2];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.len(), 32);
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(
            stable_mrid(LFDI, &["ab", "c"], 1).unwrap(),
            stable_mrid(LFDI, &["a", "bc"], 1).unwrap()
        );
    }

    #[test]
    fn pen_out_of_range_is_an_error() {
        assert_eq!(
            mirror_usage_point(LFDI, "site", 100_000_000),
            Err(PenTooLarge(100_000_000))
        );
        assert!(
            mirror_usage_point(LFDI, "site", MAX_PEN)
                .unwrap()
                .ends_with("99999999")
        );
    }
}
