//! LogEvent function set, minimal: the EndDevice's LogEventList is read once, so
//! `csipd discover` can say how many events the server holds for this device. csipd
//! posts no LogEvents yet.

use crate::http::Method;
use crate::sep2::LogEvent;

use super::context::{Answer, Ctx, Paged, PollError, Purpose};

/// The request of this function set: the (first page of the) LogEventList.
#[derive(Debug)]
pub struct Req {
    pub href: String,
}

/// LogEvent state.
#[derive(Debug, Clone, Default)]
pub struct LogEventSet {
    pub list_href: Option<String>,
    /// `all` of the LogEventList when read.
    pub count: Option<u32>,
    requested: bool,
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
                Purpose::LogEvent(Req { href: href.clone() }),
            );
        }
    }

    pub fn handle(&mut self, ctx: &mut Ctx, req: Req, answer: Answer) {
        let mut paged = Paged::<LogEvent>::new(&req.href);
        match answer {
            Answer::Ok(response) => match paged.add_page(&response) {
                Ok(_) => {
                    self.count = Some(paged.all);
                    ctx.errors.remove(&req.href);
                }
                Err(err) => ctx.error_at(
                    &req.href,
                    format!("LogEventList {}: bad document: {err}", req.href),
                ),
            },
            other => {
                let err = PollError::of(other);
                ctx.error_at(
                    &req.href,
                    format!("LogEventList {}: {}", req.href, err.message),
                );
            }
        }
    }
}
