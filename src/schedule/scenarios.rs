//! One test per client test procedure of the CSIP-AUS certification harness
//! (`cactus-test-definitions`, `client/procedures/*.yaml`) that exercises scheduling.
//! Each reproduces the procedure's programs, defaults and controls at the times the
//! harness creates them, steps a simulated client that polls every 10 s (and wakes at
//! `next_change_s`), and asserts the active limits over time and the responses sent.

use super::*;

/// maxExportW / maxImportW of the simulated site (the harness's `$(maxExportW)`).
const MAX_W: i32 = 5000;
/// The simulated client's poll period.
const POLL_S: i64 = 10;
const T0: i64 = 1_700_000_000;

pub(super) fn watts(w: f64) -> ActivePower {
    ActivePower::from_watts(w.round() as i32)
}

/// A DERControl as the harness's `create-der-control` makes it (responseRequired 03).
pub(super) fn derc(mrid: &str, program: &str, created: i64, start: i64, dur: u32) -> Event {
    let mut e = Event::new(mrid, program, created, start, dur, ControlSet::default());
    e.response_required = RESPONSE_RECEIVED_BIT | RESPONSE_SPECIFIC_BIT;
    e.reply_to = Some("/edev/1/rsps/site_control/rsp".to_string());
    e
}

pub(super) fn program(mrid: &str, primacy: u8, defaults: Option<DefaultControl>) -> Program {
    Program {
        mrid: mrid.to_string(),
        fsa: "/edev/1/fsa/1".to_string(),
        primacy,
        default_control: defaults,
    }
}

fn default_control(exp: Option<f64>, imp: Option<f64>, grad: Option<u16>) -> DefaultControl {
    DefaultControl {
        mrid: "DDERC".to_string(),
        controls: ControlSet {
            exp_lim_w: exp.map(watts),
            imp_lim_w: imp.map(watts),
            ..ControlSet::default()
        },
        set_grad_w: grad,
        enter_service: Default::default(),
    }
}

/// A simulated client: the server's current lists, the scheduler state, a response log.
struct Sim {
    programs: Vec<Program>,
    events: Vec<Event>,
    state: State,
    rng: Rng,
    now: i64,
    out: Option<Outcome>,
    /// (time, event mRID, status code) in the order issued.
    sent: Vec<(i64, String, u8)>,
    /// Every note the scheduler gave.
    notes: Vec<String>,
}

impl Sim {
    fn new(programs: Vec<Program>) -> Self {
        Self {
            programs,
            events: Vec::new(),
            state: State::default(),
            rng: Rng::new(42),
            now: T0,
            out: None,
            sent: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn add(&mut self, e: Event) {
        self.events.push(e);
    }

    fn event_mut(&mut self, mrid: &str) -> &mut Event {
        self.events
            .iter_mut()
            .find(|e| e.mrid == mrid)
            .expect("event in the scenario")
    }

    /// The harness's `cancel-active-der-controls`: every event not yet over is cancelled.
    fn cancel_active(&mut self) {
        let now = self.now;
        for e in &mut self.events {
            if e.start_s + i64::from(e.duration_s) > now
                && matches!(e.status.current, StatusCode::Scheduled | StatusCode::Active)
            {
                e.status.current = StatusCode::Cancelled;
                e.status.date_time_s = now;
            }
        }
    }

    fn eval(&mut self) {
        let input = Input {
            programs: &self.programs,
            events: &self.events,
            now_s: self.now,
        };
        let out = evaluate(&input, &mut self.rng, &self.state);
        for r in &out.responses {
            self.sent
                .push((r.at_s, r.key.event_mrid.clone(), r.key.status.code()));
        }
        self.notes.extend(out.notes.iter().cloned());
        self.state = out.state.clone();
        self.out = Some(out);
    }

    /// Advances to `t`, evaluating at every poll and every `next_change_s` on the way.
    fn run_to(&mut self, t: i64) {
        self.eval();
        while self.now < t {
            let next_poll = self.now + POLL_S;
            let wake = self
                .out
                .as_ref()
                .and_then(|o| o.next_change_s)
                .map_or(next_poll, |n| n.min(next_poll));
            self.now = wake.min(t);
            self.eval();
        }
    }

    /// Advances to `t` waking only at `next_change_s`: the server is unreachable and the
    /// engine keeps calling with the last known lists.
    fn sleep_to(&mut self, t: i64) {
        self.eval();
        while self.now < t {
            let wake = self.out.as_ref().and_then(|o| o.next_change_s).unwrap_or(t);
            self.now = wake.min(t);
            self.eval();
        }
    }

    fn at(&mut self, offset_s: i64) {
        self.run_to(T0 + offset_s);
    }

    fn w(&self, mode: ControlMode) -> Option<f64> {
        self.out.as_ref().and_then(|o| o.active.watts(mode))
    }

    fn value(&self, mode: ControlMode) -> Option<ModeValue> {
        self.out
            .as_ref()
            .and_then(|o| o.active.get(mode))
            .map(|a| a.value.clone())
    }

    fn source(&self, mode: ControlMode) -> String {
        match self.out.as_ref().and_then(|o| o.active.get(mode)) {
            Some(ActiveValue {
                source: Source::Event { event_mrid, .. },
                ..
            }) => event_mrid.clone(),
            Some(ActiveValue {
                source: Source::Default { program_mrid, .. },
                ..
            }) => format!("default:{program_mrid}"),
            None => "none".to_string(),
        }
    }

    fn ramp(&self) -> Ramp {
        self.out.as_ref().map_or(Ramp::Unspecified, |o| o.ramp)
    }

    /// The status codes sent for one event, in order.
    fn codes(&self, mrid: &str) -> Vec<u8> {
        self.sent
            .iter()
            .filter(|(_, m, _)| m == mrid)
            .map(|(_, _, c)| *c)
            .collect()
    }

    /// When a status was sent for an event.
    fn sent_at(&self, mrid: &str, code: u8) -> Option<i64> {
        self.sent
            .iter()
            .find(|(_, m, c)| m == mrid && *c == code)
            .map(|(t, _, _)| t - T0)
    }
}

fn exp_imp(e: &mut Event, exp: f64, imp: f64) {
    e.controls.exp_lim_w = Some(watts(exp));
    e.controls.imp_lim_w = Some(watts(imp));
}

use ControlMode::{Connect, ExpLimW, GenLimW, ImpLimW, LoadLimW};

/// ALL-18 "Control Responses": the harness waits for Received (1), Started (2) and
/// Completed (3) of DERC1; Received and Started of DERC2, then cancels it and waits for
/// Cancelled (6); Received of DERC3, cancels it before its start and waits for 6; then
/// DERC4 followed by a newer overlapping control with the same modes, and waits for
/// Superseded (7) of DERC4.
#[test]
fn all_18_control_responses() {
    let mut sim = Sim::new(vec![program(
        "DERP1",
        0,
        Some(default_control(Some(0.0), Some(0.0), Some(27))),
    )]);
    let mut d1 = derc("DERC1", "DERP1", T0, T0, 120);
    exp_imp(&mut d1, 2.0 * MAX_W as f64, 2.0 * MAX_W as f64);
    sim.add(d1);
    sim.at(5);
    assert_eq!(sim.codes("DERC1"), vec![1, 2]);
    assert_eq!(sim.w(ExpLimW), Some(10_000.0));
    assert_eq!(sim.source(ExpLimW), "DERC1");
    assert_eq!(sim.ramp(), Ramp::GradientHundredthsPctPerS(27));
    sim.at(125);
    assert_eq!(sim.codes("DERC1"), vec![1, 2, 3]);
    assert_eq!(sim.sent_at("DERC1", 3), Some(120));
    assert_eq!(sim.w(ExpLimW), Some(0.0));
    assert_eq!(sim.source(ImpLimW), "default:DERP1");

    // (g) DERC2 five minutes ahead; cancelled once started.
    let mut d2 = derc("DERC2", "DERP1", T0 + 125, T0 + 425, 600);
    exp_imp(&mut d2, 10_000.0, 10_000.0);
    sim.add(d2);
    sim.at(130);
    assert_eq!(sim.codes("DERC2"), vec![1]);
    assert_eq!(sim.w(ExpLimW), Some(0.0));
    sim.at(430);
    assert_eq!(sim.codes("DERC2"), vec![1, 2]);
    assert_eq!(sim.sent_at("DERC2", 2), Some(425));
    assert_eq!(sim.w(ExpLimW), Some(10_000.0));
    sim.cancel_active();
    sim.at(440);
    assert_eq!(sim.codes("DERC2"), vec![1, 2, 6]);
    assert_eq!(sim.w(ExpLimW), Some(0.0));

    // (l-n) DERC3 cancelled before it starts: Received then Cancelled, never Started.
    let mut d3 = derc("DERC3", "DERP1", T0 + 440, T0 + 1040, 120);
    exp_imp(&mut d3, 0.0, 0.0);
    sim.add(d3);
    sim.at(450);
    sim.cancel_active();
    sim.at(460);
    assert_eq!(sim.codes("DERC3"), vec![1, 6]);

    // (p-s) DERC4, then a newer 60 s control with the same modes starting 10 s later.
    let mut d4 = derc("DERC4", "DERP1", T0 + 460, T0 + 1060, 600);
    exp_imp(&mut d4, 10_000.0, 10_000.0);
    sim.add(d4);
    sim.at(470);
    assert_eq!(sim.codes("DERC4"), vec![1]);
    let mut d5 = derc("DERC5", "DERP1", T0 + 470, T0 + 1070, 60);
    exp_imp(&mut d5, 0.0, 0.0);
    sim.add(d5);
    sim.at(1065);
    assert_eq!(
        sim.w(ExpLimW),
        Some(10_000.0),
        "DERC4 runs until DERC5 starts"
    );
    sim.at(1075);
    assert_eq!(sim.codes("DERC4"), vec![1, 2, 7]);
    assert_eq!(sim.sent_at("DERC4", 7), Some(1070));
    assert_eq!(sim.source(ExpLimW), "DERC5");
    assert_eq!(sim.w(ExpLimW), Some(0.0));
    sim.at(1200);
    assert_eq!(sim.codes("DERC5"), vec![1, 2, 3]);
    assert_eq!(
        sim.source(ExpLimW),
        "default:DERP1",
        "a superseded event never resumes"
    );
    assert_eq!(
        sim.codes("DERC3"),
        vec![1, 6],
        "nothing more for the cancelled DERC3"
    );
}

/// ALL-21 "Scheduling": 24 consecutive one-minute controls created at once; every
/// control must get Received, Started and Completed, and each minute's limits apply.
#[test]
fn all_21_scheduling() {
    let fractions = [
        0.3, 0.6, 0.4, 0.5, 0.2, 0.1, 0.7, 0.2, 0.3, 0.3, 0.5, 0.9, 0.1, 0.1, 0.5, 0.4, 0.1, 0.7,
        0.9, 0.1, 0.4, 0.3, 0.7, 1.0,
    ];
    let mut sim = Sim::new(vec![program(
        "DERP1",
        0,
        Some(default_control(Some(0.0), Some(0.0), Some(27))),
    )]);
    for (k, f) in fractions.iter().enumerate() {
        let mut e = derc(
            &format!("DERC{}", k + 1),
            "DERP1",
            T0,
            T0 + 60 * k as i64,
            60,
        );
        exp_imp(&mut e, MAX_W as f64 * f, MAX_W as f64 * f);
        sim.add(e);
    }
    for (k, f) in fractions.iter().enumerate() {
        sim.at(60 * k as i64 + 30);
        assert_eq!(
            sim.w(ExpLimW),
            Some((MAX_W as f64 * f).round()),
            "minute {k}"
        );
        assert_eq!(
            sim.w(ImpLimW),
            Some((MAX_W as f64 * f).round()),
            "minute {k}"
        );
        assert_eq!(sim.source(ExpLimW), format!("DERC{}", k + 1));
        let until = sim
            .out
            .as_ref()
            .and_then(|o| o.active.get(ExpLimW)?.until_s);
        assert_eq!(
            until,
            Some(T0 + 60 * (k as i64 + 1)),
            "ends with its minute"
        );
    }
    sim.at(1500);
    for k in 1..=24 {
        let mrid = format!("DERC{k}");
        assert_eq!(sim.codes(&mrid), vec![1, 2, 3], "{mrid}");
        assert_eq!(
            sim.sent_at(&mrid, 2),
            Some(60 * (k - 1)),
            "{mrid} starts on time"
        );
        assert_eq!(
            sim.sent_at(&mrid, 3),
            Some(60 * k),
            "{mrid} completes on time"
        );
    }
    assert_eq!(sim.source(ExpLimW), "default:DERP1");
    assert_eq!(sim.w(ExpLimW), Some(0.0));
}

/// ALL-22 "Randomisation": five consecutive 120 s controls with randomizeStart 60 s.
/// Each actual start must fall inside its randomization window (the harness leaves
/// "random enough" to a human reading the Started times), drawn once and kept.
#[test]
fn all_22_randomisation() {
    let mut sim = Sim::new(vec![program(
        "DERP1",
        0,
        Some(default_control(Some(0.0), Some(0.0), Some(27))),
    )]);
    for k in 0..5 {
        let mut e = derc(&format!("DERC{}", k + 1), "DERP1", T0, T0 + 120 * k, 120);
        e.randomize_start_s = 60;
        e.controls.exp_lim_w = Some(watts(2.0 * MAX_W as f64));
        sim.add(e);
    }
    sim.at(1);
    let offsets: Vec<i32> = (1..=5)
        .map(|k| sim.state.events[&format!("DERC{k}")].start_offset_s)
        .collect();
    assert!(offsets.iter().all(|o| (0..=60).contains(o)), "{offsets:?}");
    assert!(
        offsets.windows(2).any(|w| w[0] != w[1]),
        "draws differ between events: {offsets:?}"
    );
    if offsets[0] > 1 {
        assert_eq!(
            sim.source(ExpLimW),
            "default:DERP1",
            "DERC1 waits for its draw"
        );
    }
    sim.at(700);
    for k in 1..=5usize {
        let mrid = format!("DERC{k}");
        let start = 120 * (k as i64 - 1) + i64::from(offsets[k - 1]);
        assert_eq!(sim.codes(&mrid), vec![1, 2, 3], "{mrid}");
        assert_eq!(
            sim.sent_at(&mrid, 2),
            Some(start),
            "{mrid} starts at its draw"
        );
        assert_eq!(sim.sent_at(&mrid, 3), Some(start + 120), "{mrid}");
        assert_eq!(
            sim.state.events[&mrid].start_offset_s,
            offsets[k - 1],
            "{mrid}: the draw is kept"
        );
    }
    // Replaying the whole run from the start with the same seed gives the same starts.
    let first_run = sim.sent.clone();
    let mut again = Sim::new(sim.programs.clone());
    again.events = sim.events.clone();
    again.at(700);
    assert_eq!(again.sent, first_run);
}

/// ALL-23 "Communication Loss": five consecutive 120 s controls; 10 s after the client
/// read the default the server becomes unreachable. The DER must keep following the
/// schedule and then fall back to the DefaultDERControl (0 W); after comms return a new
/// control applies.
#[test]
fn all_23_communication_loss() {
    let mut sim = Sim::new(vec![program(
        "DERP1",
        0,
        Some(default_control(Some(0.0), Some(0.0), Some(600))),
    )]);
    let fractions = [2.0, 0.2, 0.4, 0.3, 0.4];
    for (k, f) in fractions.iter().enumerate() {
        let mut e = derc(
            &format!("DERC{}", k + 1),
            "DERP1",
            T0,
            T0 + 120 * k as i64,
            120,
        );
        exp_imp(&mut e, MAX_W as f64 * f, MAX_W as f64 * f);
        sim.add(e);
    }
    sim.at(10);
    // Comms lost: no polls; the engine sleeps until next_change_s with the last lists.
    for (k, f) in fractions.iter().enumerate() {
        sim.sleep_to(T0 + 120 * k as i64 + 60);
        assert_eq!(sim.w(ExpLimW), Some(MAX_W as f64 * f), "control {}", k + 1);
    }
    sim.sleep_to(T0 + 730);
    assert_eq!(sim.source(ExpLimW), "default:DERP1");
    assert_eq!(sim.w(ExpLimW), Some(0.0));
    assert_eq!(sim.w(ImpLimW), Some(0.0));
    assert_eq!(sim.out.as_ref().and_then(|o| o.next_change_s), None);
    for k in 1..=5 {
        assert_eq!(sim.codes(&format!("DERC{k}")), vec![1, 2, 3]);
    }
    // Comms restored: a new control from now for 300 s.
    let mut e = derc("DERC6", "DERP1", T0 + 742, T0 + 742, 300);
    exp_imp(&mut e, 10_000.0, 10_000.0);
    sim.add(e);
    sim.at(750);
    assert_eq!(sim.w(ExpLimW), Some(10_000.0));
    assert_eq!(sim.codes("DERC6"), vec![1, 2]);
}

/// ALL-24 "Validation of Scaling Factors": three controls, the second and third with
/// power-of-ten multipliers 2 and 1; the limits must be the scaled watts. The harness
/// checks Received and Started for all (controls may overlap by a poll's slack).
#[test]
fn all_24_scaling_factors() {
    let mut sim = Sim::new(vec![program(
        "DERP1",
        0,
        Some(default_control(Some(0.0), Some(0.0), Some(27))),
    )]);
    let mut a = derc("DERC1", "DERP1", T0, T0, 120);
    exp_imp(&mut a, 10_000.0, 10_000.0);
    sim.add(a);
    sim.at(60);
    assert_eq!(sim.w(ExpLimW), Some(10_000.0));
    let mut b = derc("DERC2", "DERP1", T0 + 119, T0 + 119, 120);
    let scaled = |w: f64, m: i8| ActivePower {
        value: (w / 10f64.powi(m.into())).round() as i32,
        multiplier: m,
    };
    b.controls.exp_lim_w = Some(scaled(0.3 * MAX_W as f64, 2));
    b.controls.imp_lim_w = Some(scaled(0.3 * MAX_W as f64, 2));
    assert_eq!(b.controls.exp_lim_w.map(|p| p.value), Some(15));
    sim.add(b);
    sim.at(180);
    assert_eq!(sim.w(ExpLimW), Some(1500.0));
    assert_eq!(sim.w(ImpLimW), Some(1500.0));
    let mut c = derc("DERC3", "DERP1", T0 + 238, T0 + 238, 120);
    c.controls.exp_lim_w = Some(scaled(0.4 * MAX_W as f64, 1));
    c.controls.imp_lim_w = Some(scaled(0.4 * MAX_W as f64, 1));
    sim.add(c);
    sim.at(300);
    assert_eq!(sim.w(ExpLimW), Some(2000.0));
    sim.at(420);
    for k in 1..=3 {
        let codes = sim.codes(&format!("DERC{k}"));
        assert_eq!(&codes[..2], &[1, 2], "DERC{k}");
    }
    // The one-second overlaps supersede the older control; the last one completes.
    assert_eq!(sim.codes("DERC1"), vec![1, 2, 7]);
    assert_eq!(sim.codes("DERC3"), vec![1, 2, 3]);
    assert_eq!(sim.w(ExpLimW), Some(0.0));
}

/// The shared shape of GEN-03, GEN-04, LOA-03 and LOA-04 ("Default Control – …"): a
/// 200 % control is running; the default for `mode` becomes 30 %; the control is
/// cancelled, so the default applies (ramped at setGradW); a new 200 % control applies
/// for 600 s, then the default again; finally a 0 W control arrives and the
/// DefaultDERControl is removed, so after that control nothing sets the mode.
fn default_control_scenario(mode: ControlMode, initial_default: DefaultControl, max_w: f64) {
    let set = |c: &mut ControlSet, w: f64| match mode {
        ExpLimW => c.exp_lim_w = Some(watts(w)),
        ImpLimW => c.imp_lim_w = Some(watts(w)),
        GenLimW => c.gen_lim_w = Some(watts(w)),
        LoadLimW => c.load_lim_w = Some(watts(w)),
        _ => unreachable!("power modes only"),
    };
    let mut sim = Sim::new(vec![program("DERP1", 0, Some(initial_default))]);
    let mut d1 = derc("DERC1", "DERP1", T0, T0, 900);
    set(&mut d1.controls, 2.0 * max_w);
    sim.add(d1);
    sim.at(5);
    assert_eq!(sim.w(mode), Some(2.0 * max_w));
    // (a, b) the default for the mode becomes 30 %.
    if let Some(d) = sim.programs[0].default_control.as_mut() {
        set(&mut d.controls, 0.3 * max_w);
    }
    sim.at(15);
    assert_eq!(sim.w(mode), Some(2.0 * max_w), "the event still wins");
    // (b, c, d) the control is cancelled after the next poll: the default takes over.
    sim.cancel_active();
    sim.at(25);
    assert_eq!(sim.codes("DERC1"), vec![1, 2, 6]);
    assert_eq!(sim.w(mode), Some(0.3 * max_w));
    assert_eq!(sim.source(mode), "default:DERP1");
    assert_eq!(sim.ramp(), Ramp::GradientHundredthsPctPerS(167));
    // (d, e) a new 200 % control for 600 s.
    let mut d2 = derc("DERC2", "DERP1", T0 + 145, T0 + 145, 600);
    set(&mut d2.controls, 2.0 * max_w);
    sim.add(d2);
    sim.at(150);
    assert_eq!(sim.w(mode), Some(2.0 * max_w));
    assert_eq!(sim.source(mode), "DERC2");
    // (f, g) it ends; the default applies again.
    sim.at(750);
    assert_eq!(sim.codes("DERC2"), vec![1, 2, 3]);
    assert_eq!(sim.w(mode), Some(0.3 * max_w));
    // (h) a 0 W control, and the DefaultDERControl is removed.
    let mut d3 = derc("DERC3", "DERP1", T0 + 870, T0 + 870, 600);
    set(&mut d3.controls, 0.0);
    sim.add(d3);
    sim.programs[0].default_control = None;
    sim.at(880);
    assert_eq!(sim.w(mode), Some(0.0));
    assert_eq!(sim.source(mode), "DERC3");
    assert_eq!(sim.ramp(), Ramp::Unspecified, "no default, no setGradW");
    sim.at(1500);
    assert_eq!(sim.codes("DERC3"), vec![1, 2, 3]);
    assert_eq!(
        sim.value(mode),
        None,
        "no event and no default: control decides"
    );
}

fn default_with(exp: f64, imp: f64) -> DefaultControl {
    default_control(Some(exp), Some(imp), Some(167))
}

/// GEN-03 "Default Control – Export Limit".
#[test]
fn gen_03_default_export_limit() {
    default_control_scenario(ExpLimW, default_with(0.0, 0.0), MAX_W as f64);
}

/// GEN-04 "Default Control – Generation Limit" (import/export defaults at the site's
/// maxima so they do not mask the generation limit).
#[test]
fn gen_04_default_generation_limit() {
    let mut sim_default = default_with(MAX_W as f64, MAX_W as f64);
    sim_default.controls.gen_lim_w = None;
    default_control_scenario(GenLimW, sim_default, MAX_W as f64);
}

/// LOA-03 "Default Control – Import Limit".
#[test]
fn loa_03_default_import_limit() {
    default_control_scenario(ImpLimW, default_with(0.0, 0.0), MAX_W as f64);
}

/// LOA-04 "Default Control – Load Limit".
#[test]
fn loa_04_default_load_limit() {
    default_control_scenario(
        LoadLimW,
        default_with(MAX_W as f64, MAX_W as f64),
        MAX_W as f64,
    );
}

/// GEN-10 "Primacy Validation for Generators": FSA1 holds five programs at primacy 1,
/// FSA2 ten at primacy 2. Checks: the primacy-1 default wins; a primacy-2 control
/// beats any default; a primacy-1 control with the same modes supersedes it (7); controls
/// with disjoint modes run side by side; a newer control in the same program supersedes
/// the older; a primacy-2 control that shares only some modes with a primacy-1 control
/// still starts and applies its other modes; cancelling leaves the primacy-1 default.
#[test]
fn gen_10_primacy_validation() {
    let mut programs = Vec::new();
    for k in 1..=15 {
        let (primacy, fsa) = if k <= 5 { (1, "fsa1") } else { (2, "fsa2") };
        let default = (k == 1 || k == 6).then(|| default_with(0.0, 0.0));
        let mut p = program(&format!("DERP{k}"), primacy, default);
        p.fsa = fsa.to_string();
        programs.push(p);
    }
    let mut sim = Sim::new(programs);
    let set_default_exp = |sim: &mut Sim, k: usize, w: f64| {
        if let Some(d) = sim.programs[k - 1].default_control.as_mut() {
            d.controls.exp_lim_w = Some(watts(w));
        }
    };
    // (a, b) DERP1's default becomes 30 %.
    set_default_exp(&mut sim, 1, 1500.0);
    sim.at(10);
    assert_eq!(sim.w(ExpLimW), Some(1500.0));
    assert_eq!(sim.source(ExpLimW), "default:DERP1");
    // (c, d) DERC1 on DERP6 (primacy 2): an active control beats every default.
    let mut d1 = derc("DERC1", "DERP6", T0 + 190, T0 + 190, 600);
    d1.controls.exp_lim_w = Some(watts(10_000.0));
    sim.add(d1);
    sim.at(200);
    assert_eq!(sim.codes("DERC1"), vec![1, 2]);
    assert_eq!(sim.w(ExpLimW), Some(10_000.0));
    assert_eq!(
        sim.w(ImpLimW),
        Some(0.0),
        "DERP1's default still sets import"
    );
    // (e-h) DERC2 on DERP1 (primacy 1), same mode: DERC1 is superseded.
    let mut d2 = derc("DERC2", "DERP1", T0 + 260, T0 + 260, 840);
    d2.controls.exp_lim_w = Some(watts(0.0));
    sim.add(d2);
    sim.at(270);
    assert_eq!(sim.codes("DERC1"), vec![1, 2, 7]);
    assert_eq!(sim.codes("DERC2"), vec![1, 2]);
    assert_eq!(sim.w(ExpLimW), Some(0.0));
    sim.at(1105);
    assert_eq!(sim.codes("DERC2"), vec![1, 2, 3]);
    assert_eq!(sim.w(ExpLimW), Some(1500.0), "DERC1 does not resume");
    // (i-l) DERC3 on DERP6 runs and completes; then DERP1's default again.
    let mut d3 = derc("DERC3", "DERP6", T0 + 1110, T0 + 1110, 300);
    d3.controls.exp_lim_w = Some(watts(10_000.0));
    sim.add(d3);
    sim.at(1120);
    assert_eq!(sim.w(ExpLimW), Some(10_000.0));
    sim.at(1420);
    assert_eq!(sim.codes("DERC3"), vec![1, 2, 3]);
    assert_eq!(sim.w(ExpLimW), Some(1500.0));
    // (m-r) DERC4 (DERP1: gen 0, disconnect) and DERC5 (DERP6: export 200 %) share no
    // mode: both start; DERC4 completes; DERC5 carries on.
    let mut d4 = derc("DERC4", "DERP1", T0 + 1540, T0 + 1540, 300);
    d4.controls.gen_lim_w = Some(watts(0.0));
    d4.controls.connect = Some(false);
    let mut d5 = derc("DERC5", "DERP6", T0 + 1541, T0 + 1541, 1200);
    d5.controls.exp_lim_w = Some(watts(10_000.0));
    sim.add(d4);
    sim.add(d5);
    sim.at(1550);
    assert_eq!(sim.codes("DERC4"), vec![1, 2]);
    assert_eq!(sim.codes("DERC5"), vec![1, 2]);
    assert_eq!(sim.w(GenLimW), Some(0.0));
    assert_eq!(sim.value(Connect), Some(ModeValue::Flag(false)));
    assert_eq!(sim.w(ExpLimW), Some(10_000.0));
    sim.at(1850);
    assert_eq!(sim.codes("DERC4"), vec![1, 2, 3]);
    assert_eq!(sim.value(Connect), None);
    assert_eq!(sim.w(ExpLimW), Some(10_000.0));
    // (s-u) DERC6 on DERP6 at 50 %: the newer control in the same program supersedes DERC5.
    let mut d6 = derc("DERC6", "DERP6", T0 + 2300, T0 + 2300, 300);
    d6.controls.exp_lim_w = Some(watts(2500.0));
    sim.add(d6);
    sim.at(2310);
    assert_eq!(sim.codes("DERC5"), vec![1, 2, 7]);
    assert_eq!(sim.codes("DERC6"), vec![1, 2]);
    assert_eq!(sim.w(ExpLimW), Some(2500.0));
    // (v-x) DERC7 (DERP1: export 0) and DERC8 (DERP6: export 50 %, generation 30 %):
    // both start; DERC7 wins export, DERC8's generation limit applies.
    let mut d7 = derc("DERC7", "DERP1", T0 + 2430, T0 + 2430, 300);
    d7.controls.exp_lim_w = Some(watts(0.0));
    let mut d8 = derc("DERC8", "DERP6", T0 + 2431, T0 + 2431, 300);
    d8.controls.exp_lim_w = Some(watts(2500.0));
    d8.controls.gen_lim_w = Some(watts(1500.0));
    sim.add(d7);
    sim.add(d8);
    sim.at(2440);
    assert_eq!(sim.codes("DERC7"), vec![1, 2]);
    assert_eq!(sim.codes("DERC8"), vec![1, 2]);
    assert_eq!(
        sim.codes("DERC6"),
        vec![1, 2, 7],
        "DERC8 covers all of DERC6"
    );
    assert_eq!(sim.w(ExpLimW), Some(0.0));
    assert_eq!(sim.source(ExpLimW), "DERC7");
    assert_eq!(sim.w(GenLimW), Some(1500.0));
    assert_eq!(sim.source(GenLimW), "DERC8");
    sim.at(2735);
    assert_eq!(sim.codes("DERC7"), vec![1, 2, 3]);
    assert_eq!(sim.codes("DERC8"), vec![1, 2, 3]);
    // (y-aa) DERC9 (DERP1: generation 50 %) and DERC10 (DERP6: export 20 %).
    let mut d9 = derc("DERC9", "DERP1", T0 + 2740, T0 + 2740, 300);
    d9.controls.gen_lim_w = Some(watts(2500.0));
    let mut d10 = derc("DERC10", "DERP6", T0 + 2741, T0 + 2741, 300);
    d10.controls.exp_lim_w = Some(watts(1000.0));
    sim.add(d9);
    sim.add(d10);
    sim.at(2750);
    assert_eq!(sim.w(ExpLimW), Some(1000.0));
    assert_eq!(sim.w(GenLimW), Some(2500.0));
    // (bb-ee) new defaults (DERP1 50 %, DERP6 20 %) and everything cancelled: the
    // primacy-1 default wins.
    set_default_exp(&mut sim, 1, 2500.0);
    set_default_exp(&mut sim, 6, 1000.0);
    sim.cancel_active();
    sim.at(2870);
    assert_eq!(sim.codes("DERC9"), vec![1, 2, 6]);
    assert_eq!(sim.codes("DERC10"), vec![1, 2, 6]);
    assert_eq!(sim.w(ExpLimW), Some(2500.0));
    assert_eq!(sim.source(ExpLimW), "default:DERP1");
    assert_eq!(sim.w(GenLimW), None);
}

/// Cancelled with randomization (status 3): a running event stops within the larger of
/// |randomizeStart| and |randomizeDuration| after the cancellation is seen; the draw is
/// made once. A plain cancel (status 2) stops at once.
#[test]
fn cancel_with_randomization_stops_within_the_window() {
    let mut sim = Sim::new(vec![program(
        "DERP1",
        0,
        Some(default_control(Some(0.0), Some(0.0), None)),
    )]);
    let mut e = derc("R1", "DERP1", T0, T0, 3600);
    e.randomize_start_s = -30;
    e.randomize_duration_s = 300;
    e.controls.exp_lim_w = Some(watts(4000.0));
    sim.add(e);
    sim.at(100);
    assert_eq!(sim.codes("R1"), vec![1, 2]);
    let ev = sim.event_mut("R1");
    ev.status.current = StatusCode::CancelledWithRandomization;
    ev.status.date_time_s = T0 + 100;
    sim.at(101);
    let stop = sim.state.events["R1"].stop.expect("stop decided when seen");
    assert!((T0 + 101..=T0 + 401).contains(&stop.at_s), "{stop:?}");
    if stop.at_s > T0 + 101 {
        assert_eq!(sim.w(ExpLimW), Some(4000.0), "runs on until its drawn end");
    }
    sim.at(500);
    assert_eq!(sim.codes("R1"), vec![1, 2, 6]);
    assert_eq!(sim.sent_at("R1", 6), Some(stop.at_s - T0));
    assert_eq!(sim.w(ExpLimW), Some(0.0));
}

/// Events the server stops listing: a running one ends now (answered as Cancelled), a
/// future one is dropped silently; an old one that comes back is not answered again.
#[test]
fn vanished_events_end_or_are_dropped() {
    let mut sim = Sim::new(vec![program(
        "DERP1",
        0,
        Some(default_control(Some(1000.0), None, None)),
    )]);
    let mut running = derc("V1", "DERP1", T0, T0, 600);
    running.controls.exp_lim_w = Some(watts(3000.0));
    let mut future = derc("V2", "DERP1", T0, T0 + 900, 600);
    future.controls.exp_lim_w = Some(watts(2000.0));
    sim.add(running);
    sim.add(future);
    sim.at(10);
    assert_eq!(sim.w(ExpLimW), Some(3000.0));
    let listed = std::mem::take(&mut sim.events);
    sim.at(20);
    assert_eq!(sim.codes("V1"), vec![1, 2, 6]);
    assert_eq!(sim.codes("V2"), vec![1]);
    assert_eq!(sim.w(ExpLimW), Some(1000.0));
    assert_eq!(sim.out.as_ref().and_then(|o| o.next_change_s), None);
    assert!(
        sim.notes.iter().any(|n| n.contains("V1")),
        "{:?}",
        sim.notes
    );
    sim.events = listed;
    sim.at(2000);
    assert_eq!(sim.codes("V1"), vec![1, 2, 6], "nothing twice");
    assert_eq!(sim.codes("V2"), vec![1], "a dropped event stays dropped");
}

/// Rejections: an event seen only after its end (254), one with invalid data (253), one
/// with no mode this client runs (252). None of them applies.
#[test]
fn expired_invalid_and_inapplicable_events_are_rejected() {
    let mut sim = Sim::new(vec![program(
        "DERP1",
        0,
        Some(default_control(Some(1000.0), None, None)),
    )]);
    let mut expired = derc("X1", "DERP1", T0 - 900, T0 - 900, 300);
    expired.controls.exp_lim_w = Some(watts(0.0));
    let mut invalid = derc("X2", "DERP1", T0, T0, 300);
    invalid.controls.exp_lim_w = Some(watts(-5.0));
    let none = derc("X3", "DERP1", T0, T0, 300);
    let mut orphan = derc("X4", "NOPROGRAM", T0, T0, 300);
    orphan.controls.exp_lim_w = Some(watts(0.0));
    for e in [expired, invalid, none, orphan] {
        sim.add(e);
    }
    sim.at(5);
    assert_eq!(sim.codes("X1"), vec![254]);
    assert_eq!(sim.codes("X2"), vec![253]);
    assert_eq!(sim.codes("X3"), vec![252]);
    assert_eq!(
        sim.codes("X4"),
        Vec::<u8>::new(),
        "unknown program: not answered yet"
    );
    assert!(sim.notes.iter().any(|n| n.contains("X4")));
    assert_eq!(sim.w(ExpLimW), Some(1000.0));
    assert!(
        sim.notes
            .iter()
            .any(|n| n.contains("X2") && n.contains("negative")),
        "{:?}",
        sim.notes
    );
    sim.at(30);
    assert_eq!(sim.sent.len(), 3, "each rejection once");
    // Once its program is known, the waiting event runs (it was never recorded before).
    sim.programs.push(program("NOPROGRAM", 5, None));
    sim.at(40);
    assert_eq!(sim.codes("X4"), vec![1, 2]);
    assert_eq!(sim.w(ExpLimW), Some(0.0));
}

/// responseRequired gates responses: 00 sends nothing, 01 only Received.
#[test]
fn response_required_bits_gate_responses() {
    let mut sim = Sim::new(vec![program("DERP1", 0, None)]);
    let mut silent = derc("S0", "DERP1", T0, T0, 60);
    silent.response_required = 0;
    silent.controls.exp_lim_w = Some(watts(100.0));
    let mut ack_only = derc("S1", "DERP1", T0, T0 + 60, 60);
    ack_only.response_required = RESPONSE_RECEIVED_BIT;
    ack_only.controls.exp_lim_w = Some(watts(200.0));
    sim.add(silent);
    sim.add(ack_only);
    sim.at(30);
    assert_eq!(sim.w(ExpLimW), Some(100.0));
    sim.at(200);
    assert_eq!(sim.codes("S0"), Vec::<u8>::new());
    assert_eq!(sim.codes("S1"), vec![1]);
    assert_eq!(
        sim.state.events["S1"].ended.map(|e| e.reason),
        Some(EndReason::Completed)
    );
}

/// The state survives a restart through serde (the store persists it as JSON): the
/// same draws, no response repeated, the same active values.
#[test]
fn state_round_trips_through_json_across_a_restart() {
    let mut sim = Sim::new(vec![program("DERP1", 0, None)]);
    let mut e = derc("P1", "DERP1", T0, T0 + 30, 600);
    e.randomize_start_s = 120;
    e.controls.exp_lim_w = Some(watts(700.0));
    sim.add(e);
    sim.at(200);
    let json = serde_json::to_string(&sim.state).expect("state serializes");
    let restored: State = serde_json::from_str(&json).expect("state deserializes");
    assert_eq!(restored, sim.state);
    let mut after = Sim::new(sim.programs.clone());
    after.events = sim.events.clone();
    after.state = restored;
    after.rng = Rng::new(999); // a different seed after restart changes nothing known
    after.now = sim.now;
    after.at(1000);
    assert_eq!(after.sent.iter().filter(|s| s.2 == 1).count(), 0);
    assert_eq!(after.codes("P1"), vec![3]);
    assert_eq!(
        after.state.events["P1"].start_offset_s,
        sim.state.events["P1"].start_offset_s
    );
}

/// A status of Superseded set by the server ends a running event at once with 7.
#[test]
fn server_superseded_status_ends_the_event() {
    let mut sim = Sim::new(vec![program("DERP1", 0, None)]);
    let mut e = derc("Q1", "DERP1", T0, T0, 600);
    e.controls.gen_lim_w = Some(watts(100.0));
    sim.add(e);
    sim.at(10);
    sim.event_mut("Q1").status.current = StatusCode::Superseded;
    sim.at(20);
    assert_eq!(sim.codes("Q1"), vec![1, 2, 7]);
    assert_eq!(sim.w(GenLimW), None);
}

/// A program that disappears (its FSA was removed) takes its running events with it:
/// they end as if no longer listed, and the remaining program's default applies.
#[test]
fn removed_program_ends_its_events() {
    let mut sim = Sim::new(vec![
        program("DERP1", 1, Some(default_control(Some(800.0), None, None))),
        program("DERP2", 2, None),
    ]);
    let mut e = derc("F1", "DERP2", T0, T0, 600);
    e.controls.exp_lim_w = Some(watts(9000.0));
    sim.add(e);
    sim.at(10);
    assert_eq!(sim.w(ExpLimW), Some(9000.0));
    sim.programs.retain(|p| p.mrid != "DERP2");
    sim.at(20);
    assert_eq!(sim.codes("F1"), vec![1, 2, 6]);
    assert_eq!(sim.source(ExpLimW), "default:DERP1");
}

/// An event that ran to its end while the client was not looking and is then no longer
/// listed is reported Completed at its end, not Cancelled.
#[test]
fn event_gone_after_its_end_is_completed() {
    let mut sim = Sim::new(vec![program("DERP1", 0, None)]);
    let mut e = derc("G1", "DERP1", T0, T0, 60);
    e.controls.exp_lim_w = Some(watts(100.0));
    sim.add(e);
    sim.at(10);
    sim.events.clear();
    sim.now = T0 + 300;
    sim.eval();
    assert_eq!(sim.codes("G1"), vec![1, 2, 3]);
    assert_eq!(sim.sent_at("G1", 3), Some(60));
}
