//! Fixed power factor and fixed reactive power on SunSpec inverters: model 123
//! (immediate controls: `OutPFSet`, `VArMaxPct`) and model 704 (DER AC controls:
//! `PFWInj`/`PFWAbs`, `VarSetPct`), layouts from pysunspec2's model_123.json and
//! model_704.json. Pure: plans the register writes from the model block as read and
//! decodes the block read back; the device does the IO
//! ([`super::Device::set_fixed_pf`], [`super::Device::set_fixed_var_pct`]). 704 is
//! preferred when an inverter has both, as for the active power limit.
//!
//! Each plan writes the value first and the enable last, so the inverter never runs
//! an enabled mode with an old value; disabling writes the enable alone. No revert
//! timer is written (the modes have no fail-safe level to revert to).
//!
//! Model 123 has one power factor (`OutPFSet`, signed cos φ) and no separate setting
//! while absorbing active power, so opModFixedPFAbsorbW needs 704. The sign of
//! `OutPFSet` is taken as the sign of the reactive power it asks for (positive:
//! over-excited, injecting vars, as the VAr of model 103 counts positive), the
//! convention of the SunSpec 1xx inverter models; the JSON model says only "cosine of
//! angle".

use super::sunspec::{Block, ModelRef, RegisterWrite, SunSpecError};
use crate::schedule::ControlMode;

/// Model 123 offsets of the power factor and var points (model_123.json).
mod m123 {
    pub const OUT_PF_SET: usize = 10;
    pub const OUT_PF_SET_ENA: usize = 14;
    pub const VAR_MAX_PCT: usize = 16;
    pub const VAR_PCT_MOD: usize = 21;
    pub const VAR_PCT_ENA: usize = 22;
    pub const OUT_PF_SET_SF: usize = 24;
    pub const VAR_PCT_SF: usize = 25;
    pub const LEN: usize = 26;
    /// `VArPct_Mod` VArMax: the var setpoint is `VArMaxPct`.
    pub const MOD_VAR_MAX: u16 = 2;
}

/// Model 704 offsets (model_704.json).
mod m704 {
    pub const PFW_INJ_ENA: usize = 2;
    pub const PFW_ABS_ENA: usize = 8;
    pub const VAR_SET_ENA: usize = 35;
    pub const VAR_SET_MOD: usize = 36;
    pub const VAR_SET_PCT: usize = 42;
    pub const PF_SF: usize = 53;
    pub const VAR_SET_PCT_SF: usize = 58;
    /// `PFWInj.PF`, `PFWInj.Ext`.
    pub const PFW_INJ: usize = 59;
    /// `PFWAbs.PF`, `PFWAbs.Ext`.
    pub const PFW_ABS: usize = 63;
    /// `VarSetMod` VAR_MAX_PCT: `VarSetPct` is in % of VArMax.
    pub const MOD_VAR_MAX_PCT: u16 = 1;
}

/// Which way a fixed power factor moves reactive power (IEEE 2030.5
/// PowerFactorWithExcitation `excitation`; SunSpec 704 `Ext`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Excitation {
    /// Injecting vars (704 `Ext` 0 OVER_EXCITED; 2030.5 excitation false).
    OverExcited,
    /// Absorbing vars (704 `Ext` 1 UNDER_EXCITED; 2030.5 excitation true).
    UnderExcited,
}

impl Excitation {
    /// From IEEE 2030.5 PowerFactorWithExcitation's `excitation` flag: true when the
    /// DER absorbs reactive power (under-excited), false when it injects (over-excited).
    pub fn from_2030_5_flag(excitation: bool) -> Excitation {
        if excitation {
            Excitation::UnderExcited
        } else {
            Excitation::OverExcited
        }
    }
}

/// A fixed displacement power factor.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FixedPf {
    /// cos φ, in (0, 1].
    pub pf: f64,
    pub excitation: Excitation,
}

/// A fixed power factor as read back from the inverter.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FixedPfState {
    /// 123 or 704.
    pub model: u16,
    /// 123 `OutPFSet_Ena`, 704 `PFWInjEna` / `PFWAbsEna` is 1.
    pub enabled: bool,
    /// The setting held (`None` when not implemented or its scale factor is unknown).
    pub setting: Option<FixedPf>,
}

/// A fixed reactive power as read back from the inverter.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FixedVarState {
    /// 123 or 704.
    pub model: u16,
    /// 123 `VArPct_Ena` is 1 with `VArPct_Mod` VArMax; 704 `VarSetEna` is 1 with
    /// `VarSetMod` VAR_MAX_PCT.
    pub enabled: bool,
    /// 123 `VArMaxPct`, 704 `VarSetPct`: % of VArMax, positive injects.
    pub pct: Option<f64>,
}

/// The models that carry a fixed power factor mode, in order of preference:
/// opModFixedPFInjectW 704 then 123, opModFixedPFAbsorbW 704 only.
pub fn pf_models(mode: ControlMode) -> &'static [u16] {
    match mode {
        ControlMode::FixedPFInjectW => &[704, 123],
        ControlMode::FixedPFAbsorbW => &[704],
        _ => &[],
    }
}

/// The models that carry opModFixedVar, in order of preference.
pub const VAR_MODELS: [u16; 2] = [704, 123];

/// The model a mode needs, named for messages.
pub fn wanted_model(mode: ControlMode) -> &'static str {
    match mode {
        ControlMode::FixedPFInjectW => "fixed power factor (123 or 704)",
        ControlMode::FixedPFAbsorbW => "fixed power factor while absorbing (704)",
        ControlMode::FixedVar => "fixed reactive power (123 or 704)",
        _ => "power factor or var control (123 or 704)",
    }
}

fn raw(
    model: u16,
    value: f64,
    sf: Option<i16>,
    point: &'static str,
    range: (f64, f64),
) -> Result<u16, SunSpecError> {
    let sf = sf.ok_or(SunSpecError::UnknownScaleFactor { model, point })?;
    let r = (value / 10f64.powi(i32::from(sf))).round();
    if !r.is_finite() || r < range.0 || r > range.1 {
        return Err(SunSpecError::OutOfRange {
            what: format!("{point} {value} does not fit model {model} with scale factor {sf}"),
        });
    }
    Ok(r as i64 as u16)
}

fn write(ctl: &ModelRef, off: usize, values: Vec<u16>, point: &'static str) -> RegisterWrite {
    RegisterWrite {
        address: ctl.addr(off as u16),
        values,
        point,
    }
}

/// The writes that set (or with `None` disable) a fixed power factor for `mode`
/// (opModFixedPFInjectW or opModFixedPFAbsorbW) on `ctl` (123 or 704), given its block.
pub fn plan_fixed_pf(
    ctl: &ModelRef,
    regs: &[u16],
    mode: ControlMode,
    setting: Option<FixedPf>,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    if !pf_models(mode).contains(&ctl.id) {
        return Err(SunSpecError::MissingModel {
            wanted: wanted_model(mode),
            present: vec![ctl.id],
        });
    }
    if let Some(s) = setting {
        if !(s.pf > 0.0 && s.pf <= 1.0) {
            return Err(SunSpecError::OutOfRange {
                what: format!("power factor {} is outside (0, 1]", s.pf),
            });
        }
    }
    let b = Block::new(ctl.id, regs);
    if ctl.id == 123 {
        b.ensure_len(m123::LEN)?;
        let Some(s) = setting else {
            return Ok(vec![write(
                ctl,
                m123::OUT_PF_SET_ENA,
                vec![0],
                "OutPFSet_Ena",
            )]);
        };
        let signed = match s.excitation {
            Excitation::OverExcited => s.pf,
            Excitation::UnderExcited => -s.pf,
        };
        let v = raw(
            123,
            signed,
            b.sf(m123::OUT_PF_SET_SF),
            "OutPFSet",
            (-32767.0, 32767.0),
        )?;
        return Ok(vec![
            write(ctl, m123::OUT_PF_SET, vec![v], "OutPFSet"),
            write(ctl, m123::OUT_PF_SET_ENA, vec![1], "OutPFSet_Ena"),
        ]);
    }
    let (ena, at, name, ena_name) = match mode {
        ControlMode::FixedPFAbsorbW => (
            m704::PFW_ABS_ENA,
            m704::PFW_ABS,
            "PFWAbs.PF+PFWAbs.Ext",
            "PFWAbsEna",
        ),
        _ => (
            m704::PFW_INJ_ENA,
            m704::PFW_INJ,
            "PFWInj.PF+PFWInj.Ext",
            "PFWInjEna",
        ),
    };
    b.ensure_len(at + 2)?;
    let Some(s) = setting else {
        return Ok(vec![write(ctl, ena, vec![0], ena_name)]);
    };
    let pf = raw(704, s.pf, b.sf(m704::PF_SF), "PF", (0.0, 65534.0))?;
    let ext = match s.excitation {
        Excitation::OverExcited => 0,
        Excitation::UnderExcited => 1,
    };
    Ok(vec![
        write(ctl, at, vec![pf, ext], name),
        write(ctl, ena, vec![1], ena_name),
    ])
}

/// The fixed power factor of `mode` on a 123 or 704 block as read.
pub fn decode_fixed_pf(model: u16, regs: &[u16], mode: ControlMode) -> FixedPfState {
    let b = Block::new(model, regs);
    if model == 123 {
        let setting = b
            .scaled_i16(m123::OUT_PF_SET, m123::OUT_PF_SET_SF)
            .map(|v| FixedPf {
                pf: v.abs(),
                excitation: if v < 0.0 {
                    Excitation::UnderExcited
                } else {
                    Excitation::OverExcited
                },
            });
        return FixedPfState {
            model,
            enabled: b.u16(m123::OUT_PF_SET_ENA) == Some(1),
            setting,
        };
    }
    let (ena, at) = match mode {
        ControlMode::FixedPFAbsorbW => (m704::PFW_ABS_ENA, m704::PFW_ABS),
        _ => (m704::PFW_INJ_ENA, m704::PFW_INJ),
    };
    let excitation = match b.u16(at + 1) {
        Some(0) => Some(Excitation::OverExcited),
        Some(1) => Some(Excitation::UnderExcited),
        _ => None,
    };
    FixedPfState {
        model,
        enabled: b.u16(ena) == Some(1),
        setting: b
            .scaled_u16(at, m704::PF_SF)
            .zip(excitation)
            .map(|(pf, excitation)| FixedPf { pf, excitation }),
    }
}

/// The writes that set (or with `None` disable) a fixed reactive power of `pct` % of
/// VArMax (positive injects) on `ctl` (123 or 704), given its block.
pub fn plan_fixed_var(
    ctl: &ModelRef,
    regs: &[u16],
    pct: Option<f64>,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    if let Some(p) = pct {
        if !(-100.0..=100.0).contains(&p) {
            return Err(SunSpecError::OutOfRange {
                what: format!("fixed reactive power {p}% of VArMax is outside -100..=100"),
            });
        }
    }
    let b = Block::new(ctl.id, regs);
    match ctl.id {
        123 => {
            b.ensure_len(m123::LEN)?;
            let Some(p) = pct else {
                return Ok(vec![write(ctl, m123::VAR_PCT_ENA, vec![0], "VArPct_Ena")]);
            };
            let v = raw(
                123,
                p,
                b.sf(m123::VAR_PCT_SF),
                "VArMaxPct",
                (-32767.0, 32767.0),
            )?;
            // VArPct_Mod and VArPct_Ena are adjacent: one write after the value.
            Ok(vec![
                write(ctl, m123::VAR_MAX_PCT, vec![v], "VArMaxPct"),
                write(
                    ctl,
                    m123::VAR_PCT_MOD,
                    vec![m123::MOD_VAR_MAX, 1],
                    "VArPct_Mod+VArPct_Ena",
                ),
            ])
        }
        704 => {
            b.ensure_len(m704::VAR_SET_PCT_SF + 1)?;
            let Some(p) = pct else {
                return Ok(vec![write(ctl, m704::VAR_SET_ENA, vec![0], "VarSetEna")]);
            };
            let v = raw(
                704,
                p,
                b.sf(m704::VAR_SET_PCT_SF),
                "VarSetPct",
                (-32767.0, 32767.0),
            )?;
            Ok(vec![
                write(ctl, m704::VAR_SET_PCT, vec![v], "VarSetPct"),
                write(
                    ctl,
                    m704::VAR_SET_MOD,
                    vec![m704::MOD_VAR_MAX_PCT],
                    "VarSetMod",
                ),
                write(ctl, m704::VAR_SET_ENA, vec![1], "VarSetEna"),
            ])
        }
        other => Err(SunSpecError::MissingModel {
            wanted: wanted_model(ControlMode::FixedVar),
            present: vec![other],
        }),
    }
}

/// The fixed reactive power on a 123 or 704 block as read.
pub fn decode_fixed_var(model: u16, regs: &[u16]) -> FixedVarState {
    let b = Block::new(model, regs);
    let (ena, md, wanted_mod, pct) = if model == 123 {
        (
            b.u16(m123::VAR_PCT_ENA),
            b.u16(m123::VAR_PCT_MOD),
            m123::MOD_VAR_MAX,
            b.scaled_i16(m123::VAR_MAX_PCT, m123::VAR_PCT_SF),
        )
    } else {
        (
            b.u16(m704::VAR_SET_ENA),
            b.u16(m704::VAR_SET_MOD),
            m704::MOD_VAR_MAX_PCT,
            b.scaled_i16(m704::VAR_SET_PCT, m704::VAR_SET_PCT_SF),
        )
    };
    FixedVarState {
        model,
        enabled: ena == Some(1) && md == Some(wanted_mod),
        pct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(regs: &mut [u16], start: u16, writes: &[RegisterWrite]) {
        for w in writes {
            let off = usize::from(w.address - start);
            regs[off..off + w.values.len()].copy_from_slice(&w.values);
        }
    }

    fn block_123() -> (ModelRef, Vec<u16>) {
        let mut r = vec![0u16; m123::LEN];
        r[0] = 123;
        r[1] = 24;
        r[m123::OUT_PF_SET_SF] = (-3i16) as u16;
        r[m123::VAR_PCT_SF] = (-1i16) as u16;
        (
            ModelRef {
                id: 123,
                start: 40200,
                len: 24,
            },
            r,
        )
    }

    fn block_704() -> (ModelRef, Vec<u16>) {
        let mut r = vec![0u16; 67];
        r[0] = 704;
        r[1] = 65;
        r[m704::PF_SF] = (-2i16) as u16;
        r[m704::VAR_SET_PCT_SF] = (-2i16) as u16;
        (
            ModelRef {
                id: 704,
                start: 1000,
                len: 65,
            },
            r,
        )
    }

    const INJECT_090_UNDER: FixedPf = FixedPf {
        pf: 0.9,
        excitation: Excitation::UnderExcited,
    };

    #[test]
    fn fixed_pf_on_123_is_signed_by_excitation_and_enabled_last() {
        let (ctl, mut regs) = block_123();
        let w = plan_fixed_pf(
            &ctl,
            &regs,
            ControlMode::FixedPFInjectW,
            Some(INJECT_090_UNDER),
        )
        .unwrap();
        assert_eq!(
            w.iter()
                .map(|w| (w.address, w.values.clone()))
                .collect::<Vec<_>>(),
            vec![(40210, vec![(-900i16) as u16]), (40214, vec![1])]
        );
        apply(&mut regs, 40200, &w);
        let st = decode_fixed_pf(123, &regs, ControlMode::FixedPFInjectW);
        assert!(st.enabled);
        assert_eq!(st.setting, Some(INJECT_090_UNDER));
        let off = plan_fixed_pf(&ctl, &regs, ControlMode::FixedPFInjectW, None).unwrap();
        assert_eq!((off[0].address, &off[0].values), (40214, &vec![0]));
        // 123 has no setting while absorbing; nonsense factors are refused.
        let e = plan_fixed_pf(
            &ctl,
            &regs,
            ControlMode::FixedPFAbsorbW,
            Some(INJECT_090_UNDER),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("704"), "{e}");
        for pf in [0.0, 1.2, f64::NAN] {
            let s = FixedPf {
                pf,
                excitation: Excitation::OverExcited,
            };
            assert!(plan_fixed_pf(&ctl, &regs, ControlMode::FixedPFInjectW, Some(s)).is_err());
        }
        regs[m123::OUT_PF_SET_SF] = 0x8000;
        assert!(matches!(
            plan_fixed_pf(
                &ctl,
                &regs,
                ControlMode::FixedPFInjectW,
                Some(INJECT_090_UNDER)
            ),
            Err(SunSpecError::UnknownScaleFactor { .. })
        ));
    }

    #[test]
    fn fixed_pf_on_704_has_one_setting_per_direction() {
        let (ctl, mut regs) = block_704();
        let inj = plan_fixed_pf(
            &ctl,
            &regs,
            ControlMode::FixedPFInjectW,
            Some(INJECT_090_UNDER),
        )
        .unwrap();
        assert_eq!((inj[0].address, &inj[0].values), (1059, &vec![90, 1]));
        assert_eq!((inj[1].address, &inj[1].values), (1002, &vec![1]));
        let abs = FixedPf {
            pf: 0.95,
            excitation: Excitation::OverExcited,
        };
        let w = plan_fixed_pf(&ctl, &regs, ControlMode::FixedPFAbsorbW, Some(abs)).unwrap();
        assert_eq!((w[0].address, &w[0].values), (1063, &vec![95, 0]));
        assert_eq!((w[1].address, &w[1].values), (1008, &vec![1]));
        apply(&mut regs, 1000, &inj);
        apply(&mut regs, 1000, &w);
        assert_eq!(
            decode_fixed_pf(704, &regs, ControlMode::FixedPFInjectW).setting,
            Some(INJECT_090_UNDER)
        );
        let st = decode_fixed_pf(704, &regs, ControlMode::FixedPFAbsorbW);
        assert!(st.enabled);
        let got = st.setting.unwrap();
        assert!((got.pf - 0.95).abs() < 1e-9, "{got:?}");
        assert_eq!(got.excitation, Excitation::OverExcited);
        let off = plan_fixed_pf(&ctl, &regs, ControlMode::FixedPFAbsorbW, None).unwrap();
        assert_eq!((off[0].address, &off[0].values), (1008, &vec![0]));
        // A 704 block cut short before PFWAbs cannot take it.
        assert!(plan_fixed_pf(&ctl, &regs[..60], ControlMode::FixedPFAbsorbW, Some(abs)).is_err());
    }

    #[test]
    fn the_2030_5_excitation_flag_means_absorbing() {
        assert_eq!(Excitation::from_2030_5_flag(true), Excitation::UnderExcited);
        assert_eq!(Excitation::from_2030_5_flag(false), Excitation::OverExcited);
    }

    #[test]
    fn fixed_var_on_123_and_704() {
        let (ctl, mut regs) = block_123();
        let w = plan_fixed_var(&ctl, &regs, Some(-25.5)).unwrap();
        assert_eq!(
            w.iter()
                .map(|w| (w.address, w.values.clone()))
                .collect::<Vec<_>>(),
            vec![(40216, vec![(-255i16) as u16]), (40221, vec![2, 1])]
        );
        apply(&mut regs, 40200, &w);
        let st = decode_fixed_var(123, &regs);
        assert!(st.enabled);
        assert_eq!(st.pct, Some(-25.5));
        let off = plan_fixed_var(&ctl, &regs, None).unwrap();
        assert_eq!((off[0].address, &off[0].values), (40222, &vec![0]));
        assert!(plan_fixed_var(&ctl, &regs, Some(101.0)).is_err());

        let (ctl, mut regs) = block_704();
        let w = plan_fixed_var(&ctl, &regs, Some(30.0)).unwrap();
        assert_eq!(
            w.iter()
                .map(|w| (w.address, w.values.clone()))
                .collect::<Vec<_>>(),
            vec![(1042, vec![3000]), (1036, vec![1]), (1035, vec![1])]
        );
        apply(&mut regs, 1000, &w);
        let st = decode_fixed_var(704, &regs);
        assert!(st.enabled);
        assert_eq!(st.pct, Some(30.0));
        // Enabled in another mode (watts) is not our fixed var.
        regs[m704::VAR_SET_MOD] = 4;
        assert!(!decode_fixed_var(704, &regs).enabled);
    }
}
