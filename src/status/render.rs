//! The readable summary of `csipd status`. Pure: snapshot in, text out; times shown in
//! the daemon's local time (`local_utc_offset_s`), countdowns against its clock.

use super::snapshot::{ActiveLimit, LimitMode, LimitSource, Snapshot};
use crate::csip::NextRead;
use std::fmt::Write;

/// "14:35" in the given UTC offset.
pub fn clock_hhmm(t_unix_s: i64, utc_offset_s: i32) -> String {
    let local = t_unix_s + i64::from(utc_offset_s);
    let day_s = local.rem_euclid(86_400);
    format!("{:02}:{:02}", day_s / 3600, (day_s % 3600) / 60)
}

/// "14:35:07" in the given UTC offset.
pub fn clock_hhmmss(t_unix_s: i64, utc_offset_s: i32) -> String {
    let local = t_unix_s + i64::from(utc_offset_s);
    let day_s = local.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        day_s / 3600,
        (day_s % 3600) / 60,
        day_s % 60
    )
}

/// "14:35" on the minute, "14:35:21" off it (blocks shorter than a minute, the demo's
/// intervals): a time shown without its seconds would read as already past.
pub fn clock_hhmm_or_ss(t_unix_s: i64, utc_offset_s: i32) -> String {
    if (t_unix_s + i64::from(utc_offset_s)).rem_euclid(60) == 0 {
        clock_hhmm(t_unix_s, utc_offset_s)
    } else {
        clock_hhmmss(t_unix_s, utc_offset_s)
    }
}

/// "14:35–15:05", or with seconds on both bounds when either is off the minute
/// ("14:35:11–14:35:21"): "14:35–14:35" would hide a block shorter than a minute.
pub fn clock_span(start_unix_s: i64, end_unix_s: i64, utc_offset_s: i32) -> String {
    let off_minute = |t: i64| (t + i64::from(utc_offset_s)).rem_euclid(60) != 0;
    let clock = if off_minute(start_unix_s) || off_minute(end_unix_s) {
        clock_hhmmss
    } else {
        clock_hhmm
    };
    format!(
        "{}–{}",
        clock(start_unix_s, utc_offset_s),
        clock(end_unix_s, utc_offset_s)
    )
}

/// A price per unit with four places, more (up to ten) when the utility's multiplier
/// gives more ("0.123456", not "0.1235"); the value is an exact decimal
/// (`sep2::types::decimal`).
pub fn price_number(p: f64) -> String {
    let ten = format!("{p:.10}");
    let ten = ten.trim_end_matches('0');
    match ten.split_once('.') {
        Some((_, decimals)) if decimals.len() > 4 => ten.to_string(),
        _ => format!("{p:.4}"),
    }
}

/// A short duration: "45 s", "12 min", "3 h 05 min", "2 d 4 h".
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 86_400 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} d {} h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// The first 8 characters of an mRID, enough to tell events apart on a screen.
pub fn short_mrid(mrid: &str) -> String {
    let head: String = mrid.chars().take(8).collect::<String>().to_lowercase();
    if mrid.chars().count() > 8 {
        format!("{head}…")
    } else {
        head
    }
}

fn watts(w: f64) -> String {
    format!("{w:.0} W")
}

/// "utility event 3f2a09b1…", "program default", "fixed limit", …
pub fn source_text(source: &LimitSource) -> String {
    match source {
        LimitSource::UtilityEvent { mrid } => format!("utility event {}", short_mrid(mrid)),
        LimitSource::UtilityDefault { program } if program.is_empty() => {
            "program default".to_string()
        }
        LimitSource::UtilityDefault { program } => format!("program default ({program})"),
        LimitSource::Fixed { .. } => "fixed limit".to_string(),
        LimitSource::TariffWindow { name } if name.is_empty() => "tariff window".to_string(),
        LimitSource::TariffWindow { name } => format!("tariff window {name}"),
        LimitSource::NegativePrice { .. } => "negative feed-in price".to_string(),
        // "fail-safe (meter data stale)", or what holds without a meter at all.
        LimitSource::FailSafe { .. } => source.to_string(),
        // "fallback export limit (no utility control read yet)".
        LimitSource::Fallback { .. } => source.to_string(),
    }
}

/// "export limit 1500 W — utility event 3f2a09b1…, until 14:35 (in 12 min)"
pub fn limit_line(limit: &ActiveLimit, now_unix_s: i64, utc_offset_s: i32) -> String {
    let what = match (limit.mode, limit.value_w, limit.connect) {
        (LimitMode::Connect, _, Some(true)) => "connect: stay connected".to_string(),
        (LimitMode::Connect, _, Some(false)) => "connect: cease to energize".to_string(),
        (mode, Some(w), _) => format!("{} limit {}", mode.as_str(), watts(w)),
        (mode, None, _) => format!("{} limit (no value)", mode.as_str()),
    };
    let mut line = format!("{what} — {}", source_text(&limit.source));
    if let Some(end) = limit.end_unix_s {
        let _ = write!(
            line,
            ", until {} (in {})",
            clock_hhmm_or_ss(end, utc_offset_s),
            duration(end - now_unix_s)
        );
    }
    if limit.unsupported {
        line.push_str(" — NOT SUPPORTED: no storage inverter with a controllable charge rate");
    }
    if let Some(why) = &limit.not_enforceable {
        // "not enforceable: pv has …" → "NOT ENFORCEABLE: pv has …", as NOT SUPPORTED.
        let shout = match why.split_once(':') {
            Some((head, tail)) => format!("{}:{tail}", head.to_uppercase()),
            None => why.to_uppercase(),
        };
        line.push_str(" — ");
        line.push_str(&shout);
    }
    line
}

fn opt(value: Option<f64>, unit: &str, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$} {unit}"),
        None => format!("– {unit}"),
    }
}

/// The whole summary.
/// One RateComponent's prices, from the household's side (2030.5 prices are a cost to
/// the customer, negative a credit): "export: you pay 0.0420 AUD/kWh until 14:05, then
/// you get 0.0100 AUD/kWh 14:05–14:35 (/edev/1/tp/1/rc/2)". Several blocks show as
/// "a / b from N kWh" (a block's startValue is in the component's unit).
pub fn price_line(p: &crate::csip::pricing::RatePrice, tz: i32) -> String {
    use crate::csip::pricing::{PriceDirection, PricePoint, currency_name};
    let what = match p.direction {
        PriceDirection::Import => "import",
        PriceDirection::Export => "export",
        PriceDirection::Other => "other",
    };
    let unit = format!("{}/{}", currency_name(p.currency), p.unit);
    let p_unit = &p.unit;
    let blocks = |point: &PricePoint| -> String {
        if point.blocks.is_empty() {
            return "price not read yet".into();
        }
        point
            .blocks
            .iter()
            .map(|b| {
                let p = b.price_per_unit;
                // A bare signed number reads as earnings for export; say who pays.
                let price = if p > 0.0 {
                    format!("you pay {} {unit}", price_number(p))
                } else if p < 0.0 {
                    format!("you get {} {unit}", price_number(-p))
                } else {
                    format!("0.0000 {unit}")
                };
                if b.start_value == 0 {
                    price
                } else {
                    format!("{price} from {} {}", b.start_value, p_unit)
                }
            })
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let now = match &p.current {
        Some(c) => format!("{} until {}", blocks(c), clock_hhmm_or_ss(c.end_unix_s, tz)),
        None => "no price now".into(),
    };
    let next = match &p.next {
        Some(n) => format!(
            ", then {} {}",
            blocks(n),
            clock_span(n.start_unix_s, n.end_unix_s, tz)
        ),
        None => String::new(),
    };
    format!("{what}: {now}{next} ({})", p.rate_component_href)
}

/// The utility connection state for a person (`/status` keeps the snake_case name).
fn state_words(state: crate::csip::ConnectionState) -> &'static str {
    use crate::csip::ConnectionState as C;
    match state {
        C::Discovering => "discovering",
        C::Polling => "polling",
        C::Offline => "offline",
        C::PinMismatch => "PIN mismatch",
        C::NotRegistered => "not registered",
        C::NotConfigured => {
            "not configured (no dcap_url or server_url: only your own limits apply)"
        }
    }
}

pub fn summary(s: &Snapshot) -> String {
    let now = s.now_unix_s;
    let tz = s.local_utc_offset_s;
    let mut out = String::new();
    let _ = writeln!(out, "{}", super::summary::line(s));
    let _ = writeln!(
        out,
        "csipd {}, up {}",
        s.version,
        duration(now - s.started_unix_s)
    );

    let u = &s.utility;
    let _ = write!(
        out,
        "utility     {} since {} ({})",
        state_words(u.state),
        clock_hhmm(u.since_unix_s, tz),
        duration(now - u.since_unix_s)
    );
    if let Some(offset) = u.clock_offset_s {
        let _ = write!(out, ", clock offset {offset:+.1} s");
    }
    out.push('\n');
    if let Some(url) = &u.server_url {
        match &u.csipaus_version {
            Some(version) => {
                let _ = writeln!(out, "server      {url} (CSIP-AUS {version})");
            }
            None => {
                let _ = writeln!(out, "server      {url}");
            }
        }
    }
    let _ = writeln!(
        out,
        "identity    LFDI {}  SFDI {}",
        u.lfdi.as_deref().unwrap_or("(no certificate)"),
        u.sfdi.map(|v| v.to_string()).unwrap_or_else(|| "–".into())
    );
    if let Some(problem) = &u.registration_problem {
        let _ = writeln!(out, "REGISTRATION PROBLEM: {problem}");
    }
    if u.readings_posted > 0 || u.readings_pending > 0 {
        let _ = writeln!(
            out,
            "readings    {} posted to the utility, {} waiting",
            u.readings_posted, u.readings_pending
        );
    }

    if !u.prices.is_empty() {
        out.push_str("prices\n");
        for p in &u.prices {
            let _ = writeln!(out, "  {}", price_line(p, tz));
        }
    }

    out.push_str("limits\n");
    if s.limits.is_empty() {
        out.push_str("  none in force\n");
    }
    for limit in &s.limits {
        let _ = writeln!(out, "  {}", limit_line(limit, now, tz));
    }
    if !s.inverter_settings.is_empty() {
        out.push_str("inverter settings\n");
        for setting in &s.inverter_settings {
            let mut line = format!(
                "  {} {} — {}",
                setting.mode,
                setting.value,
                source_text(&setting.source)
            );
            if let Some(end) = setting.end_unix_s {
                let _ = write!(
                    line,
                    ", until {} (in {})",
                    clock_hhmm_or_ss(end, tz),
                    duration(end - now)
                );
            }
            let _ = writeln!(out, "{line}");
        }
    }

    if !s.upcoming_events.is_empty() {
        out.push_str("upcoming events\n");
        for e in &s.upcoming_events {
            let limits: Vec<String> = e
                .limits
                .iter()
                .map(|l| match (l.value_w, l.connect) {
                    (Some(w), _) => format!("{} {}", l.mode.as_str(), watts(w)),
                    (None, Some(c)) => format!("{} {}", l.mode.as_str(), c),
                    (None, None) => l.mode.as_str().to_string(),
                })
                .collect();
            // Seconds only when a bound is off the minute (a randomised start, blocks
            // shorter than a minute).
            let _ = writeln!(
                out,
                "  {} {} (event {}, starts in {})",
                clock_span(e.start_unix_s, e.end_unix_s, tz),
                limits.join(", "),
                short_mrid(&e.mrid),
                duration(e.start_unix_s - now)
            );
        }
    }

    if !s.responses.is_empty() {
        out.push_str("responses sent (latest)\n");
        let skip = s.responses.len().saturating_sub(5);
        for r in s.responses.iter().skip(skip) {
            let _ = writeln!(
                out,
                "  {} {:?} to event {}: {}",
                clock_hhmmss(r.at_unix_s, tz),
                r.status,
                short_mrid(&r.mrid),
                r.delivery
            );
        }
    }

    let site = &s.site;
    // PV is the inverters' own output; grid, export and load need the meter, and are
    // never shown from a stale reading or as "– W".
    let pv = match site.pv_w {
        Some(w) => watts(w),
        None => "unknown (no inverter reading)".to_string(),
    };
    match super::summary::meter_figure_words(s) {
        None => {
            let _ = writeln!(
                out,
                "site        grid {} (import +) | export {} | PV {pv} | load {}",
                opt(site.site_w, "W", 0),
                opt(site.export_w, "W", 0),
                // The load is the meter plus the inverters: unknown without the latter.
                site.load_w.map_or_else(|| "unknown".to_string(), watts)
            );
        }
        Some(words) => {
            let from = if site.pv_w.is_some() {
                " (from the inverters)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "site        grid, export and load {words} | PV {pv}{from}"
            );
        }
    }

    if !s.devices.is_empty() {
        out.push_str("devices\n");
        let width = s.devices.iter().map(|d| d.name.len()).max().unwrap_or(0);
        for d in &s.devices {
            let age = d
                .last_reading_age_s
                .map(|a| format!("age {}", duration(a.round() as i64)))
                .unwrap_or_else(|| "never read".into());
            let _ = writeln!(
                out,
                "  {:width$}  {:8}  {}  {}  {}  {}  {}{}",
                d.name,
                d.role.as_str(),
                opt(d.readings.w, "W", 0),
                opt(d.readings.var, "var", 0),
                opt(d.readings.v, "V", 1),
                opt(d.readings.hz, "Hz", 2),
                age,
                if d.stale { "  STALE" } else { "" }
            );
            if let Some(why) = &d.read_only {
                let _ = writeln!(out, "  {:width$}  read only: {why}", "");
            }
            if let Some(fp) = &d.tls_fingerprint {
                let _ = writeln!(out, "  {:width$}  certificate (pinned): {fp}", "");
            }
            if let Some(err) = &d.stats.last_error {
                let _ = writeln!(out, "  {:width$}  last error: {err}", "");
            }
        }
    }

    if !s.setpoints.is_empty() {
        out.push_str("setpoints\n");
        for sp in &s.setpoints {
            let mut line = format!("  {}  ", sp.device);
            match (sp.limit_w, sp.limit_pct) {
                (Some(w), Some(pct)) => {
                    let _ = write!(line, "limit {} ({pct:.1} %)", watts(w));
                }
                (Some(w), None) => {
                    let _ = write!(line, "limit {}", watts(w));
                }
                (None, _) => line.push_str("uncurtailed"),
            }
            if sp.connect == Some(false) {
                line.push_str(", ceased to energize");
            }
            if let Some(c) = sp.charge_limit_w {
                let _ = write!(line, ", charge ≤ {}", watts(c));
            }
            if let Some(t) = sp.written_unix_s {
                let _ = write!(line, ", written {}", clock_hhmmss(t, tz));
            }
            let _ = writeln!(out, "{line}");
        }
    }

    if !u.resources.is_empty() {
        out.push_str("resources\n");
        for r in &u.resources {
            let last = r
                .last_poll_unix_s
                .map(|t| clock_hhmmss(t, tz))
                .unwrap_or_else(|| "never".into());
            // A resource read with its parent list has no time of its own: say with
            // which (never a bare "–").
            let next = match (r.next_poll_unix_s, &r.next_read) {
                (Some(t), _) => format!("  next {}", clock_hhmmss(t, tz)),
                (None, Some(NextRead::With(parent))) => format!("  next with its {parent}"),
                (None, Some(NextRead::Once)) => "  read once".to_string(),
                (None, None) => String::new(),
            };
            // Several of a name (a ConsumptionTariffIntervalList per interval): say which.
            if u.resources.iter().filter(|o| o.name == r.name).count() > 1 {
                let _ = write!(out, "  {} {}  last {last}{next}", r.name, r.href);
            } else {
                let _ = write!(out, "  {}  last {last}{next}", r.name);
            }
            if let Some(err) = &r.last_error {
                let _ = write!(out, "  error: {err}");
            }
            out.push('\n');
        }
    }

    if !s.last_errors.is_empty() {
        out.push_str("recent errors\n");
        for e in s.last_errors.iter().rev().take(5) {
            let repeats = if e.count > 1 {
                format!(" (×{})", e.count)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {} {}: {}{repeats}",
                clock_hhmmss(e.t_unix_s, tz),
                e.source,
                e.message
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_line_names_source_and_countdown() {
        let limit = ActiveLimit {
            mode: LimitMode::Export,
            value_w: Some(1500.0),
            connect: None,
            source: LimitSource::UtilityEvent {
                mrid: "3F2A09B1C0FFEE000000000000000001".into(),
            },
            // 14:35 UTC+10 is 04:35 UTC.
            end_unix_s: Some(4 * 3600 + 35 * 60),
            unsupported: false,
            not_enforceable: None,
        };
        let mut free = limit.clone();
        free.not_enforceable = Some("not enforceable: pv has no control model".into());
        assert!(
            limit_line(&free, 0, 0).ends_with(" — NOT ENFORCEABLE: pv has no control model"),
            "{}",
            limit_line(&free, 0, 0)
        );
        let mut unsupported = limit.clone();
        unsupported.mode = LimitMode::Import;
        unsupported.unsupported = true;
        assert!(
            limit_line(&unsupported, 0, 0).contains("NOT SUPPORTED"),
            "{}",
            limit_line(&unsupported, 0, 0)
        );
        let line = limit_line(&limit, 4 * 3600 + 23 * 60, 36_000);
        assert_eq!(
            line,
            "export limit 1500 W — utility event 3f2a09b1…, until 14:35 (in 12 min)"
        );
        // A block ending off the minute says its second: "until 14:35 (in 4 s)" read
        // as already over at 14:35:17.
        let mut short = limit.clone();
        short.end_unix_s = Some(4 * 3600 + 35 * 60 + 21);
        assert_eq!(
            limit_line(&short, 4 * 3600 + 35 * 60 + 17, 36_000),
            "export limit 1500 W — utility event 3f2a09b1…, until 14:35:21 (in 4 s)"
        );
    }

    #[test]
    fn utility_line_says_the_state_in_words() {
        let mut s = Snapshot::new(0);
        s.utility.state = crate::csip::ConnectionState::NotConfigured;
        assert!(
            summary(&s).contains(
                "utility     not configured (no dcap_url or server_url: only your own limits apply) since"
            ),
            "{}",
            summary(&s)
        );
        s.utility.state = crate::csip::ConnectionState::PinMismatch;
        assert!(
            summary(&s).contains("utility     PIN mismatch since"),
            "{}",
            summary(&s)
        );
        s.utility.state = crate::csip::ConnectionState::Polling;
        assert!(
            summary(&s).contains("utility     polling since"),
            "{}",
            summary(&s)
        );
    }

    #[test]
    fn server_line_names_the_csipaus_version_in_use() {
        let mut s = Snapshot::new(0);
        s.utility.server_url = Some("https://u.example:8443".into());
        assert!(summary(&s).contains("server      https://u.example:8443\n"));
        s.utility.csipaus_version = Some("v1.3".into());
        assert!(
            summary(&s).contains("server      https://u.example:8443 (CSIP-AUS v1.3)\n"),
            "{}",
            summary(&s)
        );
    }

    /// The utility's curves and power factors in force get their own block in `csipd
    /// status`, each with its value, source and countdown, and ride in the JSON.
    #[test]
    fn inverter_settings_are_listed_with_source_and_end() {
        use crate::status::snapshot::InverterSetting;
        let mut s = Snapshot::new(0);
        assert!(!summary(&s).contains("inverter settings"));
        s.now_unix_s = 3600;
        s.inverter_settings = vec![InverterSetting {
            mode: "opModVoltVar".into(),
            value: "2 points 90.0 %V → 40 %, 110.0 %V → -40 %".into(),
            source: LimitSource::UtilityDefault {
                program: "PROG1".into(),
            },
            end_unix_s: Some(3600 + 600),
        }];
        let text = summary(&s);
        assert!(
            text.contains(
                "inverter settings\n  opModVoltVar 2 points 90.0 %V → 40 %, 110.0 %V → -40 % — \
                 program default (PROG1), until 01:10 (in 10 min)\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["inverter_settings"][0]["mode"], "opModVoltVar");
        // A snapshot from before the field still loads.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("inverter_settings");
        let old: Snapshot = serde_json::from_value(old).expect("older snapshot loads");
        assert!(old.inverter_settings.is_empty());
    }

    #[test]
    fn readings_line_counts_what_the_utility_accepted() {
        let mut s = Snapshot::new(0);
        assert!(
            !summary(&s).contains("readings"),
            "nothing posted yet: no line"
        );
        s.utility.readings_posted = 12;
        s.utility.readings_pending = 2;
        assert!(
            summary(&s).contains("readings    12 posted to the utility, 2 waiting\n"),
            "{}",
            summary(&s)
        );
    }

    /// A resource read with its parent list, or read once, has no poll time of its
    /// own: the line says how it is read next, never a bare "next –".
    #[test]
    fn resources_without_a_time_of_their_own_say_how_they_are_read() {
        use crate::status::snapshot::ResourcePoll;
        let poll = |name: &str, next: Option<i64>, next_read: Option<NextRead>| ResourcePoll {
            name: name.into(),
            href: format!("/{name}"),
            last_poll_unix_s: Some(3600),
            next_poll_unix_s: next,
            next_read,
            last_error: None,
        };
        let mut s = Snapshot::new(0);
        s.utility.resources = vec![
            poll("DERProgramList", Some(3660), None),
            poll(
                "DERControlList",
                None,
                Some(NextRead::With("DERProgramList".into())),
            ),
            poll("ReadingType", None, Some(NextRead::Once)),
            poll("Odd", None, None),
        ];
        let text = summary(&s);
        assert!(!text.contains("next –"), "{text}");
        for line in [
            "  DERProgramList  last 01:00:00  next 01:01:00\n",
            "  DERControlList  last 01:00:00  next with its DERProgramList\n",
            "  ReadingType  last 01:00:00  read once\n",
            "  Odd  last 01:00:00\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        let json = serde_json::to_value(&s.utility.resources).expect("json");
        assert_eq!(json[1]["next_read"]["with"], "DERProgramList");
        assert_eq!(json[2]["next_read"], "once");
        assert!(json[0].get("next_read").is_none());
    }

    /// A name read more than once (one ConsumptionTariffIntervalList per price interval,
    /// a ReadingType per RateComponent) names its href, or the lines cannot be told apart.
    #[test]
    fn resources_with_the_same_name_show_their_href() {
        use crate::status::snapshot::ResourcePoll;
        let poll = |name: &str, href: &str| ResourcePoll {
            name: name.into(),
            href: href.into(),
            last_poll_unix_s: Some(3600),
            next_poll_unix_s: Some(3660),
            next_read: None,
            last_error: None,
        };
        let mut s = Snapshot::new(0);
        s.utility.resources = vec![
            poll("Time", "/tm"),
            poll("ReadingType", "/rt/1"),
            poll("ReadingType", "/rt/2"),
        ];
        let text = summary(&s);
        for line in [
            "  Time  last 01:00:00  next 01:01:00\n",
            "  ReadingType /rt/1  last 01:00:00  next 01:01:00\n",
            "  ReadingType /rt/2  last 01:00:00  next 01:01:00\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
    }

    #[test]
    fn upcoming_events_show_seconds_only_when_off_the_minute() {
        use crate::status::snapshot::{EventLimit, UpcomingEvent};
        let event = |start: i64, end: i64| UpcomingEvent {
            mrid: "D0E0000300000000".into(),
            description: None,
            program: None,
            start_unix_s: start,
            end_unix_s: end,
            limits: vec![EventLimit {
                mode: LimitMode::Export,
                value_w: Some(934.0),
                connect: None,
            }],
        };
        let mut s = Snapshot::new(0);
        s.upcoming_events = vec![event(3600, 3900), event(3610, 3620)];
        let text = summary(&s);
        assert!(text.contains("  01:00–01:05 export 934 W"), "{text}");
        assert!(text.contains("  01:00:10–01:00:20 export 934 W"), "{text}");
    }

    #[test]
    fn prices_show_now_and_next_with_their_unit() {
        use crate::csip::pricing::{PriceBlock, PriceDirection, PricePoint, RatePrice};
        let point = |start: i64, end: i64, prices: &[(u64, f64)]| PricePoint {
            mrid: "01".into(),
            description: None,
            start_unix_s: start,
            end_unix_s: end,
            blocks: prices
                .iter()
                .map(|(start_value, p)| PriceBlock {
                    start_value: *start_value,
                    price: 0,
                    price_per_unit: *p,
                })
                .collect(),
        };
        let mut s = Snapshot::new(0);
        s.utility.prices = vec![RatePrice {
            tariff_profile_href: "/tp/1".into(),
            rate_component_href: "/tp/1/rc/2".into(),
            description: None,
            primacy: 0,
            direction: PriceDirection::Export,
            unit: "kWh".into(),
            currency: Some(36),
            price_power_of_ten_multiplier: -4,
            current: Some(point(0, 3600, &[(0, 0.042)])),
            next: Some(point(3600, 5400, &[(0, -0.01), (100, 0.02)])),
        }];
        let text = summary(&s);
        assert!(
            text.contains(
                "prices\n  export: you pay 0.0420 AUD/kWh until 01:00, then you get 0.0100 \
                 AUD/kWh / you pay 0.0200 AUD/kWh from 100 kWh 01:00–01:30 (/tp/1/rc/2)\n"
            ),
            "{text}"
        );
        assert!(!summary(&Snapshot::new(0)).contains("prices"));
        // Intervals off the minute (the demo's 60 s intervals start at :01) show their
        // seconds: "until 00:01, then ... 00:01–00:02" hid a second of each.
        let mut off = s.clone();
        off.utility.prices[0].current = Some(point(1, 61, &[(0, 0.042)]));
        off.utility.prices[0].next = Some(point(61, 121, &[(0, -0.01)]));
        let text = summary(&off);
        assert!(
            text.contains(
                "export: you pay 0.0420 AUD/kWh until 00:01:01, then you get 0.0100 AUD/kWh \
                 00:01:01–00:02:01 (/tp/1/rc/2)"
            ),
            "{text}"
        );
        // The JSON (/status, ubus) carries the same, with units, and omits an empty list.
        let json = serde_json::to_value(&s).expect("json");
        let price = &json["utility"]["prices"][0];
        assert_eq!(price["direction"], "export");
        assert_eq!(price["unit"], "kWh");
        assert_eq!(price["currency"], 36);
        assert_eq!(price["price_power_of_ten_multiplier"], -4);
        assert_eq!(price["current"]["blocks"][0]["price_per_unit"], 0.042);
        assert_eq!(price["next"]["start_unix_s"], 3600);
        let empty = serde_json::to_value(Snapshot::new(0)).expect("json");
        assert!(empty["utility"].get("prices").is_none());
    }

    #[test]
    fn durations_and_clocks() {
        assert_eq!(duration(-5), "0 s");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3 h 05 min");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2 d 4 h");
        assert_eq!(clock_hhmm(0, -3600), "23:00");
        assert_eq!(clock_hhmmss(3661, 0), "01:01:01");
        assert_eq!(clock_span(60, 120, 0), "00:01–00:02");
        assert_eq!(clock_span(60, 121, 0), "00:01:00–00:02:01");
        // An offset off the minute (none is, but the rule is the local time's).
        assert_eq!(clock_span(60, 120, 30), "00:01:30–00:02:30");
    }

    /// Prices show four places, more only when the exact decimal has more.
    #[test]
    fn price_numbers_keep_the_utilitys_digits() {
        assert_eq!(price_number(0.042), "0.0420");
        assert_eq!(price_number(0.3), "0.3000");
        assert_eq!(price_number(0.123456), "0.123456");
        assert_eq!(price_number(12.0), "12.0000");
        assert_eq!(
            price_number(0.1 + 0.2),
            "0.3000",
            "noise from elsewhere is not shown"
        );
        assert_eq!(price_number(-0.00001), "-0.00001");
    }

    /// Every start and end in `csipd status` says its seconds when off the minute:
    /// inverter settings too (LuCI and the page show the same).
    #[test]
    fn setting_ends_off_the_minute_show_seconds() {
        use crate::status::snapshot::InverterSetting;
        let mut s = Snapshot::new(0);
        s.now_unix_s = 3600;
        s.inverter_settings = vec![InverterSetting {
            mode: "opModFixedPFInjectW".into(),
            value: "0.95".into(),
            source: LimitSource::Fixed { option: "x".into() },
            end_unix_s: Some(3600 + 600 + 7),
        }];
        let text = summary(&s);
        assert!(text.contains(", until 01:10:07 (in 10 min)\n"), "{text}");
    }
}
