//! Frequency droop (opModFreqDroop) on the SunSpec 7xx-series model 711 (DER frequency
//! droop), layout from pysunspec2's model_711.json. Pure: plans the register writes
//! from the model block as read and judges the block read back; the device does the IO
//! ([`super::Device::set_freq_droop`]).
//!
//! 711 is ID, L, `Ena`, `AdptCtlReq`, `AdptCtlRslt`, `NCtl`, `RvrtTms` (2), `RvrtRem`
//! (2), `RvrtCtl`, `Db_SF`, `K_SF`, `RspTms_SF` (14 registers), then `NCtl` stored
//! controls of 10 registers: `DbOf` (uint32, Hz, `Db_SF`), `DbUf` (uint32), `KOf`,
//! `KUf` (uint16, per unit, `K_SF`), `RspTms` (uint32, s, `RspTms_SF`), `PMin`,
//! `ReadOnly`. As with the 705/706 curves, control 1 is read-only and holds the
//! settings in force; a control is put into force by writing its index to
//! `AdptCtlReq`, and the inverter reports `AdptCtlRslt` (0 IN_PROGRESS, 1 COMPLETED, 2
//! FAILED). csipd writes the first writable control (the five values in one write),
//! requests the adoption, waits until control 1 holds it, then sets `Ena`. `PMin`, the
//! revert timer and the scale factors are never written.
//!
//! An inverter without 711 takes the droop on the 1xx series' 127 (parameterized
//! freq-watt, pysunspec2's model_127.json: `WGra` in % of the captured power per Hz,
//! `WGra_SF`; `HzStr` and `HzStop`, int16 deviations from the nominal frequency in Hz,
//! `HzStrStop_SF`; `ModEna` bit 0). 127 is over-frequency only: csipd writes `WGra` =
//! 100 / (kOF × f_nom) (a per-unit droop k moves output by 1 per unit over k per unit
//! of frequency, k × f_nom Hz), `HzStr` = `HzStop` = dBOF (curtailment starts beyond
//! the dead band and is released back inside it), in one write, then `ModEna`. The
//! nominal frequency f_nom is 121 `ECPNomHz` when the inverter states it, else 50 Hz
//! (the Australian grid, AS/NZS 4777.2), as [`NominalHz`] says. dBUF, kUF and
//! openLoopTms have no 127 point and are not carried; `HysEna` and `HzStopWGra` are
//! left as the installer set them. (The freq-watt curve, opModFreqWatt, is model 134:
//! [`super::curves`].)

use super::curves_7xx::Adoption;
use super::sunspec::{Block, ModelRef, RegisterWrite, SunSpecError};
use crate::sep2::FreqDroop;

const ENA: usize = 2;
const ADPT_CTL_REQ: usize = 3;
const ADPT_CTL_RSLT: usize = 4;
const N_CTL: usize = 5;
const DB_SF: usize = 11;
const K_SF: usize = 12;
const RSP_TMS_SF: usize = 13;
/// Registers before the first control.
const FIXED_LEN: usize = 14;
/// Registers of one control.
const CTL_LEN: usize = 10;
/// `ReadOnly` within a control.
const READ_ONLY: usize = 9;
/// The registers of a control csipd writes: DbOf, DbUf, KOf, KUf, RspTms.
const VALUES_LEN: usize = 8;

/// The models that carry opModFreqDroop, in order of preference: 711, else 127.
pub const FREQ_DROOP_MODELS: [u16; 2] = [711, 127];

/// The nominal frequency csipd takes for a 127 droop when the inverter states none (no
/// model 121, or its `ECPNomHz` not implemented): 50 Hz, the Australian grid's
/// (AS/NZS 4777.2), where CSIP-AUS applies.
pub const DEFAULT_NOMINAL_HZ: f64 = 50.0;

/// The nominal frequency a 127 droop was worked out with, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum NominalHz {
    /// SunSpec 121 `ECPNomHz` (scaled by `ECPNomHz_SF`), Hz.
    Ecp(f64),
    /// [`DEFAULT_NOMINAL_HZ`]: the inverter has no 121 or no `ECPNomHz`.
    Assumed,
}

/// `ECPNomHz` and `ECPNomHz_SF` in model 121.
const ECP_NOM_HZ: usize = 20;
const ECP_NOM_HZ_SF: usize = 31;

impl NominalHz {
    /// From the inverter's model 121 block, if it has one.
    pub fn of_121(regs: Option<&[u16]>) -> NominalHz {
        regs.and_then(|r| Block::new(121, r).scaled_u16(ECP_NOM_HZ, ECP_NOM_HZ_SF))
            .filter(|hz| *hz > 0.0 && hz.is_finite())
            .map_or(NominalHz::Assumed, NominalHz::Ecp)
    }

    /// The frequency, Hz.
    pub fn hz(self) -> f64 {
        match self {
            NominalHz::Ecp(hz) => hz,
            NominalHz::Assumed => DEFAULT_NOMINAL_HZ,
        }
    }

    /// Where it came from, for the log and the status: `nominal 60.00 Hz (model 121
    /// ECPNomHz)`, `nominal 50 Hz assumed (AS/NZS 4777.2: the inverter states no
    /// ECPNomHz)`.
    pub fn text(self) -> String {
        match self {
            NominalHz::Ecp(hz) => format!("nominal {hz:.2} Hz (model 121 ECPNomHz)"),
            NominalHz::Assumed => format!(
                "nominal {DEFAULT_NOMINAL_HZ:.0} Hz assumed (AS/NZS 4777.2: the inverter \
                 states no ECPNomHz)"
            ),
        }
    }
}

/// What putting a droop on a 711 inverter takes (written in this order by the device,
/// each step confirmed before the next).
#[derive(Debug, Clone, PartialEq)]
pub struct DroopPlan {
    /// The five values of the writable control.
    pub values: RegisterWrite,
    /// `AdptCtlReq` = the control's 1-based index.
    pub adopt: RegisterWrite,
    /// `Ena` = 1.
    pub enable: RegisterWrite,
    /// The control written (1-based).
    pub index: u16,
    /// What control 1 holds once adopted.
    expected: Vec<u16>,
}

/// A droop as read from control 1 of a 711 block.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FreqDroopState {
    /// `Ena` is 1.
    pub enabled: bool,
    /// `DbOf`, `DbUf` in Hz; `KOf`, `KUf` per unit; `RspTms` in s (`None` where a
    /// point or scale factor is not implemented).
    pub db_of_hz: Option<f64>,
    pub db_uf_hz: Option<f64>,
    pub k_of: Option<f64>,
    pub k_uf: Option<f64>,
    pub rsp_tms_s: Option<f64>,
    /// On a 127 inverter, the nominal frequency the droop was worked out with (`None`
    /// on 711, which takes the per-unit droop as it is).
    pub nominal: Option<NominalHz>,
}

fn raw32(value: f64, sf: Option<i16>, point: &'static str) -> Result<[u16; 2], SunSpecError> {
    let sf = sf.ok_or(SunSpecError::UnknownScaleFactor { model: 711, point })?;
    let r = (value / 10f64.powi(i32::from(sf))).round();
    // uint32; 0xFFFFFFFF is "not implemented".
    if !r.is_finite() || !(0.0..f64::from(u32::MAX)).contains(&r) {
        return Err(SunSpecError::OutOfRange {
            what: format!("{point} {value} does not fit model 711 with scale factor {sf}"),
        });
    }
    let r = r as u32;
    Ok([(r >> 16) as u16, r as u16])
}

fn raw16(value: f64, sf: Option<i16>, point: &'static str) -> Result<u16, SunSpecError> {
    raw16_in(711, value, sf, point, 65535.0)
}

/// `value` in registers of `model` under scale factor `sf`, rounded, below `max`
/// (65535 for a uint16, 32767 for a positive int16; the top value is "not
/// implemented").
fn raw16_in(
    model: u16,
    value: f64,
    sf: Option<i16>,
    point: &'static str,
    max: f64,
) -> Result<u16, SunSpecError> {
    let sf = sf.ok_or(SunSpecError::UnknownScaleFactor { model, point })?;
    let r = (value / 10f64.powi(i32::from(sf))).round();
    if !r.is_finite() || !(0.0..max).contains(&r) {
        return Err(SunSpecError::OutOfRange {
            what: format!("{point} {value} does not fit model {model} with scale factor {sf}"),
        });
    }
    Ok(r as u16)
}

// Model 127 (parameterized freq-watt).
const W_GRA: usize = 2;
const MOD_ENA_127: usize = 6;
const W_GRA_SF: usize = 8;
const HZ_STR_STOP_SF: usize = 9;
/// Registers through the scale factors.
const LEN_127: usize = 10;

/// A droop as model 127 takes it: `WGra` (% of the captured power per Hz), `HzStr` and
/// `HzStop` (Hz above the nominal frequency).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreqWattParams {
    pub w_gra_pct_per_hz: f64,
    pub hz_str: f64,
    pub hz_stop: f64,
}

impl FreqWattParams {
    /// 2030.5's over-frequency droop at `nominal_hz`: kOF (thousandths, per unit) is
    /// the frequency change, per unit of `nominal_hz`, that moves output by 1 per unit,
    /// so the gradient is 100 % over kOF × `nominal_hz` Hz; dBOF (thousandths of a Hz)
    /// is where it starts and where it is released. `None` for a kOF of 0 (the
    /// scheduler rejects such a control as invalid).
    pub fn of_droop(droop: &FreqDroop, nominal_hz: f64) -> Option<FreqWattParams> {
        let k = f64::from(droop.k_of) / 1000.0;
        (k > 0.0 && nominal_hz > 0.0).then(|| {
            let db_hz = f64::from(droop.db_of) / 1000.0;
            FreqWattParams {
                w_gra_pct_per_hz: 100.0 / (k * nominal_hz),
                hz_str: db_hz,
                hz_stop: db_hz,
            }
        })
    }
}

/// The writes that put `droop` on the 127 model `ctl` given its block: `WGra`, `HzStr`,
/// `HzStop` in one write, then `ModEna` bit 0 set (the other bits kept).
pub fn plan_127(
    ctl: &ModelRef,
    regs: &[u16],
    droop: &FreqDroop,
    nominal: NominalHz,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    if ctl.id != 127 {
        return Err(SunSpecError::MissingModel {
            wanted: "freq-watt parameters (127)",
            present: vec![ctl.id],
        });
    }
    let b = Block::new(127, regs);
    b.ensure_len(LEN_127)?;
    let p =
        FreqWattParams::of_droop(droop, nominal.hz()).ok_or_else(|| SunSpecError::OutOfRange {
            what: format!("a droop kOF of {} has no gradient", droop.k_of),
        })?;
    let hz_sf = b.sf(HZ_STR_STOP_SF);
    let values = vec![
        raw16_in(127, p.w_gra_pct_per_hz, b.sf(W_GRA_SF), "WGra", 65535.0)?,
        raw16_in(127, p.hz_str, hz_sf, "HzStr", 32767.0)?,
        raw16_in(127, p.hz_stop, hz_sf, "HzStop", 32767.0)?,
    ];
    // Not implemented (0xFFFF) reads as no bits set.
    let bits = b.u16(MOD_ENA_127).filter(|v| *v != 0xFFFF).unwrap_or(0);
    Ok(vec![
        RegisterWrite {
            address: ctl.addr(W_GRA as u16),
            values,
            point: "WGra+HzStr+HzStop",
        },
        RegisterWrite {
            address: ctl.addr(MOD_ENA_127 as u16),
            values: vec![bits | 1],
            point: "ModEna",
        },
    ])
}

/// The droop in force on a 127 block, as the per-unit droop at `nominal`.
pub fn decode_127(regs: &[u16], nominal: NominalHz) -> FreqDroopState {
    let b = Block::new(127, regs);
    let w_gra = b.scaled_u16(W_GRA, W_GRA_SF);
    FreqDroopState {
        enabled: b
            .u16(MOD_ENA_127)
            .is_some_and(|v| v != 0xFFFF && v & 1 == 1),
        db_of_hz: b.scaled_i16(3, HZ_STR_STOP_SF),
        db_uf_hz: None,
        k_of: w_gra
            .filter(|g| *g > 0.0)
            .map(|g| 100.0 / (g * nominal.hz())),
        k_uf: None,
        rsp_tms_s: None,
        nominal: Some(nominal),
    }
}

/// Plans putting `droop` (2030.5 FreqDroopType: dead bands in thousandths of Hz, k in
/// thousandths, openLoopTms in hundredths of a second) on the 711 model `ctl`.
pub fn plan_freq_droop(
    ctl: &ModelRef,
    regs: &[u16],
    droop: &FreqDroop,
) -> Result<DroopPlan, SunSpecError> {
    if ctl.id != 711 {
        return Err(SunSpecError::MissingModel {
            wanted: "frequency droop (711)",
            present: vec![ctl.id],
        });
    }
    let b = Block::new(711, regs);
    b.ensure_len(FIXED_LEN)?;
    let n_ctl = usize::from(b.u16(N_CTL).unwrap_or(0)).min(64);
    b.ensure_len(FIXED_LEN + n_ctl * CTL_LEN)?;
    let index = (0..n_ctl)
        .find(|i| b.u16(FIXED_LEN + i * CTL_LEN + READ_ONLY) != Some(1))
        .ok_or_else(|| SunSpecError::OutOfRange {
            what: format!("model 711 has no writable control ({n_ctl} controls, all read-only)"),
        })?;
    let (db_sf, k_sf, t_sf) = (b.sf(DB_SF), b.sf(K_SF), b.sf(RSP_TMS_SF));
    let mut values = Vec::with_capacity(VALUES_LEN);
    values.extend(raw32(f64::from(droop.db_of) / 1000.0, db_sf, "DbOf")?);
    values.extend(raw32(f64::from(droop.db_uf) / 1000.0, db_sf, "DbUf")?);
    values.push(raw16(f64::from(droop.k_of) / 1000.0, k_sf, "KOf")?);
    values.push(raw16(f64::from(droop.k_uf) / 1000.0, k_sf, "KUf")?);
    values.extend(raw32(
        f64::from(droop.open_loop_tms) / 100.0,
        t_sf,
        "RspTms",
    )?);
    let w = |off: usize, values: Vec<u16>, point| RegisterWrite {
        address: ctl.addr(off as u16),
        values,
        point,
    };
    let start = FIXED_LEN + index * CTL_LEN;
    let index = index as u16 + 1;
    Ok(DroopPlan {
        values: w(start, values.clone(), "Ctl.DbOf+DbUf+KOf+KUf+RspTms"),
        adopt: w(ADPT_CTL_REQ, vec![index], "AdptCtlReq"),
        enable: w(ENA, vec![1], "Ena"),
        index,
        expected: values,
    })
}

/// Judges the block read after the adoption request of `plan`.
pub fn adoption(regs: &[u16], plan: &DroopPlan) -> Adoption {
    match Block::new(711, regs).u16(ADPT_CTL_RSLT) {
        Some(2) => Adoption::Failed,
        Some(1) if regs.get(FIXED_LEN..FIXED_LEN + VALUES_LEN) == Some(&plan.expected[..]) => {
            Adoption::Completed
        }
        _ => Adoption::Pending,
    }
}

/// The write that turns frequency droop off: 711 `Ena` 0 (the controls stay), 127
/// `ModEna` bit 0 cleared (the parameters stay).
pub fn plan_clear(ctl: &ModelRef, regs: &[u16]) -> Result<Vec<RegisterWrite>, SunSpecError> {
    if ctl.id == 127 {
        let b = Block::new(127, regs);
        b.ensure_len(LEN_127)?;
        let bits = b.u16(MOD_ENA_127).filter(|v| *v != 0xFFFF).unwrap_or(0);
        return Ok(vec![RegisterWrite {
            address: ctl.addr(MOD_ENA_127 as u16),
            values: vec![bits & !1],
            point: "ModEna",
        }]);
    }
    Block::new(ctl.id, regs).ensure_len(FIXED_LEN)?;
    Ok(vec![RegisterWrite {
        address: ctl.addr(ENA as u16),
        values: vec![0],
        point: "Ena",
    }])
}

/// The droop in force on a 711 block (control 1).
pub fn decode(regs: &[u16]) -> FreqDroopState {
    let b = Block::new(711, regs);
    let at = FIXED_LEN;
    let u32s = |off: usize, sf: usize| {
        b.u32(off)
            .zip(b.sf(sf))
            .map(|(v, sf)| f64::from(v) * 10f64.powi(i32::from(sf)))
    };
    FreqDroopState {
        enabled: b.u16(ENA) == Some(1),
        db_of_hz: u32s(at, DB_SF),
        db_uf_hz: u32s(at + 2, DB_SF),
        k_of: b.scaled_u16(at + 4, K_SF),
        k_uf: b.scaled_u16(at + 5, K_SF),
        rsp_tms_s: u32s(at + 6, RSP_TMS_SF),
        nominal: None,
    }
}

/// The name of an `AdptCtlRslt` value, for messages.
pub fn result_name(regs: &[u16]) -> String {
    match Block::new(711, regs).u16(ADPT_CTL_RSLT) {
        Some(0) => "IN_PROGRESS".into(),
        Some(1) => "COMPLETED".into(),
        Some(2) => "FAILED".into(),
        Some(v) => format!("{v} (not a SunSpec result)"),
        None => "not implemented".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 711 block with 2 controls, control 1 read-only; Db_SF -3, K_SF -3, RspTms_SF -2.
    fn block() -> Vec<u16> {
        let mut r = vec![0u16; FIXED_LEN + 2 * CTL_LEN];
        r[0] = 711;
        r[1] = (r.len() - 2) as u16;
        r[N_CTL] = 2;
        r[DB_SF] = (-3i16) as u16;
        r[K_SF] = (-3i16) as u16;
        r[RSP_TMS_SF] = (-2i16) as u16;
        r[FIXED_LEN + READ_ONLY] = 1;
        r
    }

    /// AS/NZS 4777.2-like: ±0.15 Hz dead band, 5 % droop (k 0.05), 1 s response.
    const DROOP: FreqDroop = FreqDroop {
        db_of: 150,
        db_uf: 150,
        k_of: 50,
        k_uf: 50,
        open_loop_tms: 100,
    };

    #[test]
    fn a_droop_is_written_to_the_writable_control_adopted_then_enabled() {
        let mut regs = block();
        let ctl = ModelRef {
            id: 711,
            start: 2000,
            len: regs.len() as u16 - 2,
        };
        let plan = plan_freq_droop(&ctl, &regs, &DROOP).unwrap();
        assert_eq!(plan.index, 2);
        assert_eq!(plan.values.address, 2000 + 24);
        assert_eq!(plan.values.values, vec![0, 150, 0, 150, 50, 50, 0, 100]);
        assert_eq!((plan.adopt.address, &plan.adopt.values), (2003, &vec![2]));
        assert_eq!((plan.enable.address, &plan.enable.values), (2002, &vec![1]));
        regs[24..32].copy_from_slice(&plan.values.values);
        assert_eq!(adoption(&regs, &plan), Adoption::Pending);
        regs[ADPT_CTL_RSLT] = 1;
        assert_eq!(
            adoption(&regs, &plan),
            Adoption::Pending,
            "control 1 still old"
        );
        let copy: Vec<u16> = regs[24..32].to_vec();
        regs[14..22].copy_from_slice(&copy);
        assert_eq!(adoption(&regs, &plan), Adoption::Completed);
        regs[ENA] = 1;
        let st = decode(&regs);
        assert!(st.enabled);
        assert_eq!(st.db_of_hz, Some(0.15));
        assert_eq!(st.k_uf, Some(0.05));
        assert_eq!(st.rsp_tms_s, Some(1.0));
        regs[ADPT_CTL_RSLT] = 2;
        assert_eq!(adoption(&regs, &plan), Adoption::Failed);
        assert_eq!(result_name(&regs), "FAILED");
        let off = plan_clear(&ctl, &regs).unwrap();
        assert_eq!((off[0].address, &off[0].values), (2002, &vec![0]));
        // All read-only, an unknown scale factor, another model: refused.
        regs[FIXED_LEN + CTL_LEN + READ_ONLY] = 1;
        assert!(plan_freq_droop(&ctl, &regs, &DROOP).is_err());
        regs[FIXED_LEN + CTL_LEN + READ_ONLY] = 0;
        regs[K_SF] = 0x8000;
        assert!(matches!(
            plan_freq_droop(&ctl, &regs, &DROOP),
            Err(SunSpecError::UnknownScaleFactor { .. })
        ));
        let other = ModelRef { id: 134, ..ctl };
        assert!(plan_freq_droop(&other, &regs, &DROOP).is_err());
    }

    /// A 127 block: WGra_SF -2, HzStrStop_SF -3, ModEna with bit 1 (another function)
    /// set.
    fn block_127() -> Vec<u16> {
        let mut r = vec![0u16; 12];
        r[0] = 127;
        r[1] = 10;
        r[MOD_ENA_127] = 2;
        r[W_GRA_SF] = (-2i16) as u16;
        r[HZ_STR_STOP_SF] = (-3i16) as u16;
        r
    }

    #[test]
    fn a_per_unit_droop_becomes_127_parameters_at_the_nominal_frequency() {
        let droop = FreqDroop {
            db_of: 150,
            db_uf: 200,
            k_of: 50,
            k_uf: 40,
            open_loop_tms: 100,
        };
        let ctl = ModelRef {
            id: 127,
            start: 300,
            len: 10,
        };
        let mut regs = block_127();
        // 50 Hz assumed: 100 % over 0.05 × 50 = 2.5 Hz is 40 %/Hz; dBOF 0.150 Hz.
        let w = plan_127(&ctl, &regs, &droop, NominalHz::Assumed).unwrap();
        let got: Vec<(u16, Vec<u16>)> = w.iter().map(|w| (w.address, w.values.clone())).collect();
        assert_eq!(got, vec![(302, vec![4000, 150, 150]), (306, vec![3])]);
        for x in &w {
            let off = usize::from(x.address - 300);
            regs[off..off + x.values.len()].copy_from_slice(&x.values);
        }
        let st = decode_127(&regs, NominalHz::Assumed);
        assert!(st.enabled);
        assert_eq!(st.db_of_hz, Some(0.15));
        assert!((st.k_of.unwrap() - 0.05).abs() < 1e-12);
        assert_eq!((st.db_uf_hz, st.k_uf, st.rsp_tms_s), (None, None, None));
        // 60 Hz from 121: 100 / 3 = 33.333… %/Hz, rounded to 33.33.
        let w = plan_127(&ctl, &block_127(), &droop, NominalHz::Ecp(60.0)).unwrap();
        assert_eq!(w[0].values, vec![3333, 150, 150]);
        // kOF 0.030 at 50 Hz: 66.666… rounds up to 66.67.
        let p = FreqWattParams::of_droop(&FreqDroop { k_of: 30, ..droop }, 50.0).unwrap();
        assert!((p.w_gra_pct_per_hz - 200.0 / 3.0).abs() < 1e-9);
        let w = plan_127(
            &ctl,
            &block_127(),
            &FreqDroop { k_of: 30, ..droop },
            NominalHz::Assumed,
        )
        .unwrap();
        assert_eq!(w[0].values[0], 6667);
        // No droop of 0, no other model, no unknown scale factor; off clears bit 0 only.
        assert!(FreqWattParams::of_droop(&FreqDroop { k_of: 0, ..droop }, 50.0).is_none());
        assert!(
            plan_127(
                &ctl,
                &block_127(),
                &FreqDroop { k_of: 0, ..droop },
                NominalHz::Assumed
            )
            .is_err()
        );
        assert!(
            plan_127(
                &ModelRef { id: 711, ..ctl },
                &block_127(),
                &droop,
                NominalHz::Assumed
            )
            .is_err()
        );
        let mut no_sf = block_127();
        no_sf[W_GRA_SF] = 0x8000;
        assert!(matches!(
            plan_127(&ctl, &no_sf, &droop, NominalHz::Assumed),
            Err(SunSpecError::UnknownScaleFactor {
                model: 127,
                point: "WGra"
            })
        ));
        let off = plan_clear(&ctl, &regs).unwrap();
        assert_eq!((off[0].address, off[0].values.clone()), (306, vec![2]));
    }

    #[test]
    fn the_nominal_frequency_is_121_ecp_nom_hz_or_50_hz() {
        let mut m121 = vec![0u16; 32];
        m121[0] = 121;
        m121[ECP_NOM_HZ] = 6000;
        m121[ECP_NOM_HZ_SF] = (-2i16) as u16;
        assert_eq!(NominalHz::of_121(Some(&m121)), NominalHz::Ecp(60.0));
        assert_eq!(NominalHz::of_121(Some(&m121)).hz(), 60.0);
        m121[ECP_NOM_HZ] = 0xFFFF;
        assert_eq!(NominalHz::of_121(Some(&m121)), NominalHz::Assumed);
        assert_eq!(NominalHz::of_121(None), NominalHz::Assumed);
        assert_eq!(NominalHz::Assumed.hz(), 50.0);
        assert!(
            NominalHz::Assumed
                .text()
                .contains("50 Hz assumed (AS/NZS 4777.2")
        );
        assert_eq!(
            NominalHz::Ecp(60.0).text(),
            "nominal 60.00 Hz (model 121 ECPNomHz)"
        );
    }
}
