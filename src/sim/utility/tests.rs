//! The sans-IO simulated utility against csipd's own sep2 reader and writer, on a
//! virtual clock.

use super::*;
use crate::sep2::{self, List};

const ORIGIN: i64 = 1_760_000_000;
const LFDI: &str = "3E4F45AB31EDFE5B67E343E5E4562E31984E23E5";

fn utility() -> Utility {
    let plan = DayPlan::new(ORIGIN, 2880).expect("plan");
    Utility::new(UtilityOptions::for_plan(plan, LFDI, 167_261_211_391))
}

fn get(u: &mut Utility, path: &str, now: Now) -> Reply {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    u.handle(
        &Request {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            body: Vec::new(),
        },
        Some(LFDI),
        now,
    )
}

fn send(u: &mut Utility, method: &str, path: &str, body: String, now: Now) -> Reply {
    u.handle(
        &Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            body: body.into_bytes(),
        },
        Some(LFDI),
        now,
    )
}

fn body<T: sep2::Readable>(r: &Reply) -> T {
    assert_eq!(r.status, 200, "{r:?}");
    sep2::read::<T>(r.body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[test]
fn every_resource_reads_with_csipds_reader() {
    let mut u = utility();
    let now = Now::at(ORIGIN + 1);
    let dcap: sep2::DeviceCapability = body(&get(&mut u, "/dcap", now));
    assert!(dcap.poll_rate_s.is_some());
    let tm: sep2::Time = body(&get(&mut u, "/tm", now));
    assert_eq!(tm.current_time, ORIGIN + 1);
    let edevs: List<sep2::EndDevice> = body(&get(&mut u, "/edev?s=0&l=1", now));
    assert_eq!(edevs.items[0].lfdi.as_deref(), Some(LFDI));
    let edev: sep2::EndDevice = body(&get(&mut u, "/edev/1", now));
    assert!(edev.connection_point_link.is_some(), "{edev:?}");
    assert_eq!(edev.post_rate_s, Some(20));
    let rg: sep2::Registration = body(&get(&mut u, "/edev/1/rg", now));
    assert_eq!(rg.pin, 111_115);
    let fsas: List<sep2::FunctionSetAssignments> = body(&get(&mut u, "/edev/1/fsa", now));
    assert_eq!(fsas.items.len(), 1);
    let derps: List<sep2::DerProgram> = body(&get(&mut u, "/edev/1/fsa/1/derp", now));
    assert_eq!(derps.items.len(), 1);
    let dderc: sep2::DefaultDerControl = body(&get(&mut u, "/derp/1/dderc", now));
    assert_eq!(
        dderc.base.op_mod_exp_lim_w.map(|p| p.watts()),
        Some(f64::from(DEFAULT_EXPORT_LIMIT_W))
    );
    let dercs: List<sep2::DerControl> = body(&get(&mut u, "/derp/1/derc?s=0&l=100", now));
    assert_eq!(dercs.all, 12);
    let first = &dercs.items[0];
    assert_eq!(first.response_required, Some(3));
    assert_eq!(first.reply_to.as_deref(), Some(RESPONSE_PATH));
    assert_eq!(first.interval.start, ORIGIN);
    assert!(first.base.op_mod_exp_lim_w.is_some());
    // Morning blocks limit export only (import limits come with the evening peak).
    assert!(first.base.op_mod_imp_lim_w.is_none());
    assert!(dercs.items.iter().any(|c| c.randomize_start_s == Some(5)));
    // Paging: two at a time.
    let page: List<sep2::DerControl> = body(&get(&mut u, "/derp/1/derc?s=2&l=2", now));
    assert_eq!((page.all, page.results, page.items.len()), (12, 2, 2));
    assert_eq!(page.items[0].mrid, dercs.items[2].mrid);
    let one: sep2::DerControl = body(&get(&mut u, &format!("/derp/1/derc/{}", first.mrid), now));
    assert_eq!(one.mrid, first.mrid);
    let ders: List<sep2::Der> = body(&get(&mut u, "/edev/1/der", now));
    assert!(ders.items[0].der_status_link.is_some());
    let _: List<sep2::MirrorUsagePoint> = body(&get(&mut u, "/mup", now));
    let _: List<sep2::LogEvent> = body(&get(&mut u, "/edev/1/lel", now));
    // The cancellation shows in the list once it happened.
    let later = Now::at(ORIGIN + 55);
    let dercs: List<sep2::DerControl> = body(&get(&mut u, "/derp/1/derc?l=100", later));
    let cancelled = dercs
        .items
        .iter()
        .find(|c| {
            c.mrid
                == u.options()
                    .plan
                    .block(schedule::CANCELLED_BLOCK)
                    .unwrap()
                    .mrid
        })
        .expect("cancelled block listed");
    assert_eq!(cancelled.event_status.current_status.code(), 2);
}

#[test]
fn only_the_registered_device_gets_resources_and_the_report_is_open() {
    let mut u = utility();
    let now = Now::at(ORIGIN);
    let req = Request {
        method: "GET".into(),
        path: "/dcap".into(),
        query: String::new(),
        body: Vec::new(),
    };
    assert_eq!(u.handle(&req, None, now).status, 403);
    assert_eq!(u.handle(&req, Some("00FF"), now).status, 403);
    assert_eq!(u.handle(&req, Some(&LFDI.to_lowercase()), now).status, 200);
    let report = Request {
        path: "/sim/report".into(),
        ..req
    };
    let r = u.handle(&report, None, now);
    assert_eq!(r.status, 200);
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(json["forbidden"], 2);
    assert_eq!(json["schedule"]["virtual_time"], "09:00");
}

#[test]
fn responses_readings_and_puts_are_checked_and_recorded() {
    let mut u = utility();
    let now = Now::at(ORIGIN + 3);
    let mrid = u.options().plan.block(0).unwrap().mrid;
    let profile = sep2::WriteProfile::default();
    for status in [1u8, 2, 2] {
        let rsp = sep2::DerControlResponse {
            created_date_time: Some(now.utc_s()),
            end_device_lfdi: LFDI.into(),
            status: Some(status),
            subject: mrid.clone(),
            ..Default::default()
        };
        let r = send(
            &mut u,
            "POST",
            RESPONSE_PATH,
            sep2::write(&rsp, profile).unwrap(),
            now,
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
    let rep = u.report().clone();
    assert_eq!(rep.responses.len(), 2);
    assert!(rep.responses.iter().all(|r| r.known_control));
    assert_eq!(rep.duplicate_responses, 1);
    // The response list holds them all, newest first.
    let r = get(&mut u, RESPONSE_PATH, now);
    assert!(
        r.body.contains(r#"<ResponseList"#) && r.body.contains(r#"all="3""#),
        "{}",
        r.body
    );
    assert_eq!(r.body.matches("<Response>").count(), 3);

    // A MirrorUsagePoint, then readings on and off the 20 s postRate boundary.
    let mup = sep2::MirrorUsagePoint {
        mrid: "0123456789ABCDEF0123456789A0A3AC".into(),
        role_flags: 0x49,
        status: 1,
        device_lfdi: LFDI.into(),
        ..Default::default()
    };
    let r = send(
        &mut u,
        "POST",
        "/mup",
        sep2::write(&mup, profile).unwrap(),
        now,
    );
    assert_eq!((r.status, r.location.as_deref()), (201, Some("/mup/1")));
    let r = send(
        &mut u,
        "POST",
        "/mup",
        sep2::write(&mup, profile).unwrap(),
        now,
    );
    assert_eq!(r.location.as_deref(), Some("/mup/1"), "same mRID, same MUP");
    for start in [ORIGIN - 20, ORIGIN - 7] {
        let mmr = sep2::MirrorMeterReading {
            mrid: "0123456789ABCDEF0123456789B0A3AC".into(),
            reading: Some(sep2::Reading {
                time_period: Some(sep2::DateTimeInterval {
                    duration_s: 20,
                    start,
                }),
                value: Some(1234),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = send(
            &mut u,
            "POST",
            "/mup/1",
            sep2::write(&mmr, profile).unwrap(),
            now,
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
    let rep = u.report();
    assert_eq!(rep.readings_accepted, 2);
    assert_eq!(rep.readings_on_post_rate_boundary, 1);
    assert_eq!(rep.readings_off_boundary, 1);
    let listed: List<sep2::MirrorUsagePoint> = body(&get(&mut u, "/mup", now));
    assert_eq!(listed.items[0].post_rate_s, Some(20));

    // A bad body is refused with a reason and recorded; a good PUT is stored.
    let r = send(
        &mut u,
        "PUT",
        "/edev/1/der/1/ders",
        "<DERStatus><oops".into(),
        now,
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("DERStatus"), "{}", r.body);
    assert_eq!(u.report().rejected.len(), 1);
    let cp = sep2::ConnectionPoint {
        href: None,
        connection_point_id: "4102345678".into(),
    };
    let r = send(
        &mut u,
        "PUT",
        "/edev/1/cp",
        sep2::write(&cp, profile).unwrap(),
        now,
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        u.report().connection_point_id.as_deref(),
        Some("4102345678")
    );
    let got: sep2::ConnectionPoint = body(&get(&mut u, "/edev/1/cp", now));
    assert_eq!(got.connection_point_id, "4102345678");
}

/// A second certificate from the lab CA is registered at its first request with its own
/// EndDevice; it cannot read the lab device's tree or usage points, and the report has
/// a record for each device.
#[test]
fn any_device_of_the_lab_ca_is_registered_with_its_own_end_device() {
    const OTHER: &str = "00112233445566778899AABBCCDDEEFF00112233";
    let mut u = utility();
    let now = Now::at(ORIGIN + 1);
    let req = |path: &str| Request {
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
        body: Vec::new(),
    };
    let r = u.handle(&req("/edev"), Some(OTHER), now);
    let edevs: List<sep2::EndDevice> = body(&r);
    assert_eq!(edevs.items.len(), 1, "only its own EndDevice is listed");
    assert_eq!(edevs.items[0].lfdi.as_deref(), Some(OTHER));
    assert_eq!(edevs.items[0].href.as_deref(), Some("/edev/2"));
    let fsas: List<sep2::FunctionSetAssignments> =
        body(&u.handle(&req("/edev/2/fsa"), Some(OTHER), now));
    assert_eq!(fsas.items.len(), 1);
    assert_eq!(u.handle(&req("/edev/1"), Some(OTHER), now).status, 403);
    assert_eq!(u.handle(&req("/edev/2"), Some(LFDI), now).status, 403);

    // Its usage point is its own: not listed for the lab device, and a MUP naming
    // another device's LFDI is refused.
    let profile = sep2::WriteProfile::default();
    let mup = |lfdi: &str| sep2::MirrorUsagePoint {
        mrid: "0123456789ABCDEF0123456789A0A3AC".into(),
        role_flags: 0x49,
        status: 1,
        device_lfdi: lfdi.into(),
        ..Default::default()
    };
    let post = |u: &mut Utility, lfdi: &str, who: &str| {
        u.handle(
            &Request {
                method: "POST".into(),
                path: "/mup".into(),
                query: String::new(),
                body: sep2::write(&mup(lfdi), profile).unwrap().into_bytes(),
            },
            Some(who),
            now,
        )
    };
    assert_eq!(post(&mut u, OTHER, OTHER).status, 201);
    assert_eq!(post(&mut u, LFDI, OTHER).status, 400);
    assert_eq!(post(&mut u, LFDI, LFDI).location.as_deref(), Some("/mup/2"));
    let own: List<sep2::MirrorUsagePoint> = body(&u.handle(&req("/mup"), Some(OTHER), now));
    assert_eq!(own.items.len(), 1);
    assert_eq!(own.items[0].device_lfdi, OTHER);
    assert_eq!(u.handle(&req("/mup/2"), Some(OTHER), now).status, 403);

    let devices = &u.report().devices;
    assert_eq!(devices.len(), 2);
    assert_eq!(
        (devices[0].registered_by, devices[1].registered_by),
        ("lab", "certificate")
    );
    assert_eq!(devices[1].edev_href, "/edev/2");
    assert_eq!(devices[1].end_device_reads, 1);
    assert_eq!((devices[1].usage_points, devices[1].rejected), (1, 1));
    assert_eq!(devices[0].usage_points, 1);
}

#[test]
fn first_requests_keep_the_newest_few() {
    let mut u = utility();
    for i in 0..FIRST_REQUESTS_KEPT as i64 + 8 {
        let req = Request {
            method: "GET".into(),
            path: format!("/dcap{i}"),
            query: String::new(),
            body: Vec::new(),
        };
        let now = Now {
            mono_ms: i as u64,
            utc_ms: 1_000 + i,
        };
        u.record_first_request(&req, now);
    }
    let firsts = &u.report().first_requests;
    assert_eq!(firsts.len(), FIRST_REQUESTS_KEPT);
    assert_eq!(
        firsts.front().map(|f| f.request.as_str()),
        Some("GET /dcap8")
    );
    assert_eq!(
        firsts.back().map(|f| f.at_unix_ms),
        Some(1_000 + FIRST_REQUESTS_KEPT as i64 + 7)
    );
}
