//! `csipd demo`: the real daemon path (event loop, bus tasks, coordinator, status server)
//! against a simulated site on loopback: a 5 kW PV inverter and a site meter, each a
//! SunSpec Modbus TCP server (`sim::sunspec_server`), whose values come from the
//! `sim::site` physics stepped on the same loop. The site has a fixed 1500 W export
//! limit and a tariff window, active from the minute the demo starts for three minutes,
//! at 1000 W; the load steps every 40 s so the controller has work to do.
//!
//! By default the demo also starts the simulated CSIP-AUS utility (`sim::utility`) on a
//! free 127.0.0.1 port with a fresh lab PKI and points the daemon at it (dcap URL,
//! device certificate and key, lab CA, registration PIN, NMI), so its 5-minute export
//! and import limits (a compressed day, `--day-s`) combine with the fixed limit and the
//! tariff window (tighter wins); `--no-utility` leaves it out.
//! `csipd demo --utility-only [--listen ADDR]` serves only the simulated utility and
//! prints where a client finds it (dcap URL, CA, device certificate and key, PIN).
//!
//! `csipd demo --sim-only` (for tests and trying `csipd run`) serves only the simulated
//! site and prints its Modbus addresses. `--battery` adds a battery inverter (unit 2 on
//! the inverter's port) that charges at up to 3 kW unless limited; `--sun-w W` sets
//! what the sun gives (0: night, so the battery charges from the grid).

use crate::sim::site::{Grid, PvProfile, SimInverter as PhysInverter, Site};
use crate::sim::sunspec_server::{SimInverter, SimMeter, SunSpecSimulator};
use crate::sim::utility::lab_pki::LabPki;
use crate::sim::utility::schedule::DayPlan;
use crate::sim::utility::server::UtilityServer;
use crate::sim::utility::{Utility, UtilityOptions};
use smol::LocalExecutor;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEMO_USAGE: &str = "usage: csipd demo [--seconds N] [--port P] [--no-utility] [--day-s S]
                  [--sim-only] [--utility-only [--listen ADDR] [--pki-dir DIR]]
                  [--battery] [--sun-w W]
  runs csipd against a simulated site (PV inverter + meter over Modbus TCP on loopback)
  and a simulated CSIP-AUS utility (mutual TLS on loopback, 5-minute operating envelopes)
  --seconds N   stop after N seconds (default: run until Ctrl-C)
  --port P      status server port on 127.0.0.1 (default 8080; 0 = any free port)
  --no-utility  no simulated utility: fixed and tariff limits only
  --day-s S     the utility's day lasts S real seconds (default 2880: a 5-minute block
                every 10 s; 86400 plays it in real time)
  --sim-only    serve only the simulated site (for `csipd run` against it)
  --utility-only  serve only the simulated utility; prints its dcap URL, lab CA (and its
                key), device certificate, key and PIN for another client; it serves
                any device whose certificate its lab CA issued (`csipd fleet`)
  --listen ADDR   where --utility-only listens (default 127.0.0.1:0, any free port)
  --pki-dir DIR   where --utility-only writes its lab PKI (ca.pem, ca.key, device.pem,
                device.key, server.*); kept after it stops (default: a temporary
                directory, removed at exit)
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
/// The simulated utility's default day (s): a 5-minute block every 10 s.
pub const DEFAULT_DAY_S: u32 = 2880;
/// What the demo's daemon tells the simulated utility: its NMI and PEN.
pub const DEMO_NMI: &str = "4102345678";
pub const DEMO_PEN: u32 = 12345;
/// Physics step (s).
const PHYSICS_STEP_S: f64 = 0.2;

/// The household load: 40 s steps cycling through these values (W).
pub const LOAD_PROFILE_W: [f64; 4] = [600.0, 2400.0, 1100.0, 300.0];
pub const LOAD_STEP_S: f64 = 40.0;

pub fn load_w(t_s: f64) -> f64 {
    let i = (t_s / LOAD_STEP_S).floor().max(0.0) as usize % LOAD_PROFILE_W.len();
    LOAD_PROFILE_W[i]
}

#[derive(Debug)]
struct Args {
    seconds: Option<u64>,
    port: u16,
    sim_only: bool,
    sim: SimOptions,
    no_utility: bool,
    utility_only: bool,
    listen: Option<SocketAddr>,
    pki_dir: Option<std::path::PathBuf>,
    day_s: u32,
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
        no_utility: false,
        utility_only: false,
        listen: None,
        pki_dir: None,
        day_s: DEFAULT_DAY_S,
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
            "--no-utility" => a.no_utility = true,
            "--utility-only" => a.utility_only = true,
            "--day-s" => {
                a.day_s = u32::try_from(value("--day-s")?)
                    .map_err(|_| "--day-s must be 288..86400".to_string())?
            }
            "--listen" => {
                let v = words
                    .next()
                    .ok_or("--listen needs an address (e.g. 127.0.0.1:8443)")?;
                a.listen = Some(v.parse().map_err(|_| {
                    format!("--listen must be IP:PORT (e.g. 127.0.0.1:8443), got '{v}'")
                })?);
            }
            "--pki-dir" => {
                let v = words.next().ok_or("--pki-dir needs a directory")?;
                a.pki_dir = Some(v.into());
            }
            "--battery" => a.sim.battery = true,
            "--sun-w" => a.sim.sun_w = value("--sun-w")? as f64,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if a.listen.is_some() && !a.utility_only {
        return Err(
            "--listen goes with --utility-only (the demo's utility uses a free loopback port)"
                .into(),
        );
    }
    if a.pki_dir.is_some() && !a.utility_only {
        return Err("--pki-dir goes with --utility-only".into());
    }
    if a.utility_only && (a.sim_only || a.no_utility) {
        return Err("--utility-only cannot be combined with --sim-only or --no-utility".into());
    }
    DayPlan::new(0, a.day_s).map_err(|e| e.to_string())?;
    Ok(a)
}

/// What the daemon needs to reach the simulated utility.
#[derive(Debug, Clone)]
pub struct DemoUtility {
    pub dcap_url: String,
    pub pki: LabPki,
    pub pin: u32,
}

/// Why the simulated utility did not start.
#[derive(Debug)]
pub enum SimUtilityError {
    /// The lab PKI (CA, server and device certificates) could not be made.
    Pki(crate::pki::PkiError),
    /// The compressed day cannot be planned with this length.
    Plan(crate::sim::utility::schedule::ScheduleError),
    /// The TLS server could not start (address in use, TLS set-up).
    Server(crate::sim::utility::server::ServerError),
}

impl std::fmt::Display for SimUtilityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Each message already names its part ("lab PKI, ...", "simulated utility TLS, ...").
        match self {
            SimUtilityError::Pki(e) => write!(f, "{e}"),
            SimUtilityError::Plan(e) => write!(f, "{e}"),
            SimUtilityError::Server(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SimUtilityError {}

/// Makes a lab PKI in `dir` and starts the simulated utility on `listen`, its day
/// starting now (`clock`'s time).
pub fn start_sim_utility(
    dir: &Path,
    listen: SocketAddr,
    day_s: u32,
) -> Result<(UtilityServer, DemoUtility), SimUtilityError> {
    let clock = super::clock::SystemClock::new();
    let now = clock.now();
    let ip = listen.ip();
    let named = (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip);
    let pki = LabPki::create_for(dir, now.utc_s(), named).map_err(SimUtilityError::Pki)?;
    let plan = DayPlan::new(now.utc_s(), day_s).map_err(SimUtilityError::Plan)?;
    let options = UtilityOptions::for_plan(plan, &pki.device_lfdi, pki.device_sfdi);
    let pin = options.pin;
    let server = UtilityServer::start(
        listen,
        pki.clone(),
        Utility::new(options),
        Arc::new(move || clock.now()),
    )
    .map_err(SimUtilityError::Server)?;
    let utility = DemoUtility {
        dcap_url: server.dcap_url(),
        pki,
        pin,
    };
    Ok((server, utility))
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
    // Model 711 besides the standard set: the utility's frequency droop has somewhere
    // to go (its curves stay on 126/132, as csipd would prefer 705/706).
    let inverter = inv_sim
        .add_inverter_offering(1, PV_RATING_W, &[711])
        .map_err(std::io::Error::other)?;
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

/// Steps the site physics and mirrors it into the Modbus registers; hands the physics
/// what csipd put in force on the simulated inverters (`SimInverter::drive`: the limit
/// with its revert timer, curves, power factor and var settings, the frequency droop on
/// model 711). The grid voltage swings slowly and the frequency has an over-frequency
/// event every 5 minutes (`Grid::demo`), so an enabled curve visibly moves the
/// inverter's vars and the utility's droop visibly cuts its output (both logged).
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
    site.grid = Grid::demo();
    site.settle();
    let start = Instant::now();
    let (mut import_wh, mut export_wh) = (0.0, 0.0);
    let mut next = start;
    let mut volt_var = None;
    let mut droop = None;
    // The most the droop has cut in the over-frequency event under way.
    let mut droop_cut_w: Option<f64> = None;
    loop {
        let t = start.elapsed().as_secs_f64();
        // The volt-var curve in force on the inverter's model 126, said when it
        // changes (the factory curve until csipd puts the utility's on).
        let now_volt_var = inverter.volt_var();
        if now_volt_var != volt_var {
            match &now_volt_var {
                Some(c) => log::info!(
                    "simulated inverter: volt-var curve on (model 126: {})",
                    c.points
                        .iter()
                        .map(|p| format!("{:.1} %V → {:.0} %", p.v_pct, p.y_pct))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => log::info!("simulated inverter: volt-var curve off"),
            }
            volt_var = now_volt_var;
        }
        // The frequency droop in force on model 711, said when it changes, and each
        // over-frequency event it acts on.
        let now_droop = inverter.freq_droop();
        if now_droop != droop {
            match &now_droop {
                Some(d) => log::info!(
                    "simulated inverter: frequency droop on (model 711: dead band +{:.3}/-{:.3} Hz, droop {:.3}/{:.3})",
                    d.db_of_hz.unwrap_or(f64::NAN),
                    d.db_uf_hz.unwrap_or(f64::NAN),
                    d.k_of.unwrap_or(f64::NAN),
                    d.k_uf.unwrap_or(f64::NAN)
                ),
                None => log::info!("simulated inverter: frequency droop off"),
            }
            droop = now_droop;
        }
        let hz = site.frequency_hz();
        // What the droop takes off the PV's output now: its target at the nominal
        // frequency less its target at this one.
        let (t_s, v_pct, f_nom) = (site.t_s, site.voltage_pct(), site.grid.nominal_hz);
        let pv = &site.inverters[0];
        let cut_w = pv.target_w(t_s, v_pct, f_nom, f_nom) - pv.target_w(t_s, v_pct, hz, f_nom);
        match (cut_w > 0.5, droop_cut_w) {
            (true, None) => {
                log::info!(
                    "simulated grid: {hz:.2} Hz, over-frequency: the droop starts cutting the PV"
                );
                droop_cut_w = Some(cut_w);
            }
            (true, Some(most)) => droop_cut_w = Some(most.max(cut_w)),
            (false, Some(most)) => {
                log::info!(
                    "simulated grid: {hz:.2} Hz, back within the droop's dead band; the droop cut the PV by up to {most:.0} W"
                );
                droop_cut_w = None;
            }
            (false, None) => {}
        }
        site.base_load_w = load_w(t);
        let now = Instant::now();
        inverter.drive(&mut site.inverters[0], now);
        if let Some(b) = &battery {
            b.drive(&mut site.inverters[1], now);
        }
        site.step(PHYSICS_STEP_S);
        let (v, hz) = (site.voltage_v(), site.frequency_hz());
        if let Some(b) = &battery {
            b.show(&site.inverters[1], v, hz);
        }
        let out_w = site.inverters[0].output_w;
        let site_w = site.meter_site_w();
        inverter.show(&site.inverters[0], v, hz);
        inverter.add_energy_wh(out_w.max(0.0) * PHYSICS_STEP_S / 3600.0);
        if site_w > 0.0 {
            import_wh += site_w * PHYSICS_STEP_S / 3600.0;
        } else {
            export_wh += -site_w * PHYSICS_STEP_S / 3600.0;
        }
        meter.set_site(site_w, site.meter_site_var(), v);
        meter.set_hz(hz);
        meter.set_energy_wh(import_wh, export_wh);
        next += Duration::from_secs_f64(PHYSICS_STEP_S);
        smol::Timer::at(next).await;
    }
}

/// The `server 'utility'` section (UCI) that points a client at the simulated utility
/// with its lab device identity.
fn server_section_text(u: &DemoUtility) -> String {
    format!(
        "
config server 'utility'
\toption dcap_url '{}'
\toption cert '{}'
\toption key '{}'
\toption ca '{}'
\toption registration_pin '{}'
\toption nmi '{DEMO_NMI}'
\toption pen '{DEMO_PEN}'
",
        u.dcap_url,
        u.pki.device_cert.display(),
        u.pki.device_key.display(),
        u.pki.ca_cert.display(),
        u.pin
    )
}

/// The client configuration `--utility-only` writes beside its lab PKI: the simulated
/// utility with the device identity and nothing else (no devices, state in `data_dir`),
/// for `csipd discover --config` or `csipd run --config` against it.
pub fn utility_client_config_text(u: &DemoUtility, data_dir: &str) -> String {
    format!(
        "# A csipd client of the simulated utility (written by `csipd demo --utility-only`).
# csipd discover --config THIS_FILE walks it; csipd run --config THIS_FILE runs against it.
config csipd 'main'
\toption data_dir '{data_dir}'
\toption telemetry_dir '{data_dir}'
{server}",
        server = server_section_text(u)
    )
}

/// The demo's configuration in UCI syntax: the two simulated devices, a fixed export
/// limit, a tariff window active from `start_min` (local minutes) for 3 minutes, and
/// the simulated utility when there is one.
pub fn demo_config_text(
    site: &SimSite,
    status_port: u16,
    start_min: u32,
    data_dir: &str,
    utility: Option<&DemoUtility>,
) -> String {
    let server = utility.map(server_section_text).unwrap_or_default();
    // The utility's tariff drives the negative feed-in price rule: export is limited to
    // 0 W while its export price is a cost (one price interval in four).
    let price = if utility.is_some() {
        "
config price 'feed_in'
\toption enabled '1'
\toption utility_price_export '1'
"
    } else {
        ""
    };
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
{server}{price}
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
\toption inverter_response_s '0.5'

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

/// Waits for SIGTERM/SIGINT or the deadline (the simulator-only modes).
pub(crate) async fn until_signal_or(deadline: Option<Duration>) -> ExitCode {
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
}

/// `csipd demo [--seconds N] [--port P] [--no-utility] [--sim-only] [--utility-only]`.
pub fn demo_main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{DEMO_USAGE}");
        return ExitCode::SUCCESS;
    }
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprint!("csipd demo: {e}\n{DEMO_USAGE}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(log::LevelFilter::Info);
    let ex: Rc<LocalExecutor<'static>> = Rc::new(LocalExecutor::new());
    let deadline = a.seconds.map(Duration::from_secs);
    let dir = std::env::temp_dir().join(format!("csipd-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("csipd demo: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    if a.utility_only {
        let listen = a
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let pki_dir = a.pki_dir.clone().unwrap_or_else(|| dir.join("pki"));
        let (server, u) = match start_sim_utility(&pki_dir, listen, a.day_s) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("csipd demo: cannot start the simulated utility: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                return ExitCode::from(1);
            }
        };
        println!(
            "csipd demo --utility-only: a simulated CSIP-AUS utility (TLS 1.2, client certificates from its lab CA)"
        );
        println!("dcap: {}", u.dcap_url);
        if listen.ip().is_unspecified() {
            println!(
                "note: listening on every address, but the server certificate names only \
                 127.0.0.1 and localhost; for clients elsewhere use --listen with the address \
                 they connect to (it is then in the certificate)"
            );
        }
        println!("ca: {}", u.pki.ca_cert.display());
        println!(
            "ca key: {} (issues device certificates it accepts; lab use only)",
            u.pki.ca_key.display()
        );
        println!("device cert: {}", u.pki.device_cert.display());
        println!("device key: {}", u.pki.device_key.display());
        println!(
            "device lfdi: {} (sfdi {})",
            u.pki.device_lfdi, u.pki.device_sfdi
        );
        println!("pin: {}", u.pin);
        let client_dir = dir.join("client");
        let client_conf = dir.join("client.conf");
        let written = std::fs::create_dir_all(&client_dir).and_then(|()| {
            std::fs::write(
                &client_conf,
                utility_client_config_text(&u, &client_dir.display().to_string()),
            )
        });
        match written {
            Ok(()) => println!(
                "client config: {} (csipd discover --config {0})",
                client_conf.display()
            ),
            Err(e) => eprintln!(
                "csipd demo: cannot write {}: {e} (the server runs without it)",
                client_conf.display()
            ),
        }
        println!(
            "fleet: csipd fleet --devices 100 --dcap {} --ca-cert {} --ca-key {}",
            u.dcap_url,
            u.pki.ca_cert.display(),
            u.pki.ca_key.display()
        );
        println!(
            "report: https://{}/sim/report (no client certificate needed; curl --cacert {} ...)",
            server.addr,
            u.pki.ca_cert.display()
        );
        println!(
            "day: {} s, a 5-minute block every {} s; Ctrl-C stops it{}",
            a.day_s,
            server.with(|s| s.options().plan.block_s),
            if a.pki_dir.is_some() {
                " (the lab PKI stays in --pki-dir)"
            } else {
                " (the files above are removed)"
            }
        );
        let _ = std::io::stdout().flush();
        let code = smol::block_on(ex.run(until_signal_or(deadline)));
        let _ = std::fs::remove_dir_all(&dir);
        return code;
    }
    let site = match start_sim_site(&ex, a.sim) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("csipd demo: cannot start the simulated site on 127.0.0.1: {e}");
            return ExitCode::from(1);
        }
    };
    if a.sim_only {
        println!("inverter: tcp://127.0.0.1:{} unit 1", site.inverter_port);
        println!("meter: tcp://127.0.0.1:{} unit 1", site.meter_port);
        if a.sim.battery {
            println!("battery: tcp://127.0.0.1:{} unit 2", site.inverter_port);
        }
        let _ = std::io::stdout().flush();
        let code = smol::block_on(ex.run(until_signal_or(deadline)));
        let _ = std::fs::remove_dir_all(&dir);
        return code;
    }
    let utility = if a.no_utility {
        None
    } else {
        match start_sim_utility(
            &dir.join("pki"),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            a.day_s,
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("csipd demo: cannot start the simulated utility: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                return ExitCode::from(1);
            }
        }
    };

    // The tariff window starts at the current local minute, in the zone the daemon uses.
    let path = dir.join("csipd.conf");
    let path_text = path.display().to_string();
    let etc_tz = super::coordinator::read_etc_tz();
    // The zone the daemon will use (the demo config sets no main.timezone).
    let (tz, _) = crate::control::tz::site_timezone(None, etc_tz.as_deref());
    let start_min = tz.to_local(super::unix_now_s()).second_of_day / 60;
    let text = demo_config_text(
        &site,
        a.port,
        start_min,
        &dir.display().to_string(),
        utility.as_ref().map(|(_, u)| u),
    );
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
    let utility_text = utility.as_ref().map(|(server, u)| {
        (
            u.dcap_url.clone(),
            format!("https://{}/sim/report", server.addr),
            u.pki.ca_cert.display().to_string(),
            server.with(|s| s.options().plan.block_s),
        )
    });
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
        match &utility_text {
            Some((dcap, report, ca, block_s)) => {
                println!("  utility: a simulated CSIP-AUS server (mutual TLS, CCM8), {dcap}");
                println!(
                    "    5-minute export limits through a compressed day, a new block every {block_s} s; the tighter limit wins"
                );
                println!(
                    "    a dynamic tariff: import and export prices every {} s; in one interval of four exporting costs money, and export is limited to 0 W (config price 'feed_in', utility_price_export)",
                    block_s * crate::sim::utility::tariff::INTERVAL_BLOCKS
                );
                println!("lab CA: {ca}");
                println!("utility report: {report}");
            }
            None => println!("  utility: none (--no-utility)"),
        }
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
            let text = demo_config_text(&site, 0, start, "/tmp/csipd-demo-test", None);
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
        let text = demo_config_text(&site, 0, 0, "/tmp/csipd-demo-test", None);
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
    fn demo_config_points_the_daemon_at_the_simulated_utility() {
        let site = SimSite {
            inverter_port: 1502,
            meter_port: 1503,
            battery: false,
        };
        let dir = std::env::temp_dir().join(format!("csipd-demo-config-{}", std::process::id()));
        let pki = LabPki::create(&dir, 1_760_000_000).expect("lab PKI");
        let u = DemoUtility {
            dcap_url: "https://127.0.0.1:40123/dcap".into(),
            pki,
            pin: 111_115,
        };
        let text = demo_config_text(&site, 0, 600, "/tmp/csipd-demo-test", Some(&u));
        let (c, warnings) = crate::config::from_text(&text, "demo").expect("demo config valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.server.dcap_url.as_deref(), Some(u.dcap_url.as_str()));
        // The utility's tariff drives the negative feed-in price rule.
        assert!(c.price.enabled && c.price.utility_price_export);
        assert_eq!(c.server.registration_pin, Some(111_115));
        assert_eq!(c.server.nmi.as_deref(), Some(DEMO_NMI));
        assert_eq!(
            c.server.ca.as_deref(),
            Some(u.pki.ca_cert.to_str().unwrap())
        );
        assert!(!c.server.tls_insecure_lab && !c.server.allow_plain_http);
        // The fixed limit and the tariff window are still there to combine with it.
        assert_eq!(c.limits.export_limit_w, Some(FIXED_EXPORT_LIMIT_W));
        assert_eq!(c.tariffs.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn demo_arguments() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let a = args(&[
            "--utility-only",
            "--listen",
            "127.0.0.1:8443",
            "--day-s",
            "1440",
        ])
        .unwrap();
        assert!(a.utility_only);
        assert_eq!(a.listen, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(a.day_s, 1440);
        assert_eq!(args(&[]).unwrap().day_s, DEFAULT_DAY_S);
        assert!(
            args(&["--listen", "127.0.0.1:1"])
                .unwrap_err()
                .contains("--utility-only")
        );
        assert!(args(&["--day-s", "10"]).unwrap_err().contains("288..86400"));
        assert!(
            args(&["--utility-only", "--listen", "nowhere"])
                .unwrap_err()
                .contains("IP:PORT")
        );
    }

    #[test]
    fn load_profile_steps() {
        assert_eq!(load_w(0.0), 600.0);
        assert_eq!(load_w(41.0), 2400.0);
        assert_eq!(load_w(160.0 + 1.0), 600.0);
    }
}
