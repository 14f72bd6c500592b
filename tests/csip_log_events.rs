//! LogEvents (IEEE 2030.5 clause 10.14) from the engine to the hand-scripted CSIP-AUS
//! server (tests/common/csip_server.rs), in memory on a virtual clock
//! (tests/common/csip_memory.rs): an inverter alarm set and cleared, a 100-event burst
//! of one device, an outage with events queued and delivered after it. Every body is
//! validated with xmllint against csipaus-core.xsd. No test here waits for the wall
//! clock.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use csip_memory::*;
use csip_server::{Recorded, element_text};
use csipd::csip::ConnectionState;
use csipd::csip::DeviceEvent;
use csipd::csip::log_event::{BURST, CAPACITY, REFILL_MS, codes};
use csipd::devices::sunspec::InverterEvents;

const LEL: &str = "/edev/1/lel";
/// Evt1 bit 10, AC_OVER_VOLT: 2030.5's DER_FAULT_OVER_VOLTAGE (code 1).
const AC_OVER_VOLT: u32 = 1 << 10;

fn alarms(device: &str, evt1: u32) -> DeviceEvent {
    DeviceEvent::Alarms {
        device: device.into(),
        events: InverterEvents { evt1, evt2: 0 },
    }
}

/// The harness, registered and past its first DER reports. The server states
/// realistic rates (the scripted default of 2 s would make an hour 40,000 requests).
fn started() -> Harness {
    let mut sc = scenario();
    sc.dcap_poll_s = 300;
    sc.time_poll_s = 300;
    sc.edev_list_poll_s = 300;
    sc.fsa_list_poll_s = 300;
    sc.derp_list_poll_s = 60;
    sc.der_list_poll_s = 300;
    sc.mup_list_poll_s = 300;
    sc.mup_post_s = 300;
    let mut h = Harness::start(sc);
    assert!(h.run_until(60, |h| has(&h.requests(), "PUT", "/edev/1/der/1/ders")));
    h
}

fn feed(h: &mut Harness, event: DeviceEvent) {
    let now = h.now;
    h.engine.handle_device_event(event, now);
}

fn posts(h: &Harness) -> Vec<Recorded> {
    h.server.requests_to("POST", LEL)
}

fn field(r: &Recorded, tag: &str) -> i64 {
    element_text(&r.body, tag)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no <{tag}> in {}", r.body))
}

fn details(r: &Recorded) -> String {
    element_text(&r.body, "details").unwrap_or_default()
}

/// Every LogEvent body the server was sent validates against csipaus-core.xsd.
fn assert_log_events_valid(h: &Harness) {
    // A body tried again during an outage is validated once.
    let bodies: std::collections::BTreeSet<String> = posts(h).into_iter().map(|r| r.body).collect();
    assert!(!bodies.is_empty());
    let invalid: Vec<(String, String)> = bodies
        .into_iter()
        .filter_map(|body| csip_server::schema::schema_problem(&body).map(|e| (body, e)))
        .collect();
    assert!(
        invalid.is_empty(),
        "LogEvents failing csipaus-core.xsd: {invalid:#?}"
    );
}

#[test]
fn an_alarm_set_and_cleared_gives_exactly_two_schema_valid_log_events() {
    let mut h = started();
    // The same reading handed in every second: only the changes are logged.
    for _ in 0..5 {
        feed(&mut h, alarms("inv1", 0));
        h.run_for(1);
    }
    for _ in 0..10 {
        feed(&mut h, alarms("inv1", AC_OVER_VOLT));
        h.run_for(1);
    }
    for _ in 0..10 {
        feed(&mut h, alarms("inv1", 0));
        h.run_for(1);
    }
    h.run_for(60);
    let posts = posts(&h);
    assert_eq!(posts.len(), 2, "{posts:#?}");
    for (post, raised) in posts.iter().zip([1, 0]) {
        assert_eq!(field(post, "functionSet"), i64::from(codes::FS_DER));
        assert_eq!(field(post, "logEventCode"), 1, "DER_FAULT_OVER_VOLTAGE");
        assert_eq!(
            field(post, "profileID"),
            i64::from(codes::PROFILE_IEEE_2030_5)
        );
        assert_eq!(
            field(post, "logEventPEN"),
            i64::from(codes::IEEE_2030_5_PEN)
        );
        assert_eq!(field(post, "extendedData"), raised);
        assert!(details(post).contains("inv1 AC_OVER_VOLT"), "{}", post.body);
    }
    // Distinct ids; created when each happened (10 s apart), in server time.
    assert_ne!(
        field(&posts[0], "logEventID"),
        field(&posts[1], "logEventID")
    );
    let created: Vec<i64> = posts.iter().map(|p| field(p, "createdDateTime")).collect();
    assert_eq!(created[1] - created[0], 10, "{created:?}");
    assert!(created[0] > T0_S && created[0] < h.now_s());
    assert_log_events_valid(&h);
    let status = h.status();
    assert_eq!(
        (
            status.log_events.sent,
            status.log_events.queued,
            status.log_events.dropped
        ),
        (2, 0, 0)
    );
}

#[test]
fn a_burst_of_100_events_from_one_device_is_rate_limited_and_coalesced() {
    let mut h = started();
    let start_ms = h.elapsed_ms();
    // 100 changes of one bit (GROUND_FAULT, vendor code 0) at one instant: set, clear,
    // set, ... ending cleared.
    for i in 0..100u32 {
        feed(&mut h, alarms("inv1", (i + 1) % 2));
    }
    // Another device's event at the same instant is not held back by inv1's burst.
    feed(&mut h, alarms("inv2", AC_OVER_VOLT));
    h.run_for(1);
    let of = |h: &Harness, device: &str| -> Vec<Recorded> {
        posts(h)
            .into_iter()
            .filter(|p| details(p).starts_with(&format!("{device} ")))
            .collect()
    };
    assert_eq!(of(&h, "inv1").len(), BURST as usize, "the bucket's burst");
    assert_eq!(of(&h, "inv2").len(), 1);
    let status = h.status();
    assert_eq!(status.log_events.held, 1, "95 events coalesced to one");
    // The held event goes when a token is back (one per REFILL_MS), not before.
    h.run_for(REFILL_MS / 1000 - 5);
    assert_eq!(of(&h, "inv1").len(), BURST as usize);
    h.run_for(10);
    let inv1 = of(&h, "inv1");
    assert_eq!(inv1.len(), BURST as usize + 1);
    let sent_after_ms = inv1.last().unwrap().at_ms - start_ms;
    assert!(
        (REFILL_MS..REFILL_MS + 2_000).contains(&sent_after_ms),
        "{sent_after_ms}"
    );
    // The server ends up knowing the bit's final state (cleared) ...
    let raised: Vec<i64> = inv1.iter().map(|p| field(p, "extendedData")).collect();
    assert_eq!(raised, vec![1, 0, 1, 0, 1, 0]);
    assert!(
        inv1.iter()
            .all(|p| field(p, "logEventCode") == 0 && field(p, "profileID") == 1)
    );
    assert!(
        inv1.iter()
            .all(|p| field(p, "logEventPEN") == i64::from(PEN))
    );
    // ... and nothing more comes: 100 events cost the server 6 POSTs.
    h.run_for(3600);
    assert_eq!(of(&h, "inv1").len(), BURST as usize + 1);
    let status = h.status();
    assert_eq!((status.log_events.held, status.log_events.dropped), (0, 0));
    assert_log_events_valid(&h);
}

#[test]
fn events_during_an_outage_are_kept_and_delivered_after_it_in_order() {
    let mut h = started();
    // The server stops answering at all.
    h.server.force_status("*", 0, None);
    let lost = h.elapsed_ms();
    h.run_for(120);
    feed(&mut h, alarms("inv1", AC_OVER_VOLT));
    feed(
        &mut h,
        DeviceEvent::Comms {
            device: "meter".into(),
            up: false,
        },
    );
    h.run_for(300);
    feed(
        &mut h,
        DeviceEvent::ControlNotApplied {
            device: "inv1".into(),
            detail: "read-back 80 % != 50 %".into(),
        },
    );
    h.run_for(300);
    assert!(
        h.statuses
            .iter()
            .any(|s| s.state == ConnectionState::Unreachable)
    );
    let during: Vec<Recorded> = posts(&h).into_iter().filter(|p| p.at_ms > lost).collect();
    assert!(!during.is_empty(), "POSTs were tried during the outage");
    // The tries back off: no two within 5 s, none more than 60 s apart at the end.
    let gaps: Vec<u64> = during.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    assert!(gaps.iter().all(|g| *g >= 5_000), "{gaps:?}");
    assert!(
        h.status().log_events.queued >= 4,
        "{:?}",
        h.status().log_events
    );
    h.server.clear_forced("*");
    let restored = h.elapsed_ms();
    h.run_for(120);
    let delivered: Vec<String> = posts(&h)
        .iter()
        .filter(|p| p.at_ms >= restored)
        .map(details)
        .collect();
    // The loss itself, then the events in the order they happened, then the restore.
    assert_eq!(
        delivered,
        vec![
            "utility comms lost",
            "inv1 AC_OVER_VOLT",
            "meter comms lost",
            "inv1 not applied: read-back 80 %",
            "utility comms restored",
        ],
        "details are String32: cut to 32 characters"
    );
    let first_after = posts(&h)
        .iter()
        .find(|p| p.at_ms >= restored)
        .map(|p| p.at_ms - restored)
        .unwrap();
    assert!(first_after <= 60_000, "{first_after} ms after the return");
    let status = h.status();
    assert_eq!(
        (status.log_events.queued, status.log_events.dropped),
        (0, 0)
    );
    assert_log_events_valid(&h);
}

#[test]
fn the_outage_queue_is_bounded_and_drops_the_oldest() {
    let mut h = started();
    h.server.force_status("*", 0, None);
    h.run_for(60);
    // 60 devices with 5 events each (each within its own bucket): 300 events.
    for d in 0..60 {
        for bit in 0..5 {
            feed(&mut h, alarms(&format!("inv{d}"), (1 << (bit + 1)) - 1));
        }
    }
    h.run_for(1);
    let status = h.status();
    assert_eq!(status.log_events.queued, CAPACITY);
    // 300 device events and the utility's own "comms lost", 256 kept.
    assert_eq!(status.log_events.dropped, 300 + 1 - CAPACITY as u64);
    h.server.clear_forced("*");
    let restored = h.elapsed_ms();
    h.run_for(300);
    let after: Vec<String> = posts(&h)
        .iter()
        .filter(|p| p.at_ms >= restored)
        .map(details)
        .collect();
    // The oldest went (the utility's "comms lost", inv0 to inv7 and most of inv8);
    // the rest arrive in order, once each, and the "comms restored" last.
    let status = h.status();
    assert_eq!(status.log_events.queued, 0);
    assert!(
        (45..=46).contains(&status.log_events.dropped),
        "{:?}",
        status.log_events
    );
    assert_eq!(
        after.len() as u64,
        302 - status.log_events.dropped,
        "{after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|d| d.starts_with("inv0 ") || d == "utility comms lost")
    );
    assert_eq!(after[after.len() - 2], "inv59 GRID_DISCONNECT");
    assert_eq!(after[after.len() - 1], "utility comms restored");
    let nine: Vec<&String> = after.iter().filter(|d| d.starts_with("inv9 ")).collect();
    assert_eq!(nine.len(), 5, "{nine:?}");
}
