//! Volt-var and volt-watt curves on the 7xx-series (IEEE 1547-2018) curve models: 705
//! (DER volt-var) and 706 (DER volt-watt), layouts from pysunspec2's model_705.json and
//! model_706.json. Pure: plans the register writes from the model block as read and
//! judges the block read back; the device does the IO ([`super::Device::set_curve`]).
//!
//! Both models start alike: ID, L, `Ena`, `AdptCrvReq`, `AdptCrvRslt`, `NPt`, `NCrv`,
//! `RvrtTms` (2), `RvrtRem` (2), `RvrtCrv`, `V_SF`, `DeptRef_SF`, `RspTms_SF` (15
//! registers), then `NCrv` stored curves. A 705 curve is `ActPt`, `DeptRef`, `Pri`,
//! `VRef`, `VRefAuto`, `VRefAutoEna`, `VRefAutoTms`, `RspTms` (2), `ReadOnly` (10
//! registers) then `NPt` points (`V`, `Var`); a 706 curve is `ActPt`, `DeptRef`,
//! `RspTms` (2), `ReadOnly` (5) then `NPt` points (`V`, `W`). V is in % of the nominal
//! voltage (scaled by `V_SF`), the dependent value in % of the `DeptRef` quantity
//! (scaled by `DeptRef_SF`).
//!
//! Unlike 126/132 the inverter does not run a stored curve by index: curve 1 is
//! read-only and shows the settings in force, and a curve is put into force by writing
//! its index to `AdptCrvReq`; the inverter checks it and copies it into curve 1,
//! reporting `AdptCrvRslt` (0 IN_PROGRESS, 1 COMPLETED, 2 FAILED). So csipd writes the
//! first writable curve (`ActPt` and `DeptRef`, then the points: two writes, as the
//! registers between them include read-only ones), reads them back, requests the
//! adoption, waits until curve 1 holds the curve with `AdptCrvRslt` COMPLETED, and only
//! then enables the mode (`Ena` 1): the inverter never runs a half-written curve.
//! `AdptCrvReq` is not read back (inverters may reset it to 0 once done). Nothing
//! else is written (never ID, L, NPt, NCrv, a scale factor, a revert timer).

use super::curves::{Curve, CurvePoint, CurveState, check_points, raw_points, wanted_model};
use super::sunspec::{Block, ModelRef, RegisterWrite, SunSpecError};
use crate::schedule::ControlMode;

const ENA: usize = 2;
const ADPT_CRV_REQ: usize = 3;
const ADPT_CRV_RSLT: usize = 4;
const N_PT: usize = 5;
const N_CRV: usize = 6;
const V_SF: usize = 12;
const DEPT_REF_SF: usize = 13;
/// Registers before the first curve.
const FIXED_LEN: usize = 15;
/// A sanity bound on `NPt` (1547-2018 asks for at least 4; pysunspec2's examples use
/// up to 10): a bigger count is a broken block, not a curve to fill.
const MAX_POINTS: usize = 64;

/// `AdptCrvRslt` values.
const RSLT_IN_PROGRESS: u16 = 0;
const RSLT_COMPLETED: u16 = 1;
const RSLT_FAILED: u16 = 2;

/// Where a model's curve parts are.
struct Layout {
    mode: ControlMode,
    /// Registers of a curve before its points.
    head: usize,
    /// `ReadOnly`, within a curve.
    read_only: usize,
}

fn layout(model: u16) -> Option<Layout> {
    match model {
        705 => Some(Layout {
            mode: ControlMode::VoltVar,
            head: 10,
            read_only: 9,
        }),
        706 => Some(Layout {
            mode: ControlMode::VoltWatt,
            head: 5,
            read_only: 4,
        }),
        _ => None,
    }
}

/// The 7xx `DeptRef` for a curve's 1xx code ([`Curve::dept_ref`]): 705 0 W_MAX_PCT, 1
/// VAR_MAX_PCT, 2 VAR_AVAL_PCT (3 VA_MAX_PCT has no 1xx code); 706 0 W_MAX_PCT, 1
/// W_AVAL_PCT. The 1xx enums list the same quantities from 1.
fn dept_ref_7xx(model: u16, code_1xx: u16) -> Result<u16, SunSpecError> {
    let max = if model == 705 { 3 } else { 2 };
    if !(1..=max).contains(&code_1xx) {
        return Err(SunSpecError::OutOfRange {
            what: format!("curve DeptRef {code_1xx} has no model {model} equivalent"),
        });
    }
    Ok(code_1xx - 1)
}

/// What putting a curve on a 705/706 inverter takes: the curve writes, the adoption
/// request, then the enable (written by the device in that order, each step confirmed
/// before the next).
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePlan {
    /// `ActPt`+`DeptRef`, then the points, of the writable curve.
    pub curve: Vec<RegisterWrite>,
    /// `AdptCrvReq` = the curve's 1-based index.
    pub adopt: RegisterWrite,
    /// `Ena` = 1.
    pub enable: RegisterWrite,
    /// The curve written (1-based).
    pub index: u16,
    /// What curve 1 holds once the inverter adopted it: `ActPt`, `DeptRef`, then the
    /// raw point pairs.
    expected: Vec<u16>,
}

/// Plans putting `curve` on the 705/706 model `ctl`, given its block as read.
pub fn plan_curve(ctl: &ModelRef, regs: &[u16], curve: &Curve) -> Result<CurvePlan, SunSpecError> {
    let model = ctl.id;
    let lay = layout(model)
        .filter(|l| l.mode == curve.mode)
        .ok_or(SunSpecError::MissingModel {
            wanted: wanted_model(curve.mode),
            present: vec![model],
        })?;
    let b = Block::new(model, regs);
    b.ensure_len(FIXED_LEN)?;
    let n_crv = usize::from(b.u16(N_CRV).unwrap_or(0));
    let n_pt = usize::from(b.u16(N_PT).unwrap_or(0)).min(MAX_POINTS);
    let crv_len = lay.head + 2 * n_pt;
    b.ensure_len(FIXED_LEN + n_crv * crv_len)?;
    check_points(model, curve, n_pt)?;
    // The first curve the inverter lets us write (ReadOnly 1 = R; curve 1, the one in
    // force, is read-only on every conforming inverter).
    let index = (0..n_crv)
        .find(|i| b.u16(FIXED_LEN + i * crv_len + lay.read_only) != Some(1))
        .ok_or_else(|| SunSpecError::OutOfRange {
            what: format!("model {model} has no writable curve ({n_crv} curves, all read-only)"),
        })?;
    let start = FIXED_LEN + index * crv_len;
    let head = vec![
        curve.points.len() as u16,
        dept_ref_7xx(model, curve.dept_ref)?,
    ];
    let points = raw_points(model, curve, b.sf(V_SF), b.sf(DEPT_REF_SF))?;
    let w = |off: usize, values: Vec<u16>, point| RegisterWrite {
        address: ctl.addr(off as u16),
        values,
        point,
    };
    let mut expected = head.clone();
    expected.extend(&points);
    let index = index as u16 + 1;
    Ok(CurvePlan {
        curve: vec![
            w(start, head, "Crv.ActPt+Crv.DeptRef"),
            w(start + lay.head, points, "Crv.Pt (V, Var or W)"),
        ],
        adopt: w(ADPT_CRV_REQ, vec![index], "AdptCrvReq"),
        enable: w(ENA, vec![1], "Ena"),
        index,
        expected,
    })
}

/// Where an adoption stands, judged from the block read after `AdptCrvReq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// `AdptCrvRslt` COMPLETED and curve 1 holds the planned curve.
    Completed,
    /// `AdptCrvRslt` FAILED: the inverter refused the curve.
    Failed,
    /// IN_PROGRESS, or COMPLETED while curve 1 does not hold the curve yet (a result
    /// left from an earlier adoption): read again.
    Pending,
}

/// Judges the block read after the adoption request of `plan`.
pub fn adoption(model: u16, regs: &[u16], plan: &CurvePlan) -> Adoption {
    let Some(lay) = layout(model) else {
        return Adoption::Failed;
    };
    let b = Block::new(model, regs);
    match b.u16(ADPT_CRV_RSLT) {
        Some(RSLT_FAILED) => Adoption::Failed,
        Some(RSLT_COMPLETED) => {
            let head = regs.get(FIXED_LEN..FIXED_LEN + 2);
            let pts =
                regs.get(FIXED_LEN + lay.head..FIXED_LEN + lay.head + plan.expected.len() - 2);
            match (head, pts) {
                (Some(h), Some(p)) if *h == plan.expected[..2] && *p == plan.expected[2..] => {
                    Adoption::Completed
                }
                _ => Adoption::Pending,
            }
        }
        // IN_PROGRESS, not implemented, or a value SunSpec does not define: not yet.
        _ => Adoption::Pending,
    }
}

/// The write that turns a 705/706 mode off: `Ena` 0 (the curves stay as they are).
pub fn plan_clear(ctl: &ModelRef, regs: &[u16]) -> Result<Vec<RegisterWrite>, SunSpecError> {
    if layout(ctl.id).is_none() {
        return Err(SunSpecError::OutOfRange {
            what: format!("model {} is not a 705/706 curve model", ctl.id),
        });
    }
    Block::new(ctl.id, regs).ensure_len(FIXED_LEN)?;
    Ok(vec![RegisterWrite {
        address: ctl.addr(ENA as u16),
        values: vec![0],
        point: "Ena",
    }])
}

/// The curve in force on a 705/706 block (curve 1) and whether the mode is enabled.
/// `dept_ref` comes back in the 1xx code of [`Curve::dept_ref`].
pub fn decode_curve(model: u16, regs: &[u16]) -> Option<CurveState> {
    let lay = layout(model)?;
    let b = Block::new(model, regs);
    let enabled = b.u16(ENA)? == 1;
    let n_pt = usize::from(b.u16(N_PT).unwrap_or(0)).min(MAX_POINTS);
    let mut state = CurveState {
        enabled,
        active_curve: 1,
        points: Vec::new(),
        dept_ref: None,
    };
    if b.u16(N_CRV).unwrap_or(0) == 0 {
        state.active_curve = 0;
        return Some(state);
    }
    let act_pt = usize::from(b.u16(FIXED_LEN)?).min(n_pt);
    state.dept_ref = b.u16(FIXED_LEN + 1).map(|d| d + 1);
    for i in 0..act_pt {
        let at = FIXED_LEN + lay.head + 2 * i;
        state.points.push(CurvePoint {
            v_pct: b.scaled_u16(at, V_SF)?,
            y_pct: b.scaled_i16(at + 1, DEPT_REF_SF)?,
        });
    }
    Some(state)
}

/// The name of an `AdptCrvRslt` value, for messages.
pub fn result_name(regs: &[u16], model: u16) -> String {
    match Block::new(model, regs).u16(ADPT_CRV_RSLT) {
        Some(RSLT_IN_PROGRESS) => "IN_PROGRESS".into(),
        Some(RSLT_COMPLETED) => "COMPLETED".into(),
        Some(RSLT_FAILED) => "FAILED".into(),
        Some(v) => format!("{v} (not a SunSpec result)"),
        None => "not implemented".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 705 block of 3 curves of 4 points, curve 1 read-only and in force.
    fn block_705() -> Vec<u16> {
        let crv = 10 + 2 * 4;
        let mut r = vec![0u16; FIXED_LEN + 3 * crv];
        r[0] = 705;
        r[1] = (r.len() - 2) as u16;
        r[N_PT] = 4;
        r[N_CRV] = 3;
        r[V_SF] = (-1i16) as u16;
        r[DEPT_REF_SF] = 0;
        r[FIXED_LEN + 9] = 1;
        r
    }

    fn volt_var() -> Curve {
        Curve {
            mode: ControlMode::VoltVar,
            points: [(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)]
                .into_iter()
                .map(|(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                .collect(),
            dept_ref: 2,
        }
    }

    fn apply(regs: &mut [u16], start: u16, writes: &[RegisterWrite]) {
        for w in writes {
            let off = usize::from(w.address - start);
            regs[off..off + w.values.len()].copy_from_slice(&w.values);
        }
    }

    #[test]
    fn a_four_point_volt_var_curve_is_written_adopted_then_enabled() {
        let mut regs = block_705();
        let ctl = ModelRef {
            id: 705,
            start: 40300,
            len: regs.len() as u16 - 2,
        };
        let plan = plan_curve(&ctl, &regs, &volt_var()).unwrap();
        let curve2 = 40300 + FIXED_LEN as u16 + 18;
        assert_eq!(plan.index, 2);
        assert_eq!(plan.curve[0].address, curve2);
        assert_eq!(plan.curve[0].values, vec![4, 1], "ActPt 4, VAR_MAX_PCT");
        assert_eq!(plan.curve[1].address, curve2 + 10);
        assert_eq!(
            plan.curve[1].values,
            vec![904, 44, 956, 0, 1043, 0, 1100, (-60i16) as u16]
        );
        assert_eq!((plan.adopt.address, &plan.adopt.values), (40303, &vec![2]));
        assert_eq!(
            (plan.enable.address, &plan.enable.values),
            (40302, &vec![1])
        );
        apply(&mut regs, 40300, &plan.curve);
        apply(&mut regs, 40300, std::slice::from_ref(&plan.adopt));
        // Requested, not adopted yet.
        assert_eq!(adoption(705, &regs, &plan), Adoption::Pending);
        // A COMPLETED left from before, curve 1 still old: not done.
        regs[ADPT_CRV_RSLT] = RSLT_COMPLETED;
        assert_eq!(adoption(705, &regs, &plan), Adoption::Pending);
        // The inverter copies curve 2 into curve 1.
        let (c1, c2) = (FIXED_LEN, FIXED_LEN + 18);
        let copy: Vec<u16> = regs[c2..c2 + 9].to_vec();
        regs[c1..c1 + 9].copy_from_slice(&copy);
        regs[c2 + 10..c2 + 18]
            .to_vec()
            .iter()
            .enumerate()
            .for_each(|(i, v)| regs[c1 + 10 + i] = *v);
        assert_eq!(adoption(705, &regs, &plan), Adoption::Completed);
        apply(&mut regs, 40300, std::slice::from_ref(&plan.enable));
        let state = decode_curve(705, &regs).unwrap();
        assert!(state.enabled);
        assert_eq!(state.active_curve, 1);
        assert_eq!(state.dept_ref, Some(2), "back in the 1xx code");
        assert_eq!(state.points.len(), 4);
        assert!((state.points[0].v_pct - 90.4).abs() < 1e-9);
        assert_eq!(state.points[3].y_pct, -60.0);
        regs[ADPT_CRV_RSLT] = RSLT_FAILED;
        assert_eq!(adoption(705, &regs, &plan), Adoption::Failed);
        assert_eq!(result_name(&regs, 705), "FAILED");
        // Clearing writes Ena 0 only.
        let clear = plan_clear(&ctl, &regs).unwrap();
        assert_eq!((clear[0].address, &clear[0].values), (40302, &vec![0]));
    }

    #[test]
    fn a_volt_watt_curve_goes_to_706_with_its_own_layout() {
        let crv = 5 + 2 * 4;
        let mut regs = vec![0u16; FIXED_LEN + 2 * crv];
        regs[0] = 706;
        regs[N_PT] = 4;
        regs[N_CRV] = 2;
        regs[V_SF] = 0;
        regs[DEPT_REF_SF] = 0;
        regs[FIXED_LEN + 4] = 1;
        let ctl = ModelRef {
            id: 706,
            start: 0,
            len: regs.len() as u16 - 2,
        };
        let curve = Curve {
            mode: ControlMode::VoltWatt,
            points: vec![
                CurvePoint {
                    v_pct: 106.0,
                    y_pct: 100.0,
                },
                CurvePoint {
                    v_pct: 110.0,
                    y_pct: 20.0,
                },
            ],
            dept_ref: 1,
        };
        let plan = plan_curve(&ctl, &regs, &curve).unwrap();
        let c2 = (FIXED_LEN + crv) as u16;
        assert_eq!(plan.curve[0].address, c2);
        assert_eq!(plan.curve[0].values, vec![2, 0], "ActPt 2, W_MAX_PCT");
        assert_eq!(plan.curve[1].address, c2 + 5);
        assert_eq!(plan.curve[1].values, vec![106, 100, 110, 20]);
        // The wrong mode for the model, a DeptRef 706 has not, all curves read-only.
        let mut vv = curve.clone();
        vv.mode = ControlMode::VoltVar;
        let e = plan_curve(&ctl, &regs, &vv).unwrap_err().to_string();
        assert!(e.contains("volt-var"), "{e}");
        let mut bad_ref = curve.clone();
        bad_ref.dept_ref = 3;
        assert!(plan_curve(&ctl, &regs, &bad_ref).is_err());
        regs[FIXED_LEN + crv + 4] = 1;
        let e = plan_curve(&ctl, &regs, &curve).unwrap_err().to_string();
        assert!(e.contains("read-only"), "{e}");
        // A block shorter than its NCrv × curve length says so.
        assert!(matches!(
            plan_curve(&ctl, &regs[..20], &curve),
            Err(SunSpecError::ShortModel { .. })
        ));
    }
}
