//! Response function set: the scheduler decides which responses fall due (each once,
//! recorded in its ledger); this outbox delivers them to each control's `replyTo`, in
//! order, one at a time, retrying until the server accepts, and never sends one twice.
//! Each attempt's end is an [`Event::ResponseDelivery`] so the runtime's store can
//! settle its ledger entry (at least once, never lost).

use std::collections::VecDeque;

use crate::http::Method;
use crate::schedule::{ResponseDue, ResponseKey};
use crate::sep2::DerControlResponse;

use super::Event;
use super::context::{Answer, Ctx, Purpose};

/// Delay before a response is tried again after a failure (doubling, capped).
const SEND_RETRY_MS: u64 = 5_000;
const SEND_RETRY_MAX_MS: u64 = 60_000;

/// The request of this function set: the POST of the front response.
#[derive(Debug)]
pub struct Req {
    pub key: ResponseKey,
}

/// Response state: the outbox and its sending.
#[derive(Debug, Clone, Default)]
pub struct ResponseSet {
    pub outbox: ResponseOutbox,
    in_flight: bool,
    retry_at_ms: u64,
    failures: u32,
}

impl ResponseSet {
    /// Queues a response that fell due.
    pub fn push(&mut self, due: ResponseDue) {
        self.outbox.push(due);
    }

    /// POSTs the front response if writes are allowed and nothing is in flight.
    pub fn flush(&mut self, ctx: &mut Ctx) {
        if !ctx.writable() || self.in_flight || ctx.now.mono_ms < self.retry_at_ms {
            return;
        }
        while let Some(due) = self.outbox.front().cloned() {
            let Some(reply_to) = due.reply_to.clone() else {
                self.outbox.delivered(Delivery::Refused);
                continue;
            };
            let body = response_body(&due, &ctx.config.lfdi);
            match ctx.write(&body) {
                Ok(xml) => {
                    self.in_flight = true;
                    ctx.send(
                        Method::Post,
                        reply_to,
                        Some(xml),
                        Purpose::Response(Req { key: due.key }),
                    );
                    return;
                }
                Err(err) => {
                    let detail = format!("cannot write Response: {err}");
                    ctx.error(detail.clone());
                    ctx.events.push_back(Event::ResponseDelivery {
                        key: due.key.clone(),
                        delivery: Delivery::Refused,
                        at_s: ctx.now.utc_s(),
                        detail,
                    });
                    self.outbox.delivered(Delivery::Refused);
                }
            }
        }
    }

    /// The answer to a response POST.
    pub fn handle(&mut self, ctx: &mut Ctx, req: Req, href: &str, answer: Answer) {
        self.in_flight = false;
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
        ctx.events.push_back(Event::ResponseDelivery {
            key: req.key.clone(),
            delivery,
            at_s: ctx.now.utc_s(),
            detail: detail.clone(),
        });
        match delivery {
            Delivery::Accepted => {
                ctx.send_ok();
                self.failures = 0;
                log::info!(
                    "csip: response {} to {} sent to {href}",
                    req.key.status.code(),
                    req.key.event_mrid
                );
            }
            Delivery::Refused => ctx.error(format!(
                "response {} to {} refused by {href}; not retried: {detail}",
                req.key.status.code(),
                req.key.event_mrid
            )),
            Delivery::RetryLater => {
                self.failures += 1;
                let backoff = (SEND_RETRY_MS << (self.failures.min(8) - 1)).min(SEND_RETRY_MAX_MS);
                self.retry_at_ms = ctx.now.mono_ms + retry_after_ms.unwrap_or(0).max(backoff);
            }
        }
        if self
            .outbox
            .front()
            .is_some_and(|front| front.key == req.key)
        {
            self.outbox.delivered(delivery);
        }
    }
}

/// Most responses kept waiting (a long outage with many events); the oldest go first.
pub const CAPACITY: usize = 1024;
/// Most keys of settled responses remembered by [`ResponseOutbox`]. The scheduler's
/// ledger (`schedule::EventRecord::responses_sent`, persisted by the store) is what
/// keeps a response from being issued twice; this only catches a second `push` of a key
/// just delivered (a restored pending response the scheduler issues again), which
/// happens within a few responses of each other, so 256 recent keys (about 20 KiB) do.
pub const DONE_CAPACITY: usize = 256;

/// Responses waiting for the server.
#[derive(Debug, Clone, Default)]
pub struct ResponseOutbox {
    /// At most [`CAPACITY`] responses, the oldest dropped first (counted in `dropped`).
    queue: VecDeque<ResponseDue>,
    /// Keys already delivered (or given up on), so a second `push` of the same key —
    /// e.g. from a restored ledger — is ignored: at most [`DONE_CAPACITY`], the oldest
    /// forgotten first.
    done: VecDeque<ResponseKey>,
    pub dropped: u64,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// 2xx: done.
    Accepted,
    /// The server refused it for good (4xx other than 429): give up, say so.
    Refused,
    /// Transport error, 429, 5xx: try again later.
    RetryLater,
}

impl ResponseOutbox {
    pub fn new() -> ResponseOutbox {
        ResponseOutbox::default()
    }

    /// Queues a response that fell due. Responses without a `replyTo` cannot be sent
    /// (servers without the Response function set, e.g. GridAPPS-D): counted, dropped.
    pub fn push(&mut self, due: ResponseDue) {
        if due.reply_to.is_none() || self.done.contains(&due.key) {
            return;
        }
        if self.queue.iter().any(|queued| queued.key == due.key) {
            return;
        }
        if self.queue.len() >= CAPACITY {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(due);
    }

    /// The responses waiting, oldest first (for the store to persist, so a response
    /// the ledger already marked as issued is not lost in a power cut).
    pub fn pending(&self) -> Vec<ResponseDue> {
        self.queue.iter().cloned().collect()
    }

    pub fn front(&self) -> Option<&ResponseDue> {
        self.queue.front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records the outcome of sending the front response.
    pub fn delivered(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Accepted | Delivery::Refused => {
                if let Some(due) = self.queue.pop_front() {
                    if self.done.len() >= DONE_CAPACITY {
                        self.done.pop_front();
                    }
                    self.done.push_back(due.key);
                }
            }
            Delivery::RetryLater => {}
        }
    }
}

/// The DERControlResponse body for `due`.
pub fn response_body(due: &ResponseDue, lfdi: &str) -> DerControlResponse {
    DerControlResponse {
        href: None,
        created_date_time: Some(due.at_s),
        end_device_lfdi: lfdi.to_ascii_uppercase(),
        status: Some(due.key.status.code()),
        subject: due.key.event_mrid.clone(),
    }
}

/// Classifies an HTTP status of a response POST.
pub fn classify(status: Option<u16>) -> Delivery {
    match status {
        None => Delivery::RetryLater,
        Some(429) => Delivery::RetryLater,
        Some(code) if (200..300).contains(&code) => Delivery::Accepted,
        Some(code) if (400..500).contains(&code) => Delivery::Refused,
        Some(_) => Delivery::RetryLater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ResponseStatus;

    fn due(mrid: &str, status: ResponseStatus, reply_to: Option<&str>) -> ResponseDue {
        ResponseDue {
            key: ResponseKey {
                event_mrid: mrid.into(),
                status,
            },
            program_mrid: "P".into(),
            reply_to: reply_to.map(str::to_string),
            at_s: 100,
        }
    }

    #[test]
    fn delivered_once_in_order_and_retried_until_accepted() {
        let mut outbox = ResponseOutbox::new();
        outbox.push(due("A", ResponseStatus::Received, Some("/rsp")));
        outbox.push(due("A", ResponseStatus::Started, Some("/rsp")));
        outbox.push(due("A", ResponseStatus::Received, Some("/rsp"))); // duplicate
        assert_eq!(outbox.len(), 2);
        outbox.delivered(Delivery::RetryLater);
        assert_eq!(
            outbox.front().map(|d| d.key.status),
            Some(ResponseStatus::Received)
        );
        outbox.delivered(Delivery::Accepted);
        assert_eq!(
            outbox.front().map(|d| d.key.status),
            Some(ResponseStatus::Started)
        );
        outbox.delivered(Delivery::Accepted);
        assert!(outbox.is_empty());
        // delivered keys are not queued again
        outbox.push(due("A", ResponseStatus::Received, Some("/rsp")));
        assert!(outbox.is_empty());
        // no replyTo: nothing to send
        outbox.push(due("B", ResponseStatus::Received, None));
        assert!(outbox.is_empty());
    }

    #[test]
    fn outbox_memory_is_bounded() {
        let mut outbox = ResponseOutbox::new();
        // An outage: more responses fall due than the queue keeps.
        for i in 0..CAPACITY + 10 {
            outbox.push(due(
                &format!("Q{i}"),
                ResponseStatus::Received,
                Some("/rsp"),
            ));
        }
        assert_eq!(outbox.len(), CAPACITY);
        assert_eq!(outbox.dropped, 10);
        assert_eq!(
            outbox.front().map(|d| d.key.event_mrid.as_str()),
            Some("Q10")
        );
        // Years of delivered responses: the memory of settled keys stops at its bound.
        while !outbox.is_empty() {
            outbox.delivered(Delivery::Accepted);
        }
        for i in 0..3 * DONE_CAPACITY {
            outbox.push(due(
                &format!("D{i}"),
                ResponseStatus::Completed,
                Some("/rsp"),
            ));
            outbox.delivered(Delivery::Accepted);
            assert!(outbox.done.len() <= DONE_CAPACITY);
        }
        assert_eq!(outbox.done.len(), DONE_CAPACITY);
        // The most recent keys are still refused a second time.
        let last = format!("D{}", 3 * DONE_CAPACITY - 1);
        outbox.push(due(&last, ResponseStatus::Completed, Some("/rsp")));
        assert!(outbox.is_empty());
    }

    #[test]
    fn body_and_classification() {
        let body = response_body(&due("C1", ResponseStatus::Received, Some("/rsp")), "abc");
        assert_eq!(body.subject, "C1");
        assert_eq!(body.status, Some(1));
        assert_eq!(body.end_device_lfdi, "ABC");
        assert_eq!(classify(Some(201)), Delivery::Accepted);
        assert_eq!(classify(Some(400)), Delivery::Refused);
        assert_eq!(classify(Some(429)), Delivery::RetryLater);
        assert_eq!(classify(Some(503)), Delivery::RetryLater);
        assert_eq!(classify(None), Delivery::RetryLater);
    }
}
