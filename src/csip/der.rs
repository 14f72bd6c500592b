//! DER function set, client side: the DERList, and DERCapability, DERSettings,
//! DERStatus and DERAvailability built from the nameplate and the measured state, with
//! the decision when to PUT each (at start, on change, and on a periodic backstop).
//! Each report is sent and retried on its own: a refused DERStatus does not hold back
//! DERSettings. DERCapability and DERSettings wait until the nameplate is known (the
//! inverters' ratings); DERStatus, DERAvailability and everything else do not.

use crate::http::Method;
use crate::sep2::{
    ActivePower, Der, DerAvailability, DerCapability, DerSettings, DerStatus, EnterService,
    PowerFactor, ReactivePower, StatusValue, UnsignedScaled,
};

use super::context::{Answer, Ctx, Paged, PollError, PollPart, Purpose, next_page};
use super::poller::PollKind;
use super::{InverterState, Nameplate, StorageMeasurement};
use crate::sep2::{CsipausNs, WriteProfile};

/// Delay before a failed report PUT is tried again (doubling, capped at a minute).
const SEND_RETRY_MS: u64 = 5_000;
const SEND_RETRY_MAX_MS: u64 = 60_000;

/// Requests of this function set other than polls.
#[derive(Debug)]
pub enum Req {
    /// PUT of a report with content `key`.
    Report { kind: ReportKind, key: String },
}

/// One report's document.
enum Report {
    Capability(DerCapability),
    Settings(DerSettings),
    Status(DerStatus),
    Availability(DerAvailability),
}

/// Per report: what is in flight and when to try again.
#[derive(Debug, Clone, Copy, Default)]
struct Sending {
    in_flight: bool,
    retry_at_ms: u64,
    failures: u32,
}

/// DER state: the DERList and the reports.
#[derive(Debug, Clone)]
pub struct DerSet {
    pub list_href: Option<String>,
    pub ders: Vec<Der>,
    pub nameplate: Nameplate,
    /// The nameplate is known (configured ratings, or the inverters said).
    pub nameplate_known: bool,
    pub inverters: Option<Vec<InverterState>>,
    /// The battery as last measured (CSIP-AUS v1.3 storage); `None` without one.
    pub storage: Option<StorageMeasurement>,
    reports: ReportTracker,
    sending: [Sending; 4],
    /// What the last full check saw, and when to check again regardless (the backstop):
    /// building four documents every second for nothing is most of an idle engine's CPU.
    checked: Option<(CheckInputs, i64)>,
    ders_version: u64,
}

/// What the reports are built from.
#[derive(Debug, Clone, PartialEq)]
struct CheckInputs {
    inverters: Option<Vec<InverterState>>,
    /// The battery's status as DERStatus shows it (not its every watt).
    storage: Option<String>,
    own: OwnActions,
    set_grad_w: u16,
    enter_service: EnterService,
    nameplate: Nameplate,
    nameplate_known: bool,
    /// Bumped when the DERList changes.
    ders_version: u64,
}

impl DerSet {
    pub fn new(nameplate: Nameplate) -> DerSet {
        DerSet {
            list_href: None,
            nameplate_known: nameplate.rtg_max_w > 0.0,
            nameplate,
            ders: Vec::new(),
            inverters: None,
            storage: None,
            reports: ReportTracker::default(),
            sending: [Sending::default(); 4],
            checked: None,
            ders_version: 0,
        }
    }

    /// Our EndDevice links the DERList at `href` (or no longer does).
    pub fn link(&mut self, ctx: &mut Ctx, href: Option<String>) {
        let keep: Vec<String> = href.iter().cloned().collect();
        ctx.poller.retain_kind(PollKind::DerList, &keep);
        if let Some(href) = &href {
            ctx.poller
                .track(href, PollKind::DerList, None, ctx.now.mono_ms);
        }
        self.list_href = href;
    }

    pub fn request(&self, ctx: &mut Ctx, href: &str) {
        ctx.poll(href, PollKind::DerList, PollPart::Ders(Paged::new(href)));
    }

    /// A page of the DERList.
    pub fn handle_list(&mut self, ctx: &mut Ctx, href: &str, paged: Paged<Der>, answer: Answer) {
        let kind = PollKind::DerList;
        let Some(paged) = next_page(ctx, href, kind, paged, answer, PollPart::Ders) else {
            return;
        };
        ctx.poll_ok(href, kind, paged.poll_rate_s);
        if paged.items.first() != self.ders.first() {
            self.reports.reset();
            self.checked = None;
            self.ders_version += 1;
        }
        self.ders = paged.items;
    }

    /// A battery csipd commands is behind the gateway: `opModStorageTargetW` is a mode
    /// this client runs (from the configuration at start, the devices later).
    pub fn can_target_storage(&self) -> bool {
        self.nameplate
            .storage
            .as_ref()
            .is_some_and(|s| s.can_target)
    }

    /// The nameplate became known (or changed).
    pub fn set_nameplate(&mut self, nameplate: Nameplate) {
        self.nameplate_known = nameplate.rtg_max_w > 0.0;
        self.nameplate = nameplate;
    }

    /// PUTs the reports that are due (writes allowed, not in flight, not backing off).
    /// `set_grad_w` and `enter_service` are the utility's default settings in force
    /// ([`super::derp::DerpSet::set_grad_w`], [`super::derp::DerpSet::enter_service`]),
    /// which DERSettings reports.
    pub fn flush(
        &mut self,
        ctx: &mut Ctx,
        set_grad_w: u16,
        enter_service: EnterService,
        own: OwnActions,
    ) {
        if !ctx.writable() {
            return;
        }
        if self.ders.is_empty() {
            return;
        }
        let now_s = ctx.server_now_s();
        let charge_rate_w = self
            .nameplate
            .storage
            .as_ref()
            .map_or(0.0, |s| s.max_charge_rate_w);
        let storage_now = self.storage.map(|s| storage_status_key(&s, charge_rate_w));
        let busy = self
            .sending
            .iter()
            .any(|s| s.in_flight || s.retry_at_ms != 0);
        if let Some((last, until_s)) = &self.checked {
            let same = last.inverters == self.inverters
                && last.storage == storage_now
                && last.own == own
                && last.set_grad_w == set_grad_w
                && last.enter_service == enter_service
                && last.nameplate == self.nameplate
                && last.nameplate_known == self.nameplate_known
                && last.ders_version == self.ders_version;
            if !busy && same && now_s < *until_s && now_s >= until_s - 60 {
                return;
            }
        }
        let inputs = CheckInputs {
            inverters: self.inverters.clone(),
            storage: storage_now,
            own,
            set_grad_w,
            enter_service,
            nameplate: self.nameplate.clone(),
            nameplate_known: self.nameplate_known,
            ders_version: self.ders_version,
        };
        self.checked = Some((inputs, now_s + 60));
        let Some(der) = self.ders.first().cloned() else {
            return;
        };
        let backstop = ctx.config.report_backstop_s.max(60);
        let dr = modes_supported(&self.nameplate) & MODE_FIXED_W != 0;
        for kind in ReportKind::ALL {
            let sending = self.sending[kind as usize];
            if sending.in_flight || ctx.now.mono_ms < sending.retry_at_ms {
                continue;
            }
            let link = match kind {
                ReportKind::Capability => &der.der_capability_link,
                ReportKind::Settings => &der.der_settings_link,
                ReportKind::Status => &der.der_status_link,
                ReportKind::Availability => &der.der_availability_link,
            };
            let Some(link) = link else { continue };
            let csipaus = Csipaus::of(ctx.profile);
            // The content key first: the XML is written only for a report that is due.
            let doc = match kind {
                ReportKind::Capability if self.nameplate_known => {
                    Report::Capability(capability(&self.nameplate, csipaus))
                }
                ReportKind::Capability => continue,
                // setMaxW is the nameplate's: not sent as 0 before the ratings are known.
                ReportKind::Settings if self.nameplate_known => {
                    // The setES* values in force: those the utility's default sets
                    // and csipd puts on the inverters' model 703.
                    Report::Settings(DerSettings {
                        enter_service,
                        ..settings(&self.nameplate, set_grad_w, csipaus, now_s)
                    })
                }
                ReportKind::Settings => continue,
                ReportKind::Status => match &self.inverters {
                    Some(inverters) => {
                        let mut doc = status(inverters, own, dr, now_s);
                        if let Some(storage) = &self.storage {
                            add_storage_status(&mut doc, storage, charge_rate_w, own, now_s);
                        }
                        Report::Status(doc)
                    }
                    None => continue,
                },
                ReportKind::Availability => match &self.inverters {
                    Some(inverters) => Report::Availability(availability(inverters, now_s)),
                    None => continue,
                },
            };
            let key = match &doc {
                Report::Capability(d) => capability_key(d),
                // A demand response control starting or ending sends DERSettings again
                // (the DR procedures wait for a DERSettings PUT with opModFixedW
                // enabled after each control).
                Report::Settings(d) if dr => {
                    format!("{}/{:?}", settings_key(d), own.demand_response_mode())
                }
                Report::Settings(d) => settings_key(d),
                Report::Status(d) => format!(
                    "{}/{:?}",
                    fleet_status_key(d, self.inverters.as_deref().unwrap_or_default()),
                    self.storage.map(|s| storage_status_key(&s, charge_rate_w))
                ),
                Report::Availability(d) => availability_key(d),
            };
            if !self.reports.due(kind, &key, now_s, backstop) {
                continue;
            }
            let xml = match &doc {
                Report::Capability(d) => ctx.write(d),
                Report::Settings(d) => ctx.write(d),
                Report::Status(d) => ctx.write(d),
                Report::Availability(d) => ctx.write(d),
            };
            match xml {
                Ok(xml) => {
                    self.sending[kind as usize].in_flight = true;
                    ctx.send(
                        Method::Put,
                        link.href.clone(),
                        Some(xml),
                        Purpose::Der(Req::Report { kind, key }),
                    );
                }
                Err(err) => {
                    ctx.error(format!("cannot write {}: {err}", kind.name()));
                    // Not again until its content changes.
                    self.reports.accepted(kind, key, now_s);
                }
            }
        }
    }

    /// The answer to a report PUT.
    pub fn handle(&mut self, ctx: &mut Ctx, req: Req, href: &str, answer: Answer) {
        let Req::Report { kind, key } = req;
        let sending = &mut self.sending[kind as usize];
        sending.in_flight = false;
        match answer {
            Answer::Ok(_) => {
                ctx.send_ok();
                sending.failures = 0;
                sending.retry_at_ms = 0;
                log::debug!("csip: {} sent to {href}", kind.name());
                ctx.errors.remove(href);
                let now_s = ctx.server_now_s();
                self.reports.accepted(kind, key, now_s);
            }
            other => {
                if let Answer::Failed(err) = &other {
                    ctx.send_failed(err);
                }
                let err = PollError::of(other);
                sending.failures += 1;
                let backoff =
                    (SEND_RETRY_MS << (sending.failures.min(8) - 1)).min(SEND_RETRY_MAX_MS);
                sending.retry_at_ms =
                    ctx.now.mono_ms + err.retry_after_ms.unwrap_or(0).max(backoff);
                ctx.error_at(href, format!("PUT {} {href}: {}", kind.name(), err.message));
            }
        }
    }
}

/// DERControlType bit 7, opModFixedW (the CSIP-AUS demand response classes check it in
/// DERCapability.modesSupported and DERSettings.modesEnabled).
pub const MODE_FIXED_W: u32 = 1 << 7;

/// The DERControlType bits this site can carry out ([`Nameplate::carries`]):
/// opModConnect, opModEnergize, opModMaxLimW and opModFixedW where an inverter or
/// battery can be limited (`control::limits` holds opModFixedW as caps); opModVoltVar,
/// opModVoltWatt, opModFixedPF* and opModFixedVar only once every inverter has been
/// read and offers the SunSpec model for it (126/705, 132/706, 123/704). Nothing is
/// claimed that the control layer does not do; a site with no DER claims nothing.
pub fn modes_supported(nameplate: &Nameplate) -> u32 {
    crate::schedule::ControlMode::ALL
        .into_iter()
        .filter(|m| nameplate.carries(*m))
        .filter(|m| !m.is_inverter_setting() || nameplate.inverter_modes.is_some())
        .filter_map(|m| m.der_control_type_bit())
        .fold(0, |acc, bit| acc | bit)
}

/// setGradW when the server's default control gives none: CSIP-AUS's default ramp of
/// 0.27 %/s (hundredths of a percent per second).
pub const DEFAULT_SET_GRAD_W: u16 = 27;

/// `watts` as a 2030.5 ActivePower (value fits an Int16; the multiplier grows).
pub fn active_power(watts: f64) -> ActivePower {
    let (value, multiplier) = scaled_i16(watts);
    ActivePower { multiplier, value }
}

pub fn reactive_power(vars: f64) -> ReactivePower {
    let (value, multiplier) = scaled_i16(vars);
    ReactivePower { multiplier, value }
}

/// cos φ (0..1) as a 2030.5 PowerFactor: displacement in thousandths (multiplier -3).
pub fn power_factor(cos_phi: f64) -> PowerFactor {
    PowerFactor {
        displacement: (cos_phi.clamp(0.0, 1.0) * 1000.0).round() as u16,
        multiplier: -3,
    }
}

pub fn unsigned_scaled(value: f64) -> UnsignedScaled {
    let mut multiplier = 0i8;
    let mut scaled = value.max(0.0);
    while scaled.round() > f64::from(u16::MAX) && multiplier < 9 {
        scaled /= 10.0;
        multiplier += 1;
    }
    UnsignedScaled {
        multiplier,
        value: scaled.round().clamp(0.0, f64::from(u16::MAX)) as u16,
    }
}

fn scaled_i16(value: f64) -> (i16, i8) {
    if !value.is_finite() {
        return (0, 0);
    }
    let mut multiplier = 0i8;
    let mut scaled = value;
    while scaled.round().abs() > f64::from(i16::MAX) && multiplier < 9 {
        scaled /= 10.0;
        multiplier += 1;
    }
    (
        scaled
            .round()
            .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16,
        multiplier,
    )
}

/// Which csipaus elements the reports carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Csipaus {
    /// Plain IEEE 2030.5: none.
    None,
    /// CSIP-AUS 1.0-1.2: the DOE bitmaps.
    Doe,
    /// CSIP-AUS v1.3: the DOE bitmaps and the storage extension (vppModesSupported,
    /// vppModesEnabled, setMinWh), which only the v1.3 schemas have.
    V1_3,
}

impl Csipaus {
    /// From the profile the engine writes with.
    pub fn of(profile: WriteProfile) -> Csipaus {
        match profile {
            WriteProfile::Plain => Csipaus::None,
            WriteProfile::CsipAus {
                ns: CsipausNs::V1_0,
            } => Csipaus::Doe,
            WriteProfile::CsipAus {
                ns: CsipausNs::V1_3,
            } => Csipaus::V1_3,
        }
    }

    fn doe(self) -> bool {
        self != Csipaus::None
    }
}

/// `watts` as an ActivePower, or `None` when it is not a positive rating.
fn rating_w(watts: f64) -> Option<ActivePower> {
    (watts.is_finite() && watts > 0.0).then(|| active_power(watts))
}

/// DERCapability of the fleet; with a battery, its charge and discharge rates and
/// capacity (IEEE 2030.5 storage elements) and, in CSIP-AUS v1.3, vppModesSupported
/// (STO-02/03).
pub fn capability(nameplate: &Nameplate, csipaus: Csipaus) -> DerCapability {
    let storage = nameplate.storage.as_ref();
    DerCapability {
        rtg_max_charge_rate_w: storage.and_then(|s| rating_w(s.max_charge_rate_w)),
        rtg_max_discharge_rate_w: storage.and_then(|s| rating_w(s.max_discharge_rate_w)),
        rtg_max_wh: storage.and_then(|s| s.max_wh).map(unsigned_scaled),
        vpp_modes_supported: storage
            .filter(|_| csipaus == Csipaus::V1_3)
            .map(|s| s.vpp_modes()),
        modes_supported: modes_supported(nameplate),
        rtg_max_va: nameplate.rtg_max_va.map(unsigned_scaled),
        rtg_max_var: nameplate.rtg_max_var.map(reactive_power),
        rtg_max_var_neg: nameplate.rtg_max_var_neg.map(reactive_power),
        rtg_max_w: active_power(nameplate.rtg_max_w),
        rtg_v_nom: nameplate.rtg_v_nom.map(unsigned_scaled),
        rtg_min_pf_over_excited: nameplate.rtg_min_pf_over_excited.map(power_factor),
        rtg_min_pf_under_excited: nameplate.rtg_min_pf_under_excited.map(power_factor),
        der_type: nameplate.der_type,
        doe_modes_supported: if csipaus.doe() {
            nameplate.doe_modes()
        } else {
            0
        },
        ..DerCapability::default()
    }
}

/// DERSettings of the fleet; `set_grad_w` is the ramp in force (the default control's
/// setGradW, which the harness checks is echoed here). A battery's settings are its
/// ratings (csipd changes none of them); in CSIP-AUS v1.3 with vppModesEnabled and
/// setMinWh (the reserve, 0 when unknown: STO-02 wants it present).
pub fn settings(
    nameplate: &Nameplate,
    set_grad_w: u16,
    csipaus: Csipaus,
    now_s: i64,
) -> DerSettings {
    let storage = nameplate.storage.as_ref();
    let v1_3_storage = storage.filter(|_| csipaus == Csipaus::V1_3);
    DerSettings {
        set_max_charge_rate_w: storage.and_then(|s| rating_w(s.max_charge_rate_w)),
        set_max_discharge_rate_w: storage.and_then(|s| rating_w(s.max_discharge_rate_w)),
        set_max_wh: storage.and_then(|s| s.max_wh).map(unsigned_scaled),
        vpp_modes_enabled: v1_3_storage.map(|s| s.vpp_modes()),
        set_min_wh: v1_3_storage.map(|s| unsigned_scaled(s.min_wh.unwrap_or(0.0))),
        modes_enabled: Some(modes_supported(nameplate)),
        set_grad_w,
        set_max_va: nameplate.rtg_max_va.map(unsigned_scaled),
        set_max_var: nameplate.rtg_max_var.map(reactive_power),
        set_max_var_neg: nameplate.rtg_max_var_neg.map(reactive_power),
        set_max_w: active_power(nameplate.rtg_max_w),
        set_v_nom: nameplate.rtg_v_nom.map(unsigned_scaled),
        set_min_pf_over_excited: nameplate.rtg_min_pf_over_excited.map(power_factor),
        set_min_pf_under_excited: nameplate.rtg_min_pf_under_excited.map(power_factor),
        updated_time: now_s,
        doe_modes_enabled: csipaus.doe().then(|| nameplate.doe_modes()),
        ..DerSettings::default()
    }
}

/// What csipd itself has done to the DER fleet: the utility's opModConnect /
/// opModEnergize in force, which the status must reflect whatever the inverters say
/// (CSIP-AUS ALL-11, ALL-12, ALL-26).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnActions {
    /// opModConnect false in force: the DER is disconnected.
    pub disconnected: bool,
    /// opModEnergize false in force: the DER ceases to energize.
    pub deenergised: bool,
    /// opModFixedW in force, hundredths of a percent (negative: charge / consume).
    pub fixed_w_hundredths_pct: Option<i16>,
}

impl OwnActions {
    /// From the scheduler's active controls.
    pub fn of(active: &crate::schedule::ActiveControls) -> OwnActions {
        use crate::schedule::{ControlMode, ModeValue};
        let off = |mode| {
            active
                .get(mode)
                .is_some_and(|v| v.value == ModeValue::Flag(false))
        };
        OwnActions {
            disconnected: off(ControlMode::Connect),
            deenergised: off(ControlMode::Energize),
            fixed_w_hundredths_pct: active.get(ControlMode::FixedW).and_then(|v| match v.value {
                ModeValue::SignedHundredthsPct(p) => Some(p),
                _ => None,
            }),
        }
    }

    /// The AS/NZS 4755 demand response mode (DRM 0-8) csipd's controls put the DER in,
    /// as the CSIP-AUS DR procedures (DRA-02, DRD-01, DRG-01, DRL-01) expect it from
    /// the control: a disconnect is DRM0; opModFixedW 0 is DRM5 (no generation), up to
    /// 50 % DRM6, up to 75 % DRM7, above DRM8 (increase generation); below zero, down
    /// to -50 % is DRM1 (no consumption; the procedures send -0.01 %), down to -75 %
    /// DRM2, down to -100 % (exclusive) DRM3, -100 % DRM4 (increase consumption).
    /// `None` when no such control is in force.
    pub fn demand_response_mode(self) -> Option<u8> {
        if self.disconnected {
            return Some(0);
        }
        let pct = self.fixed_w_hundredths_pct?;
        Some(match pct {
            0 => 5,
            1..=5_000 => 6,
            5_001..=7_500 => 7,
            7_501.. => 8,
            -4_999..=-1 => 1,
            -7_499..=-5_000 => 2,
            -9_999..=-7_500 => 3,
            _ => 4,
        })
    }
}

/// Output below this share of an inverter's rating (or 10 W) counts as not generating.
const GENERATING_FRACTION: f64 = 0.01;

/// The inverter is producing (or its output is not measured and it says it operates).
fn generating(i: &InverterState) -> bool {
    i.operating
        && i.active_power_w
            .is_none_or(|w| w > (i.rtg_max_w * GENERATING_FRACTION).max(10.0))
}

/// ConnectStatusType bits of the fleet: bit 0 connected, 1 available, 2 operating —
/// each set when any inverter is (one of two inverters off still reports the fleet
/// connected, MUL-01), and cleared by csipd's own actions: a disconnect clears all
/// three (ALL-12), a de-energise clears "operating" (ALL-11). "Operating" also needs
/// output: an inverter that stopped generating is not operating (ALL-08).
pub fn connect_status(inverters: &[InverterState], own: OwnActions) -> u8 {
    if own.disconnected {
        return 0;
    }
    u8::from(inverters.iter().any(|i| i.connected))
        | u8::from(inverters.iter().any(|i| i.available)) << 1
        | u8::from(!own.deenergised && inverters.iter().any(generating)) << 2
}

/// OperationalModeStatusType: 1 off, 2 operational mode (some inverter generating and
/// csipd has not switched the fleet off).
pub fn operational_mode(inverters: &[InverterState], own: OwnActions) -> u8 {
    if !own.disconnected && !own.deenergised && inverters.iter().any(generating) {
        2
    } else {
        1
    }
}

/// DERStatus of the fleet. On a site that declares opModFixedW (`demand_response`), a
/// demand response control in force is reported as operationalModeStatus 100 + its
/// DRM (the values the CSIP-AUS DR procedures check; 2030.5 reserves them for such
/// profile use); otherwise operationalModeStatus is [`operational_mode`].
pub fn status(
    inverters: &[InverterState],
    own: OwnActions,
    demand_response: bool,
    now_s: i64,
) -> DerStatus {
    let mode = own
        .demand_response_mode()
        .filter(|_| demand_response)
        .map(|drm| 100 + drm)
        .unwrap_or_else(|| operational_mode(inverters, own));
    DerStatus {
        gen_connect_status: Some(StatusValue {
            date_time: now_s,
            value: connect_status(inverters, own),
        }),
        operational_mode_status: Some(StatusValue {
            date_time: now_s,
            value: mode,
        }),
        reading_time: now_s,
        ..DerStatus::default()
    }
}

/// Adds the battery's state to a DERStatus: stateOfChargeStatus (hundredths of a
/// percent), storageModeStatus (0 charging, 1 discharging, 2 holding) and
/// storConnectStatus (ConnectStatusType bits as for the generation side, cleared by
/// csipd's own disconnect / de-energise like genConnectStatus).
pub fn add_storage_status(
    status: &mut DerStatus,
    storage: &StorageMeasurement,
    max_charge_rate_w: f64,
    own: OwnActions,
    now_s: i64,
) {
    fn at<T>(date_time: i64, value: T) -> StatusValue<T> {
        StatusValue { date_time, value }
    }
    status.state_of_charge_status = storage
        .soc_pct
        .filter(|p| p.is_finite())
        .map(|p| at(now_s, (p.clamp(0.0, 100.0) * 100.0).round() as u16));
    status.storage_mode_status = storage
        .storage_mode(max_charge_rate_w)
        .map(|m| at(now_s, m));
    let bits = if own.disconnected {
        0
    } else {
        u8::from(storage.connected)
            | u8::from(storage.available) << 1
            | u8::from(!own.deenergised && storage.operating) << 2
    };
    status.stor_connect_status = Some(at(now_s, bits));
}

/// The battery's part of DERStatus's change key: its connect bits, mode and the state
/// of charge to the nearest 5 % (each watt and tenth of a percent is no change worth
/// a PUT; the backstop carries the exact value).
pub fn storage_status_key(storage: &StorageMeasurement, max_charge_rate_w: f64) -> String {
    format!(
        "{}{}{}/{:?}/{:?}",
        u8::from(storage.connected),
        u8::from(storage.available),
        u8::from(storage.operating),
        storage.storage_mode(max_charge_rate_w),
        storage.soc_pct.map(|p| (p / 5.0).round() as i64)
    )
}

/// DERStatus's change key: the fleet's status and each inverter's own state, so a
/// change of any one DER of the site is a change (MUL-01: one of two switched off).
pub fn fleet_status_key(status: &DerStatus, inverters: &[InverterState]) -> String {
    let each: Vec<(bool, bool, bool)> = inverters
        .iter()
        .map(|i| (i.connected, i.available, generating(i)))
        .collect();
    format!("{}/{each:?}", status_key(status))
}

pub fn availability(inverters: &[InverterState], now_s: i64) -> DerAvailability {
    let available_w: f64 = inverters
        .iter()
        .filter(|i| i.available)
        .map(|i| i.rtg_max_w)
        .sum();
    DerAvailability {
        reading_time: now_s,
        stat_w_avail: Some(active_power(available_w)),
        ..DerAvailability::default()
    }
}

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReportKind {
    Capability,
    Settings,
    Status,
    Availability,
}

impl ReportKind {
    pub const ALL: [ReportKind; 4] = [
        ReportKind::Capability,
        ReportKind::Settings,
        ReportKind::Status,
        ReportKind::Availability,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReportKind::Capability => "DERCapability",
            ReportKind::Settings => "DERSettings",
            ReportKind::Status => "DERStatus",
            ReportKind::Availability => "DERAvailability",
        }
    }
}

/// Remembers what was last accepted for each report, compared without timestamps,
/// so a report is PUT at start, when its content changes, and every `backstop_s`.
#[derive(Debug, Clone, Default)]
pub struct ReportTracker {
    /// (content key, accepted at) per report.
    sent: [Option<(String, i64)>; 4],
}

impl ReportTracker {
    /// True if a report whose timeless content is `key` should be sent at `now_s`.
    pub fn due(&self, kind: ReportKind, key: &str, now_s: i64, backstop_s: u32) -> bool {
        match &self.sent[kind as usize] {
            None => true,
            Some((last, at)) => last != key || now_s - at >= i64::from(backstop_s),
        }
    }

    /// The server accepted `key` at `now_s`.
    pub fn accepted(&mut self, kind: ReportKind, key: String, now_s: i64) {
        self.sent[kind as usize] = Some((key, now_s));
    }

    /// Forget everything (new DER links after rediscovery: send all again).
    pub fn reset(&mut self) {
        self.sent = Default::default();
    }
}

/// A report's content without its timestamps, for change detection.
pub fn status_key(status: &DerStatus) -> String {
    format!(
        "{:?}/{:?}",
        status.gen_connect_status.map(|s| s.value),
        status.operational_mode_status.map(|s| s.value)
    )
}

pub fn settings_key(settings: &DerSettings) -> String {
    let mut timeless = settings.clone();
    timeless.updated_time = 0;
    format!("{timeless:?}")
}

pub fn availability_key(availability: &DerAvailability) -> String {
    // Availability moves with every inverter start/stop; compare to the nearest 100 W so
    // noise does not cause a PUT every second.
    let watts = availability
        .stat_w_avail
        .map(|p| (p.watts() / 100.0).round() as i64);
    format!("{watts:?}")
}

pub fn capability_key(capability: &DerCapability) -> String {
    format!("{capability:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nameplate() -> Nameplate {
        Nameplate {
            rtg_max_w: 10_000.0,
            rtg_max_va: Some(10_000.0),
            rtg_max_var: Some(6_000.0),
            rtg_max_var_neg: Some(6_000.0),
            rtg_v_nom: Some(230.0),
            rtg_min_pf_over_excited: None,
            rtg_min_pf_under_excited: None,
            der_type: 4,
            can_limit_export: true,
            can_limit_import: false,
            can_limit_generation: true,
            can_limit_load: false,
            storage: None,
            inverter_modes: None,
        }
    }

    fn inverter(connected: bool, operating: bool) -> InverterState {
        InverterState {
            connected,
            available: connected,
            operating,
            rtg_max_w: 5_000.0,
            active_power_w: None,
        }
    }

    #[test]
    fn scaling_keeps_values_in_range() {
        assert_eq!(
            active_power(10_000.0),
            ActivePower {
                multiplier: 0,
                value: 10_000
            }
        );
        assert_eq!(
            active_power(200_000.0),
            ActivePower {
                multiplier: 1,
                value: 20_000
            }
        );
        assert_eq!(active_power(-50_000.0).watts(), -50_000.0);
        assert_eq!(unsigned_scaled(230.0).value, 230);
        assert_eq!(active_power(f64::NAN).value, 0);
    }

    #[test]
    fn doe_modes_state_only_what_the_site_can_do() {
        let pv_only = capability(&nameplate(), Csipaus::Doe);
        // export (bit 0) and generation (bit 2); no import or load limiting without a
        // controllable load or battery
        assert_eq!(pv_only.doe_modes_supported, 0b0101);
        let plain = capability(&nameplate(), Csipaus::None);
        assert_eq!(plain.doe_modes_supported, 0);
        let settings = settings(&nameplate(), 27, Csipaus::Doe, 5);
        assert_eq!(settings.doe_modes_enabled, Some(0b0101));
        assert_eq!(settings.set_max_w.watts(), 10_000.0);
    }

    #[test]
    fn a_battery_adds_its_ratings_and_in_v13_its_vpp_modes() {
        let mut np = nameplate();
        np.storage = Some(super::super::StorageNameplate {
            max_charge_rate_w: 5_000.0,
            max_discharge_rate_w: 4_000.0,
            max_wh: Some(13_500.0),
            min_wh: None,
            can_target: true,
        });
        let cap = capability(&np, Csipaus::V1_3);
        assert_eq!(cap.rtg_max_charge_rate_w.map(|p| p.watts()), Some(5_000.0));
        assert_eq!(
            cap.rtg_max_discharge_rate_w.map(|p| p.watts()),
            Some(4_000.0)
        );
        assert_eq!(cap.rtg_max_wh.map(|w| w.value), Some(13_500));
        assert_eq!(cap.vpp_modes_supported, Some(1));
        let set = settings(&np, 27, Csipaus::V1_3, 5);
        assert_eq!(set.set_max_charge_rate_w.map(|p| p.watts()), Some(5_000.0));
        assert_eq!(set.vpp_modes_enabled, Some(1));
        assert_eq!(set.set_min_wh.map(|w| w.value), Some(0));
        // Before v1.3 the storage extension is not written (csipaus-core.xsd lacks it),
        // but the IEEE 2030.5 storage ratings are.
        let old = capability(&np, Csipaus::Doe);
        assert_eq!(old.vpp_modes_supported, None);
        assert!(old.rtg_max_charge_rate_w.is_some());
        assert_eq!(settings(&np, 27, Csipaus::Doe, 5).set_min_wh, None);
        // No battery: none of it.
        let pv = capability(&nameplate(), Csipaus::V1_3);
        assert_eq!((pv.rtg_max_wh, pv.vpp_modes_supported), (None, None));
    }

    #[test]
    fn battery_status_follows_its_power_and_csipd_own_actions() {
        let none = OwnActions::default();
        let charging = StorageMeasurement {
            active_power_w: Some(-2_000.0),
            stored_wh: Some(6_750.0),
            soc_pct: Some(50.04),
            connected: true,
            available: true,
            operating: true,
        };
        let mut st = status(&[inverter(true, true)], none, false, 7);
        add_storage_status(&mut st, &charging, 5_000.0, none, 7);
        assert_eq!(st.state_of_charge_status.map(|s| s.value), Some(5004));
        assert_eq!(st.storage_mode_status.map(|s| s.value), Some(0));
        assert_eq!(st.stor_connect_status.map(|s| s.value), Some(0b111));
        let discharging = StorageMeasurement {
            active_power_w: Some(3_000.0),
            ..charging
        };
        let holding = StorageMeasurement {
            active_power_w: Some(20.0),
            ..charging
        };
        assert_eq!(discharging.storage_mode(5_000.0), Some(1));
        assert_eq!(holding.storage_mode(5_000.0), Some(2));
        let disconnected = OwnActions {
            disconnected: true,
            ..none
        };
        add_storage_status(&mut st, &charging, 5_000.0, disconnected, 8);
        assert_eq!(st.stor_connect_status.map(|s| s.value), Some(0));
        // The change key moves with the mode, not with each watt.
        let key = |s: &StorageMeasurement| storage_status_key(s, 5_000.0);
        assert_ne!(key(&charging), key(&discharging));
        let more = StorageMeasurement {
            active_power_w: Some(-2_100.0),
            soc_pct: Some(50.9),
            ..charging
        };
        assert_eq!(key(&charging), key(&more));
    }

    #[test]
    fn connect_status_of_several_inverters() {
        let none = OwnActions::default();
        // MUL-01: one of two off → still connected/available/operating, mode 2
        let one_off = [inverter(true, true), inverter(false, false)];
        assert_eq!(connect_status(&one_off, none), 0b111);
        assert_eq!(operational_mode(&one_off, none), 2);
        // all off → nothing set, mode 1
        let all_off = [inverter(false, false), inverter(false, false)];
        assert_eq!(connect_status(&all_off, none), 0);
        assert_eq!(operational_mode(&all_off, none), 1);
        // ...but a change of any one DER is a change of the report
        let both_on = [inverter(true, true), inverter(true, true)];
        let key = |inv: &[InverterState]| fleet_status_key(&status(inv, none, false, 0), inv);
        assert_ne!(key(&both_on), key(&one_off));
        assert_eq!(
            availability(&one_off, 0).stat_w_avail.map(|p| p.watts()),
            Some(5_000.0)
        );
    }

    #[test]
    fn own_actions_and_output_decide_the_status() {
        let none = OwnActions::default();
        let mut running = inverter(true, true);
        running.active_power_w = Some(3_000.0);
        // ALL-08: stopped generating (2 W of 5 kW): not operating, mode 1 (off)
        let mut idle = running;
        idle.active_power_w = Some(2.0);
        assert_eq!(connect_status(&[idle], none), 0b011);
        assert_eq!(operational_mode(&[idle], none), 1);
        // ALL-11: de-energised by csipd: "operating" cleared though it still produces
        let deenergised = OwnActions {
            deenergised: true,
            ..none
        };
        assert_eq!(connect_status(&[running], deenergised), 0b011);
        assert_eq!(operational_mode(&[running], deenergised), 1);
        // ALL-12: disconnected by csipd: bits 0, 1 and 2 all cleared
        let disconnected = OwnActions {
            disconnected: true,
            ..none
        };
        assert_eq!(connect_status(&[running], disconnected), 0);
        assert_eq!(connect_status(&[running], none), 0b111);
    }

    #[test]
    fn demand_response_modes_follow_the_as_nzs_4755_drms() {
        let fixed = |pct: i16| OwnActions {
            fixed_w_hundredths_pct: Some(pct),
            ..OwnActions::default()
        };
        // The values the DR procedures send (DRD-01), hundredths of a percent.
        for (pct, drm) in [
            (-7500, 3),
            (-5000, 2),
            (-1, 1),
            (-10_000, 4),
            (7500, 7),
            (5000, 6),
            (0, 5),
            (10_000, 8),
        ] {
            assert_eq!(fixed(pct).demand_response_mode(), Some(drm), "{pct}");
        }
        assert_eq!(OwnActions::default().demand_response_mode(), None);
        let disconnected = OwnActions {
            disconnected: true,
            ..fixed(7500)
        };
        assert_eq!(disconnected.demand_response_mode(), Some(0));
        // Reported as 100 + DRM only on a site that declares opModFixedW.
        let running = [inverter(true, true)];
        let mode = |own, dr| {
            status(&running, own, dr, 0)
                .operational_mode_status
                .map(|s| s.value)
        };
        assert_eq!(mode(fixed(5000), true), Some(106));
        assert_eq!(mode(fixed(5000), false), Some(2));
        assert_eq!(mode(OwnActions::default(), true), Some(2));
        // Declared where a controllable inverter or battery can follow it.
        assert_ne!(modes_supported(&nameplate()) & MODE_FIXED_W, 0);
        let mut none = nameplate();
        none.can_limit_generation = false;
        none.can_limit_export = false;
        assert_eq!(modes_supported(&none) & MODE_FIXED_W, 0);
        // Nothing to act on: nothing claimed.
        assert_eq!(settings(&none, 27, Csipaus::Doe, 0).modes_enabled, Some(0));
    }

    #[test]
    fn reports_go_at_start_on_change_and_on_backstop() {
        let mut tracker = ReportTracker::default();
        let none = OwnActions::default();
        let connected = status_key(&status(&[inverter(true, true)], none, false, 100));
        assert!(tracker.due(ReportKind::Status, &connected, 100, 300));
        tracker.accepted(ReportKind::Status, connected.clone(), 100);
        // same content later (timestamps differ): not due
        let again = status_key(&status(&[inverter(true, true)], none, false, 150));
        assert!(!tracker.due(ReportKind::Status, &again, 150, 300));
        // changed content: due
        let off = status_key(&status(&[inverter(false, false)], none, false, 160));
        assert!(tracker.due(ReportKind::Status, &off, 160, 300));
        // backstop
        assert!(tracker.due(ReportKind::Status, &again, 400, 300));
        // settings: a new setGradW is a change (MUL-03)
        let s27 = settings_key(&settings(&nameplate(), 27, Csipaus::Doe, 1));
        let s27_later = settings_key(&settings(&nameplate(), 27, Csipaus::Doe, 99));
        let s100 = settings_key(&settings(&nameplate(), 100, Csipaus::Doe, 99));
        assert_eq!(s27, s27_later);
        assert_ne!(s27, s100);
    }
}
