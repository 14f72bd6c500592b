//! IANA zone names as OpenWrt's System page writes them (`zonename` in
//! `/etc/config/system`), mapped to the POSIX TZ string the same page writes beside it
//! (`timezone`, what `/etc/TZ` holds). csipd computes local time from POSIX rules only,
//! so a `timezone` option holding a zone name is read through this table. Covers the
//! zones of the CSIP-AUS market (Australia, with the aliases the tz database keeps) and
//! UTC; a name not listed is an error naming the POSIX form to use.

/// `(zone name, POSIX TZ)`; the POSIX strings are the tz database's current rules.
pub const ZONES: &[(&str, &str)] = &[
    ("Australia/Adelaide", "ACST-9:30ACDT,M10.1.0,M4.1.0/3"),
    ("Australia/Broken_Hill", "ACST-9:30ACDT,M10.1.0,M4.1.0/3"),
    ("Australia/South", "ACST-9:30ACDT,M10.1.0,M4.1.0/3"),
    ("Australia/Yancowinna", "ACST-9:30ACDT,M10.1.0,M4.1.0/3"),
    ("Australia/Darwin", "ACST-9:30"),
    ("Australia/North", "ACST-9:30"),
    ("Australia/Brisbane", "AEST-10"),
    ("Australia/Lindeman", "AEST-10"),
    ("Australia/Queensland", "AEST-10"),
    ("Australia/Sydney", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Melbourne", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Hobart", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Canberra", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/ACT", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/NSW", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Victoria", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Tasmania", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Currie", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Antarctica/Macquarie", "AEST-10AEDT,M10.1.0,M4.1.0/3"),
    ("Australia/Perth", "AWST-8"),
    ("Australia/West", "AWST-8"),
    ("Australia/Eucla", "<+0845>-8:45"),
    (
        "Australia/Lord_Howe",
        "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
    ),
    ("Australia/LHI", "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0"),
    ("UTC", "UTC0"),
    ("Etc/UTC", "UTC0"),
];

/// The POSIX TZ string for an IANA zone name csipd knows (exact, case-sensitive as
/// OpenWrt writes it), e.g. `Australia/Adelaide` → `ACST-9:30ACDT,M10.1.0,M4.1.0/3`.
pub fn posix_tz(zone_name: &str) -> Option<&'static str> {
    ZONES
        .iter()
        .find(|(name, _)| *name == zone_name)
        .map(|(_, tz)| *tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_zone_maps_to_a_valid_posix_string() {
        for (name, tz) in ZONES {
            assert!(crate::control::PosixTz::parse(tz).is_ok(), "{name}: {tz}");
        }
        assert_eq!(
            posix_tz("Australia/Adelaide"),
            Some("ACST-9:30ACDT,M10.1.0,M4.1.0/3")
        );
        assert_eq!(posix_tz("Australia/Atlantis"), None);
    }
}
