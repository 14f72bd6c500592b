//! LogEvent function set (IEEE 2030.5 clause 10.14 "Log Event"): csipd POSTs a
//! `LogEvent` to its EndDevice's LogEventList when something the utility should know
//! about happens at the site, and reads the list once so `csipd discover` can say how
//! many events the server holds.
//!
//! What is logged (the inputs, [`DeviceEvent`], come from the runtime; the engine's own
//! comms state is watched here):
//! - an inverter's SunSpec event bits (1xx `Evt1`/`Evt2`, 701 `Alrm`) as each rises
//!   and falls ([`DeviceEvent::Alarms`]; a bit set at the first reading counts as
//!   risen);
//! - comms with the utility lost and restored (the engine's state going to and from
//!   `Offline`), and a device's Modbus comms lost and restored
//!   ([`DeviceEvent::Comms`]);
//! - a device's data going stale and fresh again ([`DeviceEvent::Stale`]);
//! - a control that could not be applied ([`DeviceEvent::ControlNotApplied`]).
//!
//! The codes are in [`codes`]: 2030.5's own DER alarm codes where a SunSpec bit has
//! one, vendor-defined codes (profileID 1, csipd's configured PEN) for the rest.
//! `extendedData` is 1 when a condition starts and 0 when it ends; `details` names the
//! device and the condition (String32, cut to 32 characters).
//!
//! **Rate limit.** Each source (a device by name, `utility` for the engine's own comms)
//! has a token bucket of [`BURST`] events refilled by one every [`REFILL_MS`] ms, so
//! one device never puts more than `BURST + t / REFILL_MS` events in the queue over a
//! span `t`, whatever it does. An event that finds the bucket empty is *held*, one per
//! condition (source, functionSet, logEventCode): a later event of the same condition
//! replaces it, so a flapping bit is coalesced to its newest state and the server
//! still learns how each condition ended. Held events go into the queue, oldest first,
//! as tokens come back. At most [`HELD_PER_SOURCE`] are held per source (the oldest is
//! dropped and counted beyond that; there are fewer distinct conditions than that).
//!
//! **Queue.** Admitted events wait in one queue of at most [`CAPACITY`] events (the
//! oldest is dropped and counted when full) until the server accepts them: across an
//! outage they are kept and sent, oldest first and one at a time, once it answers
//! again. A POST that fails without an answer, 429 or 5xx is tried again after
//! 5 s doubling to 60 s; a 4xx refuses it for good (dropped, counted, in the status).
//! Nothing is POSTed before the Registration allows writes, nor without a
//! `LogEventListLink` (events then wait in the queue). The queue is not persisted: a
//! restart loses what was not sent.

use std::collections::{BTreeMap, VecDeque};

use crate::devices::sunspec::InverterEvents;
use crate::http::Method;
use crate::sep2::LogEvent;

use super::ConnectionState;
use super::context::{Answer, Ctx, Paged, PollError, Purpose};
use super::response::{Delivery, classify};

/// Events a source may put in the queue at once (the bucket's size).
pub const BURST: u32 = 5;
/// One token comes back every this many milliseconds (one event a minute, sustained).
pub const REFILL_MS: u64 = 60_000;
/// Most events held (rate-limited, one per condition) for one source.
pub const HELD_PER_SOURCE: usize = 64;
/// Most events waiting for the server (an outage's backlog).
pub const CAPACITY: usize = 256;
/// Delay before a failed POST is tried again (doubling, capped).
const SEND_RETRY_MS: u64 = 5_000;
const SEND_RETRY_MAX_MS: u64 = 60_000;

/// The source name of the engine's own (utility comms) events.
pub const UTILITY_SOURCE: &str = "utility";

/// LogEvent codes csipd uses. A LogEvent's meaning is the tuple (logEventPEN,
/// profileID, functionSet, logEventCode) (sep.xsd, LogEvent).
pub mod codes {
    /// IEEE 2030.5's Private Enterprise Number, which 2030.5-defined codes carry
    /// (sep.xsd: "IEEE 2030.5-assigned logEventCodes SHALL use the IEEE 2030.5 PEN").
    pub const IEEE_2030_5_PEN: u32 = 40732;
    /// profileID 2: IEEE 2030.5 defines the code.
    pub const PROFILE_IEEE_2030_5: u8 = 2;
    /// profileID 1: vendor defined (csipd's codes, with csipd's configured PEN).
    pub const PROFILE_VENDOR: u8 = 1;
    /// functionSet 11: Distributed Energy Resources.
    pub const FS_DER: u8 = 11;
    /// functionSet 16: Network Status.
    pub const FS_NETWORK_STATUS: u8 = 16;

    /// 2030.5 DER alarm codes (DERStatus `alarmStatus` bits, "see DER LogEvents"):
    /// 1 DER_FAULT_OVER_VOLTAGE, 2 DER_FAULT_UNDER_VOLTAGE, 3
    /// DER_FAULT_OVER_FREQUENCY, 4 DER_FAULT_UNDER_FREQUENCY. The SunSpec `Evt1` bits
    /// with the same meaning map to them; other bits have none.
    pub fn der_alarm_of_evt1(bit: u8) -> Option<u8> {
        match bit {
            10 => Some(1), // AC_OVER_VOLT
            11 => Some(2), // AC_UNDER_VOLT
            8 => Some(3),  // OVER_FREQUENCY
            9 => Some(4),  // UNDER_FREQUENCY
            _ => None,
        }
    }

    /// Vendor (profile 1), functionSet 11: `Evt1`/`Alrm` bit b without a 2030.5 code
    /// is code b (0-31).
    pub const VENDOR_EVT1_BASE: u8 = 0;
    /// Vendor, functionSet 11: `Evt2` bit b is code 32 + b.
    pub const VENDOR_EVT2_BASE: u8 = 32;
    /// Vendor, functionSet 11: a control could not be applied to a device.
    pub const VENDOR_CONTROL_NOT_APPLIED: u8 = 64;
    /// Vendor, functionSet 11: a device's data went stale (extendedData 1) or fresh
    /// again (0).
    pub const VENDOR_DEVICE_STALE: u8 = 65;
    /// Vendor, functionSet 16: comms with the utility server lost (1) / restored (0).
    pub const VENDOR_UTILITY_COMMS: u8 = 1;
    /// Vendor, functionSet 16: a device's Modbus comms lost (1) / restored (0).
    pub const VENDOR_DEVICE_COMMS: u8 = 2;
}

/// Something at the site the utility is told about ([`super::Engine::handle_device_event`]).
/// `device` is the device's configured name. The level kinds (alarms, comms, stale)
/// may be handed in with every reading: only changes are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// An inverter's SunSpec event bits as last read.
    Alarms {
        device: String,
        events: InverterEvents,
    },
    /// The device answers (`up`) or its reads fail.
    Comms { device: String, up: bool },
    /// The device's last good reading is older than the staleness limit (`stale`), or
    /// fresh again.
    Stale { device: String, stale: bool },
    /// A control could not be applied to the device (a failed write, a read-back that
    /// differs, no model for it). Each one is logged.
    ControlNotApplied { device: String, detail: String },
}

/// The request of this function set.
#[derive(Debug)]
pub enum Req {
    /// The GET of the (first page of the) LogEventList.
    List { href: String },
    /// The POST of the queue's front event.
    Post,
}

/// One condition's event before it has an id.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    source: String,
    profile_id: u8,
    pen: u32,
    function_set: u8,
    code: u8,
    /// Some(true) a condition started, Some(false) ended, None a one-off.
    raised: Option<bool>,
    details: String,
    at_s: i64,
}

impl Entry {
    fn key(&self) -> (u8, u8, u8) {
        (self.profile_id, self.function_set, self.code)
    }
}

/// A source's token bucket, in milliseconds of credit (one event costs [`REFILL_MS`]).
#[derive(Debug, Clone)]
struct Bucket {
    credit_ms: u64,
    at_ms: u64,
}

impl Bucket {
    fn full(now_ms: u64) -> Bucket {
        Bucket {
            credit_ms: u64::from(BURST) * REFILL_MS,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let gained = now_ms.saturating_sub(self.at_ms);
        self.credit_ms = (self.credit_ms + gained).min(u64::from(BURST) * REFILL_MS);
        self.at_ms = now_ms.max(self.at_ms);
    }

    fn take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.credit_ms >= REFILL_MS {
            self.credit_ms -= REFILL_MS;
            true
        } else {
            false
        }
    }

    /// When the next token is there.
    fn next_token_ms(&self) -> u64 {
        self.at_ms + REFILL_MS.saturating_sub(self.credit_ms)
    }
}

/// What the engine shows of the LogEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogEventCounts {
    /// Waiting for the server.
    pub queued: usize,
    /// Held by the rate limit.
    pub held: usize,
    /// Accepted by the server.
    pub sent: u64,
    /// Dropped: queue or held set full, or refused by the server (4xx).
    pub dropped: u64,
}

/// LogEvent state.
#[derive(Debug, Clone, Default)]
pub struct LogEventSet {
    pub list_href: Option<String>,
    /// `all` of the LogEventList when read.
    pub count: Option<u32>,
    requested: bool,
    /// Last known level of each watched condition, by (source, key).
    alarms: BTreeMap<String, InverterEvents>,
    comms_up: BTreeMap<String, bool>,
    stale: BTreeMap<String, bool>,
    utility_lost: bool,
    buckets: BTreeMap<String, Bucket>,
    held: BTreeMap<String, VecDeque<Entry>>,
    queue: VecDeque<LogEvent>,
    next_id: u16,
    /// The event being POSTed (out of the queue, so a full queue's drop never hits it).
    in_flight: Option<LogEvent>,
    retry_at_ms: u64,
    failures: u32,
    sent: u64,
    dropped: u64,
}

/// Cuts `text` to 2030.5's String32 (32 characters).
fn string32(text: &str) -> String {
    text.chars().take(32).collect()
}

impl LogEventSet {
    /// Our EndDevice links the LogEventList at `href`: read it once.
    pub fn link(&mut self, ctx: &mut Ctx, href: Option<String>) {
        if href != self.list_href {
            self.requested = false;
        }
        self.list_href = href;
        if let (Some(href), false) = (&self.list_href, self.requested) {
            self.requested = true;
            let get = Paged::<LogEvent>::new(href).page_href();
            ctx.send(
                Method::Get,
                get,
                None,
                Purpose::LogEvent(Req::List { href: href.clone() }),
            );
        }
    }

    /// Counts for the status.
    pub fn counts(&self) -> LogEventCounts {
        LogEventCounts {
            queued: self.queue.len() + usize::from(self.in_flight.is_some()),
            held: self.held.values().map(VecDeque::len).sum(),
            sent: self.sent,
            dropped: self.dropped,
        }
    }

    /// The events waiting for the server, oldest first (their logEventIDs assigned).
    pub fn queued(&self) -> impl Iterator<Item = &LogEvent> {
        self.in_flight.iter().chain(self.queue.iter())
    }

    /// Takes one input: logs what changed. Returns whether anything was logged (the
    /// runtime hands in every device's levels each round; most rounds change nothing).
    pub fn handle_device_event(&mut self, ctx: &Ctx, event: DeviceEvent) -> bool {
        let at_s = ctx.server_now_s();
        let vendor_pen = ctx.config.pen;
        let vendor =
            |source: &str, fs: u8, code: u8, raised: Option<bool>, details: String| Entry {
                source: source.to_string(),
                profile_id: codes::PROFILE_VENDOR,
                pen: vendor_pen,
                function_set: fs,
                code,
                raised,
                details,
                at_s,
            };
        let mut entries = Vec::new();
        match event {
            DeviceEvent::Alarms { device, events } => {
                let before = self
                    .alarms
                    .insert(device.clone(), events)
                    .unwrap_or_default();
                for bit in 0..32u8 {
                    let mask = 1u32 << bit;
                    if (before.evt1 ^ events.evt1) & mask != 0 {
                        let raised = events.evt1 & mask != 0;
                        let name = InverterEvents::evt1_name(bit)
                            .map_or_else(|| format!("EVT1_{bit}"), str::to_string);
                        let details = format!("{device} {name}");
                        entries.push(match codes::der_alarm_of_evt1(bit) {
                            Some(code) => Entry {
                                source: device.clone(),
                                profile_id: codes::PROFILE_IEEE_2030_5,
                                pen: codes::IEEE_2030_5_PEN,
                                function_set: codes::FS_DER,
                                code,
                                raised: Some(raised),
                                details,
                                at_s,
                            },
                            None => vendor(
                                &device,
                                codes::FS_DER,
                                codes::VENDOR_EVT1_BASE + bit,
                                Some(raised),
                                details,
                            ),
                        });
                    }
                    if (before.evt2 ^ events.evt2) & mask != 0 {
                        entries.push(vendor(
                            &device,
                            codes::FS_DER,
                            codes::VENDOR_EVT2_BASE + bit,
                            Some(events.evt2 & mask != 0),
                            format!("{device} EVT2_{bit}"),
                        ));
                    }
                }
            }
            DeviceEvent::Comms { device, up } => {
                // A device starts as answering: only a loss (and its end) is news.
                let before = self.comms_up.insert(device.clone(), up).unwrap_or(true);
                if before != up {
                    let what = if up { "comms restored" } else { "comms lost" };
                    entries.push(vendor(
                        &device,
                        codes::FS_NETWORK_STATUS,
                        codes::VENDOR_DEVICE_COMMS,
                        Some(!up),
                        format!("{device} {what}"),
                    ));
                }
            }
            DeviceEvent::Stale { device, stale } => {
                let before = self.stale.insert(device.clone(), stale).unwrap_or(false);
                if before != stale {
                    let what = if stale { "stale" } else { "fresh" };
                    entries.push(vendor(
                        &device,
                        codes::FS_DER,
                        codes::VENDOR_DEVICE_STALE,
                        Some(stale),
                        format!("{device} {what}"),
                    ));
                }
            }
            DeviceEvent::ControlNotApplied { device, detail } => {
                entries.push(vendor(
                    &device,
                    codes::FS_DER,
                    codes::VENDOR_CONTROL_NOT_APPLIED,
                    None,
                    format!("{device} not applied: {detail}"),
                ));
            }
        }
        let changed = !entries.is_empty();
        for entry in entries {
            self.admit(ctx, entry);
        }
        changed
    }

    /// Watches the engine's own connection state: the utility lost and back.
    pub fn watch_connection(&mut self, ctx: &Ctx) {
        let lost = ctx.state == ConnectionState::Offline;
        if lost == self.utility_lost {
            return;
        }
        self.utility_lost = lost;
        let what = if lost {
            "utility comms lost"
        } else {
            "utility comms restored"
        };
        let entry = Entry {
            source: UTILITY_SOURCE.to_string(),
            profile_id: codes::PROFILE_VENDOR,
            pen: ctx.config.pen,
            function_set: codes::FS_NETWORK_STATUS,
            code: codes::VENDOR_UTILITY_COMMS,
            raised: Some(lost),
            details: what.to_string(),
            at_s: ctx.server_now_s(),
        };
        self.admit(ctx, entry);
    }

    /// Through the source's bucket into the queue, or held (coalesced by condition).
    fn admit(&mut self, ctx: &Ctx, entry: Entry) {
        let now_ms = ctx.now.mono_ms;
        let held = self.held.entry(entry.source.clone()).or_default();
        let bucket = self
            .buckets
            .entry(entry.source.clone())
            .or_insert_with(|| Bucket::full(now_ms));
        // Held events of this source go first (oldest first), so order is kept.
        if held.is_empty() && bucket.take(now_ms) {
            self.enqueue(entry);
            return;
        }
        if let Some(same) = held.iter_mut().find(|h| h.key() == entry.key()) {
            *same = entry;
            return;
        }
        if held.len() >= HELD_PER_SOURCE {
            held.pop_front();
            self.dropped += 1;
        }
        held.push_back(entry);
    }

    fn enqueue(&mut self, entry: Entry) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let event = LogEvent {
            href: None,
            created_date_time: entry.at_s,
            details: Some(string32(&entry.details)),
            extended_data: entry.raised.map(u32::from),
            function_set: entry.function_set,
            log_event_code: entry.code,
            log_event_id: id,
            log_event_pen: entry.pen,
            profile_id: entry.profile_id,
        };
        log::info!(
            "csip: LogEvent {} ({}/{}/{}) queued",
            event.details.as_deref().unwrap_or(""),
            event.profile_id,
            event.function_set,
            event.log_event_code
        );
        if self.queue.len() + usize::from(self.in_flight.is_some()) >= CAPACITY {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(event);
    }

    /// Moves held events whose source has a token again into the queue.
    fn release(&mut self, now_ms: u64) {
        let mut released = Vec::new();
        for (source, held) in self.held.iter_mut() {
            let Some(bucket) = self.buckets.get_mut(source) else {
                continue;
            };
            while !held.is_empty() && bucket.take(now_ms) {
                released.extend(held.pop_front());
            }
        }
        self.held.retain(|_, held| !held.is_empty());
        for entry in released {
            self.enqueue(entry);
        }
    }

    /// When a held event can go, or a failed POST is retried; `None` when neither.
    pub fn next_change_ms(&self) -> Option<u64> {
        let release = self
            .held
            .iter()
            .filter(|(_, held)| !held.is_empty())
            .filter_map(|(source, _)| self.buckets.get(source))
            .map(Bucket::next_token_ms)
            .min();
        let retry = (!self.queue.is_empty() && self.in_flight.is_none() && self.failures > 0)
            .then_some(self.retry_at_ms);
        release.into_iter().chain(retry).min()
    }

    /// Releases held events and POSTs the queue's front if writes are allowed and
    /// nothing is in flight.
    pub fn flush(&mut self, ctx: &mut Ctx) {
        self.release(ctx.now.mono_ms);
        if !ctx.writable() || self.in_flight.is_some() || ctx.now.mono_ms < self.retry_at_ms {
            return;
        }
        let Some(href) = self.list_href.clone() else {
            return;
        };
        while let Some(front) = self.queue.pop_front() {
            match ctx.write(&front) {
                Ok(xml) => {
                    self.in_flight = Some(front);
                    ctx.send(Method::Post, href, Some(xml), Purpose::LogEvent(Req::Post));
                    return;
                }
                Err(err) => {
                    ctx.error(format!("cannot write LogEvent: {err}"));
                    self.dropped += 1;
                }
            }
        }
    }

    pub fn handle(&mut self, ctx: &mut Ctx, req: Req, href: &str, answer: Answer) {
        match req {
            Req::List { href } => self.handle_list(ctx, &href, answer),
            Req::Post => self.handle_post(ctx, href, answer),
        }
    }

    fn handle_post(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) {
        let sent = self.in_flight.take();
        let (delivery, detail, retry_after_ms) = match answer {
            Answer::Ok(_) => (Delivery::Accepted, String::new(), None),
            Answer::Gone(status) => (classify(Some(status)), format!("HTTP {status}"), None),
            Answer::Failed(err) => {
                ctx.send_failed(&err);
                (
                    classify(err.status()),
                    err.to_string(),
                    err.retry_after().map(|d| d.as_millis() as u64),
                )
            }
        };
        match delivery {
            Delivery::Accepted => {
                ctx.send_ok();
                self.failures = 0;
                self.retry_at_ms = 0;
                self.sent += 1;
            }
            Delivery::Refused => {
                ctx.error_at(
                    href,
                    format!("LogEvent refused by {href}; dropped: {detail}"),
                );
                self.dropped += 1;
            }
            Delivery::RetryLater => {
                // Back at the front; the oldest goes if the queue filled meanwhile.
                if let Some(event) = sent {
                    self.queue.push_front(event);
                    if self.queue.len() > CAPACITY {
                        self.queue.pop_front();
                        self.dropped += 1;
                    }
                }
                self.failures += 1;
                let backoff = (SEND_RETRY_MS << (self.failures.min(8) - 1)).min(SEND_RETRY_MAX_MS);
                self.retry_at_ms = ctx.now.mono_ms + retry_after_ms.unwrap_or(0).max(backoff);
            }
        }
    }

    fn handle_list(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) {
        let mut paged = Paged::<LogEvent>::new(href);
        match answer {
            Answer::Ok(response) => match paged.add_page(&response) {
                Ok(_) => {
                    self.count = Some(paged.all);
                    ctx.errors.remove(href);
                }
                Err(err) => ctx.error_at(href, format!("LogEventList {href}: bad document: {err}")),
            },
            other => {
                let err = PollError::of(other);
                ctx.error_at(href, format!("LogEventList {href}: {}", err.message));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_gives_a_burst_then_one_a_minute() {
        let mut bucket = Bucket::full(1_000);
        for _ in 0..BURST {
            assert!(bucket.take(1_000));
        }
        assert!(!bucket.take(1_000));
        assert_eq!(bucket.next_token_ms(), 1_000 + REFILL_MS);
        assert!(!bucket.take(REFILL_MS));
        assert!(bucket.take(1_000 + REFILL_MS));
        assert!(!bucket.take(1_000 + REFILL_MS));
        // A long quiet spell refills no more than the burst.
        let later = 1_000 + 100 * REFILL_MS;
        let taken = (0..100).take_while(|_| bucket.take(later)).count();
        assert_eq!(taken, BURST as usize);
    }

    #[test]
    fn details_are_cut_to_string32() {
        assert_eq!(string32("short"), "short");
        let long = "ä".repeat(40);
        assert_eq!(string32(&long).chars().count(), 32);
        assert_eq!(codes::der_alarm_of_evt1(10), Some(1));
        assert_eq!(codes::der_alarm_of_evt1(0), None);
    }
}
