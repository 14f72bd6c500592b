//! `csipd run` killed with SIGKILL while it works against the hand-scripted CSIP-AUS
//! server (tests/common/csip_server.rs, plain HTTP lab mode) with csipd's simulated
//! site (`csipd demo --sim-only`):
//! - the harness's ALL-30 (power cycle during an active control): after the restart
//!   the utility limit is back from the store while the server still refuses every
//!   request, Received/Started are not sent again, Completed is sent exactly once;
//! - kill -9 at seeded random moments while the server hands out short events: the
//!   database always opens, every response issued (event mRID + status) reaches the
//!   server and ends accepted in the store's ledger (none lost to a kill between the
//!   ledger's write and the POST), and none is POSTed twice unless a kill fell in the
//!   few milliseconds between the server's 2xx and csipd's commit of it (then it is
//!   sent once more: at least once, never lost).
//!   `CSIPD_CRASH_ITERATIONS=100 cargo test --test runtime_crash kill_9 -- --nocapture`
//!   runs the 100 kills (275 s in a debug build on the 2-core CI machine; the
//!   default 20 take about 75 s); `CSIPD_CRASH_SEED` picks other kill moments.

#[path = "common/csip_server.rs"]
mod csip_server;
mod runtime_common;

use csip_server::{Control, Program, Scenario, ScriptedServer, element_text, now_s};
use runtime_common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const RSP_PATH: &str = "/edev/1/rsps/site_control/rsp";

/// A client certificate, the simulated site and the UCI config for `csipd run`.
struct Site {
    dir: PathBuf,
    config: String,
    lfdi: String,
    sfdi: u64,
    sim: Proc,
}

impl Site {
    fn new(name: &str) -> Site {
        let dir = temp_dir(name);
        let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-crash-test");
        let mut sim = spawn(&["demo", "--sim-only", "--seconds", "1800"]);
        let inverter_port = port_of(&sim.stdout_line("inverter: ", Duration::from_secs(30)));
        let meter_port = port_of(&sim.stdout_line("meter: ", Duration::from_secs(5)));
        let config = format!(
            "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'

config server 'utility'
\toption dcap_url '@URL@/dcap'
\toption cert '{cert}'
\toption key '{key}'
\toption allow_plain_http '1'
\toption pen '12345'
\toption nmi '4102345678'

config device 'inv1'
\toption role 'inverter'
\toption transport 'tcp'
\toption host '127.0.0.1'
\toption port '{inverter_port}'

config device 'meter'
\toption role 'meter'
\toption transport 'tcp'
\toption host '127.0.0.1'
\toption port '{meter_port}'
",
            d = dir.display(),
            cert = cert.display(),
            key = key.display(),
        );
        Site {
            dir,
            config,
            lfdi,
            sfdi,
            sim,
        }
    }

    /// Writes the config pointing at `server` and returns its path.
    fn config_for(&self, server: &ScriptedServer) -> String {
        let path = self.dir.join("csipd");
        std::fs::write(&path, self.config.replace("@URL@", &server.base_url)).expect("config");
        path.display().to_string()
    }
}

/// SIGKILL and reap.
fn kill_9(run: &mut Proc) {
    run.signal("KILL");
    let status = run.child.wait().expect("wait for csipd");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "csipd died of SIGKILL"
    );
    run.drain_stderr();
}

/// (event mRID, Response.status) of every response POSTed to the replyTo, in order.
fn responses(server: &ScriptedServer) -> Vec<(String, u8)> {
    server
        .requests_to("POST", RSP_PATH)
        .iter()
        .map(|r| {
            (
                element_text(&r.body, "subject").unwrap_or_default(),
                element_text(&r.body, "status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            )
        })
        .collect()
}

fn count(server: &ScriptedServer, mrid: &str, status: u8) -> usize {
    responses(server)
        .iter()
        .filter(|(m, s)| m == mrid && *s == status)
        .count()
}

/// Store trouble in a run's log: a database moved aside or not opened.
fn store_trouble(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            l.contains("moved aside")
                || l.contains("state store not available")
                || l.contains("telemetry not recorded")
        })
        .cloned()
        .collect()
}

#[test]
fn all_30_power_cycle_during_active_control() {
    let mut site = Site::new("runtime-crash-all30");
    let start = now_s() - 5;
    let mut event = Control::new("all30-exp-1500", start, 75);
    event.exp_lim_w = Some(1500);
    event.status = 1;
    event.response_required = 3; // Received and Started/Completed
    let mrid = event.mrid.clone();
    let server = ScriptedServer::start(Scenario {
        lfdi: site.lfdi.clone(),
        sfdi: site.sfdi,
        fsas: vec![vec![Program {
            default_exp_lim_w: Some(3000),
            default_imp_lim_w: None,
            controls: vec![event],
            ..Program::default()
        }]],
        ..Scenario::default()
    });
    let config = site.config_for(&server);

    let (mut run, url) = start_run(&config);
    wait_for(&url, Duration::from_secs(60), "event limit", |s| {
        export_limit(s) == Some((1500.0, "utility_event".to_string()))
    });
    assert!(
        server.wait_for(Duration::from_secs(30), |_| count(&server, &mrid, 2) == 1),
        "Started POSTed; responses: {:?}",
        responses(&server)
    );
    assert_eq!(count(&server, &mrid, 1), 1, "Received POSTed once");
    // Let the store's batched writes catch up a little, then pull the plug.
    std::thread::sleep(Duration::from_millis(300));
    kill_9(&mut run);
    let before = responses(&server);

    // The power comes back while the server refuses everything (503): whatever limit the
    // restarted csipd shows can only come from its store.
    server.force_status("*", 503, Some(1));
    let spawned = Instant::now();
    let (mut run, url) = start_run(&config);
    let s = wait_for(
        &url,
        Duration::from_secs(15),
        "a limit after restart",
        |s| export_limit(s).is_some_and(|(_, kind)| kind != "fail_safe"),
    );
    let first_limit_s = spawned.elapsed().as_secs_f64();
    assert_eq!(
        export_limit(&s),
        Some((1500.0, "utility_event".to_string())),
        "the event's limit is back from the store; status {s:#?}"
    );
    assert_ne!(
        s.utility.state,
        csipd::status::ConnectionState::Polling,
        "nothing was heard from the server yet"
    );
    let refused_meanwhile = server.requests().iter().filter(|r| r.at >= spawned).count();
    println!(
        "ALL-30: utility limit 1500 W back {first_limit_s:.2} s after the restart (spawn to status), \
         control cycle 1 s; {refused_meanwhile} requests answered 503 meanwhile"
    );
    assert!(
        store_trouble(&run.seen_stderr).is_empty(),
        "{:?}",
        run.seen_stderr
    );

    // The server answers again: csipd reconciles, sends nothing it already sent.
    server.clear_forced("*");
    wait_for(&url, Duration::from_secs(60), "polling again", |s| {
        s.utility.state == csipd::status::ConnectionState::Polling
    });
    assert_eq!(
        export_limit(&status(&url)),
        Some((1500.0, "utility_event".to_string()))
    );
    // The event ends at start + 75: Completed goes out once.
    let end_in = (start + 75 - now_s()).max(0) as u64;
    assert!(
        server.wait_for(Duration::from_secs(end_in + 30), |_| count(
            &server, &mrid, 3
        ) >= 1),
        "Completed POSTed after the event; responses: {:?}",
        responses(&server)
    );
    std::thread::sleep(Duration::from_secs(5));
    let after = responses(&server);
    println!("ALL-30 responses before the kill: {before:?}; in all: {after:?}");
    assert_eq!(count(&server, &mrid, 1), 1, "Received not sent again");
    assert_eq!(count(&server, &mrid, 2), 1, "Started not sent again");
    assert_eq!(count(&server, &mrid, 3), 1, "Completed sent exactly once");
    let s = status(&url);
    assert!(
        s.last_errors
            .iter()
            .all(|e| !e.message.contains("moved aside")),
        "{:?}",
        s.last_errors
    );
    assert_eq!(run.terminate(), Some(0));
    assert_eq!(site.sim.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&site.dir);
}

#[test]
fn a_response_issued_before_a_crash_is_delivered_after_the_restart() {
    // The previous run wrote Completed for an event into the ledger and died before
    // its POST; the server no longer lists the event (it ended while csipd was down).
    let mut site = Site::new("runtime-crash-pending");
    let server = server_with_default_limit(&site);
    let config = site.config_for(&server);
    let state_dir = site.dir.join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let issued_at = now_s() - 40;
    let completed = csipd::store::LedgerKey {
        event_mrid: "0A0B0C0D0E0F00000000000000012345".into(),
        status: 3,
    };
    {
        let (mut store, _) = csipd::store::Store::open(&state_dir, issued_at).expect("store");
        assert!(store.ledger_record(completed.clone(), Some(RSP_PATH), issued_at));
        store.flush(issued_at).expect("flush");
    }

    let (mut run, url) = start_run(&config);
    assert!(
        server.wait_for(Duration::from_secs(30), |_| !responses(&server).is_empty()),
        "the pending response was not sent"
    );
    wait_for(&url, Duration::from_secs(30), "polling", |s| {
        s.utility.state == csipd::status::ConnectionState::Polling
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(run.terminate(), Some(0));
    let posted = server.requests_to("POST", RSP_PATH);
    assert_eq!(posted.len(), 1, "sent once");
    let body = &posted[0].body;
    assert_eq!(
        element_text(body, "subject").as_deref(),
        Some(completed.event_mrid.as_str())
    );
    assert_eq!(element_text(body, "status").as_deref(), Some("3"));
    // createdDateTime is when it fell due, not when it was finally sent.
    assert_eq!(
        element_text(body, "createdDateTime").as_deref(),
        Some(issued_at.to_string().as_str())
    );
    let (store, _) = csipd::store::Store::open(&state_dir, now_s()).expect("store opens");
    let entry = store.ledger_entry(&completed).expect("still in the ledger");
    assert!(
        matches!(
            entry.outcome,
            Some(csipd::store::LedgerOutcome::Accepted { .. })
        ),
        "{entry:?}"
    );
    assert!(store.ledger_pending().is_empty());

    // A second start sends nothing more.
    let (mut run, url) = start_run(&config);
    wait_for(&url, Duration::from_secs(30), "polling", |s| {
        s.utility.state == csipd::status::ConnectionState::Polling
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(run.terminate(), Some(0));
    assert_eq!(
        server.requests_to("POST", RSP_PATH).len(),
        1,
        "not sent again"
    );
    assert_eq!(site.sim.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&site.dir);
}

/// The scripted server for `site` with one program whose default control limits export
/// to 3000 W and no events yet.
fn server_with_default_limit(site: &Site) -> ScriptedServer {
    ScriptedServer::start(Scenario {
        lfdi: site.lfdi.clone(),
        sfdi: site.sfdi,
        fsas: vec![vec![Program {
            default_exp_lim_w: Some(3000),
            default_imp_lim_w: None,
            controls: Vec::new(),
            ..Program::default()
        }]],
        ..Scenario::default()
    })
}

/// A small seeded generator (xorshift64*): the kill moments repeat for a given seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

#[test]
fn kill_9_at_random_moments_loses_and_repeats_no_response() {
    let iterations: u32 = std::env::var("CSIPD_CRASH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CSIPD_CRASH_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed | 1);
    let began = Instant::now();
    let mut site = Site::new("runtime-crash-loop");
    let server = server_with_default_limit(&site);
    let config = site.config_for(&server);

    let mut opened = 0;
    let mut last_end = 0;
    let mut kills: Vec<Instant> = Vec::new();
    for i in 0..iterations {
        // A short event now and then: some start and end while csipd is down.
        let now = now_s();
        let begin = now + rng.range(0, 4) as i64;
        let mut event = Control::new(&format!("kill-{i:03}"), begin, rng.range(2, 7) as u32);
        event.exp_lim_w = Some(1000 + 100 * (i as i32 % 10));
        event.response_required = 3;
        last_end = last_end.max(begin + i64::from(event.duration_s));
        server.update(|s| {
            let controls = &mut s.fsas[0][0].controls;
            // Events over for a while leave the list, as on a real server.
            controls.retain(|c| c.start + i64::from(c.duration_s) > now - 30);
            controls.push(event);
        });

        let mut run = spawn(&["run", "--config", &config]);
        let kill_after_ms = rng.range(50, 5000);
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        assert!(run.alive(), "iteration {i}: csipd exited by itself");
        kills.push(Instant::now());
        kill_9(&mut run);
        let trouble = store_trouble(&run.seen_stderr);
        assert!(
            trouble.is_empty(),
            "iteration {i} (killed after {kill_after_ms} ms): {trouble:?}"
        );
        // "state store PATH" is an info line: stdout (warnings are on stderr).
        if run
            .drain_stdout()
            .iter()
            .any(|l| l.contains("state store "))
        {
            opened += 1;
        }
        let dup = unexplained_duplicates(&server, &kills);
        assert!(
            dup.is_empty(),
            "iteration {i} (killed after {kill_after_ms} ms): responses POSTed twice: {dup:?}"
        );
    }

    // A last run without a kill until every event is over and answered.
    let (mut run, url) = start_run(&config);
    let wait_s = (last_end - now_s()).max(0) as u64 + 10;
    std::thread::sleep(Duration::from_secs(wait_s));
    let s = status(&url);
    let errors: Vec<&String> = s
        .last_errors
        .iter()
        .map(|e| &e.message)
        .filter(|m| m.contains("moved aside") || m.contains("store"))
        .collect();
    assert!(errors.is_empty(), "store errors in the status: {errors:?}");
    assert_eq!(run.terminate(), Some(0));
    assert!(store_trouble(&run.seen_stderr).is_empty());

    let posted = responses(&server);
    let dup = unexplained_duplicates(&server, &kills);
    assert!(dup.is_empty(), "responses POSTed twice: {dup:?}");

    // Every response issued (in the ledger) reached the server and is settled there as
    // accepted: none lost to a kill between the ledger's write and the POST, and none
    // left to send again at the next start.
    let (store, notices) =
        csipd::store::Store::open(&site.dir.join("state"), now_s()).expect("store opens");
    assert!(notices.is_empty(), "{notices:?}");
    let ledger: Vec<(String, u8)> = store
        .ledger()
        .map(|e| (e.key.event_mrid.clone(), e.key.status))
        .collect();
    let missing: Vec<&(String, u8)> = posted.iter().filter(|k| !ledger.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "accepted responses missing from the ledger: {missing:?}"
    );
    let undelivered: Vec<&(String, u8)> = ledger.iter().filter(|k| !posted.contains(k)).collect();
    assert!(
        undelivered.is_empty(),
        "issued but never delivered: {undelivered:?}"
    );
    let unsettled: Vec<String> = store
        .ledger()
        .filter(|e| {
            !matches!(
                e.outcome,
                Some(csipd::store::LedgerOutcome::Accepted { .. })
            )
        })
        .map(|e| format!("{} {} {:?}", e.key.event_mrid, e.key.status, e.outcome))
        .collect();
    assert!(
        unsettled.is_empty(),
        "ledger entries not marked accepted: {unsettled:?}"
    );
    let events_answered = posted
        .iter()
        .map(|(m, _)| m.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let repeated = repeats(&server);
    println!(
        "kill -9 x {iterations} (seed {seed:#x}): store opened in {opened} of the killed runs; \
         {} responses POSTed for {events_answered} events, all in the ledger and accepted; \
         {} sent again after a kill right after the server's 2xx ({repeated:?}); {:.1} s in all",
        posted.len(),
        repeated.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        !posted.is_empty() || iterations == 0,
        "no response reached the server in {iterations} runs"
    );
    assert_eq!(site.sim.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&site.dir);
}

/// How long after the server received a response POST a kill can still fall before
/// csipd committed the acceptance: the server's 2xx on the wire, csipd reading it, the
/// SQLite commit. A kill there makes csipd send the response again (at least once,
/// never lost); generous for a debug build on a loaded 2-core machine.
const ACCEPT_COMMIT_WINDOW: Duration = Duration::from_millis(500);

/// Response keys POSTed more than once where a repeat is not explained by a kill that
/// fell between the earlier copy's arrival and csipd's commit of its acceptance.
fn unexplained_duplicates(server: &ScriptedServer, kills: &[Instant]) -> Vec<(String, u8)> {
    let mut arrivals: BTreeMap<(String, u8), Vec<Instant>> = BTreeMap::new();
    for r in server.requests_to("POST", RSP_PATH) {
        let key = (
            element_text(&r.body, "subject").unwrap_or_default(),
            element_text(&r.body, "status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        );
        arrivals.entry(key).or_default().push(r.at);
    }
    arrivals
        .into_iter()
        .filter(|(_, at)| {
            at.windows(2).any(|pair| {
                !kills
                    .iter()
                    .any(|k| *k >= pair[0] && *k < pair[1] && *k - pair[0] <= ACCEPT_COMMIT_WINDOW)
            })
        })
        .map(|(key, _)| key)
        .collect()
}

/// Response keys POSTed more than once, with their counts.
fn repeats(server: &ScriptedServer) -> Vec<((String, u8), usize)> {
    let mut counts: BTreeMap<(String, u8), usize> = BTreeMap::new();
    for key in responses(server) {
        *counts.entry(key).or_default() += 1;
    }
    counts.into_iter().filter(|(_, n)| *n > 1).collect()
}
