//! `csipd demo`: the real daemon path (event loop, bus tasks, coordinator, status server)
//! against a simulated site on loopback: a 5 kW PV inverter and a site meter, each a
//! SunSpec Modbus TCP server (`sim::sunspec_server`), whose values come from the
//! `sim::site` physics stepped on the same loop. The site has a fixed 1500 W export
//! limit and a tariff window, active from the minute the demo starts for three minutes,
//! at 1000 W; the load steps every 40 s so the controller has work to do.
//!
//! `csipd demo --sim-only` (for tests and trying `csipd run`) serves only the simulated
//! site and prints its Modbus addresses. `--battery` adds a battery inverter (unit 2 on
//! the inverter's port) that charges at up to 3 kW unless limited; `--sun-w W` sets
//! what the sun gives (0: night, so the battery charges from the grid).

use crate::sim::site::{PvProfile, SimInverter as PhysInverter, Site};
use crate::sim::sunspec_server::{SimInverter, SimMeter, SunSpecSimulator};
use smol::LocalExecutor;
use std::io::Write;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const DEMO_USAGE: &str =
    "usage: csipd demo [--seconds N] [--port P] [--sim-only] [--battery] [--sun-w W]
  runs csipd against a simulated site (PV inverter + meter over Modbus TCP on loopback)
  --seconds N   stop after N seconds (default: run until Ctrl-C)
  --port P      status server port on 127.0.0.1 (default 8080; 0 = any free port)
  --sim-only    serve only the simulated site (for `csipd run` against it)
  --battery     add a battery inverter (unit 2 on the inverter's port, model 124)
  --sun-w W     what the sun gives the PV inverter (default 4800; 0 = night)
";

/// PV inverter rating and what the sun gives.
pub const PV_RATING_W: f64 = 5000.0;
pub const PV_AVAILABLE_W: f64 = 4800.0;
/// The battery inverter `--battery` adds: rating, WChaMax, and the charge rate it
/// wants (self-consumption mode, charging only).
pub const BATTERY_RATING_W: f64 = 5000.0;
pub const BATTERY_MAX_CHARGE_W: f64 = 3000.0;
/// Export limits the demo configures.
pub const FIXED_EXPORT_LIMIT_W: u32 = 1500;
pub const WINDOW_EXPORT_LIMIT_W: u32 = 1000;
/// Physics step (s).
const PHYSICS_STEP_S: f64 = 0.2;

/// The household load: 40 s steps cycling through these values (W).
pub const LOAD_PROFILE_W: [f64; 4] = [600.0, 2400.0, 1100.0, 300.0];
pub const LOAD_STEP_S: f64 = 40.0;

pub fn load_w(t_s: f64) -> f64 {
    let i = (t_s / LOAD_STEP_S).floor().max(0.0) as usize % LOAD_PROFILE_W.len();
    LOAD_PROFILE_W[i]
}

struct Args {
    seconds: Option<u64>,
    port: u16,
    sim_only: bool,
    sim: SimOptions,
}

/// What the simulated site has besides the PV inverter and the meter.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    pub battery: bool,
    pub sun_w: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            battery: false,
            sun_w: PV_AVAILABLE_W,
        }
    }
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        seconds: None,
        port: 8080,
        sim_only: false,
        sim: SimOptions::default(),
    };
    let mut words = args.iter();
    while let Some(w) = words.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = words.next().ok_or(format!("{name} needs a number"))?;
            v.parse::<u64>()
                .map_err(|_| format!("{name} must be a whole number, got '{v}'"))
        };
        match w.as_str() {
            "--seconds" => a.seconds = Some(value("--seconds")?),
            "--port" => {
                a.port = u16::try_from(value("--port")?)
                    .map_err(|_| "--port must be 0..65535".to_string())?
            }
            "--sim-only" => a.sim_only = true,
            "--battery" => a.sim.battery = true,
            "--sun-w" => a.sim.sun_w = value("--sun-w")? as f64,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(a)
}

/// The simulated site: Modbus servers plus the physics task.
pub struct SimSite {
    pub inverter_port: u16,
    pub meter_port: u16,
    /// A battery inverter at unit 2 on `inverter_port`.
    pub battery: bool,
}

/// Starts the two SunSpec servers and the physics on `ex`.
pub fn start_sim_site(
    ex: &Rc<LocalExecutor<'static>>,
    options: SimOptions,
) -> std::io::Result<SimSite> {
    let inv_sim = SunSpecSimulator::new();
    let inverter = inv_sim.add_inverter(1, PV_RATING_W);
    let battery = options
        .battery
        .then(|| inv_sim.add_battery(2, BATTERY_RATING_W, BATTERY_MAX_CHARGE_W));
    let meter_sim = SunSpecSimulator::new();
    let meter = meter_sim.add_meter(1);
    let inv_listener = SunSpecSimulator::bind(0)?;
    let meter_listener = SunSpecSimulator::bind(0)?;
    let site = SimSite {
        inverter_port: inv_listener.get_ref().local_addr()?.port(),
        meter_port: meter_listener.get_ref().local_addr()?.port(),
        battery: options.battery,
    };
    for (sim, listener) in [(inv_sim, inv_listener), (meter_sim, meter_listener)] {
        let ex2 = ex.clone();
        ex.spawn(async move {
            if let Err(e) = sim.serve(listener, ex2).await {
                log::error!("sunspec simulator stopped: {e}");
            }
        })
        .detach();
    }
    ex.spawn(physics(inverter, battery, meter, options.sun_w))
        .detach();
    Ok(site)
}

/// Steps the site physics and mirrors it into the Modbus registers; reads back the
/// limit csipd wrote (model 123, with its revert timer honoured by the simulator).
async fn physics(inverter: SimInverter, battery: Option<SimInverter>, meter: SimMeter, sun_w: f64) {
    let mut phys = vec![PhysInverter::pv(
        PV_RATING_W,
        PvProfile::Constant { available_w: sun_w },
        1.0,
    )];
    if battery.is_some() {
        phys.push(PhysInverter::battery(
            BATTERY_RATING_W,
            BATTERY_MAX_CHARGE_W,
            1.0,
        ));
    }
    let mut site = Site::new(load_w(0.0), phys);
    site.settle();
    let start = Instant::now();
    let (mut import_wh, mut export_wh) = (0.0, 0.0);
    let mut next = start;
    loop {
        let t = start.elapsed().as_secs_f64();
        site.base_load_w = load_w(t);
        site.inverters[0].setpoint_w = inverter.limit_w().unwrap_or(PV_RATING_W);
        site.inverters[0].connected = inverter.connected();
        if let Some(b) = &battery {
            site.inverters[1].charge_limit_w = b.charge_limit_w();
            site.inverters[1].connected = b.connected();
        }
        site.step(PHYSICS_STEP_S);
        if let Some(b) = &battery {
            b.set_output_w(site.inverters[1].output_w);
        }
        let out_w = site.inverters[0].output_w;
        let site_w = site.meter_site_w();
        inverter.set_output_w(out_w);
        inverter.add_energy_wh(out_w.max(0.0) * PHYSICS_STEP_S / 3600.0);
        if site_w > 0.0 {
            import_wh += site_w * PHYSICS_STEP_S / 3600.0;
        } else {
            export_wh += -site_w * PHYSICS_STEP_S / 3600.0;
        }
        meter.set_power_w(site_w);
        meter.set_energy_wh(import_wh, export_wh);
        next += Duration::from_secs_f64(PHYSICS_STEP_S);
        smol::Timer::at(next).await;
    }
}

/// The demo's configuration in UCI syntax: the two simulated devices, a fixed export
/// limit, and a tariff window active from `start_min` (local minutes) for 3 minutes.
pub fn demo_config_text(
    site: &SimSite,
    status_port: u16,
    start_min: u32,
    data_dir: &str,
) -> String {
    let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    let end = (start_min + 3) % 1440;
    let end_text = if end == 0 {
        "24:00".to_string()
    } else {
        hhmm(end)
    };
    format!(
        "# csipd demo: a simulated site on loopback (written by `csipd demo`).
# Edit and send SIGHUP to the demo to reload, as on a router.
config csipd 'main'
\toption log_level 'info'
\toption status_listen '127.0.0.1:{status_port}'
\toption data_dir '{data_dir}'
\toption telemetry_dir '{data_dir}'

config limits 'fixed'
\toption export_limit_w '{FIXED_EXPORT_LIMIT_W}'

config tariff 'demo_window'
\toption start '{start}'
\toption end '{end_text}'
\toption export_limit_w '{WINDOW_EXPORT_LIMIT_W}'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
\toption failsafe_export_limit_w '0'

config device 'pv_inverter'
\toption role 'inverter'
\toption transport 'tcp'
\toption host '127.0.0.1'
\toption port '{inv}'
\toption unit_id '1'

config device 'site_meter'
\toption role 'meter'
\toption transport 'tcp'
\toption host '127.0.0.1'
\toption port '{meter}'
\toption unit_id '1'
{battery}",
        start = hhmm(start_min),
        inv = site.inverter_port,
        meter = site.meter_port,
        battery = if site.battery {
            format!(
                "
config device 'battery'
\toption role 'storage'
\toption transport 'tcp'
\toption host '127.0.0.1'
\toption port '{}'
\toption unit_id '2'
",
                site.inverter_port
            )
        } else {
            String::new()
        },
    )
}

/// `csipd demo [--seconds N] [--port P] [--sim-only]`.
pub fn demo_main(args: &[String]) -> ExitCode {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprint!("csipd demo: {e}\n{DEMO_USAGE}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(log::LevelFilter::Info);
    let ex: Rc<LocalExecutor<'static>> = Rc::new(LocalExecutor::new());
    let site = match start_sim_site(&ex, a.sim) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("csipd demo: cannot start the simulated site on 127.0.0.1: {e}");
            return ExitCode::from(1);
        }
    };
    let deadline = a.seconds.map(Duration::from_secs);
    if a.sim_only {
        println!("inverter: tcp://127.0.0.1:{} unit 1", site.inverter_port);
        println!("meter: tcp://127.0.0.1:{} unit 1", site.meter_port);
        if a.sim.battery {
            println!("battery: tcp://127.0.0.1:{} unit 2", site.inverter_port);
        }
        let _ = std::io::stdout().flush();
        let ex2 = ex.clone();
        return smol::block_on(ex.run(async move {
            let _ = &ex2;
            let forever = async {
                let mut signals = match async_signal::Signals::new([
                    async_signal::Signal::Term,
                    async_signal::Signal::Int,
                ]) {
                    Ok(s) => s,
                    Err(_) => return ExitCode::from(1),
                };
                use smol::stream::StreamExt;
                let _ = signals.next().await;
                ExitCode::SUCCESS
            };
            match deadline {
                Some(d) => {
                    smol::future::or(forever, async {
                        smol::Timer::after(d).await;
                        ExitCode::SUCCESS
                    })
                    .await
                }
                None => forever.await,
            }
        }));
    }

    // The tariff window starts at the current local minute, in the zone the daemon uses.
    let dir = std::env::temp_dir().join(format!("csipd-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("csipd demo: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let path = dir.join("csipd.conf");
    let path_text = path.display().to_string();
    let etc_tz = super::coordinator::read_etc_tz();
    let tz = etc_tz
        .as_deref()
        .and_then(|t| crate::control::PosixTz::parse(t.trim()).ok())
        .unwrap_or_else(crate::control::PosixTz::utc);
    let start_min = tz.to_local(super::unix_now_s()).second_of_day / 60;
    let text = demo_config_text(&site, a.port, start_min, &dir.display().to_string());
    if let Err(e) = std::fs::write(&path, &text) {
        eprintln!("csipd demo: cannot write {path_text}: {e}");
        return ExitCode::from(1);
    }
    let config = match super::load_config(&path_text) {
        Ok(c) => c,
        Err(e) => {
            for m in e.lines() {
                eprintln!("{m}");
            }
            return ExitCode::from(1);
        }
    };
    let inv_port = site.inverter_port;
    let meter_port = site.meter_port;
    let battery = site.battery;
    let config_path = path_text.clone();
    let on_ready = Box::new(move |url: &str| {
        println!("csipd demo: a simulated site on loopback, controlled by the real daemon path");
        println!(
            "  PV inverter {PV_RATING_W:.0} W (sun gives {PV_AVAILABLE_W:.0} W): tcp://127.0.0.1:{inv_port} unit 1"
        );
        println!(
            "  site meter: tcp://127.0.0.1:{meter_port} unit 1; load steps every {LOAD_STEP_S:.0} s through {LOAD_PROFILE_W:?} W"
        );
        if battery {
            println!(
                "  battery {BATTERY_RATING_W:.0} W, charges at up to {BATTERY_MAX_CHARGE_W:.0} W: tcp://127.0.0.1:{inv_port} unit 2"
            );
        }
        println!(
            "  limits: fixed export {FIXED_EXPORT_LIMIT_W} W; tariff window demo_window {WINDOW_EXPORT_LIMIT_W} W for the next 3 minutes"
        );
        println!(
            "  config: {config_path} (edit it, then `kill -HUP {}` to reload)",
            std::process::id()
        );
        println!("status: {url}/status");
        println!("  page:    {url}/");
        println!("  metrics: {url}/metrics");
        println!("  CLI:     csipd status --url {url}");
        println!("Ctrl-C stops the demo.");
        let _ = std::io::stdout().flush();
    });
    let daemon = super::run_daemon(ex.clone(), path_text, config, on_ready);
    let code = smol::block_on(ex.run(async move {
        match deadline {
            Some(d) => {
                smol::future::or(daemon, async {
                    smol::Timer::after(d).await;
                    ExitCode::SUCCESS
                })
                .await
            }
            None => daemon.await,
        }
    }));
    let _ = std::fs::remove_dir_all(&dir);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid_and_has_the_window() {
        let mut site = SimSite {
            inverter_port: 1502,
            meter_port: 1503,
            battery: false,
        };
        for start in [0, 600, 1437, 1439] {
            let text = demo_config_text(&site, 0, start, "/tmp/csipd-demo-test");
            let (c, _) = crate::config::from_text(&text, "demo").expect("demo config valid");
            assert_eq!(c.tariffs.len(), 1);
            assert_eq!(c.tariffs[0].start_min, start);
            assert_eq!(
                c.tariffs[0].end_min,
                if start == 1437 {
                    1440
                } else {
                    (start + 3) % 1440
                }
            );
            assert_eq!(c.devices.len(), 2);
            assert_eq!(c.limits.export_limit_w, Some(FIXED_EXPORT_LIMIT_W));
        }
        site.battery = true;
        let text = demo_config_text(&site, 0, 0, "/tmp/csipd-demo-test");
        let (c, _) = crate::config::from_text(&text, "demo").expect("demo config valid");
        let bat = c
            .devices
            .iter()
            .find(|d| d.name == "battery")
            .expect("battery");
        assert_eq!(bat.role, crate::config::DeviceRole::Storage);
        assert_eq!(bat.unit_id, 2);
    }

    #[test]
    fn load_profile_steps() {
        assert_eq!(load_w(0.0), 600.0);
        assert_eq!(load_w(41.0), 2400.0);
        assert_eq!(load_w(160.0 + 1.0), 600.0);
    }
}
