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
    /// The modes that evaluation let through ([`super::Nameplate::carried_modes`]): a
    /// battery or inverter model appearing or going changes what the controls mean.
    evaluated_modes: u32,
    /// Curve links that did not resolve, as last logged: each is said once while it
    /// lasts (bounded by the links the server lists now).
    curve_problems: BTreeSet<String>,
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
            evaluated_modes: 0,
            curve_problems: BTreeSet::new(),
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
    /// The modes this site cannot carry out (`nameplate`, [`super::Nameplate::carries`]:
    /// opModStorageTargetW without a battery csipd commands, a curve no inverter has the
    /// SunSpec model for, any mode on a site with no DER) are left out of every control
    /// before scheduling, so a control that sets nothing else is answered 252 (cannot be
    /// applied) and one that also sets a mode the site runs is carried out for that
    /// mode alone. A curve link that does not resolve in its program's DERCurveList
    /// leaves its mode out the same way, and is logged once with the reason.
    pub fn evaluate(
        &mut self,
        ctx: &mut Ctx,
        fsas: &[FsaState],
        responses: &mut ResponseSet,
        nameplate: &super::Nameplate,
    ) {
        if self.held
            || ctx.state == ConnectionState::PinMismatch
            || !ctx.registration_ok
            || !self.ready(fsas)
        {
            return;
        }
        let now_s = ctx.server_now_s();
        let carried = nameplate.carried_modes();
        if let Some((version, at_s, next_change_s)) = self.evaluated {
            let unchanged = version == ctx.tree_version
                && carried == self.evaluated_modes
                && now_s >= at_s
                && next_change_s.is_none_or(|next| now_s < next);
            if unchanged {
                return;
            }
        }
        let (mut programs, mut events, problems) = schedule_input(fsas, &self.programs);
        self.log_curve_problems(problems);
        let not_carried: Vec<schedule::ControlMode> = schedule::ControlMode::ALL
            .into_iter()
            .filter(|m| carried & m.bit() == 0)
            .collect();
        let sets = events.iter_mut().map(|e| &mut e.controls).chain(
            programs
                .iter_mut()
                .filter_map(|p| p.default_control.as_mut().map(|d| &mut d.controls)),
        );
        for set in sets {
            for mode in &not_carried {
                set.clear(*mode);
            }
            // A var level in % of statVarAvail: no SunSpec model takes one (123 VArPct
            // and 704 VarSetPct are in % of VArMax), so it cannot be applied.
            if set.fixed_var.is_some_and(|v| v.ref_type != 2) {
                set.fixed_var = None;
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
        self.evaluated_modes = carried;
        self.schedule_state = outcome.state;
    }

    /// Logs each curve link that does not resolve once while it lasts.
    fn log_curve_problems(&mut self, problems: Vec<CurveError>) {
        let now: BTreeSet<String> = problems.iter().map(|p| p.to_string()).collect();
        for problem in now.difference(&self.curve_problems) {
            log::warn!("csip: {problem}: the control's curve mode is not applied");
        }
        self.curve_problems = now;
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

    /// The enter-service settings in force (the scheduler's choice among the
    /// defaults, [`crate::schedule::ActiveControls::enter_service`]); none given when no
    /// default sets any.
    pub fn enter_service(&self) -> crate::sep2::EnterService {
        self.last_active
            .as_ref()
            .and_then(|a| a.enter_service())
            .map(|es| es.value)
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
/// list, the wrong curveType (11 volt-var, 12 volt-watt, 14 watt-var), a yRefType the
/// mode does not allow (volt-var: %setMaxW, %setMaxVar, %statVarAvail; volt-watt:
/// %setMaxW, %statWAvail; watt-var: %setMaxVar, %statVarAvail; its x is % of setMaxW),
/// no points. A watt-PF curve (13) has x in % of setMaxW and y a power factor
/// (yvalue × 10^yMultiplier with each point's excitation), resolved into y_pct as cos φ
/// in percent, negative when absorbing vars, and DeptRef 0 (none).
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
        ControlMode::WattVar => (
            14,
            match curve.y_ref_type {
                2 => Some(2), // %setMaxVar → %VArMax (712 VAR_MAX_PCT)
                3 => Some(3), // %statVarAvail → %VArAval
                _ => None,
            },
        ),
        // y is a power factor (displacement, its excitation per point): no yRefType
        // applies, and SunSpec 131 has no DeptRef.
        ControlMode::WattPF => (13, Some(0)),
        // x: Hz; y: %setMaxW, which SunSpec 134's % of WRef (WMax by default) is.
        ControlMode::FreqWatt => (
            0,
            match curve.y_ref_type {
                1 => Some(1),
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
    // vRef scales a voltage axis only; a watt-var x is % of setMaxW.
    let v_ref = match mode {
        ControlMode::WattVar | ControlMode::WattPF | ControlMode::FreqWatt => 1.0,
        _ => curve.v_ref.map_or(1.0, |v| f64::from(v) / 10_000.0),
    };
    let x_scale = 10f64.powi(i32::from(curve.x_multiplier)) * v_ref;
    let y_scale = 10f64.powi(i32::from(curve.y_multiplier));
    Ok(Curve {
        mode,
        points: curve
            .curve_data
            .iter()
            .map(|d| CurvePoint {
                v_pct: f64::from(d.xvalue) * x_scale,
                y_pct: match mode {
                    // cos φ in percent, negative when absorbing vars (under-excited:
                    // CurveData excitation true), as SunSpec 131's signed PF.
                    ControlMode::WattPF => {
                        let pf = f64::from(d.yvalue) * y_scale * 100.0;
                        if d.excitation == Some(true) { -pf } else { pf }
                    }
                    _ => f64::from(d.yvalue) * y_scale,
                },
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

    /// A watt-var curve (curveType 14): x in % of setMaxW (signed: negative absorbs
    /// active power), y in % of setMaxVar; a vRef does not scale it.
    #[test]
    fn a_watt_var_curve_is_scaled_without_vref() {
        let mut wv = volt_var();
        wv.curve_type = 14;
        wv.x_multiplier = 0;
        wv.v_ref = Some(9900);
        wv.curve_data = [(-100, 30), (0, 0), (50, 0), (100, -44)]
            .into_iter()
            .map(|(x, y)| CurveData {
                excitation: None,
                xvalue: x,
                yvalue: y,
            })
            .collect();
        let curve = curve_for(ControlMode::WattVar, "/derp/1/dc/1", &[wv.clone()]).unwrap();
        assert_eq!(curve.mode, ControlMode::WattVar);
        assert_eq!(curve.dept_ref, 2);
        let pts: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.v_pct, p.y_pct)).collect();
        assert_eq!(
            pts,
            vec![(-100.0, 30.0), (0.0, 0.0), (50.0, 0.0), (100.0, -44.0)]
        );
        // A volt-var curve linked as watt-var, a watt-var y in % of setMaxW: refused.
        let e = curve_for(ControlMode::WattVar, "/derp/1/dc/1", &[volt_var()]).unwrap_err();
        assert!(e.to_string().contains("curveType 11 where 14"), "{e}");
        wv.y_ref_type = 1;
        let e = curve_for(ControlMode::WattVar, "/derp/1/dc/1", &[wv]).unwrap_err();
        assert!(e.to_string().contains("yRefType 1"), "{e}");
    }

    /// A watt-PF curve (curveType 13): y a power factor, negative where the point's
    /// excitation is true (absorbing vars).
    #[test]
    fn a_watt_pf_curve_carries_its_excitation_as_the_sign() {
        let mut wpf = volt_var();
        wpf.curve_type = 13;
        wpf.x_multiplier = 0;
        wpf.y_multiplier = -2;
        wpf.curve_data = [
            (0, 100, None),
            (50, 100, Some(false)),
            (100, 90, Some(true)),
        ]
        .into_iter()
        .map(|(x, y, excitation)| CurveData {
            excitation,
            xvalue: x,
            yvalue: y,
        })
        .collect();
        let curve = curve_for(ControlMode::WattPF, "/derp/1/dc/1", &[wpf]).unwrap();
        assert_eq!(curve.dept_ref, 0);
        let pts: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.v_pct, p.y_pct)).collect();
        assert_eq!(pts, vec![(0.0, 100.0), (50.0, 100.0), (100.0, -90.0)]);
        let e = curve_for(ControlMode::WattPF, "/derp/1/dc/1", &[volt_var()]).unwrap_err();
        assert!(e.to_string().contains("curveType 11 where 13"), "{e}");
    }

    /// A freq-watt curve (curveType 0): x in Hz with its multiplier (vRef does not
    /// apply), y in % of setMaxW; another yRefType, or a volt-var curve, is refused.
    #[test]
    fn a_freq_watt_curve_is_in_hz_and_percent_of_set_max_w() {
        let mut fw = volt_var();
        fw.curve_type = 0;
        fw.x_multiplier = -2;
        fw.y_multiplier = 0;
        fw.y_ref_type = 1;
        fw.v_ref = Some(9900);
        fw.curve_data = [(5025, 100), (5200, 0)]
            .into_iter()
            .map(|(x, y)| CurveData {
                excitation: None,
                xvalue: x,
                yvalue: y,
            })
            .collect();
        let curve = curve_for(ControlMode::FreqWatt, "/derp/1/dc/1", &[fw.clone()]).unwrap();
        assert_eq!((curve.mode, curve.dept_ref), (ControlMode::FreqWatt, 1));
        let pts: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.v_pct, p.y_pct)).collect();
        assert!(
            (pts[0].0 - 50.25).abs() < 1e-9 && (pts[1].0 - 52.0).abs() < 1e-9,
            "{pts:?}"
        );
        assert_eq!((pts[0].1, pts[1].1), (100.0, 0.0));
        let e = curve_for(ControlMode::FreqWatt, "/derp/1/dc/1", &[volt_var()]).unwrap_err();
        assert!(e.to_string().contains("curveType 11 where 0"), "{e}");
        fw.y_ref_type = 7;
        let e = curve_for(ControlMode::FreqWatt, "/derp/1/dc/1", &[fw]).unwrap_err();
        assert!(e.to_string().contains("yRefType 7"), "{e}");
    }
}
