//! Interval averaging for mirror usage point readings. Pure: samples come in with their
//! (server-adjusted) time; when a sample crosses a `postRate` boundary the interval
//! before it closes and its averages come out, stamped with the boundary-aligned
//! interval (the harness wants each reading's period to start on a postRate boundary).
//! Closed intervals wait in a bounded queue until the server takes them.

use std::collections::{BTreeMap, VecDeque};

/// What a channel measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quantity {
    /// Active power, W.
    ActivePowerW,
    /// Reactive power, var.
    ReactivePowerVar,
    /// RMS voltage, V (line to neutral).
    VoltageV,
    /// Frequency, Hz.
    FrequencyHz,
    /// Energy stored in the battery, Wh: an instantaneous value (the interval's last
    /// sample), not an average.
    StoredEnergyWh,
}

/// Which phase a channel covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// All phases together (sum for power, mean for voltage).
    Total,
    A,
    B,
    C,
}

/// One measured quantity on one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel {
    pub quantity: Quantity,
    pub phase: Phase,
}

/// Per-phase values of one quantity; `None` where the meter does not measure it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PhaseValues {
    pub total: Option<f64>,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub c: Option<f64>,
}

impl PhaseValues {
    /// A single-phase (or total-only) value.
    pub fn total(value: f64) -> PhaseValues {
        PhaseValues {
            total: Some(value),
            ..PhaseValues::default()
        }
    }

    fn get(&self, phase: Phase) -> Option<f64> {
        match phase {
            Phase::Total => self.total,
            Phase::A => self.a,
            Phase::B => self.b,
            Phase::C => self.c,
        }
    }
}

/// One instant's readings of a meter (site connection point or the DER side).
/// Sign conventions: site active/reactive power positive = import from the grid;
/// DER active power positive = generation (output).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MeterSample {
    pub active_power_w: PhaseValues,
    pub reactive_power_var: PhaseValues,
    pub voltage_v: PhaseValues,
    pub frequency_hz: Option<f64>,
    /// Energy stored (a battery's usage point only), Wh.
    pub stored_energy_wh: Option<f64>,
}

impl MeterSample {
    /// The channels this sample measures, with their values (non-finite values left out).
    pub fn channels(&self) -> impl Iterator<Item = (Channel, f64)> + '_ {
        const PHASES: [Phase; 4] = [Phase::Total, Phase::A, Phase::B, Phase::C];
        let power = [
            (Quantity::ActivePowerW, &self.active_power_w),
            (Quantity::ReactivePowerVar, &self.reactive_power_var),
            (Quantity::VoltageV, &self.voltage_v),
        ];
        power
            .into_iter()
            .flat_map(|(quantity, values)| {
                PHASES.into_iter().filter_map(move |phase| {
                    values
                        .get(phase)
                        .filter(|v| v.is_finite())
                        .map(|v| (Channel { quantity, phase }, v))
                })
            })
            .chain(self.frequency_hz.filter(|v| v.is_finite()).map(|hz| {
                (
                    Channel {
                        quantity: Quantity::FrequencyHz,
                        phase: Phase::Total,
                    },
                    hz,
                )
            }))
            .chain(self.stored_energy_wh.filter(|v| v.is_finite()).map(|wh| {
                (
                    Channel {
                        quantity: Quantity::StoredEnergyWh,
                        phase: Phase::Total,
                    },
                    wh,
                )
            }))
    }
}

/// The averages of one closed interval.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalAverages {
    /// Start of the interval, Unix seconds, a multiple of `duration_s`.
    pub start_s: i64,
    pub duration_s: u32,
    pub averages: BTreeMap<Channel, f64>,
    /// Seconds of the interval that samples covered (first to last sample, plus one).
    pub covered_s: u32,
}

/// Accumulates samples of one meter into postRate-aligned intervals.
#[derive(Debug, Clone)]
pub struct IntervalAverager {
    post_rate_s: u32,
    current_start_s: Option<i64>,
    first_sample_s: i64,
    last_sample_s: i64,
    sums: BTreeMap<Channel, (f64, u32)>,
    /// Intervals covering less than this fraction are dropped rather than posted as if
    /// they were whole (the first one after start-up, usually).
    min_coverage: f64,
}

impl IntervalAverager {
    pub fn new(post_rate_s: u32) -> IntervalAverager {
        IntervalAverager {
            post_rate_s: post_rate_s.max(1),
            current_start_s: None,
            first_sample_s: 0,
            last_sample_s: 0,
            sums: BTreeMap::new(),
            min_coverage: 0.5,
        }
    }

    pub fn post_rate_s(&self) -> u32 {
        self.post_rate_s
    }

    fn boundary(&self, time_s: i64) -> i64 {
        time_s.div_euclid(i64::from(self.post_rate_s)) * i64::from(self.post_rate_s)
    }

    /// Changes the post rate. The interval in progress closes now (returned if it is
    /// covered well enough) and the next one starts on a boundary of the new rate.
    pub fn set_post_rate(&mut self, post_rate_s: u32) -> Option<IntervalAverages> {
        let post_rate_s = post_rate_s.max(1);
        if post_rate_s == self.post_rate_s {
            return None;
        }
        let closed = self.close();
        self.post_rate_s = post_rate_s;
        closed
    }

    /// Adds a sample taken at `time_s`. Returns the interval that closed, if this sample
    /// falls in a later interval than the one accumulating.
    pub fn add(&mut self, time_s: i64, sample: &MeterSample) -> Option<IntervalAverages> {
        let start = self.boundary(time_s);
        let mut closed = None;
        match self.current_start_s {
            Some(current) if current == start => {}
            Some(current) if time_s < current => {
                // The clock stepped back (server time correction): start over.
                self.sums.clear();
                self.current_start_s = None;
            }
            Some(_) => closed = self.close(),
            None => {}
        }
        if self.current_start_s.is_none() {
            self.current_start_s = Some(start);
            self.first_sample_s = time_s;
        }
        self.last_sample_s = time_s;
        for (channel, value) in sample.channels() {
            let entry = self.sums.entry(channel).or_insert((0.0, 0));
            if channel.quantity == Quantity::StoredEnergyWh {
                // Instantaneous: the latest sample stands for the interval.
                *entry = (value, 1);
            } else {
                entry.0 += value;
                entry.1 += 1;
            }
        }
        closed
    }

    /// Closes the interval in progress if its end has passed at `now_s` (no sample came
    /// in after it, e.g. the meter went quiet).
    pub fn close_if_ended(&mut self, now_s: i64) -> Option<IntervalAverages> {
        let start = self.current_start_s?;
        if now_s >= start + i64::from(self.post_rate_s) {
            self.close()
        } else {
            None
        }
    }

    /// When the interval in progress ends (Unix seconds), if one is in progress.
    pub fn current_end_s(&self) -> Option<i64> {
        self.current_start_s
            .map(|start| start + i64::from(self.post_rate_s))
    }

    fn close(&mut self) -> Option<IntervalAverages> {
        let start_s = self.current_start_s.take()?;
        let sums = std::mem::take(&mut self.sums);
        let covered_s =
            (self.last_sample_s - self.first_sample_s + 1).clamp(0, i64::from(u32::MAX));
        let covered_s = covered_s as u32;
        if sums.is_empty() || f64::from(covered_s) < self.min_coverage * f64::from(self.post_rate_s)
        {
            return None;
        }
        let averages = sums
            .into_iter()
            .map(|(channel, (sum, count))| (channel, sum / f64::from(count.max(1))))
            .collect();
        Some(IntervalAverages {
            start_s,
            duration_s: self.post_rate_s,
            averages,
            covered_s: covered_s.min(self.post_rate_s),
        })
    }
}

/// Closed intervals not yet accepted by the server, oldest first, bounded: when full
/// the oldest is dropped (and counted) so memory stays flat through a long outage.
#[derive(Debug, Clone)]
pub struct Outbox<T> {
    queue: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> Outbox<T> {
    pub fn new(capacity: usize) -> Outbox<T> {
        Outbox {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    pub fn push(&mut self, item: T) {
        if self.queue.len() >= self.capacity {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(item);
    }

    pub fn front(&self) -> Option<&T> {
        self.queue.front()
    }

    pub fn front_mut(&mut self) -> Option<&mut T> {
        self.queue.front_mut()
    }

    /// Removes the oldest item (after the server accepted it).
    pub fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many items were dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: f64) -> MeterSample {
        MeterSample {
            active_power_w: PhaseValues {
                total: Some(w),
                a: Some(w),
                b: None,
                c: None,
            },
            reactive_power_var: PhaseValues::total(w / 10.0),
            voltage_v: PhaseValues {
                total: Some(240.0),
                a: Some(240.0),
                b: None,
                c: None,
            },
            frequency_hz: Some(50.0),
            stored_energy_wh: None,
        }
    }

    const W_TOTAL: Channel = Channel {
        quantity: Quantity::ActivePowerW,
        phase: Phase::Total,
    };

    #[test]
    fn averages_over_the_aligned_interval() {
        let mut averager = IntervalAverager::new(60);
        // 10:00:00 .. 10:00:59 → 100 W then 300 W, average 200 W
        let t0 = 1_700_000_040; // a multiple of 60
        assert_eq!(t0 % 60, 0);
        for s in 0..30 {
            assert!(averager.add(t0 + s, &sample(100.0)).is_none());
        }
        for s in 30..60 {
            assert!(averager.add(t0 + s, &sample(300.0)).is_none());
        }
        let closed = averager
            .add(t0 + 60, &sample(0.0))
            .expect("interval closes");
        assert_eq!(closed.start_s, t0);
        assert_eq!(closed.duration_s, 60);
        assert_eq!(closed.averages[&W_TOTAL], 200.0);
        let hz = Channel {
            quantity: Quantity::FrequencyHz,
            phase: Phase::Total,
        };
        assert_eq!(closed.averages[&hz], 50.0);
        // phase B was never measured: no channel for it
        assert!(!closed.averages.contains_key(&Channel {
            quantity: Quantity::ActivePowerW,
            phase: Phase::B
        }));
    }

    #[test]
    fn a_barely_covered_first_interval_is_dropped() {
        let mut averager = IntervalAverager::new(60);
        let t0 = 1_700_000_040;
        averager.add(t0 + 50, &sample(100.0));
        assert!(averager.add(t0 + 60, &sample(100.0)).is_none());
        // the next full one comes out
        for s in 61..120 {
            averager.add(t0 + s, &sample(100.0));
        }
        let closed = averager.close_if_ended(t0 + 120).expect("closed");
        assert_eq!(closed.start_s, t0 + 60);
    }

    #[test]
    fn changed_post_rate_realigns() {
        let mut averager = IntervalAverager::new(60);
        let t0 = 1_700_000_100; // multiple of 300 and 60
        assert_eq!(t0 % 300, 0);
        for s in 0..50 {
            averager.add(t0 + s, &sample(10.0));
        }
        let closed = averager
            .set_post_rate(300)
            .expect("in-progress interval closes");
        assert_eq!((closed.start_s, closed.duration_s), (t0, 60));
        for s in 50..300 {
            averager.add(t0 + s, &sample(10.0));
        }
        let closed = averager.add(t0 + 300, &sample(10.0));
        // started mid-interval at t0+50 with 250 s covered: kept, stamped on the boundary
        let closed = closed.expect("closed");
        assert_eq!((closed.start_s, closed.duration_s), (t0, 300));
    }

    #[test]
    fn outbox_is_bounded() {
        let mut outbox = Outbox::new(3);
        for i in 0..5 {
            outbox.push(i);
        }
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(outbox.pop(), Some(2));
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut averager = IntervalAverager::new(10);
        for s in 0..10 {
            let mut bad = sample(f64::NAN);
            bad.frequency_hz = Some(50.0);
            averager.add(s, &bad);
        }
        let closed = averager.close_if_ended(10).expect("closed");
        assert!(!closed.averages.contains_key(&W_TOTAL));
    }
}
