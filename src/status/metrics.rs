//! Prometheus text exposition format (version 0.0.4) of a [`Snapshot`]. Pure.
//!
//! Every family has HELP and TYPE lines, names carry the `csipd_` prefix and their unit,
//! absent values are left out (Prometheus has no "unknown" sample).

use super::snapshot::Snapshot;
use crate::csip::ConnectionState;
use std::fmt::Write;

/// The Content-Type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Renders the snapshot as Prometheus text.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);

    family(&mut out, "csipd_info", "gauge", "csipd build information.")
        .sample(&[("version", &snapshot.version)], 1.0);
    family(
        &mut out,
        "csipd_start_time_seconds",
        "gauge",
        "When the daemon started, Unix time.",
    )
    .sample(&[], snapshot.started_unix_s as f64);

    let utility = &snapshot.utility;
    let mut f = family(
        &mut out,
        "csipd_utility_state",
        "gauge",
        "Utility connection state: 1 for the current state, 0 for the others.",
    );
    for state in ConnectionState::ALL {
        f.sample(
            &[("state", state.as_str())],
            bool_value(utility.state == state),
        );
    }
    family(
        &mut out,
        "csipd_utility_state_since_seconds",
        "gauge",
        "When the utility connection entered its current state, Unix time.",
    )
    .sample(&[], utility.since_unix_s as f64);
    if let Some(offset_s) = utility.clock_offset_s {
        family(
            &mut out,
            "csipd_clock_offset_seconds",
            "gauge",
            "Utility server time minus local time.",
        )
        .sample(&[], offset_s);
    }
    family(
        &mut out,
        "csipd_registration_problem",
        "gauge",
        "1 while registration with the utility has a problem (PIN mismatch, not found).",
    )
    .sample(&[], bool_value(utility.registration_problem.is_some()));

    if !utility.resources.is_empty() {
        let mut f = family(
            &mut out,
            "csipd_resource_last_poll_seconds",
            "gauge",
            "When each 2030.5 resource was last polled, Unix time.",
        );
        for r in &utility.resources {
            if let Some(t) = r.last_poll_unix_s {
                f.sample(&[("resource", &r.name)], t as f64);
            }
        }
        let mut f = family(
            &mut out,
            "csipd_resource_next_poll_seconds",
            "gauge",
            "When each 2030.5 resource is polled next, Unix time.",
        );
        for r in &utility.resources {
            if let Some(t) = r.next_poll_unix_s {
                f.sample(&[("resource", &r.name)], t as f64);
            }
        }
        let mut f = family(
            &mut out,
            "csipd_resource_error",
            "gauge",
            "1 when the last poll of a 2030.5 resource failed.",
        );
        for r in &utility.resources {
            f.sample(&[("resource", &r.name)], bool_value(r.last_error.is_some()));
        }
    }

    let mut f = family(
        &mut out,
        "csipd_limit_watts",
        "gauge",
        "Active limit per mode in watts, labelled with where it comes from.",
    );
    for limit in &snapshot.limits {
        if let Some(w) = limit.value_w {
            f.sample(
                &[
                    ("mode", limit.mode.as_str()),
                    ("source", limit.source.kind()),
                ],
                w,
            );
        }
    }
    let mut f = family(
        &mut out,
        "csipd_limit_connect",
        "gauge",
        "Active connect control: 1 connected, 0 cease to energize.",
    );
    for limit in &snapshot.limits {
        if let Some(connect) = limit.connect {
            f.sample(&[("source", limit.source.kind())], bool_value(connect));
        }
    }
    let mut f = family(
        &mut out,
        "csipd_limit_end_seconds",
        "gauge",
        "When the active limit per mode ends, Unix time.",
    );
    for limit in &snapshot.limits {
        if let Some(end) = limit.end_unix_s {
            f.sample(&[("mode", limit.mode.as_str())], end as f64);
        }
    }
    family(
        &mut out,
        "csipd_upcoming_events",
        "gauge",
        "Number of utility events scheduled to start later.",
    )
    .sample(&[], snapshot.upcoming_events.len() as f64);

    let site = &snapshot.site;
    for (name, help, value) in [
        (
            "csipd_site_import_watts",
            "Grid power at the connection point, import positive, export negative.",
            site.site_w,
        ),
        (
            "csipd_site_export_watts",
            "Export at the connection point (0 while importing).",
            site.export_w,
        ),
        (
            "csipd_pv_watts",
            "Total AC output of the inverters.",
            site.pv_w,
        ),
        ("csipd_load_watts", "Household load.", site.load_w),
    ] {
        if let Some(w) = value {
            family(&mut out, name, "gauge", help).sample(&[], w);
        }
    }

    if !snapshot.devices.is_empty() {
        let mut f = family(
            &mut out,
            "csipd_device_stale",
            "gauge",
            "1 when a device's last good reading is older than the staleness timeout.",
        );
        for d in &snapshot.devices {
            f.sample(
                &[("device", &d.name), ("role", d.role.as_str())],
                bool_value(d.stale),
            );
        }
        let mut f = family(
            &mut out,
            "csipd_device_reading_age_seconds",
            "gauge",
            "Seconds since a device's last good reading.",
        );
        for d in &snapshot.devices {
            if let Some(age) = d.last_reading_age_s {
                f.sample(&[("device", &d.name), ("role", d.role.as_str())], age);
            }
        }
        type Reading = fn(&super::snapshot::Readings) -> Option<f64>;
        let readings: [(&'static str, &str, Reading); 4] = [
            ("csipd_device_power_watts", "Active power.", |r| r.w),
            ("csipd_device_reactive_power_vars", "Reactive power.", |r| {
                r.var
            }),
            ("csipd_device_voltage_volts", "AC voltage.", |r| r.v),
            ("csipd_device_frequency_hertz", "AC frequency.", |r| r.hz),
        ];
        for (name, help, get) in readings {
            if snapshot.devices.iter().all(|d| get(&d.readings).is_none()) {
                continue;
            }
            let mut f = family(&mut out, name, "gauge", help);
            for d in &snapshot.devices {
                if let Some(v) = get(&d.readings) {
                    f.sample(&[("device", &d.name), ("role", d.role.as_str())], v);
                }
            }
        }
        let mut f = family(
            &mut out,
            "csipd_device_modbus_reads_total",
            "counter",
            "Modbus reads per device and result.",
        );
        for d in &snapshot.devices {
            f.sample(
                &[("device", &d.name), ("result", "ok")],
                d.stats.reads_ok as f64,
            );
            f.sample(
                &[("device", &d.name), ("result", "failed")],
                d.stats.reads_failed as f64,
            );
        }
        let mut f = family(
            &mut out,
            "csipd_device_modbus_writes_total",
            "counter",
            "Modbus writes per device and result.",
        );
        for d in &snapshot.devices {
            f.sample(
                &[("device", &d.name), ("result", "ok")],
                d.stats.writes_ok as f64,
            );
            f.sample(
                &[("device", &d.name), ("result", "failed")],
                d.stats.writes_failed as f64,
            );
        }
    }

    if snapshot.setpoints.iter().any(|s| s.limit_w.is_some()) {
        let mut f = family(
            &mut out,
            "csipd_setpoint_limit_watts",
            "gauge",
            "Active power limit last written to each inverter.",
        );
        for s in &snapshot.setpoints {
            if let Some(w) = s.limit_w {
                f.sample(&[("device", &s.device)], w);
            }
        }
    }
    family(
        &mut out,
        "csipd_recent_errors",
        "gauge",
        "Errors currently in the recent-errors list.",
    )
    .sample(&[], snapshot.last_errors.len() as f64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn special_values_use_prometheus_spelling() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(-1500.0), "-1500");
        assert_eq!(format_value(0.25), "0.25");
    }
}
