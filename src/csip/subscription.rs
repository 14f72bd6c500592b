//! Subscription / Notification function set, client side (IEEE 2030.5 clause 5.5;
//! CSIP-AUS classes S-L / S-G, procedures ALL-14..17, GEN-05..08, LOA-05..08).
//!
//! Only with a notification URI configured (`option notification_url`, the address
//! of csipd's own mutual-TLS listener, `runtime::notify`). Once this device's
//! EndDevice links a SubscriptionList and writes are allowed (PIN checked), one
//! Subscription is POSTed per resource the procedures name: the EndDeviceList, the
//! FunctionSetAssignmentsList, every DERProgramList, DERControlList and
//! DefaultDERControl the engine reads — i.e. every poll group of those kinds, so a
//! program found later is subscribed too. A refused POST is tried again (60 s
//! doubling, at most an hour); a resource no longer read has its Subscription
//! DELETEd. After a walk from the top (rediscovery) the old Subscriptions are DELETEd
//! and all are made again. Nothing is persisted: at the start (and when the EndDevice
//! links another SubscriptionList) the SubscriptionList is read first, and the
//! Subscriptions already there with csipd's notificationURI are taken over instead of
//! POSTed again (a second one for the same resource is DELETEd); a list that cannot be
//! read (404, 405, garbage) only means everything is POSTed.
//!
//! A Notification ([`SubscriptionSet::notified`]) makes its resource due for a poll at
//! once: the engine reads it again through the normal poll path, as if its pollRate
//! had come. csipd does not apply an inline resource directly: a list notification
//! carries at most `limit` items and the scheduler must see complete lists; reading it
//! again costs one GET and keeps one path for every change. A cancelled subscription
//! (status 1-4) is forgotten and POSTed again while the resource is still read.
//! Polling goes on unchanged: notifications only make changes arrive sooner.

use std::collections::BTreeMap;

use crate::http::Method;
use crate::sep2::{self, Notification, Subscription};

use super::context::{Answer, Ctx, PollError, Purpose, href_path};
use super::poller::PollKind;

/// First retry delay of a refused Subscription POST (doubling).
const RETRY_MS: u64 = 60_000;
/// Longest retry delay.
const RETRY_MAX_MS: u64 = 3_600_000;
/// `limit` asked for: list items per notification (the engine reads the list again
/// anyway; a small limit keeps notifications small).
pub const NOTIFICATION_LIMIT: u32 = 1;

/// Requests of this function set.
#[derive(Debug)]
pub enum Req {
    /// POST of the Subscription for `resource`.
    Create { resource: String },
    /// DELETE of the Subscription at its location.
    Delete,
    /// GET of the SubscriptionList (what a previous run left there).
    List,
}

/// The poll kinds that are subscribed (the resources the subscription procedures name).
pub fn subscribed_kind(kind: PollKind) -> bool {
    matches!(
        kind,
        PollKind::EndDeviceList
            | PollKind::FunctionSetAssignmentsList
            | PollKind::DerProgramList
            | PollKind::DerControlList
            | PollKind::DefaultDerControl
    )
}

/// One resource's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    /// POST sent, no answer yet (`failures`: refusals before this attempt).
    InFlight { failures: u32 },
    /// The server created it (its `Location`, when it sent one).
    Active { location: Option<String> },
    /// Refused: POST again at `retry_at_ms`.
    Refused { retry_at_ms: u64, failures: u32 },
}

/// What a Notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationOutcome {
    /// The resource is read again now.
    Polled { resource: String },
    /// The server cancelled the subscription (status 1-4); it is POSTed again while
    /// the resource is still read.
    Cancelled { resource: String, status: u8 },
    /// A notification for a resource csipd does not read (any more): acknowledged,
    /// nothing done.
    Unknown { resource: String },
}

/// Subscriptions of this device.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionSet {
    /// Our EndDevice's SubscriptionListLink.
    pub list_href: Option<String>,
    /// Per subscribed resource (path as polled).
    pub subs: BTreeMap<String, SubState>,
    /// `Ctx::rediscoveries` when the subscriptions were made: a walk from the top makes
    /// them all again.
    rediscoveries: u64,
    /// The SubscriptionList was read (or could not be): POSTs may go out.
    listed: bool,
    /// Its GET is in flight.
    listing: bool,
    /// Resources read at some point since the start: only their Subscriptions are
    /// DELETEd when they are no longer read (one taken over from a previous run is kept
    /// until the walk reaches its resource).
    seen: std::collections::BTreeSet<String>,
}

impl SubscriptionSet {
    /// Our EndDevice links its SubscriptionList at `href` (or no longer does).
    pub fn link(&mut self, href: Option<String>) {
        if href != self.list_href {
            self.subs.clear();
            self.listed = false;
        }
        self.list_href = href;
    }

    /// POSTs the Subscriptions that are missing (or due for a retry) and DELETEs those
    /// of resources no longer read.
    pub fn flush(&mut self, ctx: &mut Ctx) {
        let Some(uri) = ctx.config.notification_uri.clone() else {
            return;
        };
        let Some(list) = self.list_href.clone() else {
            return;
        };
        if !ctx.writable() {
            return;
        }
        if !self.listed {
            if !self.listing {
                self.listing = true;
                ctx.send(
                    Method::Get,
                    super::context::with_paging(&list, 0, 255),
                    None,
                    Purpose::Subscription(Req::List),
                );
            }
            return;
        }
        if ctx.rediscoveries != self.rediscoveries {
            // A walk from the top: the old Subscriptions are DELETEd (a server that
            // lost them answers 404, harmless) and all are made again.
            self.rediscoveries = ctx.rediscoveries;
            let old = std::mem::take(&mut self.subs);
            for (resource, state) in old {
                match state {
                    SubState::InFlight { .. } => {
                        self.subs.insert(resource, state);
                    }
                    SubState::Active {
                        location: Some(location),
                    } => ctx.send(
                        Method::Delete,
                        location,
                        None,
                        Purpose::Subscription(Req::Delete),
                    ),
                    _ => {}
                }
            }
        }
        let wanted: Vec<String> = ctx
            .poller
            .entries()
            .filter(|(_, e)| subscribed_kind(e.kind))
            .map(|(href, _)| href_path(href).to_string())
            .collect();
        self.seen.extend(wanted.iter().cloned());
        let gone: Vec<String> = self
            .subs
            .keys()
            .filter(|r| !wanted.contains(r) && self.seen.contains(*r))
            .cloned()
            .collect();
        for resource in gone {
            if let Some(SubState::Active {
                location: Some(location),
            }) = self.subs.remove(&resource)
            {
                ctx.send(
                    Method::Delete,
                    location,
                    None,
                    Purpose::Subscription(Req::Delete),
                );
            }
        }
        let now_ms = ctx.now.mono_ms;
        for resource in wanted {
            let due = match self.subs.get(&resource) {
                None => true,
                Some(SubState::Refused { retry_at_ms, .. }) => now_ms >= *retry_at_ms,
                Some(_) => false,
            };
            if !due {
                continue;
            }
            let body = subscription(&resource, &uri);
            match ctx.write(&body) {
                Ok(xml) => {
                    let failures = match self.subs.get(&resource) {
                        Some(SubState::Refused { failures, .. }) => *failures,
                        _ => 0,
                    };
                    self.subs
                        .insert(resource.clone(), SubState::InFlight { failures });
                    ctx.send(
                        Method::Post,
                        list.clone(),
                        Some(xml),
                        Purpose::Subscription(Req::Create { resource }),
                    );
                }
                Err(err) => ctx.error(format!("cannot write Subscription: {err}")),
            }
        }
    }

    /// The answer to a Subscription POST, DELETE or the SubscriptionList GET.
    pub fn handle(&mut self, ctx: &mut Ctx, req: Req, href: &str, answer: Answer) {
        if let Req::List = req {
            self.listing = false;
            self.listed = true;
            self.adopt(ctx, href, answer);
            return;
        }
        let Req::Create { resource } = req else {
            // A DELETE that fails leaves a subscription the server will cancel or
            // keep notifying; notifications for it are acknowledged and ignored.
            if let Answer::Ok(_) = answer {
                ctx.send_ok();
            }
            return;
        };
        let Some(SubState::InFlight { failures }) = self.subs.get(&resource).cloned() else {
            // Dropped meanwhile (resource gone, rediscovery): a later flush decides.
            return;
        };
        match answer {
            Answer::Ok(response) => {
                ctx.send_ok();
                let location = response.location().map(str::to_string);
                log::info!(
                    "csip: subscribed to {resource} ({})",
                    location.as_deref().unwrap_or("no Location")
                );
                ctx.errors.remove(href);
                self.subs.insert(resource, SubState::Active { location });
            }
            other => {
                if let Answer::Failed(err) = &other {
                    ctx.send_failed(err);
                }
                let err = PollError::of(other);
                let failures = failures + 1;
                let backoff = (RETRY_MS << (failures.min(8) - 1)).min(RETRY_MAX_MS);
                let retry_at_ms = ctx.now.mono_ms + err.retry_after_ms.unwrap_or(0).max(backoff);
                ctx.error_at(
                    href,
                    format!("POST Subscription {href} for {resource}: {}", err.message),
                );
                self.subs.insert(
                    resource,
                    SubState::Refused {
                        retry_at_ms,
                        failures,
                    },
                );
            }
        }
    }

    /// The SubscriptionList as a previous run left it: the Subscriptions to csipd's
    /// notificationURI are taken over (one per resource; a second is DELETEd).
    fn adopt(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) {
        let Some(uri) = ctx.config.notification_uri.clone() else {
            return;
        };
        let page = match answer {
            Answer::Ok(response) => sep2::read_list::<Subscription>(&response.body),
            other => {
                log::info!(
                    "csip: SubscriptionList {href} not read ({}); subscribing afresh",
                    PollError::of(other).message
                );
                return;
            }
        };
        let items = match page {
            Ok((list, _skipped)) => list.items,
            Err(e) => {
                log::info!("csip: SubscriptionList {href}: {e}; subscribing afresh");
                return;
            }
        };
        for sub in items {
            if sub.notification_uri != uri {
                continue;
            }
            let resource = href_path(&sub.subscribed_resource).to_string();
            let Some(location) = sub.href else { continue };
            if self.subs.contains_key(&resource) {
                ctx.send(
                    Method::Delete,
                    location,
                    None,
                    Purpose::Subscription(Req::Delete),
                );
                continue;
            }
            log::info!("csip: subscription to {resource} kept from before ({location})");
            self.subs.insert(
                resource,
                SubState::Active {
                    location: Some(location),
                },
            );
        }
    }

    /// A Notification arrived: the resource it names is polled now (or, cancelled, its
    /// subscription is made again at the next flush).
    pub fn notified(&mut self, ctx: &mut Ctx, notification: &Notification) -> NotificationOutcome {
        let resource = href_path(&notification.subscribed_resource).to_string();
        let tracked = ctx
            .poller
            .entries()
            .find(|(href, e)| subscribed_kind(e.kind) && href_path(href) == resource)
            .map(|(href, _)| href.to_string());
        if notification.status != 0 {
            log::info!(
                "csip: subscription to {resource} cancelled by the server (status {})",
                notification.status
            );
            self.subs.remove(&resource);
            return NotificationOutcome::Cancelled {
                resource,
                status: notification.status,
            };
        }
        match tracked {
            Some(href) => {
                log::debug!("csip: notification for {resource}: reading it now");
                ctx.poller.poll_soon(&href, ctx.now.mono_ms);
                NotificationOutcome::Polled { resource }
            }
            None => NotificationOutcome::Unknown { resource },
        }
    }
}

/// The Subscription csipd POSTs for `resource`: XML (encoding 0), level "+S1" (the
/// 2030.5 level for IEEE 2030.5-2018 resources), [`NOTIFICATION_LIMIT`] items,
/// notifications to `notification_uri`.
pub fn subscription(resource: &str, notification_uri: &str) -> Subscription {
    Subscription {
        href: None,
        subscribed_resource: resource.to_string(),
        condition: None,
        encoding: 0,
        level: "+S1".into(),
        limit: NOTIFICATION_LIMIT,
        notification_uri: notification_uri.to_string(),
    }
}
