//! Pure mappings between the modules' types: UCI config → control inputs, the
//! scheduler's active controls → control's utility controls, and control's merged limits
//! → the status snapshot's limits. No IO; time is an argument.

use crate::config::{self, Config, DeviceRole, Weekday};
use crate::control::{self, Limit, MergedLimits, Source, Sourced, UtilityControls};
use crate::schedule::{self, ControlMode, ModeValue};
use crate::status;

/// The owner's fixed limits (UCI `limits 'fixed'`) as control's input.
pub fn fixed_limits(c: &Config) -> control::FixedLimits {
    let w = |v: Option<u32>| v.map(f64::from);
    control::FixedLimits {
        export_limit_w: w(c.limits.export_limit_w),
        import_limit_w: w(c.limits.import_limit_w),
        generation_limit_w: w(c.limits.generation_limit_w),
        load_limit_w: w(c.limits.load_limit_w),
    }
}

/// control counts weekdays from Sunday (0), config names them from Monday.
fn weekday_index(d: Weekday) -> usize {
    match d {
        Weekday::Sun => 0,
        Weekday::Mon => 1,
        Weekday::Tue => 2,
        Weekday::Wed => 3,
        Weekday::Thu => 4,
        Weekday::Fri => 5,
        Weekday::Sat => 6,
    }
}

/// The enabled tariff windows as control's input. `24:00` (1440) becomes midnight of
/// the next day, which control writes as end 0 (crossing midnight).
pub fn tariff_windows(c: &Config) -> Vec<control::TariffWindow> {
    c.tariffs
        .iter()
        .filter(|t| t.enabled)
        .map(|t| {
            let mut weekdays = [false; 7];
            for d in &t.days {
                weekdays[weekday_index(*d)] = true;
            }
            control::TariffWindow {
                name: t.name.clone(),
                weekdays,
                start_min: t.start_min as u16,
                end_min: (t.end_min % 1440) as u16,
                export_limit_w: f64::from(t.export_limit_w),
            }
        })
        .collect()
}

/// The negative-price rule when the owner enabled it: export nothing while the owner
/// would pay to export.
pub fn price_rule(c: &Config) -> Option<control::PriceRule> {
    c.price.enabled.then_some(control::PriceRule {
        export_limit_w: 0.0,
        below_earn_c_per_kwh: 0.0,
    })
}

/// Where to fetch the price from, when enabled and complete (config validation
/// requires site id and token when enabled).
pub fn price_source(c: &Config) -> Option<control::PriceSourceConfig> {
    if !c.price.enabled {
        return None;
    }
    Some(control::PriceSourceConfig {
        base_url: c.price.url.clone(),
        site_id: c.price.site_id.clone()?,
        token: c.price.token.clone()?,
        timeout_s: 20,
    })
}

/// The POSIX TZ for local-time rules: `main.timezone`, else the system's `/etc/TZ`
/// text (`etc_tz`), else UTC. A string that does not parse falls back to UTC and the
/// reason is returned for the log.
pub fn timezone(c: &Config, etc_tz: Option<&str>) -> (control::PosixTz, Option<String>) {
    let text = c
        .main
        .timezone
        .as_deref()
        .or(etc_tz)
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match text {
        None => (control::PosixTz::utc(), None),
        Some(t) => match control::PosixTz::parse(t) {
            Ok(tz) => (tz, None),
            Err(e) => (
                control::PosixTz::utc(),
                Some(format!("{e}; using UTC for tariff windows")),
            ),
        },
    }
}

/// Devices the controller drives (inverters and storage), enabled, in config order.
pub fn controlled_devices(c: &Config) -> impl Iterator<Item = &config::DeviceConfig> {
    c.devices
        .iter()
        .filter(|d| d.enabled && matches!(d.role, DeviceRole::Inverter | DeviceRole::Storage))
}

/// The enabled site meter, if any (config allows at most one).
pub fn site_meter(c: &Config) -> Option<&config::DeviceConfig> {
    c.devices
        .iter()
        .find(|d| d.enabled && d.role == DeviceRole::Meter)
}

/// Controller parameters for the inverters whose rating is known (`rating_w` gives it
/// per device name). A storage inverter whose charge rate can be limited (model 124:
/// `max_charge_w` gives its WChaMax) carries the import and load limits; without one
/// the controller reports those limits unsupported.
pub fn controller_params(
    c: &Config,
    rating_w: impl Fn(&str) -> Option<f64>,
    max_charge_w: impl Fn(&str) -> Option<f64>,
) -> control::ControllerParams {
    let inverters = controlled_devices(c)
        .filter_map(|d| {
            rating_w(&d.name).map(|r| control::InverterParams {
                name: d.name.clone(),
                rating_w: r,
                max_charge_w: (d.role == DeviceRole::Storage)
                    .then(|| max_charge_w(&d.name))
                    .flatten(),
            })
        })
        .collect();
    let mut p =
        control::ControllerParams::new(inverters, f64::from(c.control.failsafe_export_limit_w));
    p.cycle_ms = (c.control.cycle_s * 1000.0).round() as i64;
    p.meter_timeout_ms = (c.control.meter_stale_s * 1000.0).round() as i64;
    // An inverter is stale on the same clock as the meter: its data feeds the same loop.
    p.inverter_timeout_ms = p.meter_timeout_ms;
    p
}

fn schedule_source(s: &schedule::Source) -> Source {
    match s {
        schedule::Source::Event { event_mrid, .. } => Source::UtilityEvent {
            mrid: event_mrid.clone(),
        },
        schedule::Source::Default { program_mrid, .. } => Source::UtilityDefault {
            program: program_mrid.clone(),
        },
    }
}

/// The scheduler's active controls as control's utility input, in plain watts
/// (opModMaxLimW as a percentage; control's merge turns it into a generation limit).
pub fn utility_controls(
    active: &schedule::ActiveControls,
    ramp: schedule::Ramp,
) -> UtilityControls {
    let limit = |mode: ControlMode| -> Option<Limit> {
        let a = active.get(mode)?;
        let w = a.value.watts()?;
        Some(Limit::new(w, schedule_source(&a.source), a.until_s))
    };
    let flag = |mode: ControlMode| -> Option<Sourced<bool>> {
        let a = active.get(mode)?;
        match a.value {
            ModeValue::Flag(v) => Some(Sourced::new(v, schedule_source(&a.source), a.until_s)),
            _ => None,
        }
    };
    let max_lim_pct = active
        .get(ControlMode::MaxLimW)
        .and_then(|a| match a.value {
            ModeValue::HundredthsPct(p) => Some(Sourced::new(
                f64::from(p) / 100.0,
                schedule_source(&a.source),
                a.until_s,
            )),
            _ => None,
        });
    let (set_grad_w, ramp_tms) = match ramp {
        schedule::Ramp::TimeHundredthsS(t) => (None, Some(t)),
        schedule::Ramp::GradientHundredthsPctPerS(g) => (Some(g), None),
        schedule::Ramp::Unspecified => (None, None),
    };
    UtilityControls {
        export_limit_w: limit(ControlMode::ExpLimW),
        import_limit_w: limit(ControlMode::ImpLimW),
        generation_limit_w: limit(ControlMode::GenLimW),
        load_limit_w: limit(ControlMode::LoadLimW),
        max_lim_pct,
        connect: flag(ControlMode::Connect),
        energize: flag(ControlMode::Energize),
        set_grad_w,
        ramp_tms,
    }
}

/// What the owner's config adds after the merge: `connect 0` keeps the DER
/// disconnected, and the configured ramp-up rate applies when the utility's control
/// gives no ramp (`ramp_up_pct_per_s` → setGradW in hundredths of a percent per second).
pub fn apply_owner_settings(merged: &mut MergedLimits, c: &Config) {
    if !c.limits.connect && merged.connect.as_ref().is_none_or(|s| s.value) {
        merged.connect = Some(Sourced::new(
            false,
            Source::Fixed {
                option: "connect".into(),
            },
            None,
        ));
    }
    if merged.set_grad_w.is_none() && merged.ramp_tms.is_none() {
        let hundredths = (c.control.ramp_up_pct_per_s * 100.0).round();
        merged.set_grad_w = Some(hundredths.clamp(1.0, f64::from(u16::MAX)) as u16);
    }
}

/// control's provenance as the status snapshot's.
pub fn status_source(s: &Source) -> status::LimitSource {
    match s {
        Source::UtilityEvent { mrid } => status::LimitSource::UtilityEvent { mrid: mrid.clone() },
        Source::UtilityDefault { program } => status::LimitSource::ProgramDefault {
            program: Some(program.clone()),
        },
        Source::Fixed { .. } => status::LimitSource::Fixed,
        Source::TariffWindow { name } => status::LimitSource::Tariff {
            name: Some(name.clone()),
        },
        Source::NegativePrice { .. } => status::LimitSource::Price,
        Source::FailSafe => status::LimitSource::FailSafe,
    }
}

/// The limits in force for the status: the merged limits, with the export limit
/// replaced by the fail-safe one while the controller is in fail-safe and that is
/// tighter. `fail_safe_w` is the controller's fail-safe level when in fail-safe;
/// `unsupported` are the modes the control law cannot act on (import/load without a
/// storage inverter that takes a charge limit), flagged as such.
pub fn status_limits(
    merged: &MergedLimits,
    fail_safe_w: Option<f64>,
    unsupported: &[control::Mode],
) -> Vec<status::ActiveLimit> {
    let mut out = Vec::new();
    let power = |mode: status::LimitMode, l: &Limit| status::ActiveLimit {
        mode,
        value_w: Some(l.value),
        connect: None,
        source: status_source(&l.source),
        end_unix_s: l.until_s,
        unsupported: false,
        not_enforceable: None,
    };
    let export = match (&merged.export_limit_w, fail_safe_w) {
        (Some(l), Some(fs)) if fs >= l.value => Some(power(status::LimitMode::Export, l)),
        (_, Some(fs)) => Some(status::ActiveLimit {
            mode: status::LimitMode::Export,
            value_w: Some(fs),
            connect: None,
            source: status::LimitSource::FailSafe,
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        }),
        (Some(l), None) => Some(power(status::LimitMode::Export, l)),
        (None, None) => None,
    };
    out.extend(export);
    for (mode, control_mode, l) in [
        (
            status::LimitMode::Import,
            control::Mode::Import,
            &merged.import_limit_w,
        ),
        (
            status::LimitMode::Generation,
            control::Mode::Generation,
            &merged.generation_limit_w,
        ),
        (
            status::LimitMode::Load,
            control::Mode::Load,
            &merged.load_limit_w,
        ),
    ] {
        if let Some(l) = l {
            let mut limit = power(mode, l);
            limit.unsupported = unsupported.contains(&control_mode);
            out.push(limit);
        }
    }
    // Connect: shown when something says "off" (connect or energize).
    let off = [&merged.connect, &merged.energize]
        .into_iter()
        .flatten()
        .find(|s| !s.value);
    if let Some(s) = off {
        out.push(status::ActiveLimit {
            mode: status::LimitMode::Connect,
            value_w: None,
            connect: Some(false),
            source: status_source(&s.source),
            end_unix_s: s.until_s,
            unsupported: false,
            not_enforceable: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "
config csipd 'main'
config limits 'fixed'
	option export_limit_w '1500'
	option connect '0'
config tariff 'evening'
	option start '22:00'
	option end '24:00'
	list days 'sun'
	list days 'mon'
	option export_limit_w '500'
config tariff 'off'
	option start '01:00'
	option end '02:00'
	option export_limit_w '0'
	option enabled '0'
config control 'site'
	option ramp_up_pct_per_s '2.5'
	option cycle_s '0.5'
	option meter_stale_s '4'
config device 'inv'
	option role 'inverter'
	option transport 'tcp'
	option host '127.0.0.1'
config device 'meter'
	option role 'meter'
	option transport 'tcp'
	option host '127.0.0.1'
	option unit_id '2'
config device 'bat'
	option role 'storage'
	option transport 'tcp'
	option host '127.0.0.1'
	option unit_id '3'
";

    fn cfg() -> Config {
        config::from_text(TEXT, "test.conf").expect("valid").0
    }

    #[test]
    fn config_maps_to_control_inputs() {
        let c = cfg();
        assert_eq!(fixed_limits(&c).export_limit_w, Some(1500.0));
        let w = tariff_windows(&c);
        assert_eq!(w.len(), 1, "disabled windows are left out");
        assert_eq!(w[0].name, "evening");
        assert_eq!((w[0].start_min, w[0].end_min), (22 * 60, 0));
        assert_eq!(
            w[0].weekdays,
            [true, true, false, false, false, false, false]
        );
        let p = controller_params(&c, |n| (n == "inv").then_some(5000.0), |_| None);
        assert_eq!(
            p.inverters.len(),
            1,
            "the battery's rating is not known yet"
        );
        // A charge rate is used for a storage device only: the inverter stays a generator.
        let p = controller_params(&c, |_| Some(5000.0), |_| Some(3000.0));
        let charge: Vec<(&str, Option<f64>)> = p
            .inverters
            .iter()
            .map(|i| (i.name.as_str(), i.max_charge_w))
            .collect();
        assert_eq!(charge, [("inv", None), ("bat", Some(3000.0))]);
        assert_eq!(p.cycle_ms, 500);
        assert_eq!(p.meter_timeout_ms, 4000);
        assert_eq!(site_meter(&c).map(|d| d.name.as_str()), Some("meter"));
    }

    #[test]
    fn window_to_2400_is_active_until_midnight() {
        let c = cfg();
        let w = &tariff_windows(&c)[0];
        let tz = control::PosixTz::utc();
        // 2026-11-22 is a Sunday; 23:30 UTC is inside, until 24:00.
        let sunday_2330 = 1_795_305_600 + 23 * 3600 + 1800;
        assert_eq!(tz.to_local(sunday_2330).weekday, 0);
        assert_eq!(
            w.active_until(&tz, sunday_2330),
            Some(1_795_305_600 + 86_400)
        );
        assert_eq!(w.active_until(&tz, sunday_2330 - 3 * 3600), None);
    }

    #[test]
    fn owner_connect_off_and_default_ramp() {
        let c = cfg();
        let mut merged = MergedLimits::default();
        apply_owner_settings(&mut merged, &c);
        assert_eq!(merged.connect.as_ref().map(|s| s.value), Some(false));
        assert_eq!(merged.set_grad_w, Some(250));
        // A utility ramp is left alone.
        let mut merged = MergedLimits {
            ramp_tms: Some(3000),
            ..MergedLimits::default()
        };
        apply_owner_settings(&mut merged, &c);
        assert_eq!(merged.set_grad_w, None);
    }

    #[test]
    fn timezone_falls_back_to_utc_with_a_reason() {
        let c = cfg();
        let (tz, why) = timezone(&c, Some("AEST-10"));
        assert_eq!(tz.offset_at(0).0, 36_000);
        assert!(why.is_none());
        let (tz, why) = timezone(&c, Some("Australia/Adelaide"));
        assert_eq!(tz.offset_at(0).0, 0);
        assert!(why.is_some_and(|w| w.contains("UTC")));
        assert_eq!(timezone(&c, None).0.offset_at(0).0, 0);
    }

    #[test]
    fn fail_safe_replaces_a_looser_export_limit_in_the_status() {
        let merged = MergedLimits {
            export_limit_w: Some(Limit::new(
                1500.0,
                Source::TariffWindow { name: "w".into() },
                Some(99),
            )),
            ..MergedLimits::default()
        };
        let l = status_limits(&merged, None, &[]);
        assert_eq!(
            l[0].source,
            status::LimitSource::Tariff {
                name: Some("w".into())
            }
        );
        assert_eq!(l[0].end_unix_s, Some(99));
        let l = status_limits(&merged, Some(0.0), &[]);
        assert_eq!(l[0].source, status::LimitSource::FailSafe);
        assert_eq!(l[0].value_w, Some(0.0));
        let l = status_limits(&merged, Some(2000.0), &[]);
        assert_eq!(l[0].value_w, Some(1500.0));
    }

    #[test]
    fn an_import_limit_without_storage_shows_as_unsupported() {
        let merged = MergedLimits {
            import_limit_w: Some(Limit::new(
                2000.0,
                Source::Fixed { option: "x".into() },
                None,
            )),
            generation_limit_w: Some(Limit::new(
                4000.0,
                Source::Fixed { option: "x".into() },
                None,
            )),
            ..MergedLimits::default()
        };
        let l = status_limits(&merged, None, &[control::Mode::Import]);
        let flags: Vec<(status::LimitMode, bool)> =
            l.iter().map(|l| (l.mode, l.unsupported)).collect();
        assert_eq!(
            flags,
            [
                (status::LimitMode::Import, true),
                (status::LimitMode::Generation, false)
            ]
        );
        let json = serde_json::to_value(&l).expect("json");
        assert_eq!(json[0]["unsupported"], true);
        assert!(json[1].get("unsupported").is_none(), "left out when false");
    }

    #[test]
    fn scheduler_outcome_maps_to_utility_controls_with_provenance() {
        use schedule::{ActivePower, ControlSet, DefaultControl, Event, Program};
        let program = Program {
            mrid: "PROG1".into(),
            fsa: "/fsa/1".into(),
            primacy: 1,
            default_control: Some(DefaultControl {
                mrid: "DEF1".into(),
                controls: ControlSet {
                    exp_lim_w: Some(ActivePower::from_watts(5000)),
                    gen_lim_w: Some(ActivePower {
                        value: 9,
                        multiplier: 3,
                    }),
                    ..ControlSet::default()
                },
                set_grad_w: Some(27),
            }),
        };
        let mut event = Event::new(
            "3F2A09B1C0FFEE00112233445566778A",
            "PROG1",
            900,
            1000,
            600,
            ControlSet {
                exp_lim_w: Some(ActivePower {
                    value: 15,
                    multiplier: 2,
                }),
                max_lim_hundredths_pct: Some(5000),
                connect: Some(true),
                ..ControlSet::default()
            },
        );
        event.ramp_tms = Some(3000);
        let input = schedule::Input {
            programs: std::slice::from_ref(&program),
            events: std::slice::from_ref(&event),
            now_s: 1200,
        };
        let out = schedule::evaluate(
            &input,
            &mut schedule::Rng::new(1),
            &schedule::State::default(),
        );
        let u = utility_controls(&out.active, out.ramp);
        let export = u.export_limit_w.clone().expect("export from the event");
        assert_eq!(export.value, 1500.0);
        assert_eq!(
            export.source,
            Source::UtilityEvent {
                mrid: "3F2A09B1C0FFEE00112233445566778A".into()
            }
        );
        assert_eq!(export.until_s, Some(1600));
        // opModMaxLimW 5000 = 50 %; GenLimW still from the default (9 kW).
        let max_lim = u.max_lim_pct.as_ref().expect("max lim");
        assert_eq!(max_lim.value, 50.0);
        assert!(matches!(max_lim.source, Source::UtilityEvent { .. }));
        assert_eq!(u.generation_limit_w.as_ref().map(|g| g.value), Some(9000.0));
        // Merged over a 10 kW fleet, 50 % (5 kW) is the tighter generation limit.
        let merged = control::merge(
            &control::MergeInputs {
                utility: u.clone(),
                total_set_max_w: 10_000.0,
                ..control::MergeInputs::default()
            },
            &control::PosixTz::utc(),
            1200,
        );
        assert_eq!(merged.generation_limit_w.map(|g| g.value), Some(5000.0));
        assert_eq!(u.connect.map(|c| c.value), Some(true));
        assert_eq!((u.ramp_tms, u.set_grad_w), (Some(3000), None));

        // After the event: the program's default, with setGradW.
        let input = schedule::Input {
            now_s: 1700,
            ..input
        };
        let out = schedule::evaluate(&input, &mut schedule::Rng::new(1), &out.state);
        let u = utility_controls(&out.active, out.ramp);
        let export = u.export_limit_w.expect("export from the default");
        assert_eq!(export.value, 5000.0);
        assert_eq!(
            export.source,
            Source::UtilityDefault {
                program: "PROG1".into()
            }
        );
        assert_eq!(u.generation_limit_w.map(|g| g.value), Some(9000.0));
        assert_eq!((u.ramp_tms, u.set_grad_w), (None, Some(27)));
    }
}
