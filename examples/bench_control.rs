//! Cost of one control cycle: merge the limits (utility event, fixed limits, two tariff
//! windows in a DST zone, price rule) and step the controller for three inverters, one of
//! them storage. Run: `cargo run --release --example bench_control`.

use csipd::config::Weekday;
use csipd::control::limits::{
    FixedLimits, Limit, LimitSource, MergeInputs, PriceRule, TariffWindow, UtilityControls, merge,
};
use csipd::control::{
    Controller, ControllerParams, FeedInPrice, InverterParams, PosixTz, PowerSample, Readings,
};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let tz = PosixTz::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").expect("valid TZ");
    let windows = [
        TariffWindow {
            name: "night".into(),
            days: Weekday::ALL.to_vec(),
            start_min: 22 * 60,
            end_min: 6 * 60,
            export_limit_w: 0,
            enabled: true,
        },
        TariffWindow {
            name: "peak".into(),
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            start_min: 16 * 60,
            end_min: 21 * 60,
            export_limit_w: 3000,
            enabled: true,
        },
    ];
    let inputs = MergeInputs {
        utility: UtilityControls {
            export_limit_w: Some(Limit::new(
                1500.0,
                LimitSource::UtilityEvent {
                    mrid: "3F2A9C0E11223344556677889900AABB".into(),
                },
                Some(1_800_000_000),
            )),
            generation_limit_w: Some(Limit::new(
                10_000.0,
                LimitSource::UtilityDefault {
                    program: "DERP-1".into(),
                },
                None,
            )),
            set_grad_w: Some(27),
            ..Default::default()
        },
        fixed: FixedLimits {
            export_limit_w: Some(5000),
            import_limit_w: Some(8000),
            ..Default::default()
        },
        windows: &windows,
        price_rule: Some(PriceRule {
            export_limit_w: 0.0,
            below_earn_c_per_kwh: 0.0,
        }),
        price: Some(FeedInPrice {
            earn_c_per_kwh: 3.2,
            interval_end_s: None,
        }),
        fallback: None,
        total_set_max_w: 13_000.0,
        total_max_charge_w: 0.0,
    };
    let inverter = |name: &str, rating_w: f64, max_charge_w: Option<f64>| InverterParams {
        name: name.into(),
        rating_w,
        max_charge_w,
    };
    let mut ctl = Controller::new(ControllerParams::new(
        vec![
            inverter("pv-east", 5000.0, None),
            inverter("pv-west", 3000.0, None),
            inverter("battery", 5000.0, Some(5000.0)),
        ],
        1500.0,
    ));

    let cycles: i64 = 1_000_000;
    let start_utc_s: i64 = 1_795_300_000;
    let started = Instant::now();
    let mut checksum = 0.0;
    for k in 0..cycles {
        let now_ms = k * 1000;
        let limits = merge(black_box(&inputs), &tz, start_utc_s + k);
        let wobble = (k % 7) as f64 * 40.0;
        let readings = Readings {
            meter: Some(PowerSample {
                w: -1400.0 - wobble,
                at_ms: now_ms,
            }),
            inverters: vec![
                Some(PowerSample {
                    w: 2500.0 + wobble,
                    at_ms: now_ms,
                }),
                Some(PowerSample {
                    w: 1200.0,
                    at_ms: now_ms,
                }),
                Some(PowerSample {
                    w: -800.0,
                    at_ms: now_ms,
                }),
            ],
        };
        let s = ctl.step(now_ms, &limits, black_box(&readings));
        checksum += s.total_allowed_w;
    }
    let elapsed = started.elapsed();
    println!(
        "{cycles} control cycles (merge + step, 3 inverters, 2 tariff windows): {:.3} s, {:.2} µs per cycle (checksum {checksum:.0})",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / cycles as f64
    );
}
