//! What the engine knows of the server's resource tree, and how it maps into the
//! scheduler's input. Each function set owns its part; [`Tree`] is the read-only view
//! the engine assembles for `csipd discover` and the status page
//! ([`super::Engine::tree`]). Pure. Hrefs are only ever taken from links the server sent.

use std::collections::BTreeMap;

use super::derp::{CurveError, curve_for};
use crate::schedule::{self, ControlMode};
use crate::sep2::{
    DefaultDerControl, Der, DerControl, DerControlBase, DerCurve, DerProgram, DeviceCapability,
    EndDevice, FunctionSetAssignments, MirrorUsagePoint, Registration,
};

/// One DER program with what hangs under it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProgramState {
    pub href: String,
    pub program: DerProgram,
    pub controls: Vec<DerControl>,
    pub default_control: Option<DefaultDerControl>,
    pub curve_count: usize,
    /// The program's DERCurveList as last read (what `opModVoltVar` and the other
    /// DERCurveLinks point into; see [`super::derp::curve_for`]).
    pub curves: Vec<crate::sep2::DerCurve>,
}

/// One FunctionSetAssignments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FsaState {
    pub href: String,
    pub fsa: FunctionSetAssignments,
}

/// The discovered tree.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tree {
    pub dcap_href: String,
    pub dcap: Option<DeviceCapability>,
    pub time_href: Option<String>,
    pub edev_list_href: Option<String>,
    /// Our own EndDevice and its href.
    pub edev: Option<EndDevice>,
    pub edev_href: Option<String>,
    pub registration: Option<Registration>,
    pub fsa_list_href: Option<String>,
    pub fsas: Vec<FsaState>,
    /// Programs per DERProgramList href (one list per FSA).
    pub programs: BTreeMap<String, Vec<ProgramState>>,
    pub der_list_href: Option<String>,
    pub ders: Vec<Der>,
    pub mup_list_href: Option<String>,
    pub mups: Vec<MirrorUsagePoint>,
    pub log_event_list_href: Option<String>,
    pub log_event_count: Option<u32>,
}

impl Tree {
    pub fn new(dcap_href: &str) -> Tree {
        Tree {
            dcap_href: dcap_href.to_string(),
            ..Tree::default()
        }
    }

    /// The scheduler's input: every program (with its default) and every event, across
    /// all FSAs. A program listed in two FSAs (same mRID) is taken once.
    pub fn schedule_input(&self) -> (Vec<schedule::Program>, Vec<schedule::Event>) {
        let (programs, events, _) = schedule_input(&self.fsas, &self.programs);
        (programs, events)
    }
}

/// The scheduler's input from the FSAs and the programs of each DERProgramList: every
/// program (with its default) and every event, with their DERCurveLinks resolved in
/// the program's DERCurveList; the links that did not resolve (their mode left out of
/// the control) come third. A program listed in two FSAs (same mRID) is taken once.
pub fn schedule_input(
    fsas: &[FsaState],
    programs_by_list: &BTreeMap<String, Vec<ProgramState>>,
) -> (
    Vec<schedule::Program>,
    Vec<schedule::Event>,
    Vec<CurveError>,
) {
    {
        let mut programs: Vec<schedule::Program> = Vec::new();
        let mut events: Vec<schedule::Event> = Vec::new();
        let mut problems: Vec<CurveError> = Vec::new();
        for (list_href, states) in programs_by_list {
            let fsa = fsas
                .iter()
                .find(|fsa| {
                    fsa.fsa
                        .der_program_list_link
                        .as_ref()
                        .is_some_and(|link| &link.href == list_href)
                })
                .map(|fsa| fsa.href.clone())
                .unwrap_or_else(|| list_href.clone());
            for state in states {
                if programs.iter().any(|p| p.mrid == state.program.mrid) {
                    continue;
                }
                programs.push(program_input(state, &fsa, &mut problems));
                for control in &state.controls {
                    if events.iter().any(|e| e.mrid == control.mrid) {
                        continue;
                    }
                    events.push(event_input(
                        control,
                        &state.program.mrid,
                        &state.curves,
                        &mut problems,
                    ));
                }
            }
        }
        (programs, events, problems)
    }
}

fn power(p: Option<crate::sep2::ActivePower>) -> Option<schedule::ActivePower> {
    p.map(|p| schedule::ActivePower {
        value: i32::from(p.value),
        multiplier: p.multiplier,
    })
}

/// The modes of a DERControlBase the scheduler handles. opModVoltVar / opModVoltWatt /
/// opModWattVar / opModWattPF are resolved in `curves` (the program's DERCurveList, [`curve_for`]); a link that
/// does not resolve (the list not read yet, the curve missing or unusable) leaves its
/// mode out, and the reason is pushed to `problems`.
pub fn control_set(
    base: &DerControlBase,
    curves: &[DerCurve],
    problems: &mut Vec<CurveError>,
) -> schedule::ControlSet {
    let mut curve = |mode: ControlMode, link: &Option<crate::sep2::Link>| {
        let link = link.as_ref()?;
        curve_for(mode, &link.href, curves)
            .map_err(|e| problems.push(e))
            .ok()
    };
    schedule::ControlSet {
        volt_var: curve(ControlMode::VoltVar, &base.op_mod_volt_var),
        volt_watt: curve(ControlMode::VoltWatt, &base.op_mod_volt_watt),
        watt_var: curve(ControlMode::WattVar, &base.op_mod_watt_var),
        watt_pf: curve(ControlMode::WattPF, &base.op_mod_watt_pf),
        freq_watt: curve(ControlMode::FreqWatt, &base.op_mod_freq_watt),
        fixed_pf_inject_w: base.op_mod_fixed_pf_inject_w,
        fixed_pf_absorb_w: base.op_mod_fixed_pf_absorb_w,
        fixed_var: base.op_mod_fixed_var,
        target_var: base.op_mod_target_var,
        freq_droop: base.op_mod_freq_droop,
        exp_lim_w: power(base.op_mod_exp_lim_w),
        imp_lim_w: power(base.op_mod_imp_lim_w),
        gen_lim_w: power(base.op_mod_gen_lim_w),
        load_lim_w: power(base.op_mod_load_lim_w),
        connect: base.op_mod_connect,
        energize: base.op_mod_energize,
        max_lim_hundredths_pct: base.op_mod_max_lim_w,
        storage_target_w: power(base.op_mod_storage_target_w),
        fixed_w_hundredths_pct: base.op_mod_fixed_w,
    }
}

/// A program (with its DefaultDERControl) as the scheduler takes it; curve links that
/// do not resolve go to `problems` (see [`control_set`]).
pub fn program_input(
    state: &ProgramState,
    fsa: &str,
    problems: &mut Vec<CurveError>,
) -> schedule::Program {
    schedule::Program {
        mrid: state.program.mrid.clone(),
        fsa: fsa.to_string(),
        primacy: state.program.primacy,
        default_control: state
            .default_control
            .as_ref()
            .map(|dderc| schedule::DefaultControl {
                mrid: dderc
                    .mrid
                    .clone()
                    .unwrap_or_else(|| format!("{}-default", state.program.mrid)),
                controls: control_set(&dderc.base, &state.curves, problems),
                set_grad_w: dderc.set_grad_w,
                enter_service: dderc.enter_service,
            }),
    }
}

/// A DERControl as the scheduler takes it, its curve links resolved in `curves` (its
/// program's DERCurveList; see [`control_set`]).
pub fn event_input(
    control: &DerControl,
    program_mrid: &str,
    curves: &[DerCurve],
    problems: &mut Vec<CurveError>,
) -> schedule::Event {
    let mut event = schedule::Event::new(
        &control.mrid,
        program_mrid,
        control.creation_time,
        control.interval.start,
        control.interval.duration_s,
        control_set(&control.base, curves, problems),
    );
    event.randomize_start_s = i32::from(control.randomize_start_s.unwrap_or(0));
    event.randomize_duration_s = i32::from(control.randomize_duration_s.unwrap_or(0));
    event.status = schedule::EventStatus {
        current: schedule::StatusCode::from_u8(control.event_status.current_status.code()),
        date_time_s: control.event_status.date_time,
        potentially_superseded: control.event_status.potentially_superseded,
    };
    event.response_required = control.response_required.unwrap_or(0);
    event.reply_to = control.reply_to.clone();
    event.ramp_tms = control.base.ramp_tms;
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sep2::{ActivePower, DateTimeInterval, ListLink};

    fn control(mrid: &str, exp_w: i16) -> DerControl {
        DerControl {
            mrid: mrid.into(),
            creation_time: 10,
            interval: DateTimeInterval {
                duration_s: 300,
                start: 100,
            },
            response_required: Some(3),
            reply_to: Some("/rsp".into()),
            base: DerControlBase {
                op_mod_exp_lim_w: Some(ActivePower {
                    multiplier: 1,
                    value: exp_w,
                }),
                ..DerControlBase::default()
            },
            ..DerControl::default()
        }
    }

    #[test]
    fn tree_maps_into_schedule_input() {
        let mut tree = Tree::new("/dcap");
        tree.fsas.push(FsaState {
            href: "/edev/1/fsa/1".into(),
            fsa: FunctionSetAssignments {
                der_program_list_link: Some(ListLink {
                    href: "/edev/1/fsa/1/derp".into(),
                    all: Some(1),
                }),
                ..FunctionSetAssignments::default()
            },
        });
        tree.programs.insert(
            "/edev/1/fsa/1/derp".into(),
            vec![ProgramState {
                href: "/edev/1/derp/1".into(),
                program: DerProgram {
                    mrid: "P1".into(),
                    primacy: 2,
                    ..DerProgram::default()
                },
                controls: vec![control("C1", 500), control("C1", 500), control("C2", 100)],
                default_control: Some(DefaultDerControl {
                    set_grad_w: Some(27),
                    ..DefaultDerControl::default()
                }),
                curve_count: 0,
                curves: Vec::new(),
            }],
        );
        let (programs, events) = tree.schedule_input();
        assert_eq!(programs.len(), 1);
        assert_eq!(programs[0].fsa, "/edev/1/fsa/1");
        assert_eq!(programs[0].primacy, 2);
        let default = programs[0].default_control.as_ref().expect("default");
        assert_eq!(default.set_grad_w, Some(27));
        assert_eq!(default.mrid, "P1-default");
        // duplicate mRIDs collapse
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].controls.exp_lim_w.map(|p| p.watts()),
            Some(5000.0)
        );
        assert_eq!(events[0].response_required, 3);
        assert_eq!(events[0].reply_to.as_deref(), Some("/rsp"));
        assert_eq!(events[0].program_mrid, "P1");
    }
}
