//! csipd's device driver against csipd's own SunSpec simulator (the demo's path), over
//! real Modbus TCP on loopback, both on one smol LocalExecutor.

use std::rc::Rc;
use std::time::Duration;

use csipd::devices::curves::{Curve, CurvePoint};
use csipd::devices::{Bus, BusParams, Device, DeviceParams, RevertPolicy};
use csipd::schedule::ControlMode;
use csipd::sim::site::{Grid, PvProfile, SimInverter as PhysInverter, Site};
use csipd::sim::sunspec_server::{SimInverter, SunSpecSimulator};

/// Modbus response timeout towards the simulator: generous, as on a loaded machine the
/// thread serving it may be descheduled for a while; a timeout here is a failure, not a
/// measurement (issue 26).
const SIM_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn driver_reads_and_controls_the_simulator() {
    let ex = Rc::new(smol::LocalExecutor::new());
    smol::block_on(ex.run(async {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter(1, 6000.0);
        let meter = sim.add_meter(2);
        let listener = SunSpecSimulator::bind(0).expect("bind");
        let port = listener.get_ref().local_addr().expect("addr").port();
        let server = sim.clone();
        let ex2 = ex.clone();
        ex.spawn(async move {
            let _ = server.serve(listener, ex2).await;
        })
        .detach();

        inv.set_output_w(4500.0);
        meter.set_power_w(-1500.0);
        let mut params = BusParams::tcp("127.0.0.1", port);
        params.timeout = SIM_TIMEOUT;
        let bus = Rc::new(Bus::new(params));
        let mut d_inv = Device::new(bus.clone(), DeviceParams::new("sim-inv", 1));
        let mut d_meter = Device::new(bus.clone(), DeviceParams::new("sim-meter", 2));
        let r = d_inv.read_inverter().await.expect("read sim inverter");
        assert_eq!(r.ac.w, Some(4500.0));
        assert_eq!(r.nameplate.w_rtg_w, Some(6000.0));
        let m = d_meter.read_meter().await.expect("read sim meter");
        assert_eq!(m.ac.w, Some(-1500.0));

        assert_eq!(inv.limit_pct(), None);
        d_inv
            .set_active_power_limit_pct(
                25.0,
                RevertPolicy {
                    timeout_s: 60,
                    fallback_pct: 0.0,
                },
            )
            .await
            .expect("limit");
        assert_eq!(inv.limit_pct(), Some(25.0));
        assert_eq!(inv.limit_w(), Some(1500.0));
        d_inv.set_connected(false).await.expect("disconnect");
        assert!(!inv.connected());
        // the simulator refuses writes outside model 123's control points
        let ctl = *d_inv.map().unwrap().find(123).unwrap();
        let before = d_inv
            .read_registers(ctl.start, ctl.total_len())
            .await
            .unwrap();
        assert_eq!(before[23], 0, "WMaxLimPct_SF");
        assert_eq!(d_inv.stats().link.exceptions, 0);
    }));
}

#[test]
fn two_buses_polled_concurrently() {
    let ex = Rc::new(smol::LocalExecutor::new());
    smol::block_on(ex.run(async {
        let mut buses = Vec::new();
        let mut inverters = Vec::new();
        for (i, w) in [1200.0, 3400.0].into_iter().enumerate() {
            let sim = SunSpecSimulator::new();
            let inv = sim.add_inverter(1, 5000.0);
            inv.set_output_w(w);
            inverters.push(inv);
            let listener = SunSpecSimulator::bind(0).expect("bind");
            let port = listener.get_ref().local_addr().expect("addr").port();
            let ex2 = ex.clone();
            ex.spawn(async move {
                let _ = sim.serve(listener, ex2).await;
            })
            .detach();
            let mut params = BusParams::tcp("127.0.0.1", port);
            params.timeout = SIM_TIMEOUT;
            let bus = Rc::new(Bus::new(params));
            buses.push(Device::new(
                bus,
                DeviceParams::new(&format!("bus{i}-inv"), 1),
            ));
        }
        let mut it = buses.into_iter();
        let (mut a, mut b) = (it.next().unwrap(), it.next().unwrap());
        let (ra, rb) = smol::future::zip(a.read_inverter(), b.read_inverter()).await;
        assert_eq!(ra.expect("bus 0").ac.w, Some(1200.0));
        assert_eq!(rb.expect("bus 1").ac.w, Some(3400.0));
        assert_ne!(
            a.status(std::time::Instant::now()).bus,
            b.status(std::time::Instant::now()).bus
        );
    }));
}

/// A foreign reader checks the simulator: pysunspec2's own Modbus client scans it, decodes
/// model 103/203 and writes model 123 (`tests/peers/pysunspec_read.py`).
#[test]
fn pysunspec2_client_reads_and_controls_the_simulator() {
    let venv = std::env::var("PEERS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers-venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} missing: run `bash tests/setup.sh`",
        py.display()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    // The simulator is single-threaded (Rc); it runs on its own thread's executor.
    std::thread::spawn(move || {
        let ex = Rc::new(smol::LocalExecutor::new());
        smol::block_on(ex.run(async {
            let sim = SunSpecSimulator::new();
            let inv = sim.add_inverter(1, 5000.0);
            inv.set_output_w(2750.0);
            sim.add_meter(2).set_power_w(-900.0);
            let listener = SunSpecSimulator::bind(0).expect("bind");
            let port = listener.get_ref().local_addr().expect("addr").port();
            let probe = inv.clone();
            let ex2 = ex.clone();
            ex.spawn(async move {
                let _ = sim.serve(listener, ex2).await;
            })
            .detach();
            tx.send(port).expect("send port");
            // report the limit once pysunspec2 has written it, then keep serving (the
            // thread ends with the test process)
            loop {
                // sleep-ok: a poll interval (the simulator has no change notification);
                // the test waits for the limit with a 30 s deadline (recv_timeout).
                smol::Timer::after(Duration::from_millis(20)).await;
                if let Some(p) = probe.limit_pct() {
                    tx.send(p as u16).expect("send limit");
                    break;
                }
            }
            smol::future::pending::<()>().await;
        }));
    });
    let port = rx.recv().expect("port");
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pysunspec_read.py");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&py)
            .arg(&script)
            .args(args)
            .output()
            .expect("run pysunspec_read.py");
        assert!(
            out.status.success(),
            "pysunspec2 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let p = port.to_string();
    let inv = run(&[&p, "1", "40"]);
    assert_eq!(
        inv["models"],
        serde_json::json!([1, 103, 120, 121, 123, 126, 132])
    );
    assert_eq!(inv["Mn"], "csipd-sim");
    assert_eq!(inv["W"], 2750.0);
    assert_eq!(inv["Hz"], 50.0);
    assert_eq!(inv["WMaxLimPct"], 40.0);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30))
            .expect("limit seen by the simulator"),
        40
    );
    let meter = run(&[&p, "2"]);
    assert_eq!(meter["models"], serde_json::json!([1, 203]));
    assert_eq!(meter["meter_W"], -900.0);
}

/// The demo's path for a curve: csipd's driver puts the standard's 4-point volt-var
/// curve on the simulator's model 126 over Modbus TCP; the site physics, stepped on a
/// virtual clock as the demo steps it, reads the curve in force from the simulator and
/// moves the inverter's reactive power along it as the grid voltage swings; csipd reads
/// the vars back from model 103.
#[test]
fn a_volt_var_curve_written_by_csipd_moves_the_simulated_inverters_vars() {
    let ex = Rc::new(smol::LocalExecutor::new());
    smol::block_on(ex.run(async {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter(1, 5000.0);
        let listener = SunSpecSimulator::bind(0).expect("bind");
        let port = listener.get_ref().local_addr().expect("addr").port();
        let server = sim.clone();
        let ex2 = ex.clone();
        ex.spawn(async move {
            let _ = server.serve(listener, ex2).await;
        })
        .detach();
        let mut params = BusParams::tcp("127.0.0.1", port);
        params.timeout = SIM_TIMEOUT;
        let mut dev = Device::new(Rc::new(Bus::new(params)), DeviceParams::new("sim-inv", 1));
        let map = dev.scan().await.expect("scan").clone();
        assert!(map.offers(ControlMode::VoltVar) && map.offers(ControlMode::VoltWatt));

        let mut site = Site::new(
            500.0,
            vec![PhysInverter::pv(
                5000.0,
                PvProfile::Constant {
                    available_w: 3000.0,
                },
                1.0,
            )],
        );
        site.grid = Grid::demo();
        // Steps the physics as the demo does, `seconds` of virtual time.
        let run = |site: &mut Site, seconds: f64| {
            let mut t = 0.0;
            while t < seconds {
                site.inverters[0].volt_var = inv.volt_var();
                site.step(0.2);
                inv.set_ac(
                    site.inverters[0].output_w,
                    site.inverters[0].var_output,
                    site.voltage_v(),
                );
                t += 0.2;
            }
        };
        // No curve in force (the factory curve is not enabled): no vars at the crest.
        run(&mut site, 75.0);
        let r = dev.read_inverter().await.expect("read");
        assert_eq!(r.ac.var, Some(0.0));
        assert!(r.ac.v.unwrap() > 240.0, "{:?}", r.ac.v);

        let curve = Curve {
            mode: ControlMode::VoltVar,
            points: [(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)]
                .into_iter()
                .map(|(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                .collect(),
            dept_ref: 2,
        };
        let state = dev.set_curve(&curve).await.expect("curve on the simulator");
        assert!(state.enabled && state.active_curve == 2);
        // Near the crest (245 V + the site's rise): absorbing, as the curve says at the
        // voltage csipd reads.
        run(&mut site, 10.0);
        let r = dev.read_inverter().await.expect("read");
        let (v, var) = (r.ac.v.unwrap(), r.ac.var.unwrap());
        let on_curve = curve.y_pct_at(100.0 * v / 230.0).unwrap() / 100.0 * 3000.0;
        assert!(var < -100.0, "absorbing at {v} V: {var} var");
        assert!(
            (var - on_curve).abs() < 60.0,
            "{var} var vs {on_curve} at {v} V"
        );
        // Half a period after the crest (the trough, 215 V + the site's rise):
        // injecting.
        run(&mut site, 140.0);
        let r = dev.read_inverter().await.expect("read");
        let (v, var) = (r.ac.v.unwrap(), r.ac.var.unwrap());
        let on_curve = curve.y_pct_at(100.0 * v / 230.0).unwrap() / 100.0 * 3000.0;
        assert!(v < 220.0 && var > 50.0, "{var} var at {v} V");
        assert!(
            (var - on_curve).abs() < 60.0,
            "{var} var vs {on_curve} at {v} V"
        );
        // Turned off: the vars go back to 0.
        let off = dev.clear_curve(ControlMode::VoltVar).await.expect("off");
        assert!(!off.enabled);
        run(&mut site, 10.0);
        let r = dev.read_inverter().await.expect("read");
        assert!(r.ac.var.unwrap().abs() < 1.0, "{:?}", r.ac.var);
    }));
}

/// Serves `sim` on a free loopback port on `ex`; a csipd `Device` for unit 1 there.
fn serve_and_connect(ex: &Rc<smol::LocalExecutor<'static>>, sim: &SunSpecSimulator) -> Device {
    let listener = SunSpecSimulator::bind(0).expect("bind");
    let port = listener.get_ref().local_addr().expect("addr").port();
    let server = sim.clone();
    let ex2 = ex.clone();
    ex.spawn(async move {
        let _ = server.serve(listener, ex2).await;
    })
    .detach();
    let mut params = BusParams::tcp("127.0.0.1", port);
    params.timeout = SIM_TIMEOUT;
    Device::new(Rc::new(Bus::new(params)), DeviceParams::new("sim-inv", 1))
}

/// Steps `site` for `seconds` of virtual time in 0.2 s steps as the demo does: what
/// csipd put in force on the simulated inverter drives the physics, whose W, VAr,
/// voltage and frequency go back to model 103.
fn run_site(inv: &SimInverter, site: &mut Site, seconds: f64) {
    let now = std::time::Instant::now();
    let mut t = 0.0;
    while t < seconds {
        inv.drive(&mut site.inverters[0], now);
        site.step(0.2);
        inv.show(&site.inverters[0], site.voltage_v(), site.frequency_hz());
        t += 0.2;
    }
}

fn points(p: &[(f64, f64)]) -> Vec<CurvePoint> {
    p.iter()
        .map(|&(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
        .collect()
}

/// The points read back are the points written (to the registers' resolution).
fn same_points(a: &[CurvePoint], b: &[CurvePoint]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.v_pct - y.v_pct).abs() < 1e-6 && (x.y_pct - y.y_pct).abs() < 1e-6)
}

/// The steepest slope of a curve (y % per x %).
fn steepest(c: &Curve) -> f64 {
    c.points
        .windows(2)
        .map(|w| ((w[1].y_pct - w[0].y_pct) / (w[1].v_pct - w[0].v_pct)).abs())
        .fold(0.0, f64::max)
}

/// A PV inverter with every optional model (131, 704, 705, 706, 711, 712): csipd's
/// own `Device` writes watt-var (712), watt-PF (131), fixed PF, var target and fixed
/// var (704) and an active power limit (704, preferred over 123) over Modbus TCP; the
/// physics, stepped on a virtual clock, acts on what the registers hold, and csipd
/// reads the result back from model 103. Expected values come from the curves and
/// settings written; the tolerances from the curves' slopes and the registers'
/// resolution (1 W, 1 var).
#[test]
fn seven_hundred_series_and_watt_curves_written_by_csipd_move_the_simulated_inverter() {
    let ex = Rc::new(smol::LocalExecutor::new());
    smol::block_on(ex.run(async {
        let sim = SunSpecSimulator::new();
        let inv = sim
            .add_inverter_offering(1, 5000.0, &[131, 704, 705, 706, 711, 712])
            .expect("optional models");
        assert!(sim.add_inverter_offering(3, 5000.0, &[134]).is_err());
        let mut dev = serve_and_connect(&ex, &sim);
        let map = dev.scan().await.expect("scan").clone();
        for mode in [
            ControlMode::WattVar,
            ControlMode::WattPF,
            ControlMode::FixedPFAbsorbW,
            ControlMode::TargetVar,
            ControlMode::FreqDroop,
        ] {
            assert!(map.offers(mode), "{mode:?}");
        }
        let rating = 5000.0;
        let var_max = 0.6 * rating;
        let mut site = Site::new(
            0.0,
            vec![PhysInverter::pv(
                rating,
                PvProfile::Constant {
                    available_w: 4000.0,
                },
                1.0,
            )],
        );
        site.settle();
        // 10 time constants: the lag leaves e^-10 of any step.
        let settle_s = 10.0;
        run_site(&inv, &mut site, settle_s);
        let r = dev.read_inverter().await.expect("read");
        assert_eq!((r.ac.w, r.ac.var), (Some(4000.0), Some(0.0)));

        // Watt-var on 712: adopted into curve 1, then enabled.
        let wv = Curve {
            mode: ControlMode::WattVar,
            points: points(&[(0.0, 0.0), (50.0, 0.0), (75.0, -10.0), (100.0, -44.0)]),
            dept_ref: 2,
        };
        let st = dev.set_curve(&wv).await.expect("watt-var on 712");
        assert!(st.enabled && same_points(&st.points, &wv.points), "{st:?}");
        run_site(&inv, &mut site, settle_s);
        let r = dev.read_inverter().await.expect("read");
        let (w, var) = (r.ac.w.unwrap(), r.ac.var.unwrap());
        let want = wv.y_pct_at(100.0 * w / rating).unwrap() / 100.0 * var_max;
        // W read to 1 W: the curve moves at most `steepest` % of VArMax per % of WMax.
        let tol = steepest(&wv) / 100.0 * var_max * (100.0 / rating) + 1.0;
        assert!(
            want < -100.0 && (var - want).abs() <= tol,
            "{var} var vs {want} at {w} W"
        );
        dev.clear_curve(ControlMode::WattVar).await.expect("off");

        // Watt-PF on 131: unity to half the rating, 0.90 absorbing at full output.
        let wpf = Curve {
            mode: ControlMode::WattPF,
            points: points(&[(50.0, 100.0), (100.0, -90.0)]),
            dept_ref: 0,
        };
        let st = dev.set_curve(&wpf).await.expect("watt-PF on 131");
        assert!(st.enabled && st.active_curve == 2, "{st:?}");
        run_site(&inv, &mut site, settle_s);
        let r = dev.read_inverter().await.expect("read");
        let (w, var) = (r.ac.w.unwrap(), r.ac.var.unwrap());
        // Between unity (50 %) and 0.90 absorbing (100 %): 1 − 0.10 × the way along.
        let pf: f64 = 1.0 - 0.10 * (100.0 * w / rating - 50.0) / 50.0;
        let want = -w * pf.acos().tan();
        assert!(
            want < -100.0 && (var - want).abs() <= 2.0,
            "{var} var vs {want} at {w} W"
        );
        dev.clear_curve(ControlMode::WattPF).await.expect("off");

        // A fixed power factor goes to 704 (preferred over 123).
        let pf = csipd::devices::reactive::FixedPf {
            pf: 0.9,
            excitation: csipd::devices::reactive::Excitation::UnderExcited,
        };
        let st = dev
            .set_fixed_pf(ControlMode::FixedPFInjectW, Some(pf))
            .await
            .expect("fixed PF");
        assert_eq!((st.model, st.enabled), (704, true));
        run_site(&inv, &mut site, settle_s);
        let r = dev.read_inverter().await.expect("read");
        let (w, var) = (r.ac.w.unwrap(), r.ac.var.unwrap());
        let want = -w * 0.9f64.acos().tan();
        assert!((var - want).abs() <= 2.0, "{var} var vs {want} at {w} W");

        // A var target (704 VarSet) takes over; then a fixed var (VarSetPct) replaces
        // it on the same setpoint; turned off, the fixed power factor is back.
        let st = dev.set_target_var(Some(-800.0)).await.expect("target var");
        assert!(st.enabled);
        run_site(&inv, &mut site, settle_s);
        let r = dev.read_inverter().await.expect("read");
        assert!((r.ac.var.unwrap() + 800.0).abs() <= 1.0, "{:?}", r.ac.var);
        let st = dev.set_fixed_var_pct(Some(20.0)).await.expect("fixed var");
        assert_eq!((st.model, st.enabled), (704, true));
        run_site(&inv, &mut site, settle_s);
        let r = dev.read_inverter().await.expect("read");
        assert!(
            (r.ac.var.unwrap() - 0.2 * var_max).abs() <= 1.0,
            "{:?}",
            r.ac.var
        );
        dev.set_fixed_var_pct(None).await.expect("fixed var off");

        // The active power limit on 704: the output falls to it, and the power
        // factor's vars with it.
        let lim = dev
            .set_active_power_limit_pct(
                50.0,
                RevertPolicy {
                    timeout_s: 3600,
                    fallback_pct: 100.0,
                },
            )
            .await
            .expect("limit");
        assert_eq!(lim.model, 704);
        run_site(&inv, &mut site, settle_s);
        let r = dev.read_inverter().await.expect("read");
        let (w, var) = (r.ac.w.unwrap(), r.ac.var.unwrap());
        assert!((w - 0.5 * rating).abs() <= 1.0, "{w} W");
        assert!(
            (var + w * 0.9f64.acos().tan()).abs() <= 2.0,
            "{var} var at {w} W"
        );
        assert_eq!(dev.stats().link.exceptions, 0);
    }));
}

/// Frequency droop on 711: csipd's `Device` puts a droop (2030.5 FreqDroopType: ±0.15 Hz
/// dead band, 5 % droop) on the simulated inverter; on the demo grid (50 Hz wandering
/// ±30 mHz, an over-frequency event to 50.4 Hz from 60 s) the physics cuts the active
/// power by the droop while the frequency is above the band, and csipd reads W and Hz
/// back from model 103. The factory control 1 is not in force before csipd enables it.
#[test]
fn a_frequency_droop_written_by_csipd_cuts_the_output_in_an_over_frequency_event() {
    let ex = Rc::new(smol::LocalExecutor::new());
    smol::block_on(ex.run(async {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter_offering(1, 5000.0, &[711]).expect("711");
        let mut dev = serve_and_connect(&ex, &sim);
        let rating = 5000.0;
        let available = 4000.0;
        let mut site = Site::new(
            0.0,
            vec![PhysInverter::pv(
                rating,
                PvProfile::Constant {
                    available_w: available,
                },
                1.0,
            )],
        );
        site.grid = Grid::demo();
        site.grid.wave_amplitude_v = 0.0;
        site.settle();
        let event = site.grid.excursion.expect("the demo grid has an event");
        let hold_mid = event.first_s + event.ramp_s + event.hold_s / 2.0;
        // Into the event without a droop in force: the full output at 50.4 Hz.
        run_site(&inv, &mut site, hold_mid);
        let r = dev.read_inverter().await.expect("read");
        let hz = r.ac.hz.expect("Hz");
        assert!(hz > 50.3, "{hz} Hz");
        assert!((r.ac.w.unwrap() - available).abs() <= 1.0, "{:?}", r.ac.w);

        let droop = csipd::sep2::FreqDroop {
            db_of: 150,
            db_uf: 150,
            k_of: 50,
            k_uf: 50,
            open_loop_tms: 100,
        };
        let st = dev
            .set_freq_droop(Some(&droop))
            .await
            .expect("droop on 711");
        assert!(
            st.enabled && st.db_of_hz == Some(0.15) && st.k_of == Some(0.05),
            "{st:?}"
        );
        // 10 s still inside the event's hold: settled on the droop.
        run_site(&inv, &mut site, 10.0);
        let r = dev.read_inverter().await.expect("read");
        let (w, hz) = (r.ac.w.unwrap(), r.ac.hz.unwrap());
        let (db, k) = (0.15, 0.05);
        let want = available - (hz - 50.0 - db) / (50.0 * k) * rating;
        // Hz read to 0.01 Hz; in the inverter's 1 s lag the wander moves < 5 mHz.
        let tol = (0.005 + 0.005) / (50.0 * k) * rating + 1.0;
        assert!(want < available - 300.0, "{want} W at {hz} Hz");
        assert!((w - want).abs() <= tol, "{w} W vs {want} W at {hz} Hz");
        // After the event, back within the dead band: the full output again.
        let after = event.first_s + 2.0 * event.ramp_s + event.hold_s + 10.0;
        let left = after - site.t_s;
        run_site(&inv, &mut site, left);
        let r = dev.read_inverter().await.expect("read");
        assert!((r.ac.hz.unwrap() - 50.0).abs() < db, "{:?}", r.ac.hz);
        assert!((r.ac.w.unwrap() - available).abs() <= 1.0, "{:?}", r.ac.w);
        // The next event with the droop turned off: no cut.
        let st = dev.set_freq_droop(None).await.expect("droop off");
        assert!(!st.enabled);
        let left = hold_mid + event.every_s - site.t_s;
        run_site(&inv, &mut site, left);
        let r = dev.read_inverter().await.expect("read");
        assert!(r.ac.hz.unwrap() > 50.3, "{:?}", r.ac.hz);
        assert!((r.ac.w.unwrap() - available).abs() <= 1.0, "{:?}", r.ac.w);
    }));
}

/// Volt-var on 705 and volt-watt on 706 (the 7xx twins of 126/132, preferred by csipd):
/// written, adopted and enabled by csipd's `Device`; on the demo grid's voltage swing
/// the physics moves the vars along the volt-var curve and caps the output on the
/// volt-watt curve at the voltage csipd reads back.
#[test]
fn volt_var_and_volt_watt_on_705_706_act_on_the_simulated_inverter() {
    let ex = Rc::new(smol::LocalExecutor::new());
    smol::block_on(ex.run(async {
        let sim = SunSpecSimulator::new();
        let inv = sim
            .add_inverter_offering(1, 5000.0, &[705, 706])
            .expect("705, 706");
        let mut dev = serve_and_connect(&ex, &sim);
        let (rating, var_max) = (5000.0, 3000.0);
        let mut site = Site::new(
            0.0,
            vec![PhysInverter::pv(
                rating,
                PvProfile::Constant {
                    available_w: 4000.0,
                },
                1.0,
            )],
        );
        site.grid = Grid::demo();
        site.settle();
        // The factory curves are in curve 1 but not enabled: nothing acts.
        assert_eq!((inv.volt_var(), inv.volt_watt()), (None, None));
        let vv = Curve {
            mode: ControlMode::VoltVar,
            points: points(&[(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)]),
            dept_ref: 2,
        };
        let st = dev.set_curve(&vv).await.expect("volt-var on 705");
        assert!(st.enabled && same_points(&st.points, &vv.points), "{st:?}");
        let vw = Curve {
            mode: ControlMode::VoltWatt,
            points: points(&[(106.0, 100.0), (112.0, 40.0)]),
            dept_ref: 1,
        };
        let st = dev.set_curve(&vw).await.expect("volt-watt on 706");
        assert!(st.enabled && same_points(&st.points, &vw.points), "{st:?}");
        // Near the crest (245 V + the site's rise).
        run_site(&inv, &mut site, 80.0);
        let r = dev.read_inverter().await.expect("read");
        let (v, w, var) = (r.ac.v.unwrap(), r.ac.w.unwrap(), r.ac.var.unwrap());
        let v_pct = 100.0 * v / 230.0;
        // V read to 0.1 V; in the 1 s lag the swing (≤ 0.32 V/s) and the site's own
        // changes move it by less than 1 V: tolerances from the curves' slopes.
        let dv_pct = 100.0 * (0.1 + 1.0) / 230.0;
        let want_var = vv.y_pct_at(v_pct).unwrap() / 100.0 * var_max;
        let tol_var = steepest(&vv) / 100.0 * var_max * dv_pct + 1.0;
        assert!(want_var < -100.0, "{want_var} var at {v} V");
        assert!(
            (var - want_var).abs() <= tol_var,
            "{var} var vs {want_var} at {v} V"
        );
        let want_w = (vw.y_pct_at(v_pct).unwrap() / 100.0 * rating).min(4000.0);
        let tol_w = steepest(&vw) / 100.0 * rating * dv_pct + 1.0;
        assert!(want_w < 3900.0, "{want_w} W at {v} V");
        assert!((w - want_w).abs() <= tol_w, "{w} W vs {want_w} at {v} V");
        // Both off: back to no vars and the full output.
        dev.clear_curve(ControlMode::VoltVar).await.expect("off");
        dev.clear_curve(ControlMode::VoltWatt).await.expect("off");
        run_site(&inv, &mut site, 10.0);
        let r = dev.read_inverter().await.expect("read");
        assert!(r.ac.var.unwrap().abs() <= 1.0, "{:?}", r.ac.var);
        assert!((r.ac.w.unwrap() - 4000.0).abs() <= 1.0, "{:?}", r.ac.w);
    }));
}

/// opModFixedPFAbsorbW on 704: a charging battery (absorbing active power) runs the
/// absorbing power factor csipd writes to `PFWAbs`, not the injecting one in `PFWInj`
/// (which alone leaves it at no vars); model 123's one `OutPFSet` holds either way.
#[test]
fn a_charging_battery_runs_the_absorbing_power_factor_on_704() {
    let ex = Rc::new(smol::LocalExecutor::new());
    smol::block_on(ex.run(async {
        let sim = SunSpecSimulator::new();
        let bat = sim
            .add_battery_offering(1, 5000.0, 3000.0, &[704])
            .expect("704");
        let mut dev = serve_and_connect(&ex, &sim);
        let mut site = Site::new(500.0, vec![PhysInverter::battery(5000.0, 2000.0, 1.0)]);
        site.settle();
        use csipd::devices::reactive::{Excitation, FixedPf};
        let inject = FixedPf {
            pf: 0.95,
            excitation: Excitation::OverExcited,
        };
        let absorb = FixedPf {
            pf: 0.8,
            excitation: Excitation::UnderExcited,
        };
        let st = dev
            .set_fixed_pf(ControlMode::FixedPFInjectW, Some(inject))
            .await
            .expect("inject PF");
        assert_eq!((st.model, st.enabled), (704, true));
        let st = dev
            .set_fixed_pf(ControlMode::FixedPFAbsorbW, Some(absorb))
            .await
            .expect("absorb PF");
        assert_eq!((st.model, st.enabled), (704, true));
        run_site(&bat, &mut site, 10.0);
        let r = dev.read_inverter().await.expect("read");
        let (w, var) = (r.ac.w.unwrap(), r.ac.var.unwrap());
        let want = -w.abs() * 0.8f64.acos().tan();
        assert!(w < -1000.0, "charging: {w} W");
        assert!((var - want).abs() <= 2.0, "{var} var vs {want} at {w} W");
        // Absorbing off: the injecting power factor does not hold while charging.
        dev.set_fixed_pf(ControlMode::FixedPFAbsorbW, None)
            .await
            .expect("absorb off");
        run_site(&bat, &mut site, 10.0);
        let r = dev.read_inverter().await.expect("read");
        assert!(r.ac.var.unwrap().abs() <= 1.0, "{:?}", r.ac.var);
        // Model 123's one power factor holds either way: on a battery without 704,
        // csipd puts the injecting power factor on 123 and it holds while charging.
        let sim123 = SunSpecSimulator::new();
        let bat123 = sim123.add_battery(1, 5000.0, 3000.0);
        let mut dev123 = serve_and_connect(&ex, &sim123);
        let mut site123 = Site::new(500.0, vec![PhysInverter::battery(5000.0, 2000.0, 1.0)]);
        site123.settle();
        let st = dev123
            .set_fixed_pf(ControlMode::FixedPFInjectW, Some(absorb))
            .await
            .expect("PF on 123");
        assert_eq!((st.model, st.enabled), (123, true));
        run_site(&bat123, &mut site123, 10.0);
        let r = dev123.read_inverter().await.expect("read");
        let (w, var) = (r.ac.w.unwrap(), r.ac.var.unwrap());
        let want = -w.abs() * 0.8f64.acos().tan();
        assert!(
            w < -1000.0 && (var - want).abs() <= 2.0,
            "{var} var vs {want} at {w} W"
        );
        dev.set_fixed_pf(ControlMode::FixedPFInjectW, None)
            .await
            .expect("inject off");
        run_site(&bat, &mut site, 10.0);
        let r = dev.read_inverter().await.expect("read");
        assert!(r.ac.var.unwrap().abs() <= 1.0, "{:?}", r.ac.var);
    }));
}
