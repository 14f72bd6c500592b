//! The simulated utility's XML against the 2030.5 / CSIP-AUS schemas (xmllint with
//! csipaus-core.xsd, unpacked by tests/setup.d/20-schemas.sh): every resource it serves,
//! after a client has created a usage point, answered a control and sent its
//! ConnectionPoint (bodies made by csipd's own writer), on a virtual clock — including
//! the moments the cancellation and the randomised block are listed.

#[path = "common/schema.rs"]
mod schema;

use csipd::clock::Now;
use csipd::sep2::{self, WriteProfile};
use csipd::sim::utility::schedule::{CANCELLED_BLOCK, DayPlan};
use csipd::sim::utility::{RESPONSE_PATH, Request, Utility, UtilityOptions};

const ORIGIN: i64 = 1_760_000_000;
const LFDI: &str = "3E4F45AB31EDFE5B67E343E5E4562E31984E23E5";

fn send(u: &mut Utility, method: &str, path: &str, body: String, now: Now) -> u16 {
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
    .status
}

#[test]
fn every_served_resource_is_schema_valid() {
    let plan = DayPlan::new(ORIGIN, 2880).expect("plan");
    let mut u = Utility::new(UtilityOptions::for_plan(plan, LFDI, 167_261_211_391));
    let p = WriteProfile::default();
    let now = Now::at(ORIGIN + 1);
    let mup = sep2::MirrorUsagePoint {
        mrid: "0123456789ABCDEF0123456789A0A3AC".into(),
        role_flags: 0x49,
        status: 1,
        device_lfdi: LFDI.into(),
        ..Default::default()
    };
    assert_eq!(
        send(&mut u, "POST", "/mup", sep2::write(&mup, p).unwrap(), now),
        201
    );
    let cp = sep2::ConnectionPoint {
        href: None,
        connection_point_id: "4102345678".into(),
    };
    assert_eq!(
        send(
            &mut u,
            "PUT",
            "/edev/1/cp",
            sep2::write(&cp, p).unwrap(),
            now
        ),
        204
    );
    let rsp = sep2::DerControlResponse {
        created_date_time: Some(now.utc_s()),
        end_device_lfdi: LFDI.into(),
        status: Some(1),
        subject: plan.block(0).unwrap().mrid,
        ..Default::default()
    };
    assert_eq!(
        send(
            &mut u,
            "POST",
            RESPONSE_PATH,
            sep2::write(&rsp, p).unwrap(),
            now
        ),
        201
    );

    let mut problems = Vec::new();
    let mut checked = 0;
    // At the start, once the cancellation is listed, and in the evening (import limits).
    let cancelled_at = plan
        .block(CANCELLED_BLOCK)
        .unwrap()
        .cancelled_at_utc_s
        .unwrap();
    for t in [
        now,
        Now::at(cancelled_at + 1),
        Now::at(ORIGIN + 96 * 10 + 1),
    ] {
        for (path, xml) in u.served_resources(t) {
            checked += 1;
            if let Some(problem) = schema::schema_problem(&xml) {
                let errors: Vec<&str> = problem
                    .lines()
                    .filter(|l| !l.contains("parser warning"))
                    .collect();
                problems.push(format!("{path}: {}\n{:.600}", errors.join("\n"), xml));
            }
        }
    }
    assert!(checked > 20, "only {checked} resources served");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
