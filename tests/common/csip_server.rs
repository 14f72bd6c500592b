//! A hand-scripted CSIP-AUS utility server for the engine's tests. It is NOT a real
//! 2030.5 server: it renders a fixed DeviceCapability tree (paths laid out like the
//! reference CSIP-AUS server the certification harness uses: `/dcap`, `/tm`, `/edev`,
//! `/edev/1/fsa/1/derp`, `/edev/1/derp/1/derc`, `/edev/1/der/1/ders`, `/mup`, ...) from a
//! [`Scenario`] that the test can change at any moment, records every request csipd
//! makes, and can force error statuses (404, 429, 503, or no answer at all) on any path.
//! It runs either on a socket, speaking plain HTTP on 127.0.0.1 (csipd's plain-HTTP
//! debugging mode, for what the transport and the runtime must prove), or in memory
//! ([`ScriptedServer::in_memory`] + [`ScriptedServer::exchange`]) for the engine's
//! procedure tests on a virtual clock. No installable peer plays the CSIP-AUS harness
//! procedures, hence this script.
#![allow(dead_code)]

#[path = "schema.rs"]
pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One request csipd made.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    pub body: String,
    pub at: Instant,
    /// Virtual monotonic milliseconds of the request (in-memory mode; 0 on a socket).
    pub at_ms: u64,
}

/// A DERControl served in a program's DERControlList.
#[derive(Debug, Clone)]
pub struct Control {
    pub mrid: String,
    pub creation_time: i64,
    pub start: i64,
    pub duration_s: u32,
    /// EventStatus.currentStatus: 0 scheduled, 1 active, 2 cancelled, ...
    pub status: u8,
    pub exp_lim_w: Option<i32>,
    pub imp_lim_w: Option<i32>,
    pub gen_lim_w: Option<i32>,
    pub load_lim_w: Option<i32>,
    /// csipaus:opModStorageTargetW (CSIP-AUS v1.3 storage): positive discharges.
    pub storage_target_w: Option<i32>,
    pub energize: Option<bool>,
    pub connect: Option<bool>,
    /// opModFixedW, hundredths of a percent (SignedPerCent).
    pub fixed_w: Option<i16>,
    /// opModFixedPFInjectW: (displacement with multiplier -2, excitation).
    pub fixed_pf_inject: Option<(u16, bool)>,
    /// opModVoltVar: the DERCurveLink's href (a curve of the program's DERCurveList).
    pub volt_var: Option<String>,
    /// opModTargetVar: (value, multiplier), var.
    pub target_var: Option<(i16, i8)>,
    /// opModWattVar: the DERCurveLink's href.
    pub watt_var: Option<String>,
    /// opModWattPF: the DERCurveLink's href.
    pub watt_pf: Option<String>,
    /// opModFreqDroop: (dBOF, dBUF, kOF, kUF, openLoopTms) in sep.xsd's units.
    pub freq_droop: Option<(u32, u32, u16, u16, u16)>,
    /// opModFreqWatt: the DERCurveLink's href.
    pub freq_watt: Option<String>,
    pub response_required: u8,
}

/// The mRID the server gives the control tagged `tag` (mRIDs are HexBinary128; the tag
/// stays readable in the hex and in the description).
pub fn mrid_of(tag: &str) -> String {
    let hex: String = tag.bytes().take(16).map(|b| format!("{b:02X}")).collect();
    format!("{hex:0<32}")
}

impl Control {
    pub fn new(tag: &str, start: i64, duration_s: u32) -> Control {
        Control {
            mrid: mrid_of(tag),
            creation_time: start - 1,
            start,
            duration_s,
            status: 0,
            exp_lim_w: None,
            imp_lim_w: None,
            gen_lim_w: None,
            load_lim_w: None,
            storage_target_w: None,
            energize: None,
            connect: None,
            fixed_w: None,
            fixed_pf_inject: None,
            volt_var: None,
            target_var: None,
            watt_var: None,
            watt_pf: None,
            freq_droop: None,
            freq_watt: None,
            response_required: 3,
        }
    }
}

/// A DERProgram with its default control and events.
#[derive(Debug, Clone)]
pub struct Program {
    pub primacy: u8,
    pub default_exp_lim_w: Option<i32>,
    pub default_imp_lim_w: Option<i32>,
    pub default_gen_lim_w: Option<i32>,
    pub default_load_lim_w: Option<i32>,
    pub set_grad_w: Option<u16>,
    /// The DefaultDERControl's `setES*` elements, as written (sep.xsd order, before
    /// setGradW), e.g. `<setESDelay>6000</setESDelay>`.
    pub default_set_es: String,
    pub controls: Vec<Control>,
    /// The program's DERCurveList at `/edev/1/derp/{n}/dc`: each a whole `<DERCurve>`
    /// element (see [`volt_var_curve_xml`]).
    pub curves: Vec<String>,
}

impl Default for Program {
    fn default() -> Program {
        Program {
            primacy: 0,
            default_exp_lim_w: Some(0),
            default_imp_lim_w: Some(0),
            default_gen_lim_w: None,
            default_load_lim_w: None,
            set_grad_w: Some(27),
            default_set_es: String::new(),
            controls: Vec::new(),
            curves: Vec::new(),
        }
    }
}

/// What the server serves. Change it through [`ScriptedServer::update`].
#[derive(Debug, Clone)]
pub struct Scenario {
    pub lfdi: String,
    pub sfdi: u64,
    pub pin: u32,
    /// The EndDevice exists before csipd starts (out-of-band registration).
    pub preregistered: bool,
    pub registration_link: bool,
    pub connection_point_link: bool,
    /// Other devices listed before ours in the EndDeviceList (exercise paging).
    pub other_devices: u32,
    /// Page size when the client sends no `l` (GridAPPS-D style one-item pages).
    pub default_page_limit: u32,
    /// Largest page the server hands out whatever `l` asks (forces paging).
    pub max_page_limit: u32,
    pub dcap_poll_s: u32,
    pub time_poll_s: u32,
    pub edev_list_poll_s: u32,
    pub fsa_list_poll_s: u32,
    pub derp_list_poll_s: u32,
    pub der_list_poll_s: u32,
    pub mup_list_poll_s: u32,
    pub mup_post_s: u32,
    /// One Vec<Program> per FunctionSetAssignments; program numbers run across FSAs.
    pub fsas: Vec<Vec<Program>>,
    /// Server clock minus real clock, seconds.
    pub clock_offset_s: i64,
    /// The DeviceCapability states its pollRate only once this device is registered
    /// (what the certification harness's server did before in-band registration).
    pub dcap_poll_rate_after_registration: bool,
    /// The EndDevice links a SubscriptionList (`/edev/1/sub`) that takes Subscriptions.
    pub subscription_list: bool,
    /// FSA 1 links a TariffProfileList at `/edev/1/fsa/1/tp` (served by the pricing
    /// test's own routes, tests/csip_pricing.rs).
    pub tariff_profile_list_link: bool,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            lfdi: String::new(),
            sfdi: 0,
            pin: 111115,
            preregistered: true,
            registration_link: true,
            connection_point_link: true,
            other_devices: 2,
            default_page_limit: 1,
            max_page_limit: 100,
            dcap_poll_s: 2,
            time_poll_s: 2,
            edev_list_poll_s: 2,
            fsa_list_poll_s: 2,
            derp_list_poll_s: 2,
            der_list_poll_s: 2,
            mup_list_poll_s: 2,
            mup_post_s: 2,
            fsas: vec![vec![Program::default()]],
            clock_offset_s: 0,
            dcap_poll_rate_after_registration: false,
            subscription_list: false,
            tariff_profile_list_link: false,
        }
    }
}

type Change = Box<dyn FnOnce(&mut Scenario) + Send>;

#[derive(Default)]
struct State {
    /// Changes applied when a request first matches (method, path), before it is
    /// served — the harness's "GET-request-received" actions run before the answer.
    triggers: Vec<(String, String, Change)>,
    scenario: Scenario,
    requests: Vec<Recorded>,
    /// Forced status per path (e.g. 404, 429, 503).
    forced: HashMap<String, (u16, Option<u32>)>,
    registered_in_band: bool,
    /// Created mirror usage points: (id, body of the POST).
    mups: Vec<(u32, String)>,
    next_mup_id: u32,
    /// Bodies PUT to each path, latest last.
    puts: HashMap<String, Vec<String>>,
    /// Subscriptions created: (id, body of the POST).
    subs: Vec<(usize, String)>,
    /// Server clock (Unix seconds, before `clock_offset_s`) of the request being served.
    now_s: i64,
}

/// The server's state and the signal that a request was recorded (what
/// [`ScriptedServer::wait_for`] waits on: no polling).
struct Shared {
    state: Mutex<State>,
    recorded: Condvar,
}

impl Shared {
    fn new(scenario: Scenario) -> Shared {
        Shared {
            state: Mutex::new(State {
                scenario,
                next_mup_id: 1,
                ..State::default()
            }),
            recorded: Condvar::new(),
        }
    }
}

pub struct ScriptedServer {
    /// `http://127.0.0.1:PORT` on a socket; `memory:` in memory.
    pub base_url: String,
    state: Arc<Shared>,
    server: Option<Arc<tiny_http::Server>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What the server answers to one request (in-memory mode hands it out as it is).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status; 0 means no answer at all (a forced timeout, in memory only).
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
    pub retry_after_s: Option<u32>,
}

/// Records and answers one request (both modes).
fn serve(shared: &Shared, method: &str, url: &str, body: &str, now_s: i64, at_ms: u64) -> Reply {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url.to_string(), String::new()),
    };
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    state.now_s = now_s;
    state.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.to_string(),
        at: Instant::now(),
        at_ms,
    });
    shared.recorded.notify_all();
    if let Some(i) = state
        .triggers
        .iter()
        .position(|(m, p, _)| *m == method && *p == path)
    {
        let (_, _, change) = state.triggers.remove(i);
        change(&mut state.scenario);
    }
    handle(&mut state, method, &path, &query, body)
}

pub const XMLNS: &str = r#"xmlns="urn:ieee:std:2030.5:ns" xmlns:csipaus="https://csipaus.org/ns""#;

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ScriptedServer {
    pub fn start(scenario: Scenario) -> ScriptedServer {
        Self::start_at("127.0.0.1:0", scenario)
    }

    /// [`ScriptedServer::start`] on a given address, e.g. the port a test held silent
    /// until now (a server that starts answering where csipd already looks).
    pub fn start_at(addr: &str, scenario: Scenario) -> ScriptedServer {
        let server =
            Arc::new(tiny_http::Server::http(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
        let port = server.server_addr().to_ip().expect("ip listener").port();
        let state = Arc::new(Shared::new(scenario));
        let thread_state = Arc::clone(&state);
        let thread_server = Arc::clone(&server);
        let thread = thread::spawn(move || {
            for mut request in thread_server.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let method = request.method().as_str().to_string();
                let url = request.url().to_string();
                let reply = serve(&thread_state, &method, &url, &body, now_s(), 0);
                let mut response =
                    tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
                if reply.status == 200 {
                    response = response.with_header(header("Content-Type", "application/sep+xml"));
                }
                if let Some(location) = reply.location {
                    response = response.with_header(header("Location", &location));
                }
                if let Some(retry) = reply.retry_after_s {
                    response = response.with_header(header("Retry-After", &retry.to_string()));
                }
                let _ = request.respond(response);
            }
        });
        ScriptedServer {
            base_url: format!("http://127.0.0.1:{port}"),
            state,
            server: Some(server),
            thread: Some(thread),
        }
    }

    /// The same server without a socket: requests are handed to [`ScriptedServer::exchange`].
    pub fn in_memory(scenario: Scenario) -> ScriptedServer {
        ScriptedServer {
            base_url: "memory:".into(),
            state: Arc::new(Shared::new(scenario)),
            server: None,
            thread: None,
        }
    }

    /// Serves one request in memory at server time `now_s` (virtual clock `at_ms`).
    pub fn exchange(&self, method: &str, url: &str, body: &str, now_s: i64, at_ms: u64) -> Reply {
        serve(&self.state, method, url, body, now_s, at_ms)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes what the server serves from now on.
    pub fn update(&self, change: impl FnOnce(&mut Scenario)) {
        change(&mut self.lock().scenario);
    }

    /// Applies `change` when the first `method path` request arrives, before answering it.
    pub fn on_request(
        &self,
        method: &str,
        path: &str,
        change: impl FnOnce(&mut Scenario) + Send + 'static,
    ) {
        self.lock()
            .triggers
            .push((method.to_string(), path.to_string(), Box::new(change)));
    }

    pub fn scenario(&self) -> Scenario {
        self.lock().scenario.clone()
    }

    /// Answers every request to `path` with `status` (and Retry-After) until cleared;
    /// `"*"` matches every path. Status 0 is no answer at all (a timeout; in memory only).
    pub fn force_status(&self, path: &str, status: u16, retry_after_s: Option<u32>) {
        self.lock()
            .forced
            .insert(path.to_string(), (status, retry_after_s));
    }

    /// The Subscriptions the server holds now (POSTed and not DELETEd).
    pub fn subscriptions(&self) -> usize {
        self.lock().subs.len()
    }

    pub fn clear_forced(&self, path: &str) {
        self.lock().forced.remove(path);
    }

    /// Forgets the created mirror usage points (the server "lost" them).
    pub fn drop_mups(&self) {
        self.lock().mups.clear();
    }

    pub fn mup_count(&self) -> usize {
        self.lock().mups.len()
    }

    /// Drops the recorded requests (long runs).
    pub fn forget_requests(&self) {
        self.lock().requests.clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// Waits up to `timeout` for `done(requests)` to hold; returns whether it did.
    /// Checked again each time a request is recorded (not on a timer).
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // A copy, so `done` may call back into the server.
            let requests = self.requests();
            if done(&requests) {
                return true;
            }
            let mut state = self.lock();
            // Wait for the next request unless one came while `done` ran.
            while state.requests.len() == requests.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                state = self
                    .state
                    .recorded
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.unblock();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn ok(body: String) -> Reply {
    Reply {
        status: 200,
        body,
        location: None,
        retry_after_s: None,
    }
}

fn status(code: u16) -> Reply {
    Reply {
        status: code,
        body: String::new(),
        location: None,
        retry_after_s: None,
    }
}

fn paging(query: &str, default_limit: u32, max_limit: u32) -> (u32, u32) {
    let mut start = 0;
    let mut limit = default_limit.max(1);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("s", v)) => start = v.parse().unwrap_or(0),
            Some(("l", v)) => limit = v.parse().unwrap_or(limit),
            _ => {}
        }
    }
    (start, limit.min(max_limit.max(1)))
}

/// Renders a list page from its items.
fn list(
    name: &str,
    href: &str,
    poll: Option<u32>,
    items: &[String],
    query: &str,
    limits: (u32, u32),
) -> String {
    let (start, limit) = paging(query, limits.0, limits.1);
    let page: Vec<&String> = items
        .iter()
        .skip(start as usize)
        .take(limit as usize)
        .collect();
    let poll = poll
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

fn power(tag: &str, w: Option<i32>) -> String {
    w.map(|w| {
        format!("<csipaus:{tag}><multiplier>0</multiplier><value>{w}</value></csipaus:{tag}>")
    })
    .unwrap_or_default()
}

fn programs(scenario: &Scenario) -> Vec<(usize, usize, &Program)> {
    // (fsa number, program number, program), numbered from 1 across FSAs
    let mut out = Vec::new();
    let mut n = 0;
    for (f, fsa) in scenario.fsas.iter().enumerate() {
        for program in fsa {
            n += 1;
            out.push((f + 1, n, program));
        }
    }
    out
}

fn handle(state: &mut State, method: &str, path: &str, query: &str, body: &str) -> Reply {
    if let Some(&(code, retry)) = state.forced.get(path).or_else(|| state.forced.get("*")) {
        let mut reply = status(code);
        reply.retry_after_s = retry;
        return reply;
    }
    let s = state.scenario.clone();
    let registered = s.preregistered || state.registered_in_band;
    match (method, path) {
        ("GET", "/dcap") => {
            let poll = if s.dcap_poll_rate_after_registration && !registered {
                String::new()
            } else {
                format!(r#" pollRate="{}""#, s.dcap_poll_s)
            };
            ok(format!(
                r#"<DeviceCapability {XMLNS} href="/dcap"{poll}><TimeLink href="/tm"/><EndDeviceListLink href="/edev" all="{}"/><MirrorUsagePointListLink href="/mup" all="{}"/></DeviceCapability>"#,
                s.other_devices + u32::from(registered),
                state.mups.len()
            ))
        }
        ("GET", "/tm") => {
            let now = state.now_s + s.clock_offset_s;
            ok(format!(
                r#"<Time {XMLNS} href="/tm" pollRate="{}"><currentTime>{now}</currentTime><dstEndTime>0</dstEndTime><dstOffset>0</dstOffset><dstStartTime>0</dstStartTime><localTime>{}</localTime><quality>4</quality><tzOffset>36000</tzOffset></Time>"#,
                s.time_poll_s,
                now + 36000
            ))
        }
        ("GET", "/edev") => {
            let mut items: Vec<String> = (0..s.other_devices)
                .map(|i| {
                    let n = i + 2;
                    format!(
                        r#"<EndDevice href="/edev/{n}"><lFDI>{:040X}</lFDI><sFDI>{}</sFDI><changedTime>0</changedTime></EndDevice>"#,
                        u64::from(n) * 7919,
                        u64::from(n) * 1000
                    )
                })
                .collect();
            if registered {
                items.push(own_edev(&s));
            }
            ok(list(
                "EndDeviceList",
                "/edev",
                Some(s.edev_list_poll_s),
                &items,
                query,
                (s.default_page_limit, s.max_page_limit),
            ))
        }
        ("POST", "/edev") => {
            if !body.contains(&s.lfdi) && !body.to_uppercase().contains(&s.lfdi) {
                return status(400);
            }
            state.registered_in_band = true;
            Reply {
                status: 201,
                body: String::new(),
                location: Some("/edev/1".into()),
                retry_after_s: None,
            }
        }
        ("GET", "/edev/1") if registered => ok(own_edev(&s)),
        ("GET", "/edev/1/rg") if registered && s.registration_link => ok(format!(
            r#"<Registration {XMLNS} href="/edev/1/rg" pollRate="{}"><dateTimeRegistered>1700000000</dateTimeRegistered><pIN>{}</pIN></Registration>"#,
            s.edev_list_poll_s, s.pin
        )),
        ("GET", "/edev/1/fsa") if registered => {
            let mut items = Vec::new();
            let all = programs(&s);
            for f in 1..=s.fsas.len() {
                let count = all.iter().filter(|(ff, _, _)| *ff == f).count();
                let tp = if f == 1 && s.tariff_profile_list_link {
                    r#"<TariffProfileListLink href="/edev/1/fsa/1/tp"/>"#
                } else {
                    ""
                };
                items.push(format!(
                    r#"<FunctionSetAssignments href="/edev/1/fsa/{f}"><DERProgramListLink href="/edev/1/fsa/{f}/derp" all="{count}"/>{tp}<mRID>F{f:031X}</mRID><description>fsa {f}</description></FunctionSetAssignments>"#
                ));
            }
            ok(list(
                "FunctionSetAssignmentsList",
                "/edev/1/fsa",
                Some(s.fsa_list_poll_s),
                &items,
                query,
                (s.default_page_limit, s.max_page_limit),
            ))
        }
        ("GET", "/edev/1/der") if registered => {
            let item = r#"<DER href="/edev/1/der/1"><DERAvailabilityLink href="/edev/1/der/1/dera"/><DERCapabilityLink href="/edev/1/der/1/dercap"/><DERSettingsLink href="/edev/1/der/1/derg"/><DERStatusLink href="/edev/1/der/1/ders"/></DER>"#.to_string();
            ok(list(
                "DERList",
                "/edev/1/der",
                Some(s.der_list_poll_s),
                &[item],
                query,
                (s.default_page_limit, s.max_page_limit),
            ))
        }
        ("GET", "/edev/1/lel") if registered => ok(list(
            "LogEventList",
            "/edev/1/lel",
            None,
            &[],
            query,
            (s.default_page_limit, s.max_page_limit),
        )),
        ("GET", "/mup") => {
            let items: Vec<String> = state
                .mups
                .iter()
                .map(|(id, posted)| mup_xml(*id, posted, &s, false))
                .collect();
            ok(list(
                "MirrorUsagePointList",
                "/mup",
                Some(s.mup_list_poll_s),
                &items,
                query,
                (10, s.max_page_limit),
            ))
        }
        ("POST", "/mup") => {
            let mrid = element_text(body, "mRID").unwrap_or_default();
            // Same mRID again: the server hands back the existing MUP (2030.5 10.10.4.3).
            let existing = state
                .mups
                .iter()
                .find(|(_, b)| element_text(b, "mRID").as_deref() == Some(mrid.as_str()))
                .map(|(id, _)| *id);
            let id = match existing {
                Some(id) => id,
                None => {
                    let id = state.next_mup_id;
                    state.next_mup_id += 1;
                    state.mups.push((id, body.to_string()));
                    id
                }
            };
            Reply {
                status: 201,
                body: String::new(),
                location: Some(format!("/mup/{id}")),
                retry_after_s: None,
            }
        }
        ("GET", p) if p.starts_with("/mup/") => {
            let id: u32 = p["/mup/".len()..].parse().unwrap_or(0);
            match state.mups.iter().find(|(i, _)| *i == id) {
                Some((id, posted)) => ok(mup_xml(*id, posted, &s, true)),
                None => status(404),
            }
        }
        ("POST", p) if p.starts_with("/mup/") => {
            let id: u32 = p["/mup/".len()..].parse().unwrap_or(0);
            if state.mups.iter().any(|(i, _)| *i == id) {
                status(201)
            } else {
                status(404)
            }
        }
        // LogEvents are taken as the reference server does: 201 with a Location.
        ("POST", "/edev/1/lel") if registered => Reply {
            status: 201,
            body: String::new(),
            location: Some(format!("/edev/1/lel/{}", state.requests.len())),
            retry_after_s: None,
        },
        // Subscriptions: 201 with the new Subscription's Location (2030.5 5.5); the
        // Subscription is kept until DELETEd.
        ("POST", "/edev/1/sub") if registered && s.subscription_list => {
            let id = state.requests.len();
            state.subs.push((id, body.to_string()));
            Reply {
                status: 201,
                body: String::new(),
                location: Some(format!("/edev/1/sub/{id}")),
                retry_after_s: None,
            }
        }
        ("GET", "/edev/1/sub") if registered && s.subscription_list => {
            let items: Vec<String> = state
                .subs
                .iter()
                .map(|(id, b)| {
                    format!(
                        r#"<Subscription href="/edev/1/sub/{id}">{}</Subscription>"#,
                        b.split_once("<Subscription")
                            .and_then(|(_, rest)| rest.split_once('>'))
                            .and_then(|(_, rest)| rest.rsplit_once("</Subscription>"))
                            .map(|(inner, _)| inner)
                            .unwrap_or_default()
                    )
                })
                .collect();
            ok(list(
                "SubscriptionList",
                "/edev/1/sub",
                None,
                &items,
                query,
                (10, s.max_page_limit),
            ))
        }
        ("DELETE", p) if p.starts_with("/edev/1/sub/") && s.subscription_list => {
            let id: usize = p["/edev/1/sub/".len()..].parse().unwrap_or(usize::MAX);
            let before = state.subs.len();
            state.subs.retain(|(i, _)| *i != id);
            status(if state.subs.len() < before { 204 } else { 404 })
        }
        ("POST", "/edev/1/rsps/site_control/rsp") => Reply {
            status: 201,
            body: String::new(),
            location: Some(format!(
                "/edev/1/rsps/site_control/rsp/{}",
                state.requests.len()
            )),
            retry_after_s: None,
        },
        ("PUT", p)
            if registered
                && matches!(
                    p,
                    "/edev/1/der/1/dercap"
                        | "/edev/1/der/1/derg"
                        | "/edev/1/der/1/ders"
                        | "/edev/1/der/1/dera"
                        | "/edev/1/cp"
                ) =>
        {
            if p == "/edev/1/cp" && !s.connection_point_link {
                return status(404);
            }
            state
                .puts
                .entry(p.to_string())
                .or_default()
                .push(body.to_string());
            status(204)
        }
        ("GET", p) if registered => program_resource(&s, p, query).unwrap_or_else(|| status(404)),
        _ => status(404),
    }
}

/// The first `<tag>...</tag>` text in `xml` (good enough for the bodies csipd sends).
pub fn element_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let (_, rest) = xml.split_once(&open)?;
    let (text, _) = rest.split_once(&close)?;
    Some(text.to_string())
}

fn mup_xml(id: u32, posted: &str, s: &Scenario, top: bool) -> String {
    let ns = if top {
        format!(" {XMLNS}")
    } else {
        String::new()
    };
    format!(
        r#"<MirrorUsagePoint{ns} href="/mup/{id}"><mRID>{}</mRID><roleFlags>{}</roleFlags><serviceCategoryKind>0</serviceCategoryKind><status>1</status><deviceLFDI>{}</deviceLFDI><postRate>{}</postRate></MirrorUsagePoint>"#,
        element_text(posted, "mRID").unwrap_or_default(),
        element_text(posted, "roleFlags").unwrap_or_else(|| "00".into()),
        element_text(posted, "deviceLFDI").unwrap_or_default(),
        s.mup_post_s
    )
}

fn own_edev(s: &Scenario) -> String {
    let rg = if s.registration_link {
        r#"<RegistrationLink href="/edev/1/rg"/>"#
    } else {
        ""
    };
    let cp = if s.connection_point_link {
        r#"<csipaus:ConnectionPointLink href="/edev/1/cp"/>"#
    } else {
        ""
    };
    let sub = if s.subscription_list {
        r#"<SubscriptionListLink href="/edev/1/sub" all="0"/>"#
    } else {
        ""
    };
    format!(
        r#"<EndDevice href="/edev/1"><DERListLink href="/edev/1/der" all="1"/><lFDI>{}</lFDI><LogEventListLink href="/edev/1/lel" all="0"/><sFDI>{}</sFDI><changedTime>1700000000</changedTime><enabled>true</enabled><FunctionSetAssignmentsListLink href="/edev/1/fsa" all="{}"/>{rg}{sub}{cp}</EndDevice>"#,
        s.lfdi,
        s.sfdi,
        s.fsas.len()
    )
}

/// `/edev/1/fsa/{f}/derp`, `/edev/1/derp/{n}`, `/edev/1/derp/{n}/derc`, `.../dderc`, `.../dc`.
fn program_resource(s: &Scenario, path: &str, query: &str) -> Option<Reply> {
    let all = programs(s);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["edev", "1", "fsa", f, "derp"] => {
            let f: usize = f.parse().ok()?;
            if f == 0 || f > s.fsas.len() {
                return None;
            }
            let items: Vec<String> = all
                .iter()
                .filter(|(ff, _, _)| *ff == f)
                .map(|(_, n, p)| program_xml(*n, p, false))
                .collect();
            Some(ok(list(
                "DERProgramList",
                path,
                Some(s.derp_list_poll_s),
                &items,
                query,
                (s.default_page_limit, s.max_page_limit),
            )))
        }
        ["edev", "1", "derp", n] => {
            let n: usize = n.parse().ok()?;
            let (_, _, p) = all.iter().find(|(_, nn, _)| *nn == n)?;
            Some(ok(program_xml(n, p, true)))
        }
        ["edev", "1", "derp", n, "derc"] => {
            let n: usize = n.parse().ok()?;
            let (_, _, p) = all.iter().find(|(_, nn, _)| *nn == n)?;
            let items: Vec<String> = p.controls.iter().map(control_xml).collect();
            Some(ok(list(
                "DERControlList",
                path,
                None,
                &items,
                query,
                (s.default_page_limit, s.max_page_limit),
            )))
        }
        ["edev", "1", "derp", n, "dderc"] => {
            let n: usize = n.parse().ok()?;
            let (_, _, p) = all.iter().find(|(_, nn, _)| *nn == n)?;
            let grad = p
                .set_grad_w
                .map(|g| format!("<setGradW>{g}</setGradW>"))
                .unwrap_or_default();
            Some(ok(format!(
                r#"<DefaultDERControl {XMLNS} href="{path}"><mRID>D{n:031X}</mRID><description>default</description><DERControlBase>{}{}{}{}</DERControlBase>{}{grad}</DefaultDERControl>"#,
                power("opModImpLimW", p.default_imp_lim_w),
                power("opModExpLimW", p.default_exp_lim_w),
                power("opModGenLimW", p.default_gen_lim_w),
                power("opModLoadLimW", p.default_load_lim_w),
                p.default_set_es
            )))
        }
        ["edev", "1", "derp", n, "dc"] => {
            let n: usize = n.parse().ok()?;
            let (_, _, p) = all.iter().find(|(_, nn, _)| *nn == n)?;
            Some(ok(list(
                "DERCurveList",
                path,
                None,
                &p.curves,
                query,
                (s.default_page_limit, s.max_page_limit),
            )))
        }
        _ => None,
    }
}

fn program_xml(n: usize, p: &Program, top: bool) -> String {
    let ns = if top {
        format!(" {XMLNS}")
    } else {
        String::new()
    };
    format!(
        r#"<DERProgram{ns} href="/edev/1/derp/{n}"><mRID>A{n:031X}</mRID><description>program {n}</description><DefaultDERControlLink href="/edev/1/derp/{n}/dderc"/><DERControlListLink href="/edev/1/derp/{n}/derc" all="{}"/><DERCurveListLink href="/edev/1/derp/{n}/dc" all="{}"/><primacy>{}</primacy></DERProgram>"#,
        p.controls.len(),
        p.curves.len(),
        p.primacy
    )
}

fn control_xml(c: &Control) -> String {
    let energize = c
        .connect
        .map(|e| format!("<opModConnect>{e}</opModConnect>"))
        .unwrap_or_default()
        + &c.energize
            .map(|e| format!("<opModEnergize>{e}</opModEnergize>"))
            .unwrap_or_default()
        + &c.fixed_pf_inject
            .map(|(d, e)| {
                format!(
                    "<opModFixedPFInjectW><displacement>{d}</displacement><excitation>{e}</excitation><multiplier>-2</multiplier></opModFixedPFInjectW>"
                )
            })
            .unwrap_or_default()
        + &c.fixed_w
            .map(|w| format!("<opModFixedW>{w}</opModFixedW>"))
            .unwrap_or_default()
        + &c.freq_droop
            .map(|(dbof, dbuf, kof, kuf, t)| {
                format!(
                    "<opModFreqDroop><dBOF>{dbof}</dBOF><dBUF>{dbuf}</dBUF><kOF>{kof}</kOF><kUF>{kuf}</kUF><openLoopTms>{t}</openLoopTms></opModFreqDroop>"
                )
            })
            .unwrap_or_default()
        + &c.freq_watt
            .as_ref()
            .map(|href| format!(r#"<opModFreqWatt href="{href}"/>"#))
            .unwrap_or_default()
        + &c.target_var
            .map(|(v, m)| {
                format!(
                    "<opModTargetVar><multiplier>{m}</multiplier><value>{v}</value></opModTargetVar>"
                )
            })
            .unwrap_or_default()
        + &c.volt_var
            .as_ref()
            .map(|href| format!(r#"<opModVoltVar href="{href}"/>"#))
            .unwrap_or_default()
        + &c.watt_pf
            .as_ref()
            .map(|href| format!(r#"<opModWattPF href="{href}"/>"#))
            .unwrap_or_default()
        + &c.watt_var
            .as_ref()
            .map(|href| format!(r#"<opModWattVar href="{href}"/>"#))
            .unwrap_or_default();
    format!(
        r#"<DERControl href="/edev/1/derc/{mrid}" replyTo="/edev/1/rsps/site_control/rsp" responseRequired="{rr:02X}"><mRID>{mrid}</mRID><description>{mrid}</description><creationTime>{ct}</creationTime><EventStatus><currentStatus>{st}</currentStatus><dateTime>{ct}</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus><interval><duration>{d}</duration><start>{start}</start></interval><DERControlBase>{energize}{imp}{exp}{gen}{load}{storage}</DERControlBase></DERControl>"#,
        mrid = c.mrid,
        rr = c.response_required,
        ct = c.creation_time,
        st = c.status,
        d = c.duration_s,
        start = c.start,
        imp = power("opModImpLimW", c.imp_lim_w),
        exp = power("opModExpLimW", c.exp_lim_w),
        gen = power("opModGenLimW", c.gen_lim_w),
        load = power("opModLoadLimW", c.load_lim_w),
        storage = power("opModStorageTargetW", c.storage_target_w),
    )
}

/// A volt-var DERCurve (curveType 11) at `href`: the standard's 4-point example shape,
/// x in tenths of a percent of VRef (xMultiplier -1), y in % of setMaxVar (yRefType 2).
/// A 4-point watt-var DERCurve (curveType 14): x in % of setMaxW (signed), y in % of
/// setMaxVar (yRefType 2).
pub fn watt_var_curve_xml(href: &str, mrid_tag: &str) -> String {
    let points: String = [(-100, 30), (0, 0), (50, 0), (100, -44)]
        .iter()
        .map(|(x, y)| format!("<CurveData><xvalue>{x}</xvalue><yvalue>{y}</yvalue></CurveData>"))
        .collect();
    format!(
        r#"<DERCurve href="{href}"><mRID>{}</mRID><description>watt-var</description><creationTime>1700000000</creationTime>{points}<curveType>14</curveType><xMultiplier>0</xMultiplier><yMultiplier>0</yMultiplier><yRefType>2</yRefType></DERCurve>"#,
        mrid_of(mrid_tag)
    )
}

/// A 3-point watt-PF DERCurve (curveType 13): x in % of setMaxW, y a power factor in
/// hundredths with each point's excitation (the last absorbing vars).
pub fn watt_pf_curve_xml(href: &str, mrid_tag: &str) -> String {
    let points: String = [(0, 100, false), (50, 100, false), (100, 90, true)]
        .iter()
        .map(|(x, y, e)| {
            format!(
                "<CurveData><excitation>{e}</excitation><xvalue>{x}</xvalue><yvalue>{y}</yvalue></CurveData>"
            )
        })
        .collect();
    format!(
        r#"<DERCurve href="{href}"><mRID>{}</mRID><description>watt-PF</description><creationTime>1700000000</creationTime>{points}<curveType>13</curveType><xMultiplier>0</xMultiplier><yMultiplier>-2</yMultiplier><yRefType>0</yRefType></DERCurve>"#,
        mrid_of(mrid_tag)
    )
}

/// A freq-watt DERCurve (curveType 0): x in hundredths of a Hz (xMultiplier -2), y in
/// % of setMaxW; `points` as (x, y).
pub fn freq_watt_curve_xml(href: &str, mrid_tag: &str, points: &[(u32, i32)]) -> String {
    let points: String = points
        .iter()
        .map(|(x, y)| format!("<CurveData><xvalue>{x}</xvalue><yvalue>{y}</yvalue></CurveData>"))
        .collect();
    format!(
        r#"<DERCurve href="{href}"><mRID>{}</mRID><description>freq-watt</description><creationTime>1700000000</creationTime>{points}<curveType>0</curveType><xMultiplier>-2</xMultiplier><yMultiplier>0</yMultiplier><yRefType>1</yRefType></DERCurve>"#,
        mrid_of(mrid_tag)
    )
}

pub fn volt_var_curve_xml(href: &str, mrid_tag: &str) -> String {
    let points: String = [(904, 44), (956, 0), (1043, 0), (1100, -60)]
        .iter()
        .map(|(x, y)| format!("<CurveData><xvalue>{x}</xvalue><yvalue>{y}</yvalue></CurveData>"))
        .collect();
    format!(
        r#"<DERCurve href="{href}"><mRID>{}</mRID><description>volt-var</description><creationTime>1700000000</creationTime>{points}<curveType>11</curveType><xMultiplier>-1</xMultiplier><yMultiplier>0</yMultiplier><yRefType>2</yRefType></DERCurve>"#,
        mrid_of(mrid_tag)
    )
}

/// Validates every PUT/POST body csipd sent; returns the failures (method, path, error).
pub fn invalid_bodies(server: &ScriptedServer) -> Vec<(String, String, String)> {
    server
        .requests()
        .into_iter()
        .filter(|r| (r.method == "PUT" || r.method == "POST") && !r.body.is_empty())
        .filter_map(|r| schema::schema_problem(&r.body).map(|err| (r.method, r.path, err)))
        .collect()
}
