//! SunSpec decoding: the model chain, register maps of the inverter and meter models csipd
//! uses, scale factors and "not implemented" values. Pure: takes register words, returns
//! values. No IO.
//!
//! Register offsets below count from the model's `ID` register (offset 0 = ID, 1 = L), as
//! in the SunSpec model definitions (pysunspec2 `sunspec2/models/json/model_<id>.json`).
//!
//! Sign conventions of the normalised readings:
//! - inverter `w`: positive = AC power delivered by the inverter (generation).
//! - meter `w`: positive = import from the grid at the site connection point, negative =
//!   export (the SunSpec meter convention). `invert_sign` on the device flips a meter whose
//!   CT is mounted backwards.
//! - `var`: positive = the device delivers reactive power (SunSpec convention, not
//!   altered).

use crate::schedule::ControlMode;
use std::collections::BTreeMap;
use std::fmt;

/// `"SunS"` as two registers, at the map's base address.
pub const SUNS_MARKER: [u16; 2] = [0x5375, 0x6e53];
/// Base addresses tried when none is configured, in this order (SunSpec spec order).
pub const DEFAULT_BASES: [u16; 3] = [40000, 0, 50000];
/// Model ID of the end marker.
pub const END_MODEL_ID: u16 = 0xFFFF;
/// A chain longer than this is treated as broken (real devices have < 20 models).
pub const MAX_MODELS: usize = 64;

/// Inverter AC measurement models, in order of preference.
pub const INVERTER_MODELS: [u16; 7] = [103, 102, 101, 113, 112, 111, 701];
/// Meter models, in order of preference.
pub const METER_MODELS: [u16; 8] = [203, 204, 202, 201, 213, 214, 212, 211];

/// Errors found in SunSpec data (not transport errors).
#[derive(Debug, Clone, PartialEq)]
pub enum SunSpecError {
    /// The registers at `base` are not `SunS`.
    NoMarker { base: u16, found: [u16; 2] },
    /// The chain ran past the 16-bit address space or beyond `MAX_MODELS`.
    BrokenChain { at: u16, reason: String },
    /// No base tried holds the `SunS` marker; `tried` says what each answered
    /// ("register 40000: exception 2; ...").
    NoMap { tried: String },
    /// A model block is shorter than the register the decoder needs.
    ShortModel {
        model: u16,
        len: usize,
        needed: usize,
    },
    /// The device has none of the models the caller needs.
    MissingModel {
        wanted: &'static str,
        present: Vec<u16>,
    },
    /// A value cannot be written because its scale factor is "not implemented".
    UnknownScaleFactor { model: u16, point: &'static str },
    /// A requested setpoint cannot be represented.
    OutOfRange { what: String },
}

impl fmt::Display for SunSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SunSpecError::NoMarker { base, found } => write!(
                f,
                "no SunSpec marker 'SunS' at register {base} (found 0x{:04x} 0x{:04x})",
                found[0], found[1]
            ),
            SunSpecError::NoMap { tried } => write!(
                f,
                "no SunSpec map found ({tried}); is it a SunSpec device, and is this its unit id?"
            ),
            SunSpecError::BrokenChain { at, reason } => {
                write!(f, "SunSpec model chain broken at register {at}: {reason}")
            }
            SunSpecError::ShortModel { model, len, needed } => write!(
                f,
                "SunSpec model {model} has {len} registers, decoder needs {needed}"
            ),
            SunSpecError::MissingModel { wanted, present } => {
                write!(
                    f,
                    "device has no {wanted} model (models present: {present:?})"
                )
            }
            SunSpecError::UnknownScaleFactor { model, point } => write!(
                f,
                "model {model} scale factor {point} is 'not implemented' (0x8000); refusing to write"
            ),
            SunSpecError::OutOfRange { what } => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for SunSpecError {}

/// One model in the device's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ModelRef {
    pub id: u16,
    /// Address of the model's ID register.
    pub start: u16,
    /// `L`: registers after ID and L.
    pub len: u16,
}

impl ModelRef {
    /// Registers to read for the whole model including ID and L.
    pub fn total_len(&self) -> u16 {
        self.len.saturating_add(2)
    }
    /// Absolute address of the register at `offset` (from ID).
    pub fn addr(&self, offset: u16) -> u16 {
        self.start.wrapping_add(offset)
    }
}

/// The result of a scan: base address and the model chain.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SunSpecMap {
    pub base: u16,
    pub models: Vec<ModelRef>,
    /// Set when the chain did not end with the end marker (0xFFFF 0x0000) but with
    /// something a device in the field does instead (an unreadable header, model id 0,
    /// a length running past the readable registers): what and where. The models
    /// before it are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_early: Option<String>,
}

/// Whether a device with models `ids` lets csipd apply `mode` (a DER function beyond
/// the limits): opModVoltVar with 126 or 705, opModVoltWatt with 132 or 706,
/// opModWattVar with 712, opModWattPF with 131, opModFreqDroop with 711,
/// opModFixedPFInjectW and opModFixedVar with 123 or 704, opModFixedPFAbsorbW with
/// 704 (123 has no setting while absorbing), opModTargetVar with 704 (123 has no
/// setting in var). False for every other mode: the limits,
/// connect and storage modes are answered by [`Controls`] and the coordinator.
pub fn models_offer(ids: &[u16], mode: ControlMode) -> bool {
    let models: &[u16] = match mode {
        ControlMode::VoltVar
        | ControlMode::VoltWatt
        | ControlMode::WattVar
        | ControlMode::WattPF
        | ControlMode::FreqWatt => super::curves::curve_models(mode),
        ControlMode::FixedPFInjectW | ControlMode::FixedPFAbsorbW => {
            super::reactive::pf_models(mode)
        }
        ControlMode::FixedVar => &super::reactive::VAR_MODELS,
        ControlMode::TargetVar => &super::reactive::TARGET_VAR_MODELS,
        ControlMode::FreqDroop => &super::freq_droop::FREQ_DROOP_MODELS,
        _ => &[],
    };
    models.iter().any(|m| ids.contains(m))
}

impl SunSpecMap {
    pub fn find(&self, id: u16) -> Option<&ModelRef> {
        self.models.iter().find(|m| m.id == id)
    }
    /// The first model of `preference` that the device has.
    pub fn find_any(&self, preference: &[u16]) -> Option<&ModelRef> {
        preference.iter().find_map(|id| self.find(*id))
    }
    pub fn ids(&self) -> Vec<u16> {
        self.models.iter().map(|m| m.id).collect()
    }
    /// Whether these models let csipd apply `mode` ([`models_offer`]).
    pub fn offers(&self, mode: ControlMode) -> bool {
        models_offer(&self.ids(), mode)
    }
    /// The SunSpec devices of the chain: each model 1 (common) starts a new device, as
    /// in a SolarEdge inverter whose chain holds the inverter (1, 103, 12x) and then its
    /// meter (1, 203) behind one unit id (SolarEdge SunSpec technical note). Models
    /// before the first model 1 belong to the first device. A chain with one model 1
    /// (or none) is one device. Each part keeps the chain's `base`.
    pub fn split_devices(&self) -> Vec<SunSpecMap> {
        let mut out: Vec<SunSpecMap> = Vec::new();
        for m in &self.models {
            let start_new = m.id == 1 && out.last().is_some_and(|d| d.find(1).is_some());
            if start_new || out.is_empty() {
                out.push(SunSpecMap {
                    base: self.base,
                    models: Vec::new(),
                    ended_early: None,
                });
            }
            if let Some(d) = out.last_mut() {
                d.models.push(*m);
            }
        }
        if out.is_empty() {
            out.push(SunSpecMap {
                base: self.base,
                ..Default::default()
            });
        }
        out
    }
}

/// Checks the two registers at the base for `SunS`.
pub fn check_marker(base: u16, regs: &[u16]) -> Result<(), SunSpecError> {
    let found = [
        regs.first().copied().unwrap_or(0),
        regs.get(1).copied().unwrap_or(0),
    ];
    if found == SUNS_MARKER {
        Ok(())
    } else {
        Err(SunSpecError::NoMarker { base, found })
    }
}

/// What one header of the chain says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStep {
    /// A model, and the address of the next header.
    Model { model: ModelRef, next: u16 },
    /// The end marker (model id 0xFFFF, length 0).
    End,
    /// The chain cannot go on from here (model id 0, 0xFFFF with a length, too many
    /// models, a length past register 65535): it ends, keeping the models before.
    Stop { reason: String },
}

/// One step of the chain walk: `header` is (ID, L) read at `at`, `seen` the number of
/// models found so far.
pub fn chain_step(at: u16, header: [u16; 2], seen: usize) -> ChainStep {
    let [id, len] = header;
    if id == END_MODEL_ID {
        if len == 0 {
            return ChainStep::End;
        }
        return ChainStep::Stop {
            reason: format!("end marker 0xFFFF with length {len}"),
        };
    }
    if seen >= MAX_MODELS {
        return ChainStep::Stop {
            reason: format!("more than {MAX_MODELS} models"),
        };
    }
    if id == 0 {
        return ChainStep::Stop {
            reason: "model id 0 instead of the end marker".into(),
        };
    }
    let next = u32::from(at) + 2 + u32::from(len);
    if next > 0xFFFE {
        return ChainStep::Stop {
            reason: format!("model {id} with length {len} runs past register 65535"),
        };
    }
    ChainStep::Model {
        model: ModelRef { id, start: at, len },
        next: next as u16,
    }
}

/// What an inverter's chain lets csipd control, from the models it has (SunSpec 123
/// immediate controls, 704 DER AC controls, 124 basic storage controls). A device
/// without them can be read but not limited: a capability fact, not an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Controls {
    /// The model carrying the active power limit (704 preferred, else 123), if any.
    pub active_power_limit_model: Option<u16>,
    /// Connect / disconnect (model 123 `Conn`).
    pub connect: bool,
    /// Charge rate limit (model 124 `InWRte`).
    pub charge_limit: bool,
    /// The inverter settings it offers ([`ControlMode::bit`] mask, see
    /// [`models_offer`]): volt-var, volt-watt, fixed power factor, fixed var.
    pub inverter_modes: u32,
    /// Enter-service settings (model 703, the utility's `setES*`).
    pub enter_service: bool,
}

impl Controls {
    /// The controls of a device with models `ids`.
    pub fn of_models(ids: impl IntoIterator<Item = u16>) -> Controls {
        let ids: Vec<u16> = ids.into_iter().collect();
        Controls {
            active_power_limit_model: [704, 123].into_iter().find(|m| ids.contains(m)),
            connect: ids.contains(&123),
            charge_limit: ids.contains(&124),
            enter_service: ids.contains(&703),
            inverter_modes: ControlMode::ALL
                .into_iter()
                .filter(|m| models_offer(&ids, *m))
                .fold(0, |acc, m| acc | m.bit()),
        }
    }

    /// Whether the device offers the inverter setting `mode` (see [`models_offer`]).
    pub fn offers(&self, mode: ControlMode) -> bool {
        self.inverter_modes & mode.bit() != 0
    }
    /// The power of the device can be limited (123 or 704).
    pub fn can_limit_power(&self) -> bool {
        self.active_power_limit_model.is_some()
    }
}

// ---------------------------------------------------------------------------------------
// Register access with SunSpec "not implemented" rules.

/// A model's registers, from its ID register on.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    pub model: u16,
    pub regs: &'a [u16],
}

impl<'a> Block<'a> {
    pub fn new(model: u16, regs: &'a [u16]) -> Self {
        Block { model, regs }
    }
    fn word(&self, off: usize) -> Option<u16> {
        self.regs.get(off).copied()
    }
    fn words<const N: usize>(&self, off: usize) -> Option<[u16; N]> {
        let s = self.regs.get(off..off + N)?;
        let mut out = [0u16; N];
        out.copy_from_slice(s);
        Some(out)
    }
    /// uint16 / enum16 / bitfield16: 0xFFFF = not implemented.
    pub fn u16(&self, off: usize) -> Option<u16> {
        self.word(off).filter(|v| *v != 0xFFFF)
    }
    /// int16: 0x8000 = not implemented.
    pub fn i16(&self, off: usize) -> Option<i16> {
        self.word(off).filter(|v| *v != 0x8000).map(|v| v as i16)
    }
    /// sunssf: 0x8000 = not implemented; SunSpec allows -10..=10.
    pub fn sf(&self, off: usize) -> Option<i16> {
        self.i16(off).filter(|v| (-10..=10).contains(v))
    }
    /// acc32: 0 means not accumulated; kept as a number (a lifetime counter).
    pub fn acc32(&self, off: usize) -> Option<u32> {
        self.words::<2>(off)
            .map(|[h, l]| (u32::from(h) << 16) | u32::from(l))
    }
    /// uint32 / bitfield32 / enum32: 0xFFFFFFFF = not implemented.
    pub fn u32(&self, off: usize) -> Option<u32> {
        self.acc32(off).filter(|v| *v != 0xFFFF_FFFF)
    }
    /// int32: 0x80000000 = not implemented.
    pub fn i32(&self, off: usize) -> Option<i32> {
        self.acc32(off)
            .filter(|v| *v != 0x8000_0000)
            .map(|v| v as i32)
    }
    /// uint64: all ones = not implemented; acc64: a counter.
    pub fn u64(&self, off: usize) -> Option<u64> {
        self.words::<4>(off)
            .map(|w| w.iter().fold(0u64, |acc, x| (acc << 16) | u64::from(*x)))
            .filter(|v| *v != u64::MAX)
    }
    /// float32: NaN = not implemented (infinities are refused too).
    pub fn f32(&self, off: usize) -> Option<f64> {
        self.acc32(off)
            .map(f32::from_bits)
            .filter(|v| v.is_finite())
            .map(f64::from)
    }
    /// Scaled value: raw × 10^sf; unknown when either is unknown.
    pub fn scaled_u16(&self, off: usize, sf_off: usize) -> Option<f64> {
        scale(self.u16(off).map(f64::from), self.sf(sf_off))
    }
    pub fn scaled_i16(&self, off: usize, sf_off: usize) -> Option<f64> {
        scale(self.i16(off).map(f64::from), self.sf(sf_off))
    }
    pub fn scaled_acc32(&self, off: usize, sf_off: usize) -> Option<f64> {
        scale(self.acc32(off).map(f64::from), self.sf(sf_off))
    }
    pub fn scaled_u32(&self, off: usize, sf_off: usize) -> Option<f64> {
        scale(self.u32(off).map(f64::from), self.sf(sf_off))
    }
    pub fn scaled_u64(&self, off: usize, sf_off: usize) -> Option<f64> {
        scale(self.u64(off).map(|v| v as f64), self.sf(sf_off))
    }
    pub fn ensure_len(&self, needed: usize) -> Result<(), SunSpecError> {
        if self.regs.len() < needed {
            Err(SunSpecError::ShortModel {
                model: self.model,
                len: self.regs.len(),
                needed,
            })
        } else {
            Ok(())
        }
    }
}

/// raw × 10^sf, the exact decimal (357 × 10^-2 A is 3.57, not 3.5700000000000003:
/// `sep2::types::decimal`'s rule). Unknown scale factor → unknown value, never a guess.
pub fn scale(raw: Option<f64>, sf: Option<i16>) -> Option<f64> {
    let (raw, sf) = (raw?, i32::from(sf?));
    // Register values are whole numbers; a 64-bit counter beyond 2^53 is not exact anyway.
    Some(
        if raw.fract() == 0.0 && raw.abs() < 9_007_199_254_740_992.0 {
            crate::sep2::types::decimal(raw as i64, sf)
        } else {
            raw * 10f64.powi(sf)
        },
    )
}

// ---------------------------------------------------------------------------------------
// Normalised readings.

/// Per-phase AC values (phase A, B, C = L1, L2, L3).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PhaseValues {
    pub w: Option<f64>,
    pub var: Option<f64>,
    pub va: Option<f64>,
    /// Phase-to-neutral voltage.
    pub v: Option<f64>,
    pub a: Option<f64>,
}

/// AC measurements of one device.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AcValues {
    pub w: Option<f64>,
    pub var: Option<f64>,
    pub va: Option<f64>,
    /// Total current.
    pub a: Option<f64>,
    /// Average phase-to-neutral voltage (or the single one).
    pub v: Option<f64>,
    pub hz: Option<f64>,
    pub phases: [PhaseValues; 3],
}

/// Inverter operating state, from 10x/11x `St` or 701 `InvSt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum OperatingState {
    Off,
    Sleeping,
    Starting,
    /// Producing normally (MPPT / RUNNING).
    Running,
    Throttled,
    ShuttingDown,
    Fault,
    Standby,
    Other(u16),
}

/// Nameplate ratings (model 120 or 702).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Nameplate {
    pub w_rtg_w: Option<f64>,
    pub va_rtg_va: Option<f64>,
    pub var_rtg_var: Option<f64>,
    pub a_rtg_a: Option<f64>,
    /// Storage ratings (120 WHRtg/MaxChaRte/MaxDisChaRte, 702 WChaRteMaxRtg/
    /// WDisChaRteMaxRtg): energy, Wh; charge and discharge rates, W.
    pub wh_rtg_wh: Option<f64>,
    pub max_charge_rate_w: Option<f64>,
    pub max_discharge_rate_w: Option<f64>,
    /// Minimum power factor (cos φ, 0..1) while injecting vars (over-excited: 120
    /// PFRtgQ1, 702 WOvrExtRtgPF) and while absorbing them (under-excited: 120 PFRtgQ4,
    /// 702 WUndExtRtgPF).
    pub min_pf_over_excited: Option<f64>,
    pub min_pf_under_excited: Option<f64>,
}

/// Basic settings (model 121 or 702).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Settings {
    pub w_max_w: Option<f64>,
    pub va_max_va: Option<f64>,
    pub v_ref_v: Option<f64>,
}

/// The active power limit as the device reports it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LimitState {
    /// Model carrying the control (123 or 704).
    pub model: u16,
    pub enabled: Option<bool>,
    pub limit_pct: Option<f64>,
    pub revert_s: Option<u32>,
    /// Model 123 `Conn`: the commanded connect state.
    pub conn_commanded: Option<bool>,
}

/// A storage inverter's charge controls and state (model 124, basic storage controls).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StorageState {
    /// WChaMax: the charge rate InWRte is a percentage of.
    pub w_cha_max_w: Option<f64>,
    /// StorCtl_Mod bit 0: the charge limit (InWRte) is in force.
    pub charge_limited: Option<bool>,
    /// InWRte: maximum charge rate, % of WChaMax.
    pub charge_limit_pct: Option<f64>,
    /// InOutWRte_RvrtTms: seconds before the rates revert without a refresh (0 = never).
    pub revert_s: Option<u16>,
    /// ChaState: state of charge, % of AhrRtg.
    pub soc_pct: Option<f64>,
    /// MinRsvPct: the reserve the battery keeps, % of its capacity.
    pub min_reserve_pct: Option<f64>,
    /// Model 713 WHRtg: the battery's energy rating, Wh.
    pub capacity_wh: Option<f64>,
}

impl StorageState {
    /// The charge limit in force, in watts (`None` when not limited or unknown).
    pub fn charge_limit_w(&self) -> Option<f64> {
        if self.charge_limited != Some(true) {
            return None;
        }
        Some(self.charge_limit_pct? / 100.0 * self.w_cha_max_w?)
    }
}

/// Normalised inverter reading.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct InverterReading {
    /// The measurement model decoded (101-103, 111-113 or 701).
    pub model: u16,
    pub ac: AcValues,
    /// Lifetime AC energy delivered.
    pub energy_wh: Option<f64>,
    pub state: Option<OperatingState>,
    /// Connected to the grid (701 ConnSt, else 122 PVConn bit 0, else 123 Conn).
    pub connected: Option<bool>,
    pub nameplate: Nameplate,
    pub settings: Settings,
    pub limit: Option<LimitState>,
    /// Storage controls (model 124), for a battery inverter that has them.
    pub storage: Option<StorageState>,
    /// What csipd can control on this inverter (from the models it has).
    pub controls: Controls,
    /// Off, sleeping, in standby or in fault (`St`/`InvSt`): its AC values are not
    /// measurements. Power counts as 0 W and voltage and frequency are left out
    /// (`None`), so they never pull a site average down (a sleeping inverter's 0 V
    /// halved the DER voltage reported to the utility: open-dynamic-export#103).
    pub idle: bool,
    /// The inverter's event bits (`Evt1`/`Evt2` of 101-103/111-113, `Alrm` of 701);
    /// `None` when the model leaves them not implemented.
    pub events: Option<InverterEvents>,
}

/// An inverter's SunSpec event bits as last read. `evt1` is model 101-103/111-113
/// `Evt1` or model 701 `Alrm`: the two share bits 0-15 (0 GROUND_FAULT, 1 DC_OVER_VOLT,
/// 2 AC_DISCONNECT, 3 DC_DISCONNECT, 4 GRID_DISCONNECT, 5 CABINET_OPEN, 6
/// MANUAL_SHUTDOWN, 7 OVER_TEMP, 8 OVER_FREQUENCY, 9 UNDER_FREQUENCY, 10 AC_OVER_VOLT,
/// 11 AC_UNDER_VOLT, 12 BLOWN_STRING_FUSE, 13 UNDER_TEMP, 14 MEMORY_LOSS, 15
/// HW_TEST_FAILURE; 701 adds 16 MANUFACTURER_ALRM). `evt2` is 1xx `Evt2` (all bits
/// reserved by SunSpec; kept so a vendor's use is still reported), 0 for 701. Source:
/// pysunspec2's model_103.json, model_113.json, model_701.json.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InverterEvents {
    pub evt1: u32,
    pub evt2: u32,
}

impl InverterEvents {
    /// SunSpec's name of `Evt1`/`Alrm` bit `bit` (`None` for a reserved bit).
    pub fn evt1_name(bit: u8) -> Option<&'static str> {
        const NAMES: [&str; 17] = [
            "GROUND_FAULT",
            "DC_OVER_VOLT",
            "AC_DISCONNECT",
            "DC_DISCONNECT",
            "GRID_DISCONNECT",
            "CABINET_OPEN",
            "MANUAL_SHUTDOWN",
            "OVER_TEMP",
            "OVER_FREQUENCY",
            "UNDER_FREQUENCY",
            "AC_OVER_VOLT",
            "AC_UNDER_VOLT",
            "BLOWN_STRING_FUSE",
            "UNDER_TEMP",
            "MEMORY_LOSS",
            "HW_TEST_FAILURE",
            "MANUFACTURER_ALRM",
        ];
        NAMES.get(usize::from(bit)).copied()
    }
}

/// The event bits of an inverter measurement block: 1xx `Evt1`/`Evt2` (at 40/42 in
/// 101-103, 50/52 in 111-113), 701 `Alrm` (at 6). A block too short for them, or with
/// `Evt1`/`Alrm` not implemented (0xFFFFFFFF), has none.
fn decode_events(b: Block) -> Option<InverterEvents> {
    let (evt1, evt2) = match b.model {
        101..=103 => (40, Some(42)),
        111..=113 => (50, Some(52)),
        701 => (6, None),
        _ => return None,
    };
    Some(InverterEvents {
        evt1: b.u32(evt1)?,
        evt2: evt2.and_then(|off| b.u32(off)).unwrap_or(0),
    })
}

/// Normalised meter reading. `ac.w` > 0 = import at the connection point.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MeterReading {
    pub model: u16,
    pub ac: AcValues,
    /// Lifetime energy exported to the grid.
    pub export_wh: Option<f64>,
    /// Lifetime energy imported from the grid.
    pub import_wh: Option<f64>,
}

/// Register blocks of one device, by model id (each from its ID register).
pub type Blocks = BTreeMap<u16, Vec<u16>>;

fn avg(vals: &[Option<f64>]) -> Option<f64> {
    let known: Vec<f64> = vals.iter().flatten().copied().collect();
    if known.is_empty() {
        None
    } else {
        Some(known.iter().sum::<f64>() / known.len() as f64)
    }
}

fn st_10x(v: u16) -> OperatingState {
    match v {
        1 => OperatingState::Off,
        2 => OperatingState::Sleeping,
        3 => OperatingState::Starting,
        4 => OperatingState::Running,
        5 => OperatingState::Throttled,
        6 => OperatingState::ShuttingDown,
        7 => OperatingState::Fault,
        8 => OperatingState::Standby,
        o => OperatingState::Other(o),
    }
}

fn st_701(v: u16) -> OperatingState {
    match v {
        0 => OperatingState::Off,
        1 => OperatingState::Sleeping,
        2 => OperatingState::Starting,
        3 => OperatingState::Running,
        4 => OperatingState::Throttled,
        5 => OperatingState::ShuttingDown,
        6 => OperatingState::Fault,
        7 => OperatingState::Standby,
        o => OperatingState::Other(o),
    }
}

/// Models 101/102/103 (same layout; 101/102 leave phases B/C not implemented).
fn decode_inverter_int(
    b: Block,
) -> Result<(AcValues, Option<f64>, Option<OperatingState>), SunSpecError> {
    b.ensure_len(40)?;
    // offsets from model_103.json
    let (a_sf, v_sf, w_sf, hz_sf, va_sf, var_sf, wh_sf) = (6, 13, 15, 17, 19, 21, 26);
    let mut ac = AcValues {
        a: b.scaled_u16(2, a_sf),
        w: b.scaled_i16(14, w_sf),
        hz: b.scaled_u16(16, hz_sf),
        va: b.scaled_i16(18, va_sf),
        var: b.scaled_i16(20, var_sf),
        ..Default::default()
    };
    for (i, p) in ac.phases.iter_mut().enumerate() {
        p.a = b.scaled_u16(3 + i, a_sf);
        p.v = b.scaled_u16(10 + i, v_sf);
    }
    ac.v = avg(&[ac.phases[0].v, ac.phases[1].v, ac.phases[2].v]);
    if b.model == 101 {
        ac.phases[0].w = ac.w;
        ac.phases[0].var = ac.var;
        ac.phases[0].va = ac.va;
    }
    let energy = b.scaled_acc32(24, wh_sf);
    let state = b.u16(38).map(st_10x);
    Ok((ac, energy, state))
}

/// Models 111/112/113 (float32, no scale factors).
fn decode_inverter_float(
    b: Block,
) -> Result<(AcValues, Option<f64>, Option<OperatingState>), SunSpecError> {
    b.ensure_len(50)?;
    // offsets from model_113.json
    let mut ac = AcValues {
        a: b.f32(2),
        w: b.f32(22),
        hz: b.f32(24),
        va: b.f32(26),
        var: b.f32(28),
        ..Default::default()
    };
    for (i, p) in ac.phases.iter_mut().enumerate() {
        p.a = b.f32(4 + 2 * i);
        p.v = b.f32(16 + 2 * i);
    }
    ac.v = avg(&[ac.phases[0].v, ac.phases[1].v, ac.phases[2].v]);
    if b.model == 111 {
        ac.phases[0].w = ac.w;
        ac.phases[0].var = ac.var;
        ac.phases[0].va = ac.va;
    }
    Ok((ac, b.f32(32), b.u16(48).map(st_10x)))
}

/// AC values, energy, operating state and (701 only) connection state.
type Decoded = (AcValues, Option<f64>, Option<OperatingState>, Option<bool>);

/// Model 701 (DER AC measurement). Returns also ConnSt.
fn decode_701(b: Block) -> Result<Decoded, SunSpecError> {
    b.ensure_len(123)?;
    // offsets from model_701.json
    let (a_sf, v_sf, hz_sf, w_sf, va_sf, var_sf, wh_sf) = (113, 114, 115, 116, 118, 119, 120);
    let mut ac = AcValues {
        w: b.scaled_i16(10, w_sf),
        va: b.scaled_i16(11, va_sf),
        var: b.scaled_i16(12, var_sf),
        a: scale(b.i16(14).map(f64::from), b.sf(a_sf)),
        v: b.scaled_u16(16, v_sf),
        hz: b.scaled_u32(17, hz_sf),
        ..Default::default()
    };
    // per-phase groups start at WL1 (41), WL2 (64), WL3 (87): W, VA, Var, PF, A, VLL, VLN
    for (i, start) in [41usize, 64, 87].into_iter().enumerate() {
        let p = &mut ac.phases[i];
        p.w = b.scaled_i16(start, w_sf);
        p.va = b.scaled_i16(start + 1, va_sf);
        p.var = b.scaled_i16(start + 2, var_sf);
        p.a = b.scaled_i16(start + 4, a_sf);
        p.v = b.scaled_u16(start + 6, v_sf);
    }
    let energy = b.scaled_u64(19, wh_sf);
    let state = b.u16(4).map(st_701);
    let conn = b.u16(5).map(|v| v == 1);
    Ok((ac, energy, state, conn))
}

/// A power factor rating as cos φ in (0, 1]; anything else is not a rating.
fn power_factor(pf: Option<f64>) -> Option<f64> {
    pf.map(f64::abs).filter(|p| *p > 0.0 && *p <= 1.0)
}

fn decode_nameplate(blocks: &Blocks) -> Nameplate {
    if let Some(r) = blocks.get(&120) {
        let b = Block::new(120, r);
        return Nameplate {
            w_rtg_w: b.scaled_u16(3, 4),
            va_rtg_va: b.scaled_u16(5, 6),
            var_rtg_var: b.scaled_i16(7, 11),
            a_rtg_a: b.scaled_u16(12, 13),
            wh_rtg_wh: b.scaled_u16(19, 20).filter(|w| *w > 0.0),
            max_charge_rate_w: b.scaled_u16(23, 24).filter(|w| *w > 0.0),
            max_discharge_rate_w: b.scaled_u16(25, 26).filter(|w| *w > 0.0),
            // Some devices store Q4 as a negative cos φ: its magnitude is the rating.
            min_pf_over_excited: power_factor(b.scaled_i16(14, 18)),
            min_pf_under_excited: power_factor(b.scaled_i16(17, 18)),
        };
    }
    if let Some(r) = blocks.get(&702) {
        let b = Block::new(702, r);
        // W_SF 45, PF_SF 46, VA_SF 47, Var_SF 48, V_SF 49, A_SF 50
        return Nameplate {
            w_rtg_w: b.scaled_u16(2, 45),
            va_rtg_va: b.scaled_u16(7, 47),
            var_rtg_var: b.scaled_u16(8, 48),
            a_rtg_a: b.scaled_u16(17, 50),
            wh_rtg_wh: None,
            max_charge_rate_w: b.scaled_u16(10, 45).filter(|w| *w > 0.0),
            max_discharge_rate_w: b.scaled_u16(11, 45).filter(|w| *w > 0.0),
            min_pf_over_excited: power_factor(b.scaled_u16(4, 46)),
            min_pf_under_excited: power_factor(b.scaled_u16(6, 46)),
        };
    }
    Nameplate::default()
}

fn decode_settings(blocks: &Blocks) -> Settings {
    if let Some(r) = blocks.get(&121) {
        let b = Block::new(121, r);
        return Settings {
            w_max_w: b.scaled_u16(2, 22),
            v_ref_v: b.scaled_u16(3, 23),
            va_max_va: b.scaled_u16(7, 26),
        };
    }
    if let Some(r) = blocks.get(&702) {
        let b = Block::new(702, r);
        return Settings {
            w_max_w: b.scaled_u16(26, 45),
            va_max_va: b.scaled_u16(31, 47),
            v_ref_v: b.scaled_u16(38, 49),
        };
    }
    Settings::default()
}

/// Active power limit state from 704 (preferred) or 123.
pub fn decode_limit(blocks: &Blocks) -> Option<LimitState> {
    let conn = blocks
        .get(&123)
        .and_then(|r| Block::new(123, r).u16(m123::CONN))
        .map(|v| v == 1);
    if let Some(r) = blocks.get(&704) {
        let b = Block::new(704, r);
        return Some(LimitState {
            model: 704,
            enabled: b.u16(m704::WMAXLIMPCT_ENA).map(|v| v == 1),
            limit_pct: b.scaled_u16(m704::WMAXLIMPCT, m704::WMAXLIMPCT_SF),
            revert_s: b.u32(m704::WMAXLIMPCT_RVRT_TMS),
            conn_commanded: conn,
        });
    }
    let r = blocks.get(&123)?;
    let b = Block::new(123, r);
    Some(LimitState {
        model: 123,
        enabled: b.u16(m123::WMAXLIM_ENA).map(|v| v == 1),
        limit_pct: b.scaled_u16(m123::WMAXLIMPCT, m123::WMAXLIMPCT_SF),
        revert_s: b.u16(m123::WMAXLIMPCT_RVRT_TMS).map(u32::from),
        conn_commanded: conn,
    })
}

/// Decodes an inverter from its model blocks.
pub fn decode_inverter(blocks: &Blocks) -> Result<InverterReading, SunSpecError> {
    let model = INVERTER_MODELS
        .iter()
        .copied()
        .find(|id| blocks.contains_key(id))
        .ok_or_else(|| SunSpecError::MissingModel {
            wanted: "inverter measurement (101-103, 111-113, 701)",
            present: blocks.keys().copied().collect(),
        })?;
    let regs = &blocks[&model];
    let b = Block::new(model, regs);
    let (ac, energy_wh, state, conn701) = match model {
        101..=103 => {
            let (a, e, s) = decode_inverter_int(b)?;
            (a, e, s, None)
        }
        111..=113 => {
            let (a, e, s) = decode_inverter_float(b)?;
            (a, e, s, None)
        }
        _ => decode_701(b)?,
    };
    let conn122 = blocks
        .get(&122)
        .and_then(|r| Block::new(122, r).u16(2))
        .map(|bits| bits & 1 == 1);
    let limit = decode_limit(blocks);
    let idle = matches!(
        state,
        Some(
            OperatingState::Off
                | OperatingState::Sleeping
                | OperatingState::Standby
                | OperatingState::Fault
        )
    );
    let mut ac = ac;
    if idle {
        zero_power(&mut ac);
    }
    drop_non_measurements(&mut ac);
    let connected = conn701
        .or(conn122)
        .or(limit.as_ref().and_then(|l| l.conn_commanded));
    Ok(InverterReading {
        model,
        ac,
        energy_wh,
        state,
        connected,
        nameplate: decode_nameplate(blocks),
        settings: decode_settings(blocks),
        limit,
        storage: decode_storage(blocks),
        controls: Controls::of_models(blocks.keys().copied()),
        idle,
        events: decode_events(b),
    })
}

/// An idle inverter's output: 0 W, 0 var, 0 VA, 0 A where the device has the point,
/// 0 W in any case; voltage and frequency unknown (an idle device's voltage is not the
/// grid's).
fn zero_power(ac: &mut AcValues) {
    let zero = |v: &mut Option<f64>| *v = v.map(|_| 0.0);
    ac.w = Some(0.0);
    zero(&mut ac.var);
    zero(&mut ac.va);
    zero(&mut ac.a);
    ac.v = None;
    ac.hz = None;
    for p in ac.phases.iter_mut() {
        zero(&mut p.w);
        zero(&mut p.var);
        zero(&mut p.va);
        zero(&mut p.a);
        p.v = None;
    }
}

/// 0 V and 0 Hz are what an idle or disconnected device shows, never a grid that is
/// up: left out (`None`) so that averages and reports use real measurements only.
/// Not-implemented values are already `None` (see [`Block`]).
pub fn drop_non_measurements(ac: &mut AcValues) {
    let positive = |v: &mut Option<f64>| *v = v.filter(|x| *x > 0.0);
    positive(&mut ac.hz);
    for p in ac.phases.iter_mut() {
        positive(&mut p.v);
    }
    // The average of the phases that measure; a device without phase voltages keeps
    // its own total (if positive).
    let phase_v: Vec<f64> = ac.phases.iter().filter_map(|p| p.v).collect();
    if !phase_v.is_empty() {
        ac.v = Some(phase_v.iter().sum::<f64>() / phase_v.len() as f64);
    } else {
        positive(&mut ac.v);
    }
}

/// Charge controls and state of charge from model 124, the energy rating (and the
/// state of charge where 124 has none) from model 713 (DER storage capacity), when
/// either is present. Without 124 nothing is controllable (`Controls::charge_limit`).
pub fn decode_storage(blocks: &Blocks) -> Option<StorageState> {
    let capacity = blocks.get(&713).map(|regs| decode_713(regs));
    let mut st = match (blocks.get(&124), &capacity) {
        (Some(regs), _) => decode_124(regs),
        (None, Some(_)) => StorageState::default(),
        (None, None) => return None,
    };
    if let Some((capacity_wh, soc_pct)) = capacity {
        st.capacity_wh = capacity_wh;
        st.soc_pct = st.soc_pct.or(soc_pct);
    }
    Some(st)
}

/// Model 713 (DER storage capacity): WHRtg (Wh) and SoC (%), unimplemented `None`.
pub fn decode_713(regs: &[u16]) -> (Option<f64>, Option<f64>) {
    let b = Block::new(713, regs);
    (
        b.scaled_u16(m713::WHRTG, m713::WH_SF).filter(|w| *w > 0.0),
        b.scaled_u16(m713::SOC, m713::PCT_SF)
            .filter(|p| (0.0..=100.0).contains(p)),
    )
}

/// Model 124's registers (from its ID register on) decoded; unimplemented points `None`.
pub fn decode_124(regs: &[u16]) -> StorageState {
    let b = Block::new(124, regs);
    let bits = b.u16(m124::STORCTL_MOD);
    StorageState {
        w_cha_max_w: b.scaled_u16(m124::WCHAMAX, m124::WCHAMAX_SF),
        charge_limited: bits.map(|v| v & m124::STORCTL_CHARGE != 0),
        charge_limit_pct: b.scaled_i16(m124::INWRTE, m124::INOUTWRTE_SF),
        revert_s: b.u16(m124::INOUTWRTE_RVRT_TMS),
        soc_pct: b.scaled_u16(m124::CHASTATE, m124::CHASTATE_SF),
        min_reserve_pct: b.scaled_u16(m124::MINRSVPCT, m124::MINRSVPCT_SF),
        capacity_wh: None,
    }
}

/// Decodes a meter from its model blocks. `invert_sign` flips W and var (CT reversed).
pub fn decode_meter(blocks: &Blocks, invert_sign: bool) -> Result<MeterReading, SunSpecError> {
    let model = METER_MODELS
        .iter()
        .copied()
        .find(|id| blocks.contains_key(id))
        .ok_or_else(|| SunSpecError::MissingModel {
            wanted: "meter (201-204, 211-214)",
            present: blocks.keys().copied().collect(),
        })?;
    let b = Block::new(model, &blocks[&model]);
    let mut r = MeterReading {
        model,
        ..Default::default()
    };
    if model < 210 {
        b.ensure_len(55)?;
        // offsets from model_203.json (201-204 share the layout)
        let (a_sf, v_sf, hz_sf, w_sf, va_sf, var_sf, wh_sf) = (6, 15, 17, 22, 27, 32, 54);
        r.ac.a = b.scaled_i16(2, a_sf);
        r.ac.v = b.scaled_i16(7, v_sf);
        r.ac.hz = b.scaled_i16(16, hz_sf);
        r.ac.w = b.scaled_i16(18, w_sf);
        r.ac.va = b.scaled_i16(23, va_sf);
        r.ac.var = b.scaled_i16(28, var_sf);
        for (i, p) in r.ac.phases.iter_mut().enumerate() {
            p.a = b.scaled_i16(3 + i, a_sf);
            p.v = b.scaled_i16(8 + i, v_sf);
            p.w = b.scaled_i16(19 + i, w_sf);
            p.va = b.scaled_i16(24 + i, va_sf);
            p.var = b.scaled_i16(29 + i, var_sf);
        }
        r.export_wh = b.scaled_acc32(38, wh_sf);
        r.import_wh = b.scaled_acc32(46, wh_sf);
    } else {
        b.ensure_len(76)?;
        // offsets from model_213.json (211-214 share the layout)
        r.ac.a = b.f32(2);
        r.ac.v = b.f32(10);
        r.ac.hz = b.f32(26);
        r.ac.w = b.f32(28);
        r.ac.va = b.f32(36);
        r.ac.var = b.f32(44);
        for (i, p) in r.ac.phases.iter_mut().enumerate() {
            p.a = b.f32(4 + 2 * i);
            p.v = b.f32(12 + 2 * i);
            p.w = b.f32(30 + 2 * i);
            p.va = b.f32(38 + 2 * i);
            p.var = b.f32(46 + 2 * i);
        }
        r.export_wh = b.f32(60);
        r.import_wh = b.f32(68);
    }
    drop_non_measurements(&mut r.ac);
    if invert_sign {
        let flip = |v: &mut Option<f64>| *v = v.map(|x| -x);
        flip(&mut r.ac.w);
        flip(&mut r.ac.var);
        for p in r.ac.phases.iter_mut() {
            flip(&mut p.w);
            flip(&mut p.var);
        }
        std::mem::swap(&mut r.export_wh, &mut r.import_wh);
    }
    Ok(r)
}

/// Identity strings from model 1.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CommonInfo {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
    pub serial: String,
}

fn string_at(regs: &[u16], off: usize, len: usize) -> String {
    let bytes: Vec<u8> = regs
        .iter()
        .skip(off)
        .take(len)
        .flat_map(|w| w.to_be_bytes())
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Decodes model 1 (common).
pub fn decode_common(regs: &[u16]) -> CommonInfo {
    CommonInfo {
        manufacturer: string_at(regs, 2, 16),
        model: string_at(regs, 18, 16),
        version: string_at(regs, 42, 8),
        serial: string_at(regs, 50, 16),
    }
}

// ---------------------------------------------------------------------------------------
// Controls: which registers to write.

/// Model 123 (immediate controls) offsets from model_123.json.
pub mod m123 {
    pub const CONN: usize = 4;
    pub const WMAXLIMPCT: usize = 5;
    pub const WMAXLIMPCT_RVRT_TMS: usize = 7;
    pub const WMAXLIM_ENA: usize = 9;
    pub const WMAXLIMPCT_SF: usize = 23;
    pub const LEN: usize = 26;
}

/// Model 704 (DER AC controls) offsets from model_704.json.
pub mod m704 {
    pub const WMAXLIMPCT_ENA: usize = 14;
    pub const WMAXLIMPCT: usize = 15;
    pub const WMAXLIMPCT_RVRT: usize = 16;
    pub const WMAXLIMPCT_ENA_RVRT: usize = 17;
    pub const WMAXLIMPCT_RVRT_TMS: usize = 18;
    pub const WMAXLIMPCT_SF: usize = 54;
    pub const LEN: usize = 59;
}

/// Model 124 (basic storage controls) offsets from model_124.json.
pub mod m124 {
    pub const WCHAMAX: usize = 2;
    pub const STORCTL_MOD: usize = 5;
    pub const MINRSVPCT: usize = 7;
    pub const CHASTATE: usize = 8;
    pub const OUTWRTE: usize = 12;
    pub const INWRTE: usize = 13;
    pub const INOUTWRTE_RVRT_TMS: usize = 15;
    pub const WCHAMAX_SF: usize = 18;
    pub const MINRSVPCT_SF: usize = 21;
    pub const CHASTATE_SF: usize = 22;
    pub const INOUTWRTE_SF: usize = 25;
    pub const LEN: usize = 26;
    /// StorCtl_Mod bit 0 (CHARGE): InWRte limits charging.
    pub const STORCTL_CHARGE: u16 = 1;
    /// StorCtl_Mod bit 1 (DISCHARGE): OutWRte limits discharging.
    pub const STORCTL_DISCHARGE: u16 = 2;
}

/// Model 713 (DER storage capacity) offsets from model_713.json.
pub mod m713 {
    pub const WHRTG: usize = 2;
    pub const SOC: usize = 4;
    pub const WH_SF: usize = 7;
    pub const PCT_SF: usize = 8;
    pub const LEN: usize = 9;
}

/// One register write: `values` go to `address`, `address + 1`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterWrite {
    pub address: u16,
    pub values: Vec<u16>,
    /// The SunSpec point name, for logs and errors.
    pub point: &'static str,
}

/// What to do if csipd stops refreshing the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RevertPolicy {
    /// Seconds without a refresh before the inverter reverts. 0 = never revert.
    pub timeout_s: u32,
    /// The limit the inverter reverts to (honoured by model 704 only: model 123 reverts to
    /// the inverter's own default, usually its configured export limit or full power).
    pub fallback_pct: f64,
}

fn pct_raw(
    model: u16,
    pct: f64,
    sf: Option<i16>,
    point: &'static str,
) -> Result<u16, SunSpecError> {
    if !(0.0..=100.0).contains(&pct) || pct.is_nan() {
        return Err(SunSpecError::OutOfRange {
            what: format!("active power limit {pct}% is outside 0..=100"),
        });
    }
    let sf = sf.ok_or(SunSpecError::UnknownScaleFactor { model, point })?;
    let raw = (pct / 10f64.powi(i32::from(sf))).round();
    if !(0.0..=65534.0).contains(&raw) {
        return Err(SunSpecError::OutOfRange {
            what: format!(
                "active power limit {pct}% does not fit model {model} {point} with scale factor {sf}"
            ),
        });
    }
    Ok(raw as u16)
}

/// The writes that set an active power limit of `pct` % of WMax, given the current block
/// of the control model (123 or 704). Only the control registers themselves are written:
/// never ID, L or scale factors, and not the neighbouring window/ramp timers.
pub fn plan_active_power_limit(
    ctl: &ModelRef,
    regs: &[u16],
    pct: f64,
    revert: RevertPolicy,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    let b = Block::new(ctl.id, regs);
    let w = |off: usize, values: Vec<u16>, point| RegisterWrite {
        address: ctl.addr(off as u16),
        values,
        point,
    };
    match ctl.id {
        123 => {
            b.ensure_len(m123::LEN)?;
            let raw = pct_raw(123, pct, b.sf(m123::WMAXLIMPCT_SF), "WMaxLimPct_SF")?;
            let rvrt = u16::try_from(revert.timeout_s).map_err(|_| SunSpecError::OutOfRange {
                what: format!(
                    "revert timeout {} s exceeds model 123's 65535 s",
                    revert.timeout_s
                ),
            })?;
            // Revert timer first, then the value, then enable: the inverter never runs an
            // enabled limit without its revert timer.
            Ok(vec![
                w(m123::WMAXLIMPCT_RVRT_TMS, vec![rvrt], "WMaxLimPct_RvrtTms"),
                w(m123::WMAXLIMPCT, vec![raw], "WMaxLimPct"),
                w(m123::WMAXLIM_ENA, vec![1], "WMaxLim_Ena"),
            ])
        }
        704 => {
            b.ensure_len(m704::LEN)?;
            let sf = b.sf(m704::WMAXLIMPCT_SF);
            let raw = pct_raw(704, pct, sf, "WMaxLimPct_SF")?;
            let fallback = pct_raw(704, revert.fallback_pct, sf, "WMaxLimPct_SF")?;
            let t = revert.timeout_s;
            // WMaxLimPctRvrt and WMaxLimPctEnaRvrt are adjacent (16, 17), then RvrtTms
            // (18-19): one write of 4 registers covers exactly these three points.
            Ok(vec![
                w(
                    m704::WMAXLIMPCT_RVRT,
                    vec![fallback, 1, (t >> 16) as u16, t as u16],
                    "WMaxLimPctRvrt+WMaxLimPctEnaRvrt+WMaxLimPctRvrtTms",
                ),
                w(m704::WMAXLIMPCT, vec![raw], "WMaxLimPct"),
                w(m704::WMAXLIMPCT_ENA, vec![1], "WMaxLimPctEna"),
            ])
        }
        other => Err(SunSpecError::OutOfRange {
            what: format!("model {other} carries no active power limit"),
        }),
    }
}

/// Model 124's block for `what` (a charge limit, a storage target): an error naming
/// `what` when `ctl` is another model or the block is short.
fn model_124_block<'a>(
    ctl: &ModelRef,
    regs: &'a [u16],
    what: &str,
) -> Result<Block<'a>, SunSpecError> {
    if ctl.id != 124 {
        return Err(SunSpecError::OutOfRange {
            what: format!("{what} needs model 124, got model {}", ctl.id),
        });
    }
    let b = Block::new(124, regs);
    b.ensure_len(m124::LEN)?;
    Ok(b)
}

/// The writes that limit a storage inverter's charging to `limit_w` (model 124 InWRte,
/// a percentage of WChaMax, with StorCtl_Mod's CHARGE bit set), or lift the limit
/// (`None`: the CHARGE bit cleared, InWRte left as it was). The discharge bit is kept
/// as found. `revert_s` goes to InOutWRte_RvrtTms, so the limit lapses if csipd stops
/// refreshing it; it is written first, before the limit takes effect.
pub fn plan_charge_limit(
    ctl: &ModelRef,
    regs: &[u16],
    limit_w: Option<f64>,
    revert_s: u32,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    let b = model_124_block(ctl, regs, "a charge limit")?;
    let w = |off: usize, values: Vec<u16>, point| RegisterWrite {
        address: ctl.addr(off as u16),
        values,
        point,
    };
    // 0xFFFF (not implemented) reads as no bits set.
    let bits = b.u16(m124::STORCTL_MOD).unwrap_or(0);
    let Some(limit_w) = limit_w else {
        return Ok(vec![w(
            m124::STORCTL_MOD,
            vec![bits & !m124::STORCTL_CHARGE],
            "StorCtl_Mod",
        )]);
    };
    let max_w = b
        .scaled_u16(m124::WCHAMAX, m124::WCHAMAX_SF)
        .filter(|w| *w > 0.0)
        .ok_or_else(|| SunSpecError::OutOfRange {
            what: "model 124 WChaMax is not implemented or 0: a charge limit (a % of it) \
                   cannot be set"
                .into(),
        })?;
    if !limit_w.is_finite() || limit_w < 0.0 {
        return Err(SunSpecError::OutOfRange {
            what: format!("charge limit {limit_w} W must be 0 or more"),
        });
    }
    let pct = (100.0 * limit_w / max_w).min(100.0);
    let sf = b
        .sf(m124::INOUTWRTE_SF)
        .ok_or(SunSpecError::UnknownScaleFactor {
            model: 124,
            point: "InOutWRte_SF",
        })?;
    // Round down: the inverter never charges faster than asked.
    let raw = (pct / 10f64.powi(i32::from(sf)) + 1e-9).floor();
    if !(0.0..=32767.0).contains(&raw) {
        return Err(SunSpecError::OutOfRange {
            what: format!("charge limit {pct:.2}% does not fit InWRte with scale factor {sf}"),
        });
    }
    let rvrt = u16::try_from(revert_s).map_err(|_| SunSpecError::OutOfRange {
        what: format!("revert timeout {revert_s} s exceeds model 124's 65535 s"),
    })?;
    Ok(vec![
        w(m124::INOUTWRTE_RVRT_TMS, vec![rvrt], "InOutWRte_RvrtTms"),
        w(m124::INWRTE, vec![raw as i16 as u16], "InWRte"),
        w(
            m124::STORCTL_MOD,
            vec![bits | m124::STORCTL_CHARGE],
            "StorCtl_Mod",
        ),
    ])
}

/// The writes that make a storage inverter hold `target_w` (model 124; positive
/// discharges, negative charges), or end the target (`None`: StorCtl_Mod's CHARGE and
/// DISCHARGE bits cleared, the charge limit is written again afterwards). A target is
/// the window both rates close to: discharging at D % of WChaMax is OutWRte = D with
/// InWRte = -D (a negative charge rate is a minimum discharge), charging at C % is
/// InWRte = C with OutWRte = -C, both bits set (SunSpec 124's rate window, as battery
/// inverters implement forced charge and discharge). Magnitudes are rounded down, so the
/// battery never moves more power than asked. `revert_s` goes to InOutWRte_RvrtTms
/// first, so the target lapses if csipd stops refreshing it.
pub fn plan_storage_target(
    ctl: &ModelRef,
    regs: &[u16],
    target_w: Option<f64>,
    revert_s: u32,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    let b = model_124_block(ctl, regs, "a storage target")?;
    let w = |off: usize, values: Vec<u16>, point| RegisterWrite {
        address: ctl.addr(off as u16),
        values,
        point,
    };
    let both = m124::STORCTL_CHARGE | m124::STORCTL_DISCHARGE;
    let bits = b.u16(m124::STORCTL_MOD).unwrap_or(0);
    let Some(target_w) = target_w else {
        return Ok(vec![w(
            m124::STORCTL_MOD,
            vec![bits & !both],
            "StorCtl_Mod",
        )]);
    };
    if !target_w.is_finite() {
        return Err(SunSpecError::OutOfRange {
            what: format!("storage target {target_w} W is not a number"),
        });
    }
    let max_w = b
        .scaled_u16(m124::WCHAMAX, m124::WCHAMAX_SF)
        .filter(|w| *w > 0.0)
        .ok_or_else(|| SunSpecError::OutOfRange {
            what: "model 124 WChaMax is not implemented or 0: a storage target (a % of it) \
                   cannot be set"
                .into(),
        })?;
    let pct = (100.0 * target_w.abs() / max_w).min(100.0);
    let sf = b
        .sf(m124::INOUTWRTE_SF)
        .ok_or(SunSpecError::UnknownScaleFactor {
            model: 124,
            point: "InOutWRte_SF",
        })?;
    let raw = (pct / 10f64.powi(i32::from(sf)) + 1e-9).floor();
    if !(0.0..=32767.0).contains(&raw) {
        return Err(SunSpecError::OutOfRange {
            what: format!(
                "storage target {pct:.2}% does not fit OutWRte/InWRte with scale factor {sf}"
            ),
        });
    }
    let raw = raw as i16;
    let (out_rate, in_rate) = if target_w >= 0.0 {
        (raw, -raw)
    } else {
        (-raw, raw)
    };
    let rvrt = u16::try_from(revert_s).map_err(|_| SunSpecError::OutOfRange {
        what: format!("revert timeout {revert_s} s exceeds model 124's 65535 s"),
    })?;
    Ok(vec![
        w(m124::INOUTWRTE_RVRT_TMS, vec![rvrt], "InOutWRte_RvrtTms"),
        w(m124::OUTWRTE, vec![out_rate as u16], "OutWRte"),
        w(m124::INWRTE, vec![in_rate as u16], "InWRte"),
        w(m124::STORCTL_MOD, vec![bits | both], "StorCtl_Mod"),
    ])
}

/// The write that connects (true) or disconnects (false) the inverter (model 123 Conn).
pub fn plan_connect(
    ctl: &ModelRef,
    regs: &[u16],
    connect: bool,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    if ctl.id != 123 {
        return Err(SunSpecError::OutOfRange {
            what: format!("connect/disconnect needs model 123, got model {}", ctl.id),
        });
    }
    Block::new(123, regs).ensure_len(m123::LEN)?;
    Ok(vec![RegisterWrite {
        address: ctl.addr(m123::CONN as u16),
        values: vec![u16::from(connect)],
        point: "Conn",
    }])
}

/// A register that does not read back what was written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMismatch {
    /// The SunSpec point written (`WMaxLimPct`, `WMaxLim_Ena`, ...).
    pub point: &'static str,
    /// The Modbus register address.
    pub register: u32,
    pub wrote: u16,
    /// What the re-read block holds there; `None` when the block is shorter.
    pub read_back: Option<u16>,
}

impl fmt::Display for WriteMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at register {}: wrote {}, read back {:?}",
            self.point, self.register, self.wrote, self.read_back
        )
    }
}

impl std::error::Error for WriteMismatch {}

/// Checks that a re-read block holds what `writes` wrote. Returns the first mismatch.
pub fn verify_writes(
    ctl: &ModelRef,
    regs: &[u16],
    writes: &[RegisterWrite],
) -> Result<(), WriteMismatch> {
    for wr in writes {
        for (i, v) in wr.values.iter().enumerate() {
            let off = usize::from(wr.address.wrapping_sub(ctl.start)) + i;
            match regs.get(off) {
                Some(got) if got == v => {}
                got => {
                    return Err(WriteMismatch {
                        point: wr.point,
                        register: u32::from(wr.address) + i as u32,
                        wrote: *v,
                        read_back: got.copied(),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_walk_steps_and_end() {
        assert_eq!(
            chain_step(40002, [1, 66], 0),
            ChainStep::Model {
                model: ModelRef {
                    id: 1,
                    start: 40002,
                    len: 66
                },
                next: 40070
            }
        );
        assert_eq!(chain_step(40070, [0xFFFF, 0], 1), ChainStep::End);
        let stops = |s: ChainStep| matches!(s, ChainStep::Stop { .. });
        assert!(stops(chain_step(65000, [103, 1000], 1)));
        assert!(stops(chain_step(40002, [0, 0], 2)));
        assert!(stops(chain_step(40002, [0, 10], 0)));
        assert!(stops(chain_step(40002, [0xFFFF, 0xFFFF], 3)));
        assert!(stops(chain_step(40002, [1, 66], MAX_MODELS)));
    }

    #[test]
    fn a_chain_splits_into_devices_at_each_model_1() {
        let m = |id, start| ModelRef { id, start, len: 1 };
        let chain = SunSpecMap {
            base: 40000,
            models: vec![m(1, 2), m(103, 5), m(120, 8), m(1, 11), m(203, 14)],
            ended_early: None,
        };
        let parts = chain.split_devices();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].ids(), vec![1, 103, 120]);
        assert_eq!(parts[1].ids(), vec![1, 203]);
        assert_eq!(parts[1].base, 40000);
        let one = SunSpecMap {
            base: 0,
            models: vec![m(103, 2), m(1, 5), m(123, 8)],
            ended_early: None,
        };
        assert_eq!(one.split_devices().len(), 1);
        assert_eq!(SunSpecMap::default().split_devices().len(), 1);
    }

    #[test]
    fn offers_the_modes_its_models_carry() {
        use crate::schedule::ControlMode as M;
        let map = |ids: &[u16]| SunSpecMap {
            base: 40000,
            models: ids
                .iter()
                .enumerate()
                .map(|(i, id)| ModelRef {
                    id: *id,
                    start: 40002 + 100 * i as u16,
                    len: 10,
                })
                .collect(),
            ended_early: None,
        };
        let one = map(&[1, 103, 123, 126]);
        assert!(one.offers(M::VoltVar) && one.offers(M::FixedPFInjectW));
        assert!(one.offers(M::FixedVar));
        assert!(!one.offers(M::VoltWatt) && !one.offers(M::FixedPFAbsorbW));
        let seven = map(&[1, 701, 704, 705, 706]);
        for m in [
            M::VoltVar,
            M::VoltWatt,
            M::FixedPFInjectW,
            M::FixedPFAbsorbW,
            M::FixedVar,
        ] {
            assert!(seven.offers(m), "{m:?}");
        }
        assert!(!seven.offers(M::ExpLimW), "limits are answered elsewhere");
        assert!(!map(&[1, 103]).offers(M::FixedVar));
    }

    #[test]
    fn controls_come_from_the_models_present() {
        let c = Controls::of_models([1, 113, 120, 121]);
        assert!(!c.can_limit_power());
        assert!(!c.connect && !c.charge_limit);
        let c = Controls::of_models([1, 103, 123, 704, 124]);
        assert_eq!(c.active_power_limit_model, Some(704));
        assert!(c.connect && c.charge_limit);
    }

    #[test]
    fn inverter_settings_are_offered_by_their_1xx_or_7xx_model() {
        let map = |ids: &[u16]| SunSpecMap {
            base: 40000,
            models: ids
                .iter()
                .map(|id| ModelRef {
                    id: *id,
                    start: 0,
                    len: 0,
                })
                .collect(),
            ended_early: None,
        };
        let plain = map(&[1, 103, 120]);
        let old = map(&[1, 103, 123, 126]);
        let new = map(&[1, 701, 704, 705, 706]);
        for mode in ControlMode::ALL {
            assert!(!plain.offers(mode), "{mode:?}");
        }
        assert!(old.offers(ControlMode::VoltVar) && !old.offers(ControlMode::VoltWatt));
        assert!(old.offers(ControlMode::FixedPFInjectW) && old.offers(ControlMode::FixedVar));
        assert!(new.offers(ControlMode::VoltVar) && new.offers(ControlMode::VoltWatt));
        assert!(new.offers(ControlMode::FixedVar));
        // The absorbing power factor only on 704 (123 has one setting).
        assert!(new.offers(ControlMode::FixedPFAbsorbW));
        assert!(!old.offers(ControlMode::FixedPFAbsorbW));
        // Limits are not inverter settings.
        assert!(!new.offers(ControlMode::ExpLimW));
        let c = Controls::of_models(new.ids());
        assert!(c.offers(ControlMode::VoltWatt) && c.offers(ControlMode::FixedPFAbsorbW));
        assert!(!Controls::of_models(old.ids()).offers(ControlMode::VoltWatt));
    }

    #[test]
    fn marker() {
        assert!(check_marker(0, &SUNS_MARKER).is_ok());
        let e = check_marker(40000, &[0, 1]).unwrap_err();
        assert!(e.to_string().contains("40000"), "{e}");
    }

    #[test]
    fn not_implemented_values_are_unknown() {
        let regs = [103, 50, 0x8000, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF];
        let b = Block::new(103, &regs);
        assert_eq!(b.i16(2), None);
        assert_eq!(b.u16(3), None);
        assert_eq!(b.u32(3), None);
        assert_eq!(b.sf(2), None);
        let nan = f32::NAN.to_bits();
        let f = [(nan >> 16) as u16, nan as u16];
        assert_eq!(Block::new(113, &f).f32(0), None);
        // a known value with an unknown scale factor is unknown
        let r = [100, 0x8000];
        assert_eq!(Block::new(1, &r).scaled_u16(0, 1), None);
        let r = [1234, (-1i16) as u16];
        assert_eq!(Block::new(1, &r).scaled_u16(0, 1), Some(123.4));
    }

    fn block_103() -> Vec<u16> {
        let mut r = vec![0xFFFFu16; 52];
        r[0] = 103;
        r[1] = 50;
        r[2] = 215; // A
        r[3] = 72;
        r[4] = 71;
        r[5] = 72;
        r[6] = (-1i16) as u16; // A_SF
        r[10..13].fill(2401); // V
        r[13] = (-1i16) as u16;
        r[14] = 5000; // W
        r[15] = 0;
        r[16] = 5001; // Hz
        r[17] = (-2i16) as u16;
        r[18] = 5100;
        r[19] = 0;
        r[20] = (-300i16) as u16;
        r[21] = 0;
        r[22] = 0x8000;
        r[23] = 0x8000;
        r[24] = 0;
        r[25] = 12345;
        r[26] = 1;
        r[38] = 4;
        r
    }

    #[test]
    fn decodes_103() {
        let mut blocks = Blocks::new();
        blocks.insert(103, block_103());
        let inv = decode_inverter(&blocks).unwrap();
        assert_eq!(inv.model, 103);
        assert_eq!(inv.ac.w, Some(5000.0));
        assert_eq!(inv.ac.var, Some(-300.0));
        assert!((inv.ac.hz.unwrap() - 50.01).abs() < 1e-9);
        assert!((inv.ac.a.unwrap() - 21.5).abs() < 1e-9);
        assert!((inv.ac.phases[1].v.unwrap() - 240.1).abs() < 1e-9);
        assert_eq!(inv.energy_wh, Some(123450.0));
        assert_eq!(inv.state, Some(OperatingState::Running));
        assert_eq!(inv.limit, None);
        // Evt1 left 0xFFFFFFFF (not implemented): no events.
        assert_eq!(inv.events, None);
    }

    #[test]
    fn decodes_event_bits_of_103_and_701() {
        let mut r = block_103();
        // Evt1 = AC_OVER_VOLT (bit 10) and GROUND_FAULT (bit 0); Evt2 not implemented.
        r[40] = 0;
        r[41] = (1 << 10) | 1;
        let mut blocks = Blocks::new();
        blocks.insert(103, r);
        let inv = decode_inverter(&blocks).unwrap();
        assert_eq!(
            inv.events,
            Some(InverterEvents {
                evt1: (1 << 10) | 1,
                evt2: 0
            })
        );
        assert_eq!(InverterEvents::evt1_name(10), Some("AC_OVER_VOLT"));
        assert_eq!(InverterEvents::evt1_name(16), Some("MANUFACTURER_ALRM"));
        assert_eq!(InverterEvents::evt1_name(17), None);
        // 701 Alrm at offset 6 (MANUFACTURER_ALRM, bit 16: the high word).
        let mut r = vec![0u16; 155];
        r[0] = 701;
        r[1] = 153;
        r[6] = 1;
        r[7] = 0;
        let events = decode_events(Block::new(701, &r));
        assert_eq!(
            events,
            Some(InverterEvents {
                evt1: 1 << 16,
                evt2: 0
            })
        );
    }

    #[test]
    fn an_idle_inverter_reads_0_w_and_no_voltage_or_frequency() {
        // Sleeping (St 2) with 0 V and 0 Hz, as field input 14 (a Fronius at night).
        let mut r = block_103();
        r[10..13].fill(0);
        r[14] = 0;
        r[16] = 0;
        r[38] = 2;
        let mut blocks = Blocks::new();
        blocks.insert(103, r.clone());
        let inv = decode_inverter(&blocks).unwrap();
        assert!(inv.idle);
        assert_eq!(inv.state, Some(OperatingState::Sleeping));
        assert_eq!((inv.ac.w, inv.ac.v, inv.ac.hz), (Some(0.0), None, None));
        assert!(inv.ac.phases.iter().all(|p| p.v.is_none()));
        // In standby with stale numbers left in the registers: power still counts 0 W.
        r[14] = 1500;
        r[10..13].fill(2300);
        r[16] = 5000;
        r[38] = 8;
        blocks.insert(103, r.clone());
        let inv = decode_inverter(&blocks).unwrap();
        assert_eq!((inv.ac.w, inv.ac.v, inv.ac.hz), (Some(0.0), None, None));
        // Running, one phase at 0 V (not wired): left out of the average.
        r[38] = 4;
        r[12] = 0;
        blocks.insert(103, r);
        let inv = decode_inverter(&blocks).unwrap();
        assert!(!inv.idle);
        assert_eq!(inv.ac.w, Some(1500.0));
        assert!((inv.ac.v.unwrap() - 230.0).abs() < 1e-9, "{:?}", inv.ac.v);
        assert_eq!(inv.ac.phases[2].v, None);
        assert!((inv.ac.hz.unwrap() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn meter_sign_inversion() {
        let mut r = vec![0x8000u16; 107];
        r[0] = 203;
        r[1] = 105;
        r[18] = (-2000i16) as u16;
        r[22] = 0;
        r[38] = 0;
        r[39] = 10;
        r[46] = 0;
        r[47] = 20;
        r[54] = 3;
        let mut blocks = Blocks::new();
        blocks.insert(203, r);
        let m = decode_meter(&blocks, false).unwrap();
        assert_eq!(m.ac.w, Some(-2000.0));
        assert_eq!(m.export_wh, Some(10000.0));
        assert_eq!(m.ac.hz, None);
        let m = decode_meter(&blocks, true).unwrap();
        assert_eq!(m.ac.w, Some(2000.0));
        assert_eq!(m.import_wh, Some(10000.0));
    }

    #[test]
    fn plan_123_writes_only_control_points() {
        let ctl = ModelRef {
            id: 123,
            start: 40122,
            len: 24,
        };
        let mut regs = vec![0u16; 26];
        regs[m123::WMAXLIMPCT_SF] = (-1i16) as u16;
        let w = plan_active_power_limit(
            &ctl,
            &regs,
            42.5,
            RevertPolicy {
                timeout_s: 300,
                fallback_pct: 0.0,
            },
        )
        .unwrap();
        assert_eq!(
            w.iter()
                .map(|w| (w.address, w.values.clone()))
                .collect::<Vec<_>>(),
            vec![(40129, vec![300]), (40127, vec![425]), (40131, vec![1])]
        );
        regs[m123::WMAXLIMPCT_SF] = 0x8000;
        assert!(matches!(
            plan_active_power_limit(
                &ctl,
                &regs,
                50.0,
                RevertPolicy {
                    timeout_s: 60,
                    fallback_pct: 0.0
                }
            ),
            Err(SunSpecError::UnknownScaleFactor { .. })
        ));
        regs[m123::WMAXLIMPCT_SF] = 0;
        assert!(
            plan_active_power_limit(
                &ctl,
                &regs,
                101.0,
                RevertPolicy {
                    timeout_s: 60,
                    fallback_pct: 0.0
                }
            )
            .is_err()
        );
        let c = plan_connect(&ctl, &regs, false).unwrap();
        assert_eq!(c[0].address, 40126);
        assert_eq!(c[0].values, vec![0]);
    }

    #[test]
    fn plan_704_sets_revert_limit() {
        let ctl = ModelRef {
            id: 704,
            start: 1000,
            len: 57,
        };
        let mut regs = vec![0u16; 59];
        regs[m704::WMAXLIMPCT_SF] = 0;
        let w = plan_active_power_limit(
            &ctl,
            &regs,
            30.0,
            RevertPolicy {
                timeout_s: 70000,
                fallback_pct: 10.0,
            },
        )
        .unwrap();
        assert_eq!(w[0].address, 1016);
        assert_eq!(w[0].values, vec![10, 1, 1, 4464]);
        assert_eq!(w[1].address, 1015);
        assert_eq!(w[2].address, 1014);
        let mut after = regs.clone();
        after[16..20].copy_from_slice(&w[0].values);
        after[15] = 30;
        assert!(verify_writes(&ctl, &after, &w).is_err());
        after[14] = 1;
        assert!(verify_writes(&ctl, &after, &w).is_ok());
    }

    /// A model 124 block as a battery inverter lays it out: WChaMax 5000 W (SF 0),
    /// InOutWRte_SF -2 (InWRte in hundredths of a percent), discharge limit bit set.
    fn m124_block() -> (ModelRef, Vec<u16>) {
        let ctl = ModelRef {
            id: 124,
            start: 40200,
            len: 24,
        };
        let mut regs = vec![0u16; m124::LEN];
        regs[0] = 124;
        regs[1] = 24;
        regs[m124::WCHAMAX] = 5000;
        regs[m124::STORCTL_MOD] = 0b10;
        regs[m124::CHASTATE] = 655; // 65.5 %
        regs[m124::INWRTE] = 10000; // 100.00 %
        regs[m124::WCHAMAX_SF] = 0;
        regs[m124::CHASTATE_SF] = (-1i16) as u16;
        regs[m124::INOUTWRTE_SF] = (-2i16) as u16;
        (ctl, regs)
    }

    #[test]
    fn plan_124_limits_charging_and_keeps_the_discharge_bit() {
        let (ctl, regs) = m124_block();
        let w = plan_charge_limit(&ctl, &regs, Some(1234.0), 120).unwrap();
        // Revert timer first, then InWRte (24.68 % of 5000 W, rounded down), then the bit.
        assert_eq!(w[0].address, 40200 + 15);
        assert_eq!(w[0].values, vec![120]);
        assert_eq!(w[1].address, 40200 + 13);
        assert_eq!(w[1].values, vec![2468]);
        assert_eq!(w[2].address, 40200 + 5);
        assert_eq!(w[2].values, vec![0b11]);
        let mut after = regs.clone();
        for wr in &w {
            let off = usize::from(wr.address - ctl.start);
            after[off..off + wr.values.len()].copy_from_slice(&wr.values);
        }
        assert!(verify_writes(&ctl, &after, &w).is_ok());
        let mut blocks = Blocks::new();
        blocks.insert(124, after);
        let st = decode_storage(&blocks).unwrap();
        assert_eq!(st.charge_limited, Some(true));
        assert!(
            (st.charge_limit_w().unwrap() - 1234.0).abs() < 0.5,
            "{st:?}"
        );
        assert_eq!(st.w_cha_max_w, Some(5000.0));
        assert_eq!(st.soc_pct, Some(65.5));
        assert_eq!(st.revert_s, Some(120));
        // Never above WChaMax, and zero is a limit too.
        let w = plan_charge_limit(&ctl, &regs, Some(9000.0), 0).unwrap();
        assert_eq!(w[1].values, vec![10000]);
        let w = plan_charge_limit(&ctl, &regs, Some(0.0), 0).unwrap();
        assert_eq!(w[1].values, vec![0]);
    }

    #[test]
    fn plan_124_storage_target_closes_the_rate_window() {
        let (ctl, regs) = m124_block();
        // Discharge 2 kW of WChaMax 5 kW: OutWRte 40.00 %, InWRte -40.00 %, both bits.
        let writes = plan_storage_target(&ctl, &regs, Some(2000.0), 120).unwrap();
        let at = |off: usize| ctl.addr(off as u16);
        assert_eq!(writes[0].address, at(m124::INOUTWRTE_RVRT_TMS));
        assert_eq!(writes[0].values, vec![120]);
        assert_eq!(
            (writes[1].address, writes[1].values[0] as i16),
            (at(m124::OUTWRTE), 4000)
        );
        assert_eq!(
            (writes[2].address, writes[2].values[0] as i16),
            (at(m124::INWRTE), -4000)
        );
        assert_eq!(writes[3].values, vec![0b11]);
        // Charge 5 kW (and more is capped at WChaMax): InWRte 100 %, OutWRte -100 %.
        let writes = plan_storage_target(&ctl, &regs, Some(-9000.0), 120).unwrap();
        assert_eq!(writes[1].values[0] as i16, -10000);
        assert_eq!(writes[2].values[0] as i16, 10000);
        // 1 W more than a whole step is rounded down, never up.
        let writes = plan_storage_target(&ctl, &regs, Some(1.4), 120).unwrap();
        assert_eq!(writes[1].values[0] as i16, 2, "0.028 % → 0.02 %");
        // Ending the target clears both bits, nothing else.
        let mut set = regs.clone();
        set[m124::STORCTL_MOD] = 0b111;
        let end = plan_storage_target(&ctl, &set, None, 120).unwrap();
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].values, vec![0b100]);
        // What it cannot write is an error naming the point.
        let mut bad = regs.clone();
        bad[m124::WCHAMAX] = 0;
        let err = plan_storage_target(&ctl, &bad, Some(100.0), 120).unwrap_err();
        assert!(err.to_string().contains("WChaMax"), "{err}");
        assert!(plan_storage_target(&ctl, &regs, Some(f64::NAN), 120).is_err());
    }

    #[test]
    fn plan_124_lifts_the_limit_and_refuses_what_it_cannot_write() {
        let (ctl, mut regs) = m124_block();
        regs[m124::STORCTL_MOD] = 0b11;
        let w = plan_charge_limit(&ctl, &regs, None, 120).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].values, vec![0b10]);
        assert!(plan_charge_limit(&ctl, &regs, Some(-1.0), 0).is_err());
        assert!(plan_charge_limit(&ctl, &regs, Some(f64::NAN), 0).is_err());
        assert!(plan_charge_limit(&ctl, &regs, Some(100.0), 70000).is_err());
        regs[m124::WCHAMAX] = 0xFFFF;
        let e = plan_charge_limit(&ctl, &regs, Some(100.0), 0).unwrap_err();
        assert!(e.to_string().contains("WChaMax"), "{e}");
        regs[m124::WCHAMAX] = 5000;
        regs[m124::INOUTWRTE_SF] = 0x8000;
        assert!(matches!(
            plan_charge_limit(&ctl, &regs, Some(100.0), 0),
            Err(SunSpecError::UnknownScaleFactor { .. })
        ));
        let not_124 = ModelRef { id: 123, ..ctl };
        assert!(plan_charge_limit(&not_124, &regs, Some(100.0), 0).is_err());
        assert!(plan_charge_limit(&ctl, &regs[..10], Some(100.0), 0).is_err());
    }
}
