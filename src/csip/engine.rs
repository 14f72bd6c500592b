//! The engine's async driver: one task on the smol executor that wakes once a second,
//! samples the measurements, runs the polls that are due, evaluates the schedule,
//! delivers responses, DER reports and mirror readings, and publishes its status.
//! The decisions live in the pure modules; this file only sequences IO.
//!
//! Discovery is polling: a (re)discovery clears the poll plan and tracks the
//! DeviceCapability; each poll handler tracks the resources its answer links to (with
//! their own pollRate), so the walk from `/dcap` down to every DERControlList happens
//! through the same code that keeps it fresh. What was learnt before stays in use until
//! a fresh answer replaces it, so the schedule keeps running through an outage.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use crate::http::Client;
use crate::schedule::{self, ActiveControls};
use crate::sep2::{
    self, DefaultDerControl, Der, DerControl, DerCurve, DerProgram, DeviceCapability, EndDevice,
    FunctionSetAssignments, LogEvent, MirrorUsagePoint, Registration, Time, WriteProfile,
};

use super::averaging::{Channel, IntervalAverager, IntervalAverages, Outbox};
use super::der::{self, ReportKind, ReportTracker};
use super::discovery::{FsaState, ProgramState, Tree};
use super::edev::{self, PinCheck};
use super::mirror::{self, MupRole};
use super::poller::{AfterPoll, PollKind, PollOutcome, Poller};
use super::response::{self, Delivery, ResponseOutbox};
use super::time::{ServerClock, local_now_s};
use super::transport::{FetchError, Transport};
use super::{
    ConnectionState, EngineConfig, EngineError, EngineSink, EngineStatus, MeasurementSource,
    PollStatus, SiteMeasurement,
};

/// Delay before trying again after a failed PUT/POST of reports, readings or responses.
const SEND_RETRY_MS: u64 = 5_000;

/// One closed interval of one usage point, with the channels not yet accepted.
#[derive(Debug, Clone)]
struct PendingReadings {
    role: MupRole,
    interval: IntervalAverages,
    remaining: Vec<Channel>,
    /// Server errors (5xx) on the first remaining channel; a reading the server keeps
    /// failing on is dropped after [`MAX_READING_ATTEMPTS`] so the queue moves on.
    attempts: u32,
}

/// Attempts at one reading the server answers with an error before it is dropped.
/// Transport failures (server unreachable) do not count: those readings wait.
const MAX_READING_ATTEMPTS: u32 = 5;

/// The CSIP-AUS client engine. Create with [`Engine::new`], run with [`Engine::run`].
pub struct Engine<S: MeasurementSource, K: EngineSink> {
    config: EngineConfig,
    profile: WriteProfile,
    source: S,
    sink: K,
    transport: Transport,
    epoch: Instant,
    clock: ServerClock,
    poller: Poller,
    tree: Tree,
    state: ConnectionState,
    last_error: Option<String>,
    /// Program lists read at least once (the schedule is evaluated from then on).
    tree_loaded: bool,
    posted_registration: bool,
    connection_point_sent: bool,
    log_events_read: bool,
    // schedule
    schedule_state: schedule::State,
    rng: schedule::Rng,
    last_active: Option<ActiveControls>,
    responses: ResponseOutbox,
    responses_retry_at_ms: u64,
    // DER reports
    reports: ReportTracker,
    reports_retry_at_ms: u64,
    last_measurement: Option<SiteMeasurement>,
    // mirror
    averagers: [IntervalAverager; 2],
    channels: [BTreeSet<Channel>; 2],
    mup_hrefs: [Option<String>; 2],
    mup_list_read: bool,
    readings: Outbox<PendingReadings>,
    readings_retry_at_ms: u64,
    last_status: Option<EngineStatus>,
    /// Only read (`csipd discover`): no registration, reports, readings or responses.
    read_only: bool,
    /// Bumped whenever the programs or controls change; the schedule is evaluated again
    /// only then, or when its `next_change_s` comes, or the clock steps back.
    tree_version: u64,
    evaluated: Option<(u64, i64, Option<i64>)>,
}

fn role_index(role: MupRole) -> usize {
    match role {
        MupRole::Site => 0,
        MupRole::Der => 1,
    }
}

impl<S: MeasurementSource, K: EngineSink> Engine<S, K> {
    /// Builds the engine; nothing is sent until [`Engine::run`].
    pub fn new(config: EngineConfig, source: S, sink: K) -> Result<Engine<S, K>, EngineError> {
        if config.lfdi.len() != 40 || !config.lfdi.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(EngineError::Config(format!(
                "LFDI must be 40 hex digits, got {:?}",
                config.lfdi
            )));
        }
        if !config.dcap_path.starts_with('/') && !config.dcap_path.starts_with("http") {
            return Err(EngineError::Config(format!(
                "DeviceCapability path must start with '/', got {:?}",
                config.dcap_path
            )));
        }
        let client = Client::new(config.http.clone()).map_err(EngineError::Http)?;
        let profile = if config.csipaus && config.csipaus_v1_3 {
            WriteProfile::CsipAus {
                ns: sep2::CsipausNs::V1_3,
            }
        } else if config.csipaus {
            WriteProfile::default()
        } else {
            WriteProfile::Plain
        };
        let post_rate = config.default_post_rate_s.max(1);
        let buffer = config.reading_buffer_intervals.max(1);
        let rng = schedule::Rng::new(config.rng_seed);
        let tree = Tree::new(&config.dcap_path);
        let mut poller = Poller::new();
        poller.set_max_rate_s(config.max_poll_interval_s);
        Ok(Engine {
            profile,
            source,
            sink,
            transport: Transport::new(client),
            epoch: Instant::now(),
            clock: ServerClock::default(),
            poller,
            tree,
            state: ConnectionState::Discovering,
            last_error: None,
            tree_loaded: false,
            posted_registration: false,
            connection_point_sent: false,
            log_events_read: false,
            schedule_state: schedule::State::default(),
            rng,
            last_active: None,
            responses: ResponseOutbox::new(),
            responses_retry_at_ms: 0,
            reports: ReportTracker::default(),
            reports_retry_at_ms: 0,
            last_measurement: None,
            averagers: [
                IntervalAverager::new(post_rate),
                IntervalAverager::new(post_rate),
            ],
            channels: [BTreeSet::new(), BTreeSet::new()],
            mup_hrefs: [None, None],
            mup_list_read: false,
            readings: Outbox::new(buffer),
            readings_retry_at_ms: 0,
            last_status: None,
            read_only: false,
            tree_version: 0,
            evaluated: None,
            config,
        })
    }

    /// Restores the scheduler's memory (ledger, randomisation draws) from the store, so
    /// a restart neither repeats responses nor redraws randomisation.
    pub fn restore_schedule_state(&mut self, state: schedule::State) {
        self.schedule_state = state;
    }

    /// Responses due but not yet accepted by the server, oldest first (persist them
    /// with the schedule state; the ledger already counts them as issued).
    pub fn pending_responses(&self) -> Vec<schedule::ResponseDue> {
        self.responses.pending()
    }

    /// Puts back responses that were pending when the process stopped.
    pub fn restore_pending_responses(&mut self, pending: Vec<schedule::ResponseDue>) {
        for due in pending {
            self.responses.push(due);
        }
    }

    /// The scheduler's memory, for the store to persist.
    pub fn schedule_state(&self) -> &schedule::State {
        &self.schedule_state
    }

    /// Runs forever: one round a second.
    pub async fn run(mut self) {
        self.rediscover();
        let mut next = Instant::now();
        loop {
            self.round().await;
            next += Duration::from_secs(1);
            let now = Instant::now();
            if next < now {
                next = now;
            }
            smol::Timer::at(next).await;
        }
    }

    /// Runs rounds until `deadline` (for `csipd discover`-style one-shot use and tests).
    pub async fn run_until(&mut self, deadline: Instant) {
        if self.poller.next_due_ms().is_none() {
            self.rediscover();
        }
        while Instant::now() < deadline {
            self.round().await;
            smol::Timer::after(Duration::from_secs(1)).await;
        }
    }

    /// Read only: walk and poll, but send nothing (no in-band registration, no
    /// ConnectionPoint, reports, readings or responses). For `csipd discover`.
    pub fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }

    /// The tree as discovered so far.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    pub fn status(&self) -> EngineStatus {
        self.build_status()
    }

    fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn server_now_s(&self) -> i64 {
        self.clock.server_time(local_now_s())
    }

    fn rediscover(&mut self) {
        log::info!("csip: discovery from {}", self.config.dcap_path);
        self.poller.clear();
        let now_ms = self.mono_ms();
        self.poller.track(
            &self.tree.dcap_href.clone(),
            PollKind::DeviceCapability,
            None,
            now_ms,
        );
        if self.state != ConnectionState::Unreachable {
            self.state = ConnectionState::Discovering;
        }
    }

    fn error(&mut self, message: String) {
        // Servers answer errors with whole HTML pages: keep the first line, bounded.
        let mut line: String = message.lines().next().unwrap_or_default().to_string();
        if line.len() > 240 {
            let mut cut = 240;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        log::warn!("csip: {line}");
        self.last_error = Some(line);
    }

    /// One second of work.
    pub async fn round(&mut self) {
        self.sample();
        self.run_due_polls().await;
        self.evaluate();
        if self.state != ConnectionState::PinMismatch && !self.read_only {
            self.flush_responses().await;
            self.send_reports().await;
            self.flush_readings().await;
        }
        self.publish_status();
    }

    // ---------------------------------------------------------------- measurements

    fn sample(&mut self) {
        let now_s = self.server_now_s();
        let sample = self.source.sample();
        for role in MupRole::ALL {
            let i = role_index(role);
            let meter = sample.as_ref().and_then(|m| match role {
                MupRole::Site => m.site,
                MupRole::Der => m.der,
            });
            let closed = match meter {
                Some(meter) => self.averagers[i].add(now_s, &meter),
                None => self.averagers[i].close_if_ended(now_s),
            };
            if let Some(interval) = closed {
                self.queue_interval(role, interval);
            }
        }
        if sample.is_some() {
            self.last_measurement = sample;
        }
    }

    fn queue_interval(&mut self, role: MupRole, interval: IntervalAverages) {
        let i = role_index(role);
        let remaining: Vec<Channel> = interval.averages.keys().copied().collect();
        self.channels[i].extend(remaining.iter().copied());
        self.readings.push(PendingReadings {
            role,
            interval,
            remaining,
            attempts: 0,
        });
    }

    // ---------------------------------------------------------------- polling

    async fn run_due_polls(&mut self) {
        // Bounded so a server that answers every poll with a new rate cannot spin us.
        for _ in 0..64 {
            let now_ms = self.mono_ms();
            let Some((href, kind)) = self.poller.due(now_ms).into_iter().next() else {
                break;
            };
            let result = self.poll(&href, kind).await;
            let now_ms = self.mono_ms();
            match result {
                Ok(rate) => {
                    self.poller.polled(&href, now_ms, PollOutcome::Ok, None);
                    self.poller.track(&href, kind, rate, now_ms);
                    if self.state == ConnectionState::Unreachable
                        || (self.state == ConnectionState::Discovering
                            && kind == PollKind::EndDeviceList
                            && self.tree.edev.is_some())
                    {
                        self.state = ConnectionState::Connected;
                    }
                }
                Err(err) => {
                    self.error(format!("poll of {} {href}: {err}", kind.name()));
                    // No answer at all, or not even the DeviceCapability: unreachable.
                    if err.is_unreachable() || kind == PollKind::DeviceCapability {
                        self.state = ConnectionState::Unreachable;
                    }
                    let after =
                        self.poller
                            .polled(&href, now_ms, err.outcome(), err.retry_after_ms());
                    if after == AfterPoll::Rediscover && kind != PollKind::DeviceCapability {
                        // Keep what we know; walk again from the top.
                        self.rediscover();
                        break;
                    }
                }
            }
        }
    }

    /// Polls one resource; returns its pollRate.
    async fn poll(&mut self, href: &str, kind: PollKind) -> Result<Option<u32>, FetchError> {
        match kind {
            PollKind::DeviceCapability => self.poll_dcap(href).await,
            PollKind::Time => self.poll_time(href).await,
            PollKind::EndDeviceList => self.poll_edev_list(href).await,
            PollKind::Registration => self.poll_registration(href).await,
            PollKind::FunctionSetAssignmentsList => self.poll_fsa_list(href).await,
            PollKind::DerProgramList => self.poll_program_list(href).await,
            PollKind::DerList => self.poll_der_list(href).await,
            PollKind::MirrorUsagePointList => self.poll_mup_list(href).await,
        }
    }

    async fn poll_dcap(&mut self, href: &str) -> Result<Option<u32>, FetchError> {
        let dcap: DeviceCapability = self.transport.get(href).await?;
        let now_ms = self.mono_ms();
        if let Some(link) = &dcap.time_link {
            self.tree.time_href = Some(link.href.clone());
            self.poller.track(&link.href, PollKind::Time, None, now_ms);
        }
        let edev_list = dcap.end_device_list_link.as_ref().map(|l| l.href.clone());
        if let Some(link) = &edev_list {
            self.poller
                .track(link, PollKind::EndDeviceList, None, now_ms);
        } else {
            self.error(format!("{href}: DeviceCapability has no EndDeviceListLink"));
        }
        self.poller.retain_kind(
            PollKind::EndDeviceList,
            &edev_list.iter().cloned().collect::<Vec<_>>(),
        );
        self.tree.edev_list_href = edev_list;
        let mup_list = dcap
            .mirror_usage_point_list_link
            .as_ref()
            .map(|l| l.href.clone());
        if let Some(link) = &mup_list {
            self.poller
                .track(link, PollKind::MirrorUsagePointList, None, now_ms);
        }
        self.tree.mup_list_href = mup_list;
        let rate = dcap.poll_rate_s;
        self.tree.dcap = Some(dcap);
        Ok(rate)
    }

    async fn poll_time(&mut self, href: &str) -> Result<Option<u32>, FetchError> {
        let before = local_now_s();
        let time: Time = self.transport.get(href).await?;
        let after = local_now_s();
        let old = self.clock.offset_s();
        self.clock.observe(time.current_time, before, after);
        if (self.clock.offset_s() - old).abs() > 2 {
            log::info!(
                "csip: server clock offset {} s (local clock {} by {} s)",
                self.clock.offset_s(),
                if self.clock.offset_s() > 0 {
                    "behind"
                } else {
                    "ahead"
                },
                self.clock.offset_s().abs()
            );
        }
        Ok(time.poll_rate_s)
    }

    async fn poll_edev_list(&mut self, href: &str) -> Result<Option<u32>, FetchError> {
        let list = self.transport.get_list::<EndDevice>(href).await?;
        let rate = list.poll_rate_s;
        let own = edev::find_own(&list.items, &self.config.lfdi, self.config.sfdi).cloned();
        let own = match own {
            Some(own)
                if !(self.config.in_band_registration
                    && own.registration_link.is_none()
                    && !self.posted_registration) =>
            {
                let own_href = own.href.clone();
                Some((own, own_href))
            }
            _ if self.config.in_band_registration
                && !self.posted_registration
                && !self.read_only =>
            {
                Some(self.register_in_band(href).await?)
            }
            Some(own) => {
                let own_href = own.href.clone();
                Some((own, own_href))
            }
            None => None,
        };
        let Some((own, own_href)) = own else {
            self.state = ConnectionState::NotRegistered;
            self.error(format!(
                "{href}: no EndDevice with LFDI {} (SFDI {}); register it out of band or enable in-band registration",
                self.config.lfdi, self.config.sfdi
            ));
            return Ok(rate);
        };
        self.adopt_edev(own, own_href).await;
        Ok(rate)
    }

    async fn register_in_band(
        &mut self,
        list_href: &str,
    ) -> Result<(EndDevice, Option<String>), FetchError> {
        let body =
            edev::registration_request(&self.config.lfdi, self.config.sfdi, self.server_now_s());
        let xml = self.write(&body)?;
        let location = self.transport.post(list_href, &xml).await?;
        self.posted_registration = true;
        let Some(location) = location else {
            return Err(FetchError::NoLocation {
                href: list_href.to_string(),
            });
        };
        log::info!("csip: registered in band at {location}");
        let own: EndDevice = self.transport.get(&location).await?;
        Ok((own, Some(location)))
    }

    async fn adopt_edev(&mut self, own: EndDevice, own_href: Option<String>) {
        let now_ms = self.mono_ms();
        if let Some(link) = &own.registration_link {
            self.poller
                .track(&link.href, PollKind::Registration, None, now_ms);
        }
        if let Some(link) = &own.function_set_assignments_list_link {
            self.poller.track(
                &link.href,
                PollKind::FunctionSetAssignmentsList,
                None,
                now_ms,
            );
            self.tree.fsa_list_href = Some(link.href.clone());
        }
        if let Some(link) = &own.der_list_link {
            self.poller
                .track(&link.href, PollKind::DerList, None, now_ms);
            self.tree.der_list_href = Some(link.href.clone());
        }
        if self.state == ConnectionState::NotRegistered
            || self.state == ConnectionState::Discovering
        {
            self.state = ConnectionState::Connected;
        }
        if let (Some(link), Some(nmi), false, true) = (
            own.connection_point_link.clone(),
            self.config.nmi.clone(),
            self.connection_point_sent || self.read_only,
            self.config.csipaus,
        ) {
            match self.write(&edev::connection_point(&nmi)) {
                Ok(xml) => match self.transport.put(&link.href, &xml).await {
                    Ok(()) => {
                        log::info!("csip: ConnectionPoint {nmi} sent to {}", link.href);
                        self.connection_point_sent = true;
                    }
                    Err(err) => self.error(format!("PUT ConnectionPoint {}: {err}", link.href)),
                },
                Err(err) => self.error(err.to_string()),
            }
        }
        if let (Some(link), false) = (own.log_event_list_link.clone(), self.log_events_read) {
            match self.transport.get_list::<LogEvent>(&link.href).await {
                Ok(list) => {
                    self.tree.log_event_list_href = Some(link.href.clone());
                    self.tree.log_event_count = Some(list.all);
                    self.log_events_read = true;
                }
                Err(err) => self.error(format!("LogEventList {}: {err}", link.href)),
            }
        }
        self.tree.edev_href = own_href.or_else(|| own.href.clone());
        self.tree.edev = Some(own);
    }

    async fn poll_registration(&mut self, href: &str) -> Result<Option<u32>, FetchError> {
        let registration: Registration = self.transport.get(href).await?;
        let rate = registration.poll_rate_s;
        match edev::check_pin(self.config.pin, Some(&registration)) {
            PinCheck::Mismatch { server, configured } => {
                if self.state != ConnectionState::PinMismatch {
                    self.error(format!(
                        "{href}: the server's registration PIN {server} is not the configured PIN {configured}; not acting on this server"
                    ));
                }
                self.state = ConnectionState::PinMismatch;
            }
            PinCheck::Matches | PinCheck::NotChecked => {
                if self.state == ConnectionState::PinMismatch {
                    self.state = ConnectionState::Connected;
                }
            }
        }
        self.tree.registration = Some(registration);
        Ok(rate)
    }

    async fn poll_fsa_list(&mut self, href: &str) -> Result<Option<u32>, FetchError> {
        let list = self
            .transport
            .get_list::<FunctionSetAssignments>(href)
            .await?;
        let now_ms = self.mono_ms();
        let mut fsas = Vec::new();
        let mut program_lists = Vec::new();
        for fsa in list.items {
            let fsa_href = fsa.href.clone().unwrap_or_default();
            if let Some(link) = &fsa.der_program_list_link {
                if !self.tree.programs.contains_key(&link.href) {
                    log::info!(
                        "csip: new FunctionSetAssignments {fsa_href}: programs at {}",
                        link.href
                    );
                }
                self.poller
                    .track(&link.href, PollKind::DerProgramList, None, now_ms);
                program_lists.push(link.href.clone());
            }
            fsas.push(FsaState {
                href: fsa_href,
                fsa,
            });
        }
        self.poller
            .retain_kind(PollKind::DerProgramList, &program_lists);
        self.tree
            .programs
            .retain(|list_href, _| program_lists.contains(list_href));
        if self.tree.fsas != fsas {
            self.tree_version += 1;
        }
        self.tree.fsas = fsas;
        Ok(list.poll_rate_s)
    }

    async fn poll_program_list(&mut self, href: &str) -> Result<Option<u32>, FetchError> {
        let list = self.transport.get_list::<DerProgram>(href).await?;
        let mut states = Vec::new();
        for program in list.items {
            let controls = match &program.der_control_list_link {
                Some(link) => {
                    self.transport
                        .get_list::<DerControl>(&link.href)
                        .await?
                        .items
                }
                None => Vec::new(),
            };
            let default_control = match &program.default_der_control_link {
                Some(link) => match self
                    .transport
                    .get_opt::<DefaultDerControl>(&link.href)
                    .await
                {
                    Ok(dderc) => dderc,
                    // A program without a default control is normal.
                    Err(FetchError::Gone { .. }) => None,
                    Err(err) => return Err(err),
                },
                None => None,
            };
            let curve_count = match &program.der_curve_list_link {
                Some(link) => match self.transport.get_list::<DerCurve>(&link.href).await {
                    Ok(curves) => curves.items.len(),
                    Err(FetchError::Gone { .. }) => 0,
                    Err(err) => return Err(err),
                },
                None => 0,
            };
            states.push(ProgramState {
                href: program.href.clone().unwrap_or_default(),
                program,
                controls,
                default_control,
                curve_count,
            });
        }
        if self.tree.programs.get(href) != Some(&states) {
            self.tree.programs.insert(href.to_string(), states);
            self.tree_version += 1;
        }
        self.tree_loaded = true;
        Ok(list.poll_rate_s)
    }

    async fn poll_der_list(&mut self, href: &str) -> Result<Option<u32>, FetchError> {
        let list = self.transport.get_list::<Der>(href).await?;
        if list.items.first() != self.tree.ders.first() {
            self.reports.reset();
        }
        self.tree.ders = list.items;
        Ok(list.poll_rate_s)
    }

    async fn poll_mup_list(&mut self, href: &str) -> Result<Option<u32>, FetchError> {
        let list = self.transport.get_list::<MirrorUsagePoint>(href).await?;
        for role in MupRole::ALL {
            let i = role_index(role);
            let Ok(mrid) =
                sep2::mrid::mirror_usage_point(&self.config.lfdi, role.name(), self.config.pen)
            else {
                continue;
            };
            match mirror::find_usage_point(&list.items, &mrid) {
                Some(mup) => {
                    if let Some(found) = &mup.href {
                        self.mup_hrefs[i] = Some(found.clone());
                    }
                    if let Some(post_rate) = mup.post_rate_s {
                        if post_rate != self.averagers[i].post_rate_s() {
                            log::info!("csip: {} readings every {post_rate} s", role.name());
                        }
                        if let Some(closed) = self.averagers[i].set_post_rate(post_rate) {
                            self.queue_interval(role, closed);
                        }
                    }
                }
                None => {
                    if self.mup_hrefs[i].take().is_some() {
                        log::warn!(
                            "csip: the server lost the {} usage point; recreating it",
                            role.name()
                        );
                    }
                }
            }
        }
        self.mup_list_read = true;
        self.tree.mups = list.items;
        Ok(list.poll_rate_s)
    }

    // ---------------------------------------------------------------- schedule

    fn evaluate(&mut self) {
        if !self.tree_loaded || self.state == ConnectionState::PinMismatch {
            return;
        }
        let now_s = self.server_now_s();
        if let Some((version, at_s, next_change_s)) = self.evaluated {
            let unchanged = version == self.tree_version
                && now_s >= at_s
                && next_change_s.is_none_or(|next| now_s < next);
            if unchanged {
                return;
            }
        }
        let (programs, events) = self.tree.schedule_input();
        let input = schedule::Input {
            programs: &programs,
            events: &events,
            now_s,
        };
        let outcome = schedule::evaluate(&input, &mut self.rng, &self.schedule_state);
        for note in &outcome.notes {
            log::info!("csip: schedule: {note}");
        }
        for due in &outcome.responses {
            self.responses.push(due.clone());
        }
        // Tell the runtime when the limits change, and when the ledger did (responses
        // fell due), so it can persist `outcome.state`.
        if self.last_active.as_ref() != Some(&outcome.active) || !outcome.responses.is_empty() {
            self.sink.controls(&outcome);
            self.last_active = Some(outcome.active.clone());
        }
        self.evaluated = Some((self.tree_version, now_s, outcome.next_change_s));
        self.schedule_state = outcome.state;
    }

    async fn flush_responses(&mut self) {
        while let Some(due) = self.responses.front().cloned() {
            if self.mono_ms() < self.responses_retry_at_ms {
                return;
            }
            let Some(reply_to) = due.reply_to.clone() else {
                self.responses.delivered(Delivery::Refused);
                continue;
            };
            let body = response::response_body(&due, &self.config.lfdi);
            let xml = match self.write(&body) {
                Ok(xml) => xml,
                Err(err) => {
                    let detail = err.to_string();
                    self.error(detail.clone());
                    self.sink.response_delivery(
                        &due.key,
                        Delivery::Refused,
                        local_now_s(),
                        &detail,
                    );
                    self.responses.delivered(Delivery::Refused);
                    continue;
                }
            };
            let (delivery, detail) = match self.transport.post(&reply_to, &xml).await {
                Ok(_) => (Delivery::Accepted, String::new()),
                Err(FetchError::Gone { status, .. }) => {
                    (response::classify(Some(status)), format!("HTTP {status}"))
                }
                Err(FetchError::Http(err)) => (response::classify(err.status()), err.to_string()),
                Err(other) => (Delivery::RetryLater, other.to_string()),
            };
            self.sink
                .response_delivery(&due.key, delivery, local_now_s(), &detail);
            match delivery {
                Delivery::Accepted => log::info!(
                    "csip: response {} to {} sent to {reply_to}",
                    due.key.status.code(),
                    due.key.event_mrid
                ),
                Delivery::Refused => self.error(format!(
                    "response {} to {} refused by {reply_to}; not retried",
                    due.key.status.code(),
                    due.key.event_mrid
                )),
                Delivery::RetryLater => {
                    self.responses_retry_at_ms = self.mono_ms() + SEND_RETRY_MS;
                }
            }
            self.responses.delivered(delivery);
            if delivery == Delivery::RetryLater {
                return;
            }
        }
    }

    // ---------------------------------------------------------------- DER reports

    /// setGradW in force: that of the highest-priority program's default control.
    fn set_grad_w(&self) -> u16 {
        let mut best: Option<(u8, u16)> = None;
        for states in self.tree.programs.values() {
            for state in states {
                let grad = state.default_control.as_ref().and_then(|d| d.set_grad_w);
                if let Some(grad) = grad {
                    if best.is_none_or(|(primacy, _)| state.program.primacy < primacy) {
                        best = Some((state.program.primacy, grad));
                    }
                }
            }
        }
        best.map(|(_, grad)| grad)
            .unwrap_or(der::DEFAULT_SET_GRAD_W)
    }

    async fn send_reports(&mut self) {
        let now_ms = self.mono_ms();
        if now_ms < self.reports_retry_at_ms {
            return;
        }
        let Some(der_resource) = self.tree.der().cloned() else {
            return;
        };
        let now_s = self.server_now_s();
        let backstop = self.config.report_backstop_s.max(60);
        let inverters = self.last_measurement.as_ref().map(|m| m.inverters.clone());
        for kind in ReportKind::ALL {
            let link = match kind {
                ReportKind::Capability => &der_resource.der_capability_link,
                ReportKind::Settings => &der_resource.der_settings_link,
                ReportKind::Status => &der_resource.der_status_link,
                ReportKind::Availability => &der_resource.der_availability_link,
            };
            let Some(link) = link else { continue };
            let (key, xml) = match kind {
                ReportKind::Capability => {
                    let doc = der::capability(&self.config.nameplate, self.config.csipaus);
                    (der::capability_key(&doc), self.write(&doc))
                }
                ReportKind::Settings => {
                    let doc = der::settings(
                        &self.config.nameplate,
                        self.set_grad_w(),
                        self.config.csipaus,
                        now_s,
                    );
                    (der::settings_key(&doc), self.write(&doc))
                }
                ReportKind::Status => {
                    let Some(inverters) = &inverters else {
                        continue;
                    };
                    let doc = der::status(inverters, now_s);
                    (der::status_key(&doc), self.write(&doc))
                }
                ReportKind::Availability => {
                    let Some(inverters) = &inverters else {
                        continue;
                    };
                    let doc = der::availability(inverters, now_s);
                    (der::availability_key(&doc), self.write(&doc))
                }
            };
            if !self.reports.due(kind, &key, now_s, backstop) {
                continue;
            }
            let xml = match xml {
                Ok(xml) => xml,
                Err(err) => {
                    self.error(err.to_string());
                    continue;
                }
            };
            match self.transport.put(&link.href, &xml).await {
                Ok(()) => {
                    log::debug!("csip: {} sent to {}", kind.name(), link.href);
                    self.reports.accepted(kind, key, now_s);
                }
                Err(err) => {
                    self.error(format!("PUT {} {}: {err}", kind.name(), link.href));
                    self.reports_retry_at_ms = self.mono_ms() + SEND_RETRY_MS;
                    return;
                }
            }
        }
    }

    // ---------------------------------------------------------------- mirror readings

    async fn ensure_usage_points(&mut self) {
        let Some(list_href) = self.tree.mup_list_href.clone() else {
            return;
        };
        if !self.mup_list_read {
            return;
        }
        for role in MupRole::ALL {
            let i = role_index(role);
            if self.mup_hrefs[i].is_some() || self.channels[i].is_empty() {
                continue;
            }
            let channels: Vec<Channel> = self.channels[i].iter().copied().collect();
            let mup = match mirror::usage_point(
                role,
                &self.config.lfdi,
                self.config.pen,
                &channels,
                self.averagers[i].post_rate_s(),
            ) {
                Ok(mup) => mup,
                Err(err) => {
                    self.error(format!("mirror usage point: {err}"));
                    return;
                }
            };
            let xml = match self.write(&mup) {
                Ok(xml) => xml,
                Err(err) => {
                    self.error(err.to_string());
                    return;
                }
            };
            match self.transport.post(&list_href, &xml).await {
                Ok(Some(location)) => {
                    log::info!("csip: {} usage point at {location}", role.name());
                    self.mup_hrefs[i] = Some(location);
                    // Re-read the list: the server states the postRate there.
                    let now_ms = self.mono_ms();
                    self.poller.poll_soon(&list_href, now_ms);
                }
                Ok(None) => {
                    self.error(format!(
                        "POST {list_href}: usage point created without a Location"
                    ));
                    self.readings_retry_at_ms = self.mono_ms() + SEND_RETRY_MS;
                    return;
                }
                Err(err) => {
                    self.error(format!(
                        "POST {list_href} ({} usage point): {err}",
                        role.name()
                    ));
                    self.readings_retry_at_ms = self.mono_ms() + SEND_RETRY_MS;
                    return;
                }
            }
        }
    }

    async fn flush_readings(&mut self) {
        if self.mono_ms() < self.readings_retry_at_ms {
            return;
        }
        self.ensure_usage_points().await;
        let mut lost: HashSet<usize> = HashSet::new();
        // Bounded per round so a long backlog does not starve the polls.
        for _ in 0..8 {
            let Some(pending) = self.readings.front().cloned() else {
                return;
            };
            let i = role_index(pending.role);
            if lost.contains(&i) {
                return;
            }
            let Some(href) = self.mup_hrefs[i].clone() else {
                return;
            };
            let mut remaining = pending.remaining.clone();
            let mut attempts = pending.attempts;
            while let Some(&channel) = remaining.first() {
                let doc = match mirror::reading_post(
                    pending.role,
                    &self.config.lfdi,
                    self.config.pen,
                    channel,
                    &pending.interval,
                ) {
                    Ok(Some(doc)) => doc,
                    Ok(None) => {
                        remaining.remove(0);
                        continue;
                    }
                    Err(err) => {
                        self.error(format!("mirror reading: {err}"));
                        remaining.remove(0);
                        continue;
                    }
                };
                let xml = match self.write(&doc) {
                    Ok(xml) => xml,
                    Err(err) => {
                        self.error(err.to_string());
                        remaining.remove(0);
                        continue;
                    }
                };
                match self.transport.post(&href, &xml).await {
                    Ok(_) => {
                        remaining.remove(0);
                        attempts = 0;
                    }
                    Err(FetchError::Gone { .. }) => {
                        log::warn!(
                            "csip: {href} is gone; recreating the {} usage point",
                            pending.role.name()
                        );
                        self.mup_hrefs[i] = None;
                        lost.insert(i);
                        break;
                    }
                    Err(FetchError::Http(err))
                        if err
                            .status()
                            .is_some_and(|s| (400..500).contains(&s) && s != 429) =>
                    {
                        self.error(format!("POST {href}: reading refused: {err}"));
                        remaining.remove(0);
                    }
                    Err(err) => {
                        self.error(format!("POST {href}: {err}"));
                        self.readings_retry_at_ms =
                            self.mono_ms() + err.retry_after_ms().unwrap_or(SEND_RETRY_MS);
                        if !err.is_unreachable() && err.retry_after_ms().is_none() {
                            attempts += 1;
                            if attempts >= MAX_READING_ATTEMPTS {
                                log::warn!(
                                    "csip: dropping a {} reading the server failed {attempts} times",
                                    pending.role.name()
                                );
                                remaining.remove(0);
                                attempts = 0;
                                continue;
                            }
                        }
                        break;
                    }
                }
            }
            if remaining.is_empty() {
                self.readings.pop();
            } else {
                if let Some(front) = self.readings.front_mut() {
                    front.remaining = remaining;
                    front.attempts = attempts;
                }
                return;
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    fn write<T: sep2::Writable>(&self, doc: &T) -> Result<String, FetchError> {
        sep2::write(doc, self.profile).map_err(|err| FetchError::Parse {
            href: T::ROOT.to_string(),
            error: sep2::ReadError::new(format!("cannot write {}: {err}", T::ROOT)),
        })
    }

    fn build_status(&self) -> EngineStatus {
        let now_ms = self.mono_ms();
        let now_s = self.server_now_s();
        let to_server_s = |ms: u64| now_s + (ms as i64 - now_ms as i64) / 1000;
        EngineStatus {
            state: self.state,
            lfdi: self.config.lfdi.clone(),
            sfdi: self.config.sfdi,
            clock_offset_s: self.clock.offset_s(),
            edev_href: self.tree.edev_href.clone(),
            polls: self
                .poller
                .entries()
                .map(|(href, entry)| PollStatus {
                    href: href.to_string(),
                    kind: entry.kind.name(),
                    rate_s: entry.rate_s,
                    last_poll_s: entry.last_poll_ms.map(to_server_s),
                    next_poll_s: to_server_s(entry.next_due_ms),
                })
                .collect(),
            readings_pending: self.readings.len(),
            readings_dropped: self.readings.dropped(),
            responses_pending: self.responses.len(),
            last_error: self.last_error.clone(),
        }
    }

    fn publish_status(&mut self) {
        let status = self.build_status();
        // Compare without the second-by-second drift of the poll times' conversion.
        let changed = match &self.last_status {
            None => true,
            Some(last) => {
                last.state != status.state
                    || last.last_error != status.last_error
                    || last.polls.len() != status.polls.len()
                    || last
                        .polls
                        .iter()
                        .zip(&status.polls)
                        .any(|(a, b)| a.last_poll_s != b.last_poll_s || a.rate_s != b.rate_s)
                    || last.readings_pending != status.readings_pending
                    || last.responses_pending != status.responses_pending
                    || last.clock_offset_s != status.clock_offset_s
            }
        };
        if changed {
            self.sink.status(&status);
            self.last_status = Some(status);
        }
    }
}
