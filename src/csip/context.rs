//! What every function set shares: the queue of requests to send (each remembering what
//! its answer is for), the poller, the server clock, the connection state, the status's
//! per-resource errors and the events for the driver. Pure: the engine hands in `now`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::clock::Now;
use crate::http::{HttpError, Method, Response};
use crate::sep2::{self, List, ListItem, ReadError, Readable, SkippedItem, WriteProfile};

use super::poller::{AfterPoll, PollKind, PollOutcome, Poller};
use super::time::ServerClock;
use super::{ConnectionState, EngineConfig, Event};

/// Items asked for per list page. Small pages keep memory flat on a router; every page
/// carries `s` and `l` so servers with one-item default pages are walked completely.
pub const PAGE_LIMIT: u32 = 50;

/// Most pages walked for one list (a guard against servers whose `all` never fills).
const MAX_PAGES: u32 = 200;

/// Shortest wait between rediscoveries, so a server that keeps answering 404 on a
/// linked href cannot make the client walk from the top in a loop.
const REDISCOVERY_MIN_INTERVAL_MS: u64 = 60_000;
/// Most resources with an error shown at once ([`Ctx::errors`]); a tree has a few dozen
/// resources. Beyond it, the error of the alphabetically first other href is dropped.
pub const ERRORS_KEPT: usize = 64;

/// Identifies a request; its answer goes back with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A request for the driver to send ([`super::Engine::poll_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    pub method: Method,
    /// The href as the server gave it (a path, with `?s=&l=` on list pages, or an
    /// absolute URL on the same server; [`href_path`] takes the path part).
    pub href: String,
    /// The `application/sep+xml` body of a PUT or POST.
    pub body: Option<String>,
}

/// The path part of an href (servers may send absolute URLs; csipd talks to one server).
pub fn href_path(href: &str) -> &str {
    for scheme in ["https://", "http://"] {
        if let Some(rest) = href.strip_prefix(scheme) {
            return rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        }
    }
    href
}

/// `href` with the list paging query `s` (start) and `l` (limit).
pub fn with_paging(href: &str, start: u32, limit: u32) -> String {
    let sep = if href.contains('?') { '&' } else { '?' };
    format!("{href}{sep}s={start}&l={limit}")
}

/// How an answer came back, as the function sets need it.
#[derive(Debug)]
pub enum Answer {
    /// 2xx (and 3xx the client did not follow).
    Ok(Response),
    /// 404 or 410: the server no longer has the resource.
    Gone(u16),
    /// Any other failure: transport, timeout, 4xx, 5xx. The last good state is kept.
    Failed(HttpError),
}

impl Answer {
    pub fn of(result: Result<Response, HttpError>) -> Answer {
        match result {
            Ok(response) => Answer::Ok(response),
            Err(err) => match err.status() {
                Some(status @ (404 | 410)) => Answer::Gone(status),
                _ => Answer::Failed(err),
            },
        }
    }
}

/// A failed read, as the poller and the status need it.
#[derive(Debug)]
pub struct PollError {
    pub outcome: PollOutcome,
    /// For the status, without the href (the status names the resource).
    pub message: String,
    pub retry_after_ms: Option<u64>,
    /// No HTTP answer at all (connect, TLS, timeout): the server is unreachable.
    pub unreachable: bool,
}

impl PollError {
    /// The failure of an answer that was not good.
    pub fn of(answer: Answer) -> PollError {
        match answer {
            Answer::Ok(response) => PollError::parse(ReadError::new(format!(
                "unexpected HTTP {} {}",
                response.status, response.reason
            ))),
            Answer::Gone(status) => PollError {
                outcome: PollOutcome::Gone,
                message: format!("the server answered {status} (resource gone)"),
                retry_after_ms: None,
                unreachable: false,
            },
            Answer::Failed(err) => PollError {
                outcome: PollOutcome::Failed,
                retry_after_ms: err.retry_after().map(|d| d.as_millis() as u64),
                unreachable: err.status().is_none(),
                message: err.to_string(),
            },
        }
    }

    /// A body that did not read.
    pub fn parse(err: ReadError) -> PollError {
        PollError {
            outcome: PollOutcome::Failed,
            message: format!("bad document: {err}"),
            retry_after_ms: None,
            unreachable: false,
        }
    }
}

/// Reads `T` from an answer's body; `Ok(None)` for an empty body (204, e.g. a
/// DefaultDERControl that is not set).
pub fn read_opt<T: Readable>(response: &Response) -> Result<Option<T>, ReadError> {
    if response.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    sep2::read::<T>(&response.body).map(Some)
}

/// Reads `T` from an answer's body; an empty body is an error.
pub fn read<T: Readable>(response: &Response) -> Result<T, ReadError> {
    read_opt(response)?.ok_or_else(|| ReadError::new(format!("empty body, expected <{}>", T::ROOT)))
}

/// A list being read page by page (`?s=&l=` on each page until `all` items are in).
/// Items that do not read are left out and kept in `skipped`.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged<T> {
    pub href: String,
    pub items: Vec<T>,
    pub skipped: Vec<SkippedItem>,
    /// `all` and `pollRate` of the first page.
    pub all: u32,
    pub poll_rate_s: Option<u32>,
    start: u32,
    pages: u32,
}

impl<T: Readable + ListItem> Paged<T> {
    pub fn new(href: &str) -> Paged<T> {
        Paged {
            href: href.to_string(),
            items: Vec::new(),
            skipped: Vec::new(),
            all: 0,
            poll_rate_s: None,
            start: 0,
            pages: 0,
        }
    }

    /// The href of the next page to GET.
    pub fn page_href(&self) -> String {
        with_paging(&self.href, self.start, PAGE_LIMIT)
    }

    /// Adds one page; `Ok(true)` when more pages are to be read.
    pub fn add_page(&mut self, response: &Response) -> Result<bool, ReadError> {
        let (page, skipped): (List<T>, Vec<SkippedItem>) = sep2::read_list(&response.body)?;
        let got = (page.items.len() + skipped.len()) as u32;
        if self.pages == 0 {
            self.all = page.all;
            self.poll_rate_s = page.poll_rate_s;
        }
        self.pages += 1;
        self.items.extend(page.items);
        self.skipped.extend(skipped);
        self.start += got;
        Ok(got > 0 && self.start < self.all && self.pages < MAX_PAGES)
    }
}

/// Takes one answered page of the list polled as `href`: asks for the next page (with
/// the same purpose, rebuilt by `wrap`) and returns `None`, records the failure and
/// returns `None`, or returns the whole list once read. The caller then reports the
/// good poll ([`Ctx::poll_ok`]).
pub fn next_page<T: Readable + ListItem>(
    ctx: &mut Ctx,
    href: &str,
    kind: PollKind,
    mut paged: Paged<T>,
    answer: Answer,
    wrap: fn(Paged<T>) -> PollPart,
) -> Option<Paged<T>> {
    let more = match answer {
        Answer::Ok(response) => paged.add_page(&response),
        other => {
            ctx.poll_failed(href, kind, PollError::of(other));
            return None;
        }
    };
    match more {
        Ok(true) => {
            let get = paged.page_href();
            ctx.send(
                Method::Get,
                get,
                None,
                Purpose::Poll {
                    href: href.to_string(),
                    kind,
                    part: wrap(paged),
                },
            );
            None
        }
        Ok(false) => {
            // Shown once the caller reports the good read ([`Ctx::poll_ok`] clears the
            // list's error and then applies this note).
            let note =
                (!paged.skipped.is_empty()).then(|| left_out_note(href, kind, &paged.skipped));
            ctx.note_after_read(href, note);
            Some(paged)
        }
        Err(err) => {
            ctx.poll_failed(href, kind, PollError::parse(err));
            None
        }
    }
}

/// The status line of a list read whole but with items left out: the list, how many
/// and why each (the reader's error names the element path).
fn left_out_note(href: &str, kind: PollKind, skipped: &[SkippedItem]) -> String {
    let listed: Vec<String> = skipped.iter().map(|s| s.error.to_string()).collect();
    let count = match skipped.len() {
        1 => "1 item".to_string(),
        n => format!("{n} items"),
    };
    format!(
        "{} {href}: {count} left out: {}",
        kind.name(),
        listed.join("; ")
    )
}

/// What an answer is for: the function set and its own request kind.
#[derive(Debug)]
pub enum Purpose {
    /// A poll of a tracked resource (the poller's href), for the set owning `kind`.
    Poll {
        href: String,
        kind: PollKind,
        part: PollPart,
    },
    /// Anything else (a PUT, a POST, a one-off GET), for the set that sent it.
    Edev(super::edev::Req),
    Der(super::der::Req),
    Mirror(super::mirror::Req),
    Response(super::response::Req),
    LogEvent(super::log_event::Req),
    Subscription(super::subscription::Req),
    Pricing(super::pricing::Req),
}

/// The state of a multi-request poll (a list read page by page).
#[derive(Debug)]
pub enum PollPart {
    /// A single resource.
    Single,
    EndDevices(Paged<sep2::EndDevice>),
    Fsas(Paged<sep2::FunctionSetAssignments>),
    Programs(Paged<sep2::DerProgram>),
    Controls(Paged<sep2::DerControl>),
    Curves(Paged<sep2::DerCurve>),
    Ders(Paged<sep2::Der>),
    UsagePoints(Paged<sep2::MirrorUsagePoint>),
    TariffProfiles(Paged<sep2::TariffProfile>),
    RateComponents(Paged<sep2::RateComponent>),
    TimeTariffIntervals(Paged<sep2::TimeTariffInterval>),
    ConsumptionTariffIntervals(Paged<sep2::ConsumptionTariffInterval>),
    /// A request sent before the poll's own: time it left (Time's round trip).
    SentAt(Now),
}

/// The shared part of the engine.
pub struct Ctx {
    pub config: EngineConfig,
    pub profile: WriteProfile,
    /// The `now` of the input being handled.
    pub now: Now,
    pub clock: ServerClock,
    pub poller: Poller,
    pub state: ConnectionState,
    pub last_error: Option<String>,
    /// The last error of each resource (by href), cleared by its next good read. At most
    /// [`ERRORS_KEPT`] hrefs (set through [`Ctx::set_error`]): a server whose hrefs
    /// change while failing cannot grow it without end.
    pub errors: BTreeMap<String, String>,
    /// Notes about a read that is good but not whole (items of a list left out, by the
    /// list's href): [`Ctx::poll_ok`] shows them after clearing the href's error, so
    /// every list keeps its note without the function sets repeating it. At most one
    /// per list read in this round (taken by `poll_ok`, dropped by `poll_failed`).
    pending_notes: BTreeMap<String, String>,
    /// Only read (`csipd discover`): nothing is PUT or POSTed.
    pub read_only: bool,
    /// Set by the EndDevice function set: this device is found and its Registration
    /// allows writing (PIN checked where one is configured and offered).
    pub may_write: bool,
    /// Set by the EndDevice function set: the Registration's PIN is checked and matches
    /// (or there is nothing to check). Controls are taken only then.
    pub registration_ok: bool,
    /// Bumped whenever programs, controls or FSAs change (the schedule is evaluated
    /// again then).
    pub tree_version: u64,
    /// Requests made and not yet taken by `Engine::poll_request`: the driver drains it
    /// after every input, so it holds one round's requests (a walk of the tree at most).
    outgoing: VecDeque<Request>,
    /// What each request's answer is for, and the href it went to: one entry per request
    /// taken and not yet answered (every request is answered exactly once, a transport
    /// error or timeout included), so at most one round's worth.
    in_flight: HashMap<RequestId, (Purpose, String)>,
    next_id: u64,
    /// Events not yet taken by `Engine::poll_event`, drained after every input.
    pub events: VecDeque<Event>,
    last_rediscovery_ms: Option<u64>,
    /// How many walks from the top were started (subscriptions are made again after one).
    pub rediscoveries: u64,
    /// When the server last answered anything (any HTTP status).
    last_answer_ms: Option<u64>,
}

/// A request that got no answer makes the server "unreachable" only if nothing else was
/// answered for this long (one resource timing out while others answer is that
/// resource's failure, not the server's).
const UNREACHABLE_AFTER_MS: u64 = 30_000;

impl Ctx {
    pub fn new(config: EngineConfig, profile: WriteProfile, now: Now) -> Ctx {
        let mut poller = Poller::new();
        poller.set_max_rate_s(config.max_poll_interval_s);
        Ctx {
            config,
            profile,
            now,
            clock: ServerClock::default(),
            poller,
            state: ConnectionState::Discovering,
            last_error: None,
            errors: BTreeMap::new(),
            pending_notes: BTreeMap::new(),
            read_only: false,
            may_write: false,
            registration_ok: false,
            tree_version: 0,
            outgoing: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: 1,
            events: VecDeque::new(),
            last_rediscovery_ms: None,
            rediscoveries: 0,
            last_answer_ms: None,
        }
    }

    /// Server time (Unix seconds) now.
    pub fn server_now_s(&self) -> i64 {
        self.clock.server_time(self.now.utc_s())
    }

    /// True when PUTs and POSTs may go out.
    pub fn writable(&self) -> bool {
        self.may_write && !self.read_only && self.state != ConnectionState::PinMismatch
    }

    /// Queues a request; its answer comes back to the set named by `purpose`.
    pub fn send(&mut self, method: Method, href: String, body: Option<String>, purpose: Purpose) {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.in_flight.insert(id, (purpose, href.clone()));
        self.outgoing.push_back(Request {
            id,
            method,
            href,
            body,
        });
    }

    /// Queues the GET of a poll (the first page of a list).
    pub fn poll(&mut self, href: &str, kind: PollKind, part: PollPart) {
        self.poller.started(href);
        let get = match &part {
            PollPart::EndDevices(p) => p.page_href(),
            PollPart::Fsas(p) => p.page_href(),
            PollPart::Programs(p) => p.page_href(),
            PollPart::Controls(p) => p.page_href(),
            PollPart::Curves(p) => p.page_href(),
            PollPart::Ders(p) => p.page_href(),
            PollPart::UsagePoints(p) => p.page_href(),
            PollPart::TariffProfiles(p) => p.page_href(),
            PollPart::RateComponents(p) => p.page_href(),
            PollPart::TimeTariffIntervals(p) => p.page_href(),
            PollPart::ConsumptionTariffIntervals(p) => p.page_href(),
            PollPart::Single | PollPart::SentAt(_) => href.to_string(),
        };
        self.send(
            Method::Get,
            get,
            None,
            Purpose::Poll {
                href: href.to_string(),
                kind,
                part,
            },
        );
    }

    /// Serialises a document csipd sends.
    pub fn write<T: sep2::Writable>(&self, doc: &T) -> Result<String, sep2::WriteError> {
        sep2::write(doc, self.profile)
    }

    pub fn pop_request(&mut self) -> Option<Request> {
        self.outgoing.pop_front()
    }

    /// What the answer to `id` is for, and the href the request went to (once).
    pub fn take_purpose(&mut self, id: RequestId) -> Option<(Purpose, String)> {
        self.in_flight.remove(&id)
    }

    /// Requests queued or awaiting an answer.
    pub fn outstanding(&self) -> usize {
        self.in_flight.len()
    }

    /// A good read of the tracked `href`, which states `rate_s`: its error is cleared,
    /// and a note about this read (items left out, [`Ctx::note_after_read`]) shown.
    pub fn poll_ok(&mut self, href: &str, kind: PollKind, rate_s: Option<u32>) {
        let now_ms = self.now.mono_ms;
        self.poller.polled(href, now_ms, PollOutcome::Ok, None);
        self.poller.track(href, kind, rate_s, now_ms);
        self.errors.remove(href);
        if let Some(note) = self.pending_notes.remove(href) {
            self.error_at(href, note);
        }
        self.answered();
    }

    /// What the status should say about `href` after its good read that is about to be
    /// reported ([`Ctx::poll_ok`]); `None` takes back an earlier note.
    pub fn note_after_read(&mut self, href: &str, note: Option<String>) {
        match note {
            Some(note) => {
                self.pending_notes.insert(href.to_string(), note);
            }
            None => {
                self.pending_notes.remove(href);
            }
        }
    }

    /// The server answered (any HTTP status).
    fn answered(&mut self) {
        self.last_answer_ms = Some(self.now.mono_ms);
        if self.state == ConnectionState::Offline {
            self.state = ConnectionState::Polling;
        }
    }

    /// A request got no answer at all.
    fn unanswered(&mut self) {
        let quiet = self
            .last_answer_ms
            .is_none_or(|at| self.now.mono_ms >= at + UNREACHABLE_AFTER_MS);
        if quiet && self.state != ConnectionState::PinMismatch {
            self.state = ConnectionState::Offline;
        }
    }

    /// A failed read of the tracked `href`: its last good state stays, it backs off on
    /// its own, and the failure is in the status. A 404/410 on a known href walks the
    /// tree again from DeviceCapability.
    pub fn poll_failed(&mut self, href: &str, kind: PollKind, err: PollError) {
        let now_ms = self.now.mono_ms;
        self.pending_notes.remove(href);
        self.error_at(href, format!("{} {href}: {}", kind.name(), err.message));
        if err.unreachable {
            self.unanswered();
        } else if kind == PollKind::DeviceCapability {
            // Not even the DeviceCapability: the server is not serving us.
            self.last_answer_ms = Some(now_ms);
            if self.state != ConnectionState::PinMismatch {
                self.state = ConnectionState::Offline;
            }
        } else {
            self.last_answer_ms = Some(now_ms);
        }
        let after = self
            .poller
            .polled(href, now_ms, err.outcome, err.retry_after_ms);
        if after == AfterPoll::Rediscover && kind != PollKind::DeviceCapability {
            self.rediscover(&format!("{} {href} is gone", kind.name()));
        }
    }

    /// A failure of a send (PUT/POST): counts for the connection state.
    pub fn send_failed(&mut self, err: &HttpError) {
        if err.status().is_none() {
            self.unanswered();
        } else {
            self.last_answer_ms = Some(self.now.mono_ms);
        }
    }

    /// A good answer to a send.
    pub fn send_ok(&mut self) {
        self.answered();
    }

    /// Records a problem with the resource at `href` (status) and as the last error.
    pub fn error_at(&mut self, href: &str, message: String) {
        let line = first_line(&message);
        self.set_error(href, line.clone());
        self.set_last_error(line);
    }

    /// Sets the error shown for `href` (status only), keeping [`Ctx::errors`] within
    /// [`ERRORS_KEPT`].
    pub fn set_error(&mut self, href: &str, message: String) {
        if self.errors.len() >= ERRORS_KEPT && !self.errors.contains_key(href) {
            if let Some(first) = self.errors.keys().next().cloned() {
                self.errors.remove(&first);
            }
        }
        self.errors.insert(href.to_string(), message);
    }

    /// Records a problem that belongs to no one resource.
    pub fn error(&mut self, message: String) {
        let line = first_line(&message);
        self.set_last_error(line);
    }

    fn set_last_error(&mut self, line: String) {
        if self.last_error.as_deref() != Some(line.as_str()) {
            log::warn!("csip: {line}");
        }
        self.last_error = Some(line);
    }

    /// Walks again from DeviceCapability, keeping everything known meanwhile: every
    /// tracked resource is read again at once (at most once a minute).
    pub fn rediscover(&mut self, why: &str) {
        let now_ms = self.now.mono_ms;
        if self
            .last_rediscovery_ms
            .is_some_and(|last| now_ms < last + REDISCOVERY_MIN_INTERVAL_MS)
        {
            return;
        }
        log::info!("csip: walking again from DeviceCapability ({why})");
        self.last_rediscovery_ms = Some(now_ms);
        self.rediscoveries += 1;
        self.poller.all_soon(now_ms);
    }
}

/// Servers answer errors with whole HTML pages: keep the first line, bounded.
fn first_line(message: &str) -> String {
    let mut line: String = message.lines().next().unwrap_or_default().to_string();
    if line.len() > 240 {
        let mut cut = 240;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn href_paths() {
        assert_eq!(href_path("/edev/1"), "/edev/1");
        assert_eq!(href_path("https://server:8443/edev/1?x=1"), "/edev/1?x=1");
        assert_eq!(href_path("http://server"), "/");
        assert_eq!(with_paging("/edev", 0, 50), "/edev?s=0&l=50");
        assert_eq!(with_paging("/edev?a=1", 5, 50), "/edev?a=1&s=5&l=50");
    }

    #[test]
    fn long_errors_keep_their_first_line() {
        let long = format!("{}\nsecond", "x".repeat(300));
        let line = first_line(&long);
        assert!(line.ends_with('…') && !line.contains("second"));
    }
}
