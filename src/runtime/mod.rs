//! Wires the tasks together on one smol `LocalExecutor`; the only module that knows
//! all the others.
//!
//! Tasks on the one thread: one per Modbus bus ([`bus`]), the coordinator tick every
//! `control.cycle_s` ([`coordinator`]), the feed-in price poller (its blocking HTTP GET
//! runs on smol's blocking pool), the MQTT publisher when enabled (`crate::mqtt`), and
//! the signal handler (SIGHUP reload, SIGTERM/SIGINT stop). They share
//! [`site::SiteState`] through an `Rc<RefCell<_>>`, borrowed between awaits only. The
//! status HTTP server runs on its own thread and reads the snapshot.
//!
//! Entry points: [`run_main`] (`csipd run`) and [`demo::demo_main`] (`csipd demo`).

pub mod bus;
pub mod clock;
pub mod coordinator;
#[cfg(feature = "lab")]
pub mod demo;
pub mod durable;
pub mod engine;
#[cfg(feature = "lab")]
pub mod fleet;
pub mod notify;
pub mod site;

use crate::config::{self, Config};
use crate::csip::ConnectionState;
use crate::status::{self, Snapshot, SnapshotHandle};
use async_signal::{Signal, Signals};
use site::{SharedSite, SiteState};
use smol::stream::StreamExt;
use smol::{LocalExecutor, Task};
use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// Unix time in whole seconds, read through [`clock::SystemClock`] (the one place the
/// system clock is read), for the runtime's own time stamps.
pub fn unix_now_s() -> i64 {
    clock::SystemClock::new().now().utc_s()
}

pub const RUN_USAGE: &str = "usage: csipd run [--config FILE]   (default /etc/config/csipd)
  runs the daemon; SIGHUP re-reads the configuration, SIGTERM/SIGINT stop it
";

/// `csipd run [--config FILE]`.
pub fn run_main(args: &[String]) -> ExitCode {
    let mut path = config::DEFAULT_PATH.to_string();
    let mut words = args.iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "--config" | "-c" => match words.next() {
                Some(p) => path = p.clone(),
                None => {
                    eprint!("csipd run: --config needs a file\n{RUN_USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                print!("{RUN_USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprint!("csipd run: unknown argument '{other}'\n{RUN_USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let config = match load_config(&path) {
        Ok(c) => c,
        Err(e) => {
            for m in e.lines() {
                eprintln!("{m}");
            }
            eprintln!(
                "csipd run: {path} has errors, not starting (see: csipd check-config {path})"
            );
            return ExitCode::from(2);
        }
    };
    crate::logging::init(config.main.log_level.to_filter());
    let ex = Rc::new(LocalExecutor::new());
    // futures-lite's block_on, not smol's (async-io's): with async-io's, the main thread
    // and the `async-io` thread take turns at the reactor, and while any such block_on
    // runs the `async-io` thread wakes up to ten times after every reactor event (its
    // 50 µs-10 ms backoff) to look for more: most of csipd's CPU time at rest (issue 21).
    // Here the `async-io` thread alone waits in epoll and wakes the loop when a task is
    // ready: two thread switches per event.
    smol::future::block_on(ex.run(run_daemon(ex.clone(), path, config, Box::new(|_| {}))))
}

/// Loads and validates; warnings are logged (or printed before logging is up). On
/// failure the [`config::LoadError`] has every diagnostic ([`config::LoadError::lines`]).
pub fn load_config(path: &str) -> Result<Config, config::LoadError> {
    let (c, warnings) = config::load(path)?;
    for w in warnings {
        if log::max_level() == log::LevelFilter::Off {
            eprintln!("{w}");
        } else {
            log::warn!("{w}");
        }
    }
    Ok(c)
}

/// The running daemon's tasks that depend on the configuration.
struct Daemon {
    ex: Rc<LocalExecutor<'static>>,
    config: Rc<Config>,
    site: SharedSite,
    status: SnapshotHandle,
    server: Option<status::StatusServer>,
    coordinator: Rc<RefCell<coordinator::Coordinator>>,
    durable: durable::SharedDurable,
    buses: Vec<Task<()>>,
    price: Option<Task<()>>,
    engine: Option<Task<()>>,
    /// Publishing to an MQTT broker (`config mqtt`), when enabled.
    mqtt: Option<Task<()>>,
    /// The scheduler's memory of the running engine, for its successor after a reload.
    schedule_saved: Rc<RefCell<Option<crate::schedule::State>>>,
    /// The control tick, started once the store is open (its utility controls restored).
    _tick: Option<Task<()>>,
    _flush: Option<Task<()>>,
}

/// Runs the daemon on `ex` until SIGTERM or SIGINT. `on_ready` gets the status URL once
/// the status server listens (the demo prints it).
pub async fn run_daemon(
    ex: Rc<LocalExecutor<'static>>,
    path: String,
    config: Config,
    on_ready: Box<dyn FnOnce(&str)>,
) -> ExitCode {
    // Signals first, so a HUP during start-up is not lost (and does not kill us).
    let mut signals = match Signals::new([Signal::Hup, Signal::Term, Signal::Int]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let started = unix_now_s();
    let status = SnapshotHandle::new(Snapshot::new(started));
    let config = Rc::new(config);
    set_utility_status(&status, &config, started);
    let server = match start_status(&config, &status) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let url = server.url();
    log::info!(
        "csipd {} running: config {path}, status {url}, {} device(s), cycle {} s",
        crate::VERSION,
        config.devices.iter().filter(|d| d.enabled).count(),
        config.control.cycle_s
    );
    if config.site_meter().is_none() {
        log::warn!(
            "no site meter configured: the fail-safe export limit ({} W) holds",
            config.control.failsafe_export_limit_w
        );
    }
    if let Some(w) = config.fallback_export_limit_w() {
        // Said once here; the status shows whether it holds (no stored controls yet).
        log::info!(
            "until the utility's export limit is read (or restored from the store), export \
             is held at {w} W (fallback_export_limit_w)"
        );
    }
    status.log_event(
        started,
        "info",
        "daemon",
        &format!("started, config {path}"),
    );
    let site: SharedSite = Rc::new(RefCell::new(SiteState::new(i64::from(
        config.price.max_age_s,
    ))));
    site.borrow_mut().configure(&config);
    let etc_tz = coordinator::read_etc_tz();
    let coordinator = Rc::new(RefCell::new(coordinator::Coordinator::new(
        config.clone(),
        etc_tz.as_deref(),
    )));
    // The store opens on a blocking thread while the utility connection starts: the
    // first GET leaves without waiting for SQLite (tens of ms on a router's flash). The
    // engine holds its scheduler until the store's memory of events is back, and the
    // control tick starts only after the stored utility controls are in the site state,
    // so the last known utility limit is what the first command enforces.
    let durable: durable::SharedDurable = Rc::new(RefCell::new(durable::Durable::default()));
    let mut daemon = Daemon {
        ex: ex.clone(),
        buses: Vec::new(),
        price: None,
        engine: None,
        mqtt: None,
        schedule_saved: Rc::new(RefCell::new(None)),
        config: config.clone(),
        site,
        status,
        server: Some(server),
        coordinator,
        durable,
        _tick: None,
        _flush: None,
    };
    daemon.start_engine();
    daemon.start_buses();
    daemon.start_price();
    daemon.start_mqtt();
    // A thread of its own that ends with the open, not smol's blocking pool: the
    // `blocking` crate keeps a pool thread for the process's life once started.
    let opened = {
        let owned = Config::clone(&config);
        let status = daemon.status.clone();
        let (tx, rx) = smol::channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("csipd-store".into())
            .spawn(move || {
                let _ = tx.send_blocking(durable::Durable::open(&owned, started, &status));
            });
        match spawned {
            Ok(_) => rx.recv().await.ok(),
            Err(e) => {
                log::warn!("no thread to open the store on ({e}); opening it on the loop");
                None
            }
        }
        .unwrap_or_else(|| durable::Durable::open(&config, started, &daemon.status))
    };
    *daemon.durable.borrow_mut() = opened;
    durable::restore_controls(&daemon.durable.borrow(), &daemon.site);
    daemon._tick = Some(ex.spawn(tick_task(
        daemon.coordinator.clone(),
        daemon.site.clone(),
        daemon.status.clone(),
        daemon.durable.clone(),
    )));
    daemon._flush = Some(ex.spawn(durable::flush_task(daemon.durable.clone())));
    on_ready(&url);

    while let Some(signal) = signals.next().await {
        match signal {
            Ok(Signal::Hup) => daemon.reload(&path),
            Ok(Signal::Term) | Ok(Signal::Int) => {
                log::info!(
                    "stopping on {signal:?}; inverters keep their last limits until their revert timers run out"
                );
                break;
            }
            Ok(other) => log::debug!("ignoring signal {other:?}"),
            Err(e) => log::warn!("signal stream: {e}"),
        }
    }
    // Dropping the tasks stops them between Modbus exchanges; no limit is lifted.
    daemon.engine = None;
    // Dropping the MQTT connection makes the broker publish the last will (`offline`).
    daemon.mqtt = None;
    daemon.buses.clear();
    daemon.price = None;
    daemon.durable.borrow_mut().flush(unix_now_s(), true);
    if let Some(server) = daemon.server.take() {
        server.stop();
    }
    ExitCode::SUCCESS
}

fn start_status(
    config: &Config,
    status: &SnapshotHandle,
) -> Result<status::StatusServer, status::ServerError> {
    status::start_server(
        &config.main.status_listen.to_string(),
        config.main.status_allow_remote,
        status.clone(),
    )
}

/// The utility part of the status after a start or reload: the server, and the
/// identity of the configured certificate — shown even before a server is set up, since
/// the installer hands it to the utility first. Without a server, nothing of an earlier
/// one (polls, clock offset, registration) stays on screen.
fn set_utility_status(status: &SnapshotHandle, config: &Config, now_s: i64) {
    let identity = config.server.cert.as_ref().and_then(|cert| {
        let lfdi = crate::pki::lfdi_of_cert_file(std::path::Path::new(cert)).ok()?;
        let sfdi = crate::sep2::identity::sfdi(&lfdi).ok()?;
        Some((lfdi, sfdi))
    });
    status.update(|s| {
        s.utility.server_url = config.server.utility_url().map(str::to_string);
        s.utility.lfdi = identity.as_ref().map(|(lfdi, _)| lfdi.clone());
        s.utility.sfdi = identity.as_ref().map(|(_, sfdi)| *sfdi);
        match (config.server.utility_url(), s.utility.state) {
            (None, _) => {
                s.set_connection_state(ConnectionState::NotConfigured, now_s);
                s.utility.resources.clear();
                s.utility.clock_offset_s = None;
                s.utility.registration_problem = None;
            }
            (Some(_), ConnectionState::NotConfigured) => {
                s.set_connection_state(ConnectionState::Discovering, now_s)
            }
            _ => {}
        }
    });
}

/// Ticks every cycle, and hands each new site-meter reading in between to the step's
/// feed-forward. (Ticking on each fresh meter reading was tried: the inverters'
/// readings then lag the meter's and the control law, which re-seeds from the measured
/// output, double-counts the response and oscillates. The feed-forward only cuts, from
/// the output expected of the inverters, and the next tick re-seeds.)
async fn tick_task(
    coordinator: Rc<RefCell<coordinator::Coordinator>>,
    site: SharedSite,
    status: SnapshotHandle,
    durable: durable::SharedDurable,
) {
    let (meter_tx, meter_rx) = smol::channel::bounded::<()>(1);
    site.borrow_mut().meter_wake = Some(meter_tx);
    loop {
        // The step keeps the period and never bursts to catch up after a stall.
        let next = {
            let mut c = coordinator.borrow_mut();
            c.tick(&site, &status);
            if let Some(sample) = c.last_sample.take() {
                durable.borrow_mut().record_sample(sample);
            }
            c.next_tick()
        };
        // One timer for the whole cycle, however many meter readings come in.
        let mut timer = smol::Timer::at(next);
        loop {
            let meter = smol::future::or(
                async {
                    (&mut timer).await;
                    false
                },
                async { meter_rx.recv().await.is_ok() },
            )
            .await;
            if !meter {
                break;
            }
            coordinator.borrow_mut().feed_forward(&site);
        }
    }
}

async fn price_task(source: crate::control::PriceSourceConfig, every: Duration, site: SharedSite) {
    loop {
        let src = source.clone();
        // The price GET blocks: it runs on smol's blocking pool, never on the loop.
        let outcome = smol::unblock(move || crate::control::fetch_feed_in_price(&src)).await;
        if let Ok(p) = &outcome {
            log::info!("feed-in price: owner earns {:.2} c/kWh", p.earn_c_per_kwh);
        }
        site.borrow_mut().price.record(unix_now_s(), outcome);
        smol::Timer::after(every).await;
    }
}

impl Daemon {
    fn start_buses(&mut self) {
        let cycle = Duration::from_secs_f64(self.config.control.cycle_s);
        let meter_period = Duration::from_millis(u64::from(self.config.meter_period_ms()));
        let stale = Duration::from_secs_f64(self.config.control.meter_stale_s);
        self.buses = bus::group_by_bus(&self.config.devices)
            .into_iter()
            .map(|(params, devices)| {
                log::info!(
                    "bus {}: {}",
                    params.transport,
                    devices
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.ex.spawn(bus::run_bus(
                    params,
                    devices,
                    cycle,
                    meter_period,
                    stale,
                    self.site.clone(),
                ))
            })
            .collect();
        for d in bus::powerwall_devices(&self.config.devices) {
            log::info!("powerwall gateway: {}", d.name);
            self.buses.push(self.ex.spawn(bus::run_powerwall(
                d,
                self.config.main.data_dir.clone(),
                cycle,
                self.site.clone(),
            )));
        }
    }

    /// The utility connection, when a dcap_url or server_url is configured.
    fn start_engine(&mut self) {
        self.engine = self.config.server.utility_url().is_some().then(|| {
            self.ex.spawn(engine::engine_task(
                self.config.clone(),
                self.site.clone(),
                self.status.clone(),
                self.durable.clone(),
                self.schedule_saved.clone(),
            ))
        });
    }

    /// The MQTT publisher, when `config mqtt` is enabled. Its own task: a broker that is
    /// down or slow never holds up the control loop.
    fn start_mqtt(&mut self) {
        self.mqtt = self.config.mqtt.enabled.then(|| {
            self.ex.spawn(crate::mqtt::run(
                self.config.mqtt.clone(),
                self.status.clone(),
                clock::SystemClock::new(),
            ))
        });
    }

    fn start_price(&mut self) {
        self.price =
            crate::control::PriceSourceConfig::from_config(&self.config.price).map(|src| {
                let every = Duration::from_secs(u64::from(self.config.price.poll_interval_s));
                self.ex.spawn(price_task(src, every, self.site.clone()))
            });
    }

    /// SIGHUP: re-read and validate; apply on success (the cached utility controls stay),
    /// keep the running configuration on failure.
    fn reload(&mut self, path: &str) {
        let now = unix_now_s();
        let new = match load_config(path) {
            Ok(c) => Rc::new(c),
            Err(e) => {
                let errors = e.error_lines();
                for m in &e.lines() {
                    log::error!("reload: {m}");
                }
                let text = format!(
                    "{path} has {} error(s), keeping the running configuration: {}",
                    errors.len(),
                    errors.first().map(String::as_str).unwrap_or("")
                );
                log::error!("reload: {text}");
                self.status.update(|s| s.push_error(now, "config", &text));
                self.status.log_event(now, "error", "config", &text);
                return;
            }
        };
        crate::logging::set_level(
            std::env::var("CSIPD_LOG")
                .ok()
                .and_then(|v| crate::logging::parse_level(&v))
                .unwrap_or(new.main.log_level.to_filter()),
        );
        let old = std::mem::replace(&mut self.config, new.clone());
        self.coordinator
            .borrow_mut()
            .reconfigure(new.clone(), coordinator::read_etc_tz().as_deref());
        let bus_relevant = |c: &Config| {
            (
                c.devices.clone(),
                c.control.cycle_s,
                c.control.meter_stale_s,
            )
        };
        if bus_relevant(&old) != bus_relevant(&new) {
            log::info!("reload: devices changed, restarting the bus tasks");
            self.buses.clear();
            {
                let mut s = self.site.borrow_mut();
                s.command_wake.clear();
                for name in bus::removed_devices(&s.devices, &new.devices) {
                    s.devices.remove(&name);
                    s.commands.remove(&name);
                }
            }
            self.start_buses();
        }
        self.site.borrow_mut().configure(&new);
        if old.price != new.price {
            self.price = None;
            self.start_price();
        }
        if (old.main.status_listen, old.main.status_allow_remote)
            != (new.main.status_listen, new.main.status_allow_remote)
        {
            if let Some(s) = self.server.take() {
                s.stop();
            }
            match start_status(&new, &self.status) {
                Ok(s) => {
                    log::info!("status server now at {}", s.url());
                    self.server = Some(s);
                }
                Err(e) => {
                    log::error!("reload: {e}; trying the previous address");
                    self.server = start_status(&old, &self.status).ok();
                }
            }
        }
        if (&old.main.data_dir, &old.main.telemetry_dir)
            != (&new.main.data_dir, &new.main.telemetry_dir)
        {
            log::info!("reload: data directories changed, reopening the store");
            self.durable.borrow_mut().flush(now, true);
            *self.durable.borrow_mut() = durable::Durable::open(&new, now, &self.status);
        }
        // The engine restarts when what it reports or how it connects changed; the
        // cached utility controls stay in the site state meanwhile.
        if old.server != new.server || old.devices != new.devices {
            log::info!(
                "reload: utility settings or devices changed, restarting the utility connection"
            );
            self.engine = None;
            self.start_engine();
        }
        // The files the section names (password, CA, certificate) may have changed
        // without the section, and a publisher stopped by a bad file should get a retry.
        let mqtt_files = [
            &new.mqtt.password_file,
            &new.mqtt.ca,
            &new.mqtt.cert,
            &new.mqtt.key,
        ]
        .iter()
        .any(|f| f.is_some());
        let mqtt_stopped = self.mqtt.as_ref().is_some_and(|t| t.is_finished());
        if old.mqtt != new.mqtt || (new.mqtt.enabled && (mqtt_files || mqtt_stopped)) {
            log::info!("reload: reconnecting to the MQTT broker");
            self.mqtt = None;
            self.start_mqtt();
        }
        set_utility_status(&self.status, &new, now);
        log::info!("reload: {path} applied (cached utility controls kept)");
        self.status
            .log_event(now, "info", "config", &format!("reloaded {path}"));
    }
}
