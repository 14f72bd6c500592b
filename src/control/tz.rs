//! POSIX TZ strings (what OpenWrt keeps in `/etc/TZ`) and UTC → local time, without a tz
//! database. Grammar (POSIX.1 `TZ`): `std offset [dst [offset] [,start[/time],end[/time]]]`.
//! Offsets are hours west of Greenwich (`AEST-10` is UTC+10). Rules are `Jn` (1..=365,
//! February 29 never counted), `n` (0..=365, zero-based day of year) or `Mm.w.d` (month m,
//! week w of 1..=5 where 5 is the last, weekday d with 0 = Sunday). A rule time defaults to
//! 02:00 and is local time in force just before the change (standard time at the start of
//! DST, daylight time at its end).

use std::fmt;

/// A zone's UTC offset: POSIX allows hours 0..=24.
const ZONE_OFFSET_MAX_H: i32 = 24;
/// A rule's time of day: the POSIX extension (glibc, musl, RFC 8536) allows -167..=167
/// hours, e.g. `M3.5.0/-2` or `J60/170` would be out.
const RULE_TIME_MAX_H: i32 = 167;

/// A parse error naming the string and what was wrong in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TzError {
    pub tz: String,
    pub message: String,
}

impl fmt::Display for TzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timezone '{}': {}", self.tz, self.message)
    }
}

impl std::error::Error for TzError {}

/// A date rule of a DST transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateRule {
    /// `Jn`: day 1..=365, February 29 is never counted.
    JulianNoLeap(u16),
    /// `n`: zero-based day of the year 0..=365, February 29 counted.
    ZeroBased(u16),
    /// `Mm.w.d`: month 1..=12, week 1..=5 (5 = last), weekday 0..=6 (0 = Sunday).
    MonthWeekDay { month: u8, week: u8, weekday: u8 },
}

/// One transition: a date rule and a local time of day in seconds (may be negative or
/// past 24 h, as POSIX.1-2008 extensions allow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub date: DateRule,
    pub time_s: i32,
}

/// Daylight saving part of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dst {
    pub name: String,
    /// Seconds east of UTC while DST is in force.
    pub utc_offset_s: i32,
    pub start: Transition,
    pub end: Transition,
}

/// A parsed POSIX TZ string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosixTz {
    pub std_name: String,
    /// Seconds east of UTC in standard time (note: the string's sign is the opposite).
    pub std_utc_offset_s: i32,
    pub dst: Option<Dst>,
}

/// A UTC instant seen in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    /// 0 = Sunday … 6 = Saturday.
    pub weekday: u8,
    /// Seconds since local midnight, 0..86400.
    pub second_of_day: u32,
    pub utc_offset_s: i32,
    pub is_dst: bool,
}

impl LocalTime {
    pub fn hour(&self) -> u32 {
        self.second_of_day / 3600
    }
    pub fn minute(&self) -> u32 {
        self.second_of_day / 60 % 60
    }
}

impl PosixTz {
    /// UTC, for a router with no `/etc/TZ`.
    pub fn utc() -> PosixTz {
        PosixTz {
            std_name: "UTC".into(),
            std_utc_offset_s: 0,
            dst: None,
        }
    }

    /// Parses a POSIX TZ string such as `AEST-10AEDT,M10.1.0,M4.1.0/3`.
    pub fn parse(tz: &str) -> Result<PosixTz, TzError> {
        let err = |message: String| TzError {
            tz: tz.to_string(),
            message,
        };
        let text = tz.trim();
        // A leading ':' means "implementation defined" (usually a tz database path).
        if text.starts_with(':') {
            return Err(err(
                "':' names a tz database file; only POSIX rules are supported".into(),
            ));
        }
        let mut p = Cursor { s: text, i: 0 };
        let std_name = p.name().map_err(err)?;
        // OpenWrt's default zone writes a bare `UTC` to /etc/TZ; musl and glibc read a
        // name without an offset as UTC. Only the names that mean UTC are taken so.
        if p.done() && matches!(std_name.as_str(), "UTC" | "GMT") {
            return Ok(PosixTz {
                std_name,
                std_utc_offset_s: 0,
                dst: None,
            });
        }
        if !p
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '-')
        {
            return Err(err(
                "expected a UTC offset such as -10 or -9:30 after the zone name".into(),
            ));
        }
        let std_west_s = p.offset(ZONE_OFFSET_MAX_H).map_err(err)?;
        let std_utc_offset_s = -std_west_s;
        if p.done() {
            return Ok(PosixTz {
                std_name,
                std_utc_offset_s,
                dst: None,
            });
        }
        let dst_name = p.name().map_err(err)?;
        let dst_utc_offset_s = if p.peek().is_some_and(|c| c != ',') {
            -p.offset(ZONE_OFFSET_MAX_H).map_err(err)?
        } else {
            std_utc_offset_s + 3600
        };
        let (start, end) = if p.done() {
            // POSIX leaves the default rules to the implementation; glibc and musl use the
            // United States rules.
            (
                Transition {
                    date: DateRule::MonthWeekDay {
                        month: 3,
                        week: 2,
                        weekday: 0,
                    },
                    time_s: 7200,
                },
                Transition {
                    date: DateRule::MonthWeekDay {
                        month: 11,
                        week: 1,
                        weekday: 0,
                    },
                    time_s: 7200,
                },
            )
        } else {
            p.expect(',').map_err(err)?;
            let start = p.transition().map_err(err)?;
            p.expect(',').map_err(err)?;
            let end = p.transition().map_err(err)?;
            (start, end)
        };
        if !p.done() {
            return Err(err(format!("unexpected text '{}'", &p.s[p.i..])));
        }
        Ok(PosixTz {
            std_name,
            std_utc_offset_s,
            dst: Some(Dst {
                name: dst_name,
                utc_offset_s: dst_utc_offset_s,
                start,
                end,
            }),
        })
    }

    /// The UTC offset (seconds east) in force at `utc_s`, and whether it is DST.
    pub fn offset_at(&self, utc_s: i64) -> (i32, bool) {
        let Some(dst) = &self.dst else {
            return (self.std_utc_offset_s, false);
        };
        let year = civil_from_days((utc_s + self.std_utc_offset_s as i64).div_euclid(86400)).0;
        // Start is given in standard time, end in daylight time.
        let start_utc = transition_local_s(year, &dst.start) - self.std_utc_offset_s as i64;
        let end_utc = transition_local_s(year, &dst.end) - dst.utc_offset_s as i64;
        let in_dst = if start_utc < end_utc {
            utc_s >= start_utc && utc_s < end_utc
        } else {
            // Southern hemisphere: DST spans the new year.
            utc_s >= start_utc || utc_s < end_utc
        };
        if in_dst {
            (dst.utc_offset_s, true)
        } else {
            (self.std_utc_offset_s, false)
        }
    }

    /// The local civil time of `utc_s`.
    pub fn to_local(&self, utc_s: i64) -> LocalTime {
        let (offset, is_dst) = self.offset_at(utc_s);
        let local = utc_s + offset as i64;
        let days = local.div_euclid(86400);
        let (year, month, day) = civil_from_days(days);
        LocalTime {
            year,
            month,
            day,
            weekday: (days + 4).rem_euclid(7) as u8, // 1970-01-01 was a Thursday
            second_of_day: local.rem_euclid(86400) as u32,
            utc_offset_s: offset,
            is_dst,
        }
    }

    /// The UTC instant of a local wall-clock time given as seconds since 1970-01-01 local.
    /// In the skipped hour of spring the later offset is used; in the repeated autumn
    /// hour, the first (daylight) occurrence.
    pub fn local_to_utc(&self, local_s: i64) -> i64 {
        let (dst_offset, std_offset) = match &self.dst {
            Some(d) => (d.utc_offset_s as i64, self.std_utc_offset_s as i64),
            None => return local_s - self.std_utc_offset_s as i64,
        };
        // Try the daylight reading first, then standard: keep the one that is consistent.
        for offset in [dst_offset, std_offset] {
            let utc = local_s - offset;
            if self.offset_at(utc).0 as i64 == offset {
                return utc;
            }
        }
        // The wall time does not exist (spring forward gap): the clock reads it as
        // standard time, which lands after the jump.
        local_s - std_offset
    }
}

impl fmt::Display for PosixTz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.std_name)?;
        if let Some(d) = &self.dst {
            write!(f, "/{}", d.name)?;
        }
        Ok(())
    }
}

/// The zone for local-time rules (tariff windows): `configured` (UCI
/// `main.timezone`), else the system's `/etc/TZ` text (`etc_tz`), else UTC. A string
/// that does not parse falls back to UTC, with the reason for the log.
pub fn site_timezone(configured: Option<&str>, etc_tz: Option<&str>) -> (PosixTz, Option<String>) {
    let text = configured
        .or(etc_tz)
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match text {
        None => (PosixTz::utc(), None),
        Some(t) => match PosixTz::parse(t) {
            Ok(tz) => (tz, None),
            Err(e) => (
                PosixTz::utc(),
                Some(format!("{e}; using UTC for tariff windows")),
            ),
        },
    }
}

/// Local seconds since 1970 (in the zone's own local reckoning) of a transition in `year`.
fn transition_local_s(year: i32, t: &Transition) -> i64 {
    let day = match t.date {
        DateRule::JulianNoLeap(n) => {
            let n = n as i64; // 1..=365
            let mut d = days_from_civil(year, 1, 1) + n - 1;
            if is_leap(year) && n >= 60 {
                d += 1; // skip February 29
            }
            d
        }
        DateRule::ZeroBased(n) => days_from_civil(year, 1, 1) + n as i64,
        DateRule::MonthWeekDay {
            month,
            week,
            weekday,
        } => {
            let first = days_from_civil(year, month, 1);
            let first_wd = (first + 4).rem_euclid(7);
            let mut d = first + (weekday as i64 - first_wd).rem_euclid(7) + (week as i64 - 1) * 7;
            let len = days_in_month(year, month) as i64;
            while d >= first + len {
                d -= 7; // week 5 means the last such weekday
            }
            d
        }
    };
    day * 86400 + t.time_s as i64
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (era-based day counting).
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = year as i64 - if month <= 2 { 1 } else { 0 };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + if month <= 2 { 1 } else { 0 }) as i32;
    (year, month, day)
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{c}' at position {}", self.i + 1))
        }
    }
    fn name(&mut self) -> Result<String, String> {
        let start = self.i;
        if self.peek() == Some('<') {
            // Quoted form for names with digits or signs, e.g. <+0930>.
            let rest = &self.s[self.i + 1..];
            let Some(close) = rest.find('>') else {
                return Err(format!("unterminated '<' at position {}", start + 1));
            };
            let name = rest[..close].to_string();
            self.i += close + 2;
            if name.len() < 3 {
                return Err(format!("zone name '{name}' is shorter than 3 characters"));
            }
            return Ok(name);
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.i += 1;
        }
        let name = &self.s[start..self.i];
        if name.len() < 3 {
            return Err(format!(
                "expected a zone name of at least 3 letters at position {}",
                start + 1
            ));
        }
        Ok(name.to_string())
    }
    fn number(&mut self, max_digits: usize) -> Result<i32, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) && self.i - start < max_digits {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a number at position {}", start + 1));
        }
        self.s[start..self.i]
            .parse()
            .map_err(|_| format!("bad number at position {}", start + 1))
    }
    /// `[+-]hh[:mm[:ss]]` in seconds, with the string's own sign; `hh` at most
    /// `max_hours`.
    fn offset(&mut self, max_hours: i32) -> Result<i32, String> {
        let sign = match self.peek() {
            Some('-') => {
                self.i += 1;
                -1
            }
            Some('+') => {
                self.i += 1;
                1
            }
            _ => 1,
        };
        let h = self.number(3)?;
        if h > max_hours {
            return Err(format!("hour {h} out of range"));
        }
        let mut s = h * 3600;
        if self.peek() == Some(':') {
            self.i += 1;
            let m = self.number(2)?;
            if m > 59 {
                return Err(format!("minute {m} out of range"));
            }
            s += m * 60;
            if self.peek() == Some(':') {
                self.i += 1;
                let sec = self.number(2)?;
                if sec > 59 {
                    return Err(format!("second {sec} out of range"));
                }
                s += sec;
            }
        }
        Ok(sign * s)
    }
    fn transition(&mut self) -> Result<Transition, String> {
        let at = self.i + 1;
        let date = match self.peek() {
            Some('J') => {
                self.i += 1;
                let n = self.number(3)?;
                if !(1..=365).contains(&n) {
                    return Err(format!("J{n} at position {at}: day must be 1..=365"));
                }
                DateRule::JulianNoLeap(n as u16)
            }
            Some('M') => {
                self.i += 1;
                let month = self.number(2)?;
                self.expect('.')?;
                let week = self.number(1)?;
                self.expect('.')?;
                let weekday = self.number(1)?;
                if !(1..=12).contains(&month) || !(1..=5).contains(&week) || weekday > 6 {
                    return Err(format!(
                        "M{month}.{week}.{weekday} at position {at}: month 1..=12, week 1..=5, day 0..=6"
                    ));
                }
                DateRule::MonthWeekDay {
                    month: month as u8,
                    week: week as u8,
                    weekday: weekday as u8,
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let n = self.number(3)?;
                if n > 365 {
                    return Err(format!("day {n} at position {at}: must be 0..=365"));
                }
                DateRule::ZeroBased(n as u16)
            }
            _ => {
                return Err(format!(
                    "expected a date rule (Jn, n or Mm.w.d) at position {at}"
                ));
            }
        };
        let time_s = if self.peek() == Some('/') {
            self.i += 1;
            self.offset(RULE_TIME_MAX_H)?
        } else {
            7200
        };
        Ok(Transition { date, time_s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u8, d: u8, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 11_016, 19_000, 20_454, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn parses_the_australian_zones() {
        let syd = PosixTz::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(syd.std_utc_offset_s, 36_000);
        let dst = syd.dst.as_ref().unwrap();
        assert_eq!(dst.utc_offset_s, 39_600);
        assert_eq!(dst.end.time_s, 3 * 3600);
        let adl = PosixTz::parse("ACST-9:30ACDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(adl.std_utc_offset_s, 34_200);
        assert_eq!(adl.dst.as_ref().unwrap().utc_offset_s, 37_800);
        let bne = PosixTz::parse("AEST-10").unwrap();
        assert_eq!(bne.dst, None);
        let quoted = PosixTz::parse("<+0845>-8:45").unwrap();
        assert_eq!(quoted.std_name, "+0845");
        assert_eq!(quoted.std_utc_offset_s, 8 * 3600 + 45 * 60);
    }

    #[test]
    fn rejects_bad_strings_with_a_message() {
        for bad in [
            "",
            "AE-10",
            "AEST",
            "AEST-10AEDT,M13.1.0,M4.1.0",
            "AEST-10AEDT,M10.1.0",
            "AEST-10x",
            ":Australia/Sydney",
        ] {
            let e = PosixTz::parse(bad).unwrap_err();
            assert_eq!(e.tz, bad);
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn sydney_dst_transitions_2026() {
        let syd = PosixTz::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        // DST ends Sunday 5 April 2026 03:00 AEDT = 4 April 16:00 UTC.
        let end = utc(2026, 4, 4, 16, 0);
        assert_eq!(syd.offset_at(end - 1), (39_600, true));
        assert_eq!(syd.offset_at(end), (36_000, false));
        let before = syd.to_local(end - 60);
        assert_eq!((before.hour(), before.minute()), (2, 59));
        let after = syd.to_local(end);
        assert_eq!((after.day, after.hour(), after.minute()), (5, 2, 0));
        // DST starts Sunday 4 October 2026 02:00 AEST = 3 October 16:00 UTC.
        let start = utc(2026, 10, 3, 16, 0);
        assert!(!syd.offset_at(start - 1).1);
        let l = syd.to_local(start);
        assert_eq!((l.day, l.hour(), l.weekday, l.is_dst), (4, 3, 0, true));
        // Midsummer and midwinter.
        assert!(syd.to_local(utc(2026, 1, 15, 0, 0)).is_dst);
        assert!(!syd.to_local(utc(2026, 7, 15, 0, 0)).is_dst);
    }

    #[test]
    fn adelaide_half_hour_offset_and_brisbane_without_dst() {
        let adl = PosixTz::parse("ACST-9:30ACDT,M10.1.0,M4.1.0/3").unwrap();
        let l = adl.to_local(utc(2026, 7, 1, 0, 0));
        assert_eq!((l.hour(), l.minute()), (9, 30));
        let l = adl.to_local(utc(2026, 12, 31, 23, 0));
        assert_eq!(
            (l.year, l.month, l.day, l.hour(), l.minute()),
            (2027, 1, 1, 9, 30)
        );
        let bne = PosixTz::parse("AEST-10").unwrap();
        let l = bne.to_local(utc(2026, 1, 1, 14, 0));
        assert_eq!((l.day, l.hour(), l.weekday), (2, 0, 5)); // Friday
    }

    #[test]
    fn northern_rules_and_julian_days() {
        let ny = PosixTz::parse("EST5EDT,M3.2.0,M11.1.0").unwrap();
        // 2026-03-08 02:00 EST = 07:00 UTC.
        assert!(!ny.offset_at(utc(2026, 3, 8, 7, 0) - 1).1);
        assert!(ny.offset_at(utc(2026, 3, 8, 7, 0)).1);
        // 2026-11-01 02:00 EDT = 06:00 UTC.
        assert!(ny.offset_at(utc(2026, 11, 1, 6, 0) - 1).1);
        assert!(!ny.offset_at(utc(2026, 11, 1, 6, 0)).1);
        let j = PosixTz::parse("XXX0YYY,J60/0,J300/0").unwrap();
        // J60 is 1 March even in a leap year.
        assert!(j.offset_at(utc(2028, 3, 1, 0, 0)).1);
        assert!(!j.offset_at(utc(2028, 2, 29, 23, 59)).1);
    }

    #[test]
    fn site_timezone_falls_back_to_utc_with_a_reason() {
        let (tz, why) = site_timezone(None, Some("AEST-10\n"));
        assert_eq!(tz.offset_at(0).0, 36_000);
        assert!(why.is_none());
        // The configured zone wins over /etc/TZ.
        let (tz, _) = site_timezone(Some("ACST-9:30"), Some("AEST-10"));
        assert_eq!(tz.offset_at(0).0, 34_200);
        let (tz, why) = site_timezone(None, Some("Australia/Adelaide"));
        assert_eq!(tz.offset_at(0).0, 0);
        assert!(why.is_some_and(|w| w.contains("UTC") && w.contains("Australia/Adelaide")));
        assert_eq!(site_timezone(None, None).0, PosixTz::utc());
        assert_eq!(site_timezone(None, Some("  ")).0, PosixTz::utc());
    }

    #[test]
    fn local_to_utc_round_trips_and_handles_gaps() {
        let syd = PosixTz::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        for t in [
            utc(2026, 1, 1, 3, 0),
            utc(2026, 7, 1, 3, 0),
            utc(2026, 4, 4, 17, 0),
        ] {
            let l = syd.to_local(t);
            let local_s = t + l.utc_offset_s as i64;
            assert_eq!(syd.local_to_utc(local_s), t);
        }
        // 02:30 on 4 October 2026 does not exist in Sydney; it maps after the jump.
        let gap_local = days_from_civil(2026, 10, 4) * 86400 + 2 * 3600 + 1800;
        let u = syd.local_to_utc(gap_local);
        assert!(syd.to_local(u).is_dst);
    }
}
