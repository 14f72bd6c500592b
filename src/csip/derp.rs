//! DER Program function set: the DERProgramLists of every FSA, each program's
//! DERControlList, DefaultDERControl and DERCurveList, and the scheduler run over them.
//!
//! Failure isolation: a program list, control list, default control or curve list that
//! fails (5xx, timeout, garbage) keeps what was last read of it, is retried on its own
//! backoff and never discards its siblings or parents; only a 404 on a program list or
//! control list walks the tree again. A DefaultDERControl that answers 404 or an empty
//! body is "no default" (common on real servers). A DERControl that does not read is
//! left out of its list alone; if it is new and its mRID and replyTo can be read, it is
//! answered with 253 "rejected, invalid event" (IEEE 2030.5 Table 27), once, recorded in
//! the scheduler's ledger; if an earlier good copy is known, that copy stays in force.
//!
//! The schedule is evaluated once every program list of every FSA and every resource
//! under its programs has been answered once, so the first controls handed out are not
//! an incomplete picture.

use std::collections::{BTreeMap, BTreeSet};

use crate::schedule::{self, ActiveControls, ResponseDue, ResponseKey, ResponseStatus};
use crate::sep2::{DefaultDerControl, DerControl, DerCurve, DerProgram, SkippedItem};

use super::ConnectionState;
use super::Event;
use super::context::{Answer, Ctx, Paged, PollError, PollPart, next_page, read_opt};
use super::der::DEFAULT_SET_GRAD_W;
use super::discovery::{FsaState, ProgramState, schedule_input};
use super::poller::PollKind;
use super::response::ResponseSet;

/// DER program state and the scheduler's memory.
#[derive(Debug, Clone)]
pub struct DerpSet {
    /// Programs per DERProgramList href (one list per FSA).
    pub programs: BTreeMap<String, Vec<ProgramState>>,
    /// Hrefs answered at least once (lists and the resources under programs).
    answered: BTreeSet<String>,
    /// The DERProgramLists the FSAs link.
    lists: Vec<String>,
    pub schedule_state: schedule::State,
    rng: schedule::Rng,
    last_active: Option<ActiveControls>,
    /// (tree version, server time, next change) of the last evaluation.
    evaluated: Option<(u64, i64, Option<i64>)>,
    /// Whether that evaluation ran opModStorageTargetW (a battery appearing or going
    /// changes what the controls mean).
    evaluated_targets_storage: bool,
    /// Rejections of unreadable DERControls, handed out with the next outcome. At most
    /// one per DERControl the server lists (each is rejected once: its record goes into
    /// the scheduler's state), emptied at the next evaluation.
    rejections: Vec<ResponseDue>,
    /// Set by [`super::Engine::hold_schedule`]: the scheduler's memory is not restored
    /// yet, so nothing is evaluated.
    pub(super) held: bool,
}

impl DerpSet {
    pub fn new(rng_seed: u64) -> DerpSet {
        DerpSet {
            programs: BTreeMap::new(),
            answered: BTreeSet::new(),
            lists: Vec::new(),
            schedule_state: schedule::State::default(),
            held: false,
            rng: schedule::Rng::new(rng_seed),
            last_active: None,
            evaluated: None,
            evaluated_targets_storage: false,
            rejections: Vec::new(),
        }
    }

    /// The FSAs now list the DERProgramLists `lists`.
    pub fn link(&mut self, ctx: &mut Ctx, lists: &[String]) {
        self.lists = lists.to_vec();
        ctx.poller.retain_kind(PollKind::DerProgramList, lists);
        for href in lists {
            ctx.poller
                .track(href, PollKind::DerProgramList, None, ctx.now.mono_ms);
        }
        let before = self.programs.len();
        self.programs.retain(|href, _| lists.contains(href));
        if self.programs.len() != before {
            ctx.tree_version += 1;
        }
        self.retain_children(ctx);
    }

    pub fn request(&self, ctx: &mut Ctx, href: &str, kind: PollKind) {
        let part = match kind {
            PollKind::DerProgramList => PollPart::Programs(Paged::new(href)),
            PollKind::DerControlList => PollPart::Controls(Paged::new(href)),
            PollKind::DerCurveList => PollPart::Curves(Paged::new(href)),
            _ => PollPart::Single,
        };
        ctx.poll(href, kind, part);
    }

    /// The resources under every program, with their kind.
    fn children(&self) -> Vec<(String, PollKind)> {
        program_children(self.programs.values().flatten())
    }

    fn retain_children(&mut self, ctx: &mut Ctx) {
        let children = self.children();
        // Forget what was answered of resources no longer linked (bounded memory).
        let lists = &self.lists;
        self.answered
            .retain(|href| lists.contains(href) || children.iter().any(|(child, _)| child == href));
        for kind in [
            PollKind::DerControlList,
            PollKind::DefaultDerControl,
            PollKind::DerCurveList,
        ] {
            let keep: Vec<String> = children
                .iter()
                .filter(|(_, k)| *k == kind)
                .map(|(h, _)| h.clone())
                .collect();
            ctx.poller.retain_kind(kind, &keep);
        }
    }

    /// A page of a DERProgramList.
    pub fn handle_program_list(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<DerProgram>,
        answer: Answer,
    ) {
        let kind = PollKind::DerProgramList;
        // Answered, well or not: the schedule may run on the rest.
        self.answered.insert(href.to_string());
        let Some(paged) = next_page(ctx, href, kind, paged, answer, PollPart::Programs) else {
            return;
        };
        ctx.poll_ok(href, kind, paged.poll_rate_s);
        let rate = ctx.poller.get(href).map(|e| e.rate_s);
        let old = self.programs.remove(href).unwrap_or_default();
        let mut states = Vec::new();
        for program in paged.items {
            let program_href = program.href.clone().unwrap_or_default();
            // What was read under it before stays until a fresh read replaces it.
            let previous = old
                .iter()
                .find(|s| s.href == program_href && s.program.mrid == program.mrid)
                .or_else(|| old.iter().find(|s| s.program.mrid == program.mrid));
            let mut state = match previous {
                Some(previous) => ProgramState {
                    program: program.clone(),
                    href: program_href.clone(),
                    ..previous.clone()
                },
                None => ProgramState {
                    href: program_href.clone(),
                    program: program.clone(),
                    ..ProgramState::default()
                },
            };
            if program.der_control_list_link.is_none() {
                state.controls.clear();
            }
            if program.default_der_control_link.is_none() {
                state.default_control = None;
            }
            if program.der_curve_list_link.is_none() {
                state.curve_count = 0;
                state.curves.clear();
            }
            states.push(state);
        }
        if old != states {
            ctx.tree_version += 1;
        }
        self.programs.insert(href.to_string(), states);
        self.retain_children(ctx);
        // The resources under the programs are read now, with the list.
        let now_ms = ctx.now.mono_ms;
        for (child, child_kind) in self.children_of(href) {
            ctx.poller.track(&child, child_kind, rate, now_ms);
            ctx.poller.poll_soon(&child, now_ms);
        }
    }

    /// The resources under the programs of the DERProgramList at `list_href`.
    fn children_of(&self, list_href: &str) -> Vec<(String, PollKind)> {
        program_children(self.programs.get(list_href).into_iter().flatten())
    }

    fn programs_linking<'a>(
        &'a mut self,
        href: &'a str,
        kind: PollKind,
    ) -> impl Iterator<Item = &'a mut ProgramState> + 'a {
        self.programs.values_mut().flatten().filter(move |s| {
            let link = match kind {
                PollKind::DerControlList => {
                    s.program.der_control_list_link.as_ref().map(|l| &l.href)
                }
                PollKind::DefaultDerControl => {
                    s.program.default_der_control_link.as_ref().map(|l| &l.href)
                }
                _ => s.program.der_curve_list_link.as_ref().map(|l| &l.href),
            };
            link.is_some_and(|l| l == href)
        })
    }

    /// A page of a program's DERControlList.
    pub fn handle_controls(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<DerControl>,
        answer: Answer,
    ) {
        let kind = PollKind::DerControlList;
        self.answered.insert(href.to_string());
        let Some(paged) = next_page(ctx, href, kind, paged, answer, PollPart::Controls) else {
            return;
        };
        ctx.poll_ok(href, kind, None);
        let skipped = paged.skipped;
        let controls = paged.items;
        let mut program_mrid = String::new();
        let mut changed = false;
        for state in self.programs_linking(href, kind) {
            program_mrid = state.program.mrid.clone();
            let mut fresh = controls.clone();
            // An item that no longer reads but was read before keeps its good copy.
            for bad in &skipped {
                if let Some(good) = bad
                    .mrid
                    .as_ref()
                    .and_then(|m| state.controls.iter().find(|c| &c.mrid == m))
                {
                    fresh.push(good.clone());
                }
            }
            if state.controls != fresh {
                state.controls = fresh;
                changed = true;
            }
        }
        if changed {
            ctx.tree_version += 1;
        }
        for bad in &skipped {
            self.reject(ctx, bad, &program_mrid);
        }
    }

    /// Answers an unreadable DERControl with 253 when it is new and has an mRID and a
    /// replyTo.
    fn reject(&mut self, ctx: &mut Ctx, bad: &SkippedItem, program_mrid: &str) {
        let (Some(mrid), Some(reply_to)) = (&bad.mrid, &bad.reply_to) else {
            return;
        };
        // While held the stored memory is not back, so whether it was answered before is
        // not known: it is rejected at a later read of its list.
        if self.held || mrid.is_empty() || self.schedule_state.events.contains_key(mrid) {
            return;
        }
        let now_s = ctx.server_now_s();
        let status = ResponseStatus::RejectedInvalid;
        log::warn!(
            "csip: DERControl {mrid} rejected ({}): {}",
            status.code(),
            bad.error
        );
        self.schedule_state.events.insert(
            mrid.clone(),
            schedule::EventRecord {
                program_mrid: program_mrid.to_string(),
                reply_to: Some(reply_to.clone()),
                response_required: 0,
                first_seen_s: now_s,
                start_offset_s: 0,
                duration_offset_s: 0,
                stop: None,
                eff_end_s: now_s,
                started_at_s: None,
                ended: Some(schedule::Ending {
                    reason: schedule::EndReason::Rejected(status),
                    at_s: now_s,
                }),
                responses_sent: status.bit(),
            },
        );
        self.rejections.push(ResponseDue {
            key: ResponseKey {
                event_mrid: mrid.clone(),
                status,
            },
            program_mrid: program_mrid.to_string(),
            reply_to: Some(reply_to.clone()),
            at_s: now_s,
        });
        ctx.tree_version += 1;
    }

    /// A program's DefaultDERControl.
    pub fn handle_default(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) {
        let kind = PollKind::DefaultDerControl;
        self.answered.insert(href.to_string());
        let default = match answer {
            Answer::Ok(response) => match read_opt::<DefaultDerControl>(&response) {
                Ok(default) => default,
                Err(err) => {
                    ctx.poll_failed(href, kind, PollError::parse(err));
                    return;
                }
            },
            // A program without a default control is normal.
            Answer::Gone(_) => None,
            other => {
                ctx.poll_failed(href, kind, PollError::of(other));
                return;
            }
        };
        ctx.poll_ok(href, kind, None);
        let mut changed = false;
        for state in self.programs_linking(href, kind) {
            if state.default_control != default {
                state.default_control = default.clone();
                changed = true;
            }
        }
        if changed {
            ctx.tree_version += 1;
        }
    }

    /// A page of a program's DERCurveList: kept whole, for [`curve_for`].
    pub fn handle_curves(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<DerCurve>,
        answer: Answer,
    ) {
        let kind = PollKind::DerCurveList;
        self.answered.insert(href.to_string());
        let curves = match answer {
            Answer::Gone(_) => Vec::new(),
            answer => match next_page(ctx, href, kind, paged, answer, PollPart::Curves) {
                Some(paged) => paged.items,
                None => return,
            },
        };
        ctx.poll_ok(href, kind, None);
        for state in self.programs_linking(href, kind) {
            state.curve_count = curves.len();
            state.curves = curves.clone();
        }
    }

    /// True once every program list of `fsas` and everything under their programs has
    /// been answered at least once.
    fn ready(&self, fsas: &[FsaState]) -> bool {
        let lists: Vec<&String> = fsas
            .iter()
            .filter_map(|f| f.fsa.der_program_list_link.as_ref())
            .map(|l| &l.href)
            .collect();
        let answered = |link: Option<&String>| link.is_none_or(|l| self.answered.contains(l));
        !lists.is_empty()
            && lists.iter().all(|l| self.answered.contains(*l))
            && self.programs.values().flatten().all(|s| {
                let p = &s.program;
                answered(p.der_control_list_link.as_ref().map(|l| &l.href))
                    && answered(p.default_der_control_link.as_ref().map(|l| &l.href))
                    && answered(p.der_curve_list_link.as_ref().map(|l| &l.href))
            })
    }

    /// Runs the scheduler when something changed or its next change came; hands out
    /// [`Event::Controls`] when the active controls changed or responses fell due.
    /// Without a battery csipd commands (`targets_storage` false), opModStorageTargetW
    /// is not a mode this client runs: it is left out of every control, so a control
    /// that sets nothing else is answered 252 (parameter not applicable) and one that
    /// also sets a limit is carried out for the limit alone.
    pub fn evaluate(
        &mut self,
        ctx: &mut Ctx,
        fsas: &[FsaState],
        responses: &mut ResponseSet,
        targets_storage: bool,
    ) {
        if self.held
            || ctx.state == ConnectionState::PinMismatch
            || !ctx.registration_ok
            || !self.ready(fsas)
        {
            return;
        }
        let now_s = ctx.server_now_s();
        if let Some((version, at_s, next_change_s)) = self.evaluated {
            let unchanged = version == ctx.tree_version
                && targets_storage == self.evaluated_targets_storage
                && now_s >= at_s
                && next_change_s.is_none_or(|next| now_s < next);
            if unchanged {
                return;
            }
        }
        let (mut programs, mut events) = schedule_input(fsas, &self.programs);
        if !targets_storage {
            for event in &mut events {
                event.controls.storage_target_w = None;
            }
            for program in &mut programs {
                if let Some(default) = &mut program.default_control {
                    default.controls.storage_target_w = None;
                }
            }
        }
        let input = schedule::Input {
            programs: &programs,
            events: &events,
            now_s,
        };
        // The state moves in and back out: no copy of every record per evaluation.
        let previous = std::mem::take(&mut self.schedule_state);
        let mut outcome = schedule::evaluate_owned(&input, &mut self.rng, previous);
        for note in &outcome.notes {
            log::info!("csip: schedule: {note}");
        }
        outcome.responses.append(&mut self.rejections);
        for due in &outcome.responses {
            responses.push(due.clone());
        }
        if self.last_active.as_ref() != Some(&outcome.active) || !outcome.responses.is_empty() {
            self.last_active = Some(outcome.active.clone());
            ctx.events
                .push_back(Event::Controls(Box::new(outcome.clone())));
        }
        self.evaluated = Some((ctx.tree_version, now_s, outcome.next_change_s));
        self.evaluated_targets_storage = targets_storage;
        self.schedule_state = outcome.state;
    }

    /// When the schedule changes next, in the monotonic clock.
    pub fn next_change_ms(&self, ctx: &Ctx) -> Option<u64> {
        let (_, _, next_s) = self.evaluated?;
        let next_s = next_s?;
        let server_now_ms = ctx.now.utc_ms + ctx.clock.offset_s() * 1000;
        let wait_ms = (next_s * 1000 - server_now_ms).max(0) as u64;
        Some(ctx.now.mono_ms + wait_ms)
    }

    /// What csipd's controls do to the DER (disconnect, de-energise), for DERStatus.
    pub fn own_actions(&self) -> super::der::OwnActions {
        self.last_active
            .as_ref()
            .map(super::der::OwnActions::of)
            .unwrap_or_default()
    }

    /// setGradW in force: that of the highest-priority program's default control.
    pub fn set_grad_w(&self) -> u16 {
        let mut best: Option<(u8, u16)> = None;
        for state in self.programs.values().flatten() {
            let grad = state.default_control.as_ref().and_then(|d| d.set_grad_w);
            if let Some(grad) = grad {
                if best.is_none_or(|(primacy, _)| state.program.primacy < primacy) {
                    best = Some((state.program.primacy, grad));
                }
            }
        }
        best.map(|(_, grad)| grad).unwrap_or(DEFAULT_SET_GRAD_W)
    }
}

/// The resources `states`' programs link that follow their program (read with its
/// list, each failing alone): DERControlList, DefaultDERControl, DERCurveList.
fn program_children<'a>(states: impl Iterator<Item = &'a ProgramState>) -> Vec<(String, PollKind)> {
    let mut out = Vec::new();
    for state in states {
        let p = &state.program;
        let links = [
            (
                p.der_control_list_link.as_ref().map(|l| &l.href),
                PollKind::DerControlList,
            ),
            (
                p.default_der_control_link.as_ref().map(|l| &l.href),
                PollKind::DefaultDerControl,
            ),
            (
                p.der_curve_list_link.as_ref().map(|l| &l.href),
                PollKind::DerCurveList,
            ),
        ];
        for (href, kind) in links {
            if let Some(href) = href {
                out.push((href.clone(), kind));
            }
        }
    }
    out
}

/// A DERCurveLink that does not lead to a curve csipd can put on an inverter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveError {
    /// The DERCurveLink's href.
    pub href: String,
    pub problem: String,
}

impl std::fmt::Display for CurveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DERCurve {}: {}", self.href, self.problem)
    }
}

impl std::error::Error for CurveError {}

/// Resolves a control's `opModVoltVar` / `opModVoltWatt` DERCurveLink (`href`) in the
/// program's DERCurveList (`curves`, matched by the curve's href, as the server links
/// it) into the curve to put on the inverters (IEEE 2030.5 DERControlBase: x is an
/// effective percent voltage, times vRef / 10000 when the curve has a vRef; y a
/// percentage of the `yRefType` quantity). Errors name the curve and why: not in the
/// list, the wrong curveType (11 volt-var, 12 volt-watt), a yRefType the mode does not
/// allow (volt-var: %setMaxW, %setMaxVar, %statVarAvail; volt-watt: %setMaxW,
/// %statWAvail), no points.
pub fn curve_for(
    mode: crate::schedule::ControlMode,
    href: &str,
    curves: &[DerCurve],
) -> Result<crate::devices::curves::Curve, CurveError> {
    use crate::devices::curves::{Curve, CurvePoint};
    use crate::schedule::ControlMode;
    let err = |problem: String| CurveError {
        href: href.to_string(),
        problem,
    };
    let path = super::context::href_path(href);
    let curve = curves
        .iter()
        .find(|c| {
            c.href
                .as_deref()
                .is_some_and(|h| super::context::href_path(h) == path)
        })
        .ok_or_else(|| err("not in the program's DERCurveList".into()))?;
    let (curve_type, dept_ref) = match mode {
        ControlMode::VoltVar => (
            11,
            match curve.y_ref_type {
                1 => Some(1), // %setMaxW → SunSpec %WMax
                2 => Some(2), // %setMaxVar → %VArMax
                3 => Some(3), // %statVarAvail → %VArAval
                _ => None,
            },
        ),
        ControlMode::VoltWatt => (
            12,
            match curve.y_ref_type {
                1 => Some(1), // %setMaxW → %WMax
                7 => Some(2), // %statWAvail → %WAval
                _ => None,
            },
        ),
        other => return Err(err(format!("{} is not a curve mode", other.name()))),
    };
    if curve.curve_type != curve_type {
        return Err(err(format!(
            "curveType {} where {curve_type} was linked",
            curve.curve_type
        )));
    }
    let dept_ref = dept_ref.ok_or_else(|| {
        err(format!(
            "yRefType {} is not allowed for this mode",
            curve.y_ref_type
        ))
    })?;
    if curve.curve_data.is_empty() {
        return Err(err("no CurveData".into()));
    }
    let x_scale = 10f64.powi(i32::from(curve.x_multiplier))
        * curve.v_ref.map_or(1.0, |v| f64::from(v) / 10_000.0);
    let y_scale = 10f64.powi(i32::from(curve.y_multiplier));
    Ok(Curve {
        mode,
        points: curve
            .curve_data
            .iter()
            .map(|d| CurvePoint {
                v_pct: f64::from(d.xvalue) * x_scale,
                y_pct: f64::from(d.yvalue) * y_scale,
            })
            .collect(),
        dept_ref,
    })
}

#[cfg(test)]
mod curve_tests {
    use super::*;
    use crate::schedule::ControlMode;
    use crate::sep2::CurveData;

    fn volt_var() -> DerCurve {
        // A 4-point volt-var curve in the standard's terms: x in % of VRef with
        // xMultiplier -1 (tenths), y in % of setMaxVar.
        DerCurve {
            href: Some("https://server/derp/1/dc/1".into()),
            mrid: "C1".into(),
            creation_time: 1,
            curve_type: 11,
            x_multiplier: -1,
            y_multiplier: 0,
            y_ref_type: 2,
            curve_data: [(904, 44), (956, 0), (1043, 0), (1100, -60)]
                .into_iter()
                .map(|(x, y)| CurveData {
                    excitation: None,
                    xvalue: x,
                    yvalue: y,
                })
                .collect(),
            ..DerCurve::default()
        }
    }

    #[test]
    fn a_volt_var_curve_is_found_by_its_href_and_scaled() {
        let curve = curve_for(ControlMode::VoltVar, "/derp/1/dc/1", &[volt_var()]).unwrap();
        assert_eq!(curve.dept_ref, 2);
        let v: Vec<f64> = curve.points.iter().map(|p| p.v_pct).collect();
        assert!(
            v.iter()
                .zip([90.4, 95.6, 104.3, 110.0])
                .all(|(a, b)| (a - b).abs() < 1e-9),
            "{v:?}"
        );
        assert_eq!(curve.points[3].y_pct, -60.0);
        // vRef scales x: 9900 = 99 %.
        let mut with_ref = volt_var();
        with_ref.v_ref = Some(9900);
        let curve = curve_for(ControlMode::VoltVar, "/derp/1/dc/1", &[with_ref]).unwrap();
        assert!((curve.points[3].v_pct - 108.9).abs() < 1e-9);
    }

    #[test]
    fn a_link_that_leads_nowhere_useful_says_why() {
        let e = curve_for(ControlMode::VoltVar, "/derp/1/dc/9", &[volt_var()]).unwrap_err();
        assert!(e.to_string().contains("/derp/1/dc/9: not in"), "{e}");
        let e = curve_for(ControlMode::VoltWatt, "/derp/1/dc/1", &[volt_var()]).unwrap_err();
        assert!(e.to_string().contains("curveType 11 where 12"), "{e}");
        let mut bad_ref = volt_var();
        bad_ref.y_ref_type = 7;
        let e = curve_for(ControlMode::VoltVar, "/derp/1/dc/1", &[bad_ref]).unwrap_err();
        assert!(e.to_string().contains("yRefType 7"), "{e}");
    }
}
