//! The simulated utility's dynamic tariff, sans IO: one TariffProfile (IEEE 2030.5
//! §10.6 Pricing, CSIP-AUS v1.3 PRC) with an import and an export RateComponent, each
//! with its ReadingType (Wh × 10^3: prices per kWh; flowDirection 1 import, 19 export)
//! and a TimeTariffIntervalList of price intervals, each with its one-block
//! ConsumptionTariffIntervalList.
//!
//! Intervals are [`INTERVAL_BLOCKS`] DOE blocks long (a virtual half hour, 60 s in the
//! default demo), counted from the day's origin; the current one and the next
//! [`LOOKAHEAD_INTERVALS`] are listed. Prices repeat every four intervals
//! ([`PRICES`]); 2030.5 prices are a cost to the customer, so a negative export price
//! is what the site earns and the one positive export price is an interval in which
//! exporting costs money (a negative feed-in price: csipd's price rule limits export to
//! 0 W then, when `utility_price_export` is on).
//!
//! The TariffProfileList's pollRate is one interval: each poll sees the current
//! interval and the next two, so the next price is always known. The lists carry no
//! `replyTo`, so no PriceResponses are asked for.

use super::schedule::DayPlan;
use super::{XMLNS, list};
use crate::clock::Now;

/// DOE blocks per price interval (a virtual half hour).
pub const INTERVAL_BLOCKS: u32 = 6;
/// Price intervals listed after the current one.
pub const LOOKAHEAD_INTERVALS: u64 = 2;
/// The TariffProfile's `pricePowerOfTenMultiplier`: prices are in 1/10,000 AUD.
pub const PRICE_POW10: i8 = -4;
/// (import, export) price per kWh in 1/10,000 AUD, by interval index modulo 4: the
/// export price is a credit (negative) but in interval 2, where exporting costs 3 c/kWh.
pub const PRICES: [(i32, i32); 4] = [(2800, -800), (3500, -500), (1500, 300), (2200, -200)];
/// The list of TariffProfiles the FunctionSetAssignments link (shared by every device).
pub const PROFILE_LIST: &str = "/tp";
/// The one TariffProfile.
const PROFILE: &str = "/tp/1";
/// RateComponent numbers: 1 import, 2 export.
const COMPONENTS: [(u32, &str, u8); 2] = [(1, "import", 1), (2, "export", 19)];

/// Real seconds per price interval.
pub fn interval_s(plan: &DayPlan) -> u32 {
    plan.block_s * INTERVAL_BLOCKS
}

/// The price interval index at `now` (0 before the origin).
pub fn interval_at(plan: &DayPlan, now: Now) -> u64 {
    let since = now.utc_s() - plan.origin_utc_s;
    if since <= 0 {
        0
    } else {
        (since / i64::from(interval_s(plan))) as u64
    }
}

/// The price of component `n` (1 import, 2 export) in interval `k`, 1/10,000 AUD/kWh.
pub fn price(n: u32, k: u64) -> i32 {
    let (import, export) = PRICES[(k % 4) as usize];
    if n == 1 { import } else { export }
}

/// Every path the tariff serves at `now` (for the schema checks of served resources).
pub fn paths(plan: &DayPlan, now: Now) -> Vec<String> {
    let mut out = vec![PROFILE_LIST.to_string(), PROFILE.to_string()];
    out.push(format!("{PROFILE}/rc"));
    for (n, _, _) in COMPONENTS {
        let rc = format!("{PROFILE}/rc/{n}");
        out.push(format!("{rc}/rt"));
        out.push(format!("{rc}/tti"));
        for k in listed(plan, now) {
            out.push(format!("{rc}/tti/{k}/cti"));
        }
        out.push(rc);
    }
    out
}

/// The interval indexes listed at `now`.
fn listed(plan: &DayPlan, now: Now) -> std::ops::RangeInclusive<u64> {
    let k = interval_at(plan, now);
    k..=k + LOOKAHEAD_INTERVALS
}

fn ns(top: bool) -> String {
    if top {
        format!(" {XMLNS}")
    } else {
        String::new()
    }
}

fn profile(plan: &DayPlan, top: bool) -> String {
    format!(
        r#"<TariffProfile{} href="{PROFILE}"><mRID>7A00{:028X}</mRID><description>Simulated dynamic tariff</description><currency>36</currency><pricePowerOfTenMultiplier>{PRICE_POW10}</pricePowerOfTenMultiplier><primacy>0</primacy><RateComponentListLink href="{PROFILE}/rc" all="{}"/><serviceCategoryKind>0</serviceCategoryKind></TariffProfile>"#,
        ns(top),
        plan.origin_utc_s as u64,
        COMPONENTS.len()
    )
}

fn component(plan: &DayPlan, n: u32, what: &str, now: Now, top: bool) -> String {
    let rc = format!("{PROFILE}/rc/{n}");
    format!(
        r#"<RateComponent{} href="{rc}"><mRID>7A{n:02X}{:028X}</mRID><description>{what} energy</description><ReadingTypeLink href="{rc}/rt"/><roleFlags>0000</roleFlags><TimeTariffIntervalListLink href="{rc}/tti" all="{}"/></RateComponent>"#,
        ns(top),
        plan.origin_utc_s as u64,
        listed(plan, now).count()
    )
}

fn interval(plan: &DayPlan, n: u32, k: u64, now: Now) -> String {
    let rc = format!("{PROFILE}/rc/{n}");
    let len = interval_s(plan);
    let start = plan.origin_utc_s + k as i64 * i64::from(len);
    let active = (start..start + i64::from(len)).contains(&now.utc_s());
    // Listed LOOKAHEAD_INTERVALS ahead of its start (never before the day began).
    let created = (start - i64::from(len) * LOOKAHEAD_INTERVALS as i64).max(plan.origin_utc_s);
    format!(
        r#"<TimeTariffInterval href="{rc}/tti/{k}"><mRID>7B{n:02X}{k:08X}{:020X}</mRID><description>{} price {k}</description><creationTime>{created}</creationTime><EventStatus><currentStatus>{}</currentStatus><dateTime>{created}</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus><interval><duration>{len}</duration><start>{start}</start></interval><ConsumptionTariffIntervalListLink href="{rc}/tti/{k}/cti" all="1"/><touTier>0</touTier></TimeTariffInterval>"#,
        plan.origin_utc_s as u64,
        COMPONENTS[(n - 1) as usize].1,
        u8::from(active)
    )
}

/// GET of `path` (under [`PROFILE_LIST`]) with list paging `query`; `None` for a path
/// the tariff does not have (404).
pub fn get(plan: &DayPlan, path: &str, query: &str, now: Now) -> Option<String> {
    let poll_s = interval_s(plan);
    if path == PROFILE_LIST {
        return Some(list(
            "TariffProfileList",
            PROFILE_LIST,
            Some(poll_s),
            &[profile(plan, false)],
            query,
        ));
    }
    if path == PROFILE {
        return Some(profile(plan, true));
    }
    let rest = path.strip_prefix(PROFILE)?;
    if rest == "/rc" {
        let items: Vec<String> = COMPONENTS
            .iter()
            .map(|(n, what, _)| component(plan, *n, what, now, false))
            .collect();
        return Some(list("RateComponentList", path, None, &items, query));
    }
    let parts: Vec<&str> = rest.strip_prefix("/rc/")?.split('/').collect();
    let (n, what, flow) = COMPONENTS
        .iter()
        .copied()
        .find(|(n, _, _)| parts.first() == Some(&n.to_string().as_str()))?;
    let rc = format!("{PROFILE}/rc/{n}");
    match parts[1..] {
        [] => Some(component(plan, n, what, now, true)),
        ["rt"] => Some(format!(
            r#"<ReadingType {XMLNS} href="{rc}/rt"><commodity>1</commodity><flowDirection>{flow}</flowDirection><powerOfTenMultiplier>3</powerOfTenMultiplier><uom>72</uom></ReadingType>"#
        )),
        ["tti"] => {
            let items: Vec<String> = listed(plan, now)
                .map(|k| interval(plan, n, k, now))
                .collect();
            // No pollRate: a TimeTariffIntervalList has none in the schema (the
            // TariffProfileList's applies).
            Some(list("TimeTariffIntervalList", path, None, &items, query))
        }
        ["tti", k, "cti"] => {
            let k: u64 = k.parse().ok()?;
            if !listed(plan, now).contains(&k) {
                return None;
            }
            let item = format!(
                r#"<ConsumptionTariffInterval href="{rc}/tti/{k}/cti/1"><consumptionBlock>1</consumptionBlock><price>{}</price><startValue>0</startValue></ConsumptionTariffInterval>"#,
                price(n, k)
            );
            Some(list(
                "ConsumptionTariffIntervalList",
                path,
                None,
                &[item],
                query,
            ))
        }
        _ => None,
    }
}
