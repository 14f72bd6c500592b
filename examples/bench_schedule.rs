//! Scheduler measurements (README "Measurements"):
//! 1. three simulated days of a realistic CSIP-AUS schedule (5-minute export/import
//!    envelopes published a day ahead, plus a lower-priority program's daily evening
//!    curtailment), evaluated the way the engine does it: after every 60 s poll and at
//!    every `next_change_s`;
//! 2. the cost of one evaluation with 1,000 events listed (first sight and steady state).
//!
//! Run: `cargo run --release --example bench_schedule`

use csipd::schedule::{
    ActivePower, ControlSet, DefaultControl, Event, Input, Program, Rng, State, evaluate,
    evaluate_owned,
};
use std::time::Instant;

const DAY_S: i64 = 86_400;
const ENVELOPE_S: i64 = 300;
const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn program(mrid: &str, primacy: u8, exp_w: i32, imp_w: i32) -> Program {
    Program {
        mrid: mrid.to_string(),
        fsa: format!("/edev/1/fsa/{primacy}"),
        primacy,
        default_control: Some(DefaultControl {
            mrid: format!("{mrid}-dderc"),
            controls: ControlSet {
                exp_lim_w: Some(ActivePower::from_watts(exp_w)),
                imp_lim_w: Some(ActivePower::from_watts(imp_w)),
                ..ControlSet::default()
            },
            set_grad_w: Some(27),
            enter_service: Default::default(),
        }),
    }
}

/// A 5-minute envelope whose export limit follows a daily solar-hours shape.
fn envelope(k: i64, start: i64) -> Event {
    let hour = (start - T0).rem_euclid(DAY_S) / 3600;
    let exp_w = if (10..15).contains(&hour) {
        1500 + (k % 7) as i32 * 100
    } else {
        5000
    };
    let controls = ControlSet {
        exp_lim_w: Some(ActivePower {
            value: exp_w / 10,
            multiplier: 1,
        }),
        imp_lim_w: Some(ActivePower::from_watts(7000 + (k % 5) as i32 * 100)),
        ..ControlSet::default()
    };
    let mut e = Event::new(
        &format!("{k:032X}"),
        "DERP1",
        start - DAY_S,
        start,
        ENVELOPE_S as u32,
        controls,
    );
    e.response_required = 0x03;
    e.reply_to = Some("/rsps/1/rsp".to_string());
    e
}

fn schedule(days: i64) -> Vec<Event> {
    let mut events: Vec<Event> = (0..days * DAY_S / ENVELOPE_S)
        .map(|k| envelope(k, T0 + k * ENVELOPE_S))
        .collect();
    for d in 0..days {
        let start = T0 + d * DAY_S + 18 * 3600;
        let mut e = Event::new(
            &format!("EVENING{d:026}"),
            "DERP2",
            start - DAY_S,
            start,
            7200,
            ControlSet {
                gen_lim_w: Some(ActivePower::from_watts(3000)),
                ..ControlSet::default()
            },
        );
        e.randomize_start_s = 120;
        e.response_required = 0x03;
        events.push(e);
    }
    events.sort_by_key(|e| e.start_s);
    events
}

/// CPU time this process has run, from Linux's /proc/self/schedstat (nanoseconds), so
/// the figure stays honest on a machine shared with other builds. `None` elsewhere.
fn cpu_time_s() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn main() {
    let programs = vec![program("DERP1", 1, 1500, 1500), program("DERP2", 2, 0, 0)];

    // 1. Three days, evaluated after each poll and at each change.
    let days = 3;
    let events = schedule(days);
    let mut rng = Rng::new(1);
    let mut state = State::default();
    let (mut evaluations, mut responses, mut max_listed) = (0u64, 0usize, 0usize);
    let clock = Instant::now();
    let cpu_before = cpu_time_s();
    let mut now = T0;
    let end = T0 + days * DAY_S;
    while now < end {
        // The server lists the last hour and the next day.
        let lo = events.partition_point(|e| e.start_s < now - 3600);
        let hi = events.partition_point(|e| e.start_s < now + DAY_S);
        let listed = &events[lo..hi];
        max_listed = max_listed.max(listed.len());
        let out = evaluate_owned(
            &Input {
                programs: &programs,
                events: listed,
                now_s: now,
            },
            &mut rng,
            std::mem::take(&mut state),
        );
        evaluations += 1;
        responses += out.responses.len();
        state = out.state;
        let next_poll = now + 60;
        now = out.next_change_s.map_or(next_poll, |n| n.min(next_poll));
    }
    let three_days = clock.elapsed();
    let cpu_s = cpu_before.zip(cpu_time_s()).map(|(a, b)| b - a);
    println!(
        "3 days of 5-minute envelopes: {} events, up to {max_listed} listed at once, \
         {evaluations} evaluations, {responses} responses: {:.1} ms wall, {} CPU, \
         {:.1} us wall per evaluation",
        events.len(),
        three_days.as_secs_f64() * 1e3,
        cpu_s.map_or("n/a".to_string(), |c| format!("{:.1} ms", c * 1e3)),
        three_days.as_secs_f64() * 1e6 / evaluations as f64
    );

    // 2. One evaluation with 1,000 events listed.
    let thousand: Vec<Event> = schedule(4).into_iter().take(1000).collect();
    let input = Input {
        programs: &programs,
        events: &thousand,
        now_s: T0 + 6 * 3600,
    };
    let rounds = 200;
    let cpu_first = cpu_time_s();
    let clock = Instant::now();
    let mut warm = State::default();
    for _ in 0..rounds {
        let mut rng = Rng::new(7);
        warm = evaluate(&input, &mut rng, &State::default()).state;
    }
    let first = clock.elapsed() / rounds;
    let first_cpu = cpu_first
        .zip(cpu_time_s())
        .map(|(a, b)| (b - a) / f64::from(rounds));
    let states: Vec<State> = (0..rounds).map(|_| warm.clone()).collect();
    let cpu_steady = cpu_time_s();
    let clock = Instant::now();
    let mut active = 0;
    for previous in states {
        let mut rng = Rng::new(7);
        let out = evaluate_owned(&input, &mut rng, previous);
        active += out.active.iter().count();
    }
    let steady = clock.elapsed() / rounds;
    let steady_cpu = cpu_steady
        .zip(cpu_time_s())
        .map(|(a, b)| (b - a) / f64::from(rounds));
    let ms = |c: Option<f64>| c.map_or("n/a".to_string(), |c| format!("{:.2} ms", c * 1e3));
    println!(
        "1,000 events: first evaluation (all new) {:.2} ms wall / {} CPU, steady \
         evaluation {:.2} ms wall / {} CPU ({} modes active)",
        first.as_secs_f64() * 1e3,
        ms(first_cpu),
        steady.as_secs_f64() * 1e3,
        ms(steady_cpu),
        active / rounds as usize
    );
}
