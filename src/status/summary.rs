//! The one-line answer for a household: what limits the site now, why, until when, and
//! what it is doing — "Export limited to 800 W by your tariff window until 00:00 —
//! exporting 750 W". The status server puts it in [`Snapshot::summary`] so `csipd
//! status`, the built-in page, LuCI's status view and LuCI's Status → Overview all show
//! the same words. Pure: snapshot in, text out; times in the daemon's local time.

use super::render::clock_hhmm_or_ss;
use super::snapshot::{
    ActiveLimit, DeviceRole, FailSafeCause, FallbackCause, LimitMode, LimitSource, Snapshot,
};

/// Whether a site meter is configured (listed among the devices, read or not).
fn has_meter(s: &Snapshot) -> bool {
    s.devices.iter().any(|d| d.role == DeviceRole::Meter)
}

/// Why the site power is unknown: the meter not answering, or no meter at all.
fn no_meter_reason(s: &Snapshot) -> &'static str {
    if has_meter(s) {
        "the meter is not answering"
    } else {
        "no site meter is configured"
    }
}

/// Whether the site meter's figures (grid, export, household load) can be shown as live.
fn meter_fresh(s: &Snapshot) -> bool {
    s.devices
        .iter()
        .any(|d| d.role == DeviceRole::Meter && !d.stale)
}

/// What to show for a figure that needs the site meter (grid, export, household load)
/// when the meter cannot give it, `None` when it can: "not measured (no site meter)",
/// "unknown (no meter reading yet)", "unknown (meter not answering)". The PV figure
/// does not need the meter: it is the inverters' own output (`SiteFlows::pv_w`).
pub fn meter_figure_words(s: &Snapshot) -> Option<&'static str> {
    if meter_fresh(s) {
        return None;
    }
    let meter = s.devices.iter().find(|d| d.role == DeviceRole::Meter);
    Some(match meter {
        None => "not measured (no site meter)",
        Some(m) if m.last_reading_age_s.is_none() => "unknown (no meter reading yet)",
        Some(_) => "unknown (meter not answering)",
    })
}

/// "; solar 3200 W" when the site power is unknown but the inverters' output is known.
fn solar_aside(s: &Snapshot) -> String {
    match s.site.pv_w {
        Some(w) if !meter_fresh(s) && s.devices.iter().any(|d| d.role != DeviceRole::Meter) => {
            format!("; solar {w:.0} W")
        }
        _ => String::new(),
    }
}

/// Who set a limit, in plain words ("by your tariff window").
fn by_whom(source: &LimitSource) -> String {
    match source {
        LimitSource::UtilityEvent { .. } => "by your network operator".into(),
        LimitSource::UtilityDefault { .. } => "by your network operator's standing limit".into(),
        LimitSource::Fixed { .. } => "by your fixed limit".into(),
        LimitSource::TariffWindow { .. } => "by your tariff window".into(),
        LimitSource::NegativePrice { .. } => "while the feed-in price is negative".into(),
        LimitSource::FailSafe {
            cause: FailSafeCause::NoMeter,
        } => "at the inverters, as no site meter is configured".into(),
        LimitSource::FailSafe {
            cause: FailSafeCause::MeterNotRead,
        } => "for safety: no meter reading yet".into(),
        LimitSource::FailSafe {
            cause: FailSafeCause::MeterStale,
        } => "for safety: the meter is not answering".into(),
        LimitSource::Fallback {
            cause: FallbackCause::UtilityNotRead,
        } => "until your network operator's limits are received".into(),
        LimitSource::Fallback {
            cause: FallbackCause::NoUtilityExportLimit,
        } => "as your network operator sets no export limit".into(),
    }
}

fn until(limit: &ActiveLimit, s: &Snapshot) -> String {
    match limit.end_unix_s {
        Some(end) => format!(" until {}", clock_hhmm_or_ss(end, s.local_utc_offset_s)),
        None => String::new(),
    }
}

/// What the site does now, from the meter; "site power unknown" when the meter is
/// missing or stale (old numbers are never shown as live).
/// The inverters' output is still said then ("; solar 3200 W").
fn doing(s: &Snapshot) -> String {
    match (meter_fresh(s), s.site.site_w) {
        (true, Some(w)) if w < -0.5 => format!("exporting {:.0} W", -w),
        (true, Some(w)) if w > 0.5 => format!("importing {w:.0} W"),
        (true, Some(_)) => "neither importing nor exporting".into(),
        _ => format!(
            "site power unknown: {}{}",
            no_meter_reason(s),
            solar_aside(s)
        ),
    }
}

/// " — not enforced: no inverter or battery is configured" when nothing can keep
/// `limit` (the status never claims a limit is kept when nothing keeps it), else "".
fn not_kept(limit: &ActiveLimit) -> String {
    match &limit.not_enforceable {
        Some(why) => format!(
            " — not enforced: {}",
            why.strip_prefix("not enforceable: ").unwrap_or(why)
        ),
        None => String::new(),
    }
}

/// "limited to" for a limit that is kept, "limit" for one that is not (followed by
/// [`not_kept`]'s words).
fn limited(limit: &ActiveLimit) -> &'static str {
    if limit.not_enforceable.is_some() {
        "limit"
    } else {
        "limited to"
    }
}

/// The summary line of `s` (see the module doc). The export limit leads, as that is what
/// a household notices; a disconnect order or an unsupported import limit come first
/// when in force.
pub fn line(s: &Snapshot) -> String {
    let now = doing(s);
    if let Some(c) = s
        .limits
        .iter()
        .find(|l| l.mode == LimitMode::Connect && l.connect == Some(false))
    {
        let switched = if c.not_enforceable.is_some() {
            "Solar switch-off"
        } else {
            "Solar switched off"
        };
        return format!(
            "{switched} {}{}{} — {now}",
            by_whom(&c.source),
            until(c, s),
            not_kept(c)
        );
    }
    if let Some(e) = s.limit(LimitMode::Export) {
        if let Some(w) = e.value_w {
            // The fail-safe's words already say why the site power is unknown.
            let now = if matches!(e.source, LimitSource::FailSafe { .. })
                && now.starts_with("site power unknown")
            {
                format!("site power unknown{}", solar_aside(s))
            } else {
                now
            };
            return format!(
                "Export {} {w:.0} W {}{}{} — {now}",
                limited(e),
                by_whom(&e.source),
                until(e, s),
                not_kept(e)
            );
        }
    }
    if let Some(g) = s.limit(LimitMode::Generation) {
        if let Some(w) = g.value_w {
            return format!(
                "Solar output {} {w:.0} W {}{}{} — {now}",
                limited(g),
                by_whom(&g.source),
                until(g, s),
                not_kept(g)
            );
        }
    }
    use crate::csip::ConnectionState as C;
    // Why nothing from the network operator applies, when it is not simply "none sent".
    let why = match s.utility.state {
        C::NotConfigured => " (no network operator server set up)".to_string(),
        C::Offline => format!(
            " (the network operator's server has not answered since {})",
            super::render::clock_hhmm(s.utility.since_unix_s, s.local_utc_offset_s)
        ),
        C::NotRegistered | C::PinMismatch => {
            " (this device is not registered with the network operator)".to_string()
        }
        C::Discovering | C::Polling => String::new(),
    };
    format!("No export limit in force{why} — {now}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::snapshot::{Device, DeviceStats, Readings, SiteFlows};

    fn site(export_w: f64, meter_stale: bool) -> Snapshot {
        let mut s = Snapshot::new(1_700_000_000);
        s.now_unix_s = 1_700_000_000;
        s.local_utc_offset_s = 36_000;
        s.site = SiteFlows::from_site_and_pv(-export_w, 3000.0, s.now_unix_s);
        s.devices.push(Device {
            name: "meter".into(),
            role: DeviceRole::Meter,
            stale: meter_stale,
            last_reading_age_s: Some(1.0),
            readings: Readings::default(),
            stats: DeviceStats::default(),
            read_only: None,
            tls_fingerprint: None,
        });
        s
    }

    #[test]
    fn tariff_window_in_site_time() {
        let mut s = site(750.0, false);
        // Midnight AEST (UTC+10) is 14:00 UTC.
        let midnight_aest = 1_700_000_000 - (1_700_000_000 + 36_000) % 86_400 + 86_400;
        s.limits.push(ActiveLimit {
            mode: LimitMode::Export,
            value_w: Some(800.0),
            connect: None,
            source: LimitSource::TariffWindow {
                name: String::new(),
            },
            end_unix_s: Some(midnight_aest),
            unsupported: false,
            not_enforceable: None,
        });
        assert_eq!(
            line(&s),
            "Export limited to 800 W by your tariff window until 00:00 — exporting 750 W"
        );
        // A utility block ending off the minute (the demo's 10 s blocks) says its second.
        s.limits[0].end_unix_s = Some(midnight_aest + 21);
        assert_eq!(
            line(&s),
            "Export limited to 800 W by your tariff window until 00:00:21 — exporting 750 W"
        );
    }

    #[test]
    fn stale_meter_and_no_limit() {
        let s = site(750.0, true);
        assert_eq!(
            line(&s),
            "No export limit in force — site power unknown: the meter is not answering"
        );
        let mut s = site(-300.0, false);
        s.utility.state = crate::status::ConnectionState::NotConfigured;
        assert_eq!(
            line(&s),
            "No export limit in force (no network operator server set up) — importing 300 W"
        );
        // The server never answering is not "no limit" without a word: the household
        // sees why nothing from the network operator applies.
        s.utility.state = crate::status::ConnectionState::Offline;
        s.utility.since_unix_s = s.now_unix_s - 620;
        assert_eq!(
            line(&s),
            "No export limit in force (the network operator's server has not answered since \
             08:03) — importing 300 W"
        );
        s.utility.state = crate::status::ConnectionState::NotRegistered;
        assert_eq!(
            line(&s),
            "No export limit in force (this device is not registered with the network \
             operator) — importing 300 W"
        );
    }

    /// With no inverter and no meter (a client of the utility alone), the fail-safe
    /// limit is shown as not enforced, and the reason is the missing meter, not a meter
    /// that does not answer.
    #[test]
    fn nothing_to_enforce_with_is_said_plainly() {
        let mut s = site(0.0, true);
        s.devices.clear();
        s.limits.push(ActiveLimit {
            mode: LimitMode::Export,
            value_w: Some(0.0),
            connect: None,
            source: LimitSource::FailSafe {
                cause: FailSafeCause::NoMeter,
            },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: Some("not enforceable: no inverter or battery is configured".into()),
        });
        assert_eq!(
            line(&s),
            "Export limit 0 W at the inverters, as no site meter is configured — not \
             enforced: no inverter or battery is configured — site power unknown"
        );
        // A configured meter that does not answer is said as such.
        let mut s = site(0.0, true);
        s.limits.push(ActiveLimit {
            mode: LimitMode::Export,
            value_w: Some(0.0),
            connect: None,
            source: LimitSource::FailSafe {
                cause: FailSafeCause::MeterStale,
            },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        });
        assert_eq!(
            line(&s),
            "Export limited to 0 W for safety: the meter is not answering — site power unknown"
        );
    }

    #[test]
    fn csipd_status_leads_with_the_same_line() {
        let s = site(750.0, false);
        let text = crate::status::render::summary(&s);
        assert_eq!(text.lines().next(), Some(line(&s).as_str()));
    }

    #[test]
    fn disconnect_comes_first() {
        let mut s = site(0.0, false);
        s.limits.push(ActiveLimit {
            mode: LimitMode::Connect,
            value_w: None,
            connect: Some(false),
            source: LimitSource::UtilityEvent { mrid: "AB".into() },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        });
        assert_eq!(
            line(&s),
            "Solar switched off by your network operator — neither importing nor exporting"
        );
    }

    #[test]
    fn repeated_errors_collapse_and_keep_other_devices_errors() {
        let mut s = site(0.0, false);
        s.push_error(10, "device meter", "no answer from 192.0.2.5:502");
        for t in 0..50 {
            s.push_error(11 + t, "device inverter1", "exception 2 at 40070");
        }
        assert_eq!(s.last_errors.len(), 2);
        assert_eq!(s.last_errors[0].source, "device meter");
        let last = s.last_errors.back().unwrap();
        assert_eq!((last.count, last.t_unix_s), (50, 60));
        // A different error is a new line; the repeated one keeps its count.
        s.push_error(70, "device inverter1", "timeout");
        assert_eq!(s.last_errors.len(), 3);
    }

    /// Without a meter (or with it stale) the inverters' output is still known: the line
    /// and `csipd status` say it, and say why grid, export and load are not shown; never
    /// "PV – W" or a stale number as live.
    #[test]
    fn without_a_meter_the_inverters_output_is_said() {
        let inverter = |stale| Device {
            name: "inv".into(),
            role: DeviceRole::Inverter,
            stale,
            last_reading_age_s: Some(1.0),
            readings: Readings::default(),
            stats: DeviceStats::default(),
            read_only: None,
            tls_fingerprint: None,
        };
        let site_line = |s: &Snapshot| {
            crate::status::render::summary(s)
                .lines()
                .find(|l| l.starts_with("site "))
                .unwrap_or_default()
                .to_string()
        };
        // No meter configured.
        let mut s = site(0.0, false);
        s.devices = vec![inverter(false)];
        s.site = SiteFlows {
            pv_w: Some(3200.0),
            ..SiteFlows::default()
        };
        assert_eq!(
            line(&s),
            "No export limit in force — site power unknown: no site meter is configured; \
             solar 3200 W"
        );
        assert_eq!(
            site_line(&s),
            "site        grid, export and load not measured (no site meter) | PV 3200 W \
             (from the inverters)"
        );
        s.limits.push(ActiveLimit {
            mode: LimitMode::Export,
            value_w: Some(1500.0),
            connect: None,
            source: LimitSource::FailSafe {
                cause: FailSafeCause::NoMeter,
            },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        });
        assert_eq!(
            line(&s),
            "Export limited to 1500 W at the inverters, as no site meter is configured — \
             site power unknown; solar 3200 W"
        );
        // The meter stale (its last numbers are in the JSON, not shown as live).
        let mut s = site(750.0, true);
        s.devices.push(inverter(false));
        assert_eq!(
            site_line(&s),
            "site        grid, export and load unknown (meter not answering) | PV 3000 W \
             (from the inverters)"
        );
        assert!(
            line(&s).ends_with("the meter is not answering; solar 3000 W"),
            "{}",
            line(&s)
        );
        // Never read yet; and no inverter reading either.
        s.devices[0].last_reading_age_s = None;
        s.site.pv_w = None;
        assert_eq!(
            site_line(&s),
            "site        grid, export and load unknown (no meter reading yet) | PV unknown \
             (no inverter reading)"
        );
        assert!(
            line(&s).ends_with("the meter is not answering"),
            "{}",
            line(&s)
        );
        // A fresh meter: the four figures.
        let mut s = site(750.0, false);
        s.devices.push(inverter(false));
        assert_eq!(
            site_line(&s),
            "site        grid -750 W (import +) | export 750 W | PV 3000 W | load 2250 W"
        );
    }
}
