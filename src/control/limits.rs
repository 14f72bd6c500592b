//! Limit merging: the CSIP-AUS active controls, the owner's fixed UCI limits, tariff
//! windows and the negative-price rule combine per mode; the most restrictive value wins
//! and keeps the name of the source that set it and when that source ends.

use super::price::FeedInPrice;
use super::tz::PosixTz;
use crate::devices::curves::Curve;
use crate::schedule::{self, ControlMode, ModeValue};
use crate::sep2::{EnterService, PowerFactorWithExcitation};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Who set a limit: the one provenance type, used by the merge, the control law's
/// reasons, the status snapshot and its JSON (`{"kind": "utility_event", "mrid": …}`;
/// the `kind` names are what LuCI and `csipd status` read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimitSource {
    /// An active DERControl event (its mRID, hex).
    UtilityEvent { mrid: String },
    /// The DefaultDERControl of a DER program (its mRID or description); in force when
    /// no event is active, or comms were lost long enough.
    #[serde(rename = "program_default")]
    UtilityDefault {
        #[serde(default)]
        program: String,
    },
    /// An owner's fixed limit from UCI `limits 'fixed'` (the option name).
    Fixed {
        #[serde(default)]
        option: String,
    },
    /// An owner's tariff window (its UCI section name).
    #[serde(rename = "tariff")]
    TariffWindow {
        #[serde(default)]
        name: String,
    },
    /// The owner's negative feed-in price rule (the price the owner earns, c/kWh).
    #[serde(rename = "price")]
    NegativePrice {
        #[serde(default)]
        earn_c_per_kwh: f64,
    },
    /// The configured fail-safe export limit: the site's export is not measured, so
    /// the control law holds the inverters' total output at this level
    /// (`control::law`, step 2); `cause` says why it is not measured.
    FailSafe {
        #[serde(default)]
        cause: FailSafeCause,
    },
    /// The configured `control.fallback_export_limit_w` on a site with a utility server
    /// configured, while no utility export limit is known ([`fallback_export_limit`]):
    /// a site export limit, kept by the closed loop like a fixed one; `cause` says why.
    Fallback {
        #[serde(default)]
        cause: FallbackCause,
    },
}

/// Why the fallback export limit holds (JSON `source.cause`: "utility_not_read",
/// "no_utility_export_limit").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackCause {
    /// No utility control has been read from the server or restored from the store
    /// since start-up: the server not reached, TLS refused, not registered, PIN
    /// mismatch, its lists not all read yet.
    #[default]
    UtilityNotRead,
    /// The utility's programs were read (or restored) but put no export limit in force:
    /// no DER program, no active event with opModExpLimW and no DefaultDERControl with
    /// one (CSIP-AUS requires a DefaultDERControl; a server that sends none or an empty
    /// one leaves the site without the utility's limit).
    NoUtilityExportLimit,
}

impl fmt::Display for FallbackCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FallbackCause::UtilityNotRead => "no utility control read yet",
            FallbackCause::NoUtilityExportLimit => "the utility sets no export limit",
        })
    }
}

/// The fallback export limit in force, if any: on a site with a utility configured
/// (`configured_w` is `control.fallback_export_limit_w` there, `None` on an owner-only
/// site), while the utility's controls (`utility`: as last evaluated or restored from
/// the store, `None` before either) set no export limit. Once a utility export limit
/// is in force it is the utility's; a comms loss keeps the last known controls (then
/// the programs' defaults), and only when those set no export limit either does the
/// fallback come back. Offered to the merge in the utility's place, so a tighter
/// owner limit still wins.
pub fn fallback_export_limit(
    configured_w: Option<u32>,
    utility: Option<&UtilityControls>,
) -> Option<Limit> {
    let w = configured_w?;
    let cause = match utility {
        None => FallbackCause::UtilityNotRead,
        Some(u) if u.export_limit_w.is_none() => FallbackCause::NoUtilityExportLimit,
        Some(_) => return None,
    };
    Some(Limit::new(
        f64::from(w),
        LimitSource::Fallback { cause },
        None,
    ))
}

/// Why the fail-safe export limit holds (JSON `source.cause`: "no_meter",
/// "meter_not_read", "meter_stale").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailSafeCause {
    /// No site meter is configured: the export is never measured, so the fail-safe
    /// level holds for good, applied to the inverters' output alone.
    NoMeter,
    /// The site meter has not given a good reading since start-up.
    MeterNotRead,
    /// The site meter's last good reading is older than `control.meter_stale_s`, or
    /// it read as invalid.
    #[default]
    MeterStale,
}

impl fmt::Display for FailSafeCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailSafeCause::NoMeter => "no site meter configured",
            FailSafeCause::MeterNotRead => "no meter reading yet",
            FailSafeCause::MeterStale => "meter data stale",
        })
    }
}

impl LimitSource {
    /// The JSON `kind`: "utility_event", "program_default", "fixed", "tariff", "price",
    /// "fail_safe", "fallback".
    pub fn kind(&self) -> &'static str {
        match self {
            LimitSource::UtilityEvent { .. } => "utility_event",
            LimitSource::UtilityDefault { .. } => "program_default",
            LimitSource::Fixed { .. } => "fixed",
            LimitSource::TariffWindow { .. } => "tariff",
            LimitSource::NegativePrice { .. } => "price",
            LimitSource::FailSafe { .. } => "fail_safe",
            LimitSource::Fallback { .. } => "fallback",
        }
    }
}

impl fmt::Display for LimitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitSource::UtilityEvent { mrid } => write!(f, "utility event {}", short_mrid(mrid)),
            LimitSource::UtilityDefault { program } => {
                write!(f, "utility default control {}", short_mrid(program))
            }
            LimitSource::Fixed { option } => write!(f, "fixed limit ({option})"),
            LimitSource::TariffWindow { name } => write!(f, "tariff window {name}"),
            LimitSource::NegativePrice { earn_c_per_kwh } => {
                write!(f, "negative feed-in price {earn_c_per_kwh:.2} c/kWh")
            }
            LimitSource::FailSafe {
                cause: FailSafeCause::NoMeter,
            } => write!(
                f,
                "no site meter configured: the inverters' output is held at this level"
            ),
            LimitSource::FailSafe { cause } => write!(f, "fail-safe ({cause})"),
            LimitSource::Fallback { cause } => write!(f, "fallback export limit ({cause})"),
        }
    }
}

/// mRIDs are 32 hex digits; the status shows the first four, enough to tell events apart.
fn short_mrid(s: &str) -> String {
    if s.chars().count() > 8 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("{}…", s.chars().take(4).collect::<String>().to_lowercase())
    } else {
        s.to_string()
    }
}

/// A value with its provenance: who set it and until when (UTC seconds; `None` = open).
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: LimitSource,
    pub until_s: Option<i64>,
}

/// A power limit in watts with its provenance.
pub type Limit = Sourced<f64>;

impl<T> Sourced<T> {
    pub fn new(value: T, source: LimitSource, until_s: Option<i64>) -> Self {
        Sourced {
            value,
            source,
            until_s,
        }
    }
}

/// The limited quantities (the CSIP-AUS `opMod…LimW` modes) and connect/energize: the
/// one limit-mode type of the merge, the control law and the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// Site export limit (opModExpLimW).
    Export,
    /// Site import limit (opModImpLimW).
    Import,
    /// Generation limit (opModGenLimW, and opModMaxLimW as a share of setMaxW).
    Generation,
    /// Load limit (opModLoadLimW).
    Load,
    /// Connect/energize (opModConnect, opModEnergize): no value in watts.
    Connect,
}

impl LimitMode {
    /// "export", "import", "generation", "load", "connect" (also the JSON name).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMode::Export => "export",
            LimitMode::Import => "import",
            LimitMode::Generation => "generation",
            LimitMode::Load => "load",
            LimitMode::Connect => "connect",
        }
    }
}

/// What the CSIP-AUS scheduler says is in force now, already in plain watts.
/// `None` means the mode is not controlled by the utility.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UtilityControls {
    pub export_limit_w: Option<Limit>,
    pub import_limit_w: Option<Limit>,
    pub generation_limit_w: Option<Limit>,
    pub load_limit_w: Option<Limit>,
    /// opModMaxLimW as a percentage of setMaxW (2030.5 sends hundredths of a percent:
    /// divide by 100). Merged into the generation limit using `MergeInputs::total_set_max_w`.
    pub max_lim_pct: Option<Sourced<f64>>,
    /// opModFixedW as a signed percentage (2030.5 sends hundredths): positive is a share
    /// of setMaxW to generate (or discharge), negative a share of the storage's maximum
    /// charge rate to consume. csipd can only cap, so the merge makes it a generation cap
    /// and a charge cap (the AS/NZS 4755 demand response modes are "at most" levels).
    pub fixed_w_pct: Option<Sourced<f64>>,
    /// opModConnect: false = disconnect the DER.
    pub connect: Option<Sourced<bool>>,
    /// opModEnergize: false = de-energize (output zero).
    pub energize: Option<Sourced<bool>>,
    /// setGradW: default ramp rate, hundredths of a percent of setMaxW per second (0 = none).
    pub set_grad_w: Option<u16>,
    /// rampTms of the active control: hundredths of a second to move to the new setting.
    pub ramp_tms: Option<u16>,
    /// csipaus:opModStorageTargetW (CSIP-AUS v1.3): the batteries' target output, W;
    /// positive discharges, negative charges. A target, not a limit: the limits win.
    pub storage_target_w: Option<Sourced<f64>>,
    /// The inverter settings in force (curves, power factor, var level, droop), one
    /// slot per mode (see [`InverterSettings::MODES`]) with its source; `None` = the
    /// utility sets none. Read with [`UtilityControls::setting`].
    pub settings: [Option<Sourced<Setting>>; ControlMode::ALL.len()],
    /// The DefaultDERControl's enter-service settings (`setES*`, 2030.5 units) in force
    /// (SunSpec 703).
    pub enter_service: Option<Sourced<EnterService>>,
}

/// One inverter setting's value in plain units, as the bus writes it: the utility's
/// 2030.5 value after the edge of `control` (multipliers applied).
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    /// opModVoltVar / opModVoltWatt / opModWattVar / opModWattPF / opModFreqWatt: the
    /// resolved curve.
    /// Shared: the coordinator hands a copy of the settings to every inverter every
    /// cycle, and a copy is a reference count, not the points.
    Curve(Arc<Curve>),
    /// opModFixedPFInjectW / opModFixedPFAbsorbW.
    PowerFactor(PowerFactorWithExcitation),
    /// opModFixedVar: % of setMaxVar (SunSpec `VArPct` / `VarSetPct` of VArMax),
    /// positive injects. Only refType %setMaxVar becomes one (no SunSpec model takes
    /// %statVarAvail).
    VarPct(f64),
    /// opModTargetVar: var (ReactivePower with its multiplier applied), positive
    /// injects (SunSpec 704 `VarSet`).
    Var(f64),
    /// opModFreqDroop, in 2030.5's units (SunSpec 711 takes them as they are).
    FreqDroop(crate::sep2::FreqDroop),
}

impl Setting {
    /// The value in words, for the log, `/status` and `csipd status`: `4 points 90.4
    /// %V → 44 %, …`, `cos φ 0.950 absorbing vars`, `-25.00 % of setMaxVar`, `-1500 var
    /// (absorbing)`, `dead band +0.150/-0.150 Hz, …`.
    pub fn text(&self) -> String {
        match self {
            Setting::Curve(c) => curve_text(c),
            Setting::PowerFactor(pf) => power_factor_text(pf),
            Setting::VarPct(p) => format!("{p:.2} % of setMaxVar"),
            Setting::Var(v) => target_var_text(v),
            Setting::FreqDroop(d) => freq_droop_text(d),
        }
    }

    /// The scheduler's value of an inverter-setting mode as the bus writes it; `None`
    /// for a value no inverter takes (opModFixedVar in % of statVarAvail) or a mode
    /// that is no inverter setting.
    pub fn of_mode_value(value: &ModeValue) -> Option<Setting> {
        Some(match value {
            ModeValue::Curve(c) => Setting::Curve(Arc::new(c.clone())),
            ModeValue::PowerFactor(pf) => Setting::PowerFactor(*pf),
            // refType 2: %setMaxVar, the one SunSpec takes.
            ModeValue::FixedVar(v) if v.ref_type == 2 => {
                Setting::VarPct(f64::from(v.value) / 100.0)
            }
            ModeValue::ReactivePower(q) => Setting::Var(q.vars()),
            ModeValue::FreqDroop(d) => Setting::FreqDroop(*d),
            _ => return None,
        })
    }

    /// Whether `self` and `other` are the same setting (a shared curve compares by
    /// pointer first).
    pub fn same(&self, other: &Setting) -> bool {
        match (self, other) {
            (Setting::Curve(a), Setting::Curve(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => self == other,
        }
    }
}

/// The inverter settings in force, plain values without their sources, one slot per
/// mode: what [`super::Command::settings`] asks each inverter to run. An empty slot =
/// the utility sets none: the inverter's own setting (csipd switches off what it set).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InverterSettings {
    /// By `ControlMode as usize`; only [`InverterSettings::MODES`] are ever set.
    modes: [Option<Setting>; ControlMode::ALL.len()],
    /// The utility's enter-service settings (SunSpec 703); `None`: it sets none, and
    /// the inverters keep what they have (see README, "Curves, power factor and var
    /// from the utility").
    pub enter_service: Option<EnterService>,
}

impl InverterSettings {
    /// The modes it covers, in order.
    /// opModTargetVar comes after opModFixedVar: on a 704 inverter, which has one
    /// reactive power setpoint, the target holds it when the utility sets both.
    pub const MODES: [ControlMode; 10] = [
        ControlMode::VoltVar,
        ControlMode::VoltWatt,
        ControlMode::FixedPFInjectW,
        ControlMode::FixedPFAbsorbW,
        ControlMode::FixedVar,
        ControlMode::TargetVar,
        ControlMode::WattVar,
        ControlMode::WattPF,
        ControlMode::FreqDroop,
        ControlMode::FreqWatt,
    ];

    /// The setting of `mode`, if the utility sets one.
    pub fn get(&self, mode: ControlMode) -> Option<&Setting> {
        self.modes[mode as usize].as_ref()
    }

    /// Sets (or clears) `mode`'s setting.
    pub fn set(&mut self, mode: ControlMode, value: Option<Setting>) {
        self.modes[mode as usize] = value;
    }

    /// Whether `mode` has the same setting (or none) in both.
    pub fn same(&self, other: &InverterSettings, mode: ControlMode) -> bool {
        match (self.get(mode), other.get(mode)) {
            (Some(a), Some(b)) => a.same(b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Takes `mode`'s setting from `from` (a curve is shared, not copied).
    pub fn copy_from(&mut self, from: &InverterSettings, mode: ControlMode) {
        self.set(mode, from.get(mode).cloned());
    }
}

/// The enter-service settings in words, for the log and `csipd status`, only the
/// values given: `V 90.00–110.00 %, 47.50–50.15 Hz, delay 60.00 s, random delay
/// 0.00 s, ramp 360.00 s`.
pub fn enter_service_text(es: &EnterService) -> String {
    let range = |lo: Option<f64>, hi: Option<f64>, unit: &str| match (lo, hi) {
        (None, None) => None,
        (lo, hi) => {
            let f = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2}"));
            Some(format!("{}–{} {unit}", f(lo), f(hi)))
        }
    };
    let mut parts: Vec<String> = Vec::new();
    let h = |v: f64| v / 100.0;
    if let Some(r) = range(
        es.low_volt.map(|v| h(f64::from(v))),
        es.high_volt.map(|v| h(f64::from(v))),
        "% V",
    ) {
        parts.push(r);
    }
    if let Some(r) = range(
        es.low_freq.map(|v| h(f64::from(v))),
        es.high_freq.map(|v| h(f64::from(v))),
        "Hz",
    ) {
        parts.push(r);
    }
    for (what, v) in [
        ("delay", es.delay),
        ("random delay", es.random_delay),
        ("ramp", es.ramp_tms),
    ] {
        if let Some(v) = v {
            parts.push(format!("{what} {:.2} s", h(f64::from(v))));
        }
    }
    parts.join(", ")
}

/// A setting's value in words, for the log and `csipd status`: `4 points 90.4 %V →
/// 44 %, …, 110 %V → -60 %`, `cos φ 0.950 absorbing vars`, `-25.00 % of setMaxVar`.
pub fn curve_text(c: &Curve) -> String {
    // A watt-var curve's x is active power in % of WMax.
    let points: Vec<String> = c
        .points
        .iter()
        .map(|p| match c.mode {
            ControlMode::WattVar | ControlMode::WattPF => {
                format!("{:.1} %W → {} %", p.v_pct, p.y_pct)
            }
            // Frequencies need their hundredths (50.25 Hz).
            ControlMode::FreqWatt => format!("{:.2} Hz → {} %", p.v_pct, p.y_pct),
            _ => format!("{:.1} %V → {} %", p.v_pct, p.y_pct),
        })
        .collect();
    format!("{} points {}", c.points.len(), points.join(", "))
}

/// See [`curve_text`]: `dead band +0.150/-0.150 Hz, droop 0.050/0.050, 1.00 s`.
pub fn freq_droop_text(d: &crate::sep2::FreqDroop) -> String {
    format!(
        "dead band +{:.3}/-{:.3} Hz, droop {:.3}/{:.3}, {:.2} s",
        f64::from(d.db_of) / 1000.0,
        f64::from(d.db_uf) / 1000.0,
        f64::from(d.k_of) / 1000.0,
        f64::from(d.k_uf) / 1000.0,
        f64::from(d.open_loop_tms) / 100.0
    )
}

/// See [`curve_text`]: `-1500 var (absorbing)`.
pub fn target_var_text(var: &f64) -> String {
    let way = if *var < 0.0 { "absorbing" } else { "injecting" };
    format!("{var:.0} var ({way})")
}

/// See [`curve_text`].
pub fn power_factor_text(pf: &PowerFactorWithExcitation) -> String {
    format!(
        "cos φ {:.3} {}",
        schedule::power_factor(*pf),
        if pf.excitation {
            "absorbing vars"
        } else {
            "injecting vars"
        }
    )
}

/// One line for the log: each control in force with its source and end (UTC), e.g.
/// `export ≤ 1500 W (utility event ab12…, until 07:35:00 UTC), energize on (…)`;
/// `none` when the utility sets nothing.
impl fmt::Display for UtilityControls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn item<T>(
            parts: &mut Vec<String>,
            what: &str,
            c: &Option<Sourced<T>>,
            show: impl Fn(&T) -> String,
        ) {
            if let Some(c) = c {
                let until = match c.until_s {
                    Some(t) => {
                        let day_s = t.rem_euclid(86_400);
                        format!(
                            ", until {:02}:{:02}:{:02} UTC",
                            day_s / 3600,
                            day_s / 60 % 60,
                            day_s % 60
                        )
                    }
                    None => String::new(),
                };
                parts.push(format!("{what} {} ({}{until})", show(&c.value), c.source));
            }
        }
        let watts = |w: &f64| format!("≤ {w:.0} W");
        let pct = |p: &f64| format!("{p:.2} %");
        let on = |b: &bool| if *b { "on" } else { "off" }.to_string();
        let mut parts = Vec::new();
        item(&mut parts, "export", &self.export_limit_w, watts);
        item(&mut parts, "import", &self.import_limit_w, watts);
        item(&mut parts, "generation", &self.generation_limit_w, watts);
        item(&mut parts, "load", &self.load_limit_w, watts);
        item(&mut parts, "max power", &self.max_lim_pct, |p| {
            format!("≤ {p:.2} % of setMaxW")
        });
        item(&mut parts, "fixed power", &self.fixed_w_pct, pct);
        item(&mut parts, "connect", &self.connect, on);
        item(&mut parts, "energize", &self.energize, on);
        item(&mut parts, "storage target", &self.storage_target_w, |w| {
            format!("{w:.0} W")
        });
        for mode in InverterSettings::MODES {
            item(
                &mut parts,
                setting_label(mode),
                self.setting_slot(mode),
                Setting::text,
            );
        }
        item(
            &mut parts,
            "enter service",
            &self.enter_service,
            enter_service_text,
        );
        if let Some(g) = self.set_grad_w {
            parts.push(format!("ramp {:.2} %/s of setMaxW", f64::from(g) / 100.0));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl UtilityControls {
    /// The scheduler's active controls (2030.5 values with their multipliers) in plain
    /// watts, with provenance: this is the edge of `control` where 2030.5 values become
    /// watts. opModMaxLimW stays a percentage (the merge turns it into a generation
    /// limit over the fleet's setMaxW).
    pub fn from_schedule(active: &schedule::ActiveControls, ramp: schedule::Ramp) -> Self {
        let source = |s: &schedule::Source| match s {
            schedule::Source::Event { event_mrid, .. } => LimitSource::UtilityEvent {
                mrid: event_mrid.clone(),
            },
            schedule::Source::Default { program_mrid, .. } => LimitSource::UtilityDefault {
                program: program_mrid.clone(),
            },
        };
        let limit = |mode: ControlMode| -> Option<Limit> {
            let a = active.get(mode)?;
            let w = a.value.watts()?;
            Some(Limit::new(w, source(&a.source), a.until_s))
        };
        let flag = |mode: ControlMode| -> Option<Sourced<bool>> {
            let a = active.get(mode)?;
            match a.value {
                ModeValue::Flag(v) => Some(Sourced::new(v, source(&a.source), a.until_s)),
                _ => None,
            }
        };
        let max_lim_pct = active
            .get(ControlMode::MaxLimW)
            .and_then(|a| match a.value {
                ModeValue::HundredthsPct(p) => Some(Sourced::new(
                    f64::from(p) / 100.0,
                    source(&a.source),
                    a.until_s,
                )),
                _ => None,
            });
        let fixed_w_pct = active.get(ControlMode::FixedW).and_then(|a| match a.value {
            ModeValue::SignedHundredthsPct(p) => Some(Sourced::new(
                f64::from(p) / 100.0,
                source(&a.source),
                a.until_s,
            )),
            _ => None,
        });
        let (set_grad_w, ramp_tms) = match ramp {
            schedule::Ramp::TimeHundredthsS(t) => (None, Some(t)),
            schedule::Ramp::GradientHundredthsPctPerS(g) => (Some(g), None),
            schedule::Ramp::Unspecified => (None, None),
        };
        let mut out = UtilityControls {
            export_limit_w: limit(ControlMode::ExpLimW),
            import_limit_w: limit(ControlMode::ImpLimW),
            generation_limit_w: limit(ControlMode::GenLimW),
            load_limit_w: limit(ControlMode::LoadLimW),
            max_lim_pct,
            fixed_w_pct,
            connect: flag(ControlMode::Connect),
            energize: flag(ControlMode::Energize),
            set_grad_w,
            ramp_tms,
            storage_target_w: limit(ControlMode::StorageTargetW),
            settings: Default::default(),
            enter_service: None,
        };
        out.enter_service = active
            .enter_service()
            .map(|es| Sourced::new(es.value, source(&es.source), None));
        for mode in InverterSettings::MODES {
            out.settings[mode as usize] = active.get(mode).and_then(|a| {
                Some(Sourced::new(
                    Setting::of_mode_value(&a.value)?,
                    source(&a.source),
                    a.until_s,
                ))
            });
        }
        out
    }

    /// The setting of `mode` in force, with its source.
    pub fn setting(&self, mode: ControlMode) -> Option<&Sourced<Setting>> {
        self.settings[mode as usize].as_ref()
    }

    fn setting_slot(&self, mode: ControlMode) -> &Option<Sourced<Setting>> {
        &self.settings[mode as usize]
    }

    /// The inverter settings in force, without their sources (see [`InverterSettings`];
    /// curves are shared, not copied).
    pub fn inverter_settings(&self) -> InverterSettings {
        let mut out = InverterSettings::default();
        for mode in InverterSettings::MODES {
            out.set(mode, self.setting(mode).map(|s| s.value.clone()));
        }
        out.enter_service = self.enter_service.as_ref().map(|s| s.value);
        out
    }
}

/// The short name of an inverter-setting mode in the log's `utility controls:` line.
fn setting_label(mode: ControlMode) -> &'static str {
    match mode {
        ControlMode::VoltVar => "volt-var",
        ControlMode::VoltWatt => "volt-watt",
        ControlMode::FixedPFInjectW => "fixed PF",
        ControlMode::FixedPFAbsorbW => "fixed PF absorbing",
        ControlMode::FixedVar => "fixed var",
        ControlMode::TargetVar => "target var",
        ControlMode::WattVar => "watt-var",
        ControlMode::WattPF => "watt-PF",
        ControlMode::FreqDroop => "freq droop",
        ControlMode::FreqWatt => "freq-watt",
        _ => mode.name(),
    }
}

use crate::config::Weekday;
/// The owner's fixed limits and tariff windows are the config module's types
/// ([`crate::config::FixedLimits`], [`crate::config::TariffWindow`]): one type per
/// concept. This module evaluates them.
pub use crate::config::{FixedLimits, TariffWindow};

impl TariffWindow {
    /// If the window is active at `now_s` (UTC seconds), the UTC second it ends. Local
    /// time comes from `tz`; a window whose end is not after its start runs across
    /// midnight, and its `days` name the day it starts on. `24:00` (1440) ends at the
    /// next midnight. A disabled window is never active.
    pub fn active_until(&self, tz: &PosixTz, now_s: i64) -> Option<i64> {
        if !self.enabled {
            return None;
        }
        let local = tz.to_local(now_s);
        let minute = local.second_of_day / 60;
        let today = Weekday::from_days_since_sunday(local.weekday);
        let yesterday = Weekday::from_days_since_sunday(local.weekday + 6);
        let on = |d: Weekday| self.days.contains(&d);
        // Local seconds since 1970 of today's local midnight.
        let local_midnight = now_s + local.utc_offset_s as i64 - local.second_of_day as i64;
        let end_local =
            |day_offset: i64| local_midnight + day_offset * 86400 + self.end_min as i64 * 60;
        if self.start_min < self.end_min {
            (on(today) && minute >= self.start_min && minute < self.end_min)
                .then(|| tz.local_to_utc(end_local(0)))
        } else if on(today) && minute >= self.start_min {
            Some(tz.local_to_utc(end_local(1)))
        } else if on(yesterday) && minute < self.end_min {
            Some(tz.local_to_utc(end_local(0)))
        } else {
            None
        }
    }
}

/// The owner's negative feed-in price rule.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceRule {
    /// Export limit while the price is below the threshold (usually 0 W).
    pub export_limit_w: f64,
    /// Limit while what the owner earns for export is below this (c/kWh; usually 0).
    pub below_earn_c_per_kwh: f64,
}

/// Everything the merge looks at.
#[derive(Debug, Clone, Default)]
pub struct MergeInputs<'a> {
    pub utility: UtilityControls,
    pub fixed: FixedLimits,
    pub windows: &'a [TariffWindow],
    pub price_rule: Option<PriceRule>,
    /// The current feed-in price if one is known and fresh (see `price::PriceTracker`).
    pub price: Option<FeedInPrice>,
    /// The fallback export limit in force ([`fallback_export_limit`]): offered in place
    /// of the utility's export limit, which it is only when that is `None`.
    pub fallback: Option<Limit>,
    /// Sum of the controlled inverters' setMaxW, to turn opModMaxLimW into watts.
    pub total_set_max_w: f64,
    /// Sum of the storage's maximum charge rates (setMaxChargeRateW), to turn a negative
    /// opModFixedW into watts; 0 without storage.
    pub total_max_charge_w: f64,
}

/// The merged limits per mode, each with its provenance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MergedLimits {
    pub export_limit_w: Option<Limit>,
    pub import_limit_w: Option<Limit>,
    pub generation_limit_w: Option<Limit>,
    pub load_limit_w: Option<Limit>,
    pub connect: Option<Sourced<bool>>,
    pub energize: Option<Sourced<bool>>,
    pub set_grad_w: Option<u16>,
    pub ramp_tms: Option<u16>,
    /// The utility's storage target (signed W, positive discharges); the control law
    /// holds it back where a limit above is tighter.
    pub storage_target_w: Option<Sourced<f64>>,
}

impl MergedLimits {
    pub fn get(&self, mode: LimitMode) -> Option<&Limit> {
        match mode {
            LimitMode::Export => self.export_limit_w.as_ref(),
            LimitMode::Import => self.import_limit_w.as_ref(),
            LimitMode::Generation => self.generation_limit_w.as_ref(),
            LimitMode::Load => self.load_limit_w.as_ref(),
            LimitMode::Connect => None,
        }
    }

    /// One status line per limited mode, e.g.
    /// "export limit 1500 W — utility event 3f2a…, until 14:35".
    pub fn describe(&self, tz: &PosixTz) -> Vec<String> {
        let mut lines = Vec::new();
        for mode in [
            LimitMode::Export,
            LimitMode::Import,
            LimitMode::Generation,
            LimitMode::Load,
        ] {
            if let Some(l) = self.get(mode) {
                lines.push(describe_limit(mode, l, tz));
            }
        }
        for (what, s) in [("connect", &self.connect), ("energize", &self.energize)] {
            if let Some(s) = s.as_ref().filter(|s| !s.value) {
                lines.push(format!(
                    "{what} off — {}{}",
                    s.source,
                    until_text(s.until_s, tz)
                ));
            }
        }
        lines
    }
}

fn until_text(until_s: Option<i64>, tz: &PosixTz) -> String {
    match until_s {
        Some(t) => {
            let l = tz.to_local(t);
            format!(", until {:02}:{:02}", l.hour(), l.minute())
        }
        None => String::new(),
    }
}

/// "export limit 1500 W — utility event 3f2a…, until 14:35" (`until` in local time).
pub fn describe_limit(mode: LimitMode, limit: &Limit, tz: &PosixTz) -> String {
    format!(
        "{} limit {:.0} W — {}{}",
        mode.as_str(),
        limit.value,
        limit.source,
        until_text(limit.until_s, tz)
    )
}

/// Keeps the more restrictive of two limits. On a tie the earlier candidate stays (so
/// utility limits, offered first, keep the credit).
fn tighter(current: Option<Limit>, candidate: Option<Limit>) -> Option<Limit> {
    match (current, candidate) {
        (Some(a), Some(b)) => Some(if b.value < a.value { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn fixed(value: Option<u32>, option: &str) -> Option<Limit> {
    value.map(|v| {
        Limit::new(
            f64::from(v),
            LimitSource::Fixed {
                option: option.to_string(),
            },
            None,
        )
    })
}

/// Merges all sources for `now_s` (UTC seconds); `tz` places the tariff windows.
pub fn merge(inputs: &MergeInputs<'_>, tz: &PosixTz, now_s: i64) -> MergedLimits {
    let u = &inputs.utility;
    let f = &inputs.fixed;
    // The fallback stands in for the utility's export limit (and keeps the credit on
    // a tie with an owner's limit: that the utility's is not known is the news).
    let utility_export = u.export_limit_w.clone().or_else(|| inputs.fallback.clone());
    let mut export = tighter(utility_export, fixed(f.export_limit_w, "export_limit_w"));
    for w in inputs.windows {
        if let Some(until) = w.active_until(tz, now_s) {
            export = tighter(
                export,
                Some(Limit::new(
                    f64::from(w.export_limit_w),
                    LimitSource::TariffWindow {
                        name: w.name.clone(),
                    },
                    Some(until),
                )),
            );
        }
    }
    let negative = match (&inputs.price_rule, &inputs.price) {
        (Some(rule), Some(price)) if price.earn_c_per_kwh < rule.below_earn_c_per_kwh => {
            Some((rule, price))
        }
        _ => None,
    };
    if let Some((rule, price)) = negative {
        export = tighter(
            export,
            Some(Limit::new(
                rule.export_limit_w,
                LimitSource::NegativePrice {
                    earn_c_per_kwh: price.earn_c_per_kwh,
                },
                price.interval_end_s,
            )),
        );
    }
    let (fixed_w_generation, fixed_w_charge) = fixed_w_caps(u.fixed_w_pct.as_ref(), inputs);
    MergedLimits {
        export_limit_w: export.map(non_negative),
        import_limit_w: tighter(
            u.import_limit_w.clone(),
            fixed(f.import_limit_w, "import_limit_w"),
        )
        .map(non_negative),
        generation_limit_w: tighter(
            tighter(
                u.generation_limit_w.clone(),
                fixed(f.generation_limit_w, "generation_limit_w"),
            ),
            tighter(
                u.max_lim_pct
                    .as_ref()
                    .filter(|_| inputs.total_set_max_w > 0.0)
                    .map(|pct| {
                        Limit::new(
                            pct.value / 100.0 * inputs.total_set_max_w,
                            pct.source.clone(),
                            pct.until_s,
                        )
                    }),
                fixed_w_generation,
            ),
        )
        .map(non_negative),
        load_limit_w: tighter(
            tighter(
                u.load_limit_w.clone(),
                fixed(f.load_limit_w, "load_limit_w"),
            ),
            fixed_w_charge,
        )
        .map(non_negative),
        connect: u.connect.clone(),
        energize: u.energize.clone(),
        set_grad_w: u.set_grad_w,
        ramp_tms: u.ramp_tms,
        storage_target_w: u.storage_target_w.clone().filter(|t| t.value.is_finite()),
    }
}

/// opModFixedW as the caps csipd can hold: a setpoint of p % ≥ 0 generates at most p % of
/// the fleet's setMaxW and charges nothing; a setpoint of -p % charges at most p % of the
/// storage's maximum charge rate and generates nothing. (The demand response modes the
/// CSIP-AUS DR procedures send are AS/NZS 4755 "at most" levels; DRM4/DRM8, "increase",
/// come as ±100 % and leave the DER uncapped in that direction.) A positive setpoint
/// needs the fleet's rating; a negative one without storage leaves only the generation
/// cap (the load cap shows as not enforced: no storage).
fn fixed_w_caps(
    fixed_w: Option<&Sourced<f64>>,
    inputs: &MergeInputs<'_>,
) -> (Option<Limit>, Option<Limit>) {
    let Some(pct) = fixed_w.filter(|p| p.value.is_finite()) else {
        return (None, None);
    };
    let limit = |w: f64| Some(Limit::new(w, pct.source.clone(), pct.until_s));
    if pct.value >= 0.0 {
        let generation = (inputs.total_set_max_w > 0.0)
            .then(|| limit(pct.value.min(100.0) / 100.0 * inputs.total_set_max_w))
            .flatten();
        let charge = (inputs.total_max_charge_w > 0.0)
            .then(|| limit(0.0))
            .flatten();
        (generation, charge)
    } else {
        let charge = limit((-pct.value).min(100.0) / 100.0 * inputs.total_max_charge_w);
        (limit(0.0), charge)
    }
}

/// A negative limit value is meaningless for these modes; treat it as zero (the safe end).
fn non_negative(mut l: Limit) -> Limit {
    // NaN fails this too: an unreadable limit is treated as zero.
    if l.value.is_nan() || l.value < 0.0 {
        l.value = 0.0;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::tz::days_from_civil;

    fn utc(y: i32, mo: u8, d: u8, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60
    }

    fn sydney() -> PosixTz {
        PosixTz::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap()
    }

    fn event(value: f64, mrid: &str, until_s: i64) -> Option<Limit> {
        Some(Limit::new(
            value,
            LimitSource::UtilityEvent { mrid: mrid.into() },
            Some(until_s),
        ))
    }

    #[test]
    fn most_restrictive_wins_and_remembers_its_source() {
        let tz = sydney();
        let now = utc(2026, 1, 14, 3, 0); // 14:00 AEDT, Wednesday
        let until = utc(2026, 1, 14, 3, 35);
        let inputs = MergeInputs {
            utility: UtilityControls {
                export_limit_w: event(1500.0, "3F2A9C0E11223344556677889900AABB", until),
                generation_limit_w: event(8000.0, "AA01", until),
                ..Default::default()
            },
            fixed: FixedLimits {
                export_limit_w: Some(5000),
                generation_limit_w: Some(6000),
                ..Default::default()
            },
            ..Default::default()
        };
        let m = merge(&inputs, &tz, now);
        let e = m.export_limit_w.as_ref().unwrap();
        assert_eq!(e.value, 1500.0);
        assert_eq!(
            describe_limit(LimitMode::Export, e, &tz),
            "export limit 1500 W — utility event 3f2a…, until 14:35"
        );
        let g = m.generation_limit_w.as_ref().unwrap();
        assert_eq!(g.value, 6000.0);
        assert_eq!(
            g.source,
            LimitSource::Fixed {
                option: "generation_limit_w".into()
            }
        );
        assert_eq!(m.import_limit_w, None);
        assert_eq!(m.describe(&tz).len(), 2);
    }

    #[test]
    fn fixed_w_becomes_a_generation_cap_and_a_charge_cap() {
        let inputs = |pct: f64, max_charge_w: f64, gen_lim: Option<Limit>| MergeInputs {
            utility: UtilityControls {
                fixed_w_pct: Some(Sourced::new(
                    pct,
                    LimitSource::UtilityEvent { mrid: "DR".into() },
                    Some(100),
                )),
                generation_limit_w: gen_lim,
                ..UtilityControls::default()
            },
            total_set_max_w: 10_000.0,
            total_max_charge_w: max_charge_w,
            ..MergeInputs::default()
        };
        let tz = PosixTz::parse("UTC0").unwrap();
        let w = |l: Option<Limit>| l.map(|l| l.value);
        // +75 %: generate at most 7.5 kW, charge nothing.
        let m = merge(&inputs(75.0, 4000.0, None), &tz, 0);
        assert_eq!(w(m.generation_limit_w.clone()), Some(7500.0));
        assert_eq!(w(m.load_limit_w), Some(0.0));
        assert!(matches!(
            m.generation_limit_w.unwrap().source,
            LimitSource::UtilityEvent { .. }
        ));
        // A tighter generation limit still wins.
        let m = merge(&inputs(75.0, 0.0, event(2000.0, "G", 100)), &tz, 0);
        assert_eq!(w(m.generation_limit_w), Some(2000.0));
        assert_eq!(w(m.load_limit_w), None, "no storage: no charge cap");
        // -50 %: charge at most half the storage's rate, generate nothing.
        let m = merge(&inputs(-50.0, 4000.0, None), &tz, 0);
        assert_eq!(w(m.generation_limit_w), Some(0.0));
        assert_eq!(w(m.load_limit_w), Some(2000.0));
        // Out of range is clamped to 100 %.
        let m = merge(&inputs(150.0, 0.0, None), &tz, 0);
        assert_eq!(w(m.generation_limit_w), Some(10_000.0));
    }

    #[test]
    fn max_lim_pct_becomes_a_generation_limit() {
        let tz = PosixTz::utc();
        let inputs = MergeInputs {
            utility: UtilityControls {
                max_lim_pct: Some(Sourced::new(
                    40.0,
                    LimitSource::UtilityEvent { mrid: "77".into() },
                    Some(60),
                )),
                ..Default::default()
            },
            fixed: FixedLimits {
                generation_limit_w: Some(5000),
                ..Default::default()
            },
            total_set_max_w: 8000.0,
            ..Default::default()
        };
        let g = merge(&inputs, &tz, 0).generation_limit_w.unwrap();
        assert_eq!((g.value, g.until_s), (3200.0, Some(60)));
    }

    #[test]
    fn a_tie_keeps_the_utility_as_source() {
        let tz = PosixTz::utc();
        let inputs = MergeInputs {
            utility: UtilityControls {
                import_limit_w: Some(Limit::new(
                    3000.0,
                    LimitSource::UtilityDefault {
                        program: "DERP1".into(),
                    },
                    None,
                )),
                ..Default::default()
            },
            fixed: FixedLimits {
                import_limit_w: Some(3000),
                ..Default::default()
            },
            ..Default::default()
        };
        let m = merge(&inputs, &tz, 0);
        assert!(matches!(
            m.import_limit_w.unwrap().source,
            LimitSource::UtilityDefault { .. }
        ));
    }

    fn night_window() -> TariffWindow {
        // Friday and Saturday nights 22:00 → 06:00: no export.
        TariffWindow {
            name: "night".into(),
            days: vec![Weekday::Fri, Weekday::Sat],
            start_min: 22 * 60,
            end_min: 6 * 60,
            export_limit_w: 0,
            enabled: true,
        }
    }

    #[test]
    fn tariff_window_across_midnight() {
        let tz = PosixTz::parse("AEST-10").unwrap();
        let w = night_window();
        let local = |d: u8, h: i64, mi: i64| utc(2026, 5, d, h, mi) - 10 * 3600;
        // 2026-05-15 is a Friday.
        assert_eq!(w.active_until(&tz, local(15, 21, 59)), None);
        assert_eq!(w.active_until(&tz, local(15, 22, 0)), Some(local(16, 6, 0)));
        assert_eq!(w.active_until(&tz, local(16, 5, 59)), Some(local(16, 6, 0)));
        assert_eq!(w.active_until(&tz, local(16, 6, 0)), None);
        // Saturday night runs into Sunday morning; Sunday night is not in the window.
        assert_eq!(w.active_until(&tz, local(17, 3, 0)), Some(local(17, 6, 0)));
        assert_eq!(w.active_until(&tz, local(17, 23, 0)), None);
        // Thursday night is not either, so Friday 01:00 is outside.
        assert_eq!(w.active_until(&tz, local(15, 1, 0)), None);

        let windows = [w];
        let inputs = MergeInputs {
            fixed: FixedLimits {
                export_limit_w: Some(5000),
                ..Default::default()
            },
            windows: &windows,
            ..Default::default()
        };
        let m = merge(&inputs, &tz, local(15, 23, 0));
        let e = m.export_limit_w.unwrap();
        assert_eq!(e.value, 0.0);
        assert_eq!(
            describe_limit(LimitMode::Export, &e, &tz),
            "export limit 0 W — tariff window night, until 06:00"
        );
        let m = merge(&inputs, &tz, local(15, 12, 0));
        assert_eq!(m.export_limit_w.unwrap().value, 5000.0);
    }

    #[test]
    fn tariff_window_across_dst_changes() {
        let tz = sydney();
        let w = night_window();
        // DST ends Sunday 5 April 2026 at 03:00 AEDT (→ 02:00 AEST). The window that began
        // Saturday 22:00 AEDT (11:00 UTC) ends Sunday 06:00 AEST (20:00 UTC): 9 hours.
        let sat_22 = utc(2026, 4, 4, 11, 0);
        assert_eq!(w.active_until(&tz, sat_22 - 60), None);
        assert_eq!(w.active_until(&tz, sat_22), Some(utc(2026, 4, 4, 20, 0)));
        // In the repeated hour (02:30 local, twice) it is still active.
        assert!(w.active_until(&tz, utc(2026, 4, 4, 15, 30)).is_some());
        assert!(w.active_until(&tz, utc(2026, 4, 4, 16, 30)).is_some());
        assert_eq!(w.active_until(&tz, utc(2026, 4, 4, 20, 0)), None);
        // DST starts Sunday 4 October 2026 at 02:00 AEST (→ 03:00 AEDT). Saturday 22:00
        // AEST is 12:00 UTC; Sunday 06:00 AEDT is 19:00 UTC: 7 hours.
        let sat_22 = utc(2026, 10, 3, 12, 0);
        assert_eq!(w.active_until(&tz, sat_22 - 60), None);
        assert_eq!(w.active_until(&tz, sat_22), Some(utc(2026, 10, 3, 19, 0)));
        assert!(w.active_until(&tz, utc(2026, 10, 3, 18, 59)).is_some());
        assert_eq!(w.active_until(&tz, utc(2026, 10, 3, 19, 0)), None);
    }

    #[test]
    fn negative_price_rule_limits_export_until_the_interval_ends() {
        let tz = PosixTz::utc();
        let rule = PriceRule {
            export_limit_w: 0.0,
            below_earn_c_per_kwh: 0.0,
        };
        let mk = |earn: f64| MergeInputs {
            utility: UtilityControls {
                export_limit_w: event(1500.0, "BEEF", 1000),
                ..Default::default()
            },
            price_rule: Some(rule.clone()),
            price: Some(FeedInPrice {
                earn_c_per_kwh: earn,
                interval_end_s: Some(900),
            }),
            ..Default::default()
        };
        let m = merge(&mk(-3.5), &tz, 0);
        let e = m.export_limit_w.unwrap();
        assert_eq!(e.value, 0.0);
        assert_eq!(e.until_s, Some(900));
        assert_eq!(
            describe_limit(LimitMode::Export, &e, &tz),
            "export limit 0 W — negative feed-in price -3.50 c/kWh, until 00:15"
        );
        let m = merge(&mk(4.0), &tz, 0);
        assert_eq!(m.export_limit_w.unwrap().value, 1500.0);
        // No known price: no price limiting.
        let mut none = mk(-3.5);
        none.price = None;
        assert_eq!(merge(&none, &tz, 0).export_limit_w.unwrap().value, 1500.0);
    }

    #[test]
    fn connect_and_energize_are_reported() {
        let tz = PosixTz::utc();
        let inputs = MergeInputs {
            utility: UtilityControls {
                energize: Some(Sourced::new(
                    false,
                    LimitSource::UtilityEvent {
                        mrid: "0123456789ABCDEF".into(),
                    },
                    Some(3600),
                )),
                ..Default::default()
            },
            ..Default::default()
        };
        let m = merge(&inputs, &tz, 0);
        assert_eq!(
            m.describe(&tz),
            vec!["energize off — utility event 0123…, until 01:00".to_string()]
        );
    }

    #[test]
    fn window_to_2400_is_active_until_midnight() {
        let w = TariffWindow {
            name: "evening".into(),
            days: vec![Weekday::Sun, Weekday::Mon],
            start_min: 22 * 60,
            end_min: 24 * 60,
            export_limit_w: 500,
            enabled: true,
        };
        let tz = PosixTz::utc();
        // 2026-11-22 is a Sunday; 23:30 UTC is inside, until 24:00.
        let sunday = utc(2026, 11, 22, 0, 0);
        let sunday_2330 = sunday + 23 * 3600 + 1800;
        assert_eq!(tz.to_local(sunday_2330).weekday, 0);
        assert_eq!(w.active_until(&tz, sunday_2330), Some(sunday + 86_400));
        assert_eq!(w.active_until(&tz, sunday_2330 - 3 * 3600), None);
        // Tuesday is not one of its days; a disabled window is never active.
        assert_eq!(w.active_until(&tz, sunday_2330 + 2 * 86_400), None);
        let off = TariffWindow {
            enabled: false,
            ..w
        };
        assert_eq!(off.active_until(&tz, sunday_2330), None);
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
                enter_service: Default::default(),
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
        let u = UtilityControls::from_schedule(&out.active, out.ramp);
        let export = u.export_limit_w.clone().expect("export from the event");
        assert_eq!(export.value, 1500.0);
        assert_eq!(
            export.source,
            LimitSource::UtilityEvent {
                mrid: "3F2A09B1C0FFEE00112233445566778A".into()
            }
        );
        assert_eq!(export.until_s, Some(1600));
        // opModMaxLimW 5000 = 50 %; GenLimW still from the default (9 kW).
        let max_lim = u.max_lim_pct.as_ref().expect("max lim");
        assert_eq!(max_lim.value, 50.0);
        assert!(matches!(max_lim.source, LimitSource::UtilityEvent { .. }));
        assert_eq!(u.generation_limit_w.as_ref().map(|g| g.value), Some(9000.0));
        // Merged over a 10 kW fleet, 50 % (5 kW) is the tighter generation limit.
        let merged = merge(
            &MergeInputs {
                utility: u.clone(),
                total_set_max_w: 10_000.0,
                ..MergeInputs::default()
            },
            &PosixTz::utc(),
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
        let u = UtilityControls::from_schedule(&out.active, out.ramp);
        let export = u.export_limit_w.expect("export from the default");
        assert_eq!(export.value, 5000.0);
        assert_eq!(
            export.source,
            LimitSource::UtilityDefault {
                program: "PROG1".into()
            }
        );
        assert_eq!(u.generation_limit_w.map(|g| g.value), Some(9000.0));
        assert_eq!((u.ramp_tms, u.set_grad_w), (None, Some(27)));
    }
}

#[cfg(test)]
mod fallback_tests {
    use super::*;

    fn utility_export(w: f64) -> UtilityControls {
        UtilityControls {
            export_limit_w: Some(Limit::new(
                w,
                LimitSource::UtilityDefault {
                    program: "P".into(),
                },
                None,
            )),
            ..UtilityControls::default()
        }
    }

    /// The rule: on a site with a utility server, the fallback holds while no utility
    /// export limit is in force, and says why; never on an owner-only site.
    #[test]
    fn the_fallback_holds_while_no_utility_export_limit_is_known() {
        // Owner-only site: nothing, whatever the utility state.
        assert_eq!(fallback_export_limit(None, None), None);
        assert_eq!(
            fallback_export_limit(None, Some(&UtilityControls::default())),
            None
        );
        // Nothing read or restored yet.
        let l = fallback_export_limit(Some(1500), None).expect("held");
        assert_eq!(l.value, 1500.0);
        assert_eq!(
            l.source,
            LimitSource::Fallback {
                cause: FallbackCause::UtilityNotRead
            }
        );
        assert_eq!(l.until_s, None);
        // Read, but no program, or programs without an export limit in force (no
        // default, an empty default, only other modes).
        for u in [
            UtilityControls::default(),
            UtilityControls {
                generation_limit_w: utility_export(4000.0).export_limit_w,
                ..UtilityControls::default()
            },
        ] {
            let l = fallback_export_limit(Some(1500), Some(&u)).expect("held");
            assert_eq!(
                l.source,
                LimitSource::Fallback {
                    cause: FallbackCause::NoUtilityExportLimit
                }
            );
        }
        // The utility's export limit takes over, looser or tighter.
        for w in [0.0, 1000.0, 9000.0] {
            assert_eq!(
                fallback_export_limit(Some(1500), Some(&utility_export(w))),
                None
            );
        }
        // JSON and words.
        let read = fallback_export_limit(Some(1500), Some(&UtilityControls::default()));
        let json = serde_json::to_value(&read.expect("held").source).unwrap();
        assert_eq!(json["kind"], "fallback");
        assert_eq!(json["cause"], "no_utility_export_limit");
        assert_eq!(
            fallback_export_limit(Some(0), None)
                .unwrap()
                .source
                .to_string(),
            "fallback export limit (no utility control read yet)"
        );
        let back: LimitSource =
            serde_json::from_str(r#"{"kind":"fallback","cause":"utility_not_read"}"#).unwrap();
        assert_eq!(
            back,
            LimitSource::Fallback {
                cause: FallbackCause::UtilityNotRead
            }
        );
    }

    /// In the merge the fallback stands in for the utility's export limit: a tighter
    /// owner limit wins, a tie keeps the fallback's name, the utility's own replaces it.
    #[test]
    fn the_merge_takes_the_fallback_in_place_of_the_utility_export_limit() {
        let tz = PosixTz::utc();
        let merged = |fixed_w: Option<u32>, utility: Option<&UtilityControls>| {
            merge(
                &MergeInputs {
                    utility: utility.cloned().unwrap_or_default(),
                    fixed: FixedLimits {
                        export_limit_w: fixed_w,
                        ..FixedLimits::default()
                    },
                    fallback: fallback_export_limit(Some(1500), utility),
                    ..MergeInputs::default()
                },
                &tz,
                0,
            )
            .export_limit_w
            .expect("an export limit")
        };
        let l = merged(None, None);
        assert_eq!((l.value, l.source.kind()), (1500.0, "fallback"));
        let l = merged(Some(5000), None);
        assert_eq!((l.value, l.source.kind()), (1500.0, "fallback"));
        let l = merged(Some(1500), None);
        assert_eq!((l.value, l.source.kind()), (1500.0, "fallback"));
        let l = merged(Some(1000), None);
        assert_eq!((l.value, l.source.kind()), (1000.0, "fixed"));
        let l = merged(None, Some(&utility_export(3000.0)));
        assert_eq!((l.value, l.source.kind()), (3000.0, "program_default"));
        let l = merged(Some(1000), Some(&utility_export(3000.0)));
        assert_eq!((l.value, l.source.kind()), (1000.0, "fixed"));
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn utility_controls_read_as_one_line_for_the_log() {
        assert_eq!(UtilityControls::default().to_string(), "none");
        let c = UtilityControls {
            export_limit_w: Some(Sourced::new(
                1500.0,
                LimitSource::UtilityEvent {
                    mrid: "AB12CD34EF56AB12CD34EF56AB12CD34".into(),
                },
                Some(1_700_000_100),
            )),
            energize: Some(Sourced::new(
                false,
                LimitSource::UtilityDefault {
                    program: "dflt".into(),
                },
                None,
            )),
            ..UtilityControls::default()
        };
        let line = c.to_string();
        assert_eq!(
            line,
            "export ≤ 1500 W (utility event ab12…, until 22:15:00 UTC), energize off (utility \
             default control dflt)"
        );
        assert!(!line.contains("Some("), "no debug dump: {line}");
    }
}

#[cfg(test)]
mod inverter_settings_tests {
    use super::*;
    use crate::devices::curves::CurvePoint;
    use crate::sep2::FixedVar;

    /// The scheduler's curve, power factor and var level reach the coordinator with
    /// their source, as the plain values a command carries, and in the log line; a
    /// var level in % of statVarAvail does not (no SunSpec model takes it).
    #[test]
    fn settings_come_from_the_schedule_with_their_source() {
        let curve = Curve {
            mode: ControlMode::VoltVar,
            points: vec![
                CurvePoint {
                    v_pct: 90.0,
                    y_pct: 40.0,
                },
                CurvePoint {
                    v_pct: 110.0,
                    y_pct: -40.0,
                },
            ],
            dept_ref: 2,
        };
        let program = schedule::Program {
            mrid: "PROG1".into(),
            fsa: "f".into(),
            primacy: 1,
            default_control: Some(schedule::DefaultControl {
                mrid: "D".into(),
                controls: schedule::ControlSet {
                    volt_var: Some(curve.clone()),
                    fixed_pf_inject_w: Some(PowerFactorWithExcitation {
                        displacement: 950,
                        excitation: true,
                        multiplier: -3,
                    }),
                    fixed_var: Some(FixedVar {
                        ref_type: 2,
                        value: -2500,
                    }),
                    target_var: Some(crate::sep2::ReactivePower {
                        value: 120,
                        multiplier: 1,
                    }),
                    ..schedule::ControlSet::default()
                },
                set_grad_w: None,
                enter_service: Default::default(),
            }),
        };
        let out = schedule::evaluate(
            &schedule::Input {
                programs: std::slice::from_ref(&program),
                events: &[],
                now_s: 100,
            },
            &mut schedule::Rng::new(1),
            &schedule::State::default(),
        );
        let u = UtilityControls::from_schedule(&out.active, out.ramp);
        let vv = u.setting(ControlMode::VoltVar).expect("volt-var");
        assert_eq!(vv.value, Setting::Curve(Arc::new(curve.clone())));
        assert_eq!(
            vv.source,
            LimitSource::UtilityDefault {
                program: "PROG1".into()
            }
        );
        let s = u.inverter_settings();
        assert_eq!(
            s.get(ControlMode::VoltVar),
            Some(&Setting::Curve(Arc::new(curve)))
        );
        assert_eq!(s.get(ControlMode::VoltWatt), None);
        assert_eq!(s.get(ControlMode::FixedVar), Some(&Setting::VarPct(-25.0)));
        assert!(matches!(
            s.get(ControlMode::FixedPFInjectW),
            Some(Setting::PowerFactor(pf)) if pf.excitation
        ));
        // Each inverter's command shares the curve: a copy is a reference count.
        let again = u.inverter_settings();
        match (s.get(ControlMode::VoltVar), again.get(ControlMode::VoltVar)) {
            (Some(Setting::Curve(a)), Some(Setting::Curve(b))) => assert!(Arc::ptr_eq(a, b)),
            other => panic!("{other:?}"),
        }
        assert!(s.same(&again, ControlMode::VoltVar));
        assert!(!s.same(&InverterSettings::default(), ControlMode::VoltVar));
        let mut applied = InverterSettings::default();
        applied.copy_from(&s, ControlMode::FixedVar);
        assert!(applied.same(&s, ControlMode::FixedVar));
        assert!(!applied.same(&s, ControlMode::VoltVar));
        let line = u.to_string();
        assert!(
            line.contains("volt-var 2 points 90.0 %V → 40 %, 110.0 %V → -40 %"),
            "{line}"
        );
        assert!(
            line.contains("fixed PF cos φ 0.950 absorbing vars"),
            "{line}"
        );
        assert!(line.contains("fixed var -25.00 % of setMaxVar"), "{line}");
        assert_eq!(s.get(ControlMode::TargetVar), Some(&Setting::Var(1200.0)));
        assert!(line.contains("target var 1200 var (injecting)"), "{line}");
        // The enter-service settings in words, only those given.
        let es = EnterService {
            delay: Some(6000),
            high_volt: Some(11_000),
            low_volt: Some(9_000),
            low_freq: Some(4750),
            ramp_tms: Some(36_000),
            ..EnterService::default()
        };
        assert_eq!(
            enter_service_text(&es),
            "90.00–110.00 % V, 47.50–? Hz, delay 60.00 s, ramp 360.00 s"
        );
        assert_eq!(enter_service_text(&EnterService::default()), "");
        let shown = crate::status::InverterSetting::of(&u);
        assert_eq!(
            shown
                .iter()
                .map(|s| (s.mode.as_str(), s.value.as_str()))
                .next_back(),
            Some(("opModTargetVar", "1200 var (injecting)"))
        );
        // % of statVarAvail: not a setting csipd can put on an inverter.
        let mut program = program;
        if let Some(d) = program.default_control.as_mut() {
            d.controls.fixed_var = Some(FixedVar {
                ref_type: 3,
                value: 1000,
            });
        }
        let active = schedule::evaluate(
            &schedule::Input {
                programs: std::slice::from_ref(&program),
                events: &[],
                now_s: 100,
            },
            &mut schedule::Rng::new(1),
            &schedule::State::default(),
        )
        .active;
        let u = UtilityControls::from_schedule(&active, out.ramp);
        assert_eq!(u.setting(ControlMode::FixedVar), None);
    }
}
