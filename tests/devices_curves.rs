//! DER functions beyond the limits against a foreign peer (the pymodbus SunSpec server
//! of `tests/peers/sunspec_sim.py`, laid out from pysunspec2's model definitions):
//! volt-var and volt-watt curves on a 7xx inverter (705/706, with the adoption step),
//! fixed power factor and fixed var on 123 and 704, the reactive power target
//! (opModTargetVar) on 704, a watt-var curve on 712 (adopted like 705/706), a watt-PF
//! curve on 131, a frequency droop on 711 (adopted like the 7xx curves) or, without
//! 711, on 127 (with the nominal frequency of 121 `ECPNomHz`, or 50 Hz), a freq-watt
//! curve on 134, enter-service settings on 703. The registers are asserted at the
//! device. (126/132 curves: `devices_sunspec.rs`.)

mod devices_support;

use std::rc::Rc;

use csipd::devices::curves::{Curve, CurvePoint};
use csipd::devices::{
    Bus, BusParams, Device, DeviceError, DeviceParams, Excitation, FixedPf, ModelRef,
};
use csipd::schedule::ControlMode;
use csipd::sep2::FreqDroop;
use devices_support::{PEER_TIMEOUT, start_peer};
use serde_json::json;

fn tcp_bus(port: u16) -> Rc<Bus> {
    let mut p = BusParams::tcp("127.0.0.1", port);
    p.timeout = PEER_TIMEOUT;
    p.retries = 1;
    Rc::new(Bus::new(p))
}

fn points(pts: &[(f64, f64)]) -> Vec<CurvePoint> {
    pts.iter()
        .map(|&(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
        .collect()
}

/// The standard's example volt-var curve: 4 points (AS/NZS 4777.2 shape), % VArMax.
fn volt_var() -> Curve {
    Curve {
        mode: ControlMode::VoltVar,
        points: points(&[(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)]),
        dept_ref: 2,
    }
}

/// Volt-watt: full power to 106 % V, 20 % of WMax at 110 %.
fn volt_watt() -> Curve {
    Curve {
        mode: ControlMode::VoltWatt,
        points: points(&[(106.0, 100.0), (110.0, 20.0)]),
        dept_ref: 1,
    }
}

/// A 7xx inverter: 701, 702, 704, 705 (3 curves of 4 points, curve 1 the read-only
/// one in force), 706 (2 curves of 4 points). `extra` goes on the device (e.g.
/// `"adopt": "fail"`).
fn der7xx(unit: u8, extra: serde_json::Value) -> serde_json::Value {
    let curves = |n_crv: u32, first: serde_json::Value| {
        let mut v = json!({"Ena": 0, "AdptCrvReq": 0, "AdptCrvRslt": 1, "NPt": 4,
                           "NCrv": n_crv, "V_SF": -1, "DeptRef_SF": 0, "RspTms_SF": 0,
                           "Crv[0].ReadOnly": 1});
        for i in 1..n_crv {
            v[format!("Crv[{i}].ReadOnly")] = json!(0);
        }
        v.as_object_mut()
            .unwrap()
            .extend(first.as_object().unwrap().clone());
        v
    };
    let mut dev = json!({"unit": unit, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "Seven Hundred", "Md": "DER-7"}},
        {"id": 701, "values": {"ACType": 3, "St": 1, "InvSt": 3, "ConnSt": 1,
                               "W": 300, "W_SF": 1, "Var": 0, "Var_SF": 0, "LNV": 2400, "V_SF": -1}},
        {"id": 702, "values": {"WMaxRtg": 8000, "W_SF": 0, "VAMaxRtg": 8000, "VA_SF": 0}},
        {"id": 704, "values": {"PFWInjEna": 0, "PFWAbsEna": 0, "WMaxLimPctEna": 0,
                               "VarSetEna": 0, "VarSetMod": 0, "PF_SF": -2,
                               "WMaxLimPct_SF": -2, "VarSetPct_SF": -2, "VarSet_SF": 0,
                               "PFWInj.PF": 100, "PFWInj.Ext": 0,
                               "PFWAbs.PF": 100, "PFWAbs.Ext": 0}},
        {"id": 705, "values": curves(3, json!({"Crv[0].ActPt": 2, "Crv[0].DeptRef": 1,
                                               "Crv[0].Pt[0].V": 950, "Crv[0].Pt[0].Var": 10,
                                               "Crv[0].Pt[1].V": 1050, "Crv[0].Pt[1].Var": -10}))},
        {"id": 706, "values": curves(2, json!({"Crv[0].ActPt": 2, "Crv[0].DeptRef": 0,
                                               "Crv[0].Pt[0].V": 1100, "Crv[0].Pt[0].W": 100,
                                               "Crv[0].Pt[1].V": 1200, "Crv[0].Pt[1].W": 0}))}
    ]});
    dev.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    dev
}

/// A 1xx inverter with 123 (OutPFSet_SF -3, VArPct_SF -1) and 126.
fn der1xx(unit: u8) -> serde_json::Value {
    json!({"unit": unit, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "One Hundred"}},
        {"id": 103, "values": {"W": 3000, "W_SF": 0, "Hz": 5000, "Hz_SF": -2, "St": 4}},
        {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 100, "WMaxLimPct_SF": 0, "WMaxLim_Ena": 0,
                               "OutPFSet": 1000, "OutPFSet_Ena": 0, "VArMaxPct": 0,
                               "VArPct_Mod": 0, "VArPct_Ena": 0, "OutPFSet_SF": -3, "VArPct_SF": -1}},
        {"id": 126, "values": {"ActCrv": 1, "ModEna": 1, "NCrv": 1, "NPt": 4, "V_SF": 0,
                               "DeptRef_SF": 0, "curve[0].ActPt": 2, "curve[0].DeptRef": 2,
                               "curve[0].V1": 95, "curve[0].VAr1": 20, "curve[0].V2": 105,
                               "curve[0].VAr2": -20, "curve[0].ReadOnly": 0}}
    ]})
}

/// The writes the peer saw: (address, values).
fn writes(peer: &devices_support::Peer) -> Vec<(u16, Vec<u16>)> {
    peer.writes()
        .iter()
        .map(|w| {
            (
                w["address"].as_u64().unwrap() as u16,
                w["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u16)
                    .collect(),
            )
        })
        .collect()
}

async fn block(dev: &mut Device, m: ModelRef) -> Vec<u16> {
    dev.read_registers(m.start, m.total_len())
        .await
        .expect("read model")
}

fn model(dev: &Device, id: u16) -> ModelRef {
    *dev.map().expect("scanned").find(id).expect("model scanned")
}

#[test]
fn volt_var_and_volt_watt_curves_are_adopted_on_705_and_706() {
    let peer = start_peer(
        "curves7xx",
        &json!({"devices": [der7xx(1, json!({}))]}),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv7", 1));
        let map = dev.scan().await.expect("scan").clone();
        for mode in [
            ControlMode::VoltVar,
            ControlMode::VoltWatt,
            ControlMode::FixedPFInjectW,
            ControlMode::FixedPFAbsorbW,
            ControlMode::FixedVar,
        ] {
            assert!(map.offers(mode), "{mode:?}");
        }
        let (m705, m706) = (model(&dev, 705), model(&dev, 706));

        let state = dev.set_curve(&volt_var()).await.expect("volt-var adopted");
        assert!(state.enabled);
        assert_eq!(state.active_curve, 1);
        assert_eq!(state.dept_ref, Some(2));
        assert_eq!(state.points.len(), 4);
        assert!((state.points[2].v_pct - 104.3).abs() < 1e-9);
        assert_eq!(state.points[3].y_pct, -60.0);
        // 705 curves are 10 + 2 × 4 registers; curve 2 starts at 15 + 18.
        let (a, c2) = (m705.start, m705.start + 15 + 18);
        assert_eq!(
            writes(&peer),
            vec![
                (c2, vec![4, 1]), // ActPt 4, DeptRef VAR_MAX_PCT
                (
                    c2 + 10,
                    vec![904, 44, 956, 0, 1043, 0, 1100, (-60i16) as u16]
                ),
                (a + 3, vec![2]), // AdptCrvReq 2
                (a + 2, vec![1]), // Ena
            ]
        );
        // At the device: curve 1 holds the adopted curve, the request reads 0 again,
        // AdptCrvRslt COMPLETED, curve 1 still read-only.
        let r = block(&mut dev, m705).await;
        assert_eq!(&r[2..5], &[1, 0, 1], "Ena, AdptCrvReq, AdptCrvRslt");
        assert_eq!(&r[15..17], &[4, 1]);
        assert_eq!(
            &r[25..33],
            &[904, 44, 956, 0, 1043, 0, 1100, (-60i16) as u16]
        );
        assert_eq!(r[24], 1, "curve 1 ReadOnly");

        let before = writes(&peer).len();
        let state = dev
            .set_curve(&volt_watt())
            .await
            .expect("volt-watt adopted");
        assert!(state.enabled);
        assert_eq!(state.dept_ref, Some(1));
        let (b, c2) = (m706.start, m706.start + 15 + 13);
        assert_eq!(
            writes(&peer)[before..],
            vec![
                (c2, vec![2, 0]), // ActPt 2, DeptRef W_MAX_PCT
                (c2 + 5, vec![1060, 100, 1100, 20]),
                (b + 3, vec![2]),
                (b + 2, vec![1]),
            ]
        );
        let r = block(&mut dev, m706).await;
        assert_eq!(&r[15..17], &[2, 0]);
        assert_eq!(&r[20..24], &[1060, 100, 1100, 20]);

        // Clearing volt-var: Ena 0, the adopted curve stays.
        let before = writes(&peer).len();
        let state = dev
            .clear_curve(ControlMode::VoltVar)
            .await
            .expect("volt-var off");
        assert!(!state.enabled);
        assert_eq!(state.points.len(), 4);
        assert_eq!(writes(&peer)[before..], vec![(a + 2, vec![0])]);
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
}

#[test]
fn an_adoption_in_progress_is_waited_for() {
    let peer = start_peer(
        "curves7xx-slow",
        &json!({"devices": [der7xx(1, json!({"adopt": "slow"}))]}),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv7", 1));
        dev.scan().await.expect("scan");
        let m706 = model(&dev, 706);
        let reads_before = dev.stats().link.requests;
        let state = dev
            .set_curve(&volt_watt())
            .await
            .expect("adopted after a wait");
        assert!(state.enabled);
        assert_eq!(state.points.len(), 2);
        // Read before: 1; after the curve writes: 1; after the request: IN_PROGRESS
        // twice, then COMPLETED; after Ena: 1. Writes: 2 + 1 + 1.
        assert_eq!(dev.stats().link.requests - reads_before, 1 + 1 + 3 + 1 + 4);
        let r = block(&mut dev, m706).await;
        assert_eq!((r[2], r[4]), (1, 1), "Ena, AdptCrvRslt COMPLETED");
        assert_eq!(&r[20..24], &[1060, 100, 1100, 20]);
    });
}

#[test]
fn a_curve_the_inverter_refuses_is_not_enabled() {
    let peer = start_peer(
        "curves7xx-fail",
        &json!({"devices": [der7xx(1, json!({"adopt": "fail"}))]}),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv7", 1));
        dev.scan().await.expect("scan");
        let m705 = model(&dev, 705);
        let e = dev.set_curve(&volt_var()).await.unwrap_err();
        assert!(
            matches!(
                &e,
                DeviceError::CurveNotAdopted { model: 705, curve: 2, result, .. }
                    if result == "FAILED"
            ),
            "{e}"
        );
        assert!(e.to_string().contains("did not adopt curve 2"), "{e}");
        // The enable was never written.
        assert!(writes(&peer).iter().all(|(a, _)| *a != m705.start + 2));
        let r = block(&mut dev, m705).await;
        assert_eq!(r[2], 0, "Ena still 0");
        assert_eq!(&r[15..17], &[2, 1], "curve 1 unchanged");
    });
}

#[test]
fn fixed_power_factor_and_var_on_704() {
    let peer = start_peer("pf704", &json!({"devices": [der7xx(1, json!({}))]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv7", 1));
        dev.scan().await.expect("scan");
        let m = model(&dev, 704);
        let inject = FixedPf {
            pf: 0.9,
            excitation: Excitation::UnderExcited,
        };
        let st = dev
            .set_fixed_pf(ControlMode::FixedPFInjectW, Some(inject))
            .await
            .expect("PF while injecting");
        assert_eq!(
            (st.model, st.enabled, st.setting),
            (704, true, Some(inject))
        );
        let absorb = FixedPf {
            pf: 0.8,
            excitation: Excitation::OverExcited,
        };
        let st = dev
            .set_fixed_pf(ControlMode::FixedPFAbsorbW, Some(absorb))
            .await
            .expect("PF while absorbing");
        assert!(st.enabled);
        let st = dev.set_fixed_var_pct(Some(-30.0)).await.expect("fixed var");
        assert_eq!((st.model, st.enabled, st.pct), (704, true, Some(-30.0)));
        let r = block(&mut dev, m).await;
        assert_eq!((r[2], r[8]), (1, 1), "PFWInjEna, PFWAbsEna");
        assert_eq!(&r[59..61], &[90, 1], "PFWInj: 0.90 under-excited");
        assert_eq!(&r[63..65], &[80, 0], "PFWAbs: 0.80 over-excited");
        assert_eq!((r[35], r[36]), (1, 1), "VarSetEna, VarSetMod VAR_MAX_PCT");
        assert_eq!(r[42], (-3000i16) as u16, "VarSetPct -30.00 %");
        // Disabling writes the enables alone.
        let before = writes(&peer).len();
        dev.set_fixed_pf(ControlMode::FixedPFInjectW, None)
            .await
            .expect("PF off");
        let st = dev.set_fixed_var_pct(None).await.expect("var off");
        assert!(!st.enabled);
        assert_eq!(
            writes(&peer)[before..],
            vec![(m.start + 2, vec![0]), (m.start + 35, vec![0])]
        );
        let r = block(&mut dev, m).await;
        assert_eq!((r[2], r[8], r[35]), (0, 1, 0));
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
}

/// A 7xx inverter with 701, 704 and 712 (2 curves of 4 points, curve 1 read-only).
fn der712(unit: u8) -> serde_json::Value {
    json!({"unit": unit, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "Watt Var Co"}},
        {"id": 701, "values": {"ACType": 3, "St": 1, "InvSt": 3, "ConnSt": 1,
                               "W": 300, "W_SF": 1, "Var": 0, "Var_SF": 0, "LNV": 2400, "V_SF": -1}},
        {"id": 704, "values": {"VarSetEna": 0, "VarSetMod": 0, "PF_SF": -2, "WMaxLimPct_SF": -2,
                               "VarSetPct_SF": -2, "VarSet_SF": 0}},
        {"id": 712, "values": {"Ena": 0, "AdptCrvReq": 0, "AdptCrvRslt": 1, "NPt": 4, "NCrv": 2,
                               "W_SF": 0, "DeptRef_SF": 0, "Crv[0].ReadOnly": 1,
                               "Crv[1].ReadOnly": 0, "Crv[0].ActPt": 2, "Crv[0].DeptRef": 1,
                               "Crv[0].Pt[0].W": 50, "Crv[0].Pt[0].Var": 0,
                               "Crv[0].Pt[1].W": 100, "Crv[0].Pt[1].Var": -10}}
    ]})
}

/// A watt-var curve as the 2030.5 example shapes it: absorbing vars as export rises.
fn watt_var() -> Curve {
    Curve {
        mode: ControlMode::WattVar,
        points: points(&[(-100.0, 30.0), (0.0, 0.0), (50.0, 0.0), (100.0, -44.0)]),
        dept_ref: 2,
    }
}

#[test]
fn a_watt_var_curve_is_adopted_on_712() {
    let peer = start_peer("wattvar712", &json!({"devices": [der712(1)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv7", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(map.offers(ControlMode::WattVar));
        assert!(!map.offers(ControlMode::VoltVar));
        let m = model(&dev, 712);
        let state = dev.set_curve(&watt_var()).await.expect("watt-var adopted");
        assert!(state.enabled);
        assert_eq!(state.dept_ref, Some(2));
        let pts: Vec<(f64, f64)> = state.points.iter().map(|p| (p.v_pct, p.y_pct)).collect();
        assert_eq!(
            pts,
            vec![(-100.0, 30.0), (0.0, 0.0), (50.0, 0.0), (100.0, -44.0)]
        );
        // 712: 14 registers before the curves, curves of 4 + 2 × 4; curve 2 at 14 + 12.
        let (a, c2) = (m.start, m.start + 14 + 12);
        let pts_raw = vec![(-100i16) as u16, 30, 0, 0, 50, 0, 100, (-44i16) as u16];
        assert_eq!(
            writes(&peer),
            vec![
                (c2, vec![4, 1]), // ActPt 4, DeptRef VAR_MAX_PCT
                (c2 + 4, pts_raw.clone()),
                (a + 3, vec![2]), // AdptCrvReq 2
                (a + 2, vec![1]), // Ena
            ]
        );
        // At the device: curve 1 holds it, AdptCrvRslt COMPLETED, still read-only.
        let r = block(&mut dev, m).await;
        assert_eq!((r[2], r[4]), (1, 1), "Ena, AdptCrvRslt");
        assert_eq!(&r[14..16], &[4, 1]);
        assert_eq!(&r[18..26], &pts_raw[..]);
        assert_eq!(r[17], 1, "curve 1 ReadOnly");
        let before = writes(&peer).len();
        let state = dev
            .clear_curve(ControlMode::WattVar)
            .await
            .expect("watt-var off");
        assert!(!state.enabled);
        assert_eq!(writes(&peer)[before..], vec![(a + 2, vec![0])]);
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
}

#[test]
fn a_watt_pf_curve_is_written_to_131() {
    let dev131 = json!({"unit": 1, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "One Hundred"}},
        {"id": 103, "values": {"W": 3000, "W_SF": 0, "Hz": 5000, "Hz_SF": -2, "St": 4}},
        {"id": 131, "values": {"ActCrv": 1, "ModEna": 0, "NCrv": 2, "NPt": 4, "W_SF": 0,
                               "PF_SF": -2, "curve[0].ActPt": 2, "curve[0].W1": 0,
                               "curve[0].PF1": 100, "curve[0].W2": 100, "curve[0].PF2": 100,
                               "curve[0].ReadOnly": 1, "curve[1].ReadOnly": 0}}
    ]});
    let peer = start_peer("wattpf131", &json!({"devices": [dev131]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv1", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(map.offers(ControlMode::WattPF));
        assert!(!map.offers(ControlMode::WattVar));
        let m = model(&dev, 131);
        // cos φ 1 to half power, then 0.90 absorbing vars at full power.
        let curve = Curve {
            mode: ControlMode::WattPF,
            points: points(&[(0.0, 100.0), (50.0, 100.0), (100.0, -90.0)]),
            dept_ref: 0,
        };
        let st = dev.set_curve(&curve).await.expect("watt-PF on 131");
        assert!(st.enabled);
        assert_eq!(st.active_curve, 2);
        assert_eq!(st.points, curve.points);
        // 12 registers before the curves, 54 per curve: curve 2 at 66.
        let raw = vec![3, 0, 100, 50, 100, 100, (-90i16) as u16];
        assert_eq!(
            writes(&peer),
            vec![
                (m.start + 66, raw.clone()),
                (m.start + 2, vec![2]), // ActCrv
                (m.start + 3, vec![1]), // ModEna
            ]
        );
        let r = block(&mut dev, m).await;
        assert_eq!(&r[66..73], &raw[..]);
        assert_eq!(r[12 + 52], 1, "curve 1 still read-only");
        let before = writes(&peer).len();
        let st = dev.clear_curve(ControlMode::WattPF).await.expect("off");
        assert!(!st.enabled);
        assert_eq!(writes(&peer)[before..], vec![(m.start + 3, vec![0])]);
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
}

#[test]
fn a_frequency_droop_is_adopted_on_711() {
    let dev711 = json!({"unit": 1, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "Droop Co"}},
        {"id": 701, "values": {"ACType": 3, "St": 1, "InvSt": 3, "ConnSt": 1,
                               "W": 300, "W_SF": 1, "Var": 0, "Var_SF": 0, "LNV": 2400, "V_SF": -1}},
        {"id": 711, "values": {"Ena": 0, "AdptCtlReq": 0, "AdptCtlRslt": 1, "NCtl": 2,
                               "Db_SF": -3, "K_SF": -3, "RspTms_SF": -2,
                               "Ctl[0].DbOf": 36, "Ctl[0].DbUf": 36, "Ctl[0].KOf": 50,
                               "Ctl[0].KUf": 50, "Ctl[0].RspTms": 500,
                               "Ctl[0].ReadOnly": 1, "Ctl[1].ReadOnly": 0}}
    ]});
    let peer = start_peer("droop711", &json!({"devices": [dev711]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv7", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(map.offers(ControlMode::FreqDroop));
        let m = model(&dev, 711);
        // ±0.15 Hz dead band, 5 % droop, 1 s open-loop time (2030.5 units).
        let droop = FreqDroop {
            db_of: 150,
            db_uf: 150,
            k_of: 50,
            k_uf: 40,
            open_loop_tms: 100,
        };
        let st = dev
            .set_freq_droop(Some(&droop))
            .await
            .expect("droop adopted");
        assert!(st.enabled);
        assert_eq!(
            (st.db_of_hz, st.k_uf, st.rsp_tms_s),
            (Some(0.15), Some(0.04), Some(1.0))
        );
        // 14 registers before the controls, 10 per control: control 2 at 24.
        let raw = vec![0, 150, 0, 150, 50, 40, 0, 100];
        assert_eq!(
            writes(&peer),
            vec![
                (m.start + 24, raw.clone()),
                (m.start + 3, vec![2]), // AdptCtlReq
                (m.start + 2, vec![1]), // Ena
            ]
        );
        let r = block(&mut dev, m).await;
        assert_eq!(&r[14..22], &raw[..], "control 1 holds the droop");
        assert_eq!(r[23], 1, "control 1 still read-only");
        let before = writes(&peer).len();
        let st = dev.set_freq_droop(None).await.expect("off");
        assert!(!st.enabled);
        assert_eq!(writes(&peer)[before..], vec![(m.start + 2, vec![0])]);
        // A droop of 0 the inverter refuses: not enabled, said as not adopted.
        let e = dev
            .set_freq_droop(Some(&FreqDroop { k_of: 0, ..droop }))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AdptCrvRslt FAILED") || e.contains("FAILED"),
            "{e}"
        );
        let r = block(&mut dev, m).await;
        assert_eq!(r[2], 0, "Ena still 0");
    });
}

#[test]
fn enter_service_settings_are_written_to_703() {
    use csipd::sep2::EnterService;
    let dev703 = json!({"unit": 1, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "Enter Co"}},
        {"id": 701, "values": {"ACType": 3, "St": 1, "InvSt": 3, "ConnSt": 1,
                               "W": 300, "W_SF": 1, "Var": 0, "Var_SF": 0, "LNV": 2400, "V_SF": -1}},
        {"id": 703, "values": {"ES": 1, "ESVHi": 1100, "ESVLo": 880, "ESHzHi": 5015,
                               "ESHzLo": 4750, "ESDlyTms": 60, "ESRndTms": 0, "ESRmpTms": 360,
                               "V_SF": -1, "Hz_SF": -2}}
    ]});
    let peer = start_peer("es703", &json!({"devices": [dev703]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv7", 1));
        dev.scan().await.expect("scan");
        let m = model(&dev, 703);
        // 2030.5 units: low voltage 90.00 %, delay 120.00 s, random delay 30.00 s.
        let es = EnterService {
            low_volt: Some(9_000),
            delay: Some(12_000),
            random_delay: Some(3_000),
            ..EnterService::default()
        };
        let st = dev.set_enter_service(&es).await.expect("703");
        assert!(st.permitted);
        assert_eq!(st.v_lo_pct, Some(90.0));
        assert_eq!(st.v_hi_pct, Some(110.0), "left as it was");
        assert_eq!((st.delay_s, st.random_delay_s), (Some(120), Some(30)));
        assert_eq!(
            writes(&peer),
            vec![
                (m.start + 4, vec![900]),
                (m.start + 9, vec![0, 120]),
                (m.start + 11, vec![0, 30]),
            ]
        );
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
}

#[test]
fn target_var_on_704_shares_the_setpoint_with_fixed_var() {
    let peer = start_peer("tv704", &json!({"devices": [der7xx(1, json!({}))]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv7", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(map.offers(ControlMode::TargetVar));
        let m = model(&dev, 704);
        dev.set_fixed_var_pct(Some(20.0)).await.expect("fixed var");
        let st = dev.set_target_var(Some(-2500.0)).await.expect("target var");
        assert_eq!((st.enabled, st.var), (true, Some(-2500.0)));
        let r = block(&mut dev, m).await;
        let raw = (-2500i32) as u32;
        assert_eq!(
            &r[38..40],
            &[(raw >> 16) as u16, raw as u16],
            "VarSet -2500 var"
        );
        assert_eq!((r[35], r[36]), (1, 4), "VarSetEna, VarSetMod VARS");
        // Fixed var ending leaves the target alone (the setpoint is in var now) ...
        let before = writes(&peer).len();
        let st = dev.set_fixed_var_pct(None).await.expect("fixed var off");
        assert!(!st.enabled);
        assert_eq!(writes(&peer).len(), before, "nothing written");
        // ... the target ending switches it off.
        let st = dev.set_target_var(None).await.expect("target off");
        assert!(!st.enabled);
        assert_eq!(writes(&peer)[before..], vec![(m.start + 35, vec![0])]);
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
    // 123 has no setting in var: not offered, an error naming 704, nothing written.
    let peer = start_peer("tv123", &json!({"devices": [der1xx(1)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv1", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(!map.offers(ControlMode::TargetVar));
        let e = dev
            .set_target_var(Some(100.0))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("704"), "{e}");
        assert!(writes(&peer).is_empty());
    });
}

#[test]
fn fixed_power_factor_and_var_on_123_and_what_it_cannot_do() {
    let peer = start_peer("pf123", &json!({"devices": [der1xx(1)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv1", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(map.offers(ControlMode::FixedPFInjectW));
        assert!(!map.offers(ControlMode::FixedPFAbsorbW));
        assert!(!map.offers(ControlMode::VoltWatt));
        let m = model(&dev, 123);
        let st = dev
            .set_fixed_pf(
                ControlMode::FixedPFInjectW,
                Some(FixedPf {
                    pf: 0.95,
                    excitation: Excitation::UnderExcited,
                }),
            )
            .await
            .expect("PF on 123");
        assert_eq!(st.model, 123);
        assert!(st.enabled);
        let st = dev.set_fixed_var_pct(Some(12.5)).await.expect("var on 123");
        assert_eq!(st.pct, Some(12.5));
        let r = block(&mut dev, m).await;
        assert_eq!(r[10], (-950i16) as u16, "OutPFSet -0.950: under-excited");
        assert_eq!(r[14], 1, "OutPFSet_Ena");
        assert_eq!(r[16], 125, "VArMaxPct 12.5 %");
        assert_eq!((r[21], r[22]), (2, 1), "VArPct_Mod VArMax, VArPct_Ena");
        let s = u32::from(m.start);
        assert_eq!(
            writes(&peer)
                .into_iter()
                .map(|(a, v)| (u32::from(a) - s, v))
                .collect::<Vec<_>>(),
            vec![
                (10, vec![(-950i16) as u16]),
                (14, vec![1]),
                (16, vec![125]),
                (21, vec![2, 1]),
            ]
        );
        // What the inverter cannot do is an error naming what it has; nothing written.
        let n = writes(&peer).len();
        let e = dev
            .set_fixed_pf(
                ControlMode::FixedPFAbsorbW,
                Some(FixedPf {
                    pf: 0.9,
                    excitation: Excitation::OverExcited,
                }),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("704") && e.contains("123"), "{e}");
        let e = dev.set_curve(&volt_watt()).await.unwrap_err().to_string();
        assert!(e.contains("volt-watt (132 or 706)"), "{e}");
        // A mode the method does not carry.
        let e = dev
            .set_fixed_pf(ControlMode::ExpLimW, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a mode of"), "{e}");
        let e = dev
            .clear_curve(ControlMode::FixedVar)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("opModFixedVar is not a curve mode"), "{e}");
        assert_eq!(writes(&peer).len(), n);
        // Volt-var off on 126: ModEna bit 0 cleared.
        let m126 = model(&dev, 126);
        let st = dev
            .clear_curve(ControlMode::VoltVar)
            .await
            .expect("126 off");
        assert!(!st.enabled);
        assert_eq!(st.points.len(), 2, "the curve stays");
        assert_eq!(writes(&peer)[n..], vec![(m126.start + 3, vec![0])]);
    });
}

/// A 1xx inverter with 134 (freq-watt curves: 2 curves of 4 points, Hz_SF -2, W_SF 0,
/// curve 1 read-only).
fn der134(unit: u8) -> serde_json::Value {
    json!({"unit": unit, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "One Hundred"}},
        {"id": 103, "values": {"W": 3000, "W_SF": 0, "Hz": 5000, "Hz_SF": -2, "St": 4}},
        {"id": 134, "values": {"ActCrv": 1, "ModEna": 0, "NCrv": 2, "NPt": 4, "Hz_SF": -2,
                               "W_SF": 0, "curve[0].ActPt": 2, "curve[0].Hz1": 5050,
                               "curve[0].W1": 100, "curve[0].Hz2": 5200, "curve[0].W2": 0,
                               "curve[0].ReadOnly": 1, "curve[1].ReadOnly": 0}}
    ]})
}

#[test]
fn a_freq_watt_curve_is_written_to_134() {
    let peer = start_peer("fw134", &json!({"devices": [der134(1)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv1", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(map.offers(ControlMode::FreqWatt));
        assert!(!map.offers(ControlMode::FreqDroop));
        let m = model(&dev, 134);
        // AS/NZS 4777.2's over-frequency response: full power to 50.25 Hz, 20 % at 51.5
        // Hz, none from 52 Hz.
        let curve = Curve {
            mode: ControlMode::FreqWatt,
            points: points(&[(50.25, 100.0), (51.5, 20.0), (52.0, 0.0)]),
            dept_ref: 1,
        };
        let st = dev.set_curve(&curve).await.expect("freq-watt on 134");
        assert!(st.enabled);
        assert_eq!(st.active_curve, 2);
        assert_eq!(st.points, curve.points);
        // 12 registers before the curves, 58 per curve: curve 2 at 70. ActPt, then Hz
        // (hundredths) and W (% of WRef) pairs.
        let raw = vec![3, 5025, 100, 5150, 20, 5200, 0];
        assert_eq!(
            writes(&peer),
            vec![
                (m.start + 70, raw.clone()),
                (m.start + 2, vec![2]), // ActCrv
                (m.start + 3, vec![1]), // ModEna
            ]
        );
        let r = block(&mut dev, m).await;
        assert_eq!(&r[70..77], &raw[..]);
        assert_eq!(r[12 + 57], 1, "curve 1 still read-only");
        assert_eq!(&r[12..17], &[2, 5050, 100, 5200, 0], "curve 1 untouched");
        let before = writes(&peer).len();
        let st = dev.clear_curve(ControlMode::FreqWatt).await.expect("off");
        assert!(!st.enabled);
        assert_eq!(writes(&peer)[before..], vec![(m.start + 3, vec![0])]);
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
}

/// A 1xx inverter with 127 (freq-watt parameters: WGra_SF -2, HzStrStop_SF -3) and,
/// with `ecp_nom_hz`, model 121 stating it (ECPNomHz_SF -2).
fn der127(unit: u8, ecp_nom_hz: Option<u16>) -> serde_json::Value {
    let mut models = vec![
        json!({"id": 1, "values": {"Mn": "One Hundred"}}),
        json!({"id": 103, "values": {"W": 3000, "W_SF": 0, "Hz": 6000, "Hz_SF": -2, "St": 4}}),
    ];
    if let Some(hz) = ecp_nom_hz {
        models.push(json!({"id": 121, "values": {"WMax": 5000, "WMax_SF": 0,
                                                  "ECPNomHz": hz, "ECPNomHz_SF": -2}}));
    }
    models.push(
        json!({"id": 127, "values": {"WGra": 0, "HzStr": 0, "HzStop": 0,
                                             "HysEna": 1, "ModEna": 0, "HzStopWGra": 0,
                                             "WGra_SF": -2, "HzStrStop_SF": -3,
                                             "RmpIncDec_SF": 0}}),
    );
    json!({"unit": unit, "base": 40000, "models": models})
}

#[test]
fn a_frequency_droop_goes_to_127_at_the_nominal_frequency_of_121_or_50_hz() {
    use csipd::devices::freq_droop::NominalHz;
    // dBOF 0.150 Hz, kOF 0.050 (kUF, dBUF and the open-loop time have no 127 point).
    let droop = FreqDroop {
        db_of: 150,
        db_uf: 150,
        k_of: 50,
        k_uf: 40,
        open_loop_tms: 100,
    };
    let peer = start_peer(
        "fd127",
        &json!({"devices": [der127(1, Some(6000)), der127(2, None)]}),
        None,
    );
    smol::block_on(async {
        // A 60 Hz inverter (121 ECPNomHz 60.00): 100 % over 0.05 × 60 = 3 Hz is
        // 33.33 %/Hz.
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv60", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(map.offers(ControlMode::FreqDroop));
        assert!(!map.offers(ControlMode::FreqWatt));
        let m = model(&dev, 127);
        let st = dev
            .set_freq_droop(Some(&droop))
            .await
            .expect("droop on 127");
        assert!(st.enabled);
        assert_eq!(st.nominal, Some(NominalHz::Ecp(60.0)));
        assert_eq!(st.db_of_hz, Some(0.15));
        assert!((st.k_of.unwrap() - 0.05).abs() < 1e-3, "{st:?}");
        let unit1: Vec<(u16, Vec<u16>)> = peer
            .writes()
            .iter()
            .filter(|w| w["unit"].as_u64() == Some(1))
            .map(|w| {
                (
                    w["address"].as_u64().unwrap() as u16,
                    w["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as u16)
                        .collect(),
                )
            })
            .collect();
        // WGra, HzStr, HzStop in one write; ModEna bit 0; HysEna left as it was.
        assert_eq!(
            unit1,
            vec![(m.start + 2, vec![3333, 150, 150]), (m.start + 6, vec![1])]
        );
        let r = block(&mut dev, m).await;
        assert_eq!(&r[2..7], &[3333, 150, 150, 1, 1]);
        let st = dev.set_freq_droop(None).await.expect("off");
        assert!(!st.enabled);
        let r = block(&mut dev, m).await;
        assert_eq!((r[2], r[6]), (3333, 0), "parameters kept, ModEna 0");

        // No 121: 50 Hz assumed (AS/NZS 4777.2): 40 %/Hz.
        let before = writes(&peer).len();
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv50", 2));
        dev.scan().await.expect("scan");
        let m = model(&dev, 127);
        let st = dev
            .set_freq_droop(Some(&droop))
            .await
            .expect("droop on 127");
        assert_eq!(st.nominal, Some(NominalHz::Assumed));
        assert_eq!(
            writes(&peer)[before..],
            vec![(m.start + 2, vec![4000, 150, 150]), (m.start + 6, vec![1])]
        );
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
}
