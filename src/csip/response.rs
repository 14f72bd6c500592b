//! Response function set: the scheduler decides which responses fall due (each once,
//! recorded in its ledger); this outbox delivers them to each control's `replyTo`, in
//! order, retrying until the server accepts, and never sends one twice.

use std::collections::VecDeque;

use crate::schedule::{ResponseDue, ResponseKey};
use crate::sep2::DerControlResponse;

/// Most responses kept waiting (a long outage with many events); the oldest go first.
const CAPACITY: usize = 1024;

/// Responses waiting for the server.
#[derive(Debug, Clone, Default)]
pub struct ResponseOutbox {
    queue: VecDeque<ResponseDue>,
    /// Keys already delivered (or given up on), so a second `push` of the same key —
    /// e.g. from a restored ledger — is ignored.
    done: Vec<ResponseKey>,
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
                    self.done.push(due.key);
                    // Keep the memory of delivered keys bounded.
                    if self.done.len() > 4 * CAPACITY {
                        self.done.drain(..CAPACITY);
                    }
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
