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
//! The 1xx series' 127 (freq-watt parameters: a gradient in % of the captured power
//! per Hz) and 134 (a freq-watt curve) are not written: turning 2030.5's per-unit
//! droop into them needs the nominal frequency, which no 1xx model states.

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

/// The models that carry opModFreqDroop.
pub const FREQ_DROOP_MODELS: [u16; 1] = [711];

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
    let sf = sf.ok_or(SunSpecError::UnknownScaleFactor { model: 711, point })?;
    let r = (value / 10f64.powi(i32::from(sf))).round();
    if !r.is_finite() || !(0.0..65535.0).contains(&r) {
        return Err(SunSpecError::OutOfRange {
            what: format!("{point} {value} does not fit model 711 with scale factor {sf}"),
        });
    }
    Ok(r as u16)
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

/// The write that turns frequency droop off: `Ena` 0 (the controls stay).
pub fn plan_clear(ctl: &ModelRef, regs: &[u16]) -> Result<Vec<RegisterWrite>, SunSpecError> {
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
}
