//! IEEE 2030.5 and csipaus resources, in 2030.5 form: values keep their power-of-ten
//! multiplier (conversion to watts happens in `control`), times are Unix seconds
//! (`TimeType`), hexBinary flags are plain integers, mRIDs and LFDIs are hex strings.
//!
//! Field order follows the schema's element order; the writer relies on that.
//! Optional elements are `Option`; elements that real servers omit although the schema
//! requires them get a documented default (see the field docs).

/// A link to a resource (`Link`, and every `...Link` element without `all`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub href: String,
}

/// A link to a list (`ListLink`): `all` is the number of items the server says it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListLink {
    pub href: String,
    pub all: Option<u32>,
}

/// A 2030.5 list page: `all` items exist on the server, `results` are in this page.
/// Servers page with `?s=<start>&l=<limit>`; compare `items.len()` with `all`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List<T> {
    pub href: Option<String>,
    pub all: u32,
    pub results: u32,
    /// `subscribable` attribute (0 none, 1 non-conditional, 2 conditional, 3 both).
    pub subscribable: Option<u8>,
    /// Server-advised poll interval for this list.
    pub poll_rate_s: Option<u32>,
    pub items: Vec<T>,
}

pub type EndDeviceList = List<EndDevice>;
pub type FunctionSetAssignmentsList = List<FunctionSetAssignments>;
pub type DerProgramList = List<DerProgram>;
pub type DerControlList = List<DerControl>;
pub type DerCurveList = List<DerCurve>;
pub type DerList = List<Der>;
pub type MirrorUsagePointList = List<MirrorUsagePoint>;
pub type LogEventList = List<LogEvent>;

/// `value` × 10^`pow10` as the f64 nearest to that exact decimal: 3 × 10^-1 is 0.3,
/// where `3.0 * 10f64.powi(-1)` is 0.30000000000000004 (10^-1 has no exact f64, and
/// the status JSON and every display would show the noise). Every 2030.5 "value ×
/// 10^multiplier" (prices, watts, var, PF) is read through this one rule. Up to 10^22
/// the power of ten is exact, so one correctly rounded multiply or divide gives the
/// nearest f64; beyond it the decimal is parsed ("5e-30"), which rounds once too. Out of
/// f64's range it saturates to ±infinity or 0, never panics.
pub fn decimal(value: i64, pow10: i32) -> f64 {
    const EXACT: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    // |value| below 2^53 is exact as an f64 (every Int32 / Int48 2030.5 value is).
    let exact_value = value.unsigned_abs() < (1 << 53);
    match EXACT.get(pow10.unsigned_abs() as usize) {
        Some(p) if exact_value && pow10 >= 0 => value as f64 * p,
        Some(p) if exact_value => value as f64 / p,
        _ => format!("{value}e{pow10}").parse().unwrap_or(f64::NAN),
    }
}

/// `x` × 10^`pow10` for an `x` that stands for a decimal (a price from [`decimal`]):
/// the shortest decimal that reads back as `x` ("0.07"), shifted ("0.07e2" = 7), so
/// dollars become cents without noise (`0.07 * 100.0` is 7.000000000000001).
pub fn shift_decimal(x: f64, pow10: i32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x}e{pow10}").parse().unwrap_or(f64::NAN)
}

/// `ActivePower`: value × 10^multiplier watts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivePower {
    pub multiplier: i8,
    pub value: i16,
}

impl ActivePower {
    /// The power in watts (value × 10^multiplier). Multipliers outside what f64 can
    /// hold saturate to ±infinity or 0, never panic.
    pub fn watts(&self) -> f64 {
        decimal(self.value.into(), self.multiplier.into())
    }
}

/// `ReactivePower`: value × 10^multiplier var. Serde: stored by the scheduler as the
/// opModTargetVar value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ReactivePower {
    pub multiplier: i8,
    pub value: i16,
}

impl ReactivePower {
    pub fn vars(&self) -> f64 {
        decimal(self.value.into(), self.multiplier.into())
    }
}

/// Unsigned value × 10^multiplier: `ApparentPower` (VA), `VoltageRMS` (V),
/// `CurrentRMS` (A), `WattHour` (Wh), `AmpereHour` (Ah).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnsignedScaled {
    pub multiplier: i8,
    pub value: u16,
}

impl UnsignedScaled {
    pub fn scaled(&self) -> f64 {
        decimal(self.value.into(), self.multiplier.into())
    }
}

/// `PowerFactor`: displacement × 10^multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PowerFactor {
    pub displacement: u16,
    pub multiplier: i8,
}

/// `PowerFactorWithExcitation`: cos φ = `displacement` × 10^`multiplier` (0..1);
/// `excitation` true when the DER absorbs reactive power (under-excited), false when it
/// injects it (over-excited), as sep.xsd says. Serde: the scheduler stores it as the
/// opModFixedPF* value of the active controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PowerFactorWithExcitation {
    pub displacement: u16,
    pub excitation: bool,
    pub multiplier: i8,
}

/// `FixedVar`: `value` (SignedPerCent) in hundredths of a percent of the reference
/// `ref_type` (DERUnitRefType: 2 %setMaxVar, 3 %statVarAvail). Serde: stored by the
/// scheduler as the opModFixedVar value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FixedVar {
    pub ref_type: u8,
    pub value: i16,
}

/// `FreqDroopType`: dead bands `db_of`/`db_uf` in thousandths of Hz, `k_of`/`k_uf`
/// per-unit frequency change for 1 per-unit power change in thousandths,
/// `open_loop_tms` in hundredths of a second (sep.xsd). Serde: stored by the scheduler
/// as the opModFreqDroop value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FreqDroop {
    pub db_of: u32,
    pub db_uf: u32,
    pub k_of: u16,
    pub k_uf: u16,
    pub open_loop_tms: u16,
}

/// `DateTimeInterval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateTimeInterval {
    pub duration_s: u32,
    /// Unix seconds.
    pub start: i64,
}

impl DateTimeInterval {
    /// End of the interval in Unix seconds (saturating).
    pub fn end(&self) -> i64 {
        self.start.saturating_add(i64::from(self.duration_s))
    }
}

/// `DeviceCapability` (dcap), the entry point of discovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceCapability {
    pub href: Option<String>,
    pub poll_rate_s: Option<u32>,
    pub customer_account_list_link: Option<ListLink>,
    pub demand_response_program_list_link: Option<ListLink>,
    pub der_program_list_link: Option<ListLink>,
    pub file_list_link: Option<ListLink>,
    pub messaging_program_list_link: Option<ListLink>,
    pub prepayment_list_link: Option<ListLink>,
    pub response_set_list_link: Option<ListLink>,
    pub tariff_profile_list_link: Option<ListLink>,
    pub time_link: Option<Link>,
    pub usage_point_list_link: Option<ListLink>,
    pub end_device_list_link: Option<ListLink>,
    pub mirror_usage_point_list_link: Option<ListLink>,
    pub self_device_link: Option<Link>,
}

/// `Time` (tm). Real servers omit `dstStartTime`/`dstEndTime`/`quality` (GridAPPS-D):
/// those are `None` then, and `dst_offset_s` defaults to 0 (no daylight saving).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Time {
    pub href: Option<String>,
    pub poll_rate_s: Option<u32>,
    pub current_time: i64,
    pub dst_end_time: Option<i64>,
    pub dst_offset_s: i32,
    pub dst_start_time: Option<i64>,
    pub local_time: Option<i64>,
    /// 3 regulated source, 4 unregulated, 5 ... 7 intentionally uncoordinated.
    pub quality: Option<u8>,
    pub tz_offset_s: i32,
}

/// `EndDevice` (edev). Read from the EndDeviceList and written for in-band
/// registration (POST with `sfdi`, `lfdi`, `changed_time`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndDevice {
    pub href: Option<String>,
    pub subscribable: Option<u8>,
    pub configuration_link: Option<Link>,
    pub der_list_link: Option<ListLink>,
    /// `deviceCategory` (HexBinary32 bitmap).
    pub device_category: Option<u32>,
    pub device_information_link: Option<Link>,
    pub device_status_link: Option<Link>,
    pub file_status_link: Option<Link>,
    pub ip_interface_list_link: Option<ListLink>,
    /// `lFDI` as sent, uppercased. Kept as text (not validated as hex) because real
    /// servers list other devices with malformed LFDIs; compare with [`EndDevice::is_lfdi`].
    pub lfdi: Option<String>,
    pub load_shed_availability_list_link: Option<ListLink>,
    pub log_event_list_link: Option<ListLink>,
    pub power_status_link: Option<Link>,
    pub sfdi: u64,
    pub changed_time: i64,
    pub enabled: Option<bool>,
    pub flow_reservation_request_list_link: Option<ListLink>,
    pub flow_reservation_response_list_link: Option<ListLink>,
    pub function_set_assignments_list_link: Option<ListLink>,
    pub post_rate_s: Option<u32>,
    pub registration_link: Option<Link>,
    pub subscription_list_link: Option<ListLink>,
    /// csipaus `ConnectionPointLink` (written after the 2030.5 elements).
    pub connection_point_link: Option<Link>,
}

impl EndDevice {
    /// The EndDevice a client POSTs to the EndDeviceList for in-band registration.
    pub fn for_registration(lfdi: &str, sfdi: u64, changed_time: i64) -> Self {
        EndDevice {
            lfdi: Some(lfdi.to_ascii_uppercase()),
            sfdi,
            changed_time,
            ..EndDevice::default()
        }
    }

    /// True if this EndDevice carries `lfdi` (compared case-insensitively).
    pub fn is_lfdi(&self, lfdi: &str) -> bool {
        self.lfdi
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(lfdi.trim()))
    }
}

/// `Registration` (rg).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    pub href: Option<String>,
    pub poll_rate_s: Option<u32>,
    pub date_time_registered: i64,
    pub pin: u32,
}

/// `FunctionSetAssignments` (fsa).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionSetAssignments {
    pub href: Option<String>,
    pub subscribable: Option<u8>,
    pub customer_account_list_link: Option<ListLink>,
    pub demand_response_program_list_link: Option<ListLink>,
    pub der_program_list_link: Option<ListLink>,
    pub file_list_link: Option<ListLink>,
    pub messaging_program_list_link: Option<ListLink>,
    pub prepayment_list_link: Option<ListLink>,
    pub response_set_list_link: Option<ListLink>,
    pub tariff_profile_list_link: Option<ListLink>,
    pub time_link: Option<Link>,
    pub usage_point_list_link: Option<ListLink>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
}

/// `DERProgram` (derp).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerProgram {
    pub href: Option<String>,
    pub subscribable: Option<u8>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    pub active_der_control_list_link: Option<ListLink>,
    pub default_der_control_link: Option<Link>,
    pub der_control_list_link: Option<ListLink>,
    pub der_curve_list_link: Option<ListLink>,
    /// Lower value = higher priority.
    pub primacy: u8,
}

/// `EventStatus.currentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CurrentStatus {
    #[default]
    Scheduled,
    Active,
    Cancelled,
    CancelledWithRandomization,
    Superseded,
    /// A value the standard does not define; kept so nothing is lost.
    Other(u8),
}

impl CurrentStatus {
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Scheduled,
            1 => Self::Active,
            2 => Self::Cancelled,
            3 => Self::CancelledWithRandomization,
            4 => Self::Superseded,
            other => Self::Other(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Scheduled => 0,
            Self::Active => 1,
            Self::Cancelled => 2,
            Self::CancelledWithRandomization => 3,
            Self::Superseded => 4,
            Self::Other(code) => code,
        }
    }
}

/// `EventStatus`. `potentiallySuperseded` is omitted by some servers (GridAPPS-D);
/// it then reads as `false`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventStatus {
    pub current_status: CurrentStatus,
    pub date_time: i64,
    pub potentially_superseded: bool,
    pub potentially_superseded_time: Option<i64>,
    pub reason: Option<String>,
}

/// `DERControlBase`: every 2030.5 base mode, then the csipaus limits (Imp, Exp, Gen,
/// Load — the order of csipaus-core.xsd).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerControlBase {
    pub op_mod_connect: Option<bool>,
    pub op_mod_energize: Option<bool>,
    pub op_mod_fixed_pf_absorb_w: Option<PowerFactorWithExcitation>,
    pub op_mod_fixed_pf_inject_w: Option<PowerFactorWithExcitation>,
    pub op_mod_fixed_var: Option<FixedVar>,
    /// `SignedPerCent`, hundredths of a percent of setMaxW.
    pub op_mod_fixed_w: Option<i16>,
    pub op_mod_freq_droop: Option<FreqDroop>,
    pub op_mod_freq_watt: Option<Link>,
    pub op_mod_hfrt_may_trip: Option<Link>,
    pub op_mod_hfrt_must_trip: Option<Link>,
    pub op_mod_hvrt_may_trip: Option<Link>,
    pub op_mod_hvrt_momentary_cessation: Option<Link>,
    pub op_mod_hvrt_must_trip: Option<Link>,
    pub op_mod_lfrt_may_trip: Option<Link>,
    pub op_mod_lfrt_must_trip: Option<Link>,
    pub op_mod_lvrt_may_trip: Option<Link>,
    pub op_mod_lvrt_momentary_cessation: Option<Link>,
    pub op_mod_lvrt_must_trip: Option<Link>,
    /// `PerCent`, hundredths of a percent of setMaxW.
    pub op_mod_max_lim_w: Option<u16>,
    pub op_mod_target_var: Option<ReactivePower>,
    pub op_mod_target_w: Option<ActivePower>,
    pub op_mod_volt_var: Option<Link>,
    pub op_mod_volt_watt: Option<Link>,
    pub op_mod_watt_pf: Option<Link>,
    pub op_mod_watt_var: Option<Link>,
    /// Hundredths of a second.
    pub ramp_tms: Option<u16>,
    /// csipaus: limit on site import (connection point).
    pub op_mod_imp_lim_w: Option<ActivePower>,
    /// csipaus: limit on site export (connection point).
    pub op_mod_exp_lim_w: Option<ActivePower>,
    /// csipaus: limit on generation.
    pub op_mod_gen_lim_w: Option<ActivePower>,
    /// csipaus: limit on load.
    pub op_mod_load_lim_w: Option<ActivePower>,
    /// csipaus (v1.3 storage): target aggregate output of the storage, W; positive
    /// discharges, negative charges (`csipaus-ext-v1.3-beta_storage.xsd`).
    pub op_mod_storage_target_w: Option<ActivePower>,
}

/// `DERControl` (derc): one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerControl {
    pub href: Option<String>,
    /// Where responses go (`Response` function set); absent on servers without it.
    pub reply_to: Option<String>,
    /// `responseRequired` bitmap (HexBinary8): bit 0 received, 1 specific response
    /// (started/completed), 2 user response.
    pub response_required: Option<u8>,
    pub subscribable: Option<u8>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    pub creation_time: i64,
    pub event_status: EventStatus,
    pub interval: DateTimeInterval,
    pub randomize_duration_s: Option<i16>,
    pub randomize_start_s: Option<i16>,
    pub base: DerControlBase,
    pub device_category: Option<u32>,
}

/// The enter-service settings (`setESDelay`, `setESHighFreq`, `setESHighVolt`,
/// `setESLowFreq`, `setESLowVolt`, `setESRampTms`, `setESRandomDelay` of a
/// DefaultDERControl and of DERSettings; sep.xsd), in 2030.5's units: voltages in
/// hundredths of a percent of the nominal voltage, frequencies in hundredths of a Hz,
/// times in hundredths of a second. `None` = not given. The one type of the concept:
/// read from the utility's default, carried by the scheduler, written to SunSpec 703
/// (`devices::enter_service`) and reported in DERSettings. Serde: stored with the
/// active controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EnterService {
    /// setESDelay: wait before entering service, hundredths of a second.
    pub delay: Option<u32>,
    /// setESHighFreq: enter service at or below this frequency, hundredths of a Hz.
    pub high_freq: Option<u16>,
    /// setESHighVolt: at or below this voltage, hundredths of a percent of nominal.
    pub high_volt: Option<i16>,
    /// setESLowFreq: at or above this frequency, hundredths of a Hz.
    pub low_freq: Option<u16>,
    /// setESLowVolt: at or above this voltage, hundredths of a percent of nominal.
    pub low_volt: Option<i16>,
    /// setESRampTms: ramp to full output over this, hundredths of a second.
    pub ramp_tms: Option<u32>,
    /// setESRandomDelay: a random extra delay of up to this, hundredths of a second.
    pub random_delay: Option<u32>,
}

impl EnterService {
    /// No value given.
    pub fn is_empty(&self) -> bool {
        *self == EnterService::default()
    }
}

/// `DefaultDERControl` (dderc): what applies when no event is active. Servers may send
/// one without `mRID` or `DERControlBase`; those read as `None` / an empty base.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DefaultDerControl {
    pub href: Option<String>,
    pub subscribable: Option<u8>,
    pub mrid: Option<String>,
    pub description: Option<String>,
    pub version: Option<u16>,
    pub base: DerControlBase,
    /// `setESDelay` … `setESRandomDelay`.
    pub enter_service: EnterService,
    /// Hundredths of a percent of setMaxW per second.
    pub set_grad_w: Option<u16>,
    pub set_soft_grad_w: Option<u16>,
}

/// `CurveData` point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CurveData {
    pub excitation: Option<bool>,
    pub xvalue: i32,
    pub yvalue: i32,
}

/// `DERCurve` (dc).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerCurve {
    pub href: Option<String>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    pub autonomous_v_ref_enable: Option<bool>,
    pub autonomous_v_ref_time_constant: Option<u32>,
    pub creation_time: i64,
    pub curve_data: Vec<CurveData>,
    pub curve_type: u8,
    pub open_loop_tms: Option<u16>,
    pub ramp_dec_tms: Option<u16>,
    pub ramp_inc_tms: Option<u16>,
    pub ramp_pt1_tms: Option<u16>,
    pub v_ref: Option<u16>,
    pub x_multiplier: i8,
    pub y_multiplier: i8,
    pub y_ref_type: u8,
}

/// `DER`: links to the four DER resources the client PUTs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Der {
    pub href: Option<String>,
    pub subscribable: Option<u8>,
    pub associated_der_program_list_link: Option<ListLink>,
    pub associated_usage_point_link: Option<Link>,
    pub current_der_program_link: Option<Link>,
    pub der_availability_link: Option<Link>,
    pub der_capability_link: Option<Link>,
    pub der_settings_link: Option<Link>,
    pub der_status_link: Option<Link>,
}

/// csipaus `ConnectionPoint`: the NMI of the site.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionPoint {
    pub href: Option<String>,
    pub connection_point_id: String,
}

/// `DERCapability` (dercap), written by the client. `doe_modes_supported` is the
/// csipaus DOEControlType bitmap (bit 0 opModExpLimW, 1 opModImpLimW, 2 opModGenLimW,
/// 3 opModLoadLimW); CSIP-AUS servers reject a DERCapability without it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerCapability {
    pub href: Option<String>,
    /// `modesSupported` DERControlType bitmap (HexBinary32).
    pub modes_supported: u32,
    pub rtg_abnormal_category: Option<u8>,
    pub rtg_max_a: Option<UnsignedScaled>,
    pub rtg_max_ah: Option<UnsignedScaled>,
    pub rtg_max_charge_rate_va: Option<UnsignedScaled>,
    pub rtg_max_charge_rate_w: Option<ActivePower>,
    pub rtg_max_discharge_rate_va: Option<UnsignedScaled>,
    pub rtg_max_discharge_rate_w: Option<ActivePower>,
    pub rtg_max_v: Option<UnsignedScaled>,
    pub rtg_max_va: Option<UnsignedScaled>,
    pub rtg_max_var: Option<ReactivePower>,
    pub rtg_max_var_neg: Option<ReactivePower>,
    pub rtg_max_w: ActivePower,
    pub rtg_max_wh: Option<UnsignedScaled>,
    pub rtg_min_pf_over_excited: Option<PowerFactor>,
    pub rtg_min_pf_under_excited: Option<PowerFactor>,
    pub rtg_min_v: Option<UnsignedScaled>,
    pub rtg_normal_category: Option<u8>,
    pub rtg_v_nom: Option<UnsignedScaled>,
    /// `DERType`: 4 PV, 81 combined PV and storage, 82 storage ...
    pub der_type: u8,
    pub doe_modes_supported: u8,
    /// csipaus (v1.3 storage) VPPControlType bitmap: bit 0 opModStorageTargetW.
    pub vpp_modes_supported: Option<u8>,
}

/// `DERSettings` (derg), written by the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerSettings {
    pub href: Option<String>,
    pub subscribable: Option<u8>,
    pub modes_enabled: Option<u32>,
    /// `setESDelay` … `setESRandomDelay`.
    pub enter_service: EnterService,
    pub set_grad_w: u16,
    pub set_max_a: Option<UnsignedScaled>,
    pub set_max_ah: Option<UnsignedScaled>,
    pub set_max_charge_rate_va: Option<UnsignedScaled>,
    pub set_max_charge_rate_w: Option<ActivePower>,
    pub set_max_discharge_rate_va: Option<UnsignedScaled>,
    pub set_max_discharge_rate_w: Option<ActivePower>,
    pub set_max_v: Option<UnsignedScaled>,
    pub set_max_va: Option<UnsignedScaled>,
    pub set_max_var: Option<ReactivePower>,
    pub set_max_var_neg: Option<ReactivePower>,
    pub set_max_w: ActivePower,
    pub set_max_wh: Option<UnsignedScaled>,
    pub set_min_pf_over_excited: Option<PowerFactor>,
    pub set_min_pf_under_excited: Option<PowerFactor>,
    pub set_min_v: Option<UnsignedScaled>,
    pub set_soft_grad_w: Option<u16>,
    pub set_v_nom: Option<UnsignedScaled>,
    pub set_v_ref: Option<UnsignedScaled>,
    pub set_v_ref_ofs: Option<UnsignedScaled>,
    pub updated_time: i64,
    /// csipaus DOEControlType bitmap of the DOE modes enabled.
    pub doe_modes_enabled: Option<u8>,
    /// csipaus (v1.3 storage) VPPControlType bitmap enabled: bit 0 opModStorageTargetW.
    pub vpp_modes_enabled: Option<u8>,
    /// csipaus (v1.3 storage) `setMinWh`: the stored energy the battery keeps (it stops
    /// discharging there).
    pub set_min_wh: Option<UnsignedScaled>,
}

/// A status value with the time it was observed (`InverterStatusType`,
/// `OperationalModeStatusType`, `StorageModeStatusType`, `LocalControlModeStatusType`,
/// `ConnectStatusType` (value is HexBinary8 there), `StateOfChargeStatusType` (PerCent)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusValue<T> {
    pub date_time: i64,
    pub value: T,
}

/// `DERStatus` (ders), written by the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerStatus {
    pub href: Option<String>,
    pub subscribable: Option<u8>,
    /// HexBinary32 alarm bitmap.
    pub alarm_status: Option<u32>,
    /// ConnectStatusType bitmap: bit 0 connected, 1 available, 2 operating, 3 test, 4 fault.
    pub gen_connect_status: Option<StatusValue<u8>>,
    pub inverter_status: Option<StatusValue<u8>>,
    pub local_control_mode_status: Option<StatusValue<u8>>,
    /// String6.
    pub manufacturer_status: Option<StatusValue<String>>,
    pub operational_mode_status: Option<StatusValue<u8>>,
    pub reading_time: i64,
    /// Hundredths of a percent.
    pub state_of_charge_status: Option<StatusValue<u16>>,
    pub storage_mode_status: Option<StatusValue<u8>>,
    pub stor_connect_status: Option<StatusValue<u8>>,
}

/// `DERAvailability` (dera), written by the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerAvailability {
    pub href: Option<String>,
    pub subscribable: Option<u8>,
    pub availability_duration_s: Option<u32>,
    pub max_charge_duration_s: Option<u32>,
    pub reading_time: i64,
    pub reserve_charge_percent: Option<u16>,
    pub reserve_percent: Option<u16>,
    pub stat_var_avail: Option<ReactivePower>,
    pub stat_w_avail: Option<ActivePower>,
}

/// `MirrorUsagePoint` (mup).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorUsagePoint {
    pub href: Option<String>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    /// RoleFlagsType (HexBinary16): bit 0 isMirror, 1 isPremisesAggregationPoint
    /// (site), 2 isPEV, 3 isDER, 4 isRevenueQuality, 5 isDC, 6 isSubmeter.
    pub role_flags: u16,
    /// ServiceKind: 0 electricity.
    pub service_category_kind: u8,
    pub status: u8,
    pub device_lfdi: String,
    pub mirror_meter_readings: Vec<MirrorMeterReading>,
    pub post_rate_s: Option<u32>,
}

/// `MirrorMeterReading`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorMeterReading {
    pub href: Option<String>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    pub last_update_time: Option<i64>,
    pub mirror_reading_sets: Vec<MirrorReadingSet>,
    pub next_update_time: Option<i64>,
    pub reading: Option<Reading>,
    pub reading_type: Option<ReadingType>,
}

/// `ReadingType`: what a reading measures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadingType {
    pub href: Option<String>,
    pub accumulation_behaviour: Option<u8>,
    /// CommodityType: 1 electricity secondary metered.
    pub commodity: Option<u8>,
    /// DataQualifierType: 2 average, 8 maximum, 9 minimum, 12 normal.
    pub data_qualifier: Option<u8>,
    pub flow_direction: Option<u8>,
    pub interval_length_s: Option<u32>,
    /// KindType: 37 power, 12 demand...
    pub kind: Option<u8>,
    pub max_number_of_intervals: Option<u8>,
    /// PhaseCode: 0 none, 128 A, 64 B, 32 C, 129 AN, 65 BN, 33 CN...
    pub phase: Option<u8>,
    pub power_of_ten_multiplier: Option<i8>,
    pub sub_interval_length_s: Option<u32>,
    /// UomType: 38 W, 63 var, 29 V, 33 Hz, 61 VA, 65 cos(theta).
    pub uom: Option<u8>,
}

/// `MirrorReadingSet`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorReadingSet {
    pub href: Option<String>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    pub time_period: DateTimeInterval,
    pub readings: Vec<Reading>,
}

/// `Reading`: `value` × 10^ReadingType.powerOfTenMultiplier in ReadingType.uom.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reading {
    pub href: Option<String>,
    /// HexBinary16: bit 0 valid, 1 manually edited, 2 estimated using reference day,
    /// 3 estimated using linear interpolation, 4 questionable, 5 derived, 6 projected.
    pub quality_flags: Option<u16>,
    pub time_period: Option<DateTimeInterval>,
    pub tou_tier: Option<u8>,
    /// Int48.
    pub value: Option<i64>,
    pub local_id: Option<u16>,
}

/// `DERControlResponse`, POSTed to a DERControl's `replyTo`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerControlResponse {
    pub href: Option<String>,
    pub created_date_time: Option<i64>,
    pub end_device_lfdi: String,
    /// Response status (IEEE 2030.5 Table 27): 1 received, 2 started, 3 completed,
    /// 4 opted out, 5 opted in, 6 cancelled, 7 superseded, ...
    pub status: Option<u8>,
    /// mRID of the DERControl answered.
    pub subject: String,
}

/// `PriceResponse`, POSTed to a TimeTariffInterval's `replyTo`: the same fields as a
/// [`DerControlResponse`] (both are 2030.5 `Response`s), under its own root element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriceResponse(pub DerControlResponse);

/// `LogEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogEvent {
    pub href: Option<String>,
    pub created_date_time: i64,
    pub details: Option<String>,
    pub extended_data: Option<u32>,
    pub function_set: u8,
    pub log_event_code: u8,
    pub log_event_id: u16,
    pub log_event_pen: u32,
    pub profile_id: u8,
}

/// `Condition` of a conditional subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Condition {
    pub attribute_identifier: u8,
    pub lower_threshold: i64,
    pub upper_threshold: i64,
}

/// `Notification` (IEEE 2030.5 SubscriptionBase extension), POSTed by the server to
/// the client's notificationURI when a subscribed resource changes. The `Resource` it
/// may carry inline is not kept: csipd reads the resource again (a list notification
/// holds at most `limit` items, and the engine works on complete lists).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    /// The resource that changed (href as the server named it in the Subscription).
    pub subscribed_resource: String,
    /// `newResourceURI`: where the resource moved, if it did.
    pub new_resource_uri: Option<String>,
    /// 0 default; 1 subscription cancelled; 2 cancelled, resource moved; 3 cancelled,
    /// resource definition changed; 4 cancelled, resource deleted.
    pub status: u8,
    /// The Subscription this notification comes from (absolute URI).
    pub subscription_uri: String,
    /// The notification carried the resource (or list) inline.
    pub has_resource: bool,
}

/// `Subscription`, POSTed to the EndDevice's SubscriptionList.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    pub href: Option<String>,
    pub subscribed_resource: String,
    pub condition: Option<Condition>,
    /// 0 application/sep+xml, 1 application/sep-exi.
    pub encoding: u8,
    /// String16, e.g. "+S1".
    pub level: String,
    pub limit: u32,
    pub notification_uri: String,
}

// ---------------------------------------------------------------- Pricing (IEEE 2030.5 §10.6)

pub type TariffProfileList = List<TariffProfile>;
pub type RateComponentList = List<RateComponent>;
pub type TimeTariffIntervalList = List<TimeTariffInterval>;
pub type ConsumptionTariffIntervalList = List<ConsumptionTariffInterval>;

/// `TariffProfile` (tp): one tariff; its prices are in `currency` × 10^
/// `price_power_of_ten_multiplier` per unit of each RateComponent's ReadingType.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TariffProfile {
    pub href: Option<String>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    /// ISO 4217 numeric currency code (36 AUD, 840 USD).
    pub currency: Option<u16>,
    /// Power of ten of every price under this profile (e.g. -2: prices in cents).
    pub price_power_of_ten_multiplier: Option<i8>,
    /// Lower value = higher priority. Required; 0 when a server leaves it out.
    pub primacy: u8,
    pub rate_code: Option<String>,
    pub rate_component_list_link: Option<ListLink>,
    /// ServiceKind: 0 electricity. Required; 0 when a server leaves it out.
    pub service_category_kind: u8,
    /// csipaus extension of the reference CSIP-AUS v1.3 server: every TimeTariffInterval
    /// of every RateComponent in one list (each with a `RateComponentLink`). Not in the
    /// published csipaus schemas; when present it is the profile's interval source.
    pub combined_time_tariff_interval_list_link: Option<ListLink>,
}

/// `RateComponent` (rc): one part of a tariff (e.g. the import energy price); what is
/// priced is its ReadingType (flow direction, unit, power of ten).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateComponent {
    pub href: Option<String>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    pub active_time_tariff_interval_list_link: Option<ListLink>,
    /// Required by the schema; `None` when a server leaves it out (the component is
    /// then shown without a unit).
    pub reading_type_link: Option<Link>,
    /// RoleFlagsType (HexBinary16). Required; 0 when a server leaves it out.
    pub role_flags: u16,
    /// Required by the schema; a component without one has no prices.
    pub time_tariff_interval_list_link: Option<ListLink>,
}

/// `TimeTariffInterval` (tti): one priced time interval of a RateComponent, an event
/// (EventStatus, interval, randomisation) like a DERControl.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimeTariffInterval {
    pub href: Option<String>,
    pub reply_to: Option<String>,
    pub response_required: Option<u8>,
    pub mrid: String,
    pub description: Option<String>,
    pub version: Option<u16>,
    pub creation_time: i64,
    pub event_status: EventStatus,
    pub interval: DateTimeInterval,
    pub randomize_duration_s: Option<i16>,
    pub randomize_start_s: Option<i16>,
    pub consumption_tariff_interval_list_link: Option<ListLink>,
    /// TOUType. Required; 0 when a server leaves it out.
    pub tou_tier: u8,
    /// The RateComponent this interval prices (the reference server's combined list).
    pub rate_component_link: Option<Link>,
    /// csipaus `ConsumptionTariffIntervalListSummary`: the interval's price blocks
    /// inline (reference server); empty when absent.
    pub consumption_blocks: Vec<ConsumptionTariffInterval>,
}

/// `ConsumptionTariffInterval` (cti): one price block of a TimeTariffInterval: `price`
/// applies from `start_value` (units of the ReadingType) consumed in the billing period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumptionTariffInterval {
    pub href: Option<String>,
    /// ConsumptionBlockType: 1.. block number (0 not applicable).
    pub consumption_block: u8,
    /// Int32: currency × 10^TariffProfile.pricePowerOfTenMultiplier per unit.
    pub price: Option<i32>,
    /// UInt48.
    pub start_value: u64,
}

#[cfg(test)]
mod tests {
    use super::decimal;

    /// The decimal as a person writes it: 3000 × 10^-4 is "0.3".
    fn written(value: i64, pow10: i32) -> String {
        let digits = value.unsigned_abs().to_string();
        let sign = if value < 0 { "-" } else { "" };
        let shift = (-pow10) as usize;
        let padded = format!("{digits:0>width$}", width = shift + 1);
        let (int, frac) = padded.split_at(padded.len() - shift);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    }

    /// Every value × 10^multiplier prints as its decimal: no 0.30000000000000004 (what
    /// `3000.0 * 10f64.powi(-4)` gives) in the status JSON or a display.
    #[test]
    fn scaled_values_are_exact_decimals() {
        assert_eq!(
            3.0 * 10f64.powi(-1),
            0.30000000000000004,
            "the noise this avoids"
        );
        let mut checked = 0;
        for pow10 in -8..=0 {
            for value in (-200_000..=200_000).step_by(7) {
                let v = decimal(value, pow10);
                assert_eq!(v.to_string(), written(value, pow10), "{value}e{pow10}");
                checked += 1;
            }
        }
        assert!(checked > 500_000);
        assert_eq!(decimal(15, 2), 1500.0);
        assert_eq!(decimal(-7, 0), -7.0);
        // Beyond 10^22 (a price's powers add up): parsed, still the nearest f64.
        assert_eq!(decimal(3, -30), 3e-30);
        assert_eq!(
            decimal(i64::MAX, -4),
            "922337203685477.5807".parse::<f64>().unwrap()
        );
        // Out of range saturates, never panics.
        assert_eq!(decimal(5, 400), f64::INFINITY);
        assert_eq!(decimal(-5, 400), f64::NEG_INFINITY);
        assert_eq!(decimal(5, -400), 0.0);
    }

    #[test]
    fn dollars_become_cents_without_noise() {
        assert_eq!(0.07 * 100.0, 7.000000000000001, "the noise this avoids");
        for cents in -100_000..=100_000 {
            let dollars = decimal(cents, -2);
            assert_eq!(super::shift_decimal(dollars, 2), cents as f64, "{dollars}");
        }
        assert_eq!(super::shift_decimal(-0.042, 2), -4.2);
        assert_eq!(super::shift_decimal(f64::INFINITY, 2), f64::INFINITY);
    }
}
