//! `csipd fleet`: N simulated DERs in one process, on one thread, for load tests of a
//! utility head-end (or a small virtual feeder).
//!
//! Each device has its own P-256 key, certificate and LFDI (issued here from a lab CA,
//! or read from a directory), its own [`http::Client`](Client) (one keep-alive TLS
//! connection) and its own [`csip::Engine`], the same sans-IO client core `csipd run`
//! uses, driven by the same driver ([`super::engine::drive`]): discovery, registration
//! check, DER reports, mirror readings and responses. What it measures comes from a
//! small simulated site ([`SimSite`]: PV on a clear-sky day, a varying load, the
//! utility's export limit obeyed). Every device is one task on the one `smol`
//! `LocalExecutor`; starts are spread over a ramp. Each request is timed (a wrapper
//! around the client, [`Timed`]), so the live summary and the final JSON report show
//! requests/s, latency percentiles, errors by kind, how many devices got how far, and
//! the memory the fleet took per device (RSS growth over the devices' start).

use super::clock::SystemClock;
use super::engine::{Exchange, drive};
use crate::csip::response::Delivery;
use crate::csip::{
    self, ConnectionState, EngineConfig, EngineSink, EngineStatus, InverterState,
    MeasurementSource, MeterSample, Nameplate, PhaseValues, SiteMeasurement,
};
use crate::http::{Client, ClientConfig, HttpError, Method, Response};
use crate::schedule::{self, ControlMode};
use crate::sim::site::PvProfile;
use serde::Serialize;
use smol::LocalExecutor;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

pub const FLEET_USAGE: &str = "usage: csipd fleet --devices N --dcap URL
                   (--ca-cert F --ca-key K | --certs DIR [--ca-cert F])
                   [--ramp-s S] [--seconds S] [--report FILE] [--summary-s S]
                   [--plain] [--max-poll-s S] [--post-rate-s S] [--pin PIN] [--until-reporting] [--verbose]
  runs N simulated DERs in this process, on one thread: each its own P-256 key,
  certificate and LFDI, each the real CSIP-AUS client engine (discovery, registration,
  DER reports, meter readings, responses) over its own keep-alive TLS connection, fed
  by a small simulated site (PV, load, the utility's export limit obeyed)
  --devices N     how many devices (1..100000)
  --dcap URL      the utility's DeviceCapability URL (https://HOST:PORT/dcap)
  --ca-cert F     the CA the server's certificate chains to; with --ca-key also the CA
                  the devices' certificates are issued from (the ca.pem and ca.key of
                  `csipd demo --utility-only --pki-dir DIR`)
  --ca-key K      that CA's private key
  --certs DIR     use these identities instead: NAME.pem + NAME.key pairs in DIR, or
                  GridAPPS-D's layout (DIR/certs/NAME.crt + DIR/private/NAME.pem); ca,
                  server, admin and host names are not devices; the CA is --ca-cert, else
                  DIR/ca.pem, DIR/ca.crt or DIR/certs/ca.crt
  --ramp-s S      spread the devices' starts over S seconds (default 30)
  --seconds S     stop after S seconds (default: until Ctrl-C)
  --report FILE   also write the final report (JSON) to FILE
  --summary-s S   a summary line every S seconds (default 5)
  --plain         plain IEEE 2030.5, no csipaus elements (GridAPPS-D)
  --max-poll-s S  poll no resource less often than S seconds
  --post-rate-s S post readings every S seconds until the server states a postRate
                  (default 300)
  --pin PIN       the registration PIN every device checks (default: not checked)
  --until-reporting  stop as soon as every device has posted a meter reading (with
                  --seconds as the limit); exit status 1 if --seconds came first
  --verbose       the engines' log lines (warnings are off by default: N devices)
";

/// Why the fleet could not start.
#[derive(Debug)]
pub struct FleetError(pub String);

impl std::fmt::Display for FleetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FleetError {}

fn fail(what: impl Into<String>) -> FleetError {
    FleetError(what.into())
}

/// The command line.
#[derive(Debug, Clone)]
struct Args {
    devices: usize,
    dcap: String,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    certs: Option<PathBuf>,
    ramp_s: f64,
    seconds: Option<u64>,
    report: Option<PathBuf>,
    summary_s: u64,
    plain: bool,
    max_poll_s: Option<u32>,
    post_rate_s: u32,
    pin: Option<u32>,
    until_reporting: bool,
    verbose: bool,
}

fn parse_args(args: &[String]) -> Result<Args, FleetError> {
    let mut a = Args {
        devices: 0,
        dcap: String::new(),
        ca_cert: None,
        ca_key: None,
        certs: None,
        ramp_s: 30.0,
        seconds: None,
        report: None,
        summary_s: 5,
        plain: false,
        max_poll_s: None,
        post_rate_s: 300,
        pin: None,
        until_reporting: false,
        verbose: false,
    };
    let mut words = args.iter();
    while let Some(w) = words.next() {
        let mut text = |name: &str| -> Result<String, FleetError> {
            words
                .next()
                .cloned()
                .ok_or_else(|| fail(format!("{name} needs a value")))
        };
        let number = |name: &str, v: String| -> Result<u64, FleetError> {
            v.parse::<u64>()
                .map_err(|_| fail(format!("{name} must be a whole number, got '{v}'")))
        };
        match w.as_str() {
            "--devices" => a.devices = number("--devices", text("--devices")?)? as usize,
            "--dcap" => a.dcap = text("--dcap")?,
            "--ca-cert" => a.ca_cert = Some(text("--ca-cert")?.into()),
            "--ca-key" => a.ca_key = Some(text("--ca-key")?.into()),
            "--certs" => a.certs = Some(text("--certs")?.into()),
            "--ramp-s" => a.ramp_s = number("--ramp-s", text("--ramp-s")?)? as f64,
            "--seconds" => a.seconds = Some(number("--seconds", text("--seconds")?)?),
            "--report" => a.report = Some(text("--report")?.into()),
            "--summary-s" => a.summary_s = number("--summary-s", text("--summary-s")?)?.max(1),
            "--plain" => a.plain = true,
            "--max-poll-s" => {
                a.max_poll_s = Some(
                    u32::try_from(number("--max-poll-s", text("--max-poll-s")?)?)
                        .map_err(|_| fail("--max-poll-s is too large"))?,
                )
            }
            "--post-rate-s" => {
                a.post_rate_s = u32::try_from(number("--post-rate-s", text("--post-rate-s")?)?)
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| fail("--post-rate-s must be 1 or more seconds"))?
            }
            "--pin" => {
                a.pin = Some(
                    u32::try_from(number("--pin", text("--pin")?)?)
                        .map_err(|_| fail("--pin is too large"))?,
                )
            }
            "--verbose" => a.verbose = true,
            "--until-reporting" => a.until_reporting = true,
            other => return Err(fail(format!("unknown argument '{other}'"))),
        }
    }
    if !(1..=100_000).contains(&a.devices) {
        return Err(fail("--devices N is needed, 1..100000"));
    }
    if a.dcap.is_empty() {
        return Err(fail(
            "--dcap URL is needed (the utility's DeviceCapability)",
        ));
    }
    match (&a.certs, &a.ca_cert, &a.ca_key) {
        (Some(_), _, None) | (None, Some(_), Some(_)) => {}
        (Some(_), _, Some(_)) => {
            return Err(fail(
                "--certs reads identities, --ca-key issues them: give one of the two",
            ));
        }
        _ => {
            return Err(fail(
                "the devices need identities: --ca-cert F --ca-key K (issued here) or --certs DIR",
            ));
        }
    }
    Ok(a)
}

/// One device's identity: its certificate and key files and what they say.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate's LFDI (40 hex digits) and SFDI.
    pub lfdi: String,
    pub sfdi: u64,
}

fn identity_of(name: String, cert: PathBuf, key: PathBuf) -> Result<Identity, FleetError> {
    let pem = std::fs::read(&cert).map_err(|e| fail(format!("{}: {e}", cert.display())))?;
    let id = crate::sep2::identity_from_pem(&pem)
        .map_err(|e| fail(format!("{}: {e}", cert.display())))?;
    Ok(Identity {
        name,
        cert,
        key,
        lfdi: id.lfdi,
        sfdi: id.sfdi,
    })
}

/// Issues `n` device identities from the CA `ca_cert`/`ca_key` into `dir`
/// (`device-N.pem`, `device-N.key`): a fresh P-256 key each, a CSR, and the CA's
/// signature ([`crate::pki::sign_csr`], the manufacturer step of `csipd cert sign`).
pub fn issue_identities(
    n: usize,
    ca_cert: &Path,
    ca_key: &Path,
    dir: &Path,
    now: SystemTime,
) -> Result<Vec<Identity>, FleetError> {
    let pki = |e: crate::pki::PkiError| fail(e.to_string());
    let ca = crate::pki::load_cert(ca_cert).map_err(pki)?;
    let key = crate::pki::load_key(ca_key).map_err(pki)?;
    if !crate::pki::key_matches(&ca, &key) {
        return Err(fail(format!(
            "{} is not the key of {}",
            ca_key.display(),
            ca_cert.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    (0..n)
        .map(|i| {
            let name = format!("device-{}", i + 1);
            let device_key = crate::pki::generate_p256_key().map_err(pki)?;
            let csr =
                crate::pki::build_csr(&device_key, &format!("csipd fleet {name}")).map_err(pki)?;
            let cert = crate::pki::sign_csr(&csr, &ca, &key, 365, now).map_err(pki)?;
            let cert_path = dir.join(format!("{name}.pem"));
            let key_path = dir.join(format!("{name}.key"));
            let pem = cert
                .to_pem()
                .map_err(|e| fail(format!("{name} certificate: {e}")))?;
            crate::pki::write_public_file(&cert_path, &pem).map_err(pki)?;
            crate::pki::write_private_key(&key_path, &device_key).map_err(pki)?;
            identity_of(name, cert_path, key_path)
        })
        .collect()
}

/// Names that are the server's or the CA's identity, never a device.
const NOT_DEVICES: [&str; 4] = ["ca", "server", "admin", "localhost"];

/// A device's file stem: not the CA, server or admin identity, and not a host name or
/// address (GridAPPS-D names the server's certificate after its address and port,
/// `127.0.0.1:35359`).
fn is_device_name(name: &str) -> bool {
    !NOT_DEVICES.contains(&name) && !name.contains(['.', ':'])
}

/// Reads up to `n` identities from `dir`: `NAME.pem` + `NAME.key` pairs, or
/// GridAPPS-D's `certs/NAME.crt` + `private/NAME.pem`; sorted by name.
pub fn read_identities(dir: &Path, n: usize) -> Result<Vec<Identity>, FleetError> {
    let list = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut pairs: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    for cert in list(dir) {
        let name = stem(&cert);
        let key = dir.join(format!("{name}.key"));
        if cert.extension().is_some_and(|e| e == "pem" || e == "crt")
            && key.is_file()
            && is_device_name(&name)
        {
            pairs.push((name, cert, key));
        }
    }
    if pairs.is_empty() {
        for cert in list(&dir.join("certs")) {
            let name = stem(&cert);
            let key = dir.join("private").join(format!("{name}.pem"));
            if cert.extension().is_some_and(|e| e == "crt")
                && key.is_file()
                && is_device_name(&name)
            {
                pairs.push((name, cert, key));
            }
        }
    }
    if pairs.len() < n {
        return Err(fail(format!(
            "{}: {} device identities found (NAME.pem + NAME.key, or certs/NAME.crt + \
             private/NAME.pem), --devices asks for {n}",
            dir.display(),
            pairs.len()
        )));
    }
    pairs
        .into_iter()
        .take(n)
        .map(|(name, cert, key)| identity_of(name, cert, key))
        .collect()
}

/// The CA a `--certs DIR` fleet trusts when `--ca-cert` is not given.
fn ca_in(dir: &Path) -> Option<PathBuf> {
    ["ca.pem", "ca.crt", "certs/ca.crt"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

// ------------------------------------------------------------------ the simulated site

/// One simulated site: PV on a clear-sky day (local time UTC+10, Australian East), a
/// household load that changes every few minutes, and the utility's export limit
/// obeyed (generation is curtailed so the export stays under it). Each device's sizes
/// and phases differ a little (from its index), so the fleet is not N copies.
#[derive(Debug, Clone)]
pub struct SimSite {
    pub rating_w: f64,
    pv: PvProfile,
    base_load_w: f64,
    phase_s: f64,
    /// The utility's export limit in force (W), from the engine's controls.
    pub export_limit_w: Option<f64>,
    /// Generation allowed (a utility opModConnect / opModEnergize false stops it).
    pub connected: bool,
}

impl SimSite {
    pub fn new(index: usize) -> SimSite {
        // A cheap spread in 0..1 from the index (golden-ratio sequence).
        let spread = (index as f64 * 0.618_033_988_75).fract();
        SimSite {
            rating_w: 5000.0 + 1000.0 * (index % 3) as f64,
            pv: PvProfile::DayCurve {
                peak_w: 4000.0 + 2000.0 * spread,
                sunrise_s: 6.0 * 3600.0,
                sunset_s: 18.5 * 3600.0,
            },
            base_load_w: 300.0 + 900.0 * spread,
            phase_s: 600.0 * spread,
            export_limit_w: None,
            connected: true,
        }
    }

    /// The site at `utc_s`: (load W, generation W).
    pub fn at(&self, utc_s: f64) -> (f64, f64) {
        let local_s = utc_s + 36_000.0;
        let step = ((local_s + self.phase_s) / 300.0).floor() as i64;
        let load_w = self.base_load_w * (1.0 + 0.5 * ((step % 4) as f64));
        let available = self.pv.available_w(local_s).min(self.rating_w);
        let mut gen_w = if self.connected { available } else { 0.0 };
        if let Some(limit) = self.export_limit_w {
            gen_w = gen_w.min(load_w + limit.max(0.0));
        }
        (load_w, gen_w.max(0.0))
    }

    /// One second's measurement for the engine.
    pub fn measurement(&self, utc_s: f64) -> SiteMeasurement {
        let (load_w, gen_w) = self.at(utc_s);
        let sample = |w: f64, v: f64| MeterSample {
            active_power_w: PhaseValues::total(w),
            reactive_power_var: PhaseValues::total(0.05 * w),
            voltage_v: PhaseValues::total(v),
            frequency_hz: Some(50.0),
            stored_energy_wh: None,
        };
        SiteMeasurement {
            site: Some(sample(load_w - gen_w, 239.0)),
            der: Some(sample(gen_w, 240.5)),
            inverters: vec![InverterState {
                connected: self.connected,
                available: true,
                operating: gen_w > 0.0,
                rtg_max_w: self.rating_w,
                active_power_w: Some(gen_w),
            }],
            // PV only: no battery.
            storage: None,
        }
    }
}

struct SiteSource {
    site: Rc<RefCell<SimSite>>,
    clock: SystemClock,
}

impl MeasurementSource for SiteSource {
    fn sample(&mut self) -> Option<SiteMeasurement> {
        let utc_s = self.clock.now().utc_ms as f64 / 1000.0;
        Some(self.site.borrow().measurement(utc_s))
    }
}

// ------------------------------------------------------------------ measurements

/// Latency histogram: bucket `i` holds exchanges of `1.05^i .. 1.05^(i+1)` µs (5 %
/// wide), up to about 5 minutes; fixed size, so a long run's memory does not grow.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

const BUCKETS: usize = 400;
const GROWTH: f64 = 1.05;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let i = if us <= 1 {
            0
        } else {
            ((us as f64).ln() / GROWTH.ln()) as usize
        };
        self.counts[i.min(BUCKETS - 1)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..1) in milliseconds, the upper edge of its bucket (so within
    /// 5 % above the true value); `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let want = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let upper_us = GROWTH.powi(i as i32 + 1).min(self.max_us as f64);
                return Some(upper_us / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }
}

/// How far one device got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceReport {
    pub name: String,
    pub lfdi: String,
    pub started: bool,
    /// The engine's connection state (`discovering`, `connected`, ...).
    pub state: Option<&'static str>,
    /// It found its own EndDevice (DeviceCapability → EndDeviceList → this LFDI).
    pub discovered: bool,
    /// The server knows it: its EndDevice was found and the engine went on to poll
    /// and write (Registration PIN matched or not checked).
    pub registered: bool,
    pub requests: u64,
    pub errors: u64,
    /// TLS connections opened (1 when the keep-alive connection held all along).
    pub tls_connections: u64,
    /// PUTs and POSTs the server accepted (DER reports, usage points, readings,
    /// responses, ConnectionPoint).
    pub writes_accepted: u64,
    /// MirrorMeterReading POSTs the server accepted.
    pub readings_posted: u64,
    pub responses_accepted: u64,
    /// The utility's export limit in force at the end (W).
    pub export_limit_w: Option<f64>,
    pub last_error: Option<String>,
}

/// The whole fleet's counters, shared by the device tasks on the one thread.
#[derive(Debug, Default)]
struct FleetStats {
    devices: Vec<DeviceReport>,
    latency: Histogram,
    window: Histogram,
    requests: u64,
    errors: BTreeMap<String, u64>,
    window_errors: u64,
}

/// A short name for the kind of a failed exchange.
fn error_kind(e: &HttpError) -> String {
    match e {
        HttpError::Config(_) => "config".into(),
        HttpError::Connect { .. } => "connect".into(),
        HttpError::ConnectTimeout { .. } => "connect-timeout".into(),
        HttpError::Tls { .. } => "tls".into(),
        HttpError::ReadTimeout { .. } => "read-timeout".into(),
        HttpError::ResponseDeadline { .. } => "response-deadline".into(),
        HttpError::Closed { .. } => "closed".into(),
        HttpError::Io { .. } => "io".into(),
        HttpError::Protocol { .. } => "protocol".into(),
        HttpError::Status(s) => format!("http-{}", s.status),
    }
}

impl FleetStats {
    fn record(
        &mut self,
        index: usize,
        method: Method,
        result: &Result<Response, HttpError>,
        us: u64,
        connections: u64,
    ) {
        self.latency.record(us);
        self.window.record(us);
        self.requests += 1;
        let d = &mut self.devices[index];
        d.requests += 1;
        d.tls_connections = connections;
        match result {
            Ok(_) => {
                if method != Method::Get {
                    d.writes_accepted += 1;
                }
            }
            Err(e) => {
                d.errors += 1;
                d.last_error = Some(e.to_string());
                *self.errors.entry(error_kind(e)).or_default() += 1;
                self.window_errors += 1;
            }
        }
    }
}

type Shared = Rc<RefCell<FleetStats>>;

/// The device's client with every exchange timed into the fleet's counters.
struct Timed {
    client: Client,
    stats: Shared,
    index: usize,
}

impl Exchange for Timed {
    async fn exchange<'a>(
        &'a mut self,
        method: Method,
        href: &'a str,
        body: Option<&'a [u8]>,
    ) -> Result<Response, HttpError> {
        let started = Instant::now();
        let result = self.client.request(method, href, body).await;
        let us = started.elapsed().as_micros() as u64;
        let connections = self.client.stats().connections;
        self.stats
            .borrow_mut()
            .record(self.index, method, &result, us, connections);
        result
    }
}

/// Receives one device's events: controls go to its site, the rest to the counters.
struct FleetSink {
    stats: Shared,
    index: usize,
    site: Rc<RefCell<SimSite>>,
}

impl EngineSink for FleetSink {
    fn controls(&mut self, outcome: &schedule::Outcome) {
        let limit = outcome.active.watts(ControlMode::ExpLimW);
        let connect = [ControlMode::Connect, ControlMode::Energize]
            .iter()
            .filter_map(|m| outcome.active.get(*m))
            .all(|a| !matches!(a.value, schedule::ModeValue::Flag(false)));
        {
            let mut site = self.site.borrow_mut();
            site.export_limit_w = limit;
            site.connected = connect;
        }
        self.stats.borrow_mut().devices[self.index].export_limit_w = limit;
    }

    fn status(&mut self, es: &EngineStatus) {
        let mut stats = self.stats.borrow_mut();
        let d = &mut stats.devices[self.index];
        d.state = Some(es.state.as_str());
        d.discovered |= es.edev_href.is_some();
        d.registered |= es.edev_href.is_some() && es.state == ConnectionState::Polling;
        d.readings_posted = es.readings_posted;
    }

    fn response_delivery(
        &mut self,
        _key: &schedule::ResponseKey,
        delivery: Delivery,
        _at_s: i64,
        _detail: &str,
    ) {
        if delivery == Delivery::Accepted {
            self.stats.borrow_mut().devices[self.index].responses_accepted += 1;
        }
    }
}

/// Resident set size of this process (KiB), from /proc/self/status; `None` elsewhere.
fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time this process used (user + system, s), from /proc/self/stat (clock ticks
/// of 1/100 s, Linux's USER_HZ); `None` elsewhere.
fn cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces, in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The engine configuration of device `index`.
fn engine_config(
    a: &Args,
    origin: &str,
    dcap_path: &str,
    ca: &Path,
    id: &Identity,
    index: usize,
) -> EngineConfig {
    let mut http = ClientConfig::new(origin);
    http.client_cert = Some(id.cert.clone());
    http.client_key = Some(id.key.clone());
    http.ca_bundle = Some(ca.to_path_buf());
    let site = SimSite::new(index);
    EngineConfig {
        http,
        dcap_path: dcap_path.to_string(),
        service_discovery: false,
        lfdi: id.lfdi.clone(),
        sfdi: id.sfdi,
        pin: a.pin,
        in_band_registration: false,
        // A 10-digit NMI of its own (the simulated utility records it).
        nmi: (!a.plain).then(|| format!("41{:08}", index + 1)),
        pen: 12345,
        csipaus: !a.plain,
        csipaus_v1_3: false,
        schema_2018: false,
        nameplate: Nameplate {
            rtg_max_w: site.rating_w,
            rtg_max_va: Some(site.rating_w),
            rtg_max_var: None,
            rtg_max_var_neg: None,
            rtg_v_nom: Some(230.0),
            rtg_min_pf_over_excited: None,
            rtg_min_pf_under_excited: None,
            storage: None,
            der_type: 4,
            can_limit_export: true,
            can_limit_import: false,
            can_limit_generation: true,
            can_limit_load: false,
            // The simulated site follows limits only.
            inverter_modes: Some(0),
        },
        max_poll_interval_s: a.max_poll_s,
        report_backstop_s: 3600,
        default_post_rate_s: a.post_rate_s,
        // A day of 5-minute intervals per usage point while the server is away (the
        // queue only holds what is waiting).
        reading_buffer_intervals: 288,
        rng_seed: id.sfdi,
        // Polling only: N notification listeners would be N more sockets to open.
        notification_uri: None,
    }
}

/// Runs one device from `start_at` until the executor is dropped.
async fn device_task(config: EngineConfig, index: usize, start_at: Instant, stats: Shared) {
    smol::Timer::at(start_at).await;
    stats.borrow_mut().devices[index].started = true;
    let clock = SystemClock::new();
    let client = match Client::new(config.http.clone()) {
        Ok(c) => c,
        Err(e) => {
            let mut s = stats.borrow_mut();
            *s.errors.entry("setup".into()).or_default() += 1;
            s.devices[index].last_error = Some(e.to_string());
            return;
        }
    };
    let mut engine = match csip::Engine::new(config, clock.now()) {
        Ok(e) => e,
        Err(e) => {
            let mut s = stats.borrow_mut();
            *s.errors.entry("setup".into()).or_default() += 1;
            s.devices[index].last_error = Some(e.to_string());
            return;
        }
    };
    let site = Rc::new(RefCell::new(SimSite::new(index)));
    let mut source = SiteSource {
        site: site.clone(),
        clock,
    };
    let mut sink = FleetSink {
        stats: stats.clone(),
        index,
        site,
    };
    let mut timed = Timed {
        client,
        stats,
        index,
    };
    drive(
        &mut engine,
        &mut timed,
        &clock,
        &mut source,
        &mut sink,
        |_, _| false,
    )
    .await;
}

/// The final report (`--report FILE` and the last thing printed).
#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub devices: usize,
    pub dcap: String,
    pub ramp_s: f64,
    pub run_s: f64,
    pub started: usize,
    /// Devices with a TLS connection to the server (at least one opened).
    pub connected: usize,
    pub discovered: usize,
    pub registered: usize,
    /// Devices with at least one MirrorMeterReading accepted.
    pub reporting: usize,
    pub requests: u64,
    /// Over the whole run, and after the ramp (all devices started).
    pub requests_per_s: f64,
    pub requests_per_s_after_ramp: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: f64,
    pub errors: BTreeMap<String, u64>,
    pub tls_connections: u64,
    pub readings_posted: u64,
    pub responses_accepted: u64,
    /// RSS before the devices started, at the end, and the growth per device (KiB).
    pub rss_before_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub rss_per_device_kib: Option<f64>,
    /// CPU time the fleet process used (s) and as a share of one core over the run.
    pub cpu_s: Option<f64>,
    pub cpu_pct_of_one_core: Option<f64>,
    pub per_device: Vec<DeviceReport>,
}

fn summary_line(s: &FleetStats, t_s: f64, window_s: f64) -> String {
    let d = &s.devices;
    let count = |f: fn(&DeviceReport) -> bool| d.iter().filter(|x| f(x)).count();
    let errors = if s.errors.is_empty() {
        "none".to_string()
    } else {
        s.errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ms = |q| {
        s.window
            .quantile_ms(q)
            .map_or("–".to_string(), |v| format!("{v:.1} ms"))
    };
    format!(
        "fleet {t_s:>6.0} s  started {}/{}  connected {}  discovered {}  registered {}  \
         reporting {}  |  {:.0} req/s  p50 {}  p99 {}  |  errors: {errors}",
        count(|x| x.started),
        d.len(),
        count(|x| x.tls_connections > 0),
        count(|x| x.discovered),
        count(|x| x.registered),
        count(|x| x.readings_posted > 0),
        s.window.count() as f64 / window_s.max(0.001),
        ms(0.5),
        ms(0.99),
    )
}

fn report(
    s: &FleetStats,
    a: &Args,
    run_s: f64,
    after_ramp: Option<(u64, f64)>,
    rss: (Option<u64>, Option<u64>, Option<u64>),
    cpu_s: Option<f64>,
) -> FleetReport {
    let d = &s.devices;
    let count = |f: fn(&DeviceReport) -> bool| d.iter().filter(|x| f(x)).count();
    let (before, end, peak) = rss;
    FleetReport {
        devices: d.len(),
        dcap: a.dcap.clone(),
        ramp_s: a.ramp_s,
        run_s,
        started: count(|x| x.started),
        connected: count(|x| x.tls_connections > 0),
        discovered: count(|x| x.discovered),
        registered: count(|x| x.registered),
        reporting: count(|x| x.readings_posted > 0),
        requests: s.requests,
        requests_per_s: s.requests as f64 / run_s.max(0.001),
        requests_per_s_after_ramp: after_ramp
            .filter(|(_, secs)| *secs >= 1.0)
            .map(|(n, secs)| (s.requests - n) as f64 / secs),
        latency_p50_ms: s.latency.quantile_ms(0.5),
        latency_p90_ms: s.latency.quantile_ms(0.9),
        latency_p99_ms: s.latency.quantile_ms(0.99),
        latency_max_ms: s.latency.max_us as f64 / 1000.0,
        errors: s.errors.clone(),
        tls_connections: d.iter().map(|x| x.tls_connections).sum(),
        readings_posted: d.iter().map(|x| x.readings_posted).sum(),
        responses_accepted: d.iter().map(|x| x.responses_accepted).sum(),
        rss_before_kib: before,
        rss_end_kib: end,
        rss_peak_kib: peak,
        rss_per_device_kib: before
            .zip(end)
            .map(|(b, e)| e.saturating_sub(b) as f64 / d.len().max(1) as f64),
        cpu_s,
        cpu_pct_of_one_core: cpu_s.map(|c| 100.0 * c / run_s.max(0.001)),
        per_device: d.clone(),
    }
}

/// `csipd fleet ...` (see [`FLEET_USAGE`]).
pub fn fleet_main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{FLEET_USAGE}");
        return ExitCode::SUCCESS;
    }
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprint!("csipd fleet: {e}\n{FLEET_USAGE}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(if a.verbose {
        log::LevelFilter::Info
    } else {
        log::LevelFilter::Error
    });
    let temp = std::env::temp_dir().join(format!("csipd-fleet-{}", std::process::id()));
    let code = match run(&a, &temp) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("csipd fleet: {e}");
            ExitCode::from(1)
        }
    };
    let _ = std::fs::remove_dir_all(&temp);
    code
}

fn run(a: &Args, temp: &Path) -> Result<ExitCode, FleetError> {
    let (origin, dcap_path) =
        crate::http::split_url(&a.dcap).map_err(|e| fail(format!("--dcap {}: {e}", a.dcap)))?;
    let (identities, ca) = match (&a.certs, &a.ca_cert, &a.ca_key) {
        (None, Some(ca), Some(key)) => {
            let issued =
                issue_identities(a.devices, ca, key, &temp.join("certs"), SystemTime::now())?;
            (issued, ca.clone())
        }
        (Some(dir), ca, _) => {
            let ca = ca.clone().or_else(|| ca_in(dir)).ok_or_else(|| {
                fail(format!(
                    "--certs {}: no ca.pem, ca.crt or certs/ca.crt there; give --ca-cert",
                    dir.display()
                ))
            })?;
            (read_identities(dir, a.devices)?, ca)
        }
        _ => return Err(fail("no identities (see --help)")),
    };
    println!(
        "csipd fleet: {} devices against {} (CA {}), starts spread over {} s",
        identities.len(),
        a.dcap,
        ca.display(),
        a.ramp_s
    );
    let configs: Vec<EngineConfig> = identities
        .iter()
        .enumerate()
        .map(|(i, id)| engine_config(a, &origin, &dcap_path, &ca, id, i))
        .collect();
    let stats: Shared = Rc::new(RefCell::new(FleetStats {
        devices: identities
            .iter()
            .map(|id| DeviceReport {
                name: id.name.clone(),
                lfdi: id.lfdi.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }));
    drop(identities);
    let rss_before = rss_kib("VmRSS:");
    let ex: Rc<LocalExecutor<'static>> = Rc::new(LocalExecutor::new());
    let started = Instant::now();
    let n = configs.len();
    for (i, config) in configs.into_iter().enumerate() {
        let offset = Duration::from_secs_f64(a.ramp_s * i as f64 / n as f64);
        ex.spawn(device_task(config, i, started + offset, stats.clone()))
            .detach();
    }
    let ramp_end = started + Duration::from_secs_f64(a.ramp_s);
    // Requests counted when the ramp ended (for requests/s after the ramp).
    let ramp_requests: Rc<Cell<Option<u64>>> = Rc::new(Cell::new(None));
    let deadline = a.seconds.map(Duration::from_secs);
    let every = Duration::from_secs(a.summary_s);
    let main = {
        let stats = stats.clone();
        let ramp_requests = ramp_requests.clone();
        async move {
            let summaries = async {
                let mut last = Instant::now();
                loop {
                    smol::Timer::after(every).await;
                    let now = Instant::now();
                    let mut s = stats.borrow_mut();
                    if ramp_requests.get().is_none() && now >= ramp_end {
                        ramp_requests.set(Some(s.requests));
                    }
                    let line = summary_line(
                        &s,
                        (now - started).as_secs_f64(),
                        (now - last).as_secs_f64(),
                    );
                    println!("{line}");
                    let _ = std::io::stdout().flush();
                    s.window = Histogram::default();
                    s.window_errors = 0;
                    last = now;
                    drop(s);
                }
            };
            let all_reporting = async {
                if !a.until_reporting {
                    return std::future::pending().await;
                }
                loop {
                    smol::Timer::after(Duration::from_millis(500)).await;
                    if stats.borrow().devices.iter().all(|d| d.readings_posted > 0) {
                        return ExitCode::SUCCESS;
                    }
                }
            };
            let stop = async {
                let code = super::demo::until_signal_or(deadline).await;
                // --until-reporting: the time ran out first.
                if a.until_reporting {
                    ExitCode::from(1)
                } else {
                    code
                }
            };
            smol::future::or(smol::future::or(all_reporting, stop), summaries).await
        }
    };
    let code = smol::block_on(ex.run(main));
    let run_s = started.elapsed().as_secs_f64();
    let rss_end = rss_kib("VmRSS:");
    let rss_peak = rss_kib("VmHWM:");
    let after_ramp = ramp_requests
        .get()
        .map(|n| (n, (Instant::now() - ramp_end).as_secs_f64()));
    let s = stats.borrow();
    let rep = report(
        &s,
        a,
        run_s,
        after_ramp,
        (rss_before, rss_end, rss_peak),
        cpu_s(),
    );
    println!("{}", summary_line(&s, run_s, run_s));
    let json = serde_json::to_string_pretty(&rep).map_err(|e| fail(format!("report: {e}")))?;
    if let Some(path) = &a.report {
        std::fs::write(path, &json).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        println!("report: {}", path.display());
    }
    println!(
        "devices {}  connected {}  discovered {}  registered {}  reporting {}  \
         {:.0} req/s ({} after the ramp)  p50 {}  p99 {}  RSS {} per device  CPU {}",
        rep.devices,
        rep.connected,
        rep.discovered,
        rep.registered,
        rep.reporting,
        rep.requests_per_s,
        rep.requests_per_s_after_ramp
            .map_or("–".to_string(), |v| format!("{v:.0} req/s")),
        rep.latency_p50_ms
            .map_or("–".to_string(), |v| format!("{v:.1} ms")),
        rep.latency_p99_ms
            .map_or("–".to_string(), |v| format!("{v:.1} ms")),
        rep.rss_per_device_kib
            .map_or("–".to_string(), |v| format!("{v:.0} KiB")),
        rep.cpu_pct_of_one_core
            .map_or("–".to_string(), |v| format!("{v:.0} % of one core")),
    );
    if a.report.is_none() {
        println!("{json}");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_five_percent() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(us * 10);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((50.0..=52.6).contains(&p50), "{p50}");
        assert!((99.0..=104.0).contains(&p99), "{p99}");
        assert_eq!(h.quantile_ms(1.0), Some(100.0));
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn the_site_obeys_the_export_limit_and_differs_by_device() {
        let noon_utc = 1_760_000_000.0 - (1_760_000_000.0 % 86_400.0) + 2.0 * 3600.0;
        let mut site = SimSite::new(1);
        let (load, gen_free) = site.at(noon_utc);
        assert!(
            gen_free > load + 1000.0,
            "noon PV exports: {gen_free} vs {load}"
        );
        site.export_limit_w = Some(500.0);
        let (load, gen_w) = site.at(noon_utc);
        assert!((gen_w - (load + 500.0)).abs() < 1e-9);
        let m = site.measurement(noon_utc);
        assert_eq!(m.site.unwrap().active_power_w.total, Some(-500.0));
        site.connected = false;
        assert_eq!(site.at(noon_utc).1, 0.0);
        assert_ne!(SimSite::new(2).at(noon_utc), SimSite::new(3).at(noon_utc));
    }

    #[test]
    fn arguments_need_devices_a_server_and_identities() {
        let args = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(
            args(&[
                "--dcap",
                "https://x/dcap",
                "--ca-cert",
                "c",
                "--ca-key",
                "k"
            ])
            .is_err_and(|e| e.0.contains("--devices"))
        );
        assert!(
            args(&["--devices", "3", "--dcap", "https://x/dcap"])
                .is_err_and(|e| e.0.contains("identities"))
        );
        assert!(
            args(&[
                "--devices",
                "3",
                "--dcap",
                "u",
                "--certs",
                "d",
                "--ca-key",
                "k"
            ])
            .is_err_and(|e| e.0.contains("one of the two"))
        );
        let a = args(&[
            "--devices",
            "3",
            "--dcap",
            "https://x/dcap",
            "--certs",
            "d",
            "--ramp-s",
            "2",
        ])
        .expect("valid");
        assert_eq!((a.devices, a.ramp_s), (3, 2.0));
    }

    #[test]
    fn identities_are_issued_from_the_ca_and_read_back() {
        let dir = std::env::temp_dir().join(format!("csipd-fleet-test-{}", std::process::id()));
        let lab = crate::sim::utility::lab_pki::LabPki::create(&dir.join("lab"), 1_760_000_000)
            .expect("lab PKI");
        let issued = issue_identities(
            3,
            &lab.ca_cert,
            &lab.ca_key,
            &dir.join("certs"),
            SystemTime::now(),
        )
        .expect("issued");
        assert_eq!(issued.len(), 3);
        assert!(issued.iter().all(|i| i.lfdi.len() == 40));
        assert_ne!(issued[0].lfdi, issued[1].lfdi);
        let ca = crate::pki::load_cert(&lab.ca_cert).unwrap();
        let cert = crate::pki::load_cert(&issued[2].cert).unwrap();
        assert!(
            cert.verify(&ca.public_key().unwrap()).unwrap(),
            "signed by the lab CA"
        );
        let read = read_identities(&dir.join("certs"), 3).expect("read back");
        assert_eq!(
            read.iter().map(|i| &i.lfdi).collect::<Vec<_>>(),
            issued.iter().map(|i| &i.lfdi).collect::<Vec<_>>()
        );
        assert!(read_identities(&dir.join("certs"), 4).is_err_and(|e| e.0.contains("3 device")));
        // The lab PKI's own directory: the device pair only (ca and server are not devices).
        let lab_ids = read_identities(&dir.join("lab"), 1).expect("lab device");
        assert_eq!(lab_ids[0].lfdi, lab.device_lfdi);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
