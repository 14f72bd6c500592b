//! The simulated utility's tariff read by csipd's own engine, in memory on a virtual
//! clock: the engine walks from DeviceCapability to the TariffProfile, its import and
//! export RateComponents, their intervals and price blocks, and its price view shows
//! the price now and next for both directions, following the utility's four-interval
//! cycle (one interval in which exporting costs money).

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use csipd::clock::Now;
use csipd::csip::Engine;
use csipd::csip::pricing::{PriceDirection, RatePrice};
use csipd::http::{HttpError, Response, StatusError};
use csipd::sim::utility::schedule::DayPlan;
use csipd::sim::utility::tariff;
use csipd::sim::utility::{Request, Utility, UtilityOptions};

const ORIGIN: i64 = 1_760_000_000;

/// The engine and the utility, with a virtual clock.
struct Run {
    engine: Engine,
    utility: Utility,
    now: Now,
}

impl Run {
    fn new() -> Run {
        let plan = DayPlan::new(ORIGIN, 2880).expect("plan");
        let utility = Utility::new(UtilityOptions::for_plan(
            plan,
            csip_memory::LFDI,
            csip_memory::sfdi(),
        ));
        let now = Now {
            mono_ms: 0,
            utc_ms: ORIGIN * 1000,
        };
        let engine = Engine::new(csip_memory::engine_config(), now).expect("engine");
        Run {
            engine,
            utility,
            now,
        }
    }

    /// Answers every request at the current virtual instant.
    fn exchange_all(&mut self) {
        while let Some(request) = self.engine.poll_request() {
            let href = csipd::csip::context::href_path(&request.href).to_string();
            let (path, query) = href.split_once('?').unwrap_or((&href, ""));
            let reply = self.utility.handle(
                &Request {
                    method: request.method.as_str().to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    body: request.body.clone().unwrap_or_default().into_bytes(),
                },
                Some(csip_memory::LFDI),
                self.now,
            );
            let result: Result<Response, HttpError> = if reply.status < 400 {
                Ok(Response {
                    status: reply.status,
                    reason: String::new(),
                    headers: reply
                        .location
                        .map(|l| vec![("Location".to_string(), l)])
                        .unwrap_or_default(),
                    body: reply.body.into_bytes(),
                })
            } else {
                Err(HttpError::Status(StatusError {
                    method: request.method,
                    path: href.clone(),
                    status: reply.status,
                    reason: "simulated utility".into(),
                    retry_after: None,
                    headers: Vec::new(),
                    body: reply.body.into_bytes(),
                }))
            };
            self.engine.handle_response(request.id, result, self.now);
            while self.engine.poll_event().is_some() {}
        }
    }

    /// Runs until virtual second `until_s` after the origin.
    fn run_to(&mut self, until_s: i64) {
        let end_ms = (until_s * 1000) as u64;
        loop {
            if self
                .engine
                .poll_timeout()
                .is_some_and(|t| t <= self.now.mono_ms)
            {
                self.engine.handle_timeout(self.now);
            }
            while self.engine.poll_event().is_some() {}
            self.exchange_all();
            if self.now.mono_ms >= end_ms {
                return;
            }
            let next = self
                .engine
                .poll_timeout()
                .unwrap_or(end_ms)
                .clamp(self.now.mono_ms + 1, end_ms)
                .min(self.now.mono_ms + 1000);
            self.now = self.now.plus_ms(next - self.now.mono_ms);
        }
    }

    fn prices(&self) -> Vec<RatePrice> {
        self.engine.status().prices
    }
}

fn of(prices: &[RatePrice], direction: PriceDirection) -> &RatePrice {
    prices
        .iter()
        .find(|p| p.direction == direction)
        .unwrap_or_else(|| panic!("{direction:?} in {prices:#?}"))
}

/// AUD per kWh now and next.
fn now_next(p: &RatePrice) -> (Option<f64>, Option<f64>) {
    (
        p.current.as_ref().and_then(|c| c.first_price_per_unit()),
        p.next.as_ref().and_then(|n| n.first_price_per_unit()),
    )
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn the_engine_reads_the_simulated_tariff_now_and_next() {
    let mut run = Run::new();
    let plan = DayPlan::new(ORIGIN, 2880).expect("plan");
    let interval_s = i64::from(tariff::interval_s(&plan));
    assert_eq!(interval_s, 60, "a virtual half hour in the default demo");
    // Within the first interval the whole tree is read.
    run.run_to(30);
    let prices = run.prices();
    assert_eq!(prices.len(), 2, "{prices:#?}");
    let aud = |n: i32| f64::from(n) * 1e-4;
    for (direction, n) in [(PriceDirection::Import, 1), (PriceDirection::Export, 2)] {
        let p = of(&prices, direction);
        assert_eq!(p.unit, "kWh");
        assert_eq!(p.currency, Some(36));
        let (now, next) = now_next(p);
        assert!(close(now, aud(tariff::price(n, 0))), "{direction:?} {p:#?}");
        assert!(
            close(next, aud(tariff::price(n, 1))),
            "{direction:?} {p:#?}"
        );
        let current = p.current.as_ref().expect("current");
        assert_eq!(current.start_unix_s, ORIGIN);
        assert_eq!(current.end_unix_s, ORIGIN + interval_s);
    }
    // Every interval of the cycle is seen as it comes: in interval 2 exporting costs
    // money (a positive export price), in the others it earns.
    let mut export_now = Vec::new();
    for k in 1..=4 {
        run.run_to(k * interval_s + 30);
        let (now, next) = now_next(of(&run.prices(), PriceDirection::Export));
        assert!(
            close(now, aud(tariff::price(2, k as u64))),
            "interval {k}: {now:?}"
        );
        assert!(
            close(next, aud(tariff::price(2, k as u64 + 1))),
            "interval {k}: {next:?}"
        );
        export_now.push(now.unwrap_or_default());
    }
    assert_eq!(
        export_now.iter().filter(|p| **p > 0.0).count(),
        1,
        "one costly export interval per cycle: {export_now:?}"
    );
    // No list left an item out, nothing failed.
    let errors: Vec<_> = run
        .engine
        .status()
        .polls
        .into_iter()
        .filter(|p| p.last_error.is_some())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
