//! Volt-var and volt-watt curves on SunSpec inverters: model 126 (static volt-VAR) and
//! model 132 (volt-watt), the 1xx-series curve models (layouts from pysunspec2's
//! model_126.json and model_132.json). Pure: plans the register writes from the model
//! block as read; the device writes them and reads the model back to confirm
//! ([`super::Device::set_curve`]).
//!
//! Both models are laid out alike: a fixed part (ID, L, ActCrv, ModEna, WinTms, RvrtTms,
//! RmpTms, NCrv, NPt, V_SF, DeptRef_SF, RmpIncDec_SF: 12 registers) then NCrv curves of
//! 54 registers (ActPt, DeptRef, V1, Y1 … V20, Y20, CrvNam, three ramp points,
//! ReadOnly). V is in % of VRef (scaled by V_SF); Y (VAr or W) in % of the DeptRef
//! quantity (scaled by DeptRef_SF). csipd writes the first curve that is not read-only
//! (its ActPt, DeptRef and points, in one write), then selects it (ActCrv) and enables
//! the mode (ModEna bit 0), in that order, so the inverter never runs a half-written
//! curve. Nothing else is written (never ID, L, NCrv, NPt or a scale factor).
//!
//! Model 131 (watt-PF) and 134 (freq-watt) share the fixed part (131: W_SF, PF_SF;
//! 134: Hz_SF, W_SF at the V_SF and DeptRef_SF places) and have no DeptRef: a curve is
//! ActPt then the (x, y) pairs. 134's curves are 58 registers (ActPt, Hz1, W1 … Hz20,
//! W20, CrvNam, the ramp, snapshot and WRef points, ReadOnly last): Hz in Hz (Hz_SF),
//! W in % of WRef (W_SF; WRef defaults to WMax, so %setMaxW), both as 2030.5's
//! freq-watt DERCurve has them.
//!
//! The 7xx-series curve models (705 volt-var, 706 volt-watt) have their own layout and
//! an adoption step: [`super::curves_7xx`]. An inverter with both series gets the 7xx
//! one ([`curve_models`]), as the active power limit prefers 704 over 123.

use super::sunspec::{Block, ModelRef, RegisterWrite, SunSpecError};
use crate::schedule::ControlMode;

/// Registers before the first curve.
const FIXED_LEN: usize = 12;
/// Registers of one curve.
const CURVE_LEN: usize = 54;
const ACT_CRV: usize = 2;
const MOD_ENA: usize = 3;
const N_CRV: usize = 7;
const N_PT: usize = 8;
const V_SF: usize = 9;
const DEPT_REF_SF: usize = 10;
/// Within a curve (126, 132; 131 has no DeptRef and a Pad last: [`read_only`]).
const READ_ONLY: usize = 53;

/// `ReadOnly` within a curve of `model`.
fn read_only(model: u16) -> usize {
    match model {
        131 => 52,
        134 => 57,
        _ => READ_ONLY,
    }
}

/// Registers of one curve of `model` (134's has more points after its pairs).
fn curve_len(model: u16) -> usize {
    if model == 134 { 58 } else { CURVE_LEN }
}
/// SunSpec allows up to 20 points per curve in these models.
const MAX_POINTS: usize = 20;

/// The dependent value's SunSpec point name (for messages).
fn y_name(mode: ControlMode) -> &'static str {
    match mode {
        ControlMode::VoltWatt => "W",
        ControlMode::WattPF => "PF",
        ControlMode::FreqWatt => "W",
        _ => "VAr",
    }
}

/// The model a curve mode needs, named for messages.
pub fn wanted_model(mode: ControlMode) -> &'static str {
    match mode {
        ControlMode::VoltVar => "volt-var (126 or 705)",
        ControlMode::VoltWatt => "volt-watt (132 or 706)",
        ControlMode::WattVar => "watt-var (712)",
        ControlMode::WattPF => "watt-PF (131)",
        ControlMode::FreqWatt => "freq-watt (134)",
        _ => "a curve model (126, 131, 132, 134, 705, 706 or 712)",
    }
}

/// The SunSpec models that carry a curve mode, in order of preference: volt-var 705
/// then 126, volt-watt 706 then 132, watt-var 712 (the 1xx series has no watt-var
/// model), watt-PF 131 (the 7xx series has no watt-PF model), freq-watt 134 (nor a
/// freq-watt curve model: 711 is the droop); none for the other modes.
pub fn curve_models(mode: ControlMode) -> &'static [u16] {
    match mode {
        ControlMode::VoltVar => &[705, 126],
        ControlMode::VoltWatt => &[706, 132],
        ControlMode::WattVar => &[712],
        ControlMode::WattPF => &[131],
        ControlMode::FreqWatt => &[134],
        _ => &[],
    }
}

/// One point: voltage in % of the reference voltage (for a watt-var or watt-PF curve:
/// active power in % of WMax, signed, negative absorbing; for a freq-watt curve: the
/// frequency in Hz, as both 2030.5's curve and SunSpec 134 state it), the dependent
/// value in % of the curve's [`Curve::dept_ref`] quantity (for watt-PF: cos φ in
/// percent, negative when absorbing vars, as SunSpec 131's signed PF; for freq-watt:
/// active power in % of setMaxW, SunSpec 134's % of WRef).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurvePoint {
    pub v_pct: f64,
    pub y_pct: f64,
}

/// A curve to put on an inverter. Serde: the scheduler keeps the resolved curve as the
/// opModVoltVar / opModVoltWatt value of the active controls (stored with them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Curve {
    /// [`ControlMode::VoltVar`], [`ControlMode::VoltWatt`], [`ControlMode::WattVar`] or
    /// [`ControlMode::WattPF`].
    pub mode: ControlMode,
    /// In increasing voltage (watt-var: active power), 1 to 20 of them.
    pub points: Vec<CurvePoint>,
    /// SunSpec `DeptRef`: model 126 1 %WMax, 2 %VArMax, 3 %VArAval; model 132 1 %WMax,
    /// 2 %WAval; 0 for watt-PF (model 131 has none); 1 (%WMax) for freq-watt (model 134
    /// has none: its W is % of WRef, WMax by default).
    pub dept_ref: u16,
}

impl Curve {
    /// The dependent value (% of the `dept_ref` quantity) at `v_pct` % of the reference
    /// voltage: linear between points, flat beyond the first and last (as inverters
    /// run a volt-var or volt-watt curve, IEEE 1547-2018 5.3.3 and AS/NZS 4777.2).
    /// `None` for a curve without points.
    pub fn y_pct_at(&self, v_pct: f64) -> Option<f64> {
        let first = self.points.first()?;
        let last = self.points.last()?;
        if v_pct <= first.v_pct {
            return Some(first.y_pct);
        }
        if v_pct >= last.v_pct {
            return Some(last.y_pct);
        }
        self.points.windows(2).find_map(|w| {
            let (a, b) = (w[0], w[1]);
            (v_pct >= a.v_pct && v_pct <= b.v_pct && b.v_pct > a.v_pct)
                .then(|| a.y_pct + (b.y_pct - a.y_pct) * (v_pct - a.v_pct) / (b.v_pct - a.v_pct))
        })
    }
}

/// The curve set as read from a model block: the selected curve's points (raw values
/// scaled back to %), whether the mode is enabled.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveState {
    /// 126/132 `ModEna` bit 0; 705/706 `Ena`.
    pub enabled: bool,
    /// 126/132 `ActCrv` (1-based; 0 none). 705/706: 1, the curve the inverter runs
    /// (curve 1 holds the adopted settings there).
    pub active_curve: u16,
    pub points: Vec<CurvePoint>,
    /// In the 126/132 code of [`Curve::dept_ref`] (a 705/706 `DeptRef` is read back
    /// into it: its enum counts from 0, the 1xx one from 1).
    pub dept_ref: Option<u16>,
}

/// Checks a curve's points against a model that takes 1 to `n_pt` of them: a count in
/// range and voltages that increase.
pub(super) fn check_points(model: u16, curve: &Curve, n_pt: usize) -> Result<(), SunSpecError> {
    let n = curve.points.len();
    if n == 0 || n > n_pt {
        return Err(SunSpecError::OutOfRange {
            what: format!("a curve of {n} points; model {model} takes 1 to {n_pt}"),
        });
    }
    if curve.points.windows(2).any(|w| w[1].v_pct <= w[0].v_pct) {
        return Err(SunSpecError::OutOfRange {
            what: "curve voltages must increase from point to point".into(),
        });
    }
    Ok(())
}

/// The raw (V, Y) register pairs of a curve's points under the model's scale factors.
/// `x_signed`: the x point is an int16 (712 `W`), not a uint16 voltage.
pub(super) fn raw_points(
    model: u16,
    curve: &Curve,
    v_sf: Option<i16>,
    y_sf: Option<i16>,
    x_signed: bool,
) -> Result<Vec<u16>, SunSpecError> {
    let mut values = Vec::with_capacity(2 * curve.points.len());
    let (x_name, x_range) = match (x_signed, curve.mode) {
        (true, _) => ("W", (-32767.0, 32767.0)),
        (false, ControlMode::FreqWatt) => ("Hz", (0.0, 65534.0)),
        (false, _) => ("V", (0.0, 65534.0)),
    };
    for p in &curve.points {
        values.push(scaled_raw(model, p.v_pct, v_sf, x_name, x_range)?);
        values.push(scaled_raw(
            model,
            p.y_pct,
            y_sf,
            y_name(curve.mode),
            (-32767.0, 32767.0),
        )?);
    }
    Ok(values)
}

fn scaled_raw(
    model: u16,
    value: f64,
    sf: Option<i16>,
    point: &'static str,
    range: (f64, f64),
) -> Result<u16, SunSpecError> {
    let sf = sf.ok_or(SunSpecError::UnknownScaleFactor { model, point })?;
    let raw = (value / 10f64.powi(i32::from(sf))).round();
    if value.is_nan() || raw < range.0 || raw > range.1 {
        return Err(SunSpecError::OutOfRange {
            what: format!("{point} {value} does not fit model {model} with scale factor {sf}"),
        });
    }
    Ok(raw as i64 as u16)
}

/// The writes that put `curve` on the inverter, given the model block as read.
pub fn plan_curve(
    ctl: &ModelRef,
    regs: &[u16],
    curve: &Curve,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    let wanted = wanted_model(curve.mode);
    let model =
        curve
            .mode
            .curve_model()
            .filter(|m| *m == ctl.id)
            .ok_or(SunSpecError::MissingModel {
                wanted,
                present: vec![ctl.id],
            })?;
    let b = Block::new(model, regs);
    b.ensure_len(FIXED_LEN)?;
    let n_crv = usize::from(b.u16(N_CRV).unwrap_or(0));
    let n_pt = usize::from(b.u16(N_PT).unwrap_or(0)).min(MAX_POINTS);
    let curve_len = curve_len(model);
    b.ensure_len(FIXED_LEN + n_crv * curve_len)?;
    check_points(model, curve, n_pt)?;
    let n = curve.points.len();
    // The first curve the inverter lets us write (ReadOnly 1 = READONLY; a
    // not-implemented ReadOnly counts as writable).
    let index = (0..n_crv)
        .find(|i| b.u16(FIXED_LEN + i * curve_len + read_only(model)) != Some(1))
        .ok_or_else(|| SunSpecError::OutOfRange {
            what: format!("model {model} has no writable curve ({n_crv} curves, all read-only)"),
        })?;
    let start = FIXED_LEN + index * curve_len;
    let (v_sf, y_sf) = (b.sf(V_SF), b.sf(DEPT_REF_SF));
    let mut values = vec![n as u16];
    if model == 131 {
        // No DeptRef; W signed (% of WMax, W_SF), PF a signed cos φ (PF_SF).
        let as_pf = Curve {
            points: curve
                .points
                .iter()
                .map(|p| CurvePoint {
                    v_pct: p.v_pct,
                    y_pct: p.y_pct / 100.0,
                })
                .collect(),
            ..curve.clone()
        };
        values.extend(raw_points(model, &as_pf, v_sf, y_sf, true)?);
    } else if model == 134 {
        // No DeptRef: Hz (Hz_SF) and W in % of WRef (W_SF) pairs.
        values.extend(raw_points(model, curve, v_sf, y_sf, false)?);
    } else {
        values.push(curve.dept_ref);
        values.extend(raw_points(model, curve, v_sf, y_sf, false)?);
    }
    let w = |off: usize, values: Vec<u16>, point| RegisterWrite {
        address: ctl.addr(off as u16),
        values,
        point,
    };
    Ok(vec![
        w(start, values, "ActPt+DeptRef (not 131)+curve points"),
        w(ACT_CRV, vec![index as u16 + 1], "ActCrv"),
        w(MOD_ENA, vec![1], "ModEna"),
    ])
}

/// The write that turns a 126/131/132/134 mode off: `ModEna` bit 0 cleared (the curves
/// stay as they are, so the factory curve is not lost).
pub fn plan_clear(ctl: &ModelRef, regs: &[u16]) -> Result<Vec<RegisterWrite>, SunSpecError> {
    if !matches!(ctl.id, 126 | 131 | 132 | 134) {
        return Err(SunSpecError::OutOfRange {
            what: format!("model {} is not a 126/131/132/134 curve model", ctl.id),
        });
    }
    let b = Block::new(ctl.id, regs);
    b.ensure_len(FIXED_LEN)?;
    // Not implemented (0xFFFF) reads as no bits set.
    let bits = b.u16(MOD_ENA).unwrap_or(0);
    Ok(vec![RegisterWrite {
        address: ctl.addr(MOD_ENA as u16),
        values: vec![bits & !1],
        point: "ModEna",
    }])
}

/// The selected curve of a 126/132 block.
pub fn decode_curve(model: u16, regs: &[u16]) -> Option<CurveState> {
    let b = Block::new(model, regs);
    let active = b.u16(ACT_CRV)?;
    let enabled = b.u16(MOD_ENA).is_some_and(|v| v & 1 == 1);
    let mut state = CurveState {
        enabled,
        active_curve: active,
        points: Vec::new(),
        dept_ref: None,
    };
    if active == 0 {
        return Some(state);
    }
    let start = FIXED_LEN + usize::from(active - 1) * curve_len(model);
    let act_pt = usize::from(b.u16(start)?).min(MAX_POINTS);
    if model == 134 {
        // Hz1, W1, …: no DeptRef (W is % of WRef).
        state.dept_ref = Some(1);
        for i in 0..act_pt {
            state.points.push(CurvePoint {
                v_pct: b.scaled_u16(start + 1 + 2 * i, V_SF)?,
                y_pct: b.scaled_i16(start + 2 + 2 * i, DEPT_REF_SF)?,
            });
        }
        return Some(state);
    }
    if model == 131 {
        // W1, PF1, …: signed W, PF as cos φ (back to percent).
        state.dept_ref = Some(0);
        for i in 0..act_pt {
            state.points.push(CurvePoint {
                v_pct: b.scaled_i16(start + 1 + 2 * i, V_SF)?,
                y_pct: b.scaled_i16(start + 2 + 2 * i, DEPT_REF_SF)? * 100.0,
            });
        }
        return Some(state);
    }
    state.dept_ref = b.u16(start + 1);
    for i in 0..act_pt {
        state.points.push(CurvePoint {
            v_pct: b.scaled_u16(start + 2 + 2 * i, V_SF)?,
            y_pct: b.scaled_i16(start + 3 + 2 * i, DEPT_REF_SF)?,
        });
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model 126 block with two curves of 4 points; curve 1 read-only.
    fn block_126() -> Vec<u16> {
        let mut r = vec![0u16; FIXED_LEN + 2 * CURVE_LEN];
        r[0] = 126;
        r[1] = (r.len() - 2) as u16;
        r[N_CRV] = 2;
        r[N_PT] = 4;
        r[V_SF] = 0;
        r[DEPT_REF_SF] = 0;
        r[FIXED_LEN + READ_ONLY] = 1;
        r
    }

    fn curve() -> Curve {
        // The shape of the standard's example volt-var curve (AS/NZS 4777.2 values).
        Curve {
            mode: ControlMode::VoltVar,
            points: [(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)]
                .into_iter()
                .map(|(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                .collect(),
            dept_ref: 2,
        }
    }

    #[test]
    fn a_four_point_volt_var_curve_goes_to_the_first_writable_curve() {
        let mut regs = block_126();
        regs[V_SF] = (-1i16) as u16;
        let ctl = ModelRef {
            id: 126,
            start: 40100,
            len: regs.len() as u16 - 2,
        };
        let writes = plan_curve(&ctl, &regs, &curve()).unwrap();
        let curve2 = 40100 + (FIXED_LEN + CURVE_LEN) as u16;
        assert_eq!(writes[0].address, curve2);
        assert_eq!(
            writes[0].values,
            vec![4, 2, 904, 44, 956, 0, 1043, 0, 1100, (-60i16) as u16]
        );
        assert_eq!((writes[1].address, &writes[1].values), (40102, &vec![2]));
        assert_eq!((writes[2].address, &writes[2].values), (40103, &vec![1]));
        // Applied, it reads back as the same curve.
        for w in &writes {
            let off = usize::from(w.address - 40100);
            regs[off..off + w.values.len()].copy_from_slice(&w.values);
        }
        let state = decode_curve(126, &regs).unwrap();
        assert!(state.enabled);
        assert_eq!(state.active_curve, 2);
        assert_eq!(state.dept_ref, Some(2));
        assert_eq!(state.points.len(), 4);
        assert!((state.points[3].v_pct - 110.0).abs() < 1e-9);
        assert_eq!(state.points[3].y_pct, -60.0);
    }

    #[test]
    fn a_curve_is_linear_between_points_and_flat_beyond() {
        let c = curve();
        assert_eq!(c.y_pct_at(80.0), Some(44.0));
        assert_eq!(c.y_pct_at(100.0), Some(0.0));
        assert!((c.y_pct_at(93.0).unwrap() - 22.0).abs() < 1e-9);
        assert!((c.y_pct_at(107.15).unwrap() + 30.0).abs() < 1e-9);
        assert_eq!(c.y_pct_at(120.0), Some(-60.0));
        let empty = Curve {
            points: Vec::new(),
            ..curve()
        };
        assert_eq!(empty.y_pct_at(100.0), None);
    }

    #[test]
    fn curves_that_do_not_fit_are_refused_with_the_reason() {
        let regs = block_126();
        let ctl = ModelRef {
            id: 126,
            start: 0,
            len: regs.len() as u16 - 2,
        };
        let mut five = curve();
        five.points.push(CurvePoint {
            v_pct: 115.0,
            y_pct: -60.0,
        });
        let err = plan_curve(&ctl, &regs, &five).unwrap_err().to_string();
        assert!(err.contains("1 to 4"), "{err}");
        let mut down = curve();
        down.points.swap(0, 1);
        assert!(plan_curve(&ctl, &regs, &down).is_err());
        let mut volt_watt = curve();
        volt_watt.mode = ControlMode::VoltWatt;
        assert!(
            plan_curve(&ctl, &regs, &volt_watt)
                .unwrap_err()
                .to_string()
                .contains("volt-watt")
        );
        let mut all_read_only = regs.clone();
        all_read_only[FIXED_LEN + CURVE_LEN + READ_ONLY] = 1;
        assert!(
            plan_curve(&ctl, &all_read_only, &curve())
                .unwrap_err()
                .to_string()
                .contains("read-only")
        );
    }

    /// Watt-PF on 131: no DeptRef, signed W and PF, ReadOnly at 52.
    #[test]
    fn a_watt_pf_curve_goes_to_131_without_dept_ref() {
        let mut regs = vec![0u16; FIXED_LEN + 2 * CURVE_LEN];
        regs[0] = 131;
        regs[N_CRV] = 2;
        regs[N_PT] = 4;
        regs[V_SF] = 0;
        regs[DEPT_REF_SF] = (-2i16) as u16;
        regs[FIXED_LEN + 52] = 1;
        let ctl = ModelRef {
            id: 131,
            start: 500,
            len: regs.len() as u16 - 2,
        };
        let curve = Curve {
            mode: ControlMode::WattPF,
            points: [(0.0, 100.0), (50.0, 100.0), (100.0, -90.0)]
                .into_iter()
                .map(|(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                .collect(),
            dept_ref: 0,
        };
        let w = plan_curve(&ctl, &regs, &curve).unwrap();
        let c2 = 500 + (FIXED_LEN + CURVE_LEN) as u16;
        assert_eq!(w[0].address, c2);
        assert_eq!(
            w[0].values,
            vec![3, 0, 100, 50, 100, 100, (-90i16) as u16],
            "ActPt, then W and PF pairs (PF_SF -2)"
        );
        assert_eq!((w[1].address, &w[1].values), (502, &vec![2]));
        assert_eq!((w[2].address, &w[2].values), (503, &vec![1]));
        for x in &w {
            let off = usize::from(x.address - 500);
            regs[off..off + x.values.len()].copy_from_slice(&x.values);
        }
        let st = decode_curve(131, &regs).unwrap();
        assert!(st.enabled);
        assert_eq!(st.active_curve, 2);
        assert_eq!(st.points, curve.points);
        // A volt-var curve is not 131's.
        let mut vv = curve.clone();
        vv.mode = ControlMode::VoltVar;
        assert!(plan_curve(&ctl, &regs, &vv).is_err());
        // Curve 2 read-only too: nowhere to write.
        regs[FIXED_LEN + CURVE_LEN + 52] = 1;
        assert!(plan_curve(&ctl, &regs, &curve).is_err());
    }

    /// Freq-watt on 134: no DeptRef, Hz (Hz_SF) and W (% of WRef, W_SF) pairs, 58
    /// registers per curve, ReadOnly at 57.
    #[test]
    fn a_freq_watt_curve_goes_to_134() {
        let len = curve_len(134);
        assert_eq!(len, 58);
        let mut regs = vec![0u16; FIXED_LEN + 2 * len];
        regs[0] = 134;
        regs[N_CRV] = 2;
        regs[N_PT] = 4;
        regs[V_SF] = (-2i16) as u16;
        regs[DEPT_REF_SF] = 0;
        regs[FIXED_LEN + 57] = 1;
        let ctl = ModelRef {
            id: 134,
            start: 700,
            len: regs.len() as u16 - 2,
        };
        // AS/NZS 4777.2's over-frequency response: full power to 50.25 Hz, none at 52.
        let curve = Curve {
            mode: ControlMode::FreqWatt,
            points: [(50.25, 100.0), (52.0, 0.0)]
                .into_iter()
                .map(|(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                .collect(),
            dept_ref: 1,
        };
        let w = plan_curve(&ctl, &regs, &curve).unwrap();
        let c2 = 700 + (FIXED_LEN + len) as u16;
        assert_eq!(
            (w[0].address, w[0].values.clone()),
            (c2, vec![2, 5025, 100, 5200, 0])
        );
        assert_eq!((w[1].address, &w[1].values), (702, &vec![2]));
        assert_eq!((w[2].address, &w[2].values), (703, &vec![1]));
        for x in &w {
            let off = usize::from(x.address - 700);
            regs[off..off + x.values.len()].copy_from_slice(&x.values);
        }
        let st = decode_curve(134, &regs).unwrap();
        assert!(st.enabled);
        assert_eq!(st.active_curve, 2);
        assert_eq!(st.points, curve.points);
        // A negative W (absorbing) fits the int16; a volt-var curve is not 134's.
        let mut down = curve.clone();
        down.points[1].y_pct = -20.0;
        let w = plan_curve(&ctl, &regs, &down).unwrap();
        assert_eq!(w[0].values[4], (-20i16) as u16);
        let mut vv = curve.clone();
        vv.mode = ControlMode::VoltVar;
        assert!(plan_curve(&ctl, &regs, &vv).is_err());
        let off = plan_clear(&ctl, &regs).unwrap();
        assert_eq!((off[0].address, off[0].values.clone()), (703, vec![0]));
        // Curve 2 read-only too: nowhere to write.
        regs[FIXED_LEN + len + 57] = 1;
        assert!(
            plan_curve(&ctl, &regs, &curve)
                .unwrap_err()
                .to_string()
                .contains("read-only")
        );
    }
}
