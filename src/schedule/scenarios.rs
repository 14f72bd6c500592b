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
}

#[allow(dead_code)] // helpers used by the scenarios being added
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
            .map(|a| a.value)
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

use ControlMode::{ExpLimW, ImpLimW};

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
