//! CSIP-AUS v1.3 service discovery and version negotiation (issue 22), played as the
//! certification procedure SDVN-01 describes it (`cactus-test-definitions`,
//! `client/procedures/SDVN-01.yaml`): the server publishes `/.well-known/csipaus` with
//! an unsupported version (v99.99 → `$randuri_1`), a malformed one (version "null" →
//! `$randuri_2`), a v1.2 entry with no DeviceCapability path, and v1.3 → `$randuri_3`,
//! which is proxied to the normal `/dcap`. The procedure fails a client that GETs
//! `/dcap` directly, `$randuri_1` or `$randuri_2`, and wants a POST /edev and a PUT of
//! the ConnectionPoint (checked for its csipaus namespace and LFDI).
//!
//! The harness's runner is not installable as a peer here, so the hand-scripted
//! CSIP-AUS server (tests/common/csip_server.rs) serves the tree and a small router in
//! this file adds the well-known document and the proxy route, as the runner's
//! `create-wellknown-route` and `add-proxy-route` actions do. The engine tests run on a
//! virtual clock; the last test puts the same router on a socket for the `csipd
//! discover` binary (it waits for the process, never for a fixed time).

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use std::time::Duration;

use csip_memory::{LFDI, Site, T0_S, engine_config, scenario};
use csip_server::{Reply, Scenario, ScriptedServer, element_text};
use csipd::clock::Now;
use csipd::csip::{ConnectionState, Engine, EngineConfig, Event};
use csipd::http::{HttpError, Method, Response, StatusError};

const RANDURI_1: &str = "/rnd/7f3a9c/dcap";
const RANDURI_2: &str = "/rnd/b41e02/dcap";
const RANDURI_3: &str = "/rnd/5d9e11/dcap";
/// Where the v1.3 DeviceCapability moves in the relocation test.
const RANDURI_4: &str = "/rnd/0c77aa/dcap";

/// The document SDVN-01's preconditions build (JSON object keys are strings, so the
/// version "null" is the key `"null"`).
fn sdvn_01_document() -> String {
    format!(
        r#"{{"supportedSchemaVersions": {{
            "https://csipaus.org/ns/v99.99": {{"dcap": ["{RANDURI_1}"]}},
            "null": {{"dcap": ["{RANDURI_2}"]}},
            "https://csipaus.org/ns/v1.2": {{"dcap": []}},
            "https://csipaus.org/ns/v1.3": {{"dcap": ["{RANDURI_3}"]}}}}}}"#
    )
}

/// The scripted server behind the runner's well-known and proxy routes.
struct Router {
    server: ScriptedServer,
    /// Status and body of `/.well-known/csipaus`.
    well_known: (u16, String),
    /// Every request as csipd sent it (method, path without query, virtual ms), before
    /// any proxying.
    seen: Vec<(String, String, u64)>,
    /// Where the v1.3 DeviceCapability is served (the runner's proxy route); any other
    /// RANDURI answers 404.
    dcap_route: &'static str,
}

impl Router {
    fn exchange(&mut self, method: &str, path: &str, body: &str, now_s: i64, at_ms: u64) -> Reply {
        // Recorded without the list paging query.
        let bare = path.split('?').next().unwrap_or(path);
        self.seen
            .push((method.to_string(), bare.to_string(), at_ms));
        let reply = |status: u16, body: String| Reply {
            status,
            body,
            location: None,
            retry_after_s: None,
        };
        match bare {
            "/.well-known/csipaus" => reply(self.well_known.0, self.well_known.1.clone()),
            route if route == self.dcap_route => {
                self.server.exchange(method, "/dcap", body, now_s, at_ms)
            }
            // The runner would end the test (FAIL-*) on 1 and 2: answer as a plain
            // server would.
            RANDURI_1 | RANDURI_2 | RANDURI_3 | RANDURI_4 => reply(404, String::new()),
            _ => self.server.exchange(method, path, body, now_s, at_ms),
        }
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.seen
            .iter()
            .filter(|(m, p, _)| m == method && p == path)
            .count()
    }
}

/// The engine and the router on a virtual clock (the loop of csip_memory's Harness,
/// with the router in front of the server).
struct Sdvn {
    engine: Engine,
    router: Router,
    site: Site,
    now: Now,
    next_sample_ms: u64,
}

impl Sdvn {
    fn new(config: EngineConfig, scenario: Scenario, well_known: (u16, String)) -> Sdvn {
        let now = Now {
            mono_ms: 0,
            utc_ms: T0_S * 1000,
        };
        Sdvn {
            engine: Engine::new(config, now).expect("engine config"),
            router: Router {
                server: ScriptedServer::in_memory(scenario),
                well_known,
                seen: Vec::new(),
                dcap_route: RANDURI_3,
            },
            site: Site::new(),
            now,
            next_sample_ms: 0,
        }
    }

    fn answer(reply: Reply, method: Method, href: &str) -> Result<Response, HttpError> {
        match reply.status {
            status @ 100..=399 => Ok(Response {
                status,
                reason: String::new(),
                headers: reply
                    .location
                    .map(|l| vec![("Location".to_string(), l)])
                    .unwrap_or_default(),
                body: reply.body.into_bytes(),
            }),
            status => Err(HttpError::Status(StatusError {
                method,
                path: href.to_string(),
                status,
                reason: "scripted".into(),
                retry_after: reply
                    .retry_after_s
                    .map(|s| Duration::from_secs(u64::from(s))),
                headers: Vec::new(),
                body: reply.body.into_bytes(),
            })),
        }
    }

    /// Runs until `done` holds or `max_secs` virtual seconds pass; returns whether it held.
    fn run_until(&mut self, max_secs: u64, done: impl Fn(&Sdvn) -> bool) -> bool {
        let end_ms = self.now.mono_ms + max_secs * 1000;
        loop {
            if self.now.mono_ms >= self.next_sample_ms {
                self.engine
                    .handle_measurements(self.site.measurement(), self.now);
                self.next_sample_ms += 1000;
            }
            if self
                .engine
                .poll_timeout()
                .is_some_and(|t| t <= self.now.mono_ms)
            {
                self.engine.handle_timeout(self.now);
            }
            while let Some(request) = self.engine.poll_request() {
                let href = csipd::csip::context::href_path(&request.href).to_string();
                let reply = self.router.exchange(
                    request.method.as_str(),
                    &href,
                    request.body.as_deref().unwrap_or(""),
                    self.now.utc_s(),
                    self.now.mono_ms,
                );
                let result = Sdvn::answer(reply, request.method, &href);
                self.engine.handle_response(request.id, result, self.now);
            }
            while let Some(event) = self.engine.poll_event() {
                if let Event::Status(_) = event {}
            }
            if done(self) {
                return true;
            }
            if self.now.mono_ms >= end_ms {
                return false;
            }
            let next = self
                .engine
                .poll_timeout()
                .map_or(self.next_sample_ms, |t| t.min(self.next_sample_ms))
                .clamp(self.now.mono_ms + 1, end_ms);
            self.now = self.now.plus_ms(next - self.now.mono_ms);
        }
    }

    fn run_for(&mut self, secs: u64) {
        self.run_until(secs, |_| false);
    }
}

/// SDVN-01's client: in-band registration with an NMI, only a server URL configured.
fn discovering_config() -> EngineConfig {
    let mut config = engine_config();
    config.service_discovery = true;
    config.dcap_path = String::new();
    config.in_band_registration = true;
    config.nmi = Some("4102345678".into());
    // Configured for the v1.2 namespace: what the server offers decides.
    config.csipaus_v1_3 = false;
    config
}

fn unregistered() -> Scenario {
    let mut sc = scenario();
    sc.preregistered = false;
    sc
}

/// No request to a DeviceCapability SDVN-01 forbids.
fn assert_never_forbidden(router: &Router) {
    for path in ["/dcap", RANDURI_1, RANDURI_2] {
        let hits: Vec<_> = router.seen.iter().filter(|(_, p, _)| p == path).collect();
        assert!(hits.is_empty(), "{path} requested: {hits:?}");
    }
}

#[test]
fn sdvn_01_well_known_then_only_the_supported_versions_dcap() {
    let mut t = Sdvn::new(
        discovering_config(),
        unregistered(),
        (200, sdvn_01_document()),
    );
    // Before discovery chose, no version is claimed.
    assert_eq!(t.engine.status().csipaus_version, None);
    // GET-DCAP, POST-EDEV, PUT-CP in that order, as the procedure's steps enable each other.
    assert!(
        t.run_until(120, |t| t.router.count("PUT", "/edev/1/cp") > 0),
        "no PUT of the ConnectionPoint: {:?}",
        t.router.seen
    );
    let seen = &t.router.seen;
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str()),
        ("GET", "/.well-known/csipaus"),
        "the well-known document comes first"
    );
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        ("GET", RANDURI_3),
        "then the v1.3 DeviceCapability"
    );
    let position = |method: &str, path: &str| {
        seen.iter()
            .position(|(m, p, _)| m == method && p == path)
            .unwrap_or_else(|| panic!("no {method} {path}: {seen:?}"))
    };
    assert!(position("GET", RANDURI_3) < position("POST", "/edev"));
    assert!(position("POST", "/edev") < position("PUT", "/edev/1/cp"));
    assert_never_forbidden(&t.router);

    // end-device-contents: the LFDI, and the v1.3 namespace on what csipd writes.
    let post = t.router.server.requests_to("POST", "/edev");
    assert_eq!(element_text(&post[0].body, "lFDI").as_deref(), Some(LFDI));
    let cp = t.router.server.requests_to("PUT", "/edev/1/cp");
    assert!(
        cp[0].body.contains("\"https://csipaus.org/ns/v1.3\""),
        "ConnectionPoint not in the v1.3 namespace: {}",
        cp[0].body
    );
    assert!(cp[0].body.contains("4102345678"), "{}", cp[0].body);
    let status = t.engine.status();
    assert_eq!(status.csipaus_version, Some("v1.3"));
    assert_eq!(
        t.engine.well_known_choice().map(|c| c.dcap_path.as_str()),
        Some(RANDURI_3)
    );

    // Polling on (the DeviceCapability every 2 s here): still only the chosen path, and
    // the document is not read again.
    t.run_for(180);
    assert!(t.router.count("GET", RANDURI_3) > 10, "dcap not re-polled");
    assert_eq!(t.router.count("GET", "/.well-known/csipaus"), 1);
    assert_never_forbidden(&t.router);
    assert_eq!(t.engine.status().state, ConnectionState::Polling);
}

#[test]
fn a_server_without_the_document_is_an_error_retried_on_backoff_never_a_guess() {
    // A v1.2 server: 404. Nothing else is requested, the status says why, and the
    // document is retried on the poller's backoff (2 s doubling, at most 60 s).
    let mut t = Sdvn::new(discovering_config(), unregistered(), (404, String::new()));
    t.run_for(300);
    assert!(
        t.router
            .seen
            .iter()
            .all(|(m, p, _)| m == "GET" && p == "/.well-known/csipaus"),
        "{:?}",
        t.router.seen
    );
    let at: Vec<u64> = t.router.seen.iter().map(|(_, _, at)| *at / 1000).collect();
    assert_eq!(at[..6], [0, 2, 6, 14, 30, 62], "backoff: {at:?}");
    assert!(at.windows(2).all(|w| w[1] - w[0] <= 60), "{at:?}");
    let status = t.engine.status();
    assert_eq!(status.state, ConnectionState::Discovering);
    assert_eq!(status.csipaus_version, None);
    let error = status.last_error.expect("an error in the status");
    assert!(
        error.contains("/.well-known/csipaus")
            && error.contains("404")
            && error.contains("dcap_url"),
        "{error}"
    );
    let poll = &status.polls[0];
    assert_eq!(poll.kind, "WellKnownCsipaus");
    assert_eq!(poll.last_error.as_deref(), Some(error.as_str()));

    // The server publishes the document: the next retry finds it and the walk starts.
    t.router.well_known = (200, sdvn_01_document());
    assert!(t.run_until(120, |t| t.router.count("POST", "/edev") > 0));
    assert_never_forbidden(&t.router);
    assert_eq!(t.engine.status().csipaus_version, Some("v1.3"));
}

#[test]
fn no_supported_version_is_an_error_naming_each_entry() {
    let doc = format!(
        r#"{{"supportedSchemaVersions": {{
            "https://csipaus.org/ns/v99.99": {{"dcap": ["{RANDURI_1}"]}},
            "https://csipaus.org/ns/v1.3": {{"dcap": ["https://elsewhere.example{RANDURI_2}"]}}}}}}"#
    );
    let mut t = Sdvn::new(discovering_config(), unregistered(), (200, doc));
    t.run_for(120);
    assert_never_forbidden(&t.router);
    assert!(
        t.router.count("GET", "/.well-known/csipaus") >= 3,
        "retried"
    );
    let status = t.engine.status();
    assert_eq!(status.csipaus_version, None);
    let error = status.last_error.expect("error");
    assert!(
        error.contains("no supported CSIP-AUS version offered")
            && error.contains("v99.99: not supported")
            && error.contains("on another host"),
        "{error}"
    );
}

#[test]
fn a_configured_dcap_url_skips_service_discovery() {
    // The v1.2 way: the DeviceCapability path is configured; the document is not read.
    let mut config = engine_config();
    config.csipaus_v1_3 = true;
    let mut t = Sdvn::new(config, scenario(), (200, sdvn_01_document()));
    assert!(
        t.run_until(60, |t| t.router.count("GET", "/edev/1/fsa") > 0),
        "{:?} {:?}",
        t.router.seen.iter().take(12).collect::<Vec<_>>(),
        t.engine.status()
    );
    assert_eq!(t.router.count("GET", "/.well-known/csipaus"), 0);
    assert_eq!(t.router.seen[0].1, "/dcap");
    assert_eq!(t.engine.status().csipaus_version, Some("v1.3"));
}

/// The router on a real socket (plain HTTP, one request per connection), for the
/// `csipd discover` binary: the SDVN-01 well-known document and proxy route in front
/// of the scripted server's tree.
fn serve_on_socket(router: std::sync::Arc<std::sync::Mutex<Router>>) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, target) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let now_s = csip_server::now_s();
            let reply = router.lock().unwrap_or_else(|e| e.into_inner()).exchange(
                &method,
                &target,
                &String::from_utf8_lossy(&body),
                now_s,
                0,
            );
            let kind = if target.starts_with("/.well-known/") {
                "application/json"
            } else {
                "application/sep+xml"
            };
            let location = reply
                .location
                .map(|l| format!("Location: {l}\r\n"))
                .unwrap_or_default();
            let _ = write!(
                stream,
                "HTTP/1.1 {} Scripted\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n{}",
                reply.status,
                reply.body.len(),
                reply.body
            );
        }
    });
    base
}

fn make_cert(dir: &std::path::Path) -> (String, String) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .args(["-subj", "/CN=csipd-sdvn-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl not found: run `bash tests/setup.sh`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// `csipd discover` with only `server_url`: over real HTTP it reads the well-known
/// document, prints the version chosen and every entry skipped with why, walks from the
/// v1.3 DeviceCapability, and requests no forbidden path.
#[test]
fn discover_cli_shows_the_choice_and_walks_from_it() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tmp")
        .join(format!("csip-sdvn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let (cert, key) = make_cert(&dir);
    let identity =
        csipd::sep2::identity_from_pem(&std::fs::read(&cert).expect("cert")).expect("identity");
    let scenario = Scenario {
        lfdi: identity.lfdi.clone(),
        sfdi: identity.sfdi,
        ..Scenario::default()
    };
    let router = std::sync::Arc::new(std::sync::Mutex::new(Router {
        server: ScriptedServer::in_memory(scenario),
        well_known: (200, sdvn_01_document()),
        seen: Vec::new(),
        dcap_route: RANDURI_3,
    }));
    let base = serve_on_socket(router.clone());
    let config = dir.join("csipd");
    let write_config = |url: &str| {
        std::fs::write(
            &config,
            format!(
                "config server 'utility'\n\toption server_url '{url}'\n\toption allow_plain_http '1'\n\toption cert '{cert}'\n\toption key '{key}'\n\toption pen '12345'\n\toption registration_pin '111115'\n"
            ),
        )
        .expect("write config");
    };
    write_config(&base);
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_csipd"))
            .args(["discover", "--config"])
            .arg(&config)
            .output()
            .expect("run csipd")
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!(
            "csipaus  service discovery {base}/.well-known/csipaus\n  using v1.3 \
             (https://csipaus.org/ns/v1.3), DeviceCapability {RANDURI_3}\n"
        )),
        "{text}"
    );
    for skipped in [
        "  skipped https://csipaus.org/ns/v1.2: malformed (the \"dcap\" list is empty)\n",
        "  skipped https://csipaus.org/ns/v99.99: not supported\n",
        "  skipped null: malformed (the version is not a URI)\n",
    ] {
        assert!(text.contains(skipped), "{skipped:?} not in:\n{text}");
    }
    assert!(text.contains(&format!("dcap     {RANDURI_3}")), "{text}");
    assert!(text.contains("this device /edev/1"), "{text}");
    {
        let router = router.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(router.seen[0].1, "/.well-known/csipaus");
        assert_eq!(router.seen[1].1, RANDURI_3);
        assert_never_forbidden(&router);
    }

    // A v1.2 server without the document: exit 1, the reason, nothing else requested.
    {
        let mut router = router.lock().unwrap_or_else(|e| e.into_inner());
        router.well_known = (404, "<html>Not Found</html>".into());
        router.seen.clear();
    }
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("  no version chosen"), "{text}");
    assert!(
        text.contains("error    WellKnownCsipaus /.well-known/csipaus: the server answered 404"),
        "{text}"
    );
    let router = router.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        router
            .seen
            .iter()
            .all(|(_, p, _)| p == "/.well-known/csipaus"),
        "{:?}",
        router.seen
    );
}

/// `csipd check-config` on `server_url`: a path is an error at its line (exit 2); beside
/// a `dcap_url` it is a warning (exit 0); an origin alone passes without a word about it.
#[test]
fn check_config_reports_server_url_at_its_line() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tmp")
        .join(format!("csip-sdvn-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let (cert, key) = make_cert(&dir);
    let check = |name: &str, server: &str| {
        let file = dir.join(name);
        std::fs::write(
            &file,
            format!(
                "config server 'utility'\n{server}\toption cert '{cert}'\n\toption key '{key}'\n\toption nmi '4102345678'\n"
            ),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_csipd"))
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run csipd");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text, file.display().to_string())
    };
    let (code, text, file) = check(
        "with-path",
        "\toption server_url 'https://csip.example.com.au/dcap'\n",
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "{file}:2: error: option 'server_url': \"https://csip.example.com.au/dcap\" has a path"
        )),
        "{text}"
    );
    let (code, text, file) = check(
        "both",
        "\toption dcap_url 'https://csip.example.com.au/dcap'\n\toption server_url 'https://csip.example.com.au'\n",
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "{file}:3: warning: server_url is ignored because dcap_url is set"
        )),
        "{text}"
    );
    let (code, text, _) = check(
        "origin",
        "\toption server_url 'https://csip.example.com.au:8443'\n",
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("server_url"), "{text}");
}

/// The DeviceCapability moves (the old path answers 404, the document names a new one):
/// csipd asks the document again and carries on from the new path, still never touching
/// an unsupported or malformed version's path.
#[test]
fn a_discovered_dcap_that_is_gone_is_looked_up_again() {
    let mut t = Sdvn::new(
        discovering_config(),
        unregistered(),
        (200, sdvn_01_document()),
    );
    assert!(t.run_until(60, |t| t.router.count("PUT", "/edev/1/cp") > 0));
    t.router.dcap_route = RANDURI_4;
    t.router.well_known.1 = sdvn_01_document().replace(RANDURI_3, RANDURI_4);
    let moved_at = t.now.mono_ms;
    assert!(
        t.run_until(120, |t| t.router.count("GET", RANDURI_4) >= 3),
        "{:?}",
        t.router.seen.iter().rev().take(10).collect::<Vec<_>>()
    );
    assert_eq!(t.router.count("GET", "/.well-known/csipaus"), 2);
    let after: Vec<&str> = t
        .router
        .seen
        .iter()
        .filter(|(_, p, at)| *at > moved_at && (p.contains("dcap") || p.contains("well-known")))
        .map(|(_, p, _)| p.as_str())
        .collect();
    assert_eq!(
        after[..3],
        [RANDURI_3, "/.well-known/csipaus", RANDURI_4],
        "the old path's 404, the document, the new path: {after:?}"
    );
    assert_eq!(
        after.iter().filter(|p| **p == RANDURI_3).count(),
        1,
        "the old path once (its 404), then no more: {after:?}"
    );
    assert_never_forbidden(&t.router);
    let status = t.engine.status();
    assert!(
        status.polls.iter().all(|p| p.href != RANDURI_3),
        "{status:?}"
    );
    assert_eq!(status.csipaus_version, Some("v1.3"));
    assert_eq!(status.state, ConnectionState::Polling);
}
