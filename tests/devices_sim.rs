//! csipd's device driver against csipd's own SunSpec simulator (the demo's path), over
//! real Modbus TCP on loopback, both on one smol LocalExecutor.

use std::rc::Rc;
use std::time::Duration;

use csipd::devices::{Bus, BusParams, Device, DeviceParams, RevertPolicy};
use csipd::sim::sunspec_server::SunSpecSimulator;

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
        params.timeout = Duration::from_millis(500);
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
