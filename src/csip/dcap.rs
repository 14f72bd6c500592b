//! DeviceCapability function set: the root of the walk. Re-read at its own pollRate; a
//! changed answer (other links) walks the tree again from here. When the first answer
//! states no pollRate (servers that state it only once the client is registered), it
//! is read again as soon as this device is found, so its real rate is learnt at once
//! rather than after a default interval (CSIP-AUS ALL-06, ALL-21, GEN-02).

use crate::sep2::DeviceCapability;

use super::context::{Answer, Ctx, PollError, PollPart, read};
use super::poller::PollKind;

/// The links a DeviceCapability gave, for the other function sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DcapLinks {
    pub time: Option<String>,
    pub end_device_list: Option<String>,
    pub mirror_usage_point_list: Option<String>,
}

/// DeviceCapability state.
#[derive(Debug, Clone)]
pub struct DcapSet {
    pub href: String,
    pub dcap: Option<DeviceCapability>,
    links: Option<DcapLinks>,
    /// The dcap read so far stated no pollRate; read again once registered.
    reread_after_registration: bool,
}

impl DcapSet {
    pub fn new(href: &str) -> DcapSet {
        DcapSet {
            href: href.to_string(),
            dcap: None,
            links: None,
            reread_after_registration: false,
        }
    }

    /// Starts tracking the DeviceCapability (due at once).
    pub fn start(&self, ctx: &mut Ctx) {
        let now_ms = ctx.now.mono_ms;
        ctx.poller
            .track(&self.href, PollKind::DeviceCapability, None, now_ms);
    }

    pub fn request(&self, ctx: &mut Ctx, href: &str) {
        ctx.poll(href, PollKind::DeviceCapability, PollPart::Single);
    }

    /// Handles an answer. Returns the links when they are new or changed.
    pub fn handle(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) -> Option<DcapLinks> {
        let kind = PollKind::DeviceCapability;
        let dcap = match answer {
            Answer::Ok(response) => match read::<DeviceCapability>(&response) {
                Ok(dcap) => dcap,
                Err(err) => {
                    ctx.poll_failed(href, kind, PollError::parse(err));
                    return None;
                }
            },
            other => {
                ctx.poll_failed(href, kind, PollError::of(other));
                return None;
            }
        };
        ctx.poll_ok(href, kind, dcap.poll_rate_s);
        self.reread_after_registration = dcap.poll_rate_s.is_none();
        let links = DcapLinks {
            time: dcap.time_link.as_ref().map(|l| l.href.clone()),
            end_device_list: dcap.end_device_list_link.as_ref().map(|l| l.href.clone()),
            mirror_usage_point_list: dcap
                .mirror_usage_point_list_link
                .as_ref()
                .map(|l| l.href.clone()),
        };
        if links.end_device_list.is_none() {
            ctx.error_at(
                href,
                format!("{href}: DeviceCapability has no EndDeviceListLink"),
            );
        }
        self.dcap = Some(dcap);
        let changed = self.links.as_ref() != Some(&links);
        if changed && self.links.is_some() {
            ctx.rediscover("the DeviceCapability changed");
        }
        self.links = Some(links.clone());
        changed.then_some(links)
    }

    /// This device was found (or registered): if the dcap stated no pollRate yet, read
    /// it again now.
    pub fn registered(&mut self, ctx: &mut Ctx) {
        if std::mem::take(&mut self.reread_after_registration) {
            ctx.poller.poll_soon(&self.href, ctx.now.mono_ms);
        }
    }
}
