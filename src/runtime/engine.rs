//! The CSIP-AUS engine wired into the runtime. [`drive`] is the thin async driver of
//! the sans-IO [`csip::Engine`]: it owns the `http` client and the system clock, sends
//! the engine's requests, feeds back the answers, a measurement a second and the
//! timeouts, and hands the engine's events to a sink. [`engine_task`] runs it for
//! `csipd run`: the site state is sampled for DER reports and mirror readings, the
//! active controls become the cached utility controls the coordinator merges (kept
//! while the server is unreachable and across reloads), responses are settled in the
//! store's ledger, and the status goes into the snapshot.

use super::clock::SystemClock;
use super::durable::{SavedControls, SharedDurable};
use super::site::{DeviceState, SharedSite, SiteState};
use crate::clock::Now;
use crate::config::Config;
use crate::control::UtilityControls;
use crate::csip::ConnectionState;
use crate::csip::response::Delivery;
use crate::csip::{
    self, EngineConfig, EngineSink, EngineStatus, InverterState, MeasurementSource, MeterSample,
    PhaseValues, SiteMeasurement, StorageMeasurement, StorageNameplate,
};
use crate::devices::OperatingState;
use crate::devices::sunspec::AcValues;
use crate::http::{Client, HttpError, Method, Response};
use crate::schedule;
use crate::status::{self, SnapshotHandle};
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

/// How long the engine waits for every inverter's rating before DERCapability is sent
/// with the ratings known (discovery and everything else start at once).
const RATING_WAIT_MS: u64 = 30_000;
/// The scheduler's memory is copied out of the engine this often (for a restart of the
/// engine on reload, and for the store).
const STATE_SAVE_EVERY_MS: u64 = 10_000;
/// Measurements are sampled this often.
const SAMPLE_EVERY_MS: u64 = 1_000;

/// What [`drive`] sends the engine's requests with: an [`http::Client`](Client) (one
/// keep-alive connection), or a wrapper around one that measures each exchange
/// (`csipd fleet`).
pub trait Exchange {
    /// Sends one request (`href` as the server gave it) and waits for its answer.
    fn exchange<'a>(
        &'a mut self,
        method: Method,
        href: &'a str,
        body: Option<&'a [u8]>,
    ) -> impl Future<Output = Result<Response, HttpError>> + 'a;
}

impl Exchange for Client {
    fn exchange<'a>(
        &'a mut self,
        method: Method,
        href: &'a str,
        body: Option<&'a [u8]>,
    ) -> impl Future<Output = Result<Response, HttpError>> + 'a {
        self.request(method, href, body)
    }
}

/// Runs `engine` until `tick` returns true: sends each request the engine hands out
/// with `client` and feeds the answer back, samples `source` once a second, calls
/// [`csip::Engine::handle_timeout`] when the engine's timeout passes, and hands every
/// event to `sink`. `tick` runs after each round (to read views, feed the nameplate,
/// or stop). Requests go out one at a time over the client's one connection.
pub async fn drive<X: Exchange>(
    engine: &mut csip::Engine,
    client: &mut X,
    clock: &SystemClock,
    source: &mut dyn MeasurementSource,
    sink: &mut dyn EngineSink,
    mut tick: impl FnMut(&mut csip::Engine, Now) -> bool,
) {
    let mut next_sample_ms = clock.now().mono_ms;
    loop {
        let now = clock.now();
        if now.mono_ms >= next_sample_ms {
            engine.handle_measurements(source.sample(), now);
            next_sample_ms = (next_sample_ms + SAMPLE_EVERY_MS).max(now.mono_ms + 1);
        }
        if engine.poll_timeout().is_some_and(|t| t <= now.mono_ms) {
            engine.handle_timeout(now);
        }
        while let Some(event) = engine.poll_event() {
            sink.deliver(&event);
        }
        while let Some(request) = engine.poll_request() {
            let body = request.body.as_deref().map(str::as_bytes);
            // The client takes the href as the server gave it (a path, or an absolute URL
            // it checks is on the same server).
            let mut exchange = std::pin::pin!(client.exchange(request.method, &request.href, body));
            // A slow answer does not stop the measurements (the averages need every
            // second): sample while waiting.
            let result = loop {
                let sample_at = clock.instant_of(next_sample_ms);
                let tick = async {
                    smol::Timer::at(sample_at).await;
                    None
                };
                match smol::future::or(async { Some((&mut exchange).await) }, tick).await {
                    Some(result) => break result,
                    None => {
                        let now = clock.now();
                        engine.handle_measurements(source.sample(), now);
                        next_sample_ms = (next_sample_ms + SAMPLE_EVERY_MS).max(now.mono_ms + 1);
                        while let Some(event) = engine.poll_event() {
                            sink.deliver(&event);
                        }
                    }
                }
            };
            engine.handle_response(request.id, result, clock.now());
            while let Some(event) = engine.poll_event() {
                sink.deliver(&event);
            }
        }
        let now = clock.now();
        if tick(engine, now) {
            return;
        }
        while let Some(event) = engine.poll_event() {
            sink.deliver(&event);
        }
        let wake_ms = engine
            .poll_timeout()
            .map_or(next_sample_ms, |t| t.min(next_sample_ms));
        if wake_ms > now.mono_ms {
            smol::Timer::at(clock.instant_of(wake_ms)).await;
        }
    }
}

fn phases(total: Option<f64>, per: [Option<f64>; 3]) -> PhaseValues {
    PhaseValues {
        total,
        a: per[0],
        b: per[1],
        c: per[2],
    }
}

/// A meter sample from one device's AC values.
pub fn sample_of(ac: &AcValues) -> MeterSample {
    MeterSample {
        active_power_w: phases(ac.w, [ac.phases[0].w, ac.phases[1].w, ac.phases[2].w]),
        reactive_power_var: phases(
            ac.var,
            [ac.phases[0].var, ac.phases[1].var, ac.phases[2].var],
        ),
        voltage_v: phases(ac.v, [ac.phases[0].v, ac.phases[1].v, ac.phases[2].v]),
        frequency_hz: ac.hz,
        stored_energy_wh: None,
    }
}

fn sum(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut total = None;
    for v in values {
        total = Some(total.unwrap_or(0.0) + v?);
    }
    total
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let known: Vec<f64> = values.flatten().collect();
    (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
}

/// The DER fleet as one meter: powers add up (a value unknown on any inverter makes the
/// sum unknown), voltage and frequency are averaged.
pub fn fleet_sample(acs: &[&AcValues]) -> Option<MeterSample> {
    if acs.is_empty() {
        return None;
    }
    let p = |f: &dyn Fn(&AcValues) -> Option<f64>| sum(acs.iter().map(|a| f(a)));
    let m = |f: &dyn Fn(&AcValues) -> Option<f64>| mean(acs.iter().map(|a| f(a)));
    Some(MeterSample {
        active_power_w: PhaseValues {
            total: p(&|a| a.w),
            a: p(&|a| a.phases[0].w),
            b: p(&|a| a.phases[1].w),
            c: p(&|a| a.phases[2].w),
        },
        reactive_power_var: PhaseValues {
            total: p(&|a| a.var),
            a: p(&|a| a.phases[0].var),
            b: p(&|a| a.phases[1].var),
            c: p(&|a| a.phases[2].var),
        },
        voltage_v: PhaseValues {
            total: m(&|a| a.v),
            a: m(&|a| a.phases[0].v),
            b: m(&|a| a.phases[1].v),
            c: m(&|a| a.phases[2].v),
        },
        frequency_hz: m(&|a| a.hz),
        stored_energy_wh: None,
    })
}

/// The batteries as one (CSIP-AUS v1.3 storage): outputs and stored energy add up,
/// the state of charge is the capacity-weighted mean (the plain mean while a capacity
/// is not configured). A value is known only when every storage device's is (a
/// battery that stopped answering makes the sum unknown, not smaller). `None` without
/// a storage device that was ever read.
pub fn storage_measurement(
    s: &SiteState,
    fresh: impl Fn(&DeviceState) -> bool,
) -> Option<StorageMeasurement> {
    let devices: Vec<(&DeviceState, Option<f64>)> = s
        .storage
        .iter()
        .filter_map(|(name, cap)| s.devices.get(name).map(|d| (d, cap.or(d.capacity_wh))))
        .filter(|(d, _)| d.last_good_at.is_some())
        .collect();
    if devices.is_empty() {
        return None;
    }
    let all_fresh = devices.iter().all(|(d, _)| fresh(d));
    let states: Vec<InverterState> = devices
        .iter()
        .map(|(d, _)| inverter_state(d, fresh(d)))
        .collect();
    let active_power_w = all_fresh
        .then(|| sum(devices.iter().map(|(d, _)| d.ac.as_ref().and_then(|a| a.w))))
        .flatten();
    let socs: Option<Vec<f64>> = all_fresh
        .then(|| devices.iter().map(|(d, _)| d.soc_pct).collect())
        .flatten();
    let caps: Option<Vec<f64>> = devices.iter().map(|(_, c)| *c).collect();
    let (soc_pct, stored_wh) = match (&socs, &caps) {
        (Some(socs), Some(caps)) => {
            let total: f64 = caps.iter().sum();
            let stored: f64 = socs.iter().zip(caps).map(|(p, c)| p / 100.0 * c).sum();
            ((total > 0.0).then(|| 100.0 * stored / total), Some(stored))
        }
        (Some(socs), None) => (Some(socs.iter().sum::<f64>() / socs.len() as f64), None),
        _ => (None, None),
    };
    Some(StorageMeasurement {
        active_power_w,
        stored_wh,
        soc_pct,
        connected: states.iter().any(|i| i.connected),
        available: states.iter().any(|i| i.available),
        operating: states.iter().any(|i| i.operating),
    })
}

/// The batteries' ratings as read (SunSpec 124 WChaMax, else 120/702's rated rate, for
/// the charge rate; 120/702's rated discharge rate, else WChaMax, within the inverter's
/// rating for the discharge rate; the capacity configured (`capacity_wh`)
/// or else model 713 WHRtg; MinRsvPct of it for the reserve), starting from
/// `configured` (the UCI `rated_w`/`capacity_wh`).
/// opModStorageTargetW is offered while no storage device has been read, and then only
/// when one has model 124. `None` without storage devices.
pub fn storage_nameplate(
    s: &SiteState,
    configured: Option<&StorageNameplate>,
) -> Option<StorageNameplate> {
    let configured = configured?;
    let read: Vec<(&DeviceState, Option<f64>)> = s
        .storage
        .iter()
        .filter_map(|(name, cap)| s.devices.get(name).map(|d| (d, cap.or(d.capacity_wh))))
        .filter(|(d, _)| d.controls.is_some())
        .collect();
    if read.is_empty() || read.len() < s.storage.len() {
        return Some(configured.clone());
    }
    let charge = |d: &DeviceState| {
        d.max_charge_w
            .or(d.rated_charge_w)
            .or(d.rating_w)
            .unwrap_or(0.0)
    };
    let discharge = |d: &DeviceState| {
        let rate = d.rated_discharge_w.or(d.max_charge_w);
        match (rate, d.rating_w) {
            (Some(c), Some(r)) => c.min(r),
            (c, r) => c.or(r).unwrap_or(0.0),
        }
    };
    let reserves: Option<f64> = read
        .iter()
        .map(|(d, cap)| Some(d.min_reserve_pct? / 100.0 * (*cap)?))
        .sum();
    Some(StorageNameplate {
        max_charge_rate_w: read.iter().map(|(d, _)| charge(d)).sum(),
        max_discharge_rate_w: read.iter().map(|(d, _)| discharge(d)).sum(),
        max_wh: read
            .iter()
            .map(|(_, cap)| *cap)
            .sum::<Option<f64>>()
            .or(configured.max_wh),
        min_wh: reserves,
        can_target: read
            .iter()
            .any(|(d, _)| d.controls.is_some_and(|c| c.charge_limit)),
    })
}

/// Samples the shared site state for the engine (once a second).
pub struct SiteSource {
    pub site: SharedSite,
}

fn inverter_state(d: &DeviceState, fresh: bool) -> InverterState {
    InverterState {
        connected: fresh && d.connected.unwrap_or(true),
        available: fresh,
        operating: fresh
            && matches!(
                d.state,
                Some(
                    OperatingState::Running | OperatingState::Throttled | OperatingState::Starting
                ) | None
            ),
        rtg_max_w: d.rating_w.unwrap_or(0.0),
        active_power_w: if fresh {
            d.ac.as_ref().and_then(|ac| ac.w)
        } else {
            None
        },
    }
}

impl MeasurementSource for SiteSource {
    fn sample(&mut self) -> Option<SiteMeasurement> {
        let s = self.site.borrow();
        let now = Instant::now();
        let fresh = |d: &DeviceState| !d.is_stale(now, s.stale_after_s);
        let site = s
            .meter_name
            .as_ref()
            .and_then(|n| s.devices.get(n))
            .filter(|d| fresh(d))
            .and_then(|d| d.ac.as_ref())
            .map(sample_of);
        let inverters: Vec<&DeviceState> = s
            .inverter_names
            .iter()
            .filter_map(|n| s.devices.get(n))
            .collect();
        let fresh_acs: Vec<&AcValues> = inverters
            .iter()
            .filter(|d| fresh(d))
            .filter_map(|d| d.ac.as_ref())
            .collect();
        // Every inverter must be fresh for a fleet total that means anything.
        let der = (fresh_acs.len() == inverters.len())
            .then(|| fleet_sample(&fresh_acs))
            .flatten();
        if site.is_none() && der.is_none() {
            return None;
        }
        Some(SiteMeasurement {
            site,
            der,
            inverters: inverters
                .iter()
                .map(|d| inverter_state(d, fresh(d)))
                .collect(),
            storage: storage_measurement(&s, fresh),
        })
    }
}

/// Turns the site state into the engine's device events: each device's SunSpec event
/// bits, comms (its last read failed or not), staleness (the one staleness rule), and
/// each new failed write as a control not applied. The engine logs only changes of
/// the level kinds, so they are handed in every round.
#[derive(Debug, Default)]
pub struct DeviceWatch {
    writes_failed: std::collections::BTreeMap<String, u64>,
}

impl DeviceWatch {
    /// The events of every device in `site` at `now`.
    pub fn events(
        &mut self,
        site: &super::site::SiteState,
        now: Instant,
    ) -> Vec<csip::DeviceEvent> {
        use csip::DeviceEvent;
        let mut out = Vec::new();
        for (name, d) in &site.devices {
            if let Some(events) = d.events {
                out.push(DeviceEvent::Alarms {
                    device: name.clone(),
                    events,
                });
            }
            // Before its first answer a device is neither lost nor stale yet.
            if d.reads_ok + d.reads_failed > 0 {
                out.push(DeviceEvent::Comms {
                    device: name.clone(),
                    up: !d.failing,
                });
            }
            if d.reads_ok > 0 {
                out.push(DeviceEvent::Stale {
                    device: name.clone(),
                    stale: d.is_stale(now, site.stale_after_s),
                });
            }
            let seen = self.writes_failed.entry(name.clone()).or_insert(0);
            if d.writes_failed > *seen {
                out.push(DeviceEvent::ControlNotApplied {
                    device: name.clone(),
                    detail: d
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "write failed".into()),
                });
            }
            *seen = d.writes_failed;
        }
        out
    }
}

/// Receives the engine's controls and status.
pub struct RuntimeSink {
    pub site: SharedSite,
    pub status: SnapshotHandle,
    pub durable: SharedDurable,
    last_state: Option<ConnectionState>,
    last_error: Option<String>,
}

impl RuntimeSink {
    pub fn new(site: SharedSite, status: SnapshotHandle, durable: SharedDurable) -> Self {
        RuntimeSink {
            site,
            status,
            durable,
            last_state: None,
            last_error: None,
        }
    }
}

impl EngineSink for RuntimeSink {
    fn controls(&mut self, outcome: &schedule::Outcome) {
        let controls = UtilityControls::from_schedule(&outcome.active, outcome.ramp);
        for note in &outcome.notes {
            log::info!("schedule: {note}");
        }
        {
            let mut s = self.site.borrow_mut();
            if s.utility.as_ref() != Some(&controls) {
                log::info!("utility controls: {controls}");
            }
            s.utility = Some(controls);
        }
        // An event the scheduler has stopped (cancelled, superseded, rejected) is not
        // upcoming any more: it leaves the status with this outcome, before any response
        // about it is sent, not at the next refresh from the tree (`UpcomingWatch`).
        let stopped = |mrid: &str| {
            outcome
                .state
                .events
                .get(mrid)
                .is_some_and(|r| r.ended.is_some() || r.stop.is_some())
        };
        self.status.update(|snap| {
            snap.upcoming_events.retain(|e| !stopped(&e.mrid));
        });
        // The scheduler's memory and due responses reach the disk before the engine
        // POSTs any response (the store flags ledger entries urgent).
        let now = super::unix_now_s();
        let mut d = self.durable.borrow_mut();
        d.save_controls(&SavedControls {
            active: outcome.active.clone(),
            ramp: outcome.ramp,
            at_s: now,
        });
        if let Some(store) = d.store.as_mut() {
            store.save_schedule(&outcome.state, &outcome.responses);
        }
        d.flush(now, false);
    }

    fn response_delivery(
        &mut self,
        key: &schedule::ResponseKey,
        delivery: Delivery,
        at_s: i64,
        detail: &str,
    ) {
        let delivery_name = match delivery {
            Delivery::Accepted => "accepted",
            Delivery::Refused => "refused",
            Delivery::RetryLater => "retry_later",
        };
        {
            let mut d = self.durable.borrow_mut();
            if let Some(store) = d.store.as_mut() {
                let ledger_key = crate::store::ledger_key(key);
                let marked = match delivery {
                    Delivery::Accepted => store.ledger_mark_accepted(&ledger_key, at_s),
                    Delivery::Refused => store.ledger_mark_refused(&ledger_key, at_s, detail),
                    Delivery::RetryLater => store.ledger_mark_sent(&ledger_key, at_s),
                };
                if let Err(e) = marked {
                    // Only when the store was not there as the response fell due.
                    log::warn!("response {} to {}: {e}", key.status.code(), key.event_mrid);
                }
                // Settled entries are urgent: written now, so a restart does not resend
                // them. The window left is between the server's 2xx and this commit: a
                // crash there sends the response again (at least once, never lost).
                d.flush(at_s, false);
            }
        }
        // Shown and logged once the ledger has it, so what the status and the log say
        // was delivered is what a restart will not send again.
        log::info!(
            "DERControlResponse {} ({:?}) for {}: {delivery_name}",
            key.status.code(),
            key.status,
            key.event_mrid
        );
        self.status.update(|snap| {
            snap.push_response(status::ResponseSent {
                mrid: key.event_mrid.clone(),
                status: key.status,
                delivery: delivery_name.to_string(),
                at_unix_s: at_s,
            })
        });
    }

    fn status(&mut self, es: &EngineStatus) {
        let now = super::unix_now_s();
        {
            let mut site = self.site.borrow_mut();
            site.clock_offset_s = es.clock_offset_s;
            // The utility's export price, for the owner's negative-price rule when it is
            // the chosen source (the tracker ignores it otherwise).
            site.price
                .record_utility(crate::csip::pricing::export_price_now(&es.prices));
        }
        let new_error = es
            .last_error
            .clone()
            .filter(|e| self.last_error.as_ref() != Some(e));
        self.status.update(|snap| {
            let url = snap.utility.server_url.clone();
            let utility = es.to_utility(url, snap.utility.since_unix_s);
            let changed = utility.state != snap.utility.state;
            snap.utility = utility;
            if changed {
                snap.utility.since_unix_s = now;
            }
            if let Some(e) = &new_error {
                snap.push_error(now, "csip", e);
            }
        });
        if self.last_state != Some(es.state) {
            let text = format!("utility connection: {}", es.state.as_str());
            log::info!("{text}");
            self.status.log_event(now, "info", "csip", &text);
            self.last_state = Some(es.state);
        }
        if let Some(e) = new_error {
            log::warn!("csip: {e}");
            self.status.log_event(now, "warn", "csip", &e);
        }
        self.last_error = es.last_error.clone();
    }
}

/// When the status's upcoming events are made again from the engine's tree: at once
/// when the tree changed (the list read that added, changed or cancelled an event: a
/// cancelled event leaves the status in the same round as the schedule drops it), when
/// the soonest of them starts (it is no longer upcoming), and every
/// `STATE_SAVE_EVERY_MS` besides (a server clock offset moving the times).
#[derive(Debug, Default)]
pub struct UpcomingWatch {
    /// The tree version the shown list was made from.
    version: Option<u64>,
    /// Server-time start of the soonest event shown.
    next_start_s: Option<i64>,
}

impl UpcomingWatch {
    /// Whether the list must be made again for tree `version` at `server_now_s`.
    pub fn due(&self, version: u64, server_now_s: i64) -> bool {
        self.version != Some(version) || self.next_start_s.is_some_and(|t| server_now_s >= t)
    }

    /// The list made from tree `version` is `shown` (soonest first).
    pub fn shown(&mut self, version: u64, shown: &[status::UpcomingEvent]) {
        self.version = Some(version);
        self.next_start_s = shown.first().map(|e| e.start_unix_s);
    }
}

/// The utility's events that have not started yet (scheduled, start after `now_s` in
/// server time), soonest first, for the status page.
pub fn upcoming_events(tree: &csip::discovery::Tree, now_s: i64) -> Vec<status::UpcomingEvent> {
    let mut out = Vec::new();
    for state in tree.programs.values().flatten() {
        let program = &state.program;
        for control in &state.controls {
            let event = csip::discovery::event_input(
                control,
                &program.mrid,
                &state.curves,
                &mut Vec::new(),
            );
            if event.status.current != schedule::StatusCode::Scheduled || event.start_s <= now_s {
                continue;
            }
            let c = &event.controls;
            let mut limits: Vec<status::EventLimit> = [
                (status::LimitMode::Export, c.exp_lim_w),
                (status::LimitMode::Import, c.imp_lim_w),
                (status::LimitMode::Generation, c.gen_lim_w),
                (status::LimitMode::Load, c.load_lim_w),
            ]
            .into_iter()
            .filter_map(|(mode, p)| {
                p.map(|p| status::EventLimit {
                    mode,
                    value_w: Some(p.watts()),
                    connect: None,
                })
            })
            .collect();
            if let Some(on) = c.connect.or(c.energize) {
                limits.push(status::EventLimit {
                    mode: status::LimitMode::Connect,
                    value_w: None,
                    connect: Some(on),
                });
            }
            out.push(status::UpcomingEvent {
                mrid: event.mrid.clone(),
                description: control.description.clone(),
                program: Some(
                    program
                        .description
                        .clone()
                        .unwrap_or_else(|| program.mrid.clone()),
                ),
                start_unix_s: event.start_s,
                end_unix_s: event.start_s + i64::from(event.duration_s),
                limits,
            });
        }
    }
    out.sort_by_key(|e| e.start_unix_s);
    out
}

/// The engine's configuration: from the UCI config and the client certificate's
/// identity; the fleet rating from the inverters' ratings known so far.
pub fn engine_config(config: &Config, rating_w: f64) -> Result<EngineConfig, csip::EngineError> {
    let mut ec = EngineConfig::from_config_and_certificate(config)?;
    if ec.nameplate.rtg_max_w <= 0.0 {
        ec.nameplate.rtg_max_w = rating_w;
    }
    Ok(ec)
}

/// The fleet's rating as far as the inverters told it, and whether all did.
/// The fleet's rated apparent and reactive power (models 120/702), when every inverter
/// says (a partial sum would understate the site).
fn fleet_va_var(site: &SharedSite) -> (Option<f64>, Option<f64>) {
    let s = site.borrow();
    let all = |f: &dyn Fn(&DeviceState) -> Option<f64>| -> Option<f64> {
        s.inverter_names
            .iter()
            .map(|n| s.devices.get(n).and_then(f))
            .sum()
    };
    (all(&|d| d.rating_va), all(&|d| d.rating_var))
}

/// The fleet's minimum power factor ratings, over- and under-excited: the least capable
/// inverter's (the largest minimum), when every inverter says.
fn fleet_min_pf(site: &SharedSite) -> (Option<f64>, Option<f64>) {
    let s = site.borrow();
    let worst = |f: &dyn Fn(&DeviceState) -> Option<f64>| -> Option<f64> {
        let all: Option<Vec<f64>> = s
            .inverter_names
            .iter()
            .map(|n| s.devices.get(n).and_then(f))
            .collect();
        all.and_then(|v| v.into_iter().reduce(f64::max))
    };
    (
        worst(&|d| d.min_pf_over_excited),
        worst(&|d| d.min_pf_under_excited),
    )
}

/// The inverter settings (curves, power factor, var; [`schedule::ControlMode::bit`]
/// mask) every controlled device offers by its SunSpec models, once each has been read
/// (`None` before: not known yet). A mode one inverter lacks is not claimed: csipd
/// does not say the site runs a curve while one of its inverters cannot.
pub fn fleet_inverter_modes(site: &super::site::SiteState) -> Option<u32> {
    site.inverter_names
        .iter()
        .map(|n| site.devices.get(n).and_then(|d| d.controls))
        .try_fold(u32::MAX, |acc, c| c.map(|c| acc & c.inverter_modes))
        .map(|m| if site.inverter_names.is_empty() { 0 } else { m })
}

fn fleet_rating(site: &SharedSite) -> (f64, bool) {
    let s = site.borrow();
    let ratings: Vec<Option<f64>> = s
        .inverter_names
        .iter()
        .map(|n| s.devices.get(n).and_then(|d| d.rating_w))
        .collect();
    (
        ratings.iter().flatten().sum::<f64>(),
        ratings.iter().all(Option::is_some),
    )
}

/// Runs the engine until the task is dropped. The scheduler's memory comes from the
/// store (or, after a reload restarted the engine, from `saved`), so no response is
/// sent twice and no randomisation redrawn. Discovery starts at once; DERCapability
/// follows when the inverters' ratings are known (or after [`RATING_WAIT_MS`]).
pub async fn engine_task(
    config: Rc<Config>,
    site: SharedSite,
    status: SnapshotHandle,
    durable: SharedDurable,
    saved: Rc<RefCell<Option<schedule::State>>>,
) {
    let clock = SystemClock::new();
    let now = super::unix_now_s();
    let ec = match engine_config(&config, 0.0) {
        Ok(ec) => ec,
        Err(e) => {
            let e = e.to_string();
            log::error!("utility connection not started: {e}");
            status.update(|s| {
                s.set_connection_state(ConnectionState::Offline, now);
                s.push_error(now, "csip", &e);
            });
            status.log_event(now, "error", "csip", &e);
            return;
        }
    };
    let mut ec = ec;
    // Subscriptions only with a listener that runs: a notificationURI nothing answers
    // at would only make the server's notifications fail.
    let listener = start_listener(&config, &status, now).await;
    if listener.is_none() {
        ec.notification_uri = None;
    }
    let mut nameplate = ec.nameplate.clone();
    let mut nameplate_sent = nameplate.rtg_max_w > 0.0;
    let configured_storage = ec.nameplate.storage.clone();
    let mut next_storage_check_ms = 0;
    let setup = crate::http::Client::new(ec.http.clone())
        .map_err(csip::EngineError::Http)
        .and_then(|client| Ok((client, csip::Engine::new(ec, clock.now())?)));
    let (mut client, mut engine) = match setup {
        Ok(both) => both,
        Err(e) => {
            let e = e.to_string();
            log::error!("utility connection not started: {e}");
            status.update(|s| s.push_error(now, "csip", &e));
            return;
        }
    };
    // The scheduler's memory comes back before it runs: at once after a reload, else as
    // soon as the store (opening on a blocking thread at start-up) is open. Discovery
    // does not wait for it.
    let restore = |engine: &mut csip::Engine| -> bool {
        let d = durable.borrow();
        if !d.opened {
            return false;
        }
        let restored = saved
            .borrow()
            .clone()
            .or_else(|| d.store.as_ref().map(|s| s.schedule_state()));
        match restored {
            Some(state) => engine.restore_schedule_state(state),
            None => engine.hold_schedule(false),
        }
        // Responses issued but not settled when the last run (or engine) stopped: sent
        // again, so a crash between the ledger's write and the server's 2xx loses none.
        let pending = d
            .store
            .as_ref()
            .map(|s| s.pending_responses())
            .unwrap_or_default();
        if !pending.is_empty() {
            log::info!(
                "{} response(s) issued before the restart still to deliver",
                pending.len()
            );
            engine.restore_pending_responses(pending);
        }
        true
    };
    engine.hold_schedule(true);
    let mut restored = restore(&mut engine);
    let mut watch = DeviceWatch::default();
    let mut source = SiteSource { site: site.clone() };
    let mut sink = RuntimeSink::new(site.clone(), status.clone(), durable.clone());
    let started_ms = clock.now().mono_ms;
    let mut next_save_ms = started_ms + STATE_SAVE_EVERY_MS;
    let mut upcoming_watch = UpcomingWatch::default();
    // Notifications the listener accepted, for the engine (drained each round: the
    // drive loop wakes at least every second for the measurements).
    let notifications: Rc<RefCell<std::collections::VecDeque<Vec<u8>>>> = Rc::default();
    let listen = {
        let notifications = notifications.clone();
        async move {
            match &listener {
                Some(l) => {
                    l.serve(|body| notifications.borrow_mut().push_back(body))
                        .await
                }
                None => std::future::pending::<()>().await,
            }
        }
    };
    let run = drive(
        &mut engine,
        &mut client,
        &clock,
        &mut source,
        &mut sink,
        |engine, now| {
            if !restored {
                restored = restore(engine);
            }
            if !nameplate_sent {
                let (known_w, all) = fleet_rating(&site);
                if (all || now.mono_ms >= started_ms + RATING_WAIT_MS) && known_w > 0.0 {
                    nameplate.rtg_max_w = known_w;
                    // DERCapability says only what the site can do: inverters that were
                    // read and have no control model cannot limit export or generation
                    // (issue 17).
                    let s = site.borrow();
                    let controls = s
                        .inverter_names
                        .iter()
                        .map(|n| s.devices.get(n).and_then(|d| d.controls));
                    if super::bus::restrict_to_controls(&mut nameplate, controls) {
                        log::info!(
                            "DERCapability: no inverter has a control model; export and \
                             generation limits are not offered"
                        );
                    }
                    drop(s);
                    let (va, var) = fleet_va_var(&site);
                    nameplate.rtg_max_va = nameplate.rtg_max_va.or(va);
                    nameplate.rtg_max_var = nameplate.rtg_max_var.or(var);
                    // sep.xsd: "If absent, defaults to negative rtgMaxVar" (120's Q1
                    // rating stands for both directions).
                    nameplate.rtg_max_var_neg = nameplate.rtg_max_var_neg.or(var.map(|v| -v));
                    let (pf_over, pf_under) = fleet_min_pf(&site);
                    nameplate.rtg_min_pf_over_excited =
                        nameplate.rtg_min_pf_over_excited.or(pf_over);
                    nameplate.rtg_min_pf_under_excited =
                        nameplate.rtg_min_pf_under_excited.or(pf_under);
                    nameplate.storage =
                        storage_nameplate(&site.borrow(), nameplate.storage.as_ref());
                    nameplate.inverter_modes = fleet_inverter_modes(&site.borrow());
                    engine.handle_nameplate(nameplate.clone(), now);
                    nameplate_sent = true;
                }
            }
            // The batteries' ratings as they are read (WChaMax, MinRsvPct, whether
            // model 124 is there): DERCapability/DERSettings follow a change.
            if now.mono_ms >= next_storage_check_ms {
                next_storage_check_ms = now.mono_ms + 10_000;
                let storage = storage_nameplate(&site.borrow(), configured_storage.as_ref());
                // And what the inverters offer as they are read: which curve, power
                // factor and var controls csipd takes (and claims).
                let modes = fleet_inverter_modes(&site.borrow()).or(nameplate.inverter_modes);
                if storage != nameplate.storage || modes != nameplate.inverter_modes {
                    nameplate.storage = storage;
                    if modes != nameplate.inverter_modes {
                        let names: Vec<&str> = crate::schedule::ControlMode::ALL
                            .into_iter()
                            .filter(|m| modes.is_some_and(|b| b & m.bit() != 0))
                            .map(|m| m.name())
                            .collect();
                        log::info!(
                            "inverter settings every inverter offers: {}",
                            if names.is_empty() {
                                "none".to_string()
                            } else {
                                names.join(", ")
                            }
                        );
                    }
                    nameplate.inverter_modes = modes;
                    // The schedule follows at once (the engine leaves out what the
                    // site cannot carry); DERCapability once the ratings are known.
                    engine.handle_nameplate(nameplate.clone(), now);
                }
            }
            for event in watch.events(&site.borrow(), Instant::now()) {
                engine.handle_device_event(event, now);
            }
            while let Some(body) = notifications.borrow_mut().pop_front() {
                match engine.handle_notification(&body, now) {
                    Ok(outcome) => log::debug!("csip: notification: {outcome:?}"),
                    Err(e) => log::warn!("csip: notification: {e}"),
                }
            }
            let server_now_s = now.utc_s() + engine.clock_offset_s();
            let save_due = now.mono_ms >= next_save_ms;
            if save_due || upcoming_watch.due(engine.tree_version(), server_now_s) {
                let version = engine.tree_version();
                let upcoming = upcoming_events(&engine.tree(), server_now_s);
                upcoming_watch.shown(version, &upcoming);
                status.update(|s| s.upcoming_events = upcoming);
            }
            if save_due {
                next_save_ms = now.mono_ms + STATE_SAVE_EVERY_MS;
                // Kept for a reload's new engine only without a store (the store has
                // every record already): no second copy of the records otherwise.
                if restored && durable.borrow().store.is_none() {
                    let state = engine.schedule_state();
                    if saved.borrow().as_ref() != Some(state) {
                        *saved.borrow_mut() = Some(state.clone());
                    }
                }
            }
            false
        },
    );
    smol::future::or(run, listen).await;
}

/// Starts the notification listener when `notification_listen` is set; `None` (with
/// the reason in the log and the status) when it is not set or cannot start. An address
/// in use is tried again for a few seconds: after a reload the previous engine task's
/// listener may not be dropped yet.
async fn start_listener(
    config: &Config,
    status: &SnapshotHandle,
    now_s: i64,
) -> Option<super::notify::NotificationListener> {
    let server = &config.server;
    let addr = server.notification_listen?;
    let (Some(cert), Some(key), Some(ca)) = (&server.cert, &server.key, &server.ca) else {
        // check-config refuses this; a hand-built Config may still have it.
        let e = "notification_listen needs cert, key and ca; subscriptions are off";
        log::error!("{e}");
        status.update(|s| s.push_error(now_s, "csip", e));
        return None;
    };
    let bind = || {
        super::notify::NotificationListener::bind(
            addr,
            std::path::Path::new(cert),
            std::path::Path::new(key),
            std::path::Path::new(ca),
        )
    };
    let mut result = bind();
    for _ in 0..25 {
        match &result {
            Err(super::notify::NotifyError::Bind { error, .. })
                if error.kind() == std::io::ErrorKind::AddrInUse =>
            {
                smol::Timer::after(std::time::Duration::from_millis(200)).await;
                result = bind();
            }
            _ => break,
        }
    }
    match result {
        Ok(listener) => {
            log::info!(
                "notifications: listening on {} (mutual TLS) for {}",
                listener.local_addr().map_or(addr, |a| a),
                server.notification_url.as_deref().unwrap_or("?")
            );
            Some(listener)
        }
        Err(e) => {
            let e = format!("{e}; subscriptions are off, polling only");
            log::error!("{e}");
            status.update(|s| s.push_error(now_s, "csip", &e));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceRole;
    use crate::devices::sunspec::InverterEvents;
    use csip::DeviceEvent;

    /// The status's upcoming events are made again when the tree changes and when the
    /// soonest one starts; otherwise only by the periodic refresh.
    #[test]
    fn upcoming_events_are_made_again_when_the_tree_changes_or_one_starts() {
        let mut w = UpcomingWatch::default();
        assert!(w.due(0, 100), "never made");
        w.shown(0, &[]);
        assert!(!w.due(0, 100));
        assert!(
            w.due(1, 100),
            "the tree changed (a list read, a cancellation)"
        );
        let event = status::UpcomingEvent {
            mrid: "A".into(),
            description: None,
            program: None,
            start_unix_s: 160,
            end_unix_s: 200,
            limits: Vec::new(),
        };
        w.shown(1, std::slice::from_ref(&event));
        assert!(!w.due(1, 159));
        assert!(w.due(1, 160), "it starts: no longer upcoming");
    }

    use crate::csip::pricing::{PriceBlock, PriceDirection, PricePoint, RatePrice};
    use crate::runtime::durable::Durable;
    use crate::runtime::site::SiteState;
    use crate::status::Snapshot;

    #[test]
    fn device_watch_hands_in_levels_and_each_new_failed_write() {
        let mut site = super::super::site::SiteState::new(3600);
        let now = Instant::now();
        let mut inv = DeviceState::new(DeviceRole::Inverter);
        inv.reads_ok = 1;
        inv.last_good_at = Some(now);
        inv.events = Some(InverterEvents { evt1: 1, evt2: 0 });
        site.devices.insert("inv1".into(), inv);
        // Never answered yet: neither lost nor stale.
        site.devices
            .insert("meter".into(), DeviceState::new(DeviceRole::Meter));
        let mut watch = DeviceWatch::default();
        let events = watch.events(&site, now);
        assert_eq!(
            events,
            vec![
                DeviceEvent::Alarms {
                    device: "inv1".into(),
                    events: InverterEvents { evt1: 1, evt2: 0 }
                },
                DeviceEvent::Comms {
                    device: "inv1".into(),
                    up: true
                },
                DeviceEvent::Stale {
                    device: "inv1".into(),
                    stale: false
                },
            ]
        );
        let inv = site.devices.get_mut("inv1").unwrap();
        inv.record_write_error("inv1: read-back differs".into());
        let events = watch.events(&site, now);
        assert!(events.contains(&DeviceEvent::ControlNotApplied {
            device: "inv1".into(),
            detail: "inv1: read-back differs".into()
        }));
        // Once per failed write.
        let events = watch.events(&site, now);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, DeviceEvent::ControlNotApplied { .. }))
        );
    }

    fn engine_status(state: ConnectionState, last_error: Option<&str>) -> EngineStatus {
        EngineStatus {
            state,
            lfdi: "AB".into(),
            sfdi: 7,
            clock_offset_s: 0,
            edev_href: None,
            polls: Vec::new(),
            readings_pending: 0,
            readings_dropped: 0,
            readings_posted: 0,
            responses_pending: 0,
            log_events: Default::default(),
            last_error: last_error.map(str::to_string),
            csipaus_version: None,
            prices: Vec::new(),
        }
    }

    /// The engine's state reaches the status as it is: a PIN mismatch is shown as one
    /// (with why), not as "discovering".
    #[test]
    fn the_engine_state_is_the_status_state() {
        let site: SharedSite = Rc::new(RefCell::new(SiteState::new(900)));
        let status = SnapshotHandle::new(Snapshot::new(0));
        let durable: SharedDurable = Rc::new(RefCell::new(Durable::default()));
        let mut sink = RuntimeSink::new(site, status.clone(), durable);
        sink.status(&engine_status(ConnectionState::Polling, None));
        assert_eq!(status.get().utility.state, ConnectionState::Polling);
        let mismatch = "Registration PIN 111116 is not the configured 111115";
        sink.status(&engine_status(ConnectionState::PinMismatch, Some(mismatch)));
        let snap = status.get();
        assert_eq!(snap.utility.state, ConnectionState::PinMismatch);
        assert_eq!(snap.utility.registration_problem.as_deref(), Some(mismatch));
        let json = serde_json::to_value(&snap).expect("json");
        assert_eq!(json["utility"]["state"], "pin_mismatch");
        sink.status(&engine_status(ConnectionState::Polling, None));
        assert_eq!(status.get().utility.registration_problem, None);
    }

    fn status_with_export_price(price_per_kwh: f64) -> EngineStatus {
        EngineStatus {
            csipaus_version: Some("v1.3"),
            prices: vec![RatePrice {
                tariff_profile_href: "/tp/1".into(),
                rate_component_href: "/tp/1/rc/2".into(),
                description: None,
                primacy: 0,
                direction: PriceDirection::Export,
                unit: "kWh".into(),
                currency: Some(36),
                price_power_of_ten_multiplier: -4,
                current: Some(PricePoint {
                    mrid: "01".into(),
                    description: None,
                    start_unix_s: 0,
                    // Far ahead of the real clock this sink reads.
                    end_unix_s: 4_000_000_000,
                    blocks: vec![PriceBlock {
                        start_value: 0,
                        price: 0,
                        price_per_unit: price_per_kwh,
                    }],
                }),
                next: None,
            }],
            ..engine_status(ConnectionState::Polling, None)
        }
    }

    /// The engine's status hands the utility's export price to the site's one price
    /// tracker, which the coordinator's price rule reads, only when the owner chose it
    /// (`utility_price_export`); the status page gets the prices either way.
    #[test]
    fn the_utility_export_price_reaches_the_price_tracker_when_chosen() {
        let site: SharedSite = Rc::new(RefCell::new(super::super::site::SiteState::new(900)));
        let status = SnapshotHandle::new(Snapshot::new(0));
        let durable = Rc::new(RefCell::new(super::super::durable::Durable::default()));
        let mut sink = RuntimeSink::new(site.clone(), status.clone(), durable);
        let now = super::super::unix_now_s();
        sink.status(&status_with_export_price(0.05));
        assert_eq!(status.get().utility.prices.len(), 1);
        assert_eq!(
            site.borrow().price.current(now),
            None,
            "not chosen: not acted on"
        );
        site.borrow_mut().price.from_utility = true;
        sink.status(&status_with_export_price(0.05));
        let p = site
            .borrow()
            .price
            .current(now)
            .expect("the utility's price");
        assert!((p.earn_c_per_kwh - -5.0).abs() < 1e-9, "{p:?}");
        // The utility states no export price any more: nothing to act on.
        let mut none = status_with_export_price(0.05);
        none.prices.clear();
        sink.status(&none);
        assert_eq!(site.borrow().price.current(now), None);
    }
}
