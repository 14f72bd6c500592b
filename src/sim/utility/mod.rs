//! A simulated CSIP-AUS utility server: what `csipd demo` points the daemon at, and what
//! `csipd demo --utility-only` serves to any other client.
//!
//! - [`schedule`]: the compressed day of 5-minute dynamic operating envelopes (sans IO).
//! - [`lab_pki`]: the CA, server and device certificates made at start.
//! - [`server`]: mutual TLS (CCM8 offered first, then GCM) and HTTP/1.1 keep-alive on
//!   threads; it hands each request to [`Utility::handle`].
//! - this module: [`Utility`], the sans-IO server: request in (with the client's LFDI
//!   and a [`Now`]), reply out, and a record of everything the client sent, shown as
//!   JSON on `GET /sim/report` (no client certificate needed for that path).
//!
//! It serves the resources SA Power Networks' and Energy Queensland's servers serve
//! (fixtures in /work/shared/fixtures/utility-servers): DeviceCapability with pollRate,
//! Time, EndDeviceList (paged with `?s=&l=`) holding the client's own EndDevice with
//! its Registration (PIN) and csipaus ConnectionPoint, FunctionSetAssignments, one
//! DERProgram with its DERControlList (`responseRequired="03"`, `replyTo` on each) and
//! DefaultDERControl, the DER list (DERCapability, DERSettings, DERStatus,
//! DERAvailability PUT targets), a DERCurveList with one volt-var curve that every
//! DERControl and the default link as `opModVoltVar` (each also carries a frequency droop,
//! `opModFreqDroop`: [`FREQ_DROOP`]), the MirrorUsagePoint list, a response list and a log
//! event list. The XML is written with csipd's sep2 writer where it has one for the
//! resource (ConnectionPoint, MirrorUsagePoint), else from templates, with the csipaus
//! namespace under the `csipaus` prefix; tests read every served resource with csipd's
//! reader and validate it against the schemas.
//!
//! Many devices: the lab device is pre-registered as `/edev/1`; any other client whose
//! certificate the TLS layer verified against the lab CA is registered by that
//! certificate at its first request (as a head-end provisions the devices its CA
//! issued) and gets `/edev/N` with its own DER, usage points and ConnectionPoint, so
//! `csipd fleet` can run hundreds of devices against it. Each device sees only its own
//! EndDevice, usage points and responses; the DERProgram is shared (one feeder). The
//! report has a record per device (`devices`).
//! Not a certification harness: it does not check field-level schema rules (tests run
//! xmllint against the schemas for that).

pub mod lab_pki;
pub mod schedule;
pub mod server;
pub mod tariff;

use crate::clock::Now;
use crate::sep2::{self, Readable};
use schedule::{BlockStatus, DEFAULT_EXPORT_LIMIT_W, DayPlan};
use serde::Serialize;
use std::collections::BTreeMap;

const XMLNS: &str = r#"xmlns="urn:ieee:std:2030.5:ns" xmlns:csipaus="https://csipaus.org/ns""#;
/// Where responses to DERControls go (`replyTo`).
pub const RESPONSE_PATH: &str = "/rsps/1/rsp";
/// Page size when the client sends no `l`, and the largest page served.
const DEFAULT_PAGE: usize = 10;
const MAX_PAGE: usize = 100;
/// Most recent entries kept in the report's lists (long runs).
const KEEP: usize = 200;

/// What the simulated utility is set up with.
#[derive(Debug, Clone)]
pub struct UtilityOptions {
    /// The compressed day (see [`schedule`]).
    pub plan: DayPlan,
    /// The device the utility has registered out of band (its LFDI, 40 hex digits) and
    /// the PIN the installer was given for it.
    pub device_lfdi: String,
    pub device_sfdi: u64,
    pub pin: u32,
    /// pollRate advertised on DeviceCapability and the lists (s).
    pub poll_s: u32,
    /// postRate of the MirrorUsagePoints (s): readings must start on its boundaries.
    pub post_rate_s: u32,
}

impl UtilityOptions {
    /// Defaults for a day of `plan`: lists polled once a block (5..60 s), readings
    /// every two blocks (20..300 s), PIN 111115 (2030.5's example PIN).
    pub fn for_plan(plan: DayPlan, device_lfdi: &str, device_sfdi: u64) -> UtilityOptions {
        UtilityOptions {
            plan,
            device_lfdi: device_lfdi.to_ascii_uppercase(),
            device_sfdi,
            pin: 111_115,
            poll_s: plan.block_s.clamp(5, 60),
            post_rate_s: (plan.block_s * 2).clamp(20, 300),
        }
    }
}

/// One HTTP request as the server layer read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub location: Option<String>,
}

fn xml(body: String) -> Reply {
    Reply {
        status: 200,
        content_type: "application/sep+xml",
        body,
        location: None,
    }
}

/// A resource csipd's sep2 writer can write (CSIP-AUS profile, csipaus prefix).
fn written<T: sep2::Writable>(doc: &T) -> Reply {
    match sep2::write(doc, sep2::WriteProfile::default()) {
        Ok(body) => xml(body),
        Err(e) => problem(
            500,
            format!("simulated utility cannot write {}: {e}", T::ROOT),
        ),
    }
}

fn empty(status: u16) -> Reply {
    Reply {
        status,
        content_type: "text/plain",
        body: String::new(),
        location: None,
    }
}

fn created(location: String) -> Reply {
    Reply {
        status: 201,
        content_type: "text/plain",
        body: String::new(),
        location: Some(location),
    }
}

fn problem(status: u16, text: String) -> Reply {
    Reply {
        status,
        content_type: "text/plain",
        body: text,
        location: None,
    }
}

/// A body the client sent that the server rejected, with why.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub method: String,
    pub path: String,
    pub problem: String,
    pub at_unix_s: i64,
}

/// A MirrorUsagePoint the client created and what it posted to it.
#[derive(Debug, Clone, Serialize)]
pub struct UsagePointRecord {
    pub href: String,
    pub mrid: String,
    pub role_flags: u16,
    pub device_lfdi: String,
    pub readings: u64,
    /// Readings whose timePeriod starts on a postRate boundary (and lasts postRate).
    pub on_post_rate_boundary: u64,
    pub off_boundary: u64,
    pub last_reading_unix_s: Option<i64>,
}

/// Responses received for one (DERControl mRID, status).
#[derive(Debug, Clone, Serialize)]
pub struct ResponseRecord {
    /// The device that sent it (its certificate's LFDI).
    pub device_lfdi: String,
    pub mrid: String,
    pub status: u8,
    /// IEEE 2030.5 Table 27's name for `status`.
    pub status_name: &'static str,
    pub count: u32,
    pub first_unix_s: i64,
    /// Whether the mRID is one of the simulated utility's DERControls.
    pub known_control: bool,
}

/// How many [`Report::first_requests`] are kept (the oldest dropped first).
pub const FIRST_REQUESTS_KEPT: usize = 32;

/// The first request on one TLS connection.
#[derive(Debug, Clone, Serialize)]
pub struct FirstRequest {
    /// When it was read, Unix milliseconds.
    pub at_unix_ms: i64,
    /// "GET /dcap" and the like.
    pub request: String,
}

/// Everything the simulated utility saw, as `GET /sim/report` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub requests: u64,
    /// The first request of each TLS connection (when, what), the newest
    /// [`FIRST_REQUESTS_KEPT`]: how long a client takes from its start to its first
    /// request (`scripts/measure.sh` compares it with the client's spawn time).
    pub first_requests: std::collections::VecDeque<FirstRequest>,
    /// Requests by "METHOD resource-kind" (e.g. "GET DERControlList").
    pub requests_by_kind: BTreeMap<String, u64>,
    pub tls_connections: u64,
    /// Negotiated TLS 1.2 suites (OpenSSL names) and how many connections used each.
    pub tls_ciphers: BTreeMap<String, u64>,
    /// Requests refused because they came without the registered device's certificate.
    pub forbidden: u64,
    pub connection_point_id: Option<String>,
    /// PUTs per DER resource (dercap, derg, ders, dera) that parsed.
    pub der_puts: BTreeMap<String, u64>,
    pub usage_points: Vec<UsagePointRecord>,
    pub readings_accepted: u64,
    pub readings_on_post_rate_boundary: u64,
    pub readings_off_boundary: u64,
    pub responses: Vec<ResponseRecord>,
    /// Responses sent more than once for the same (mRID, status).
    pub duplicate_responses: u64,
    pub log_events: u64,
    pub rejected: Vec<Rejected>,
    /// The latest accepted body of each kind the client sent ("PUT DERStatus", ...), for
    /// checks beyond parsing (the tests validate them against the schemas).
    pub last_bodies: BTreeMap<String, String>,
    /// One record per registered device, in the order they were registered (the lab
    /// device first).
    pub devices: Vec<DeviceRecord>,
}

/// What one device (one client certificate) did, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceRecord {
    /// Its certificate's LFDI (40 uppercase hex digits) and SFDI.
    pub lfdi: String,
    pub sfdi: u64,
    /// Its EndDevice.
    pub edev_href: String,
    /// "lab" for the pre-registered lab device, "certificate" for one registered at its
    /// first request by a certificate from the lab CA.
    pub registered_by: &'static str,
    pub first_request_unix_s: i64,
    pub last_request_unix_s: i64,
    pub requests: u64,
    /// GETs of its EndDevice (in the list or alone): the client found itself.
    pub end_device_reads: u64,
    /// GETs of the DERControlList: the client reached the program.
    pub der_control_list_reads: u64,
    /// DER PUTs that parsed (DERCapability, DERSettings, DERStatus, DERAvailability).
    pub der_puts: u64,
    pub connection_point_id: Option<String>,
    pub usage_points: u32,
    pub readings_accepted: u64,
    /// MirrorMeterReading / MirrorUsagePoint POSTs accepted.
    pub reading_posts: u64,
    pub responses: u64,
    pub duplicate_responses: u64,
    pub log_events: u64,
    /// Bodies refused (400).
    pub rejected: u64,
}

/// The current block and the day's shape, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub block_s: u32,
    pub post_rate_s: u32,
    pub poll_s: u32,
    pub current_block: u64,
    /// Virtual time of day of the current block (HH:MM).
    pub virtual_time: String,
    pub active_mrid: Option<String>,
    pub active_export_limit_w: Option<i32>,
    pub active_import_limit_w: Option<i32>,
    pub default_export_limit_w: i32,
    pub published: usize,
}

/// The sans-IO simulated utility.
#[derive(Debug, Clone)]
pub struct Utility {
    options: UtilityOptions,
    report: Report,
    /// What each device sent beyond its record (index as in `report.devices`).
    devices: Vec<DeviceData>,
    /// Device index by uppercase LFDI.
    by_lfdi: BTreeMap<String, usize>,
}

/// One device's stored state (served back on GET).
#[derive(Debug, Clone, Default)]
struct DeviceData {
    /// Stored bodies of the DER PUT targets by their path under the EndDevice
    /// (`/der/1/ders`).
    der: BTreeMap<String, String>,
    /// Accepted responses, newest last: (mRID, status, created time) for its list.
    responses: Vec<(String, u8, i64)>,
    log_events: Vec<String>,
}

/// `/edev/N...` as (device index N-1, the rest of the path); `None` for other paths.
fn edev_parts(path: &str) -> Option<(usize, &str)> {
    let rest = path.strip_prefix("/edev/")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let n: usize = rest[..end].parse().ok()?;
    (n >= 1).then(|| (n - 1, &rest[end..]))
}

fn is_lfdi(lfdi: &str) -> bool {
    lfdi.len() == 40 && lfdi.chars().all(|c| c.is_ascii_hexdigit())
}

/// IEEE 2030.5 Table 27 names of response statuses.
pub fn response_status_name(status: u8) -> &'static str {
    match status {
        1 => "event_received",
        2 => "event_started",
        3 => "event_completed",
        4 => "opted_out",
        5 => "opted_in",
        6 => "event_cancelled",
        7 => "event_superseded",
        8 => "partially_opted_out",
        9 => "partially_opted_in",
        10 => "completed_no_user_participation",
        11 => "user_acknowledged",
        12 => "rejected_invalid",
        13 => "rejected_expired",
        252..=255 => "program_specific",
        _ => "reserved",
    }
}

fn paging(query: &str) -> (usize, usize) {
    let mut start = 0;
    let mut limit = DEFAULT_PAGE;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("s", v)) => start = v.parse().unwrap_or(0),
            Some(("l", v)) => limit = v.parse().unwrap_or(DEFAULT_PAGE),
            _ => {}
        }
    }
    (start, limit.min(MAX_PAGE))
}

/// A list resource with `all`, `results`, optional pollRate and the page `query` asks for.
fn list(name: &str, href: &str, poll_s: Option<u32>, items: &[String], query: &str) -> String {
    let (start, limit) = paging(query);
    let page: Vec<&String> = items.iter().skip(start).take(limit).collect();
    let poll = poll_s
        .map(|p| format!(r#" pollRate="{p}""#))
        .unwrap_or_default();
    let mut out = format!(
        r#"<{name} {XMLNS} href="{href}" all="{}" results="{}"{poll}>"#,
        items.len(),
        page.len()
    );
    for item in page {
        out.push_str(item);
    }
    out.push_str(&format!("</{name}>"));
    out
}

fn power(tag: &str, w: i32) -> String {
    format!("<csipaus:{tag}><multiplier>0</multiplier><value>{w}</value></csipaus:{tag}>")
}

fn kind_of(path: &str) -> &'static str {
    // Every device's EndDevice tree counts as the lab device's.
    let normal;
    let path = match edev_parts(path) {
        Some((_, rest)) => {
            normal = format!("/edev/1{rest}");
            normal.as_str()
        }
        None => path,
    };
    match path {
        "/dcap" => "DeviceCapability",
        "/tm" => "Time",
        "/edev" => "EndDeviceList",
        "/edev/1" => "EndDevice",
        "/edev/1/rg" => "Registration",
        "/edev/1/cp" => "ConnectionPoint",
        "/edev/1/fsa" => "FunctionSetAssignmentsList",
        "/edev/1/fsa/1" => "FunctionSetAssignments",
        "/edev/1/fsa/1/derp" => "DERProgramList",
        "/derp/1" => "DERProgram",
        "/derp/1/derc" => "DERControlList",
        "/derp/1/dderc" => "DefaultDERControl",
        "/derp/1/dc" => "DERCurveList",
        VOLT_VAR_CURVE_PATH => "DERCurve",
        "/edev/1/der" => "DERList",
        "/edev/1/der/1" => "DER",
        "/edev/1/der/1/dercap" => "DERCapability",
        "/edev/1/der/1/derg" => "DERSettings",
        "/edev/1/der/1/ders" => "DERStatus",
        "/edev/1/der/1/dera" => "DERAvailability",
        "/edev/1/lel" => "LogEventList",
        "/mup" => "MirrorUsagePointList",
        RESPONSE_PATH => "ResponseList",
        p if p.starts_with("/derp/1/derc/") => "DERControl",
        p if p.starts_with("/mup/") => "MirrorUsagePoint",
        p if p == tariff::PROFILE_LIST || p.starts_with("/tp/") => "tariff",
        p if p.starts_with("/sim") => "report",
        _ => "other",
    }
}

fn hhmm(tod_s: u32) -> String {
    format!("{:02}:{:02}", tod_s / 3600, tod_s % 3600 / 60)
}

impl Utility {
    pub fn new(options: UtilityOptions) -> Utility {
        let mut u = Utility {
            options,
            report: Report::default(),
            devices: Vec::new(),
            by_lfdi: BTreeMap::new(),
        };
        let (lfdi, sfdi) = (u.options.device_lfdi.clone(), u.options.device_sfdi);
        let origin_s = u.options.plan.origin_utc_s;
        u.register(&lfdi, sfdi, "lab", origin_s);
        u
    }

    fn register(&mut self, lfdi: &str, sfdi: u64, by: &'static str, now_s: i64) -> usize {
        let index = self.report.devices.len();
        self.report.devices.push(DeviceRecord {
            lfdi: lfdi.to_ascii_uppercase(),
            sfdi,
            edev_href: format!("/edev/{}", index + 1),
            registered_by: by,
            first_request_unix_s: now_s,
            last_request_unix_s: now_s,
            ..Default::default()
        });
        self.devices.push(DeviceData::default());
        self.by_lfdi.insert(lfdi.to_ascii_uppercase(), index);
        index
    }

    /// The device a client certificate's LFDI stands for, registering it when it is new
    /// (the TLS layer verified the certificate against the lab CA). `None` without a
    /// certificate or for something that is not an LFDI.
    fn device_of(&mut self, peer_lfdi: Option<&str>, now: Now) -> Option<usize> {
        let lfdi = peer_lfdi?.to_ascii_uppercase();
        if let Some(&index) = self.by_lfdi.get(&lfdi) {
            return Some(index);
        }
        if !is_lfdi(&lfdi) {
            return None;
        }
        let sfdi = sep2::sfdi(&lfdi).ok()?;
        Some(self.register(&lfdi, sfdi, "certificate", now.utc_s()))
    }

    pub fn options(&self) -> &UtilityOptions {
        &self.options
    }

    /// What the client sent so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The server layer tells it about each new TLS connection and its suite.
    pub fn record_connection(&mut self, cipher: &str) {
        self.report.tls_connections += 1;
        *self
            .report
            .tls_ciphers
            .entry(cipher.to_string())
            .or_default() += 1;
    }

    /// The server layer tells it about the first request of each TLS connection.
    pub fn record_first_request(&mut self, req: &Request, now: Now) {
        let firsts = &mut self.report.first_requests;
        if firsts.len() >= FIRST_REQUESTS_KEPT {
            firsts.pop_front();
        }
        firsts.push_back(FirstRequest {
            at_unix_ms: now.utc_ms,
            request: format!("{} {}", req.method, req.path),
        });
    }

    /// The schedule as it stands at `now`.
    pub fn schedule_view(&self, now: Now) -> ScheduleView {
        let plan = &self.options.plan;
        let index = plan.index_at(now);
        let active = plan
            .block(index)
            .filter(|b| b.status_at(now).0 == BlockStatus::Active);
        let tod = ((u64::from(schedule::VIRTUAL_START_S)
            + index * u64::from(schedule::VIRTUAL_BLOCK_S))
            % 86_400) as u32;
        ScheduleView {
            block_s: plan.block_s,
            post_rate_s: self.options.post_rate_s,
            poll_s: self.options.poll_s,
            current_block: index,
            virtual_time: hhmm(tod),
            active_mrid: active.as_ref().map(|b| b.mrid.clone()),
            active_export_limit_w: active.as_ref().map(|b| b.export_limit_w),
            active_import_limit_w: active.as_ref().and_then(|b| b.import_limit_w),
            default_export_limit_w: DEFAULT_EXPORT_LIMIT_W,
            published: plan.published(now).len(),
        }
    }

    /// Every resource the server serves to the registered device at `now`, as (path,
    /// body), for checks of the served XML (tests validate them against the schemas).
    pub fn served_resources(&mut self, now: Now) -> Vec<(String, String)> {
        let mut paths: Vec<String> = [
            "/dcap",
            "/tm",
            "/edev",
            "/edev/1",
            "/edev/1/rg",
            "/edev/1/cp",
            "/edev/1/fsa",
            "/edev/1/fsa/1",
            "/edev/1/fsa/1/derp",
            "/derp/1",
            "/derp/1/dderc",
            "/derp/1/derc",
            "/derp/1/dc",
            VOLT_VAR_CURVE_PATH,
            "/edev/1/der",
            "/edev/1/lel",
            "/mup",
            "/rsps",
            RESPONSE_PATH,
        ]
        .iter()
        .map(|p| p.to_string())
        .collect();
        paths.extend(
            self.options
                .plan
                .published(now)
                .iter()
                .map(|b| format!("/derp/1/derc/{}", b.mrid)),
        );
        paths.extend(tariff::paths(&self.options.plan, now));
        paths.extend(self.report.usage_points.iter().map(|m| m.href.clone()));
        paths.extend(self.devices[0].der.keys().map(|k| format!("/edev/1{k}")));
        paths
            .into_iter()
            .filter_map(|path| {
                let req = Request {
                    method: "GET".into(),
                    path: path.clone(),
                    query: "l=100".into(),
                    body: Vec::new(),
                };
                // Straight to the resource: not counted as a client request.
                let reply = self.get(0, &req, now);
                (reply.status == 200).then_some((path, reply.body))
            })
            .collect()
    }

    /// The report and the schedule as JSON (`GET /sim/report`).
    pub fn report_json(&self, now: Now) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            now_unix_s: i64,
            schedule: ScheduleView,
            device_lfdi: &'a str,
            #[serde(flatten)]
            report: &'a Report,
        }
        serde_json::to_string_pretty(&Out {
            now_unix_s: now.utc_s(),
            schedule: self.schedule_view(now),
            device_lfdi: &self.options.device_lfdi,
            report: &self.report,
        })
        .unwrap_or_else(|e| format!("{{\"error\":\"report: {e}\"}}"))
    }

    fn reject(&mut self, dev: usize, req: &Request, text: String, now: Now) -> Reply {
        self.report.devices[dev].rejected += 1;
        self.report.rejected.push(Rejected {
            method: req.method.clone(),
            path: req.path.clone(),
            problem: text.clone(),
            at_unix_s: now.utc_s(),
        });
        if self.report.rejected.len() > KEEP {
            self.report.rejected.remove(0);
        }
        problem(400, text)
    }

    /// Parses a body the client sent, recording it as rejected when it does not parse.
    fn parse<T: Readable>(&mut self, dev: usize, req: &Request, now: Now) -> Result<T, Reply> {
        sep2::read::<T>(&req.body).map_err(|e| {
            self.reject(
                dev,
                req,
                format!("{} body does not read as {}: {e}", req.path, T::ROOT),
                now,
            )
        })
    }

    /// Answers one request. `peer_lfdi` is the LFDI of the client certificate (`None`
    /// without one; the TLS layer verified it against the lab CA): a client with a
    /// certificate gets the 2030.5 resources (a new LFDI is registered at its first
    /// request), one without gets 403; `/sim/report` is open to anyone who can reach
    /// the port.
    pub fn handle(&mut self, req: &Request, peer_lfdi: Option<&str>, now: Now) -> Reply {
        self.report.requests += 1;
        *self
            .report
            .requests_by_kind
            .entry(format!("{} {}", req.method, kind_of(&req.path)))
            .or_default() += 1;
        if req.method == "GET" && (req.path == "/sim/report" || req.path == "/sim") {
            return Reply {
                status: 200,
                content_type: "application/json",
                body: self.report_json(now),
                location: None,
            };
        }
        let Some(dev) = self.device_of(peer_lfdi, now) else {
            self.report.forbidden += 1;
            return problem(
                403,
                format!(
                    "{} needs a client certificate from the lab CA (an LFDI of 40 hex digits), got {}",
                    req.path,
                    peer_lfdi.unwrap_or("no certificate")
                ),
            );
        };
        {
            let record = &mut self.report.devices[dev];
            record.requests += 1;
            record.last_request_unix_s = now.utc_s();
        }
        // Another device's EndDevice tree is not this client's business.
        if let Some((owner, _)) = edev_parts(&req.path) {
            if owner != dev {
                self.report.forbidden += 1;
                return problem(
                    403,
                    format!(
                        "{} belongs to another device; this certificate's EndDevice is {}",
                        req.path, self.report.devices[dev].edev_href
                    ),
                );
            }
        }
        let reply = match req.method.as_str() {
            "GET" => return self.get(dev, req, now),
            "PUT" => self.put(dev, req, now),
            "POST" => self.post(dev, req, now),
            _ => return empty(405),
        };
        if (200..300).contains(&reply.status) && !req.body.is_empty() {
            self.report.last_bodies.insert(
                format!("{} {}", req.method, kind_of(&req.path)),
                String::from_utf8_lossy(&req.body).into_owned(),
            );
        }
        reply
    }

    fn get(&mut self, dev: usize, req: &Request, now: Now) -> Reply {
        let poll = self.options.poll_s;
        let t = now.utc_s();
        let q = req.query.as_str();
        let edev = self.report.devices[dev].edev_href.clone();
        // The device's own EndDevice tree.
        if let Some((_, rest)) = edev_parts(&req.path) {
            return self.get_own(dev, &edev, rest, q, now);
        }
        let o = &self.options;
        match req.path.as_str() {
            "/dcap" => xml(format!(
                r#"<DeviceCapability {XMLNS} href="/dcap" pollRate="{}"><ResponseSetListLink href="/rsps" all="1"/><TimeLink href="/tm"/><EndDeviceListLink href="/edev" all="1"/><MirrorUsagePointListLink href="/mup" all="{}"/></DeviceCapability>"#,
                poll * 6,
                self.report.devices[dev].usage_points
            )),
            "/tm" => xml(format!(
                r#"<Time {XMLNS} href="/tm" pollRate="{}"><currentTime>{t}</currentTime><dstEndTime>0</dstEndTime><dstOffset>0</dstOffset><dstStartTime>0</dstStartTime><localTime>{}</localTime><quality>7</quality><tzOffset>36000</tzOffset></Time>"#,
                poll * 6,
                t + 36_000
            )),
            // A head-end lists the client's own EndDevice only.
            "/edev" => {
                self.report.devices[dev].end_device_reads += 1;
                xml(list(
                    "EndDeviceList",
                    "/edev",
                    Some(poll),
                    &[self.end_device(dev, false)],
                    q,
                ))
            }
            "/derp/1" => xml(self.program(true, now)),
            "/derp/1/dderc" => xml(format!(
                r#"<DefaultDERControl {XMLNS} href="/derp/1/dderc"><mRID>DEFA{:028X}</mRID><description>simulated utility default</description><DERControlBase>{FREQ_DROOP}{VOLT_VAR_LINK}{}</DERControlBase></DefaultDERControl>"#,
                o.plan.origin_utc_s as u64,
                power("opModExpLimW", DEFAULT_EXPORT_LIMIT_W),
            )),
            "/derp/1/dc" => xml(list(
                "DERCurveList",
                "/derp/1/dc",
                None,
                &[volt_var_curve_xml(false)],
                q,
            )),
            VOLT_VAR_CURVE_PATH => xml(volt_var_curve_xml(true)),
            "/derp/1/derc" => {
                self.report.devices[dev].der_control_list_reads += 1;
                let items: Vec<String> = self
                    .options
                    .plan
                    .published(now)
                    .iter()
                    .map(|b| control_xml(b, now, false))
                    .collect();
                // No pollRate here: DERControlList has none in the schema (the program
                // list's applies).
                xml(list("DERControlList", "/derp/1/derc", None, &items, q))
            }
            p if p.starts_with("/derp/1/derc/") => {
                let mrid = &p["/derp/1/derc/".len()..];
                match o.plan.published(now).iter().find(|b| b.mrid == mrid) {
                    Some(b) => xml(control_xml(b, now, true)),
                    None => empty(404),
                }
            }
            "/mup" => {
                let items: Vec<String> = self
                    .report
                    .usage_points
                    .iter()
                    .filter(|m| self.owner_of(m) == Some(dev))
                    .map(|m| mup_xml(m, o.post_rate_s))
                    .collect();
                xml(list("MirrorUsagePointList", "/mup", Some(poll), &items, q))
            }
            p if p.starts_with("/mup/") => {
                match self.report.usage_points.iter().find(|m| m.href == p) {
                    Some(m) if self.owner_of(m) != Some(dev) => {
                        problem(403, format!("{p} belongs to another device"))
                    }
                    Some(m) => written(&sep2::MirrorUsagePoint {
                        href: Some(m.href.clone()),
                        mrid: m.mrid.clone(),
                        role_flags: m.role_flags,
                        service_category_kind: 0,
                        status: 1,
                        device_lfdi: m.device_lfdi.clone(),
                        post_rate_s: Some(o.post_rate_s),
                        ..Default::default()
                    }),
                    None => empty(404),
                }
            }
            p if p == tariff::PROFILE_LIST || p.starts_with("/tp/") => {
                match tariff::get(&o.plan, p, q, now) {
                    Some(body) => xml(body),
                    None => empty(404),
                }
            }
            "/rsps" => xml(list(
                "ResponseSetList",
                "/rsps",
                None,
                &[format!(
                    r#"<ResponseSet href="/rsps/1"><mRID>5E5{:029X}</mRID><description>DER control responses</description><ResponseListLink href="{RESPONSE_PATH}" all="{}"/></ResponseSet>"#,
                    o.plan.origin_utc_s as u64,
                    self.devices[dev].responses.len()
                )],
                q,
            )),
            RESPONSE_PATH => {
                // The client's own, newest first, as a head-end would page them.
                let lfdi = &self.report.devices[dev].lfdi;
                let items: Vec<String> = self.devices[dev]
                    .responses
                    .iter()
                    .rev()
                    .map(|(mrid, status, at)| {
                        format!(
                            r#"<Response><createdDateTime>{at}</createdDateTime><endDeviceLFDI>{lfdi}</endDeviceLFDI><status>{status}</status><subject>{mrid}</subject></Response>"#
                        )
                    })
                    .collect();
                xml(list("ResponseList", RESPONSE_PATH, None, &items, q))
            }
            _ => empty(404),
        }
    }

    /// The device whose usage point `m` is (by its deviceLFDI).
    fn owner_of(&self, m: &UsagePointRecord) -> Option<usize> {
        self.by_lfdi
            .get(&m.device_lfdi.to_ascii_uppercase())
            .copied()
    }

    /// GET of `rest` under the device's own EndDevice `edev` (`""`, `/rg`, `/der/1`, ...).
    fn get_own(&mut self, dev: usize, edev: &str, rest: &str, q: &str, now: Now) -> Reply {
        let o = &self.options;
        let poll = o.poll_s;
        match rest {
            "" => {
                self.report.devices[dev].end_device_reads += 1;
                xml(self.end_device(dev, true))
            }
            "/rg" => xml(format!(
                r#"<Registration {XMLNS} href="{edev}/rg" pollRate="{}"><dateTimeRegistered>{}</dateTimeRegistered><pIN>{}</pIN></Registration>"#,
                poll * 6,
                o.plan.origin_utc_s,
                o.pin
            )),
            // Written with csipd's own sep2 writer (the same code that PUTs it).
            "/cp" => match &self.report.devices[dev].connection_point_id {
                Some(id) => written(&sep2::ConnectionPoint {
                    href: Some(format!("{edev}/cp")),
                    connection_point_id: id.clone(),
                }),
                None => empty(404),
            },
            "/fsa" => xml(list(
                "FunctionSetAssignmentsList",
                &format!("{edev}/fsa"),
                Some(poll),
                &[fsa(edev, false)],
                q,
            )),
            "/fsa/1" => xml(fsa(edev, true)),
            "/fsa/1/derp" => {
                let item = self.program(false, now);
                xml(list(
                    "DERProgramList",
                    &format!("{edev}/fsa/1/derp"),
                    Some(poll),
                    &[item],
                    q,
                ))
            }
            "/der" => xml(list(
                "DERList",
                &format!("{edev}/der"),
                Some(poll),
                &[format!(
                    r#"<DER href="{edev}/der/1"><DERAvailabilityLink href="{edev}/der/1/dera"/><DERCapabilityLink href="{edev}/der/1/dercap"/><DERSettingsLink href="{edev}/der/1/derg"/><DERStatusLink href="{edev}/der/1/ders"/></DER>"#
                )],
                q,
            )),
            p if self.devices[dev].der.contains_key(p) => xml(self.devices[dev].der[p].clone()),
            "/lel" => xml(list(
                "LogEventList",
                &format!("{edev}/lel"),
                None,
                &self.devices[dev].log_events,
                q,
            )),
            _ => empty(404),
        }
    }

    fn end_device(&self, dev: usize, top: bool) -> String {
        let ns = if top {
            format!(" {XMLNS}")
        } else {
            String::new()
        };
        let d = &self.report.devices[dev];
        let edev = &d.edev_href;
        format!(
            r#"<EndDevice{ns} href="{edev}"><DERListLink href="{edev}/der" all="1"/><lFDI>{}</lFDI><LogEventListLink href="{edev}/lel" all="{}"/><sFDI>{}</sFDI><changedTime>{}</changedTime><enabled>true</enabled><FunctionSetAssignmentsListLink href="{edev}/fsa" all="1"/><postRate>{}</postRate><RegistrationLink href="{edev}/rg"/><csipaus:ConnectionPointLink href="{edev}/cp"/></EndDevice>"#,
            d.lfdi,
            self.devices[dev].log_events.len(),
            d.sfdi,
            self.options.plan.origin_utc_s,
            self.options.post_rate_s,
        )
    }

    fn program(&self, top: bool, now: Now) -> String {
        let ns = if top {
            format!(" {XMLNS}")
        } else {
            String::new()
        };
        format!(
            r#"<DERProgram{ns} href="/derp/1"><mRID>9000{:028X}</mRID><description>Dynamic operating envelopes</description><DefaultDERControlLink href="/derp/1/dderc"/><DERControlListLink href="/derp/1/derc" all="{}"/><DERCurveListLink href="/derp/1/dc" all="1"/><primacy>1</primacy></DERProgram>"#,
            self.options.plan.origin_utc_s as u64,
            self.options.plan.published(now).len()
        )
    }

    fn put(&mut self, dev: usize, req: &Request, now: Now) -> Reply {
        let Some((_, rest)) = edev_parts(&req.path) else {
            return empty(405);
        };
        let rest = rest.to_string();
        let result = match rest.as_str() {
            "/cp" => self
                .parse::<sep2::ConnectionPoint>(dev, req, now)
                .map(|cp| {
                    self.report.devices[dev].connection_point_id =
                        Some(cp.connection_point_id.clone());
                    self.report.connection_point_id = Some(cp.connection_point_id);
                }),
            "/der/1/dercap" => self.parse::<sep2::DerCapability>(dev, req, now).map(|_| ()),
            "/der/1/derg" => self.parse::<sep2::DerSettings>(dev, req, now).map(|_| ()),
            "/der/1/ders" => self.parse::<sep2::DerStatus>(dev, req, now).map(|_| ()),
            "/der/1/dera" => self
                .parse::<sep2::DerAvailability>(dev, req, now)
                .map(|_| ()),
            _ => return empty(405),
        };
        if let Err(reply) = result {
            return reply;
        }
        if let Some(name) = rest.strip_prefix("/der/1/") {
            *self.report.der_puts.entry(name.to_string()).or_default() += 1;
            self.report.devices[dev].der_puts += 1;
            self.devices[dev].der.insert(
                rest.clone(),
                String::from_utf8_lossy(&req.body).into_owned(),
            );
        }
        empty(204)
    }

    fn post(&mut self, dev: usize, req: &Request, now: Now) -> Reply {
        let lfdi = self.report.devices[dev].lfdi.clone();
        match req.path.as_str() {
            "/mup" => {
                let mup = match self.parse::<sep2::MirrorUsagePoint>(dev, req, now) {
                    Ok(m) => m,
                    Err(reply) => return reply,
                };
                if !mup.device_lfdi.eq_ignore_ascii_case(&lfdi) {
                    return self.reject(
                        dev,
                        req,
                        format!(
                            "MirrorUsagePoint {} names deviceLFDI {}, not the client's {lfdi}",
                            mup.mrid, mup.device_lfdi
                        ),
                        now,
                    );
                }
                // The same mRID again (from the same device) is the same usage point
                // (2030.5 10.10.4.3).
                let index = match self.report.usage_points.iter().position(|m| {
                    m.mrid.eq_ignore_ascii_case(&mup.mrid)
                        && m.device_lfdi.eq_ignore_ascii_case(&lfdi)
                }) {
                    Some(i) => i,
                    None => {
                        let href = format!("/mup/{}", self.report.usage_points.len() + 1);
                        self.report.usage_points.push(UsagePointRecord {
                            href,
                            mrid: mup.mrid.clone(),
                            role_flags: mup.role_flags,
                            device_lfdi: mup.device_lfdi.clone(),
                            readings: 0,
                            on_post_rate_boundary: 0,
                            off_boundary: 0,
                            last_reading_unix_s: None,
                        });
                        self.report.devices[dev].usage_points += 1;
                        self.report.usage_points.len() - 1
                    }
                };
                if !mup.mirror_meter_readings.is_empty() {
                    self.report.devices[dev].reading_posts += 1;
                }
                for mmr in &mup.mirror_meter_readings {
                    self.count_readings(dev, index, mmr);
                }
                created(self.report.usage_points[index].href.clone())
            }
            p if p.starts_with("/mup/") => {
                let Some(index) = self.report.usage_points.iter().position(|m| m.href == p) else {
                    return empty(404);
                };
                if !self.report.usage_points[index]
                    .device_lfdi
                    .eq_ignore_ascii_case(&lfdi)
                {
                    return problem(403, format!("{p} belongs to another device"));
                }
                // csipd posts one MirrorMeterReading per channel and interval.
                let mmr = match self.parse::<sep2::MirrorMeterReading>(dev, req, now) {
                    Ok(m) => m,
                    Err(reply) => return reply,
                };
                self.report.devices[dev].reading_posts += 1;
                self.count_readings(dev, index, &mmr);
                created(p.to_string())
            }
            RESPONSE_PATH => {
                let rsp = match self.parse::<sep2::DerControlResponse>(dev, req, now) {
                    Ok(r) => r,
                    Err(reply) => return reply,
                };
                let Some(status) = rsp.status else {
                    return self.reject(
                        dev,
                        req,
                        format!("response to {} has no status", rsp.subject),
                        now,
                    );
                };
                let mrid = rsp.subject.to_ascii_uppercase();
                let known = schedule::block_index_of(&mrid)
                    .and_then(|i| self.options.plan.block(i))
                    .is_some_and(|b| b.mrid == mrid);
                self.report.devices[dev].responses += 1;
                match self
                    .report
                    .responses
                    .iter_mut()
                    .find(|r| r.mrid == mrid && r.status == status && r.device_lfdi == lfdi)
                {
                    Some(r) => {
                        r.count += 1;
                        self.report.duplicate_responses += 1;
                        self.report.devices[dev].duplicate_responses += 1;
                    }
                    None => {
                        self.report.responses.push(ResponseRecord {
                            device_lfdi: lfdi.clone(),
                            mrid: mrid.clone(),
                            status,
                            status_name: response_status_name(status),
                            count: 1,
                            first_unix_s: now.utc_s(),
                            known_control: known,
                        });
                        // Many devices: the report keeps the latest few per device.
                        if self.report.responses.len() > KEEP * self.report.devices.len() {
                            self.report.responses.remove(0);
                        }
                    }
                }
                let list = &mut self.devices[dev].responses;
                list.push((mrid, status, rsp.created_date_time.unwrap_or(now.utc_s())));
                if list.len() > KEEP {
                    list.remove(0);
                }
                created(format!("{RESPONSE_PATH}/{}", self.report.responses.len()))
            }
            p if edev_parts(p).is_some_and(|(_, rest)| rest == "/lel") => {
                if let Err(reply) = self.parse::<sep2::LogEvent>(dev, req, now) {
                    return reply;
                }
                self.report.log_events += 1;
                self.report.devices[dev].log_events += 1;
                let body = String::from_utf8_lossy(&req.body);
                // Listed as sent, without its own namespace declaration.
                let item = body.replacen(" xmlns=\"urn:ieee:std:2030.5:ns\"", "", 1);
                let events = &mut self.devices[dev].log_events;
                events.push(item);
                if events.len() > KEEP {
                    events.remove(0);
                }
                created(format!("{p}/{}", self.report.devices[dev].log_events))
            }
            _ => empty(405),
        }
    }

    fn count_readings(&mut self, dev: usize, index: usize, mmr: &sep2::MirrorMeterReading) {
        let post_rate = i64::from(self.options.post_rate_s);
        let mut periods: Vec<sep2::DateTimeInterval> = mmr
            .mirror_reading_sets
            .iter()
            .flat_map(|set| {
                let set_period = set.time_period;
                set.readings
                    .iter()
                    .map(move |r| r.time_period.unwrap_or(set_period))
            })
            .collect();
        if let Some(p) = mmr.reading.as_ref().and_then(|r| r.time_period) {
            periods.push(p);
        }
        let up = &mut self.report.usage_points[index];
        self.report.devices[dev].readings_accepted += periods.len() as u64;
        for p in periods {
            up.readings += 1;
            self.report.readings_accepted += 1;
            if p.start.rem_euclid(post_rate) == 0 && i64::from(p.duration_s) == post_rate {
                up.on_post_rate_boundary += 1;
                self.report.readings_on_post_rate_boundary += 1;
            } else {
                up.off_boundary += 1;
                self.report.readings_off_boundary += 1;
            }
            up.last_reading_unix_s =
                Some(up.last_reading_unix_s.map_or(p.start, |l| l.max(p.start)));
        }
    }
}

fn fsa(edev: &str, top: bool) -> String {
    let ns = if top {
        format!(" {XMLNS}")
    } else {
        String::new()
    };
    format!(
        r#"<FunctionSetAssignments{ns} href="{edev}/fsa/1"><DERProgramListLink href="{edev}/fsa/1/derp" all="1"/><TariffProfileListLink href="{}" all="1"/><mRID>F5A00000000000000000000000000001</mRID><description>Dynamic operating envelopes</description></FunctionSetAssignments>"#,
        tariff::PROFILE_LIST
    )
}

fn control_xml(b: &schedule::Block, now: Now, top: bool) -> String {
    let ns = if top {
        format!(" {XMLNS}")
    } else {
        String::new()
    };
    let (status, since) = b.status_at(now);
    let randomize = b
        .randomize_start_s
        .map(|r| format!("<randomizeStart>{r}</randomizeStart>"))
        .unwrap_or_default();
    format!(
        r#"<DERControl{ns} href="/derp/1/derc/{mrid}" replyTo="{RESPONSE_PATH}" responseRequired="03"><mRID>{mrid}</mRID><description>DOE block {index} (virtual {tod})</description><creationTime>{ct}</creationTime><EventStatus><currentStatus>{st}</currentStatus><dateTime>{since}</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus><interval><duration>{d}</duration><start>{start}</start></interval>{randomize}<DERControlBase>{FREQ_DROOP}{VOLT_VAR_LINK}{imp}{exp}</DERControlBase></DERControl>"#,
        mrid = b.mrid,
        index = b.index,
        tod = hhmm(b.virtual_time_of_day_s),
        ct = b.creation_utc_s,
        st = status.code(),
        d = b.duration_s,
        start = b.start_utc_s,
        imp = b
            .import_limit_w
            .map(|w| power("opModImpLimW", w))
            .unwrap_or_default(),
        exp = power("opModExpLimW", b.export_limit_w),
    )
}

/// The program's one DERCurve: AS/NZS 4777.2's Australia B volt-var response (205,
/// 220, 235 and 255 V of 230 V: +30 %, 0, 0, -40 % of setMaxVar; the simulated
/// inverter's factory curve is Australia A), which every DOE block and the default
/// control link as opModVoltVar.
pub const VOLT_VAR_CURVE_PATH: &str = "/derp/1/dc/1";
const VOLT_VAR_LINK: &str = r#"<opModVoltVar href="/derp/1/dc/1"/>"#;

/// The frequency droop every DOE block and the default control carry (opModFreqDroop,
/// FreqDroopType): dead bands of 0.15 Hz each way (dBOF, dBUF in mHz), a 5 % droop
/// (kOF, kUF in thousandths), a 1 s open-loop response (openLoopTms in hundredths of a
/// second). The demo's grid rises to 50.4 Hz now and then, so it visibly cuts the PV.
pub const FREQ_DROOP: &str = "<opModFreqDroop><dBOF>150</dBOF><dBUF>150</dBUF><kOF>50</kOF><kUF>50</kUF><openLoopTms>100</openLoopTms></opModFreqDroop>";

/// The volt-var DERCurve (curveType 11; x in tenths of a percent of VRef, y in % of
/// setMaxVar, yRefType 2).
fn volt_var_curve_xml(top: bool) -> String {
    let ns = if top {
        format!(" {XMLNS}")
    } else {
        String::new()
    };
    let points: String = [(891, 30), (957, 0), (1022, 0), (1109, -40)]
        .iter()
        .map(|(x, y)| format!("<CurveData><xvalue>{x}</xvalue><yvalue>{y}</yvalue></CurveData>"))
        .collect();
    format!(
        r#"<DERCurve{ns} href="{VOLT_VAR_CURVE_PATH}"><mRID>C0A00000000000000000000000000001</mRID><description>volt-var AS/NZS 4777.2 Aus B</description><creationTime>1700000000</creationTime>{points}<curveType>11</curveType><xMultiplier>-1</xMultiplier><yMultiplier>0</yMultiplier><yRefType>2</yRefType></DERCurve>"#
    )
}

/// A MirrorUsagePointList item (no namespace declaration of its own).
fn mup_xml(m: &UsagePointRecord, post_rate_s: u32) -> String {
    format!(
        r#"<MirrorUsagePoint href="{}"><mRID>{}</mRID><roleFlags>{:02X}</roleFlags><serviceCategoryKind>0</serviceCategoryKind><status>1</status><deviceLFDI>{}</deviceLFDI><postRate>{post_rate_s}</postRate></MirrorUsagePoint>"#,
        m.href, m.mrid, m.role_flags, m.device_lfdi
    )
}

#[cfg(test)]
mod tests;
