//! The 2030.5 / CSIP-AUS event scheduler as a pure function of programs, controls,
//! time, a seeded RNG and the previous state.
//!
//! [`evaluate`] takes the DER programs (primacy, default control), the DER controls
//! ("events") the server lists, the server-adjusted time, a seeded [`Rng`] and the
//! previous [`State`], and returns an [`Outcome`]: the active value of every control mode
//! with its source and end, the ramp, the next instant anything changes, the responses
//! that fell due (each exactly once, keyed by event mRID + status) and the new state.
//! No IO, no clock, no global RNG. The rules are summarised in README "Scheduling rules".
//!
//! The engine maps `sep2` types into these input types; this module knows no XML.

#[cfg(test)]
mod properties;
mod rng;
#[cfg(test)]
mod scenarios;

pub use rng::Rng;

use crate::devices::curves::Curve;
use crate::sep2::{FixedVar, FreqDroop, PowerFactorWithExcitation, ReactivePower};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// randomizeStart / randomizeDuration bounds are OneHourRangeType: -3600..=3600 s.
pub const RANDOMIZE_LIMIT_S: i32 = 3600;
/// How long the record (and ledger entries) of a finished event that the server no
/// longer lists is kept, so a late reappearance is not answered twice.
pub const RECORD_RETENTION_S: i64 = 2 * 86_400;
/// Most records of finished events the server no longer lists kept at once: beyond it
/// the ones that ended first are forgotten before [`RECORD_RETENTION_S`] is up. Two
/// days of five-minute envelopes (CSIP-AUS dynamic export) are 576 events; 1,024 leaves
/// room for a busier server while capping the scheduler's memory (about 0.3 KiB per
/// record here, and the store's row and ledger entries follow it) whatever the event rate.
pub const RECORD_LIMIT: usize = 1024;

/// The control modes the scheduler resolves, one active value each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ControlMode {
    /// csipaus:opModExpLimW, site export limit.
    ExpLimW,
    /// csipaus:opModImpLimW, site import limit.
    ImpLimW,
    /// csipaus:opModGenLimW, generation limit.
    GenLimW,
    /// csipaus:opModLoadLimW, load limit.
    LoadLimW,
    /// opModConnect: connect (true) or disconnect.
    Connect,
    /// opModEnergize: energize (true) or cease to energize.
    Energize,
    /// opModMaxLimW: hundredths of a percent of setMaxW.
    MaxLimW,
    /// opModFixedW: an active power setpoint, hundredths of a percent of setMaxW
    /// (positive: generation / discharge) or of setMaxChargeRateW (negative: charge).
    /// CSIP-AUS's demand response classes (DR-A/G/L/D) send it as the AS/NZS 4755 DRMs.
    FixedW,
    /// csipaus:opModStorageTargetW (CSIP-AUS v1.3 storage): the storage's target
    /// output, W; positive discharges, negative charges.
    StorageTargetW,
    /// opModVoltVar: reactive power follows voltage along a DERCurve (curveType 11),
    /// linked from the control by DERCurveLink. SunSpec model 126 / 705.
    VoltVar,
    /// opModVoltWatt: active power follows voltage along a DERCurve (curveType 12).
    /// SunSpec model 132 / 706.
    VoltWatt,
    /// opModFixedPFInjectW: a fixed power factor (PowerFactorWithExcitation) while
    /// injecting active power. SunSpec model 123 OutPFSet / 704 PFWInj.
    FixedPFInjectW,
    /// opModFixedPFAbsorbW: a fixed power factor while absorbing active power.
    /// SunSpec model 704 PFWAbs.
    FixedPFAbsorbW,
    /// opModFixedVar: fixed reactive power (FixedVar: refType + SignedPerCent).
    /// SunSpec model 123 VArPct / 704 VarSetPct.
    FixedVar,
    /// opModTargetVar: a reactive power target (ReactivePower, var; positive
    /// injects). SunSpec model 704 VarSet with VarSetMod VARS; model 123 has no
    /// setting in var, so only 704 offers it.
    TargetVar,
    /// opModWattVar: reactive power follows active power along a DERCurve (curveType
    /// 14), linked by DERCurveLink. SunSpec model 712 (the 1xx series has none).
    WattVar,
    /// opModWattPF: the power factor follows active power along a DERCurve (curveType
    /// 13), linked by DERCurveLink. SunSpec model 131 (no 7xx model carries it).
    WattPF,
    /// opModFreqDroop: frequency-watt droop (FreqDroopType: dead bands, per-unit
    /// droops, open-loop time). SunSpec model 711, else 127 (the over-frequency side).
    FreqDroop,
    /// opModFreqWatt: active power follows frequency along a DERCurve (curveType 0),
    /// linked by DERCurveLink. SunSpec model 134 (no 7xx model carries it).
    FreqWatt,
}

impl ControlMode {
    /// Every mode, in output order.
    pub const ALL: [ControlMode; 19] = [
        ControlMode::ExpLimW,
        ControlMode::ImpLimW,
        ControlMode::GenLimW,
        ControlMode::LoadLimW,
        ControlMode::Connect,
        ControlMode::Energize,
        ControlMode::MaxLimW,
        ControlMode::FixedW,
        ControlMode::StorageTargetW,
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

    /// The 2030.5 / CSIP-AUS element name.
    pub fn name(self) -> &'static str {
        match self {
            ControlMode::ExpLimW => "opModExpLimW",
            ControlMode::ImpLimW => "opModImpLimW",
            ControlMode::GenLimW => "opModGenLimW",
            ControlMode::LoadLimW => "opModLoadLimW",
            ControlMode::Connect => "opModConnect",
            ControlMode::Energize => "opModEnergize",
            ControlMode::MaxLimW => "opModMaxLimW",
            ControlMode::FixedW => "opModFixedW",
            ControlMode::StorageTargetW => "opModStorageTargetW",
            ControlMode::VoltVar => "opModVoltVar",
            ControlMode::VoltWatt => "opModVoltWatt",
            ControlMode::FixedPFInjectW => "opModFixedPFInjectW",
            ControlMode::FixedPFAbsorbW => "opModFixedPFAbsorbW",
            ControlMode::FixedVar => "opModFixedVar",
            ControlMode::TargetVar => "opModTargetVar",
            ControlMode::WattVar => "opModWattVar",
            ControlMode::WattPF => "opModWattPF",
            ControlMode::FreqDroop => "opModFreqDroop",
            ControlMode::FreqWatt => "opModFreqWatt",
        }
    }

    /// The SunSpec 1xx-series model that carries a curve mode (126 volt-var, 132
    /// volt-watt, 131 watt-PF, 134 freq-watt); `None` for the other modes.
    pub fn curve_model(self) -> Option<u16> {
        match self {
            ControlMode::VoltVar => Some(126),
            ControlMode::VoltWatt => Some(132),
            ControlMode::WattPF => Some(131),
            ControlMode::FreqWatt => Some(134),
            _ => None,
        }
    }

    /// A mode the inverters run themselves once set (a curve, a power factor, a var
    /// level: opModVoltVar, VoltWatt, FixedPFInjectW, FixedPFAbsorbW, FixedVar,
    /// TargetVar, WattVar, WattPF, FreqDroop, FreqWatt), as
    /// opposed to the limits and targets the coordinator's control law holds.
    pub fn is_inverter_setting(self) -> bool {
        matches!(
            self,
            ControlMode::VoltVar
                | ControlMode::VoltWatt
                | ControlMode::FixedPFInjectW
                | ControlMode::FixedPFAbsorbW
                | ControlMode::FixedVar
                | ControlMode::TargetVar
                | ControlMode::WattVar
                | ControlMode::WattPF
                | ControlMode::FreqDroop
                | ControlMode::FreqWatt
        )
    }

    /// Its bit in 2030.5's DERControlType (DERCapability.modesSupported,
    /// DERSettings.modesEnabled; sep.xsd); `None` for the csipaus modes, which have
    /// their own DOEControlType / VPPControlType bitmaps.
    pub fn der_control_type_bit(self) -> Option<u32> {
        let bit = match self {
            ControlMode::Connect => 2,
            ControlMode::Energize => 3,
            ControlMode::FixedPFAbsorbW => 4,
            ControlMode::FixedPFInjectW => 5,
            ControlMode::FixedVar => 6,
            ControlMode::FixedW => 7,
            ControlMode::MaxLimW => 20,
            ControlMode::TargetVar => 21,
            ControlMode::WattVar => 26,
            ControlMode::WattPF => 25,
            ControlMode::FreqDroop => 8,
            ControlMode::FreqWatt => 9,
            ControlMode::VoltVar => 23,
            ControlMode::VoltWatt => 24,
            ControlMode::ExpLimW
            | ControlMode::ImpLimW
            | ControlMode::GenLimW
            | ControlMode::LoadLimW
            | ControlMode::StorageTargetW => return None,
        };
        Some(1 << bit)
    }

    /// The mode's bit in a mask over [`ControlMode::ALL`] (`1 << (mode as u32)`), as
    /// [`ControlSet::modes_mask`] makes it.
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A 2030.5 ActivePower: `value × 10^multiplier` watts. Plain watts are multiplier 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivePower {
    pub value: i32,
    pub multiplier: i8,
}

impl ActivePower {
    /// Plain watts.
    pub fn from_watts(watts: i32) -> Self {
        Self {
            value: watts,
            multiplier: 0,
        }
    }

    /// The power in watts.
    pub fn watts(self) -> f64 {
        crate::sep2::types::decimal(self.value.into(), self.multiplier.into())
    }
}

/// The value a mode takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ModeValue {
    /// (Scaled) watts: the limits opModExpLimW, ImpLimW, GenLimW, LoadLimW (never
    /// negative) and the target opModStorageTargetW (signed).
    Power(ActivePower),
    /// opModConnect / opModEnergize.
    Flag(bool),
    /// opModMaxLimW in hundredths of a percent of setMaxW.
    HundredthsPct(u16),
    /// opModFixedW: SignedPerCent, hundredths of a percent (negative = charge / consume).
    SignedHundredthsPct(i16),
    /// opModVoltVar / opModVoltWatt / opModWattVar / opModWattPF / opModFreqWatt: the DERCurve the control links, already resolved
    /// in the program's DERCurveList by the engine (`csip::derp::curve_for`).
    Curve(Curve),
    /// opModFixedPFInjectW / opModFixedPFAbsorbW.
    PowerFactor(PowerFactorWithExcitation),
    /// opModFixedVar: SignedPerCent of the refType quantity.
    FixedVar(FixedVar),
    /// opModTargetVar: var, positive injects.
    ReactivePower(ReactivePower),
    /// opModFreqDroop.
    FreqDroop(FreqDroop),
}

impl ModeValue {
    /// Watts, for the power modes; `None` for the others.
    pub fn watts(&self) -> Option<f64> {
        match self {
            ModeValue::Power(p) => Some(p.watts()),
            _ => None,
        }
    }
}

/// The control modes one DERControl (or DefaultDERControl) sets; `None` = not set.
/// Fields added after the first release are `#[serde(default)]`: control sets stored by
/// an older csipd still load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlSet {
    pub exp_lim_w: Option<ActivePower>,
    pub imp_lim_w: Option<ActivePower>,
    pub gen_lim_w: Option<ActivePower>,
    pub load_lim_w: Option<ActivePower>,
    pub connect: Option<bool>,
    pub energize: Option<bool>,
    /// opModMaxLimW, hundredths of a percent of setMaxW.
    pub max_lim_hundredths_pct: Option<u16>,
    /// opModFixedW, hundredths of a percent of setMaxW (negative: of setMaxChargeRateW).
    #[serde(default)]
    pub fixed_w_hundredths_pct: Option<i16>,
    /// csipaus:opModStorageTargetW: positive discharges, negative charges. Old
    /// stored control sets have none.
    #[serde(default)]
    pub storage_target_w: Option<ActivePower>,
    /// opModVoltVar: the linked DERCurve, resolved (curveType 11).
    #[serde(default)]
    pub volt_var: Option<Curve>,
    /// opModVoltWatt: the linked DERCurve, resolved (curveType 12).
    #[serde(default)]
    pub volt_watt: Option<Curve>,
    /// opModFixedPFInjectW: the power factor while injecting active power.
    #[serde(default)]
    pub fixed_pf_inject_w: Option<PowerFactorWithExcitation>,
    /// opModFixedPFAbsorbW: the power factor while absorbing active power.
    #[serde(default)]
    pub fixed_pf_absorb_w: Option<PowerFactorWithExcitation>,
    /// opModFixedVar: reactive power as SignedPerCent of setMaxVar or statVarAvail.
    #[serde(default)]
    pub fixed_var: Option<FixedVar>,
    /// opModTargetVar: the reactive power target, var (positive injects).
    #[serde(default)]
    pub target_var: Option<ReactivePower>,
    /// opModWattVar: the linked DERCurve, resolved (curveType 14).
    #[serde(default)]
    pub watt_var: Option<Curve>,
    /// opModWattPF: the linked DERCurve, resolved (curveType 13).
    #[serde(default)]
    pub watt_pf: Option<Curve>,
    /// opModFreqDroop: dead bands, droops and the open-loop time.
    #[serde(default)]
    pub freq_droop: Option<FreqDroop>,
    /// opModFreqWatt: the linked DERCurve, resolved (curveType 0).
    #[serde(default)]
    pub freq_watt: Option<Curve>,
}

impl ControlSet {
    /// The value this set gives `mode`, if any.
    pub fn get(&self, mode: ControlMode) -> Option<ModeValue> {
        match mode {
            ControlMode::ExpLimW => self.exp_lim_w.map(ModeValue::Power),
            ControlMode::ImpLimW => self.imp_lim_w.map(ModeValue::Power),
            ControlMode::GenLimW => self.gen_lim_w.map(ModeValue::Power),
            ControlMode::LoadLimW => self.load_lim_w.map(ModeValue::Power),
            ControlMode::Connect => self.connect.map(ModeValue::Flag),
            ControlMode::Energize => self.energize.map(ModeValue::Flag),
            ControlMode::MaxLimW => self.max_lim_hundredths_pct.map(ModeValue::HundredthsPct),
            ControlMode::FixedW => self
                .fixed_w_hundredths_pct
                .map(ModeValue::SignedHundredthsPct),
            ControlMode::StorageTargetW => self.storage_target_w.map(ModeValue::Power),
            ControlMode::VoltVar => self.volt_var.clone().map(ModeValue::Curve),
            ControlMode::VoltWatt => self.volt_watt.clone().map(ModeValue::Curve),
            ControlMode::FixedPFInjectW => self.fixed_pf_inject_w.map(ModeValue::PowerFactor),
            ControlMode::FixedPFAbsorbW => self.fixed_pf_absorb_w.map(ModeValue::PowerFactor),
            ControlMode::FixedVar => self.fixed_var.map(ModeValue::FixedVar),
            ControlMode::TargetVar => self.target_var.map(ModeValue::ReactivePower),
            ControlMode::WattVar => self.watt_var.clone().map(ModeValue::Curve),
            ControlMode::WattPF => self.watt_pf.clone().map(ModeValue::Curve),
            ControlMode::FreqDroop => self.freq_droop.map(ModeValue::FreqDroop),
            ControlMode::FreqWatt => self.freq_watt.clone().map(ModeValue::Curve),
        }
    }

    /// Whether this set gives `mode` a value (no copy of a curve).
    pub fn has(&self, mode: ControlMode) -> bool {
        match mode {
            ControlMode::ExpLimW => self.exp_lim_w.is_some(),
            ControlMode::ImpLimW => self.imp_lim_w.is_some(),
            ControlMode::GenLimW => self.gen_lim_w.is_some(),
            ControlMode::LoadLimW => self.load_lim_w.is_some(),
            ControlMode::Connect => self.connect.is_some(),
            ControlMode::Energize => self.energize.is_some(),
            ControlMode::MaxLimW => self.max_lim_hundredths_pct.is_some(),
            ControlMode::FixedW => self.fixed_w_hundredths_pct.is_some(),
            ControlMode::StorageTargetW => self.storage_target_w.is_some(),
            ControlMode::VoltVar => self.volt_var.is_some(),
            ControlMode::VoltWatt => self.volt_watt.is_some(),
            ControlMode::FixedPFInjectW => self.fixed_pf_inject_w.is_some(),
            ControlMode::FixedPFAbsorbW => self.fixed_pf_absorb_w.is_some(),
            ControlMode::FixedVar => self.fixed_var.is_some(),
            ControlMode::TargetVar => self.target_var.is_some(),
            ControlMode::WattVar => self.watt_var.is_some(),
            ControlMode::WattPF => self.watt_pf.is_some(),
            ControlMode::FreqDroop => self.freq_droop.is_some(),
            ControlMode::FreqWatt => self.freq_watt.is_some(),
        }
    }

    /// Unsets `mode` (the engine leaves out the modes this site cannot carry out).
    pub fn clear(&mut self, mode: ControlMode) {
        match mode {
            ControlMode::ExpLimW => self.exp_lim_w = None,
            ControlMode::ImpLimW => self.imp_lim_w = None,
            ControlMode::GenLimW => self.gen_lim_w = None,
            ControlMode::LoadLimW => self.load_lim_w = None,
            ControlMode::Connect => self.connect = None,
            ControlMode::Energize => self.energize = None,
            ControlMode::MaxLimW => self.max_lim_hundredths_pct = None,
            ControlMode::FixedW => self.fixed_w_hundredths_pct = None,
            ControlMode::StorageTargetW => self.storage_target_w = None,
            ControlMode::VoltVar => self.volt_var = None,
            ControlMode::VoltWatt => self.volt_watt = None,
            ControlMode::FixedPFInjectW => self.fixed_pf_inject_w = None,
            ControlMode::FixedPFAbsorbW => self.fixed_pf_absorb_w = None,
            ControlMode::FixedVar => self.fixed_var = None,
            ControlMode::TargetVar => self.target_var = None,
            ControlMode::WattVar => self.watt_var = None,
            ControlMode::WattPF => self.watt_pf = None,
            ControlMode::FreqDroop => self.freq_droop = None,
            ControlMode::FreqWatt => self.freq_watt = None,
        }
    }

    /// Bit set of the modes present (bit = `ControlMode as u8`).
    pub fn modes_mask(&self) -> u32 {
        ControlMode::ALL
            .iter()
            .filter(|m| self.has(**m))
            .fold(0, |acc, m| acc | m.bit())
    }

    /// Which of the set values is out of range, if any (for the rejection reason).
    fn invalid_value(&self) -> Option<String> {
        for mode in [
            ControlMode::ExpLimW,
            ControlMode::ImpLimW,
            ControlMode::GenLimW,
            ControlMode::LoadLimW,
        ] {
            if let Some(ModeValue::Power(p)) = self.get(mode) {
                if p.value < 0 {
                    return Some(format!("{} is negative ({} W)", mode.name(), p.watts()));
                }
                if !(-9..=9).contains(&p.multiplier) {
                    return Some(format!(
                        "{} multiplier {} is outside -9..=9",
                        mode.name(),
                        p.multiplier
                    ));
                }
            }
        }
        if let Some(p) = self.storage_target_w {
            // Signed: a negative target charges the storage.
            if !(-9..=9).contains(&p.multiplier) {
                return Some(format!(
                    "opModStorageTargetW multiplier {} is outside -9..=9",
                    p.multiplier
                ));
            }
        }
        if let Some(pct) = self.max_lim_hundredths_pct.filter(|pct| *pct > 10_000) {
            return Some(format!("opModMaxLimW {pct} is above 100.00 %"));
        }
        if let Some(pct) = self
            .fixed_w_hundredths_pct
            .filter(|pct| !(-10_000..=10_000).contains(pct))
        {
            return Some(format!("opModFixedW {pct} is outside -100.00..=100.00 %"));
        }
        for (mode, pf) in [
            (ControlMode::FixedPFInjectW, self.fixed_pf_inject_w),
            (ControlMode::FixedPFAbsorbW, self.fixed_pf_absorb_w),
        ] {
            let Some(pf) = pf else { continue };
            // sep.xsd: "an unsigned value of cos(theta) between 0 and 1.0".
            let cos_phi = power_factor(pf);
            if !(-9..=9).contains(&pf.multiplier) || !(0.0..=1.0).contains(&cos_phi) {
                return Some(format!(
                    "{} displacement {} x 10^{} is not a power factor in 0..=1",
                    mode.name(),
                    pf.displacement,
                    pf.multiplier
                ));
            }
        }
        if let Some(var) = self.fixed_var {
            if !(-10_000..=10_000).contains(&var.value) {
                return Some(format!(
                    "opModFixedVar {} is outside -100.00..=100.00 %",
                    var.value
                ));
            }
            // sep.xsd: "whether to interpret 'value' as %setMaxVar or %statVarAvail".
            if !matches!(var.ref_type, 2 | 3) {
                return Some(format!(
                    "opModFixedVar refType {} is neither %setMaxVar (2) nor %statVarAvail (3)",
                    var.ref_type
                ));
            }
        }
        if let Some(d) = self.freq_droop {
            // k is the per-unit frequency change for a 1 per-unit power change: 0
            // would be an infinite slope.
            if d.k_of == 0 || d.k_uf == 0 {
                return Some(format!(
                    "opModFreqDroop kOF {} / kUF {}: a droop of 0 is not a droop",
                    d.k_of, d.k_uf
                ));
            }
        }
        if let Some(q) = self.target_var {
            if !(-9..=9).contains(&q.multiplier) {
                return Some(format!(
                    "opModTargetVar multiplier {} is outside -9..=9",
                    q.multiplier
                ));
            }
        }
        for curve in [
            &self.volt_var,
            &self.volt_watt,
            &self.watt_var,
            &self.watt_pf,
            &self.freq_watt,
        ]
        .into_iter()
        .flatten()
        {
            let name = curve.mode.name();
            if curve.points.is_empty() {
                return Some(format!("{name}: the curve has no points"));
            }
            if curve.mode == ControlMode::WattPF
                && curve
                    .points
                    .iter()
                    .any(|p| !(-100.0..=100.0).contains(&p.y_pct))
            {
                return Some(format!("{name}: a power factor is outside 0..=1"));
            }
            let x = match curve.mode {
                ControlMode::WattVar | ControlMode::WattPF => "active powers",
                ControlMode::FreqWatt => "frequencies",
                _ => "voltages",
            };
            if curve.points.windows(2).any(|w| w[1].v_pct <= w[0].v_pct) {
                return Some(format!(
                    "{name}: the curve's {x} do not increase from point to point"
                ));
            }
            if curve
                .points
                .iter()
                .any(|p| !p.v_pct.is_finite() || !p.y_pct.is_finite())
            {
                return Some(format!(
                    "{name}: the curve has a point that is not a number"
                ));
            }
        }
        None
    }
}

/// cos φ of a PowerFactorWithExcitation (`displacement` × 10^`multiplier`).
pub fn power_factor(pf: PowerFactorWithExcitation) -> f64 {
    crate::sep2::types::decimal(pf.displacement.into(), pf.multiplier.into())
}

/// A DefaultDERControl: what applies per mode when no event does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DefaultControl {
    pub mrid: String,
    pub controls: ControlSet,
    /// setGradW: hundredths of a percent of setMaxW per second.
    pub set_grad_w: Option<u16>,
    /// setESDelay … setESRandomDelay: the enter-service settings it sets (2030.5 has
    /// no opModEnterService mode: only a default carries them). Defaults stored by an
    /// older csipd have none.
    #[serde(default)]
    pub enter_service: crate::sep2::EnterService,
}

/// A DERProgram as the scheduler needs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub mrid: String,
    /// The FunctionSetAssignments it was found in (href or mRID), for provenance only:
    /// primacy is compared across FSAs.
    pub fsa: String,
    /// Lower number wins.
    pub primacy: u8,
    /// `None` when the server has none (404/204, or the DefaultDERControl was removed).
    pub default_control: Option<DefaultControl>,
}

/// EventStatus.currentStatus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusCode {
    Scheduled,
    Active,
    Cancelled,
    CancelledWithRandomization,
    Superseded,
    /// A value 2030.5 reserves; such an event is rejected as invalid.
    Reserved(u8),
}

impl StatusCode {
    /// From the wire value.
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => StatusCode::Scheduled,
            1 => StatusCode::Active,
            2 => StatusCode::Cancelled,
            3 => StatusCode::CancelledWithRandomization,
            4 => StatusCode::Superseded,
            other => StatusCode::Reserved(other),
        }
    }
}

/// EventStatus of a DERControl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventStatus {
    pub current: StatusCode,
    /// EventStatus.dateTime, seconds since the epoch.
    pub date_time_s: i64,
    /// Informational: the scheduler works out overlaps itself.
    pub potentially_superseded: bool,
}

/// responseRequired bit 0: the end device shall indicate that the message was received.
pub const RESPONSE_RECEIVED_BIT: u8 = 0x01;
/// responseRequired bit 1: the end device shall indicate specific responses.
pub const RESPONSE_SPECIFIC_BIT: u8 = 0x02;

/// A DERControl as the scheduler needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub mrid: String,
    pub program_mrid: String,
    pub creation_time_s: i64,
    /// interval.start, seconds since the epoch.
    pub start_s: i64,
    /// interval.duration, seconds.
    pub duration_s: u32,
    pub randomize_start_s: i32,
    pub randomize_duration_s: i32,
    pub status: EventStatus,
    /// responseRequired bits (see [`RESPONSE_RECEIVED_BIT`], [`RESPONSE_SPECIFIC_BIT`]).
    pub response_required: u8,
    pub reply_to: Option<String>,
    pub controls: ControlSet,
    /// rampTms: hundredths of a second.
    pub ramp_tms: Option<u16>,
}

impl Event {
    /// A scheduled event with no randomization, no responses and no ramp.
    pub fn new(
        mrid: &str,
        program_mrid: &str,
        creation_time_s: i64,
        start_s: i64,
        duration_s: u32,
        controls: ControlSet,
    ) -> Self {
        Self {
            mrid: mrid.to_string(),
            program_mrid: program_mrid.to_string(),
            creation_time_s,
            start_s,
            duration_s,
            randomize_start_s: 0,
            randomize_duration_s: 0,
            status: EventStatus {
                current: StatusCode::Scheduled,
                date_time_s: creation_time_s,
                potentially_superseded: false,
            },
            response_required: 0,
            reply_to: None,
            controls,
            ramp_tms: None,
        }
    }

    fn scheduled_end_s(&self) -> i64 {
        self.start_s + i64::from(self.duration_s)
    }
}

/// DERControlResponse status codes (IEEE 2030.5-2018 Table 27, which sep.xsd's
/// Response.status annotation points to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResponseStatus {
    /// 1: Event Received.
    Received,
    /// 2: Event Started.
    Started,
    /// 3: Event Completed.
    Completed,
    /// 6: Event Cancelled.
    Cancelled,
    /// 7: Event Superseded.
    Superseded,
    /// 252: Rejected, a control parameter is not applicable (no mode this client runs).
    RejectedNotApplicable,
    /// 253: Rejected, invalid event.
    RejectedInvalid,
    /// 254: Rejected, the event was received after it had expired.
    RejectedExpired,
}

impl ResponseStatus {
    /// Every status, in code order.
    pub const ALL: [ResponseStatus; 8] = [
        ResponseStatus::Received,
        ResponseStatus::Started,
        ResponseStatus::Completed,
        ResponseStatus::Cancelled,
        ResponseStatus::Superseded,
        ResponseStatus::RejectedNotApplicable,
        ResponseStatus::RejectedInvalid,
        ResponseStatus::RejectedExpired,
    ];

    /// Its bit in [`EventRecord::responses_sent`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The wire value of Response.status.
    pub fn code(self) -> u8 {
        match self {
            ResponseStatus::Received => 1,
            ResponseStatus::Started => 2,
            ResponseStatus::Completed => 3,
            ResponseStatus::Cancelled => 6,
            ResponseStatus::Superseded => 7,
            ResponseStatus::RejectedNotApplicable => 252,
            ResponseStatus::RejectedInvalid => 253,
            ResponseStatus::RejectedExpired => 254,
        }
    }

    fn required_bit(self) -> u8 {
        match self {
            ResponseStatus::Received => RESPONSE_RECEIVED_BIT,
            ResponseStatus::RejectedNotApplicable
            | ResponseStatus::RejectedInvalid
            | ResponseStatus::RejectedExpired => RESPONSE_RECEIVED_BIT | RESPONSE_SPECIFIC_BIT,
            _ => RESPONSE_SPECIFIC_BIT,
        }
    }

    /// Order within one event's life: received, started, then an ending.
    fn rank(self) -> u8 {
        match self {
            ResponseStatus::Received => 0,
            ResponseStatus::Started => 1,
            _ => 2,
        }
    }
}

/// The ledger key: one response per (event mRID, status), ever.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResponseKey {
    pub event_mrid: String,
    pub status: ResponseStatus,
}

/// A response the engine must POST to `reply_to` (DERControlResponse, subject = mRID).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseDue {
    pub key: ResponseKey,
    pub program_mrid: String,
    pub reply_to: Option<String>,
    /// When it happened in the client (Response.createdDateTime), seconds since epoch.
    pub at_s: i64,
}

/// Why an event stopped applying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    Completed,
    Cancelled,
    Superseded,
    /// The server stopped listing it.
    Vanished,
    /// Never applied: rejected with this status.
    Rejected(ResponseStatus),
}

/// When and why an event ended (final once recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    pub reason: EndReason,
    pub at_s: i64,
}

/// A stop the server asked for (cancel, cancel with randomization, superseded status),
/// fixed when first noticed so re-evaluation gives the same answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub reason: EndReason,
    pub at_s: i64,
}

/// What the scheduler remembers about one event it has seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub program_mrid: String,
    pub reply_to: Option<String>,
    pub response_required: u8,
    pub first_seen_s: i64,
    /// The randomizeStart draw, kept for the life of the event.
    pub start_offset_s: i32,
    /// The randomizeDuration draw, kept for the life of the event.
    pub duration_offset_s: i32,
    pub stop: Option<Stop>,
    /// The effective end (start + duration + draws) when last listed, so an event that
    /// vanishes after its end is recorded as completed, not cancelled.
    pub eff_end_s: i64,
    pub started_at_s: Option<i64>,
    pub ended: Option<Ending>,
    /// The ledger for this event: bit [`ResponseStatus::bit`] set once that response was
    /// issued. A bit field keeps the state small and cheap to carry between calls.
    pub responses_sent: u8,
}

/// The scheduler's memory between calls; persist it (serde) to survive restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Every event seen, by mRID, each with its part of the response ledger. Bounded:
    /// the events the server lists now (each list at most `csip::context` `PAGE_LIMIT`
    /// x `MAX_PAGES` items) plus at most [`RECORD_LIMIT`] finished ones it no longer
    /// lists, each forgotten [`RECORD_RETENTION_S`] after it ended at the latest.
    pub events: BTreeMap<String, EventRecord>,
}

impl State {
    /// Whether the response `key` was ever issued.
    pub fn was_sent(&self, key: &ResponseKey) -> bool {
        self.events
            .get(&key.event_mrid)
            .is_some_and(|r| r.responses_sent & key.status.bit() != 0)
    }

    /// The response ledger: every (event mRID, status) issued, for a store to persist.
    pub fn ledger(&self) -> impl Iterator<Item = ResponseKey> + '_ {
        self.events.iter().flat_map(|(mrid, r)| {
            ResponseStatus::ALL
                .iter()
                .filter(move |s| r.responses_sent & s.bit() != 0)
                .map(move |s| ResponseKey {
                    event_mrid: mrid.clone(),
                    status: *s,
                })
        })
    }
}

/// The inputs of one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub programs: &'a [Program],
    /// The full current DERControl lists of all programs (never a partial page). While
    /// the server is unreachable, pass the last known lists.
    pub events: &'a [Event],
    /// Server-adjusted time, seconds since the epoch.
    pub now_s: i64,
}

/// Where an active value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    Event {
        event_mrid: String,
        program_mrid: String,
    },
    Default {
        program_mrid: String,
        default_mrid: String,
    },
}

/// The ramp that applies to a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ramp {
    /// rampTms of the event: reach the new value over this many hundredths of a second.
    TimeHundredthsS(u16),
    /// setGradW of the default: hundredths of a percent of setMaxW per second.
    GradientHundredthsPctPerS(u16),
    /// Neither given: the device's own default ramp.
    Unspecified,
}

/// The active value of one mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveValue {
    pub value: ModeValue,
    pub source: Source,
    /// The next instant this mode's value may change (`None`: nothing known ahead).
    pub until_s: Option<i64>,
    pub ramp: Ramp,
}

/// One value (or none) per mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActiveControls {
    /// By `ControlMode as usize`. Stored in the store (the last utility controls), so it
    /// loads from an array of any length: an older csipd stored fewer modes (7 before
    /// opModFixedW, 8 before opModStorageTargetW, 9 before the curve and power-factor
    /// modes), the missing ones are `None`; the
    /// modes of a newer one that this one does not know are dropped.
    #[serde(deserialize_with = "modes_of_any_length")]
    modes: [Option<ActiveValue>; ControlMode::ALL.len()],
    /// The enter-service settings in force: those of the highest-precedence
    /// DefaultDERControl (lowest primacy, then mRID) that gives any `setES*` value, the
    /// whole set from that one default. Events cannot set them. Controls stored by an
    /// older csipd have none.
    #[serde(default)]
    enter_service: Option<ActiveEnterService>,
}

/// The enter-service settings in force and the default they come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveEnterService {
    pub value: crate::sep2::EnterService,
    /// Always a [`Source::Default`].
    pub source: Source,
}

fn modes_of_any_length<'de, D>(
    d: D,
) -> Result<[Option<ActiveValue>; ControlMode::ALL.len()], D::Error>
where
    D: serde::Deserializer<'de>,
{
    let stored: Vec<Option<ActiveValue>> = Deserialize::deserialize(d)?;
    let mut modes: [Option<ActiveValue>; ControlMode::ALL.len()] = Default::default();
    for (slot, value) in modes.iter_mut().zip(stored) {
        *slot = value;
    }
    Ok(modes)
}

impl ActiveControls {
    /// The active value of `mode`; `None` when no event and no default sets it.
    pub fn get(&self, mode: ControlMode) -> Option<&ActiveValue> {
        self.modes[mode as usize].as_ref()
    }

    fn set(&mut self, mode: ControlMode, value: Option<ActiveValue>) {
        self.modes[mode as usize] = value;
    }

    /// Watts of a power mode, for convenience.
    pub fn watts(&self, mode: ControlMode) -> Option<f64> {
        self.get(mode).and_then(|a| a.value.watts())
    }

    /// The enter-service settings in force (see [`ActiveEnterService`]).
    pub fn enter_service(&self) -> Option<&ActiveEnterService> {
        self.enter_service.as_ref()
    }

    /// (mode, value) for every mode that has a value.
    pub fn iter(&self) -> impl Iterator<Item = (ControlMode, &ActiveValue)> {
        ControlMode::ALL
            .iter()
            .filter_map(|m| self.get(*m).map(|a| (*m, a)))
    }
}

/// The result of one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub active: ActiveControls,
    /// rampTms of the highest-precedence active event that has one, else setGradW of the
    /// highest-precedence default that has one.
    pub ramp: Ramp,
    /// Evaluate again no later than this (`None`: nothing scheduled ahead).
    pub next_change_s: Option<i64>,
    /// Responses that fell due, in the order they happened; already in the state's ledger.
    pub responses: Vec<ResponseDue>,
    /// The state to pass to the next call (and to persist).
    pub state: State,
    /// Human-readable reasons for rejections and vanished events, for the log.
    pub notes: Vec<String>,
}

/// A valid event with its effective window, during one evaluation.
struct Live<'a> {
    ev: &'a Event,
    primacy: u8,
    mask: u32,
    eff_start_s: i64,
    eff_end_s: i64,
    /// Stop by the server (cancel / superseded status) or an already recorded ending.
    stop: Option<(EndReason, i64)>,
    /// The ending is already recorded in the state and final.
    ended: bool,
    /// When the client first knew of it.
    first_seen_s: i64,
    /// Computed: when it stops applying and why.
    end: (EndReason, i64),
}

impl Live<'_> {
    /// Whether it applies for any time at all: it must end after it starts and after
    /// the client first knew of it.
    fn executes(&self) -> bool {
        self.end.1 > self.eff_start_s.max(self.first_seen_s)
    }
}

/// Step 7 of [`evaluate`]: forgets the records of events that ended and that the server
/// no longer lists (`present`) once [`RECORD_RETENTION_S`] has passed since their end,
/// and, while more than [`RECORD_LIMIT`] such records remain, those that ended first.
/// An event still listed, or not ended, is never forgotten (its draws and ledger bits
/// keep it from being answered twice).
fn forget_finished(state: &mut State, present: &HashSet<&str>, now: i64) {
    let mut gone: Vec<(i64, String)> = Vec::new();
    let mut expired: Vec<String> = Vec::new();
    for (mrid, r) in &state.events {
        let Some(ending) = r.ended else { continue };
        if present.contains(mrid.as_str()) {
            continue;
        }
        if ending.at_s + RECORD_RETENTION_S < now {
            expired.push(mrid.clone());
        } else {
            gone.push((ending.at_s, mrid.clone()));
        }
    }
    if gone.len() > RECORD_LIMIT {
        gone.sort_unstable();
        let excess = gone.len() - RECORD_LIMIT;
        expired.extend(gone.into_iter().take(excess).map(|(_, mrid)| mrid));
    }
    for mrid in &expired {
        state.events.remove(mrid);
    }
}

/// Evaluates the schedule at `input.now_s`. See the module documentation. Copies
/// `previous` (all its records); a caller that keeps only the outcome's state should
/// use [`evaluate_owned`].
pub fn evaluate(input: &Input<'_>, rng: &mut Rng, previous: &State) -> Outcome {
    evaluate_owned(input, rng, previous.clone())
}

/// [`evaluate`] taking the previous state by value, which saves copying it: the engine's
/// loop hands each outcome's state to the next call.
pub fn evaluate_owned(input: &Input<'_>, rng: &mut Rng, previous: State) -> Outcome {
    let now = input.now_s;
    let mut state = previous;
    let mut notes = Vec::new();
    let mut due: Vec<ResponseDue> = Vec::new();

    let programs: HashMap<&str, &Program> = input
        .programs
        .iter()
        .map(|p| (p.mrid.as_str(), p))
        .collect();

    // 1. Register new events, notice status changes, collect the valid ones.
    let mut present: HashSet<&str> = HashSet::with_capacity(input.events.len());
    let mut live: Vec<Live<'_>> = Vec::with_capacity(input.events.len());
    for ev in input.events {
        if !present.insert(ev.mrid.as_str()) {
            notes.push(format!(
                "event {} listed twice; the first listing is used",
                ev.mrid
            ));
            continue;
        }
        let program = programs.get(ev.program_mrid.as_str()).copied();
        let record = match state.events.get_mut(&ev.mrid) {
            Some(record) => record,
            None if program.is_none() => {
                // Not yet rankable (its program is not in the input): wait, unanswered,
                // until the engine passes the program too.
                notes.push(format!(
                    "event {} ignored: its program {} is not known",
                    ev.mrid, ev.program_mrid
                ));
                present.remove(ev.mrid.as_str());
                continue;
            }
            None => {
                let record = first_sight(ev, now, rng, &mut due, &mut notes);
                state.events.entry(ev.mrid.clone()).or_insert(record)
            }
        };
        if matches!(
            record.ended,
            Some(Ending {
                reason: EndReason::Rejected(_),
                ..
            })
        ) {
            continue;
        }
        let Some(program) = program else {
            // Known before, its program has gone: treat it as no longer listed.
            present.remove(ev.mrid.as_str());
            continue;
        };
        let eff_start_s = ev.start_s + i64::from(record.start_offset_s);
        let eff_len_s = (i64::from(ev.duration_s) + i64::from(record.duration_offset_s)).max(1);
        let eff_end_s = eff_start_s + eff_len_s;
        record.eff_end_s = eff_end_s;
        if record.ended.is_none() && record.stop.is_none() {
            record.stop = server_stop(ev, record, eff_start_s, now, rng);
        }
        let stop = match record.ended {
            Some(e) => Some((e.reason, e.at_s)),
            None => record.stop.map(|s| (s.reason, s.at_s)),
        };
        live.push(Live {
            ev,
            primacy: program.primacy,
            mask: ev.controls.modes_mask(),
            eff_start_s,
            eff_end_s,
            stop,
            ended: record.ended.is_some(),
            first_seen_s: record.first_seen_s,
            end: (EndReason::Completed, eff_end_s),
        });
    }

    // 2. Events the server no longer lists: an active one ends now (as cancelled).
    for (mrid, record) in state.events.iter_mut() {
        if record.ended.is_some() || present.contains(mrid.as_str()) {
            continue;
        }
        // If it had already run to its end (or a known stop) before we looked, say so.
        let (reason, at_s, status) = match record.stop {
            Some(stop) if stop.at_s <= now.min(record.eff_end_s) => {
                (stop.reason, stop.at_s, end_status(stop.reason))
            }
            _ if record.eff_end_s <= now => (
                EndReason::Completed,
                record.eff_end_s,
                Some(ResponseStatus::Completed),
            ),
            _ => (EndReason::Vanished, now, Some(ResponseStatus::Cancelled)),
        };
        let at_s = at_s.max(record.started_at_s.unwrap_or(record.first_seen_s));
        record.ended = Some(Ending { reason, at_s });
        if let (Some(_), Some(status)) = (record.started_at_s, status) {
            if reason == EndReason::Vanished {
                notes.push(format!(
                    "event {mrid} was active and is no longer listed by the server; it ends now"
                ));
            }
            push_due(&mut due, mrid, record, status, at_s);
        }
    }

    // 3. When each live event stops applying: completion, server stop, or superseded by
    //    a higher-precedence event that covers all its modes and overlaps it in time.
    resolve_ends(&mut live);

    // 4. Started / ended transitions up to now, each recorded and answered once.
    //    `open`: still running or still to come after this call.
    let mut open = vec![false; live.len()];
    for (l, open) in live.iter().zip(open.iter_mut()) {
        let Some(record) = state.events.get_mut(&l.ev.mrid) else {
            continue;
        };
        if record.ended.is_some() {
            continue;
        }
        let (reason, end_s) = l.end;
        if l.executes() && now >= l.eff_start_s && record.started_at_s.is_none() {
            let at = l.eff_start_s.max(record.first_seen_s);
            record.started_at_s = Some(at);
            push_due(&mut due, &l.ev.mrid, record, ResponseStatus::Started, at);
        }
        if now >= end_s {
            let at = end_s.max(record.started_at_s.unwrap_or(record.first_seen_s));
            record.ended = Some(Ending { reason, at_s: at });
            if let Some(status) = end_status(reason) {
                push_due(&mut due, &l.ev.mrid, record, status, at);
            }
        }
        *open = record.ended.is_none();
    }

    // 5. Active value per mode: the highest-precedence executing event, else the default.
    let mut active = ActiveControls::default();
    let mut defaults: Vec<&Program> = input
        .programs
        .iter()
        .filter(|p| p.default_control.is_some())
        .collect();
    defaults.sort_by(|a, b| (a.primacy, &a.mrid).cmp(&(b.primacy, &b.mrid)));
    let default_ramp = defaults
        .iter()
        .find_map(|p| p.default_control.as_ref().and_then(|d| d.set_grad_w))
        .map_or(Ramp::Unspecified, Ramp::GradientHundredthsPctPerS);
    let executing: Vec<&Live<'_>> = live
        .iter()
        .filter(|l| l.eff_start_s <= now && now < l.end.1 && l.executes())
        .collect();
    let mut top_event_ramp: Option<(&Live<'_>, u16)> = None;
    for mode in ControlMode::ALL {
        let until_s = live
            .iter()
            .zip(&open)
            .filter(|(l, open)| **open && l.mask & mode.bit() != 0)
            .flat_map(|(l, _)| [l.eff_start_s, l.end.1])
            .filter(|t| *t > now)
            .min();
        let winner = executing
            .iter()
            .filter(|l| l.mask & mode.bit() != 0)
            .min_by(|a, b| instant_precedence(a, b));
        let value = if let Some(l) = winner {
            let ramp = match l.ev.ramp_tms {
                Some(t) => {
                    let better =
                        top_event_ramp.is_none_or(|(cur, _)| instant_precedence(l, cur).is_lt());
                    if better {
                        top_event_ramp = Some((l, t));
                    }
                    Ramp::TimeHundredthsS(t)
                }
                None => default_ramp,
            };
            l.ev.controls.get(mode).map(|value| ActiveValue {
                value,
                source: Source::Event {
                    event_mrid: l.ev.mrid.clone(),
                    program_mrid: l.ev.program_mrid.clone(),
                },
                until_s,
                ramp,
            })
        } else {
            defaults.iter().find_map(|p| {
                let d = p.default_control.as_ref()?;
                let value = d.controls.get(mode)?;
                Some(ActiveValue {
                    value,
                    source: Source::Default {
                        program_mrid: p.mrid.clone(),
                        default_mrid: d.mrid.clone(),
                    },
                    until_s,
                    ramp: default_ramp,
                })
            })
        };
        active.set(mode, value);
    }
    let ramp = top_event_ramp.map_or(default_ramp, |(_, t)| Ramp::TimeHundredthsS(t));
    active.enter_service = defaults.iter().find_map(|p| {
        let d = p.default_control.as_ref()?;
        (!d.enter_service.is_empty()).then(|| ActiveEnterService {
            value: d.enter_service,
            source: Source::Default {
                program_mrid: p.mrid.clone(),
                default_mrid: d.mrid.clone(),
            },
        })
    });

    // 6. The next instant anything changes.
    let next_change_s = live
        .iter()
        .zip(&open)
        .filter(|(_, open)| **open)
        .flat_map(|(l, _)| [l.eff_start_s, l.end.1])
        .filter(|t| *t > now)
        .min();

    // 7. Forget finished events the server no longer lists, after a retention period,
    //    and the earliest-ended of them beyond RECORD_LIMIT.
    forget_finished(&mut state, &present, now);

    // Responses in the order they happened; within one event received, started, ended.
    // A response is due once: whatever the ledger already has is dropped.
    due.sort_by_key(|r| (r.at_s, r.key.status.rank()));
    let mut responses = Vec::with_capacity(due.len());
    for r in due {
        let Some(record) = state.events.get_mut(&r.key.event_mrid) else {
            continue;
        };
        if record.responses_sent & r.key.status.bit() == 0 {
            record.responses_sent |= r.key.status.bit();
            responses.push(r);
        }
    }

    Outcome {
        active,
        ramp,
        next_change_s,
        responses,
        state,
        notes,
    }
}

/// Precedence at one instant among executing events for the same mode: lower primacy,
/// then the later scheduled start (consecutive events that overlap only through
/// randomization hand over to the next one), then the newer creationTime, then mRID.
fn instant_precedence(a: &Live<'_>, b: &Live<'_>) -> std::cmp::Ordering {
    a.primacy
        .cmp(&b.primacy)
        .then(b.ev.start_s.cmp(&a.ev.start_s))
        .then(b.ev.creation_time_s.cmp(&a.ev.creation_time_s))
        .then(b.ev.mrid.cmp(&a.ev.mrid))
}

/// Precedence for superseding: lower primacy, then newer creationTime, then mRID.
fn supersede_precedence(a: &Live<'_>, b: &Live<'_>) -> std::cmp::Ordering {
    a.primacy
        .cmp(&b.primacy)
        .then(b.ev.creation_time_s.cmp(&a.ev.creation_time_s))
        .then(b.ev.mrid.cmp(&a.ev.mrid))
}

/// Sets `end` of every live event. Events are visited from the highest supersede
/// precedence down, so the end of every possible superseder is final when used.
fn resolve_ends(live: &mut [Live<'_>]) {
    let mut order: Vec<usize> = (0..live.len()).collect();
    order.sort_by(|a, b| supersede_precedence(&live[*a], &live[*b]));
    let mut rank = vec![0usize; live.len()];
    for (r, i) in order.iter().enumerate() {
        rank[*i] = r;
    }
    // Candidates by scheduled start, to find time overlaps without scanning all pairs.
    let mut by_start: Vec<usize> = (0..live.len()).collect();
    by_start.sort_by_key(|i| live[*i].ev.start_s);
    let starts: Vec<i64> = by_start.iter().map(|i| live[*i].ev.start_s).collect();
    let max_len_s = live
        .iter()
        .map(|l| i64::from(l.ev.duration_s))
        .max()
        .unwrap_or(0);

    for &e in &order {
        let (e_start, e_end) = (live[e].ev.start_s, live[e].ev.scheduled_end_s());
        let mut end = (EndReason::Completed, live[e].eff_end_s);
        match live[e].stop {
            Some((reason, at)) if live[e].ended => {
                live[e].end = (reason, at);
                continue;
            }
            Some((reason, at)) if at <= end.1 => end = (reason, at),
            _ => {}
        }
        let lo = starts.partition_point(|s| *s < e_start - max_len_s);
        let hi = starts.partition_point(|s| *s < e_end);
        for &f in &by_start[lo..hi] {
            let (fl, el) = (&live[f], &live[e]);
            if rank[f] >= rank[e]
                || fl.mask & el.mask != el.mask
                || fl.ev.scheduled_end_s() <= e_start
            {
                continue;
            }
            // F takes over from E when both would be running.
            let t = fl.eff_start_s.max(el.eff_start_s);
            if t < fl.end.1 && t < end.1 {
                end = (EndReason::Superseded, t);
            }
        }
        live[e].end = end;
    }
}

/// The stop a server status asks for, fixed when first noticed.
fn server_stop(
    ev: &Event,
    record: &EventRecord,
    eff_start_s: i64,
    now: i64,
    rng: &mut Rng,
) -> Option<Stop> {
    let not_started = record.started_at_s.is_none() && now < eff_start_s;
    match ev.status.current {
        StatusCode::Cancelled => Some(Stop {
            reason: EndReason::Cancelled,
            at_s: now,
        }),
        StatusCode::CancelledWithRandomization => {
            // End randomization: the larger of |randomizeStart| and |randomizeDuration|.
            let bound = ev
                .randomize_start_s
                .unsigned_abs()
                .max(ev.randomize_duration_s.unsigned_abs())
                .min(RANDOMIZE_LIMIT_S as u32) as i32;
            let delay = if not_started {
                0
            } else {
                rng.draw_offset_s(bound)
            };
            Some(Stop {
                reason: EndReason::Cancelled,
                at_s: now + i64::from(delay),
            })
        }
        StatusCode::Superseded => Some(Stop {
            reason: EndReason::Superseded,
            at_s: now,
        }),
        _ => None,
    }
}

/// The record of an event seen for the first time: validation, the randomization
/// draws, and the Received (or rejection) response.
fn first_sight(
    ev: &Event,
    now: i64,
    rng: &mut Rng,
    due: &mut Vec<ResponseDue>,
    notes: &mut Vec<String>,
) -> EventRecord {
    let mut record = EventRecord {
        program_mrid: ev.program_mrid.clone(),
        reply_to: ev.reply_to.clone(),
        response_required: ev.response_required,
        first_seen_s: now,
        start_offset_s: 0,
        duration_offset_s: 0,
        stop: None,
        eff_end_s: ev.scheduled_end_s(),
        started_at_s: None,
        ended: None,
        responses_sent: 0,
    };
    let rejection = if ev.controls.modes_mask() == 0 {
        Some((
            ResponseStatus::RejectedNotApplicable,
            "it sets no control mode this client runs".to_string(),
        ))
    } else if let Some(why) = ev.controls.invalid_value() {
        Some((ResponseStatus::RejectedInvalid, why))
    } else if ev.duration_s == 0 {
        Some((
            ResponseStatus::RejectedInvalid,
            "its duration is 0 s".to_string(),
        ))
    } else if ev.randomize_start_s.abs() > RANDOMIZE_LIMIT_S
        || ev.randomize_duration_s.abs() > RANDOMIZE_LIMIT_S
    {
        Some((
            ResponseStatus::RejectedInvalid,
            format!(
                "randomizeStart {} / randomizeDuration {} outside -3600..=3600 s",
                ev.randomize_start_s, ev.randomize_duration_s
            ),
        ))
    } else if let StatusCode::Reserved(v) = ev.status.current {
        Some((
            ResponseStatus::RejectedInvalid,
            format!("EventStatus.currentStatus {v} is reserved"),
        ))
    } else {
        None
    };
    if let Some((status, why)) = rejection {
        notes.push(format!(
            "event {} rejected ({}): {why}",
            ev.mrid,
            status.code()
        ));
        record.ended = Some(Ending {
            reason: EndReason::Rejected(status),
            at_s: now,
        });
        push_due(due, &ev.mrid, &record, status, now);
        return record;
    }

    // Drawn once, here, and kept in the record for the life of the event.
    record.start_offset_s = rng.draw_offset_s(ev.randomize_start_s);
    record.duration_offset_s = rng.draw_offset_s(ev.randomize_duration_s);
    let eff_start = ev.start_s + i64::from(record.start_offset_s);
    let eff_end =
        eff_start + (i64::from(ev.duration_s) + i64::from(record.duration_offset_s)).max(1);
    let server_ended = matches!(
        ev.status.current,
        StatusCode::Cancelled | StatusCode::CancelledWithRandomization | StatusCode::Superseded
    );
    if eff_end <= now {
        if server_ended {
            // Over and withdrawn before we saw it: nothing to run, nothing to answer.
            let reason = if ev.status.current == StatusCode::Superseded {
                EndReason::Superseded
            } else {
                EndReason::Cancelled
            };
            record.ended = Some(Ending { reason, at_s: now });
            return record;
        }
        notes.push(format!(
            "event {} rejected (254): it ended at {eff_end}, before it was first seen at {now}",
            ev.mrid
        ));
        record.ended = Some(Ending {
            reason: EndReason::Rejected(ResponseStatus::RejectedExpired),
            at_s: now,
        });
        push_due(due, &ev.mrid, &record, ResponseStatus::RejectedExpired, now);
        return record;
    }
    push_due(due, &ev.mrid, &record, ResponseStatus::Received, now);
    record
}

/// The response that reports an ending.
fn end_status(reason: EndReason) -> Option<ResponseStatus> {
    match reason {
        EndReason::Completed => Some(ResponseStatus::Completed),
        EndReason::Cancelled | EndReason::Vanished => Some(ResponseStatus::Cancelled),
        EndReason::Superseded => Some(ResponseStatus::Superseded),
        EndReason::Rejected(_) => None,
    }
}

/// Queues a response when the event asked for that kind of response.
fn push_due(
    due: &mut Vec<ResponseDue>,
    mrid: &str,
    record: &EventRecord,
    status: ResponseStatus,
    at_s: i64,
) {
    if record.response_required & status.required_bit() == 0 {
        return;
    }
    due.push(ResponseDue {
        key: ResponseKey {
            event_mrid: mrid.to_string(),
            status,
        },
        program_mrid: record.program_mrid.clone(),
        reply_to: record.reply_to.clone(),
        at_s,
    });
}

#[cfg(test)]
mod storage_target_tests {
    use super::*;

    fn program(default: ControlSet) -> Program {
        Program {
            mrid: "P".into(),
            fsa: "f".into(),
            primacy: 0,
            default_control: Some(DefaultControl {
                mrid: "D".into(),
                controls: default,
                set_grad_w: Some(27),
                enter_service: Default::default(),
            }),
        }
    }

    #[test]
    fn storage_target_is_a_signed_mode_with_the_usual_precedence() {
        let programs = [program(ControlSet {
            exp_lim_w: Some(ActivePower::from_watts(0)),
            ..ControlSet::default()
        })];
        let event = Event::new(
            "E1",
            "P",
            900,
            1000,
            600,
            ControlSet {
                storage_target_w: Some(ActivePower::from_watts(-3000)),
                exp_lim_w: Some(ActivePower::from_watts(2500)),
                ..ControlSet::default()
            },
        );
        let out = evaluate(
            &Input {
                programs: &programs,
                events: std::slice::from_ref(&event),
                now_s: 1100,
            },
            &mut Rng::new(1),
            &State::default(),
        );
        // A negative target (charge) is valid, unlike a negative limit.
        assert_eq!(out.active.watts(ControlMode::StorageTargetW), Some(-3000.0));
        assert_eq!(out.active.watts(ControlMode::ExpLimW), Some(2500.0));
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        // Its end: the default sets no target, so none is in force.
        let after = evaluate(
            &Input {
                programs: &programs,
                events: std::slice::from_ref(&event),
                now_s: 1700,
            },
            &mut Rng::new(1),
            &out.state,
        );
        assert_eq!(after.active.watts(ControlMode::StorageTargetW), None);
        assert_eq!(after.active.watts(ControlMode::ExpLimW), Some(0.0));
    }

    #[test]
    fn active_controls_stored_before_the_storage_target_still_load() {
        let programs = [program(ControlSet {
            exp_lim_w: Some(ActivePower::from_watts(1500)),
            storage_target_w: Some(ActivePower::from_watts(800)),
            ..ControlSet::default()
        })];
        let out = evaluate(
            &Input {
                programs: &programs,
                events: &[],
                now_s: 10,
            },
            &mut Rng::new(1),
            &State::default(),
        );
        let json = serde_json::to_value(&out.active).unwrap();
        // What older csipds stored: the seven modes before opModFixedW, the eight
        // before opModStorageTargetW (and a field of a build that kept it apart).
        for kept in [7, 8] {
            let mut old = json.clone();
            old["modes"].as_array_mut().unwrap().truncate(kept);
            old["storage_target"] = serde_json::Value::Null;
            let old: ActiveControls = serde_json::from_value(old).expect("old form loads");
            assert_eq!(old.watts(ControlMode::ExpLimW), Some(1500.0));
            assert_eq!(old.watts(ControlMode::StorageTargetW), None);
        }
        // A newer csipd's extra modes are dropped, the known ones kept.
        let mut newer = json.clone();
        newer["modes"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::Value::Null);
        let newer: ActiveControls = serde_json::from_value(newer).expect("newer form loads");
        assert_eq!(newer, out.active);
        let set: ControlSet = serde_json::from_str(
            r#"{"exp_lim_w":null,"imp_lim_w":null,"gen_lim_w":null,"load_lim_w":null,
                "connect":null,"energize":null,"max_lim_hundredths_pct":5000}"#,
        )
        .expect("an old control set loads");
        assert_eq!(set.storage_target_w, None);
    }
}

#[cfg(test)]
mod bound_tests {
    use super::scenarios::{derc, program};
    use super::*;

    /// A server that lists one short event at a time (a new envelope every minute, as
    /// a dynamic-export server does every five): past [`RECORD_LIMIT`] finished events
    /// the scheduler forgets the earliest-ended, long before [`RECORD_RETENTION_S`].
    #[test]
    fn finished_records_stop_at_the_record_limit() {
        let t0: i64 = 1_700_000_000;
        let programs = [program("P1", 1, None)];
        let mut state = State::default();
        let mut rng = Rng::new(5);
        let total = RECORD_LIMIT + 300;
        let mut responses: HashSet<ResponseKey> = HashSet::new();
        for i in 0..total {
            let start = t0 + 60 * i as i64;
            let listed = [derc(&format!("E{i:05}"), "P1", start - 10, start, 60)];
            for now in [start - 5, start + 1, start + 61] {
                let input = Input {
                    programs: &programs,
                    events: &listed,
                    now_s: now,
                };
                let outcome = evaluate_owned(&input, &mut rng, state);
                for r in outcome.responses {
                    assert!(responses.insert(r.key.clone()), "{:?} issued twice", r.key);
                }
                state = outcome.state;
            }
            assert!(
                state.events.len() <= RECORD_LIMIT + 1,
                "after event {i}: {} records",
                state.events.len()
            );
        }
        // Received (what responseRequired 03 asks for here) of every event, once.
        assert_eq!(responses.len(), total);
        assert_eq!(state.events.len(), RECORD_LIMIT + 1);
        // The earliest-ended were forgotten; the newest are all there.
        assert!(!state.events.contains_key("E00000"));
        assert!(
            !state
                .events
                .contains_key(&format!("E{:05}", total - RECORD_LIMIT - 2))
        );
        for i in total - RECORD_LIMIT..total {
            assert!(state.events.contains_key(&format!("E{i:05}")), "E{i:05}");
        }
    }

    /// An event the server still lists is never forgotten, whatever the count or age:
    /// dropping its record would answer it again.
    #[test]
    fn listed_events_are_kept_beyond_the_limit() {
        let t0: i64 = 1_700_000_000;
        let programs = [program("P1", 1, None)];
        let listed: Vec<Event> = (0..RECORD_LIMIT + 50)
            .map(|i| derc(&format!("L{i:05}"), "P1", t0, t0 + i as i64, 10))
            .collect();
        let mut rng = Rng::new(9);
        let input = |now_s| Input {
            programs: &programs,
            events: &listed,
            now_s,
        };
        let first = evaluate(&input(t0 - 1), &mut rng, &State::default());
        let later = evaluate_owned(&input(t0 + 3 * 86_400), &mut rng, first.state);
        assert_eq!(later.state.events.len(), RECORD_LIMIT + 50);
        // None of them is answered twice.
        assert!(
            later
                .responses
                .iter()
                .all(|r| r.key.status != ResponseStatus::Received)
        );
    }
}

#[cfg(test)]
mod inverter_setting_tests {
    use super::*;
    use crate::devices::curves::CurvePoint;

    fn curve(mode: ControlMode, top_v: f64) -> Curve {
        Curve {
            mode,
            points: [(90.0, 40.0), (96.0, 0.0), (104.0, 0.0), (top_v, -40.0)]
                .into_iter()
                .map(|(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                .collect(),
            dept_ref: 2,
        }
    }

    fn program(mrid: &str, primacy: u8, default: Option<ControlSet>) -> Program {
        Program {
            mrid: mrid.into(),
            fsa: "f".into(),
            primacy,
            default_control: default.map(|controls| DefaultControl {
                mrid: format!("{mrid}-D"),
                controls,
                set_grad_w: None,
                enter_service: Default::default(),
            }),
        }
    }

    fn volt_var(top_v: f64) -> ControlSet {
        ControlSet {
            volt_var: Some(curve(ControlMode::VoltVar, top_v)),
            ..ControlSet::default()
        }
    }

    fn active_curve_top(out: &Outcome) -> Option<f64> {
        match &out.active.get(ControlMode::VoltVar)?.value {
            ModeValue::Curve(c) => c.points.last().map(|p| p.v_pct),
            other => panic!("volt-var holds {other:?}"),
        }
    }

    fn run(programs: &[Program], events: &[Event], now_s: i64, state: &State) -> Outcome {
        evaluate(
            &Input {
                programs,
                events,
                now_s,
            },
            &mut Rng::new(3),
            state,
        )
    }

    /// One curve per mode, by the same rules as the limits: the default when no event,
    /// the lower primacy among events, the newer event superseding an older one of the
    /// same program, and the default again when the events end.
    #[test]
    fn a_volt_var_curve_follows_default_primacy_and_supersede() {
        let programs = [
            program("P1", 1, None),
            program("P2", 2, Some(volt_var(110.0))),
        ];
        // The default alone.
        let out = run(&programs, &[], 100, &State::default());
        assert_eq!(active_curve_top(&out), Some(110.0));
        assert!(matches!(
            out.active.get(ControlMode::VoltVar).unwrap().source,
            Source::Default { .. }
        ));
        // An event of the weaker program (P2) and one of the stronger (P1) at once: P1.
        let weak = Event::new("W", "P2", 50, 1000, 600, volt_var(111.0));
        let strong = Event::new("S", "P1", 40, 1000, 600, volt_var(112.0));
        let events = [weak.clone(), strong.clone()];
        let out = run(&programs, &events, 1100, &State::default());
        assert_eq!(active_curve_top(&out), Some(112.0));
        // A newer event of P1 over the same window supersedes S (same modes, covers it).
        let newer = Event::new("N", "P1", 60, 1000, 600, volt_var(113.0));
        let events = [weak, strong, newer];
        let mut state = State::default();
        let out = run(&programs, &events, 900, &state);
        state = out.state;
        let out = run(&programs, &events, 1100, &state);
        assert_eq!(active_curve_top(&out), Some(113.0));
        assert_eq!(
            out.state.events["S"].ended.map(|e| e.reason),
            Some(EndReason::Superseded)
        );
        // All over: the default curve again.
        let out = run(&programs, &events, 1700, &out.state);
        assert_eq!(active_curve_top(&out), Some(110.0));
    }

    /// A curve event does not supersede a limit event (different modes): both apply.
    #[test]
    fn a_curve_and_a_limit_run_side_by_side() {
        let programs = [program("P1", 1, None)];
        let limit = Event::new(
            "L",
            "P1",
            10,
            1000,
            600,
            ControlSet {
                exp_lim_w: Some(ActivePower::from_watts(1500)),
                ..ControlSet::default()
            },
        );
        let mut both = volt_var(110.0);
        both.fixed_pf_inject_w = Some(PowerFactorWithExcitation {
            displacement: 95,
            excitation: true,
            multiplier: -2,
        });
        let curve = Event::new("C", "P1", 20, 1000, 600, both);
        let out = run(&programs, &[limit, curve], 1100, &State::default());
        assert_eq!(out.active.watts(ControlMode::ExpLimW), Some(1500.0));
        assert_eq!(active_curve_top(&out), Some(110.0));
        match &out.active.get(ControlMode::FixedPFInjectW).unwrap().value {
            ModeValue::PowerFactor(pf) => assert!((power_factor(*pf) - 0.95).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        assert!(out.state.events["L"].ended.is_none());
    }

    /// Values out of range are rejected 253 with the reason; a valid one is received.
    #[test]
    fn out_of_range_power_factors_and_var_levels_are_invalid() {
        let programs = [program("P1", 1, None)];
        let pf = |displacement, multiplier| ControlSet {
            fixed_pf_inject_w: Some(PowerFactorWithExcitation {
                displacement,
                excitation: false,
                multiplier,
            }),
            ..ControlSet::default()
        };
        let var = |ref_type, value| ControlSet {
            fixed_var: Some(FixedVar { ref_type, value }),
            ..ControlSet::default()
        };
        let target = |value, multiplier| ControlSet {
            target_var: Some(ReactivePower { value, multiplier }),
            ..ControlSet::default()
        };
        let mut down = volt_var(110.0);
        down.volt_var.as_mut().unwrap().points.swap(0, 1);
        let mut pf_curve = volt_var(110.0);
        let mut c = pf_curve.volt_var.take().unwrap();
        c.mode = ControlMode::WattPF;
        c.points[0].y_pct = 120.0;
        pf_curve.watt_pf = Some(c);
        // A freq-watt curve whose frequencies fall back (52 Hz, then 50.25 Hz).
        let fw = |points: [(f64, f64); 2]| ControlSet {
            freq_watt: Some(Curve {
                mode: ControlMode::FreqWatt,
                points: points
                    .into_iter()
                    .map(|(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                    .collect(),
                dept_ref: 1,
            }),
            ..ControlSet::default()
        };
        let cases = [
            (
                fw([(52.0, 0.0), (50.25, 100.0)]),
                Some("opModFreqWatt: the curve's frequencies do not increase"),
            ),
            (fw([(50.25, 100.0), (52.0, 0.0)]), None),
            (
                pf_curve,
                Some("opModWattPF: a power factor is outside 0..=1"),
            ),
            (target(-250, 1), None),
            (target(5, 12), Some("opModTargetVar multiplier 12")),
            (pf(1050, -3), Some("not a power factor")),
            (pf(95, -2), None),
            (var(2, 12_000), Some("outside -100.00..=100.00")),
            (var(1, 5_000), Some("refType 1")),
            (var(3, -5_000), None),
            (down, Some("do not increase")),
        ];
        for (i, (controls, why)) in cases.into_iter().enumerate() {
            let mut event = Event::new(&format!("E{i}"), "P1", 10, 1000, 600, controls);
            event.response_required = RESPONSE_RECEIVED_BIT | RESPONSE_SPECIFIC_BIT;
            event.reply_to = Some("/rsp".into());
            let out = run(&programs, &[event], 900, &State::default());
            let status = out.responses[0].key.status;
            match why {
                Some(why) => {
                    assert_eq!(status, ResponseStatus::RejectedInvalid, "case {i}");
                    assert!(
                        out.notes.iter().any(|n| n.contains(why)),
                        "case {i}: {:?}",
                        out.notes
                    );
                }
                None => assert_eq!(status, ResponseStatus::Received, "case {i}"),
            }
        }
    }

    /// The enter-service settings come whole from the highest-precedence default that
    /// gives any (primacy, not the order listed), whatever events run; they are stored
    /// with the active controls, and controls stored before them load with none.
    #[test]
    fn enter_service_settings_come_from_the_first_default_that_has_them() {
        let es = |delay: u32| crate::sep2::EnterService {
            delay: Some(delay),
            high_volt: Some(11_000),
            ..Default::default()
        };
        let mut none = program("P0", 0, Some(ControlSet::default()));
        let mut low = program("P2", 2, Some(ControlSet::default()));
        let mut high = program("P1", 1, Some(ControlSet::default()));
        low.default_control.as_mut().unwrap().enter_service = es(9_000);
        high.default_control.as_mut().unwrap().enter_service = es(6_000);
        none.default_control.as_mut().unwrap().set_grad_w = Some(27);
        let event = Event::new("E1", "P0", 0, 0, 100, volt_var(110.0));
        let out = run(
            &[low.clone(), none.clone(), high.clone()],
            &[event],
            10,
            &State::default(),
        );
        let got = out.active.enter_service().expect("in force");
        assert_eq!(got.value, es(6_000));
        assert_eq!(
            got.source,
            Source::Default {
                program_mrid: "P1".into(),
                default_mrid: "P1-D".into()
            }
        );
        let json = serde_json::to_value(&out.active).unwrap();
        let back: ActiveControls = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, out.active);
        let mut old = json;
        old.as_object_mut().unwrap().remove("enter_service");
        let old: ActiveControls = serde_json::from_value(old).expect("older form loads");
        assert!(old.enter_service().is_none());
        assert!(old.get(ControlMode::VoltVar).is_some());
        // No default gives any: none in force.
        let out = run(&[none], &[], 10, &State::default());
        assert!(out.active.enter_service().is_none());
    }

    /// Active controls stored by a csipd before the curve modes (9 modes) still load,
    /// and the new ones (with a curve) round-trip through the store's JSON.
    #[test]
    fn active_controls_stored_before_the_curve_modes_still_load() {
        let programs = [program(
            "P1",
            1,
            Some(ControlSet {
                exp_lim_w: Some(ActivePower::from_watts(1500)),
                fixed_var: Some(FixedVar {
                    ref_type: 2,
                    value: -2500,
                }),
                target_var: Some(ReactivePower {
                    value: -150,
                    multiplier: 1,
                }),
                freq_droop: Some(FreqDroop {
                    db_of: 150,
                    db_uf: 150,
                    k_of: 50,
                    k_uf: 40,
                    open_loop_tms: 100,
                }),
                freq_watt: Some(curve(ControlMode::FreqWatt, 120.0)),
                ..volt_var(110.0)
            }),
        )];
        let out = run(&programs, &[], 10, &State::default());
        match &out.active.get(ControlMode::TargetVar).unwrap().value {
            ModeValue::ReactivePower(q) => assert_eq!(q.vars(), -1500.0),
            other => panic!("{other:?}"),
        }
        let json = serde_json::to_value(&out.active).unwrap();
        assert_eq!(
            json["modes"].as_array().unwrap().len(),
            ControlMode::ALL.len()
        );
        let back: ActiveControls = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, out.active);
        let mut old = json;
        let mut before_freq_watt = old.clone();
        before_freq_watt["modes"]
            .as_array_mut()
            .unwrap()
            .truncate(18);
        let b: ActiveControls =
            serde_json::from_value(before_freq_watt).expect("an 18-mode array loads");
        assert!(b.get(ControlMode::FreqWatt).is_none());
        assert!(b.get(ControlMode::FreqDroop).is_some());
        assert!(matches!(
            back.get(ControlMode::FreqWatt).map(|a| &a.value),
            Some(ModeValue::Curve(c)) if c.mode == ControlMode::FreqWatt
        ));
        let mut before_droop = old.clone();
        before_droop["modes"].as_array_mut().unwrap().truncate(17);
        let b: ActiveControls =
            serde_json::from_value(before_droop).expect("a 17-mode array loads");
        assert!(b.get(ControlMode::FreqDroop).is_none());
        assert!(matches!(
            back.get(ControlMode::FreqDroop).map(|a| &a.value),
            Some(ModeValue::FreqDroop(d)) if d.k_uf == 40
        ));
        let mut before_watt_pf = old.clone();
        before_watt_pf["modes"].as_array_mut().unwrap().truncate(16);
        let b: ActiveControls =
            serde_json::from_value(before_watt_pf).expect("a 16-mode array loads");
        assert!(b.get(ControlMode::WattPF).is_none());
        let mut before_watt_var = old.clone();
        before_watt_var["modes"]
            .as_array_mut()
            .unwrap()
            .truncate(15);
        let b: ActiveControls =
            serde_json::from_value(before_watt_var).expect("a 15-mode array loads");
        assert!(b.get(ControlMode::WattVar).is_none());
        assert!(b.get(ControlMode::TargetVar).is_some());
        let mut before_target_var = old.clone();
        before_target_var["modes"]
            .as_array_mut()
            .unwrap()
            .truncate(14);
        let b: ActiveControls =
            serde_json::from_value(before_target_var).expect("a 14-mode array loads");
        assert!(b.get(ControlMode::TargetVar).is_none());
        assert!(b.get(ControlMode::FixedVar).is_some());
        old["modes"].as_array_mut().unwrap().truncate(9);
        let old: ActiveControls = serde_json::from_value(old).expect("a 9-mode array loads");
        assert_eq!(old.watts(ControlMode::ExpLimW), Some(1500.0));
        assert!(old.get(ControlMode::VoltVar).is_none());
        assert!(old.get(ControlMode::FixedVar).is_none());
        // A control set stored before the curve modes loads with none of them.
        let set: ControlSet = serde_json::from_str(
            r#"{"exp_lim_w":null,"imp_lim_w":null,"gen_lim_w":null,"load_lim_w":null,
                "connect":null,"energize":null,"max_lim_hundredths_pct":5000,
                "fixed_w_hundredths_pct":null,"storage_target_w":null}"#,
        )
        .expect("an old control set loads");
        assert_eq!(set.modes_mask(), ControlMode::MaxLimW.bit());
    }
}
