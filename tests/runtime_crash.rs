//! `csipd run` killed with SIGKILL while it works against the hand-scripted CSIP-AUS
//! server (tests/common/csip_server.rs, plain HTTP lab mode) with csipd's simulated
//! site (`csipd demo --sim-only`):
//! - the harness's ALL-30 (power cycle during an active control): after the restart
//!   the utility limit is back from the store while the server still refuses every
//!   request, Received/Started are not sent again, Completed is sent exactly once;
//! - kill -9 at seeded random moments while the server hands out short events: the
//!   database always opens, every response issued (event mRID + status) reaches the
//!   server and ends accepted in the store's ledger (none lost to a kill between the
//!   ledger's write and the POST), and none is POSTed again once a run has recorded the
//!   server's acceptance of it (logged after the commit); a kill between the server's
//!   2xx and that commit sends it once more (at least once, never lost).
//!   `CSIPD_CRASH_ITERATIONS=100 cargo test --test runtime_crash kill_9 -- --nocapture`
//!   runs the 100 kills (275 s in a debug build on the 2-core CI machine; the
//!   default 20 take about 75 s); `CSIPD_CRASH_SEED` picks other kill moments.

#[path = "common/csip_server.rs"]
mod csip_server;
mod runtime_common;

use csip_server::{Control, Program, Scenario, ScriptedServer, element_text, now_s};
use runtime_common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const RSP_PATH: &str = "/edev/1/rsps/site_control/rsp";

/// Whether the status lists the response (event mRID, Response.status) as accepted:
/// csipd shows it only once its ledger has recorded the acceptance, so a restart will
/// not send it again.
fn accepted(s: &csipd::status::Snapshot, mrid: &str, status: u8) -> bool {
    s.responses
        .iter()
        .any(|r| r.mrid == mrid && r.status.code() == status && r.delivery == "accepted")
}

/// Waits until csipd has started reading the DERControlList afresh `reads` times after
/// `since` (first pages only; the server hands out one-item pages). Each read is a new
/// evaluation of the events: a response the ledger lost track of would be issued again
/// by then. This is the event that proves "nothing more was sent" — not a guessed pause.
fn wait_for_list_reads(server: &ScriptedServer, since: Instant, reads: usize) {
    let first_pages = || {
        server
            .requests()
            .iter()
            .filter(|r| {
                r.at > since
                    && r.method == "GET"
                    && r.path.starts_with("/edev/1/derp/")
                    && r.path.ends_with("/derc")
                    && r.query
                        .split('&')
                        .all(|q| !q.starts_with("s=") || q == "s=0")
            })
            .count()
    };
    wait_until(PATIENCE, "fresh reads of the DERControlList", || {
        let n = first_pages();
        if n >= reads { Ok(()) } else { Err(n) }
    });
}

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
        let (sim, devices) = sim_devices(1800);
        let config = format!(
            "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'
{utility}\toption nmi '4102345678'
{devices}",
            d = dir.display(),
            utility = uci_lab_utility("@URL@/dcap", &cert, &key),
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

/// (event mRID, Response.status) of a response POST.
fn response_key(r: &csip_server::Recorded) -> (String, u8) {
    (
        element_text(&r.body, "subject").unwrap_or_default(),
        element_text(&r.body, "status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    )
}

/// (event mRID, Response.status) of every response POSTed to the replyTo, in order.
fn responses(server: &ScriptedServer) -> Vec<(String, u8)> {
    server
        .requests_to("POST", RSP_PATH)
        .iter()
        .map(response_key)
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
    // Pull the plug once the ledger has recorded both acceptances (the status shows a
    // response only then): a kill before that would rightly send them again.
    wait_for(&url, PATIENCE, "Received and Started recorded", |s| {
        accepted(s, &mrid, 1) && accepted(s, &mrid, 2)
    });
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
    // Nothing is sent again: Completed is recorded, nothing is left to send, and the
    // events were evaluated afresh twice since.
    wait_for(&url, PATIENCE, "Completed recorded, nothing pending", |s| {
        accepted(s, &mrid, 3) && s.utility.responses_pending == 0
    });
    wait_for_list_reads(&server, Instant::now(), 2);
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
    wait_for(
        &url,
        Duration::from_secs(30),
        "polling, the response recorded",
        |s| {
            s.utility.state == csipd::status::ConnectionState::Polling
                && accepted(s, &completed.event_mrid, 3)
                && s.utility.responses_pending == 0
        },
    );
    // Not sent again while the events are evaluated afresh twice.
    wait_for_list_reads(&server, Instant::now(), 2);
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

    // A second start sends nothing more: by the time it polls with nothing pending and
    // has read the events twice, anything restored from the ledger would have gone out.
    let spawned = Instant::now();
    let (mut run, url) = start_run(&config);
    wait_for(
        &url,
        Duration::from_secs(30),
        "polling, nothing pending",
        |s| {
            s.utility.state == csipd::status::ConnectionState::Polling
                && s.utility.responses_pending == 0
        },
    );
    wait_for_list_reads(&server, spawned, 2);
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
    let mut runs: Vec<KilledRun> = Vec::new();
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

        let spawned = Instant::now();
        let mut run = spawn(&["run", "--config", &config]);
        let kill_after_ms = rng.range(50, 5000);
        // sleep-ok: the seeded random kill moment is what this test is about; nothing
        // is asserted about what csipd did by then.
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        assert!(run.alive(), "iteration {i}: csipd exited by itself");
        kill_9(&mut run);
        let trouble = store_trouble(&run.seen_stderr);
        assert!(
            trouble.is_empty(),
            "iteration {i} (killed after {kill_after_ms} ms): {trouble:?}"
        );
        // Everything the killed run logged (its stdout up to the end of the pipe): the
        // "state store PATH" info line and the responses whose acceptance it recorded.
        let log = run.stdout_to_end();
        if log.iter().any(|l| l.contains("state store ")) {
            opened += 1;
        }
        runs.push(KilledRun {
            spawned,
            recorded: recorded_acceptances(&log),
        });
        let dup = sent_after_recorded(&server, &runs);
        assert!(
            dup.is_empty(),
            "iteration {i} (killed after {kill_after_ms} ms): responses POSTed again after \
             a run recorded their acceptance: {dup:?}"
        );
    }

    // A last run without a kill until every event is over and answered. The events run
    // on the server's clock (real time); csipd is done once it has read the
    // DERControlList after the last one ended, with no response left to settle.
    let spawned = Instant::now();
    let (mut run, url) = start_run(&config);
    let events_over_in = Duration::from_secs((last_end - now_s()).max(0) as u64);
    let s = wait_until_every(
        events_over_in + PATIENCE,
        Duration::from_millis(200),
        "every event over, read afterwards and answered",
        || {
            let s = status(&url);
            let read_after_end = s.utility.resources.iter().any(|r| {
                r.name == "DERControlList" && r.last_poll_unix_s.is_some_and(|t| t > last_end)
            });
            if s.utility.state == csipd::status::ConnectionState::Polling
                && read_after_end
                && s.utility.responses_pending == 0
            {
                Ok(s)
            } else {
                Err(Box::new(s.utility))
            }
        },
    );
    let errors: Vec<&String> = s
        .last_errors
        .iter()
        .map(|e| &e.message)
        .filter(|m| m.contains("moved aside") || m.contains("store"))
        .collect();
    assert!(errors.is_empty(), "store errors in the status: {errors:?}");
    assert_eq!(run.terminate(), Some(0));
    assert!(store_trouble(&run.seen_stderr).is_empty());
    runs.push(KilledRun {
        spawned,
        recorded: recorded_acceptances(&run.stdout_to_end()),
    });

    let posted = responses(&server);
    // The last run was not killed: it sends each response at most once.
    let mut from_last: BTreeMap<(String, u8), usize> = BTreeMap::new();
    for r in server.requests_to("POST", RSP_PATH) {
        if r.at > spawned {
            let key = response_key(&r);
            *from_last.entry(key).or_default() += 1;
        }
    }
    from_last.retain(|_, n| *n > 1);
    assert!(
        from_last.is_empty(),
        "sent twice by the last run: {from_last:?}"
    );
    let dup = sent_after_recorded(&server, &runs);
    assert!(
        dup.is_empty(),
        "responses POSTed again after a run recorded their acceptance: {dup:?}"
    );

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
    // The log lines the duplicate check relies on are there and name real responses.
    let recorded: BTreeSet<&(String, u8)> = runs.iter().flat_map(|r| &r.recorded).collect();
    assert!(
        recorded.iter().all(|k| posted.contains(k)),
        "recorded acceptances of responses never POSTed: {recorded:?}"
    );
    assert!(
        !recorded.is_empty() || posted.is_empty(),
        "no run logged a recorded acceptance"
    );
    let repeated = repeats(&server);
    println!(
        "kill -9 x {iterations} (seed {seed:#x}): store opened in {opened} of the killed runs; \
         {} responses POSTed for {events_answered} events, all in the ledger and accepted; \
         {} acceptances logged as recorded; {} sent again after a kill between the server's 2xx \
         and the record ({repeated:?}); {:.1} s in all",
        posted.len(),
        recorded.len(),
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

/// One `csipd run` of the kill loop: when it was spawned and the responses whose
/// acceptance by the server it recorded in its ledger (its log says so after the commit).
struct KilledRun {
    spawned: Instant,
    recorded: BTreeSet<(String, u8)>,
}

/// (event mRID, Response.status) of each "DERControlResponse CODE (Name) for MRID:
/// accepted" line: csipd logs it once the ledger has committed the acceptance.
fn recorded_acceptances(log: &[String]) -> BTreeSet<(String, u8)> {
    log.iter()
        .filter_map(|line| {
            let rest = line.split("DERControlResponse ").nth(1)?;
            let (code, rest) = rest.split_once(' ')?;
            let (_, rest) = rest.split_once(" for ")?;
            let mrid = rest.strip_suffix(": accepted")?;
            Some((mrid.to_string(), code.parse().ok()?))
        })
        .collect()
}

/// Responses POSTed again after a run recorded their acceptance: a copy that reached
/// the server after the next run was spawned. Until a run has recorded it, a response
/// may rightly be sent again (the kill fell between the server's 2xx and the commit),
/// so only what comes after the record counts; it is decided by the order of events
/// (the log, the spawn), not by how long a commit may take on a loaded machine. The
/// accepted copy itself reached the server before the run that recorded it logged so.
fn sent_after_recorded(server: &ScriptedServer, runs: &[KilledRun]) -> Vec<(String, u8)> {
    let mut late = BTreeSet::new();
    for (i, run) in runs.iter().enumerate() {
        let Some(next) = runs.get(i + 1) else {
            continue;
        };
        for r in server.requests_to("POST", RSP_PATH) {
            let key = response_key(&r);
            if r.at > next.spawned && run.recorded.contains(&key) {
                late.insert(key);
            }
        }
    }
    late.into_iter().collect()
}

/// Response keys POSTed more than once, with their counts.
fn repeats(server: &ScriptedServer) -> Vec<((String, u8), usize)> {
    let mut counts: BTreeMap<(String, u8), usize> = BTreeMap::new();
    for key in responses(server) {
        *counts.entry(key).or_default() += 1;
    }
    counts.into_iter().filter(|(_, n)| *n > 1).collect()
}
