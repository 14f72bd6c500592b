//! EndDevice function set: finding this device in the EndDeviceList, in-band
//! registration, the Registration PIN check and the csipaus ConnectionPoint.
//!
//! Nothing is PUT or POSTed (ConnectionPoint, reports, readings, responses) until this
//! device is found and, where a PIN is configured and the server links a Registration,
//! the PIN is read and matches. On a mismatch the client stops all traffic but a slow
//! re-check of the Registration ([`PIN_RECHECK_S`]) and says so in the status
//! (CSIP-AUS ALL-03-REJ).

use crate::http::Method;
use crate::sep2::{ConnectionPoint, EndDevice, Registration};

use super::ConnectionState;
use super::context::{Answer, Ctx, Paged, PollError, PollPart, Purpose, next_page, read};
use super::poller::PollKind;

/// How often the Registration is read again while its PIN does not match.
pub const PIN_RECHECK_S: u32 = 300;

/// Requests of this function set other than polls.
#[derive(Debug)]
pub enum Req {
    /// POST of our EndDevice to the EndDeviceList (in-band registration).
    Register { list_href: String },
    /// GET of our EndDevice at the Location the registration returned.
    Own { href: String },
    /// PUT of the ConnectionPoint.
    ConnectionPoint { href: String },
}

/// The links of our EndDevice, for the other function sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdevLinks {
    pub fsa_list: Option<String>,
    pub der_list: Option<String>,
    pub log_event_list: Option<String>,
    pub subscription_list: Option<String>,
}

/// The state of the Registration check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not read yet (and it matters: a PIN is configured and the server links one).
    Unread,
    /// Read and matching, or nothing to check.
    Fine,
    Mismatch,
}

/// EndDevice state.
#[derive(Debug, Clone)]
pub struct EdevSet {
    pub list_href: Option<String>,
    pub own: Option<EndDevice>,
    pub own_href: Option<String>,
    pub registration: Option<Registration>,
    pub registration_state: RegistrationState,
    posted_registration: bool,
    connection_point_sent: bool,
    connection_point_in_flight: bool,
    connection_point_retry_ms: u64,
}

impl Default for EdevSet {
    fn default() -> Self {
        EdevSet {
            list_href: None,
            own: None,
            own_href: None,
            registration: None,
            registration_state: RegistrationState::Unread,
            posted_registration: false,
            connection_point_sent: false,
            connection_point_in_flight: false,
            connection_point_retry_ms: 0,
        }
    }
}

impl EdevSet {
    /// The DeviceCapability links the EndDeviceList at `href` (or no longer does).
    pub fn link(&mut self, ctx: &mut Ctx, href: Option<String>) {
        let keep: Vec<String> = href.iter().cloned().collect();
        ctx.poller.retain_kind(PollKind::EndDeviceList, &keep);
        if let Some(href) = &href {
            ctx.poller
                .track(href, PollKind::EndDeviceList, None, ctx.now.mono_ms);
        }
        self.list_href = href;
    }

    pub fn request(&self, ctx: &mut Ctx, href: &str, kind: PollKind) {
        match kind {
            PollKind::EndDeviceList => ctx.poll(href, kind, PollPart::EndDevices(Paged::new(href))),
            _ => ctx.poll(href, kind, PollPart::Single),
        }
    }

    /// The postRate our EndDevice states for readings, if any.
    pub fn post_rate_s(&self) -> Option<u32> {
        self.own.as_ref().and_then(|own| own.post_rate_s)
    }

    /// Whether writes may go out (see the module doc); sets `ctx.may_write`.
    fn update_may_write(&self, ctx: &mut Ctx) {
        ctx.registration_ok = self.registration_state == RegistrationState::Fine;
        ctx.may_write = self.own.is_some() && ctx.registration_ok;
    }

    /// A page of the EndDeviceList. Returns our EndDevice's links when it was found (or
    /// registered) now.
    pub fn handle_list(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<EndDevice>,
        answer: Answer,
    ) -> Option<EdevLinks> {
        let kind = PollKind::EndDeviceList;
        let paged = next_page(ctx, href, kind, paged, answer, PollPart::EndDevices)?;
        ctx.poll_ok(href, kind, paged.poll_rate_s);
        let own = find_own(&paged.items, &ctx.config.lfdi, ctx.config.sfdi).cloned();
        let register =
            ctx.config.in_band_registration && !self.posted_registration && !ctx.read_only;
        match own {
            Some(own) if !(register && own.registration_link.is_none()) => {
                let own_href = own.href.clone();
                Some(self.adopt(ctx, own, own_href))
            }
            _ if register => {
                let body = registration_request(
                    &ctx.config.lfdi,
                    ctx.config.sfdi,
                    ctx.config.nameplate.device_category(),
                    ctx.server_now_s(),
                );
                match ctx.write(&body) {
                    Ok(xml) => {
                        self.posted_registration = true;
                        ctx.send(
                            Method::Post,
                            href.to_string(),
                            Some(xml),
                            Purpose::Edev(Req::Register {
                                list_href: href.to_string(),
                            }),
                        );
                    }
                    Err(err) => ctx.error(format!("cannot write EndDevice: {err}")),
                }
                None
            }
            Some(own) => {
                let own_href = own.href.clone();
                Some(self.adopt(ctx, own, own_href))
            }
            None => {
                ctx.state = ConnectionState::NotRegistered;
                ctx.error_at(
                    href,
                    format!(
                        "{href}: no EndDevice with LFDI {} (SFDI {}); register it out of band or enable in-band registration",
                        ctx.config.lfdi, ctx.config.sfdi
                    ),
                );
                self.update_may_write(ctx);
                None
            }
        }
    }

    fn adopt(&mut self, ctx: &mut Ctx, own: EndDevice, own_href: Option<String>) -> EdevLinks {
        let now_ms = ctx.now.mono_ms;
        let rg: Vec<String> = own
            .registration_link
            .iter()
            .map(|l| l.href.clone())
            .collect();
        ctx.poller.retain_kind(PollKind::Registration, &rg);
        if let Some(link) = rg.first() {
            ctx.poller.track(link, PollKind::Registration, None, now_ms);
        }
        if rg.is_empty() || ctx.config.pin.is_none() {
            self.registration_state = RegistrationState::Fine;
        }
        if matches!(
            ctx.state,
            ConnectionState::NotRegistered | ConnectionState::Discovering
        ) {
            ctx.state = ConnectionState::Connected;
        }
        let links = EdevLinks {
            fsa_list: own
                .function_set_assignments_list_link
                .as_ref()
                .map(|l| l.href.clone()),
            der_list: own.der_list_link.as_ref().map(|l| l.href.clone()),
            log_event_list: own.log_event_list_link.as_ref().map(|l| l.href.clone()),
            subscription_list: own.subscription_list_link.as_ref().map(|l| l.href.clone()),
        };
        self.own_href = own_href.or_else(|| own.href.clone());
        self.own = Some(own);
        self.update_may_write(ctx);
        links
    }

    /// Answers to this set's own requests. Returns links when our EndDevice was read.
    pub fn handle(&mut self, ctx: &mut Ctx, req: Req, answer: Answer) -> Option<EdevLinks> {
        match req {
            Req::Register { list_href } => match answer {
                Answer::Ok(response) => {
                    ctx.send_ok();
                    match response.location() {
                        Some(location) => {
                            log::info!("csip: registered in band at {location}");
                            let href = location.to_string();
                            ctx.send(
                                Method::Get,
                                href.clone(),
                                None,
                                Purpose::Edev(Req::Own { href }),
                            );
                        }
                        None => {
                            // Read the list again: our EndDevice is in it now.
                            ctx.error_at(
                                &list_href,
                                format!("POST {list_href}: the server created something but sent no Location"),
                            );
                            ctx.poller.poll_soon(&list_href, ctx.now.mono_ms);
                        }
                    }
                    None
                }
                other => {
                    let err = PollError::of(other);
                    ctx.error_at(
                        &list_href,
                        format!("POST {list_href} (in-band registration): {}", err.message),
                    );
                    // Try again with the next read of the list.
                    self.posted_registration = false;
                    None
                }
            },
            Req::Own { href } => match answer {
                Answer::Ok(response) => match read::<EndDevice>(&response) {
                    Ok(own) => Some(self.adopt(ctx, own, Some(href))),
                    Err(err) => {
                        ctx.error_at(&href, format!("EndDevice {href}: bad document: {err}"));
                        None
                    }
                },
                other => {
                    let err = PollError::of(other);
                    ctx.error_at(&href, format!("EndDevice {href}: {}", err.message));
                    None
                }
            },
            Req::ConnectionPoint { href } => {
                self.connection_point_in_flight = false;
                match answer {
                    Answer::Ok(_) => {
                        ctx.send_ok();
                        log::info!("csip: ConnectionPoint sent to {href}");
                        self.connection_point_sent = true;
                        ctx.errors.remove(&href);
                    }
                    other => {
                        if let Answer::Failed(err) = &other {
                            ctx.send_failed(err);
                        }
                        let err = PollError::of(other);
                        ctx.error_at(
                            &href,
                            format!("PUT ConnectionPoint {href}: {}", err.message),
                        );
                        self.connection_point_retry_ms = ctx.now.mono_ms + 60_000;
                    }
                }
                None
            }
        }
    }

    /// An answer to a Registration poll.
    pub fn handle_registration(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) {
        let kind = PollKind::Registration;
        let registration = match answer {
            Answer::Ok(response) => match read::<Registration>(&response) {
                Ok(r) => r,
                Err(err) => {
                    ctx.poll_failed(href, kind, PollError::parse(err));
                    return;
                }
            },
            other => {
                ctx.poll_failed(href, kind, PollError::of(other));
                return;
            }
        };
        let mut rate = registration.poll_rate_s;
        match check_pin(ctx.config.pin, Some(&registration)) {
            PinCheck::Mismatch { server, configured } => {
                let message = format!(
                    "{href}: the server's registration PIN {server} is not the configured PIN {configured}; not acting on this server (only the Registration is read again, every {PIN_RECHECK_S} s)"
                );
                if ctx.state != ConnectionState::PinMismatch {
                    ctx.error(message.clone());
                }
                ctx.state = ConnectionState::PinMismatch;
                self.registration_state = RegistrationState::Mismatch;
                rate = Some(rate.unwrap_or(PIN_RECHECK_S).max(PIN_RECHECK_S));
                ctx.poll_ok(href, kind, rate);
                ctx.set_error(href, message);
                ctx.state = ConnectionState::PinMismatch;
            }
            PinCheck::Matches | PinCheck::NotChecked => {
                if ctx.state == ConnectionState::PinMismatch {
                    ctx.state = ConnectionState::Connected;
                    ctx.last_error = None;
                    // Everything paused while the PIN did not match is read again.
                    ctx.poller.all_soon(ctx.now.mono_ms);
                }
                self.registration_state = RegistrationState::Fine;
                ctx.poll_ok(href, kind, rate);
            }
        }
        self.registration = Some(registration);
        self.update_may_write(ctx);
    }

    /// PUTs the ConnectionPoint once writes are allowed (csipaus servers, NMI set).
    pub fn flush(&mut self, ctx: &mut Ctx) {
        if !ctx.writable()
            || !ctx.config.csipaus
            || ctx.config.schema_2018
            || self.connection_point_sent
            || self.connection_point_in_flight
            || ctx.now.mono_ms < self.connection_point_retry_ms
        {
            return;
        }
        let (Some(link), Some(nmi)) = (
            self.own
                .as_ref()
                .and_then(|own| own.connection_point_link.clone()),
            ctx.config.nmi.clone(),
        ) else {
            return;
        };
        match ctx.write(&connection_point(&nmi)) {
            Ok(xml) => {
                self.connection_point_in_flight = true;
                ctx.send(
                    Method::Put,
                    link.href.clone(),
                    Some(xml),
                    Purpose::Edev(Req::ConnectionPoint { href: link.href }),
                );
            }
            Err(err) => {
                ctx.error(format!("cannot write ConnectionPoint: {err}"));
                self.connection_point_sent = true;
            }
        }
    }
}

/// This device in a page of EndDevices: by LFDI, else by SFDI (servers that list the
/// LFDI in another case or not at all still carry the SFDI).
pub fn find_own<'a>(devices: &'a [EndDevice], lfdi: &str, sfdi: u64) -> Option<&'a EndDevice> {
    devices
        .iter()
        .find(|device| device.is_lfdi(lfdi))
        .or_else(|| {
            devices
                .iter()
                .find(|device| device.lfdi.is_none() && device.sfdi == sfdi)
        })
}

/// The EndDevice csipd POSTs for in-band registration, with its DeviceCategoryType
/// bitmap (`device_category`, from [`super::Nameplate::device_category`]).
pub fn registration_request(lfdi: &str, sfdi: u64, device_category: u32, now_s: i64) -> EndDevice {
    EndDevice {
        device_category: Some(device_category),
        ..EndDevice::for_registration(lfdi, sfdi, now_s)
    }
}

/// Result of comparing the server's Registration with the configured PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// No PIN configured, or the server offers no Registration: nothing to check.
    NotChecked,
    Matches,
    /// The server's PIN differs: do not act on this server.
    Mismatch {
        server: u32,
        configured: u32,
    },
}

pub fn check_pin(configured: Option<u32>, registration: Option<&Registration>) -> PinCheck {
    match (configured, registration) {
        (Some(configured), Some(registration)) if registration.pin == configured => {
            PinCheck::Matches
        }
        (Some(configured), Some(registration)) => PinCheck::Mismatch {
            server: registration.pin,
            configured,
        },
        _ => PinCheck::NotChecked,
    }
}

/// The ConnectionPoint csipd PUTs when the server links one and an NMI is configured.
pub fn connection_point(nmi: &str) -> ConnectionPoint {
    ConnectionPoint {
        href: None,
        connection_point_id: nmi.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(lfdi: Option<&str>, sfdi: u64) -> EndDevice {
        EndDevice {
            lfdi: lfdi.map(str::to_string),
            sfdi,
            ..EndDevice::default()
        }
    }

    #[test]
    fn finds_own_device_by_lfdi_then_sfdi() {
        let lfdi = "3E4F45AB31EDFE5B67E343E5E4562E3100000000";
        let list = vec![
            device(Some("00"), 1),
            device(Some(&lfdi.to_lowercase()), 16726121139),
        ];
        assert_eq!(find_own(&list, lfdi, 0).map(|d| d.sfdi), Some(16726121139));
        let list = vec![device(Some("00"), 1), device(None, 16726121139)];
        assert_eq!(
            find_own(&list, lfdi, 16726121139).map(|d| d.sfdi),
            Some(16726121139)
        );
        assert!(find_own(&list, lfdi, 5).is_none());
    }

    #[test]
    fn pin_check() {
        let registration = Registration {
            pin: 111115,
            ..Registration::default()
        };
        assert_eq!(check_pin(None, Some(&registration)), PinCheck::NotChecked);
        assert_eq!(check_pin(Some(111115), None), PinCheck::NotChecked);
        assert_eq!(
            check_pin(Some(111115), Some(&registration)),
            PinCheck::Matches
        );
        assert_eq!(
            check_pin(Some(123455), Some(&registration)),
            PinCheck::Mismatch {
                server: 111115,
                configured: 123455
            }
        );
    }

    #[test]
    fn registration_request_uppercases_lfdi() {
        let edev = registration_request("abcdef", 42, 1 << 21, 1000);
        assert_eq!(edev.device_category, Some(1 << 21));
        assert_eq!(edev.lfdi.as_deref(), Some("ABCDEF"));
        assert_eq!((edev.sfdi, edev.changed_time), (42, 1000));
    }
}
