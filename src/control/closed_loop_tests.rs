//! Closed-loop tests: the coordinator's whole pure step (`control::step`, with the real
//! control law inside) against the simulated site physics (`sim::site`), on a virtual
//! clock. The site is stepped every 100 ms; the step runs every cycle (1 s), reading the
//! meter and inverters at that instant (readings carry their ages) and writing the
//! commands at once. The limits of each test come in as the utility's controls; the
//! configuration (devices, fail-safe level, timeouts) is made from the test's
//! `ControllerParams`, with the owner's default ramp at its fastest (100 %/s) so that
//! only the ramps a test asks for apply.

use super::law::*;
use super::limits::{Limit, LimitSource, MergedLimits, UtilityControls};
use super::step::{self, DeviceInput, Inputs, State};
use super::tz::PosixTz;
use crate::clock::Now;
use crate::config::Config;
use crate::sim::site::{LoadStep, PvProfile, SimInverter, Site};

const DT_MS: i64 = 100;

#[derive(Debug, Clone)]
struct Sample {
    t_ms: i64,
    export_w: f64,
    outputs_w: Vec<f64>,
}

struct Harness {
    site: Site,
    params: ControllerParams,
    config: Config,
    state: State,
    t_ms: i64,
    meter_alive: bool,
    inverter_alive: Vec<bool>,
    /// When the meter and each inverter were last read (ms) and what they showed.
    last_meter: Option<PowerSample>,
    last_inverters: Vec<Option<PowerSample>>,
    trace: Vec<Sample>,
    /// (time, setpoints) of every control cycle.
    cycles: Vec<(i64, Setpoints)>,
    /// How many meter readings between cycles changed the commands.
    feed_forwards: usize,
}

/// The UCI configuration of a site with these inverters (storage when they take a
/// charge limit), a meter, and the parameters' cycle, timeout and fail-safe level.
fn config_for(params: &ControllerParams) -> Config {
    let mut text = format!(
        "config csipd 'main'
config control 'site'
\toption cycle_s '{}'
\toption meter_stale_s '{}'
\toption failsafe_export_limit_w '{}'
\toption ramp_up_pct_per_s '100'
\toption inverter_response_s '{}'
\toption meter_period_ms '{}'
config device 'meter'
\toption role 'meter'
\toption transport 'tcp'
\toption host '127.0.0.1'
",
        params.cycle_ms as f64 / 1000.0,
        params.meter_timeout_ms as f64 / 1000.0,
        params.fail_safe_export_limit_w,
        params.response_tau_ms as f64 / 1000.0,
        params.meter_period_ms
    );
    for (i, inv) in params.inverters.iter().enumerate() {
        let role = if inv.max_charge_w.is_some() {
            "storage"
        } else {
            "inverter"
        };
        text.push_str(&format!(
            "config device '{}'
\toption role '{role}'
\toption transport 'tcp'
\toption host '127.0.0.1'
\toption unit_id '{}'
",
            inv.name,
            i + 2
        ));
    }
    crate::config::from_text(&text, "closed-loop.conf")
        .expect("valid config")
        .0
}

/// The test's limits as the utility's controls (any source may ride in them).
fn as_utility(limits: &MergedLimits) -> UtilityControls {
    UtilityControls {
        export_limit_w: limits.export_limit_w.clone(),
        import_limit_w: limits.import_limit_w.clone(),
        generation_limit_w: limits.generation_limit_w.clone(),
        load_limit_w: limits.load_limit_w.clone(),
        max_lim_pct: None,
        fixed_w_pct: None,
        connect: limits.connect.clone(),
        energize: limits.energize.clone(),
        set_grad_w: limits.set_grad_w,
        ramp_tms: limits.ramp_tms,
        storage_target_w: limits.storage_target_w.clone(),
        ..UtilityControls::default()
    }
}

impl Harness {
    fn new(site: Site, params: ControllerParams) -> Self {
        let n = site.inverters.len();
        assert_eq!(n, params.inverters.len());
        Harness {
            site,
            config: config_for(&params),
            params,
            state: State::new(),
            t_ms: 0,
            meter_alive: true,
            inverter_alive: vec![true; n],
            last_meter: None,
            last_inverters: vec![None; n],
            trace: Vec::new(),
            cycles: Vec::new(),
            feed_forwards: 0,
        }
    }

    fn run_until(&mut self, end_s: f64, limits: &MergedLimits) {
        let end_ms = (end_s * 1000.0).round() as i64;
        let cycle_ms = self.params.cycle_ms;
        let meter_ms = self.params.meter_period_ms;
        let utility = as_utility(limits);
        let tz = PosixTz::utc();
        while self.t_ms < end_ms {
            // Between cycles, with the meter read more often than the inverters: each
            // new meter reading goes to the step's feed-forward.
            if self.t_ms % cycle_ms != 0 && self.t_ms % meter_ms == 0 && self.meter_alive {
                self.last_meter = Some(PowerSample {
                    w: self.site.meter_site_w(),
                    at_ms: self.t_ms,
                });
                let devices = self.device_inputs();
                let inputs = Inputs {
                    config: &self.config,
                    tz: &tz,
                    devices: &devices,
                    utility: Some(&utility),
                    server_offset_s: 0,
                    price: None,
                };
                let now = self.now();
                if let Some(commands) = step::feed_forward(&mut self.state, inputs, now) {
                    self.feed_forwards += 1;
                    for (i, (name, c)) in commands.iter().enumerate() {
                        assert_eq!(name, &self.params.inverters[i].name);
                        if self.inverter_alive[i] {
                            self.site.inverters[i].setpoint_w = c.setpoint_w;
                        }
                    }
                }
            }
            if self.t_ms % cycle_ms == 0 {
                if self.meter_alive {
                    self.last_meter = Some(PowerSample {
                        w: self.site.meter_site_w(),
                        at_ms: self.t_ms,
                    });
                }
                for (i, inv) in self.site.inverters.iter().enumerate() {
                    if self.inverter_alive[i] {
                        self.last_inverters[i] = Some(PowerSample {
                            w: inv.output_w,
                            at_ms: self.t_ms,
                        });
                    }
                }
                let devices = self.device_inputs();
                let inputs = Inputs {
                    config: &self.config,
                    tz: &tz,
                    devices: &devices,
                    utility: Some(&utility),
                    server_offset_s: 0,
                    price: None,
                };
                let now = self.now();
                let out = step::step(&mut self.state, inputs, now);
                assert_eq!(
                    self.state.controller().map(|c| c.params()),
                    Some(&self.params),
                    "the step runs the controller the test describes"
                );
                let s = out.setpoints;
                for (i, sp) in s.inverters.iter().enumerate() {
                    // A silent inverter does not receive writes: it keeps its last limit.
                    if self.inverter_alive[i] {
                        let inv = &mut self.site.inverters[i];
                        inv.setpoint_w = sp.setpoint_w;
                        inv.charge_limit_w = sp.charge_limit_w;
                        inv.connected = sp.connect && sp.energize;
                    }
                }
                self.cycles.push((self.t_ms, s));
            }
            self.site.step(DT_MS as f64 / 1000.0);
            self.t_ms += DT_MS;
            self.trace.push(Sample {
                t_ms: self.t_ms,
                export_w: self.site.export_w(),
                outputs_w: self.site.inverters.iter().map(|i| i.output_w).collect(),
            });
        }
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: self.t_ms as u64,
            utc_ms: 1_800_000_000_000 + self.t_ms,
        }
    }

    /// The step's inputs: the last readings with their ages.
    fn device_inputs(&self) -> Vec<DeviceInput> {
        let age = |r: &Option<PowerSample>| r.map(|r| (self.t_ms - r.at_ms) as u64);
        let mut devices = vec![DeviceInput {
            name: "meter".into(),
            rating_w: None,
            max_charge_w: None,
            w: self.last_meter.map(|r| r.w),
            age_ms: age(&self.last_meter),
            controllable: false,
        }];
        for (inv, r) in self.params.inverters.iter().zip(&self.last_inverters) {
            devices.push(DeviceInput {
                name: inv.name.clone(),
                rating_w: Some(inv.rating_w),
                max_charge_w: inv.max_charge_w,
                w: r.map(|r| r.w),
                age_ms: age(r),
                controllable: true,
            });
        }
        devices
    }

    fn total_output_w(&self) -> f64 {
        self.site.inverters.iter().map(|i| i.output_w).sum()
    }
}

fn fixed(option: &str, w: f64) -> Limit {
    Limit::new(
        w,
        LimitSource::Fixed {
            option: option.into(),
        },
        None,
    )
}

fn export_limit(w: f64) -> MergedLimits {
    MergedLimits {
        export_limit_w: Some(fixed("export_limit_w", w)),
        ..Default::default()
    }
}

fn pv_site(
    load_w: f64,
    available_w: &[f64],
    rating_w: f64,
    tau_s: f64,
) -> (Site, ControllerParams) {
    let inverters: Vec<SimInverter> = available_w
        .iter()
        .map(|&a| SimInverter::pv(rating_w, PvProfile::Constant { available_w: a }, tau_s))
        .collect();
    let params = ControllerParams::new(
        (0..available_w.len())
            .map(|i| InverterParams {
                name: format!("pv{i}"),
                rating_w,
                max_charge_w: None,
            })
            .collect(),
        1500.0,
    );
    let mut site = Site::new(load_w, inverters);
    site.settle();
    (site, params)
}

/// How long (s) export stays above `limit + max(2 %, 100 W)` in one stretch, at most.
fn longest_excess_s(trace: &[Sample], from_ms: i64, limit_w: f64) -> f64 {
    let threshold = limit_w + (0.02 * limit_w).max(100.0);
    let mut longest = 0;
    let mut start: Option<i64> = None;
    for s in trace.iter().filter(|s| s.t_ms > from_ms) {
        if s.export_w > threshold {
            let st = *start.get_or_insert(s.t_ms - DT_MS);
            longest = longest.max(s.t_ms - st);
        } else {
            start = None;
        }
    }
    longest as f64 / 1000.0
}

/// "Settles without oscillation": after `from_ms`, the deviation from the final value
/// leaves the band `max(1 % of limit, 20 W)` on at most one side after its first
/// excursion (no more than one overshoot), and stays inside the band from `settle_s`
/// after `from_ms` on (bounded ripple).
fn assert_settles(trace: &[Sample], from_ms: i64, limit_w: f64, settle_s: f64) {
    let band = (0.01 * limit_w).max(20.0);
    let final_w = trace.last().unwrap().export_w;
    let mut sides = Vec::new();
    for s in trace.iter().filter(|s| s.t_ms > from_ms) {
        let d = s.export_w - final_w;
        if d.abs() > band {
            let side = d > 0.0;
            if sides.last() != Some(&side) {
                sides.push(side);
            }
        }
    }
    assert!(
        sides.len() <= 2,
        "oscillates: deviation changed side {} times",
        sides.len()
    );
    let settled_ms = from_ms + (settle_s * 1000.0) as i64;
    for s in trace.iter().filter(|s| s.t_ms >= settled_ms) {
        assert!(
            (s.export_w - final_w).abs() <= band,
            "ripple at {} ms: export {} vs final {}",
            s.t_ms,
            s.export_w,
            final_w
        );
    }
    assert!(final_w <= limit_w, "settled above the limit: {final_w}");
}

#[test]
fn load_drop_excess_lasts_under_two_seconds_at_any_phase_of_the_cycle() {
    for phase_ms in [0, 100, 300, 500, 700, 900] {
        // 4 kW load, 6.5 kW of sun on a 5 kW + 5 kW pair, export limit 1500 W.
        let (mut site, params) = pv_site(4000.0, &[3500.0, 3000.0], 5000.0, 0.25);
        let drop_ms = 30_000 + phase_ms;
        site.add_load_step(drop_ms as f64 / 1000.0, 1000.0);
        let mut h = Harness::new(site, params);
        let limits = export_limit(1500.0);
        h.run_until(60.0, &limits);
        let before = h.trace.iter().find(|s| s.t_ms == 29_000).unwrap();
        assert!(
            before.export_w <= 1500.0 && before.export_w > 1400.0,
            "{before:?}"
        );
        let excess = longest_excess_s(&h.trace, drop_ms, 1500.0);
        assert!(
            excess > 0.0,
            "the drop must actually push export over the limit"
        );
        assert!(
            excess <= 2.0,
            "phase {phase_ms} ms: over the limit for {excess} s"
        );
        assert_settles(&h.trace, drop_ms, 1500.0, 5.0);
        // The site was curtailed by the export limit, and says so.
        let (_, last) = h.cycles.last().unwrap();
        assert!(
            last.reason.to_string().starts_with("export limit 1500 W"),
            "{}",
            last.reason
        );
    }
}

/// Overshoot and settling of export after a load drop at `drop_ms` (issue 21's
/// figures): the peak above the limit, the deepest dip below the target after the cut,
/// how long export stayed above `limit + max(2 %, 100 W)`, and when it last left the
/// band `max(2 %, 100 W)` around the limit.
struct StepResponse {
    peak_over_w: f64,
    dip_under_target_w: f64,
    excess_s: f64,
    settled_s: f64,
}

fn step_response(trace: &[Sample], drop_ms: i64, limit_w: f64, margin_w: f64) -> StepResponse {
    let band = (0.02 * limit_w).max(100.0);
    let after: Vec<&Sample> = trace.iter().filter(|s| s.t_ms > drop_ms).collect();
    let peak = after.iter().map(|s| s.export_w).fold(f64::MIN, f64::max);
    let first_in = after
        .iter()
        .position(|s| s.export_w <= limit_w + band)
        .unwrap_or(after.len());
    let dip = after[first_in..]
        .iter()
        .map(|s| s.export_w)
        .fold(f64::MAX, f64::min);
    let last_out = after
        .iter()
        .rposition(|s| (s.export_w - limit_w).abs() > band)
        .map_or(drop_ms, |i| after[i].t_ms);
    StepResponse {
        peak_over_w: peak - limit_w,
        dip_under_target_w: ((limit_w - margin_w) - dip).max(0.0),
        excess_s: longest_excess_s(trace, drop_ms, limit_w),
        settled_s: (last_out - drop_ms) as f64 / 1000.0,
    }
}

/// Issue 21: a 3 kW load drop with the demo's inverter physics (τ = 1 s) and a 1 s
/// meter cycle; export must be back within max(2 %, 100 W) of the limit in 2 s, at any
/// phase of the drop within the cycle, without oscillating. With `inverter_response_s`
/// set to τ the law's lead lands the inverters on the target in one cycle; without it
/// (the plain integral law) the same drop takes about 4 s, which the test also checks,
/// so the lead is shown to be what makes the difference.
#[test]
fn three_kw_load_drop_with_one_second_inverters_is_back_within_two_seconds() {
    for (tau_known, phase_ms) in [0, 50, 250, 500, 750, 950]
        .into_iter()
        .map(|p| (true, p))
        .chain([(false, 500)])
    {
        // Two 5 kW inverters with 4 kW of sun each, a 6 kW load, export limit 1.5 kW:
        // curtailed to ~7.45 kW before the drop; 3 kW less load then wants ~4.45 kW.
        let (mut site, mut params) = pv_site(6000.0, &[4000.0, 4000.0], 5000.0, 1.0);
        if tau_known {
            params.response_tau_ms = 1000;
        }
        let drop_ms = 30_000 + phase_ms;
        site.add_load_step(drop_ms as f64 / 1000.0, 3000.0);
        let mut h = Harness::new(site, params);
        h.run_until(60.0, &export_limit(1500.0));
        let before = h.trace.iter().find(|s| s.t_ms == 29_000).unwrap();
        assert!(
            (1400.0..=1500.0).contains(&before.export_w),
            "curtailed to the limit before the drop: {before:?}"
        );
        let r = step_response(&h.trace, drop_ms, 1500.0, 50.0);
        println!(
            "τ 1 s, lead {}, drop at +{phase_ms} ms in the cycle: peak {:.0} W over the limit, \
             dip {:.0} W under the target, {:.1} s above limit + 100 W, settled in {:.1} s",
            if tau_known { "on" } else { "off" },
            r.peak_over_w,
            r.dip_under_target_w,
            r.excess_s,
            r.settled_s
        );
        assert!(
            r.peak_over_w > 2000.0,
            "the drop pushes export over: {}",
            r.peak_over_w
        );
        if tau_known {
            assert!(r.excess_s <= 2.0, "phase {phase_ms}: {} s over", r.excess_s);
            assert!(
                r.settled_s <= 2.0,
                "phase {phase_ms}: settled in {} s",
                r.settled_s
            );
            // No undershoot worth the name: the cut lands on the target.
            assert!(r.dip_under_target_w < 100.0, "dip {}", r.dip_under_target_w);
            assert_settles(&h.trace, drop_ms, 1500.0, 3.0);
        } else {
            assert!(r.excess_s > 2.5, "without the lead: {} s", r.excess_s);
        }
    }
}

/// Issue 21 with the meter read more often than the inverters (every 500 ms, Modbus
/// TCP's default, and every 200 ms) and each reading between cycles fed forward
/// (`control::step::feed_forward`): the same 3 kW drop with τ = 1 s inverters is
/// seen within one meter period and cut at once, instead of at the next cycle.
/// Export is back within max(2 %, 100 W) of the limit in well under 2 s at every
/// phase of the drop, with no dip below the target worth the name and no ringing.
#[test]
fn three_kw_load_drop_with_faster_meter_reads_is_fed_forward() {
    for meter_period_ms in [500, 200] {
        let mut worst_settled_s: f64 = 0.0;
        for phase_ms in [0, 50, 250, 500, 750, 950] {
            let (mut site, mut params) = pv_site(6000.0, &[4000.0, 4000.0], 5000.0, 1.0);
            params.response_tau_ms = 1000;
            params.meter_period_ms = meter_period_ms;
            let drop_ms = 30_000 + phase_ms;
            site.add_load_step(drop_ms as f64 / 1000.0, 3000.0);
            let mut h = Harness::new(site, params);
            h.run_until(20.0, &export_limit(1500.0));
            let settled_cuts = h.feed_forwards;
            h.run_until(30.0, &export_limit(1500.0));
            assert_eq!(
                h.feed_forwards, settled_cuts,
                "nothing to feed forward while export is at the target"
            );
            h.run_until(60.0, &export_limit(1500.0));
            let before = h.trace.iter().find(|s| s.t_ms == 29_000).unwrap();
            assert!(
                (1400.0..=1500.0).contains(&before.export_w),
                "curtailed to the limit before the drop: {before:?}"
            );
            let r = step_response(&h.trace, drop_ms, 1500.0, 50.0);
            println!(
                "τ 1 s, meter every {meter_period_ms} ms, drop at +{phase_ms} ms in the cycle: \
                 peak {:.0} W over the limit, dip {:.0} W under the target, {:.1} s above \
                 limit + 100 W, settled in {:.1} s ({} feed-forward cuts)",
                r.peak_over_w, r.dip_under_target_w, r.excess_s, r.settled_s, h.feed_forwards
            );
            // A drop a meter period or more before the next cycle is cut between cycles.
            if phase_ms > 0 && (1000 - phase_ms) >= meter_period_ms {
                assert!(h.feed_forwards > 0, "phase {phase_ms}: no feed-forward");
            }
            let allowed_s = (meter_period_ms as f64 + 1000.0) / 1000.0;
            assert!(
                r.settled_s <= allowed_s,
                "meter {meter_period_ms} ms, phase {phase_ms}: settled in {} s",
                r.settled_s
            );
            assert!(r.dip_under_target_w < 100.0, "dip {}", r.dip_under_target_w);
            assert_settles(&h.trace, drop_ms, 1500.0, 3.0);
            worst_settled_s = worst_settled_s.max(r.settled_s);
        }
        assert!(worst_settled_s <= 2.0, "{worst_settled_s} s");
    }
}

/// Inverters slower than the configured τ (2.5 s against 1 s) under the feed-forward
/// with the meter read every 500 ms: the expected output falls faster than the real
/// one, so the cuts between cycles go deeper than needed; the next cycles re-seed from
/// the readings and the export settles without ringing, never longer over the limit
/// than with the meter read once a cycle.
#[test]
fn feed_forward_with_inverters_slower_than_configured_does_not_ring() {
    let run = |meter_period_ms: i64| {
        let (mut site, mut params) = pv_site(6000.0, &[4000.0, 4000.0], 5000.0, 2.5);
        params.response_tau_ms = 1000;
        params.meter_period_ms = meter_period_ms;
        site.add_load_step(30.3, 3000.0);
        let mut h = Harness::new(site, params);
        h.run_until(70.0, &export_limit(1500.0));
        let r = step_response(&h.trace, 30_300, 1500.0, 50.0);
        println!(
            "τ 2.5 s, lead for 1 s, meter every {meter_period_ms} ms: {:.1} s over, dip {:.0} W, \
             settled in {:.1} s ({} feed-forward cuts)",
            r.excess_s, r.dip_under_target_w, r.settled_s, h.feed_forwards
        );
        assert_settles(&h.trace, 30_300, 1500.0, 15.0);
        r
    };
    let once = run(1000);
    let fast = run(500);
    assert!(
        fast.excess_s <= once.excess_s,
        "{} vs {}",
        fast.excess_s,
        once.excess_s
    );
}

/// The feed-forward without a τ (`inverter_response_s` unset) expects nothing of the
/// inverters between readings: it cuts by the measured excess over their last reading,
/// which is never more than needed, so a faster meter can only help: no dip, no
/// ringing, and no longer over the limit than with the meter read once a cycle.
#[test]
fn feed_forward_without_a_tau_never_cuts_too_deep() {
    let run = |meter_period_ms: i64| {
        let (mut site, mut params) = pv_site(6000.0, &[4000.0, 4000.0], 5000.0, 1.0);
        params.meter_period_ms = meter_period_ms;
        site.add_load_step(30.3, 3000.0);
        let mut h = Harness::new(site, params);
        h.run_until(60.0, &export_limit(1500.0));
        let r = step_response(&h.trace, 30_300, 1500.0, 50.0);
        println!(
            "τ 1 s unknown, meter every {meter_period_ms} ms: {:.1} s over, dip {:.0} W, \
             settled in {:.1} s ({} feed-forward cuts)",
            r.excess_s, r.dip_under_target_w, r.settled_s, h.feed_forwards
        );
        assert_settles(&h.trace, 30_300, 1500.0, 8.0);
        (r, h.feed_forwards)
    };
    let (once, _) = run(1000);
    let (fast, cuts) = run(200);
    assert!(cuts > 0);
    assert!(
        fast.dip_under_target_w < 100.0,
        "dip {}",
        fast.dip_under_target_w
    );
    assert!(
        fast.excess_s <= once.excess_s,
        "{} vs {}",
        fast.excess_s,
        once.excess_s
    );
}

/// The lead with τ set longer than the inverter's (configured 1 s, inverter 0.25 s)
/// cuts too deep for one cycle: export dips below the target once and comes back
/// without ringing, and no excess lasts longer than without the lead.
#[test]
fn a_lead_larger_than_needed_dips_once_and_recovers() {
    let (mut site, mut params) = pv_site(6000.0, &[4000.0, 4000.0], 5000.0, 0.25);
    params.response_tau_ms = 1000;
    site.add_load_step(30.3, 3000.0);
    let mut h = Harness::new(site, params);
    h.run_until(60.0, &export_limit(1500.0));
    let r = step_response(&h.trace, 30_300, 1500.0, 50.0);
    println!(
        "τ 0.25 s, lead for 1 s: {:.1} s over, dip {:.0} W, settled in {:.1} s",
        r.excess_s, r.dip_under_target_w, r.settled_s
    );
    assert!(r.excess_s <= 1.5, "{} s", r.excess_s);
    assert!(r.dip_under_target_w > 0.0);
    assert_settles(&h.trace, 30_300, 1500.0, 8.0);
    assert!(h.site.export_w() > 1400.0 && h.site.export_w() <= 1500.0);
}

#[test]
fn settles_without_oscillation_with_a_slow_inverter() {
    // τ = 1 s: slower than the cycle; the loop must still not ring.
    let (mut site, params) = pv_site(4000.0, &[5000.0], 5000.0, 1.0);
    site.add_load_step(20.0, 1000.0);
    site.add_load_step(50.0, 3500.0);
    let mut h = Harness::new(site, params);
    h.run_until(80.0, &export_limit(1000.0));
    assert_settles(&h.trace[..499], 20_000, 1000.0, 10.0);
    assert_settles(&h.trace, 50_000, 1000.0, 15.0);
    // After the load rise, generation came back up to the limit.
    assert!(h.site.export_w() > 900.0, "{}", h.site.export_w());
}

#[test]
fn set_grad_w_27_limits_the_rise_to_0_27_percent_per_second() {
    let (site, params) = pv_site(500.0, &[5000.0], 5000.0, 0.25);
    let mut h = Harness::new(site, params);
    let mut limits = export_limit(0.0);
    limits.set_grad_w = Some(27);
    h.run_until(20.0, &limits);
    let start_w = h.total_output_w();
    assert!(start_w < 500.0, "zero export: output {start_w}");
    // The limit is lifted and the load rises: both ask for more output.
    limits.export_limit_w = Some(fixed("export_limit_w", 5000.0));
    h.site.add_load_step(40.0, 2500.0);
    h.run_until(200.0, &limits);
    let max_rate_w_per_s = 0.0027 * 5000.0;
    // Over every 1 s window (the cycle), the rise stays within 0.27 % of setMaxW.
    let from = h.trace.iter().position(|s| s.t_ms == 20_000).unwrap();
    for w in h.trace[from..].windows(11) {
        let rise = w[10].outputs_w[0] - w[0].outputs_w[0];
        assert!(
            rise <= max_rate_w_per_s + 0.01,
            "rose {rise} W in 1 s at {} ms",
            w[0].t_ms
        );
    }
    // And it did rise, at that rate: 180 s × 13.5 W/s = 2430 W.
    let end_w = h.total_output_w();
    assert!(end_w - start_w > 2300.0, "{start_w} → {end_w}");
    assert!(matches!(h.cycles[100].1.reason, Reason::Ramping { .. }));
}

#[test]
fn ramp_tms_3000_reaches_the_new_limit_in_30_s() {
    let (site, params) = pv_site(8000.0, &[5000.0], 5000.0, 0.25);
    let mut h = Harness::new(site, params);
    let gen_limit = |w: f64| MergedLimits {
        generation_limit_w: Some(Limit::new(
            w,
            LimitSource::UtilityEvent {
                mrid: "00AA".into(),
            },
            None,
        )),
        ramp_tms: Some(3000),
        ..Default::default()
    };
    h.run_until(20.0, &gen_limit(1000.0));
    assert!((h.total_output_w() - 1000.0).abs() < 5.0);
    let limits = gen_limit(4000.0);
    h.run_until(35.0, &limits);
    // Halfway (15 s in): about halfway.
    assert!(
        (h.total_output_w() - 2500.0).abs() < 120.0,
        "{}",
        h.total_output_w()
    );
    h.run_until(49.0, &limits);
    assert!(
        h.total_output_w() < 3950.0,
        "too fast: {}",
        h.total_output_w()
    );
    h.run_until(50.5, &limits);
    assert!(
        h.total_output_w() >= 3990.0,
        "too slow: {}",
        h.total_output_w()
    );
    h.run_until(60.0, &limits);
    assert!(h.total_output_w() <= 4000.0 + 1e-6);
    // Going down again is not ramped.
    h.run_until(62.0, &gen_limit(1000.0));
    assert!(h.total_output_w() < 1010.0, "{}", h.total_output_w());
}

#[test]
fn stale_meter_applies_the_fail_safe_within_timeout_plus_one_cycle() {
    let (site, params) = pv_site(3000.0, &[5000.0], 5000.0, 0.25);
    let timeout_ms = params.meter_timeout_ms;
    let mut h = Harness::new(site, params);
    let limits = export_limit(5000.0);
    h.run_until(20.0, &limits);
    assert!(h.total_output_w() > 4900.0);
    // The meter's last good reading is the one taken at 20 s.
    h.run_until(20.1, &limits);
    h.meter_alive = false;
    h.run_until(40.0, &limits);
    let applied = h
        .cycles
        .iter()
        .find(|(t, s)| {
            *t > 20_000
                && s.fail_safe.is_some()
                && s.inverters.iter().map(|i| i.setpoint_w).sum::<f64>() <= 1500.0
        })
        .map(|(t, _)| *t)
        .expect("fail-safe never applied");
    assert!(
        applied <= 20_000 + timeout_ms + 1000,
        "applied at {applied} ms"
    );
    assert!(applied > 20_000 + timeout_ms, "too early: {applied} ms");
    assert!(h.total_output_w() <= 1500.0 + 1.0);
    let (_, last) = h.cycles.last().unwrap();
    assert!(
        last.reason.to_string().contains("meter data"),
        "{}",
        last.reason
    );
    // The meter comes back: normal control resumes.
    h.meter_alive = true;
    h.run_until(50.0, &limits);
    assert!(h.cycles.last().unwrap().1.fail_safe.is_none());
    assert!(h.total_output_w() > 4900.0);
}

#[test]
fn start_up_holds_the_fail_safe_until_the_first_meter_reading() {
    let (mut site, params) = pv_site(3000.0, &[5000.0], 5000.0, 0.25);
    // Inverter running uncurtailed before csipd starts.
    site.inverters[0].output_w = 5000.0;
    let mut h = Harness::new(site, params);
    h.meter_alive = false;
    let limits = export_limit(5000.0);
    h.run_until(5.0, &limits);
    assert!(h.cycles.iter().all(|(_, s)| s.fail_safe.is_some()));
    assert!(h.total_output_w() <= 1500.0 + 1.0);
    h.meter_alive = true;
    h.run_until(10.0, &limits);
    assert!(h.total_output_w() > 4900.0);
}

#[test]
fn a_silent_inverter_is_compensated_and_export_stays_within_the_limit() {
    let (site, params) = pv_site(1000.0, &[5000.0, 5000.0], 5000.0, 0.25);
    let mut h = Harness::new(site, params);
    let limits = export_limit(3000.0);
    h.run_until(20.0, &limits);
    // pv1 stops answering; it keeps its last limit and the sun goes on.
    h.inverter_alive[1] = false;
    let pv1_w = h.site.inverters[1].output_w;
    h.run_until(40.0, &limits);
    // Raise the load: pv0 alone takes up the room.
    h.site.add_load_step(40.0, 3000.0);
    h.run_until(60.0, &limits);
    assert!((h.site.inverters[1].output_w - pv1_w).abs() < 1.0);
    assert!(h.site.export_w() <= 3000.0);
    assert!(h.site.export_w() > 2850.0, "{}", h.site.export_w());
    assert!(!h.cycles.last().unwrap().1.inverters[1].answering);
}

#[test]
fn shaded_inverter_share_goes_to_the_sunny_one() {
    // pv0 has only 500 W of sun; pv1 must carry the rest of the allowed output.
    let (site, params) = pv_site(2000.0, &[500.0, 5000.0], 5000.0, 0.25);
    let mut h = Harness::new(site, params);
    h.run_until(30.0, &export_limit(2000.0));
    let export = h.site.export_w();
    assert!(export <= 2000.0 && export > 1900.0, "{export}");
    assert!(h.site.inverters[1].output_w > 3400.0);
}

#[test]
fn import_limit_acts_through_the_battery_charge_limit() {
    // Night: no sun, 2 kW load, the battery wants to charge at 3 kW: 5 kW import.
    let mut site = Site::new(2000.0, vec![SimInverter::battery(5000.0, 3000.0, 0.25)]);
    site.settle();
    let params = ControllerParams::new(
        vec![InverterParams {
            name: "battery".into(),
            rating_w: 5000.0,
            max_charge_w: Some(5000.0),
        }],
        1500.0,
    );
    let mut h = Harness::new(site, params);
    let limits = MergedLimits {
        import_limit_w: Some(fixed("import_limit_w", 3000.0)),
        ..Default::default()
    };
    h.run_until(20.0, &limits);
    let import = h.site.meter_site_w();
    assert!(import <= 3000.0 && import > 2850.0, "{import}");
    assert!(h.cycles.last().unwrap().1.unsupported.is_empty());
}

#[test]
fn demo_site_is_curtailed_within_a_minute() {
    let site = crate::sim::site::demo_site();
    let params = ControllerParams::new(
        vec![InverterParams {
            name: "demo_pv".into(),
            rating_w: 5000.0,
            max_charge_w: None,
        }],
        1500.0,
    );
    let mut h = Harness::new(site, params);
    h.run_until(60.0, &export_limit(1500.0));
    // At the 15 s load drop the inverter is cut below its rating, and export stays at or
    // below the limit once the loop has acted.
    let curtailed = h
        .cycles
        .iter()
        .any(|(t, s)| *t > 15_000 && *t < 20_000 && s.inverters[0].setpoint_pct < 50.0);
    assert!(curtailed);
    for s in h
        .trace
        .iter()
        .filter(|s| s.t_ms >= 18_000 && s.t_ms < 60_000)
    {
        assert!(s.export_w <= 1500.0, "{s:?}");
    }
}

#[test]
fn energize_off_brings_output_to_zero_and_back() {
    use super::limits::Sourced;
    let (site, params) = pv_site(1000.0, &[4000.0], 5000.0, 0.25);
    let mut h = Harness::new(site, params);
    let mut limits = export_limit(5000.0);
    h.run_until(10.0, &limits);
    assert!(h.total_output_w() > 3900.0);
    limits.energize = Some(Sourced::new(
        false,
        LimitSource::UtilityEvent {
            mrid: "E0E0E0E0E0E0E0E0".into(),
        },
        None,
    ));
    // Within 2 s of the cycle that saw it (τ = 0.25 s: 4 kW · e^-8 ≈ 1.3 W left).
    h.run_until(12.0, &limits);
    assert!(h.total_output_w().abs() < 2.0, "{}", h.total_output_w());
    let (_, last) = h.cycles.last().unwrap();
    assert_eq!(
        last.reason.to_string(),
        "de-energized (output zero) by utility event e0e0…"
    );
    limits.energize = None;
    h.run_until(20.0, &limits);
    assert!(h.total_output_w() > 3900.0);
}

#[test]
fn negative_price_merged_and_applied_gives_zero_export() {
    use super::limits::{MergeInputs, PriceRule, merge};
    use super::price::FeedInPrice;
    use super::tz::PosixTz;
    let (site, params) = pv_site(800.0, &[5000.0], 5000.0, 0.25);
    let mut h = Harness::new(site, params);
    let tz = PosixTz::utc();
    let inputs = MergeInputs {
        utility: super::limits::UtilityControls {
            export_limit_w: Some(Limit::new(
                5000.0,
                LimitSource::UtilityDefault {
                    program: "DERP".into(),
                },
                None,
            )),
            ..Default::default()
        },
        price_rule: Some(PriceRule {
            export_limit_w: 0.0,
            below_earn_c_per_kwh: 0.0,
        }),
        // Amber feedIn perKwh +2.5: the owner pays 2.5 c/kWh to export.
        price: Some(FeedInPrice {
            earn_c_per_kwh: -2.5,
            interval_end_s: Some(1800),
        }),
        ..Default::default()
    };
    let limits = merge(&inputs, &tz, 0);
    h.run_until(20.0, &limits);
    // Aims 50 W below zero export: a small import.
    let export = h.site.export_w();
    assert!(export <= 0.0 && export > -100.0, "{export}");
    let (_, last) = h.cycles.last().unwrap();
    assert!(
        last.reason
            .to_string()
            .contains("negative feed-in price -2.50 c/kWh"),
        "{}",
        last.reason
    );
}

// ---------------------------------------------------------------------------------------
// The whole coordinator step (`control::step`) against the simulated site, on a virtual
// clock: the configuration, the readings with their ages, the utility's controls and
// `Now` go in; commands come out and are applied to the simulated inverters.

mod whole_step {
    use super::super::limits::{FailSafeCause, Limit, LimitMode, LimitSource, UtilityControls};
    use super::super::step::{self, DeviceInput, Inputs, Outputs, State};
    use super::super::tz::{PosixTz, days_from_civil};
    use crate::clock::Now;
    use crate::config::{self, Config};
    use crate::sim::site::{PvProfile, SimInverter, Site};

    /// Brisbane (no DST): 12:00 local on Wednesday 2026-01-14 is 02:00 UTC.
    const TZ: &str = "AEST-10";
    const NOON_UTC_S: i64 = 20_467 * 86_400 + 2 * 3600;

    const CONFIG: &str = "
config csipd 'main'
	option timezone 'AEST-10'
config limits 'fixed'
	option export_limit_w '3000'
config tariff 'peak'
	option start '12:20'
	option end '12:40'
	option export_limit_w '1000'
config control 'site'
	option cycle_s '1'
	option meter_stale_s '5'
	option failsafe_export_limit_w '500'
	option ramp_up_pct_per_s '1'
config device 'meter'
	option role 'meter'
	option transport 'tcp'
	option host '127.0.0.1'
config device 'pv0'
	option role 'inverter'
	option transport 'tcp'
	option host '127.0.0.1'
	option unit_id '2'
config device 'pv1'
	option role 'inverter'
	option transport 'tcp'
	option host '127.0.0.1'
	option unit_id '3'
";

    /// One control cycle's record.
    struct Cycle {
        t_s: f64,
        out: Outputs,
    }

    struct Sim {
        config: Config,
        tz: PosixTz,
        state: State,
        site: Site,
        now: Now,
        /// Site time (ms) of the meter's last good reading.
        meter_read_ms: Option<u64>,
        meter_alive: bool,
        utility: Option<UtilityControls>,
        cycles: Vec<Cycle>,
        /// (site time s, export W, total inverter output W) every 100 ms.
        trace: Vec<(f64, f64, f64)>,
    }

    impl Sim {
        fn new() -> Sim {
            // Warnings (no server section) are expected; errors are not.
            let (config, _) = config::from_text(CONFIG, "sim.conf").expect("valid config");
            let tz = PosixTz::parse(TZ).expect("tz");
            assert_eq!(days_from_civil(2026, 1, 14), 20_467);
            let pv = |a| SimInverter::pv(5000.0, PvProfile::Constant { available_w: a }, 0.25);
            let mut site = Site::new(2000.0, vec![pv(4500.0), pv(4500.0)]);
            site.add_load_step(600.0, 500.0);
            Sim {
                config,
                tz,
                state: State::new(),
                site,
                now: Now {
                    mono_ms: 0,
                    utc_ms: NOON_UTC_S * 1000,
                },
                meter_read_ms: None,
                meter_alive: false,
                utility: None,
                cycles: Vec::new(),
                trace: Vec::new(),
            }
        }

        fn t_s(&self) -> f64 {
            self.now.mono_ms as f64 / 1000.0
        }

        /// Runs to site time `end_s`: physics every 100 ms, a step whenever the state's
        /// `poll_at` is due.
        fn run_until(&mut self, end_s: f64) {
            let end_ms = (end_s * 1000.0).round() as u64;
            while self.now.mono_ms < end_ms {
                if self.state.poll_at().is_none_or(|at| at <= self.now.mono_ms) {
                    self.cycle();
                }
                self.site.step(0.1);
                self.now = self.now.plus_ms(100);
                let out_w: f64 = self.site.inverters.iter().map(|i| i.output_w).sum();
                self.trace.push((self.t_s(), self.site.export_w(), out_w));
            }
        }

        fn cycle(&mut self) {
            let now_ms = self.now.mono_ms;
            if self.meter_alive {
                self.meter_read_ms = Some(now_ms);
            }
            let meter_w = self.site.meter_site_w();
            let mut devices = vec![DeviceInput {
                name: "meter".into(),
                rating_w: None,
                max_charge_w: None,
                w: self.meter_read_ms.map(|_| meter_w),
                age_ms: self.meter_read_ms.map(|t| now_ms - t),
                controllable: false,
            }];
            for (i, inv) in self.site.inverters.iter().enumerate() {
                devices.push(DeviceInput {
                    name: format!("pv{i}"),
                    rating_w: Some(inv.rating_w),
                    max_charge_w: None,
                    w: Some(inv.output_w),
                    age_ms: Some(0),
                    controllable: true,
                });
            }
            let inputs = Inputs {
                config: &self.config,
                tz: &self.tz,
                devices: &devices,
                utility: self.utility.as_ref(),
                server_offset_s: 0,
                price: None,
            };
            let out = step::step(&mut self.state, inputs, self.now);
            for (name, cmd) in &out.commands {
                let i: usize = name[2..].parse().expect("pvN");
                let inv = &mut self.site.inverters[i];
                inv.setpoint_w = cmd.setpoint_w;
                inv.connected = cmd.connect;
            }
            let t_s = self.t_s();
            self.cycles.push(Cycle { t_s, out });
        }

        fn export_limit(&self, at_s: f64) -> (f64, LimitSource) {
            let c = self
                .cycles
                .iter()
                .rev()
                .find(|c| c.t_s <= at_s)
                .expect("a cycle");
            let l = c
                .out
                .status
                .limits
                .iter()
                .find(|l| l.mode == LimitMode::Export)
                .expect("an export limit");
            (l.value_w.expect("watts"), l.source.clone())
        }

        /// Longest stretch (s) after `from_s` in `[from_s, to_s)` with export above
        /// `limit + max(2 %, 100 W)`.
        fn longest_excess_s(&self, from_s: f64, to_s: f64, limit_w: f64) -> f64 {
            let threshold = limit_w + (0.02 * limit_w).max(100.0);
            let mut longest: f64 = 0.0;
            let mut start = None;
            for &(t, export, _) in self.trace.iter().filter(|s| s.0 > from_s && s.0 < to_s) {
                if export > threshold {
                    let st = *start.get_or_insert(t - 0.1);
                    longest = longest.max(t - st);
                } else {
                    start = None;
                }
            }
            longest
        }

        fn max_export(&self, from_s: f64, to_s: f64) -> f64 {
            self.trace
                .iter()
                .filter(|s| s.0 >= from_s && s.0 < to_s)
                .map(|s| s.1)
                .fold(f64::MIN, f64::max)
        }

        fn transitions(&self, prefix: &str) -> Vec<f64> {
            self.cycles
                .iter()
                .filter(|c| c.out.transitions.iter().any(|t| t.text.starts_with(prefix)))
                .map(|c| c.t_s)
                .collect()
        }
    }

    fn event(w: f64, until_s: i64) -> UtilityControls {
        UtilityControls {
            export_limit_w: Some(Limit::new(
                w,
                LimitSource::UtilityEvent {
                    mrid: "3F2A09B1C0FFEE00112233445566778A".into(),
                },
                Some(until_s),
            )),
            ..UtilityControls::default()
        }
    }

    /// An hour of site time: start-up fail-safe, the ramp up, a load drop, a tariff
    /// window, a utility event, the meter going silent and coming back.
    #[test]
    fn an_hour_of_site_time_through_the_whole_step() {
        let started = std::time::Instant::now();
        let mut sim = Sim::new();

        // 0-10 s: no meter reading yet: the fail-safe holds the inverters at 500 W.
        sim.run_until(10.0);
        for &(t, _, out_w) in sim.trace.iter().filter(|s| s.0 > 0.5) {
            assert!(
                out_w <= 500.0 + 1.0,
                "{t} s: output {out_w} W in start-up fail-safe"
            );
        }
        assert_eq!(
            sim.export_limit(9.0),
            (
                500.0,
                LimitSource::FailSafe {
                    cause: FailSafeCause::MeterNotRead
                }
            )
        );
        assert_eq!(
            sim.cycles[0].out.sample.site_w, None,
            "no meter, no site power"
        );

        // 10 s: the meter answers. Rises are ramped at 1 %/s of 10 kW = 100 W/s.
        sim.meter_alive = true;
        sim.run_until(600.0);
        let rises: Vec<f64> = sim
            .cycles
            .windows(2)
            .filter(|w| w[0].t_s >= 10.0)
            .map(|w| w[1].out.setpoints.total_allowed_w - w[0].out.setpoints.total_allowed_w)
            .collect();
        let max_rise = rises.iter().copied().fold(f64::MIN, f64::max);
        assert!(
            max_rise <= 100.0 + 1e-6,
            "rose {max_rise} W in one 1 s cycle"
        );
        assert!(max_rise > 90.0, "the ramp was exercised: {max_rise}");
        // Export reached the fixed 3000 W limit (50 W margin) and stays under it.
        let export = sim.trace.iter().find(|s| s.0 >= 599.0).unwrap().1;
        assert!(
            (2850.0..=3000.0).contains(&export),
            "export {export} W at 599 s"
        );
        assert_eq!(
            sim.export_limit(599.0),
            (
                3000.0,
                LimitSource::Fixed {
                    option: "export_limit_w".into()
                }
            )
        );

        // 600 s: the load drops 1.5 kW: export overshoots and is cut within 2 s.
        sim.run_until(1200.0);
        let excess = sim.longest_excess_s(600.0, 1200.0, 3000.0);
        assert!(excess > 0.0, "the load drop pushed export over the limit");
        assert!(excess <= 2.0, "over the limit for {excess} s");
        assert!(sim.max_export(610.0, 1200.0) <= 3000.0 + 60.0);

        // 12:20 local (1200 s): the tariff window's 1000 W, until 12:40 local.
        sim.run_until(1500.0);
        let (w, source) = sim.export_limit(1201.0);
        assert_eq!(
            (w, source),
            (
                1000.0,
                LimitSource::TariffWindow {
                    name: "peak".into()
                }
            )
        );
        let peak_end = sim.cycles.iter().rev().find(|c| c.t_s <= 1201.0).unwrap();
        let end = peak_end.out.status.limits[0].end_unix_s;
        assert_eq!(end, Some(NOON_UTC_S + 40 * 60), "ends 12:40 local");
        assert!(sim.longest_excess_s(1200.0, 1500.0, 1000.0) <= 2.0);
        assert!(sim.max_export(1203.0, 1500.0) <= 1000.0 + 20.0);

        // 1500-1800 s: a utility event at 200 W wins over the window.
        sim.utility = Some(event(200.0, NOON_UTC_S + 1800));
        sim.run_until(1800.0);
        assert!(matches!(
            sim.export_limit(1501.0).1,
            LimitSource::UtilityEvent { .. }
        ));
        assert!(sim.max_export(1503.0, 1800.0) <= 200.0 + 20.0);
        sim.utility = None;

        // 2400 s: the window ended, back to the fixed limit; 2500 s: the meter goes
        // silent. Within the 5 s timeout plus a cycle the fail-safe holds 500 W.
        sim.run_until(2500.0);
        assert_eq!(sim.export_limit(2450.0).0, 3000.0);
        sim.meter_alive = false;
        sim.run_until(2700.0);
        let (w, source) = sim.export_limit(2507.0);
        assert_eq!(
            (w, source),
            (
                500.0,
                LimitSource::FailSafe {
                    cause: FailSafeCause::MeterStale
                }
            )
        );
        for &(t, _, out_w) in sim.trace.iter().filter(|s| s.0 >= 2508.0 && s.0 < 2700.0) {
            assert!(out_w <= 500.0 + 1.0, "{t} s: output {out_w} W in fail-safe");
        }
        let stale = sim.cycles.iter().find(|c| c.t_s > 2507.0).unwrap();
        assert_eq!(
            stale.out.sample.site_w, None,
            "a stale meter is not telemetry"
        );
        assert!(stale.out.status.devices[0].stale);

        // 2700 s: the meter is back; the rise from the fail-safe level is ramped too.
        sim.meter_alive = true;
        sim.run_until(3600.0);
        let at_2705 = sim.trace.iter().find(|s| s.0 >= 2705.0).unwrap().2;
        assert!(
            at_2705 <= 500.0 + 6.0 * 100.0 + 1.0,
            "{at_2705} W 5 s after"
        );
        let export = sim.site.export_w();
        assert!(
            (2850.0..=3000.0).contains(&export),
            "export {export} W at the end"
        );

        // Each fail-safe entry and exit was reported once.
        // Last good reading at 2499 s; older than 5 s from 2505 s on.
        assert_eq!(sim.transitions("fail-safe:"), vec![0.0, 2505.0]);
        // Said once: "fail-safe: 500 W until the first good meter reading", not
        // "fail-safe: fail-safe 500 W ..." (the log, /events and the page show it).
        assert!(sim.transitions("fail-safe: fail-safe").is_empty());
        assert_eq!(
            sim.transitions("fail-safe: 500 W until the first good meter"),
            vec![0.0]
        );
        assert_eq!(sim.transitions("fail-safe ended"), vec![10.0, 2700.0]);
        // 3600 steps, one per second of site time.
        assert_eq!(sim.cycles.len(), 3600);
        eprintln!(
            "an hour of site time: {} steps, {} physics steps, {:?} elapsed",
            sim.cycles.len(),
            sim.trace.len(),
            started.elapsed()
        );
    }
}

/// Load steps of GEN-13 / LOA-13: 0 W, 20 % of the rating at 120 s, 10 % at 240 s, 0 W
/// at 360 s.
fn gen_loa_13_load_steps(site: &mut Site, rating_w: f64) {
    site.load_steps = vec![
        LoadStep {
            at_s: 120.0,
            load_w: 0.2 * rating_w,
        },
        LoadStep {
            at_s: 240.0,
            load_w: 0.1 * rating_w,
        },
        LoadStep {
            at_s: 360.0,
            load_w: 0.0,
        },
    ];
}

/// GEN-13 (tracking an export limit through a variable load): 10 kW of PV under an
/// export limit of 20 % of its rating (2 kW) while the load steps 0 → 2 kW → 1 kW → 0.
/// Generation follows the load: export stays at the limit (never above it for more
/// than 2 s, and within 10 % under it once settled) in every segment.
#[test]
fn gen_13_tracking_export_limit_through_variable_load() {
    let (mut site, params) = pv_site(0.0, &[5000.0, 5000.0], 5000.0, 0.5);
    gen_loa_13_load_steps(&mut site, 10_000.0);
    site.settle();
    let mut h = Harness::new(site, params);
    let limit_w = 2000.0;
    h.run_until(480.0, &export_limit(limit_w));
    assert!(longest_excess_s(&h.trace, 15_000, limit_w) < 2.0);
    for (from_s, to_s, load_w) in [
        (15.0, 120.0, 0.0),
        (135.0, 240.0, 2000.0),
        (255.0, 360.0, 1000.0),
        (375.0, 480.0, 0.0),
    ] {
        for s in h
            .trace
            .iter()
            .filter(|s| s.t_ms as f64 >= from_s * 1000.0 && (s.t_ms as f64) < to_s * 1000.0)
        {
            assert!(
                s.export_w >= 0.9 * limit_w - 100.0,
                "load {load_w} W: export {} W at {} ms fell away from the limit",
                s.export_w,
                s.t_ms
            );
        }
    }
    // With 2 kW of load the inverters produce about 4 kW.
    let at_200 = h.trace.iter().find(|s| s.t_ms == 200_000).expect("t=200 s");
    let out: f64 = at_200.outputs_w.iter().sum();
    assert!((3600.0..=4100.0).contains(&out), "output {out} W");
}

/// LOA-13 (tracking an import limit through a variable load): a 5 kW battery that
/// wants to charge at full rate under an import limit of 20 % (1 kW) while the load
/// steps 0 → 1 kW → 500 W → 0. The charge follows the load: import never above the
/// limit (plus the harness's tolerance) once settled, and the battery takes what the
/// load leaves.
#[test]
fn loa_13_tracking_import_limit_through_variable_load() {
    let mut site = Site::new(0.0, vec![SimInverter::battery(5000.0, 5000.0, 0.25)]);
    gen_loa_13_load_steps(&mut site, 5000.0);
    site.settle();
    let params = ControllerParams::new(
        vec![InverterParams {
            name: "battery".into(),
            rating_w: 5000.0,
            max_charge_w: Some(5000.0),
        }],
        1500.0,
    );
    let mut h = Harness::new(site, params);
    let limit_w = 1000.0;
    let limits = MergedLimits {
        import_limit_w: Some(fixed("import_limit_w", limit_w)),
        ..Default::default()
    };
    let mut worst_after_settle = f64::MIN;
    for step_s in 1..=480 {
        h.run_until(f64::from(step_s), &limits);
        let settled = ![0, 120, 240, 360]
            .iter()
            .any(|&t| step_s >= t && step_s < t + 15);
        if settled {
            worst_after_settle = worst_after_settle.max(h.site.meter_site_w());
        }
        if step_s == 200 {
            // 1 kW of load: no room left to charge.
            let charging: f64 = h
                .site
                .inverters
                .iter()
                .map(|i| (-i.output_w).max(0.0))
                .sum();
            assert!(charging < 150.0, "charging {charging} W at the limit");
        }
        if step_s == 100 || step_s == 450 {
            let charging: f64 = h
                .site
                .inverters
                .iter()
                .map(|i| (-i.output_w).max(0.0))
                .sum();
            assert!(
                charging > 750.0,
                "the battery takes what the load leaves: {charging} W"
            );
        }
    }
    assert!(
        worst_after_settle <= limit_w + (0.02 * limit_w).max(100.0),
        "import {worst_after_settle} W above the limit once settled"
    );
}
