//! The feed-in price source for the owner's "no export at a negative price" rule.
//!
//! The API shape is a retailer's current-price endpoint like Amber Electric's:
//! `GET {base_url}/sites/{site_id}/prices/current` with `Authorization: Bearer {token}`
//! answers a JSON array of intervals; the one with `"channelType": "feedIn"` carries
//! `perKwh` in c/kWh. Amber states every price as a cost to the customer, so a feed-in
//! `perKwh` of −8 means the owner *earns* 8 c/kWh for export, and a positive feed-in
//! `perKwh` means the owner *pays* to export. We keep the owner's view: `earn_c_per_kwh =
//! −perKwh`, and a "negative feed-in price" is `earn_c_per_kwh < 0` (exporting costs
//! money). Parsing is pure; `fetch_feed_in_price` is the thin IO edge; `PriceTracker`
//! decides how long a last known price stays usable.
//!
//! Price limiting is the owner's choice, not a safety function: when the price is unknown
//! for longer than `max_age_s` the rule stops limiting (the utility limits still hold).
//!
//! The same rule can run on the utility's price instead (`option utility_price_export
//! '1'`): the 2030.5 Pricing function set's current export price
//! (`csip::pricing::export_price_now`, currency units per kWh, positive = exporting
//! costs money) becomes a [`FeedInPrice`] through [`PriceTracker::record_utility`] and
//! stays usable until its TimeTariffInterval ends. One tracker, one rule, two sources.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// The current feed-in price from the owner's point of view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedInPrice {
    /// What the owner earns per kWh exported, in cents (negative = the owner pays).
    pub earn_c_per_kwh: f64,
    /// End of the price interval (UTC seconds), when the source gave one.
    pub interval_end_s: Option<i64>,
}

/// Why no price was obtained; names the source and what kind of failure it was, so a
/// network failure is never reported as a bad answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceError {
    /// The URL (or other source) asked.
    pub source: String,
    pub kind: PriceErrorKind,
    pub message: String,
}

/// What went wrong getting a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceErrorKind {
    /// The request failed: no connection, timeout, TLS, or an HTTP error status.
    Request,
    /// The answer's body could not be read (cut off, too large, not text).
    Body,
    /// The answer was read but is not a current-prices document csipd understands.
    Format,
}

impl fmt::Display for PriceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            PriceErrorKind::Request => "request failed",
            PriceErrorKind::Body => "reading the answer failed",
            PriceErrorKind::Format => "unexpected answer",
        };
        write!(
            f,
            "feed-in price from {}: {what}: {}",
            self.source, self.message
        )
    }
}

impl std::error::Error for PriceError {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Interval {
    channel_type: Option<String>,
    per_kwh: Option<f64>,
    end_time: Option<String>,
}

/// Parses a current-prices body; `source` names where it came from (for errors).
pub fn parse_current_prices(body: &str, source: &str) -> Result<FeedInPrice, PriceError> {
    let err = |message: String| PriceError {
        source: source.to_string(),
        kind: PriceErrorKind::Format,
        message,
    };
    let intervals: Vec<Interval> = serde_json::from_str(body)
        .map_err(|e| err(format!("expected a JSON array of price intervals: {e}")))?;
    let feed_in = intervals
        .iter()
        .find(|i| i.channel_type.as_deref() == Some("feedIn"))
        .ok_or_else(|| err("no interval with channelType \"feedIn\"".into()))?;
    let per_kwh = feed_in
        .per_kwh
        .filter(|p| p.is_finite())
        .ok_or_else(|| err("the feedIn interval has no numeric perKwh".into()))?;
    let interval_end_s = match &feed_in.end_time {
        Some(t) => Some(parse_rfc3339_s(t).ok_or_else(|| err(format!("bad endTime '{t}'")))?),
        None => None,
    };
    Ok(FeedInPrice {
        earn_c_per_kwh: -per_kwh,
        interval_end_s,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → UTC seconds.
pub fn parse_rfc3339_s(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        rest = &frac[n..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let v = oh * 3600 + om * 60;
            if rest.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    let days = super::tz::days_from_civil(y as i32, mo as u8, d as u8);
    Some(days * 86400 + h * 3600 + mi * 60 + s - offset_s)
}

/// Where the price comes from (UCI `config price`).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceSourceConfig {
    /// e.g. `https://api.amber.com.au/v1`
    pub base_url: String,
    pub site_id: String,
    pub token: String,
    pub timeout_s: u64,
}

impl PriceSourceConfig {
    /// Where to fetch the price from, from UCI `config price`: `None` when disabled or
    /// incomplete (config validation requires the site id and token when enabled), and
    /// when the price is the utility's (`utility_price_export`: the engine hands it
    /// over, nothing is fetched).
    pub fn from_config(price: &crate::config::PriceConfig) -> Option<PriceSourceConfig> {
        if !price.enabled || price.utility_price_export {
            return None;
        }
        Some(PriceSourceConfig {
            base_url: price.url.clone(),
            site_id: price.site_id.clone()?,
            token: price.token.clone()?,
            timeout_s: 20,
        })
    }

    pub fn url(&self) -> String {
        format!(
            "{}/sites/{}/prices/current",
            self.base_url.trim_end_matches('/'),
            self.site_id
        )
    }
}

/// The IO edge: one blocking GET (run it off the event loop, e.g. with `smol::unblock`)
/// with csipd's own HTTP client (`crate::http`). HTTPS trusts the system's root
/// certificates; the whole exchange is bounded by `timeout_s`.
pub fn fetch_feed_in_price(cfg: &PriceSourceConfig) -> Result<FeedInPrice, PriceError> {
    let url = cfg.url();
    let err = |kind: PriceErrorKind, message: String| PriceError {
        source: url.clone(),
        kind,
        message,
    };
    let (origin, path) =
        crate::http::split_url(&url).map_err(|e| err(PriceErrorKind::Request, e.to_string()))?;
    let timeout = Duration::from_secs(cfg.timeout_s.max(1));
    let mut config = crate::http::ClientConfig::for_plain_get(&origin, "application/json", timeout);
    config.extra_headers = vec![("Authorization".into(), format!("Bearer {}", cfg.token))];
    let mut client = crate::http::Client::new(config)
        .map_err(|e| err(PriceErrorKind::Request, e.to_string()))?;
    // A body cut short or over the client's size limit comes back as a request error.
    let response = smol::block_on(client.get(&path))
        .map_err(|e| err(PriceErrorKind::Request, e.to_string()))?;
    let body = String::from_utf8(response.body).map_err(|_| {
        err(
            PriceErrorKind::Body,
            "the body is not UTF-8 text".to_string(),
        )
    })?;
    parse_current_prices(&body, &url)
}

/// Keeps the last good price for at most `max_age_s` after it was fetched, or, when
/// the price is the utility's, the utility's current price until its interval ends.
#[derive(Debug, Clone)]
pub struct PriceTracker {
    pub max_age_s: i64,
    /// The price is the utility's (2030.5 Pricing), not the price API's.
    pub from_utility: bool,
    last: Option<(FeedInPrice, i64)>,
    last_error: Option<PriceError>,
    utility: Option<FeedInPrice>,
}

impl PriceTracker {
    pub fn new(max_age_s: i64) -> Self {
        PriceTracker {
            max_age_s,
            from_utility: false,
            last: None,
            last_error: None,
            utility: None,
        }
    }

    /// Records the outcome of a fetch made at `now_s`. A failure keeps the last price.
    pub fn record(&mut self, now_s: i64, outcome: Result<FeedInPrice, PriceError>) {
        match outcome {
            Ok(p) => {
                self.last = Some((p, now_s));
                self.last_error = None;
            }
            Err(e) => {
                log::warn!("{e}");
                self.last_error = Some(e);
            }
        }
    }

    /// The utility's current export price, `(currency units per kWh, interval end Unix
    /// s)` with positive = exporting costs money, or `None` when it states none now.
    /// Kept as the owner's view (`earn_c_per_kwh` = −100 × price; the currency's cents,
    /// shifted as a decimal: 0.07 is 7 c, not 7.000000000000001).
    pub fn record_utility(&mut self, export_price: Option<(f64, i64)>) {
        self.utility = export_price.map(|(price, end_s)| FeedInPrice {
            earn_c_per_kwh: -crate::sep2::types::shift_decimal(price, 2),
            interval_end_s: Some(end_s),
        });
    }

    /// The price to act on at `now_s`: the last good one while younger than `max_age_s`;
    /// with [`PriceTracker::from_utility`], the utility's until its interval ends.
    pub fn current(&self, now_s: i64) -> Option<FeedInPrice> {
        if self.from_utility {
            return self
                .utility
                .filter(|p| p.interval_end_s.is_none_or(|end| now_s < end));
        }
        self.last
            .filter(|(_, at)| now_s - at <= self.max_age_s)
            .map(|(p, _)| p)
    }

    /// The last fetch error, if the last fetch failed (for the status).
    pub fn last_error(&self) -> Option<&PriceError> {
        self.last_error.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn the_price_source_comes_from_an_enabled_complete_price_section() {
        let price = |options: &str| {
            let text = format!("config price 'feed_in'\n{options}");
            crate::config::from_text(&text, "t").expect("valid").0.price
        };
        assert_eq!(PriceSourceConfig::from_config(&price("")), None, "disabled");
        let source = PriceSourceConfig::from_config(&price(
            "\toption enabled '1'\n\toption site_id 'S1'\n\toption token 'T'\n",
        ))
        .expect("enabled and complete");
        assert_eq!(
            (source.site_id.as_str(), source.token.as_str()),
            ("S1", "T")
        );
        assert_eq!(
            source.url(),
            "https://api.amber.com.au/v1/sites/S1/prices/current"
        );
        let mut incomplete = price("");
        incomplete.enabled = true;
        assert_eq!(
            PriceSourceConfig::from_config(&incomplete),
            None,
            "no site id"
        );
        let mut utility =
            price("\toption enabled '1'\n\toption site_id 'S1'\n\toption token 'T'\n");
        utility.utility_price_export = true;
        assert_eq!(
            PriceSourceConfig::from_config(&utility),
            None,
            "the utility's price is not fetched"
        );
    }

    const BODY: &str = r#"[
      {"type":"CurrentInterval","duration":30,"spotPerKwh":6.1,"perKwh":24.3,
       "date":"2026-11-22","nemTime":"2026-11-22T15:00:00+10:00",
       "startTime":"2026-11-22T04:30:01Z","endTime":"2026-11-22T05:00:00Z",
       "renewables":61.2,"channelType":"general","spikeStatus":"none","descriptor":"low","estimate":true},
      {"type":"CurrentInterval","duration":30,"spotPerKwh":6.1,"perKwh":4.12,
       "date":"2026-11-22","nemTime":"2026-11-22T15:00:00+10:00",
       "startTime":"2026-11-22T04:30:01Z","endTime":"2026-11-22T05:00:00Z",
       "renewables":61.2,"channelType":"feedIn","spikeStatus":"none","descriptor":"low","estimate":true}
    ]"#;

    #[test]
    fn parses_feed_in_with_the_owner_sign() {
        let p = parse_current_prices(BODY, "test").unwrap();
        // Amber's +4.12 c/kWh feed-in cost = the owner pays 4.12 c/kWh to export.
        assert_eq!(p.earn_c_per_kwh, -4.12);
        assert_eq!(
            p.interval_end_s,
            parse_rfc3339_s("2026-11-22T15:00:00+10:00")
        );
        assert_eq!(p.interval_end_s, Some(1_795_323_600));
    }

    #[test]
    fn bad_bodies_are_named() {
        for (body, needle) in [
            ("{}", "JSON array"),
            ("[]", "feedIn"),
            (r#"[{"channelType":"feedIn"}]"#, "perKwh"),
            (
                r#"[{"channelType":"feedIn","perKwh":1,"endTime":"soon"}]"#,
                "endTime",
            ),
        ] {
            let e = parse_current_prices(body, "http://x/prices").unwrap_err();
            assert_eq!(e.source, "http://x/prices");
            assert_eq!(e.kind, PriceErrorKind::Format);
            assert!(e.message.contains(needle), "{e}");
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_s("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_s("1970-01-01T10:00:00.123+10:00"), Some(0));
        assert_eq!(parse_rfc3339_s("1970-01-01T00:00:00-01:30"), Some(5400));
        assert_eq!(parse_rfc3339_s("1970-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_s("1970-01-01T00:00:00"), None);
    }

    #[test]
    fn tracker_keeps_the_last_price_for_max_age_then_forgets_it() {
        let mut t = PriceTracker::new(600);
        let p = FeedInPrice {
            earn_c_per_kwh: -2.0,
            interval_end_s: None,
        };
        assert_eq!(t.current(0), None);
        t.record(100, Ok(p));
        t.record(
            160,
            Err(PriceError {
                source: "s".into(),
                kind: PriceErrorKind::Request,
                message: "timeout".into(),
            }),
        );
        assert_eq!(t.current(700), Some(p));
        assert!(t.last_error().is_some());
        assert_eq!(t.current(701), None);
    }

    #[test]
    fn utility_price_holds_until_its_interval_ends_and_ignores_the_api() {
        let mut t = PriceTracker::new(600);
        t.from_utility = true;
        // An API price is not the utility's.
        t.record(
            100,
            Ok(FeedInPrice {
                earn_c_per_kwh: 5.0,
                interval_end_s: None,
            }),
        );
        assert_eq!(t.current(100), None);
        // 0.042 AUD/kWh to export = the owner earns -4.2 c/kWh, until 2000.
        t.record_utility(Some((0.042, 2000)));
        let p = t.current(1999).expect("in its interval");
        assert_eq!(p.earn_c_per_kwh, -4.2, "exact: what /status shows");
        t.record_utility(Some((-0.07, 2000)));
        assert_eq!(
            t.current(1999).unwrap().earn_c_per_kwh,
            7.0,
            "not 7.000000000000001"
        );
        t.record_utility(Some((0.042, 2000)));
        assert_eq!(p.interval_end_s, Some(2000));
        assert_eq!(t.current(2000), None, "ended");
        t.record_utility(None);
        assert_eq!(t.current(1000), None);
    }

    /// A hand-scripted HTTP server (tiny_http) that answers each request with the next
    /// scripted (status, body) and reports the Authorization header it saw.
    fn scripted_server(script: Vec<(u16, &'static str)>) -> (String, mpsc::Receiver<String>) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for (status, body) in script {
                let Ok(req) = server.recv() else { return };
                let auth = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                let _ = tx.send(format!("{} {}", req.url(), auth));
                let resp = tiny_http::Response::from_string(body).with_status_code(status);
                let _ = req.respond(resp);
            }
            // Dropping the server closes the port: later fetches fail to connect.
        });
        (format!("http://127.0.0.1:{port}/v1"), rx)
    }

    #[test]
    fn fetches_over_http_and_survives_failures() {
        let (base_url, seen) = scripted_server(vec![
            (200, BODY),
            (500, "upstream down"),
            (200, "<html>maintenance</html>"),
        ]);
        let cfg = PriceSourceConfig {
            base_url,
            site_id: "01ABCDEF".into(),
            token: "psk_secret".into(),
            timeout_s: 5,
        };
        let mut tracker = PriceTracker::new(300);

        tracker.record(1000, fetch_feed_in_price(&cfg));
        assert_eq!(
            seen.recv().unwrap(),
            "/v1/sites/01ABCDEF/prices/current Bearer psk_secret"
        );
        assert_eq!(tracker.current(1000).unwrap().earn_c_per_kwh, -4.12);

        let e = fetch_feed_in_price(&cfg).unwrap_err();
        assert!(e.message.contains("500"), "{e}");
        assert_eq!(
            e.kind,
            PriceErrorKind::Request,
            "a 500 is not a parse error"
        );
        assert!(e.source.ends_with("/prices/current"));
        tracker.record(1060, Err(e));

        let e = fetch_feed_in_price(&cfg).unwrap_err();
        assert!(e.message.contains("JSON"), "{e}");
        assert_eq!(e.kind, PriceErrorKind::Format);
        tracker.record(1120, Err(e));

        // The script is done and the server dropped: this fetch cannot succeed.
        let e = fetch_feed_in_price(&cfg).unwrap_err();
        assert_eq!(e.kind, PriceErrorKind::Request, "{e}");
        tracker.record(1180, Err(e));

        // Still the last good price within max_age, then none (stop limiting on price).
        assert_eq!(tracker.current(1300).unwrap().earn_c_per_kwh, -4.12);
        assert_eq!(tracker.current(1301), None);
    }
}
