//! The engine: a dispatcher with no IO and no clock (see the module doc of [`super`]
//! for the call order and the time rule). It routes each answer to the function set
//! whose request it was, hands each set the links another set found, starts the polls
//! that are due, runs the schedule and lets each set send what it has to send. It
//! holds no function set's logic.

use crate::clock::Now;
use crate::http::{HttpError, Response};
use crate::schedule;
use crate::sep2::{self, WriteProfile};

use super::context::{Answer, Ctx, PollPart, Purpose, Request, RequestId};
use super::dcap::DcapSet;
use super::der::DerSet;
use super::derp::DerpSet;
use super::discovery::Tree;
use super::edev::{EdevLinks, EdevSet};
use super::fsa::FsaSet;
use super::log_event::{DeviceEvent, LogEventSet};
use super::mirror::MirrorSet;
use super::poller::PollKind;
use super::pricing::PricingSet;
use super::response::ResponseSet;
use super::subscription::{NotificationOutcome, SubscriptionSet};
use super::time::TimeSet;
use super::well_known::{self, WellKnownSet};
use super::{
    ConnectionState, EngineConfig, EngineError, EngineStatus, Event, Nameplate, PollStatus,
    SiteMeasurement,
};

/// The CSIP-AUS client engine. See the module doc of [`super`].
pub struct Engine {
    ctx: Ctx,
    dcap: DcapSet,
    time: TimeSet,
    edev: EdevSet,
    fsa: FsaSet,
    derp: DerpSet,
    pricing: PricingSet,
    der: DerSet,
    mirror: MirrorSet,
    responses: ResponseSet,
    log_event: LogEventSet,
    well_known: WellKnownSet,
    subscriptions: SubscriptionSet,
    started: bool,
    last_status: Option<EngineStatus>,
    last_signature: u64,
}

impl Engine {
    /// Builds the engine at `now`; nothing is requested until the first input (e.g.
    /// [`Engine::handle_timeout`]).
    pub fn new(config: EngineConfig, now: Now) -> Result<Engine, EngineError> {
        if config.lfdi.len() != 40 || !config.lfdi.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(EngineError::Config(format!(
                "LFDI must be 40 hex digits, got {:?}",
                config.lfdi
            )));
        }
        if !config.service_discovery
            && !config.dcap_path.starts_with('/')
            && !config.dcap_path.starts_with("http")
        {
            return Err(EngineError::Config(format!(
                "DeviceCapability path must start with '/', got {:?}",
                config.dcap_path
            )));
        }
        let profile = if config.schema_2018 {
            WriteProfile::Plain
        } else if config.csipaus && config.csipaus_v1_3 {
            WriteProfile::CsipAus {
                ns: sep2::CsipausNs::V1_3,
            }
        } else if config.csipaus {
            WriteProfile::default()
        } else {
            WriteProfile::Plain
        };
        Ok(Engine {
            dcap: DcapSet::new(&config.dcap_path),
            time: TimeSet::default(),
            edev: EdevSet::default(),
            fsa: FsaSet::default(),
            derp: DerpSet::new(config.rng_seed),
            pricing: PricingSet::new(config.rng_seed),
            der: DerSet::new(config.nameplate.clone()),
            mirror: MirrorSet::new(config.default_post_rate_s, config.reading_buffer_intervals),
            responses: ResponseSet::default(),
            log_event: LogEventSet::default(),
            well_known: WellKnownSet::default(),
            subscriptions: SubscriptionSet::default(),
            started: false,
            last_status: None,
            last_signature: 0,
            ctx: Ctx::new(config, profile, now),
        })
    }

    /// Read only: walk and poll, but send nothing (no in-band registration, no
    /// ConnectionPoint, reports, readings or responses). For `csipd discover`.
    pub fn set_read_only(&mut self, read_only: bool) {
        self.ctx.read_only = read_only;
    }

    /// Restores the scheduler's memory (ledger, randomisation draws) from the store, so
    /// a restart neither repeats responses nor redraws randomisation. Ends a
    /// [`Engine::hold_schedule`].
    pub fn restore_schedule_state(&mut self, state: schedule::State) {
        self.derp.schedule_state = state;
        self.derp.held = false;
    }

    /// While `hold` is true the scheduler is not run (no controls, no responses);
    /// discovery and polling go on. The runtime holds it while the store opens, so the
    /// first request leaves at once but no event is seen before its stored memory is
    /// back ([`Engine::restore_schedule_state`] or `hold_schedule(false)` end it).
    pub fn hold_schedule(&mut self, hold: bool) {
        self.derp.held = hold;
    }

    /// The scheduler's memory, for the store to persist.
    pub fn schedule_state(&self) -> &schedule::State {
        &self.derp.schedule_state
    }

    /// Responses due but not yet accepted by the server, oldest first.
    pub fn pending_responses(&self) -> Vec<schedule::ResponseDue> {
        self.responses.outbox.pending()
    }

    /// Puts back responses that were pending when the process stopped.
    pub fn restore_pending_responses(&mut self, pending: Vec<schedule::ResponseDue>) {
        for due in pending {
            self.responses.push(due);
        }
    }

    /// Requests handed out (or queued) and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.ctx.outstanding()
    }

    /// True once every resource linked so far has been read (or failed) at least once
    /// and no request is outstanding: one walk of the tree is complete.
    pub fn walked(&self) -> bool {
        self.started
            && self.ctx.outstanding() == 0
            && self
                .ctx
                .poller
                .entries()
                .all(|(_, e)| e.last_poll_ms.is_some() || e.consecutive_failures > 0)
    }

    /// Server time minus local time, seconds.
    pub fn clock_offset_s(&self) -> i64 {
        self.ctx.clock.offset_s()
    }

    /// A counter that moves whenever what was read of the tree changes (a program, its
    /// controls, default or curves, the FSAs, the server clock): views made from
    /// [`Engine::tree`] (the status's upcoming events) are made again when it moves.
    pub fn tree_version(&self) -> u64 {
        self.ctx.tree_version
    }

    // ------------------------------------------------------------------ inputs

    /// Time passed: starts what fell due (polls, retries, schedule changes).
    pub fn handle_timeout(&mut self, now: Now) {
        self.set_now(now);
        self.step();
    }

    /// One second's measurements (`None`: stale, nothing is averaged for it).
    pub fn handle_measurements(&mut self, measurement: Option<SiteMeasurement>, now: Now) {
        self.set_now(now);
        if let Some(m) = &measurement {
            self.der.inverters = Some(m.inverters.clone());
            self.der.storage = m.storage;
        }
        let server_now_s = self.ctx.server_now_s();
        self.mirror
            .handle_measurement(measurement.as_ref(), server_now_s);
        self.step();
    }

    /// The DER fleet's nameplate became known (the inverters' ratings): DERCapability
    /// and DERSettings are sent (again) with it.
    pub fn handle_nameplate(&mut self, nameplate: Nameplate, now: Now) {
        self.set_now(now);
        self.der.set_nameplate(nameplate);
        self.step();
    }

    /// Something happened at a device (an inverter's event bits, comms, staleness, a
    /// control not applied): LogEvents are queued for what changed (see
    /// [`super::log_event`]; rate-limited per device). The runtime hands in every
    /// device's levels each round, so the engine steps (schedule evaluation, flushes,
    /// status) only when one of them changed something.
    pub fn handle_device_event(&mut self, event: DeviceEvent, now: Now) {
        self.set_now(now);
        if self.log_event.handle_device_event(&self.ctx, event) {
            self.step();
        }
    }

    /// LogEvents waiting for the server, oldest first.
    pub fn queued_log_events(&self) -> Vec<crate::sep2::LogEvent> {
        self.log_event.queued().cloned().collect()
    }

    /// A Notification the server POSTed to csipd's notificationURI (the body as
    /// received). The resource it names is read again at once, as if its pollRate had
    /// come (see [`super::subscription`]); a cancelled subscription is made again.
    /// Errors: the body is not a 2030.5 Notification (the listener answers 400).
    pub fn handle_notification(
        &mut self,
        body: &[u8],
        now: Now,
    ) -> Result<NotificationOutcome, sep2::ReadError> {
        self.set_now(now);
        let notification: sep2::Notification = sep2::read(body)?;
        let outcome = self.subscriptions.notified(&mut self.ctx, &notification);
        self.step();
        Ok(outcome)
    }

    /// The subscriptions made so far: (resource path, state).
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, &super::subscription::SubState)> {
        self.subscriptions.subs.iter().map(|(r, s)| (r.as_str(), s))
    }

    /// The answer to request `id` (a transport error or timeout is an answer too).
    pub fn handle_response(
        &mut self,
        id: RequestId,
        result: Result<Response, HttpError>,
        now: Now,
    ) {
        self.set_now(now);
        let Some((purpose, href)) = self.ctx.take_purpose(id) else {
            log::debug!("csip: answer to unknown request {id:?} ignored");
            return;
        };
        let answer = Answer::of(result);
        let ctx = &mut self.ctx;
        match purpose {
            Purpose::Poll { href, kind, part } => match (kind, part) {
                (PollKind::WellKnown, _) => {
                    if let Some(dcap_path) = self.well_known.handle(ctx, &href, answer) {
                        if dcap_path != self.dcap.href {
                            ctx.poller.untrack(&self.dcap.href);
                            ctx.errors.remove(&self.dcap.href);
                            self.dcap = DcapSet::new(&dcap_path);
                            self.dcap.start(ctx);
                        }
                    }
                }
                (PollKind::DeviceCapability, _) => {
                    // A discovered DeviceCapability that is gone: ask the document again.
                    if matches!(answer, Answer::Gone(_)) && ctx.config.service_discovery {
                        self.well_known.start(ctx);
                    }
                    if let Some(links) = self.dcap.handle(ctx, &href, answer) {
                        self.time.link(ctx, links.time);
                        self.edev.link(ctx, links.end_device_list);
                        self.mirror.link(ctx, links.mirror_usage_point_list);
                    }
                }
                (PollKind::Time, PollPart::SentAt(sent)) => {
                    self.time.handle(ctx, &href, sent, answer);
                }
                (PollKind::EndDeviceList, PollPart::EndDevices(paged)) => {
                    if let Some(links) = self.edev.handle_list(ctx, &href, paged, answer) {
                        self.adopted(links);
                    }
                }
                (PollKind::Registration, _) => {
                    self.edev.handle_registration(ctx, &href, answer);
                }
                (PollKind::FunctionSetAssignmentsList, PollPart::Fsas(paged)) => {
                    if let Some(lists) = self.fsa.handle(ctx, &href, paged, answer) {
                        self.derp.link(ctx, &lists);
                        self.pricing.link(ctx, &self.fsa.tariff_profile_lists());
                    }
                }
                (PollKind::DerProgramList, PollPart::Programs(paged)) => {
                    self.derp.handle_program_list(ctx, &href, paged, answer);
                }
                (PollKind::DerControlList, PollPart::Controls(paged)) => {
                    self.derp.handle_controls(ctx, &href, paged, answer);
                }
                (PollKind::DefaultDerControl, _) => {
                    self.derp.handle_default(ctx, &href, answer);
                }
                (PollKind::DerCurveList, PollPart::Curves(paged)) => {
                    self.derp.handle_curves(ctx, &href, paged, answer);
                }
                (PollKind::TariffProfileList, PollPart::TariffProfiles(paged)) => {
                    self.pricing.handle_profiles(ctx, &href, paged, answer);
                }
                (PollKind::RateComponentList, PollPart::RateComponents(paged)) => {
                    self.pricing.handle_components(ctx, &href, paged, answer);
                }
                (PollKind::ReadingType, _) => {
                    self.pricing.handle_reading_type(ctx, &href, answer);
                }
                (PollKind::RateComponent, _) => {
                    self.pricing.handle_component(ctx, &href, answer);
                }
                (PollKind::TimeTariffIntervalList, PollPart::TimeTariffIntervals(paged)) => {
                    self.pricing.handle_intervals(ctx, &href, paged, answer);
                }
                (
                    PollKind::ConsumptionTariffIntervalList,
                    PollPart::ConsumptionTariffIntervals(paged),
                ) => {
                    self.pricing.handle_blocks(ctx, &href, paged, answer);
                }
                (PollKind::DerList, PollPart::Ders(paged)) => {
                    self.der.handle_list(ctx, &href, paged, answer);
                }
                (PollKind::MirrorUsagePointList, PollPart::UsagePoints(paged)) => {
                    self.mirror.handle_list(ctx, &href, paged, answer);
                }
                (kind, part) => {
                    // Every poll is sent with its kind's part; nothing else can come back.
                    log::error!("csip: internal: {} answer with {part:?}", kind.name());
                }
            },
            Purpose::Edev(req) => {
                if let Some(links) = self.edev.handle(ctx, req, answer) {
                    self.adopted(links);
                }
            }
            Purpose::Der(req) => self.der.handle(ctx, req, &href, answer),
            Purpose::Mirror(req) => self.mirror.handle(ctx, req, &href, answer),
            Purpose::Response(req) => self.responses.handle(ctx, req, &href, answer),
            Purpose::LogEvent(req) => self.log_event.handle(ctx, req, &href, answer),
            Purpose::Subscription(req) => self.subscriptions.handle(ctx, req, &href, answer),
            Purpose::Pricing(req) => self.pricing.handle_response(ctx, req, &href, answer),
        }
        self.step();
    }

    // ------------------------------------------------------------------ outputs

    /// The next request to send, if any.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.ctx.pop_request()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.ctx.events.pop_front()
    }

    /// When to call [`Engine::handle_timeout`] next, in the monotonic clock of the
    /// `Now`s handed in (milliseconds); `None` when only an answer or a measurement can
    /// move anything.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.started {
            return Some(self.ctx.now.mono_ms);
        }
        let polls = if self.ctx.state == ConnectionState::PinMismatch {
            self.ctx
                .poller
                .entries()
                .filter(|(_, e)| e.kind == PollKind::Registration && !e.in_flight)
                .map(|(_, e)| e.next_due_ms)
                .min()
        } else {
            self.ctx.poller.next_due_ms()
        };
        [
            polls,
            self.derp.next_change_ms(&self.ctx),
            self.log_event.next_change_ms(),
            self.pricing.next_change_ms(&self.ctx),
            self.pricing.next_response_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ------------------------------------------------------------------ views

    /// The tree as discovered so far (for `csipd discover` and the status page).
    pub fn tree(&self) -> Tree {
        Tree {
            dcap_href: self.dcap.href.clone(),
            dcap: self.dcap.dcap.clone(),
            time_href: self.time.href.clone(),
            edev_list_href: self.edev.list_href.clone(),
            edev: self.edev.own.clone(),
            edev_href: self.edev.own_href.clone(),
            registration: self.edev.registration.clone(),
            fsa_list_href: self.fsa.list_href.clone(),
            fsas: self.fsa.fsas.clone(),
            programs: self.derp.programs.clone(),
            der_list_href: self.der.list_href.clone(),
            ders: self.der.ders.clone(),
            mup_list_href: self.mirror.list_href.clone(),
            mups: self.mirror.mups.clone(),
            log_event_list_href: self.log_event.list_href.clone(),
            log_event_count: self.log_event.count,
        }
    }

    /// The engine's status now.
    pub fn status(&self) -> EngineStatus {
        let ctx = &self.ctx;
        let now_ms = ctx.now.mono_ms;
        let now_s = ctx.server_now_s();
        let to_server_s = |ms: u64| now_s + (ms as i64 - now_ms as i64) / 1000;
        let (readings_pending, readings_dropped) = self.mirror.pending();
        EngineStatus {
            state: ctx.state,
            lfdi: ctx.config.lfdi.clone(),
            sfdi: ctx.config.sfdi,
            clock_offset_s: ctx.clock.offset_s(),
            edev_href: self.edev.own_href.clone(),
            polls: ctx
                .poller
                .entries()
                .map(|(href, entry)| PollStatus {
                    href: href.to_string(),
                    kind: entry.kind.name(),
                    rate_s: entry.rate_s,
                    last_poll_s: entry.last_poll_ms.map(to_server_s),
                    next_poll_s: (entry.next_due_ms != u64::MAX)
                        .then(|| to_server_s(entry.next_due_ms)),
                    next_read: (entry.next_due_ms == u64::MAX)
                        .then(|| super::NextRead::of(entry.kind)),
                    last_error: ctx.errors.get(href).cloned(),
                })
                .collect(),
            readings_pending,
            readings_dropped,
            readings_posted: self.mirror.readings_posted,
            responses_pending: self.responses.outbox.len() + self.pricing.responses_pending(),
            log_events: self.log_event.counts(),
            last_error: ctx.last_error.clone(),
            csipaus_version: self.csipaus_version(),
            prices: self.pricing.view(now_s),
        }
    }

    /// The CSIP-AUS version written: the one service discovery chose, else the
    /// configured one; `None` before discovery chose and for plain IEEE 2030.5.
    fn csipaus_version(&self) -> Option<&'static str> {
        if self.ctx.config.service_discovery && self.well_known.choice.is_none() {
            return None;
        }
        well_known::profile_version(self.ctx.profile)
    }

    /// What service discovery chose (`None` before, or without service discovery).
    pub fn well_known_choice(&self) -> Option<&well_known::Choice> {
        self.well_known.choice.as_ref()
    }

    // ------------------------------------------------------------------ dispatch

    fn set_now(&mut self, mut now: Now) {
        // The time rule: the monotonic clock never goes backwards.
        now.mono_ms = now.mono_ms.max(self.ctx.now.mono_ms);
        self.ctx.now = now;
    }

    /// Our EndDevice was read: hand its links to the sets that own them.
    fn adopted(&mut self, links: EdevLinks) {
        let ctx = &mut self.ctx;
        self.fsa.link(ctx, links.fsa_list);
        self.der.link(ctx, links.der_list);
        self.log_event.link(ctx, links.log_event_list);
        self.subscriptions.link(links.subscription_list);
        self.dcap.registered(ctx);
        if let Some(rate) = self.edev.post_rate_s() {
            self.mirror.set_end_device_post_rate(rate);
        }
    }

    /// After every input: start due polls, run the schedule, send what is due, publish
    /// the status if it changed.
    fn step(&mut self) {
        if !self.started {
            self.started = true;
            if self.ctx.config.service_discovery {
                log::info!(
                    "csip: service discovery from {}",
                    well_known::WELL_KNOWN_PATH
                );
                self.well_known.start(&mut self.ctx);
            } else {
                log::info!("csip: discovery from {}", self.dcap.href);
                self.dcap.start(&mut self.ctx);
            }
        }
        self.start_polls();
        self.derp.evaluate(
            &mut self.ctx,
            &self.fsa.fsas,
            &mut self.responses,
            &self.der.nameplate,
        );
        let ctx = &mut self.ctx;
        self.edev.flush(ctx);
        self.responses.flush(ctx);
        self.pricing.flush(ctx);
        self.der.flush(
            ctx,
            self.derp.set_grad_w(),
            self.derp.enter_service(),
            self.derp.own_actions(),
        );
        self.mirror.flush(ctx);
        self.log_event.watch_connection(ctx);
        self.log_event.flush(ctx);
        self.subscriptions.flush(ctx);
        self.publish_status();
    }

    fn start_polls(&mut self) {
        let ctx = &mut self.ctx;
        for (href, kind) in ctx.poller.due(ctx.now.mono_ms) {
            // A PIN that does not match stops everything but the Registration re-check.
            if ctx.state == ConnectionState::PinMismatch && kind != PollKind::Registration {
                continue;
            }
            match kind {
                PollKind::WellKnown => self.well_known.request(ctx, &href),
                PollKind::DeviceCapability => self.dcap.request(ctx, &href),
                PollKind::Time => self.time.request(ctx, &href),
                PollKind::EndDeviceList | PollKind::Registration => {
                    self.edev.request(ctx, &href, kind)
                }
                PollKind::FunctionSetAssignmentsList => self.fsa.request(ctx, &href),
                PollKind::DerProgramList
                | PollKind::DerControlList
                | PollKind::DefaultDerControl
                | PollKind::DerCurveList => self.derp.request(ctx, &href, kind),
                PollKind::DerList => self.der.request(ctx, &href),
                PollKind::MirrorUsagePointList => self.mirror.request(ctx, &href),
                PollKind::TariffProfileList
                | PollKind::RateComponentList
                | PollKind::ReadingType
                | PollKind::RateComponent
                | PollKind::TimeTariffIntervalList
                | PollKind::ConsumptionTariffIntervalList => self.pricing.request(ctx, &href, kind),
            }
        }
    }

    /// A cheap fingerprint of what the status shows (no allocation), so the status is
    /// built only when something in it changed.
    fn status_signature(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let ctx = &self.ctx;
        let mut h = std::hash::DefaultHasher::new();
        (ctx.state as u8).hash(&mut h);
        ctx.last_error.hash(&mut h);
        ctx.errors.len().hash(&mut h);
        for error in ctx.errors.values() {
            error.len().hash(&mut h);
        }
        ctx.clock.offset_s().hash(&mut h);
        for (_, entry) in ctx.poller.entries() {
            (entry.rate_s, entry.last_poll_ms).hash(&mut h);
        }
        self.mirror.pending().hash(&mut h);
        self.mirror.readings_posted.hash(&mut h);
        self.responses.outbox.len().hash(&mut h);
        let le = self.log_event.counts();
        (le.queued, le.held, le.dropped).hash(&mut h);
        self.pricing.responses_pending().hash(&mut h);
        self.well_known.choice.is_some().hash(&mut h);
        self.pricing.version.hash(&mut h);
        // The timeline moves with time: which intervals are current and next.
        self.pricing.next_change_ms(ctx).hash(&mut h);
        h.finish()
    }

    fn publish_status(&mut self) {
        let signature = self.status_signature();
        if self.last_status.is_some() && self.last_signature == signature {
            return;
        }
        self.last_signature = signature;
        let status = self.status();
        // Compare without the second-by-second drift of the poll times' conversion.
        let changed = match &self.last_status {
            None => true,
            Some(last) => {
                last.state != status.state
                    || last.last_error != status.last_error
                    || last.polls.len() != status.polls.len()
                    || last.polls.iter().zip(&status.polls).any(|(a, b)| {
                        a.last_poll_s != b.last_poll_s
                            || a.rate_s != b.rate_s
                            || a.last_error != b.last_error
                    })
                    || last.readings_pending != status.readings_pending
                    || last.readings_posted != status.readings_posted
                    || last.responses_pending != status.responses_pending
                    || last.log_events != status.log_events
                    || last.clock_offset_s != status.clock_offset_s
                    || last.csipaus_version != status.csipaus_version
                    || last.prices != status.prices
            }
        };
        if changed {
            self.ctx.events.push_back(Event::Status(status.clone()));
            self.last_status = Some(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use std::time::Duration;

    fn config() -> EngineConfig {
        let nameplate = Nameplate {
            rtg_max_w: 0.0,
            rtg_max_va: None,
            rtg_max_var: None,
            rtg_max_var_neg: None,
            rtg_v_nom: None,
            rtg_min_pf_over_excited: None,
            rtg_min_pf_under_excited: None,
            der_type: 4,
            can_limit_export: true,
            can_limit_import: false,
            can_limit_generation: true,
            can_limit_load: false,
            storage: None,
            inverter_modes: None,
        };
        EngineConfig {
            http: crate::http::ClientConfig::new("http://memory"),
            dcap_path: "/dcap".into(),
            service_discovery: false,
            lfdi: "3E4F45AB31EDFE5B67E343E5E4562E3100012345".into(),
            sfdi: 1,
            pin: None,
            in_band_registration: false,
            nmi: None,
            pen: 1,
            csipaus: true,
            csipaus_v1_3: false,
            schema_2018: false,
            nameplate,
            max_poll_interval_s: None,
            report_backstop_s: 3600,
            default_post_rate_s: 300,
            reading_buffer_intervals: 10,
            rng_seed: 1,
            notification_uri: None,
        }
    }

    fn timeout(path: &str) -> Result<Response, HttpError> {
        Err(HttpError::ReadTimeout {
            method: Method::Get,
            path: path.into(),
            after: Duration::from_secs(30),
        })
    }

    #[test]
    fn errors_by_resource_stay_within_their_bound() {
        let t0 = Now {
            mono_ms: 1_000,
            utc_ms: 1_750_000_000_000,
        };
        let mut engine = Engine::new(config(), t0).expect("engine");
        // A server whose failing resources get new hrefs all the time.
        for i in 0..3 * super::super::context::ERRORS_KEPT {
            engine
                .ctx
                .error_at(&format!("/derp/{i:04}/derc"), format!("HTTP 500 #{i}"));
            assert!(engine.ctx.errors.len() <= super::super::context::ERRORS_KEPT);
        }
        assert_eq!(engine.ctx.errors.len(), super::super::context::ERRORS_KEPT);
        // The newest is shown; the same href again replaces its entry.
        let last = format!(
            "/derp/{:04}/derc",
            3 * super::super::context::ERRORS_KEPT - 1
        );
        assert!(engine.ctx.errors.contains_key(&last));
        engine.ctx.error_at(&last, "HTTP 503".into());
        assert_eq!(
            engine.ctx.errors.get(&last).map(String::as_str),
            Some("HTTP 503")
        );
        assert_eq!(engine.ctx.errors.len(), super::super::context::ERRORS_KEPT);
    }

    #[test]
    fn call_order_and_time_rule() {
        let t0 = Now {
            mono_ms: 1_000,
            utc_ms: 1_750_000_000_000,
        };
        let mut engine = Engine::new(config(), t0).expect("engine");
        // Nothing is sent before the first input; it is due at once.
        assert!(engine.poll_request().is_none());
        assert_eq!(engine.poll_timeout(), Some(1_000));
        engine.handle_timeout(t0);
        let dcap = engine.poll_request().expect("GET /dcap");
        assert_eq!((dcap.method, dcap.href.as_str()), (Method::Get, "/dcap"));
        assert!(
            engine.poll_request().is_none(),
            "one at a time: nothing else known"
        );
        // In flight: not due again, no wake-up for it.
        assert_eq!(engine.poll_timeout(), None);
        // No answer: it backs off 2 s, and the status says why, naming the resource.
        engine.handle_response(dcap.id, timeout("/dcap"), t0.plus_ms(30_000));
        assert_eq!(engine.poll_timeout(), Some(33_000));
        let status = engine.status();
        assert_eq!(status.state, ConnectionState::Offline);
        assert!(
            status.polls[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("DeviceCapability /dcap") && e.contains("30.0 s"))
        );
        assert!(matches!(engine.poll_event(), Some(Event::Status(_))));
        // The monotonic clock never goes back: an earlier `now` is taken as the last.
        engine.handle_timeout(Now {
            mono_ms: 5,
            utc_ms: t0.utc_ms,
        });
        assert!(engine.poll_request().is_none(), "not due yet");
        engine.handle_timeout(t0.plus_ms(32_000));
        let again = engine.poll_request().expect("retried");
        assert_eq!(again.href, "/dcap");
        // An answer to an unknown id is ignored.
        engine.handle_response(RequestId(999), timeout("/x"), t0.plus_ms(32_000));
        assert!(engine.poll_request().is_none());
    }
}
