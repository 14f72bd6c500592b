//! csipd's device driver against csipd's own SunSpec simulator (the demo's path), over
//! real Modbus TCP on loopback, both on one smol LocalExecutor.

use std::rc::Rc;
use std::time::Duration;

use csipd::devices::curves::{Curve, CurvePoint};
use csipd::devices::{Bus, BusParams, Device, DeviceParams, RevertPolicy};
use csipd::schedule::ControlMode;
use csipd::sim::site::{Grid, PvProfile, SimInverter as PhysInverter, Site};
use csipd::sim::sunspec_server::SunSpecSimulator;

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
