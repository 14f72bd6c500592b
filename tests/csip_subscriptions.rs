//! Subscriptions and notifications (CSIP-AUS classes S-L/S-G: ALL-14..17,
//! GEN-05..08, LOA-05..08), engine side: the engine against the hand-scripted CSIP-AUS server
//! (tests/common/csip_server.rs) in memory on a virtual clock. The Subscriptions csipd
//! POSTs are validated with xmllint against csipaus-core.xsd; the Notifications are
//! the documents the server would POST to the listener (the listener itself, mutual
//! TLS, is tested in tests/runtime_notify.rs). No test waits for the wall clock.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use csip_memory::*;
use csip_server::{Control, element_text};
use csipd::csip::subscription::{NotificationOutcome, SubState};
use csipd::csip::{Engine, EngineConfig};
use csipd::schedule::ControlMode;

const NOTIFY_URI: &str = "https://192.0.2.10:8443/notify";

/// The resources the subscription procedures want subscribed (ALL-14).
const SUBSCRIBED: [&str; 5] = [
    "/edev",
    "/edev/1/fsa",
    "/edev/1/fsa/1/derp",
    "/edev/1/derp/1/derc",
    "/edev/1/derp/1/dderc",
];

/// With a notification URI, on a site that can limit its import and load too (the
/// LOA procedures' DER-L site: a PV-only one answers those limits 252).
fn config() -> EngineConfig {
    let mut config = engine_config();
    config.notification_uri = Some(NOTIFY_URI.into());
    config.nameplate.can_limit_import = true;
    config.nameplate.can_limit_load = true;
    config
}

/// The lists polled rarely, as in ALL-15..17 and GEN-05..08 (900 s): what happens
/// sooner happens because of a notification.
fn scenario_900() -> csip_server::Scenario {
    let mut sc = scenario();
    sc.subscription_list = true;
    sc.derp_list_poll_s = 900;
    sc.der_list_poll_s = 900;
    sc.fsa_list_poll_s = 900;
    sc.edev_list_poll_s = 900;
    sc
}

fn subscribed_resources(h: &Harness) -> Vec<String> {
    let mut r: Vec<String> = h
        .server
        .requests_to("POST", "/edev/1/sub")
        .iter()
        .filter_map(|r| element_text(&r.body, "subscribedResource"))
        .collect();
    r.sort();
    r
}

fn notification(resource: &str, status: u8) -> String {
    format!(
        r#"<Notification xmlns="urn:ieee:std:2030.5:ns" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><subscribedResource>{resource}</subscribedResource><Resource xsi:type="DERControlList" all="1" results="0"/><status>{status}</status><subscriptionURI>https://utility.example/edev/1/sub/7</subscriptionURI></Notification>"#
    )
}

fn all_subscribed(h: &Harness) -> bool {
    let r = subscribed_resources(h);
    SUBSCRIBED.iter().all(|s| r.iter().any(|x| x == s))
}

#[test]
fn all_14_subscriptions_for_every_list_the_procedures_name() {
    let mut h = Harness::new(config(), scenario_900());
    assert!(
        h.run_until(60, all_subscribed),
        "{:?}",
        subscribed_resources(&h)
    );
    let posts = h.server.requests_to("POST", "/edev/1/sub");
    assert_eq!(
        posts.len(),
        SUBSCRIBED.len(),
        "one each: {:?}",
        subscribed_resources(&h)
    );
    for post in &posts {
        // subscription-contents: the fields 2030.5 requires, valid against the schema.
        assert_eq!(
            element_text(&post.body, "notificationURI").as_deref(),
            Some(NOTIFY_URI)
        );
        assert_eq!(element_text(&post.body, "encoding").as_deref(), Some("0"));
        assert_eq!(element_text(&post.body, "level").as_deref(), Some("+S1"));
        assert!(element_text(&post.body, "limit").is_some());
        if let Some(e) = csip_server::schema::schema_problem(&post.body) {
            panic!("{e}\n{}", post.body);
        }
    }
    // Each is active with the Location the server gave.
    let active = h
        .engine
        .subscriptions()
        .filter(|(_, s)| matches!(s, SubState::Active { location: Some(_) }))
        .count();
    assert_eq!(active, SUBSCRIBED.len());
    // Nothing is subscribed again while nothing changes.
    h.run_for(120);
    assert_eq!(
        h.server.requests_to("POST", "/edev/1/sub").len(),
        SUBSCRIBED.len()
    );
}

#[test]
fn no_subscriptions_without_a_notification_uri_or_a_subscription_list() {
    let mut h = Harness::new(engine_config(), scenario_900());
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/ders")));
    h.run_for(10);
    assert_eq!(h.server.requests_to("POST", "/edev/1/sub").len(), 0);
    let mut sc = scenario_900();
    sc.subscription_list = false;
    let mut h = Harness::new(config(), sc);
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/ders")));
    h.run_for(10);
    assert!(!h.requests().iter().any(|r| r.path.contains("/sub")));
}

#[test]
fn all_15_a_control_arrives_by_notification_not_by_the_900_s_poll() {
    let mut h = Harness::new(config(), scenario_900());
    assert!(h.run_until(60, all_subscribed));
    h.run_for(5);
    let reads_before = h.server.requests_to("GET", "/edev/1/derp/1/derc").len();
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now, 300);
        c.energize = Some(false);
        s.fsas[0][0].controls.push(c);
    });
    // The server notifies; the list is read again at once.
    let outcome = h
        .notify(&notification("/edev/1/derp/1/derc", 0))
        .expect("a Notification");
    assert_eq!(
        outcome,
        NotificationOutcome::Polled {
            resource: "/edev/1/derp/1/derc".into()
        }
    );
    assert!(h.run_until(3, |h| {
        h.outcomes
            .last()
            .and_then(|(_, o)| o.active.get(ControlMode::Energize))
            .is_some()
    }));
    assert!(h.server.requests_to("GET", "/edev/1/derp/1/derc").len() > reads_before);
    // ...and the status follows (ALL-15 waits for genConnectStatus bit 2 cleared).
    assert!(h.run_until(10, |h| {
        h.server
            .requests_to("PUT", "/edev/1/der/1/ders")
            .last()
            .and_then(|r| element_text(&r.body, "genConnectStatus"))
            .and_then(|g| element_text(&g, "value"))
            .is_some_and(|v| u8::from_str_radix(&v, 16).unwrap_or(0xff) & 0b100 == 0)
    }));
}

#[test]
fn polling_stays_the_fallback_when_no_notification_comes() {
    let mut sc = scenario_900();
    sc.derp_list_poll_s = 60;
    let mut h = Harness::new(config(), sc);
    assert!(h.run_until(60, all_subscribed));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now, 600);
        c.exp_lim_w = Some(1000);
        s.fsas[0][0].controls.push(c);
    });
    // No notification (lost): the DERProgramList's 60 s poll brings it.
    assert!(h.run_until(65, |h| h.export_limit_w() == Some(1000.0)));
}

#[test]
fn all_17_default_control_notification_and_bad_notifications() {
    let mut h = Harness::new(config(), scenario_900());
    assert!(h.run_until(60, all_subscribed));
    h.server
        .update(|s| s.fsas[0][0].default_exp_lim_w = Some(1234));
    h.notify(&notification("/edev/1/derp/1/dderc", 0))
        .expect("a Notification");
    assert!(h.run_until(3, |h| h.export_limit_w() == Some(1234.0)));
    // Not a Notification: an error naming what was wrong (the listener answers 400).
    let err = h
        .notify("<DERControlList/>")
        .expect_err("not a Notification");
    assert!(err.to_string().contains("Notification"), "{err}");
    let err = h
        .notify("<Notification xmlns=\"urn:ieee:std:2030.5:ns\"><status>0</status></Notification>")
        .expect_err("no subscribedResource");
    assert!(err.to_string().contains("subscribedResource"), "{err}");
    // A resource csipd does not read: acknowledged, nothing else.
    assert_eq!(
        h.notify(&notification("/edev/9/derp/1/derc", 0))
            .expect("parses"),
        NotificationOutcome::Unknown {
            resource: "/edev/9/derp/1/derc".into()
        }
    );
}

#[test]
fn cancelled_refused_and_restarted_subscriptions_are_made_again() {
    let mut h = Harness::new(config(), scenario_900());
    // The first POSTs are refused (the server's SubscriptionList answers 404 at first).
    h.server.force_status("/edev/1/sub", 404, None);
    assert!(h.run_until(30, |h| {
        !h.server.requests_to("POST", "/edev/1/sub").is_empty()
    }));
    h.run_for(5);
    let refused = h.server.requests_to("POST", "/edev/1/sub").len();
    h.server.clear_forced("/edev/1/sub");
    h.run_for(30);
    assert_eq!(
        h.server.requests_to("POST", "/edev/1/sub").len(),
        refused,
        "not hammered: 60 s before the next try"
    );
    assert!(
        h.run_until(40, |h| h.server.subscriptions() == SUBSCRIBED.len()),
        "made once the server takes them (60 s after the refusal)"
    );
    // The server cancels one (status 1): it is POSTed again.
    let before = h.server.requests_to("POST", "/edev/1/sub").len();
    assert!(matches!(
        h.notify(&notification("/edev/1/derp/1/derc", 1)),
        Ok(NotificationOutcome::Cancelled { status: 1, .. })
    ));
    assert!(
        h.run_until(5, |h| h.server.requests_to("POST", "/edev/1/sub").len()
            == before + 1)
    );
    assert_eq!(
        element_text(
            &h.server.requests_to("POST", "/edev/1/sub")[before].body,
            "subscribedResource"
        )
        .as_deref(),
        Some("/edev/1/derp/1/derc")
    );
    // A restart (a new engine, nothing persisted): the SubscriptionList is read and the
    // Subscriptions made before are kept, none POSTed again.
    // (This server still holds the one it "cancelled": two for the DERControlList; the
    // new engine keeps one and DELETEs the other.)
    let before = h.server.requests_to("POST", "/edev/1/sub").len();
    assert_eq!(h.server.subscriptions(), SUBSCRIBED.len() + 1);
    h.engine = Engine::new(config(), h.now).expect("engine");
    assert!(h.run_until(60, |h| {
        h.engine
            .subscriptions()
            .filter(|(_, s)| matches!(s, SubState::Active { location: Some(_) }))
            .count()
            == SUBSCRIBED.len()
    }));
    h.run_for(30);
    assert!(has(&h.requests(), "GET", "/edev/1/sub"));
    assert_eq!(h.server.requests_to("POST", "/edev/1/sub").len(), before);
    assert_eq!(h.server.subscriptions(), SUBSCRIBED.len());
    // A server that cannot list them (GET answers 405): everything POSTed afresh.
    h.server.force_status("/edev/1/sub", 405, None);
    h.engine = Engine::new(config(), h.now).expect("engine");
    h.run_for(3);
    h.server.clear_forced("/edev/1/sub");
    assert!(
        h.run_until(60, |h| h.server.requests_to("POST", "/edev/1/sub").len()
            >= before + SUBSCRIBED.len())
    );
}

#[test]
fn a_walk_from_the_top_deletes_and_makes_every_subscription_again() {
    let mut sc = scenario_900();
    sc.derp_list_poll_s = 60;
    let mut h = Harness::new(config(), sc);
    assert!(h.run_until(60, all_subscribed));
    h.run_for(70);
    let before = h.server.requests_to("POST", "/edev/1/sub").len();
    // The program list answers 404 once: the engine walks again from DeviceCapability.
    h.server.force_status("/edev/1/fsa/1/derp", 404, None);
    assert!(h.run_until(70, |h| {
        h.server
            .requests_to("GET", "/edev/1/fsa/1/derp")
            .last()
            .is_some_and(|r| r.at_ms + 1 >= h.elapsed_ms())
    }));
    h.server.clear_forced("/edev/1/fsa/1/derp");
    assert!(
        h.run_until(120, |h| h.server.requests_to("POST", "/edev/1/sub").len()
            >= before + SUBSCRIBED.len())
    );
    let deletes = h
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.starts_with("/edev/1/sub/"))
        .count();
    assert!(
        deletes >= SUBSCRIBED.len() - 1,
        "old subscriptions deleted: {deletes}"
    );
}

/// GEN-05..08, LOA-05..08 (the S-G/S-L variants of GEN-01..04 and LOA-01..04): with the
/// program lists polled every 900 s, an active control (`default` false) or a changed
/// DefaultDERControl (`default` true) of `mode` is in force within seconds of the
/// server's Notification for the DERControlList / DefaultDERControl.
fn by_notification(mode: ControlMode, default: bool) {
    let mut h = Harness::new(config(), scenario_900());
    assert!(h.run_until(60, all_subscribed));
    h.run_for(5);
    let w = 1234;
    let now = h.now_s();
    h.server.update(|s| {
        let p = &mut s.fsas[0][0];
        if default {
            match mode {
                ControlMode::ExpLimW => p.default_exp_lim_w = Some(w),
                ControlMode::ImpLimW => p.default_imp_lim_w = Some(w),
                ControlMode::GenLimW => p.default_gen_lim_w = Some(w),
                _ => p.default_load_lim_w = Some(w),
            }
        } else {
            let mut c = Control::new("DERC1", now, 300);
            match mode {
                ControlMode::ExpLimW => c.exp_lim_w = Some(w),
                ControlMode::ImpLimW => c.imp_lim_w = Some(w),
                ControlMode::GenLimW => c.gen_lim_w = Some(w),
                _ => c.load_lim_w = Some(w),
            }
            p.controls.push(c);
        }
    });
    let resource = if default {
        "/edev/1/derp/1/dderc"
    } else {
        "/edev/1/derp/1/derc"
    };
    h.notify(&notification(resource, 0))
        .expect("a Notification");
    assert!(
        h.run_until(5, |h| h
            .outcomes
            .last()
            .and_then(|(_, o)| o.active.watts(mode))
            == Some(f64::from(w))),
        "{} {w} W in force within 5 s of the notification",
        mode.name()
    );
}

#[test]
fn gen_05_active_export_limit_by_notification() {
    by_notification(ControlMode::ExpLimW, false);
}

#[test]
fn gen_06_active_generation_limit_by_notification() {
    by_notification(ControlMode::GenLimW, false);
}

#[test]
fn gen_07_default_export_limit_by_notification() {
    by_notification(ControlMode::ExpLimW, true);
}

#[test]
fn gen_08_default_generation_limit_by_notification() {
    by_notification(ControlMode::GenLimW, true);
}

#[test]
fn loa_05_active_import_limit_by_notification() {
    by_notification(ControlMode::ImpLimW, false);
}

#[test]
fn loa_06_active_load_limit_by_notification() {
    by_notification(ControlMode::LoadLimW, false);
}

#[test]
fn loa_07_default_import_limit_by_notification() {
    by_notification(ControlMode::ImpLimW, true);
}

#[test]
fn loa_08_default_load_limit_by_notification() {
    by_notification(ControlMode::LoadLimW, true);
}

#[test]
fn all_16_a_disconnect_arrives_by_notification() {
    let mut h = Harness::new(config(), scenario_900());
    assert!(h.run_until(60, all_subscribed));
    h.run_for(5);
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now, 300);
        c.connect = Some(false);
        s.fsas[0][0].controls.push(c);
    });
    h.notify(&notification("/edev/1/derp/1/derc", 0))
        .expect("a Notification");
    // genConnectStatus bits 0, 1 and 2 cleared in a DERStatus PUT within seconds.
    assert!(h.run_until(10, |h| {
        h.server
            .requests_to("PUT", "/edev/1/der/1/ders")
            .last()
            .and_then(|r| element_text(&r.body, "genConnectStatus"))
            .and_then(|g| element_text(&g, "value"))
            .is_some_and(|v| v == "00")
    }));
}
