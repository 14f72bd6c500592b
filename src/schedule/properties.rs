//! Property tests over random schedules, from our own seeded generator (so a failure
//! prints the seed and replays exactly). Each case builds random programs, defaults and
//! events that appear, get cancelled (with or without randomization), get marked
//! superseded or vanish at random times, then steps time irregularly and checks:
//! - at most one value per mode, and it is the right one: the highest-precedence running
//!   event that sets the mode, else the highest-precedence default, else none;
//! - per event, Received before Started before its ending; Completed only after Started;
//! - no response key is ever due twice;
//! - calling again with the output state gives the same answer and nothing new.

use super::scenarios::{derc, program, watts};
use super::*;
use std::collections::BTreeSet;

const T0: i64 = 1_800_000_000;

/// (event, listed from, cancelled/superseded at with that status, vanishes at)
type Scripted = (Event, i64, Option<(i64, StatusCode)>, Option<i64>);

struct Case {
    programs: Vec<Program>,
    events: Vec<Scripted>,
}

fn random_controls(g: &mut Rng) -> ControlSet {
    let mut c = ControlSet::default();
    let pick = |g: &mut Rng| g.range_inclusive(0, 2) == 0;
    if pick(g) {
        c.exp_lim_w = Some(watts(g.range_inclusive(0, 10_000) as f64));
    }
    if pick(g) {
        c.imp_lim_w = Some(ActivePower {
            value: g.range_inclusive(0, 100) as i32,
            multiplier: g.range_inclusive(0, 2) as i8,
        });
    }
    if pick(g) {
        c.gen_lim_w = Some(watts(g.range_inclusive(0, 10_000) as f64));
    }
    if pick(g) {
        c.load_lim_w = Some(watts(g.range_inclusive(0, 10_000) as f64));
    }
    if pick(g) {
        c.connect = Some(g.range_inclusive(0, 1) == 1);
    }
    if pick(g) {
        c.energize = Some(g.range_inclusive(0, 1) == 1);
    }
    if pick(g) {
        c.max_lim_hundredths_pct = Some(g.range_inclusive(0, 10_000) as u16);
    }
    if pick(g) {
        c.fixed_w_hundredths_pct = Some(g.range_inclusive(0, 20_000) as i16 - 10_000);
    }
    c
}

fn random_case(g: &mut Rng) -> Case {
    let n_programs = g.range_inclusive(1, 4) as usize;
    let programs = (0..n_programs)
        .map(|k| {
            let default = (g.range_inclusive(0, 3) > 0).then(|| DefaultControl {
                mrid: format!("D{k}"),
                controls: random_controls(g),
                set_grad_w: (g.range_inclusive(0, 1) == 1)
                    .then(|| g.range_inclusive(1, 500) as u16),
                enter_service: Default::default(),
            });
            program(&format!("P{k}"), g.range_inclusive(0, 3) as u8, default)
        })
        .collect();
    let n_events = g.range_inclusive(1, 14) as usize;
    let events = (0..n_events)
        .map(|k| {
            let prog = g.range_inclusive(0, n_programs as i64) as usize; // == n: unknown
            let created = T0 + g.range_inclusive(-600, 3000);
            let start = created + g.range_inclusive(-900, 1800);
            let dur = g.range_inclusive(0, 1200) as u32;
            let mut e = derc(&format!("E{k}"), &format!("P{prog}"), created, start, dur);
            e.controls = random_controls(g);
            e.response_required = g.range_inclusive(0, 3) as u8;
            if g.range_inclusive(0, 2) == 0 {
                e.randomize_start_s = g.range_inclusive(-120, 120) as i32;
                e.randomize_duration_s = g.range_inclusive(-120, 120) as i32;
            }
            if g.range_inclusive(0, 3) == 0 {
                e.ramp_tms = Some(g.range_inclusive(0, 6000) as u16);
            }
            let listed = created.max(T0 - 600) + g.range_inclusive(0, 30);
            let change = (g.range_inclusive(0, 3) == 0).then(|| {
                let status = match g.range_inclusive(0, 2) {
                    0 => StatusCode::Cancelled,
                    1 => StatusCode::CancelledWithRandomization,
                    _ => StatusCode::Superseded,
                };
                (listed + g.range_inclusive(0, 2000), status)
            });
            let vanish =
                (g.range_inclusive(0, 5) == 0).then(|| listed + g.range_inclusive(0, 3000));
            (e, listed, change, vanish)
        })
        .collect();
    Case { programs, events }
}

/// The server's list at `now`.
fn listed_at(case: &Case, now: i64) -> Vec<Event> {
    case.events
        .iter()
        .filter(|(_, from, _, vanish)| *from <= now && vanish.is_none_or(|v| now < v))
        .map(|(e, _, change, _)| {
            let mut e = e.clone();
            if let Some((at, status)) = change
                && *at <= now
            {
                e.status.current = *status;
                e.status.date_time_s = *at;
            }
            e
        })
        .collect()
}

fn precedence_key(p: &Program) -> (u8, &str) {
    (p.primacy, p.mrid.as_str())
}

/// Checks the active values against an independent reading of the state.
fn check_active(seed: u64, now: i64, programs: &[Program], events: &[Event], out: &Outcome) {
    let primacy = |mrid: &str| programs.iter().find(|p| p.mrid == mrid).map(|p| p.primacy);
    for mode in ControlMode::ALL {
        let running: Vec<&Event> = events
            .iter()
            .filter(|e| {
                e.controls.get(mode).is_some()
                    && out.state.events.get(&e.mrid).is_some_and(|r| {
                        r.started_at_s.is_some_and(|s| s <= now) && r.ended.is_none()
                    })
            })
            .collect();
        for e in &running {
            let r = &out.state.events[&e.mrid];
            let eff_start = e.start_s + i64::from(r.start_offset_s);
            let eff_end =
                eff_start + (i64::from(e.duration_s) + i64::from(r.duration_offset_s)).max(1);
            assert!(
                eff_start <= now && now < eff_end,
                "seed {seed} t {now}: {} runs outside its window {eff_start}..{eff_end}",
                e.mrid
            );
            assert!(
                (-120..=120).contains(&r.start_offset_s)
                    && r.start_offset_s.signum() * e.randomize_start_s.signum() >= 0,
                "seed {seed}: draw {} outside randomizeStart {}",
                r.start_offset_s,
                e.randomize_start_s
            );
        }
        let expected_event = running.iter().min_by(|a, b| {
            (primacy(&a.program_mrid), -a.start_s, -a.creation_time_s)
                .cmp(&(primacy(&b.program_mrid), -b.start_s, -b.creation_time_s))
                .then(b.mrid.cmp(&a.mrid))
        });
        let got = out.active.get(mode);
        match (expected_event, got) {
            (Some(e), Some(a)) => {
                assert_eq!(
                    a.source,
                    Source::Event {
                        event_mrid: e.mrid.clone(),
                        program_mrid: e.program_mrid.clone()
                    },
                    "seed {seed} t {now} {mode:?}"
                );
                assert_eq!(Some(a.value.clone()), e.controls.get(mode), "seed {seed}");
            }
            (None, got) => {
                let mut defaults: Vec<&Program> = programs
                    .iter()
                    .filter(|p| {
                        p.default_control
                            .as_ref()
                            .is_some_and(|d| d.controls.get(mode).is_some())
                    })
                    .collect();
                defaults.sort_by(|a, b| precedence_key(a).cmp(&precedence_key(b)));
                match (defaults.first(), got) {
                    (Some(p), Some(a)) => {
                        assert!(
                            matches!(&a.source, Source::Default { program_mrid, .. } if *program_mrid == p.mrid),
                            "seed {seed} t {now} {mode:?}: {:?} instead of {}'s default",
                            a.source,
                            p.mrid
                        );
                    }
                    (None, None) => {}
                    (d, g) => panic!("seed {seed} t {now} {mode:?}: default {d:?} vs {g:?}"),
                }
            }
            (Some(e), None) => panic!("seed {seed} t {now} {mode:?}: {} runs, no value", e.mrid),
        }
        if let Some(a) = got {
            assert!(
                a.until_s.is_none_or(|u| u > now),
                "seed {seed}: until in the past"
            );
        }
    }
}

#[test]
fn random_schedules_keep_the_invariants() {
    for seed in 0..400u64 {
        let mut g = Rng::new(seed ^ 0xC51D);
        let case = random_case(&mut g);
        let mut rng = Rng::new(seed);
        let mut state = State::default();
        let mut issued: BTreeSet<ResponseKey> = BTreeSet::new();
        let mut log: BTreeMap<String, Vec<ResponseStatus>> = BTreeMap::new();
        let mut now = T0 - 700;
        let end = T0 + 6000;
        while now < end {
            let events = listed_at(&case, now);
            let input = Input {
                programs: &case.programs,
                events: &events,
                now_s: now,
            };
            let out = evaluate(&input, &mut rng, &state);

            for r in &out.responses {
                assert!(r.at_s <= now, "seed {seed}: response from the future");
                assert!(
                    issued.insert(r.key.clone()),
                    "seed {seed}: {:?} twice",
                    r.key
                );
                log.entry(r.key.event_mrid.clone())
                    .or_default()
                    .push(r.key.status);
            }
            check_active(seed, now, &case.programs, &events, &out);
            if let Some(n) = out.next_change_s {
                assert!(n > now, "seed {seed}: next change not ahead");
            }

            // Idempotent: the same call with its own output state changes nothing.
            let mut rng_again = rng.clone();
            let again = evaluate(&input, &mut rng_again, &out.state);
            assert_eq!(again.active, out.active, "seed {seed} t {now}");
            assert_eq!(again.next_change_s, out.next_change_s, "seed {seed}");
            assert_eq!(again.state, out.state, "seed {seed} t {now}");
            assert!(
                again.responses.is_empty(),
                "seed {seed}: {:?}",
                again.responses
            );
            assert_eq!(rng_again, rng, "seed {seed}: no new draws");

            state = out.state;
            // Irregular steps: sometimes the wake-up time, sometimes a poll, sometimes a gap.
            let step = match g.range_inclusive(0, 3) {
                0 => out.next_change_s.map_or(60, |n| n - now),
                1 => g.range_inclusive(1, 10),
                2 => g.range_inclusive(10, 120),
                _ => g.range_inclusive(120, 900),
            };
            now += step.max(1);
        }

        let ledger: BTreeSet<ResponseKey> = state.ledger().collect();
        assert_eq!(ledger, issued, "seed {seed}: the ledger is what was issued");
        assert!(issued.iter().all(|k| state.was_sent(k)), "seed {seed}");

        for (mrid, statuses) in &log {
            let ranks: Vec<u8> = statuses.iter().map(|s| s.rank()).collect();
            assert!(
                ranks.windows(2).all(|w| w[0] < w[1]),
                "seed {seed} {mrid}: out of order {statuses:?}"
            );
            if statuses.contains(&ResponseStatus::Completed) {
                assert!(
                    statuses.contains(&ResponseStatus::Started),
                    "seed {seed} {mrid}: completed without starting {statuses:?}"
                );
            }
            let endings = statuses.iter().filter(|s| s.rank() == 2).count();
            assert!(endings <= 1, "seed {seed} {mrid}: {statuses:?}");
        }
    }
}
