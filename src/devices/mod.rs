//! Modbus transports (TCP and RTU) and SunSpec device drivers. Register decoding is
//! pure (`sunspec`); the transports (`modbus`) are the IO edge.
//!
//! Typical use (one task per bus on the smol loop):
//! ```no_run
//! # async fn demo() -> Result<(), csipd::devices::DeviceError> {
//! use std::rc::Rc;
//! use csipd::devices::{Bus, BusParams, Device, DeviceParams, RevertPolicy};
//! let bus = Rc::new(Bus::new(BusParams::rtu("/dev/ttyUSB0", 9600)));
//! let mut inverter = Device::new(bus.clone(), DeviceParams::new("inverter1", 1));
//! inverter.scan().await?;
//! let reading = inverter.read_inverter().await?;
//! inverter
//!     .set_active_power_limit_pct(50.0, RevertPolicy { timeout_s: 300, fallback_pct: 0.0 })
//!     .await?;
//! # let _ = reading; Ok(()) }
//! ```

pub mod cli;
pub mod curves;
pub mod curves_7xx;
pub mod enter_service;
pub mod freq_droop;
pub mod modbus;
pub mod powerwall;
pub mod reactive;
pub mod solaredge;
pub mod sunspec;

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use modbus::{Bus, BusParams, LinkStats, ModbusError, Parity, TransportParams};
pub use reactive::{Excitation, FixedPf, FixedPfState, FixedVarState, TargetVarState};
pub use sunspec::{
    Blocks, CommonInfo, Controls, InverterReading, LimitState, MeterReading, ModelRef,
    OperatingState, RevertPolicy, StorageState, SunSpecError, SunSpecMap,
};

/// Where an inverter's active power limit is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerControl {
    /// SunSpec 704 or 123 when the device has one; else SolarEdge's own registers when
    /// model 1 says SolarEdge (and they answer).
    #[default]
    Auto,
    /// SunSpec control models only.
    Sunspec,
    /// SolarEdge's power control registers (see [`solaredge`]), even if model 1 says
    /// otherwise (a rebadged SolarEdge).
    Solaredge,
}

/// Plain parameters of one device on a bus (the lead maps UCI config to this).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceParams {
    /// Name used in logs, errors and status (e.g. the UCI section name).
    pub name: String,
    /// Modbus unit id (slave address), 1..=247 on RTU; TCP gateways use it to route.
    pub unit_id: u8,
    /// SunSpec base address; None = try 40000, 0, 50000.
    pub sunspec_base: Option<u16>,
    /// Data older than this makes the device stale.
    pub stale_after: Duration,
    /// Meters only: flip the sign of W/var (CT mounted the wrong way round).
    pub invert_meter_sign: bool,
    /// Response timeout for this device; None = the bus's timeout.
    pub timeout: Option<Duration>,
    /// Which SunSpec device of the unit's chain this is, when the chain holds several
    /// (each model 1 starts one: SolarEdge puts its meter behind the inverter's unit
    /// id): the 1-based position of its model 1. None = the first device of the chain
    /// that has the models asked for (the inverter for inverter reads, the meter for
    /// meter reads).
    pub chain_device: Option<u8>,
    /// Where the active power limit is written.
    pub power_control: PowerControl,
}

impl DeviceParams {
    pub fn new(name: &str, unit_id: u8) -> Self {
        DeviceParams {
            name: name.to_string(),
            unit_id,
            sunspec_base: None,
            stale_after: Duration::from_secs(10),
            invert_meter_sign: false,
            timeout: None,
            chain_device: None,
            power_control: PowerControl::Auto,
        }
    }
}

const INVERTER_WANTED: &str = "inverter measurement (101-103, 111-113, 701)";

/// How often, and how many times, a 705/706 inverter's block is read while it adopts
/// a curve (`AdptCrvRslt` IN_PROGRESS): 5 s in all, far more than a curve check takes.
pub const ADOPT_POLL: Duration = Duration::from_millis(250);
pub const ADOPT_POLLS: u32 = 20;

/// A device-level error: transport, SunSpec content, or a write that did not stick.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceError {
    Modbus {
        device: String,
        during: String,
        error: ModbusError,
    },
    SunSpec {
        device: String,
        error: SunSpecError,
    },
    /// Read-back after a write shows a different value.
    NotConfirmed {
        device: String,
        detail: sunspec::WriteMismatch,
    },
    /// A 705/706/712 inverter did not put the written curve in force after `AdptCrvReq`
    /// (or a 711 the written droop control after `AdptCtlReq`: `curve` is then the
    /// control's index): `result` is its `AdptCrvRslt` / `AdptCtlRslt` (FAILED, or still
    /// IN_PROGRESS when csipd gave up).
    CurveNotAdopted {
        device: String,
        model: u16,
        curve: u16,
        result: String,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::Modbus {
                device,
                during,
                error,
            } => write!(f, "device '{device}': {during}: {error}"),
            DeviceError::SunSpec { device, error } => write!(f, "device '{device}': {error}"),
            DeviceError::CurveNotAdopted {
                device,
                model,
                curve,
                result,
            } if *model == 711 => write!(
                f,
                "device '{device}': model {model} did not adopt control {curve} \
                 (AdptCtlRslt {result})"
            ),
            DeviceError::CurveNotAdopted {
                device,
                model,
                curve,
                result,
            } => write!(
                f,
                "device '{device}': model {model} did not adopt curve {curve} \
                 (AdptCrvRslt {result})"
            ),
            DeviceError::NotConfirmed { device, detail } => {
                write!(
                    f,
                    "device '{device}': write not confirmed by read-back: {detail}"
                )
            }
        }
    }
}

impl std::error::Error for DeviceError {}

/// Counters reported per device in the status.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DeviceStats {
    pub link: LinkStats,
    pub scans: u64,
    pub writes: u64,
    pub writes_unconfirmed: u64,
}

/// What the status page shows about a device.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceStatus {
    pub name: String,
    pub unit_id: u8,
    pub bus: String,
    pub stale: bool,
    pub sunspec_base: Option<u16>,
    /// The models of this device (of its part of the chain when the unit holds
    /// several SunSpec devices).
    pub models: Vec<u16>,
    pub common: Option<CommonInfo>,
    pub stats: DeviceStats,
}

/// One SunSpec device of a unit's chain, as a scan found it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChainDevice {
    /// 1-based position in the chain (the `chain_device` that selects it).
    pub position: u8,
    /// Its models (from its model 1 to the next device's).
    pub map: SunSpecMap,
    /// Its identity (model 1), when it has one.
    pub common: Option<CommonInfo>,
}

/// One SunSpec device (inverter or meter) at a unit id on a bus.
pub struct Device {
    bus: Rc<Bus>,
    params: DeviceParams,
    /// The unit's whole chain.
    map: Option<SunSpecMap>,
    /// The chain split into SunSpec devices (one unless the unit holds several).
    chain: Vec<ChainDevice>,
    /// Index into `chain` of the device the last read or write used.
    selected: Option<usize>,
    /// SolarEdge's power control block: answered (true) or refused (false) when read;
    /// None until tried.
    solaredge_block: Option<bool>,
    stats: DeviceStats,
    last_reading_at: Option<Instant>,
    /// Nameplate and settings blocks (120, 121, 702): read once per scan, they do not
    /// change while running, and skipping them keeps a 9600-baud poll short.
    static_blocks: Option<Blocks>,
}

impl Device {
    pub fn new(bus: Rc<Bus>, params: DeviceParams) -> Self {
        Device {
            bus,
            params,
            map: None,
            chain: Vec::new(),
            selected: None,
            solaredge_block: None,
            stats: DeviceStats::default(),
            last_reading_at: None,
            static_blocks: None,
        }
    }

    pub fn params(&self) -> &DeviceParams {
        &self.params
    }
    /// The unit's whole model chain, once scanned.
    pub fn map(&self) -> Option<&SunSpecMap> {
        self.map.as_ref()
    }
    /// The SunSpec devices of the unit's chain, once scanned.
    pub fn chain_devices(&self) -> &[ChainDevice] {
        &self.chain
    }
    /// Reads and writes from now on go to the device at `position` of the chain (see
    /// [`DeviceParams::chain_device`]); `None` picks by the models asked for.
    pub fn set_chain_device(&mut self, position: Option<u8>) {
        if self.params.chain_device != position {
            self.params.chain_device = position;
            self.selected = None;
            self.static_blocks = None;
        }
    }
    /// Identity (model 1) of the selected device of the chain, else of the first.
    pub fn common(&self) -> Option<&CommonInfo> {
        self.chain
            .get(self.selected.unwrap_or(0))
            .and_then(|d| d.common.as_ref())
    }
    /// What the selected device lets csipd control (known after a read of it).
    pub fn controls(&self) -> Option<Controls> {
        let d = self.chain.get(self.selected?)?;
        let mut c = Controls::of_models(d.map.ids());
        if self.solaredge_block == Some(true) && self.wants_solaredge(&d.map) {
            c.active_power_limit_model = Some(solaredge::BLOCK_ID);
        }
        Some(c)
    }

    /// SolarEdge's registers carry the power limit: chosen in the config, or (auto) a
    /// device whose model 1 says SolarEdge and that has no SunSpec control model.
    fn wants_solaredge(&self, map: &SunSpecMap) -> bool {
        match self.params.power_control {
            PowerControl::Sunspec => false,
            PowerControl::Solaredge => true,
            PowerControl::Auto => {
                map.find(704).is_none()
                    && map.find(123).is_none()
                    && self.common().is_some_and(solaredge::is_solaredge)
            }
        }
    }

    /// Reads SolarEdge's power control block when it carries the limit. A device that
    /// refuses it (Modbus exception) has no such control: remembered, not an error,
    /// unless the config said it is a SolarEdge.
    async fn read_solaredge_block(
        &mut self,
        map: &SunSpecMap,
    ) -> Result<Option<Vec<u16>>, DeviceError> {
        if !self.wants_solaredge(map) || self.solaredge_block == Some(false) {
            return Ok(None);
        }
        let b = solaredge::block();
        match self.read_model(&b).await {
            Ok(regs) => {
                self.solaredge_block = Some(true);
                Ok(Some(regs))
            }
            Err(DeviceError::Modbus {
                error: ModbusError::Exception(_),
                ..
            }) if self.params.power_control == PowerControl::Auto => {
                log::info!(
                    "device '{}': SolarEdge power control registers (0x{:04X}) not \
                     readable: no control through them",
                    self.params.name,
                    solaredge::BLOCK_START
                );
                self.solaredge_block = Some(false);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// A snapshot for the status page at `now`.
    pub fn status(&self, now: Instant) -> DeviceStatus {
        DeviceStatus {
            name: self.params.name.clone(),
            unit_id: self.params.unit_id,
            bus: self.bus.params().transport.to_string(),
            stale: self.is_stale(now),
            sunspec_base: self.map.as_ref().map(|m| m.base),
            models: match self.selected.and_then(|i| self.chain.get(i)) {
                Some(d) => d.map.ids(),
                None => self.map.as_ref().map(|m| m.ids()).unwrap_or_default(),
            },
            common: self.common().cloned(),
            stats: self.stats.clone(),
        }
    }

    /// Stale = no successful reading within `stale_after` of `now`, or the last attempt
    /// failed. Callers must not use a stale device's readings for control.
    pub fn is_stale(&self, now: Instant) -> bool {
        match self.last_reading_at {
            None => true,
            Some(t) => {
                self.stats.link.consecutive_failures > 0
                    || now.saturating_duration_since(t) > self.params.stale_after
            }
        }
    }

    fn modbus_err(&self, during: impl Into<String>, error: ModbusError) -> DeviceError {
        DeviceError::Modbus {
            device: self.params.name.clone(),
            during: during.into(),
            error,
        }
    }
    fn sunspec_err(&self, error: SunSpecError) -> DeviceError {
        DeviceError::SunSpec {
            device: self.params.name.clone(),
            error,
        }
    }

    /// Raw holding registers (diagnostics, tests).
    pub async fn read_registers(&mut self, addr: u16, count: u16) -> Result<Vec<u16>, DeviceError> {
        let unit = self.params.unit_id;
        self.bus
            .read_holding(unit, addr, count, self.params.timeout, &mut self.stats.link)
            .await
            .map_err(|e| self.modbus_err(format!("reading {count} registers at {addr}"), e))
    }

    /// Finds the SunSpec map (configured base, else 40000, 0, 50000: each is tried
    /// whatever went wrong at the one before, unless the link itself is down, an I/O
    /// error), checks `SunS` and walks the model chain.
    /// The chain ends at the end marker, or, as devices in the field do, at a header
    /// the device refuses to read (Modbus exception), a model id 0, or a model whose
    /// length runs past the readable registers: then the models before are kept and
    /// one warning says where and why (`SunSpecMap::ended_early`). A transport failure
    /// (timeout, CRC) during the walk fails the scan, so that a later scan finds the
    /// whole chain. Reads model 1 of every device of the chain for its identity.
    pub async fn scan(&mut self) -> Result<&SunSpecMap, DeviceError> {
        self.stats.scans += 1;
        let bases: Vec<u16> = match self.params.sunspec_base {
            Some(b) => vec![b],
            None => sunspec::DEFAULT_BASES.to_vec(),
        };
        let mut tried = Vec::new();
        let mut answered = false;
        let mut last_transport_error = None;
        let mut found = None;
        let tried_bases: Vec<String> = bases.iter().map(u16::to_string).collect();
        for base in bases {
            match self.read_registers(base, 2).await {
                Ok(regs) => {
                    answered = true;
                    match sunspec::check_marker(base, &regs) {
                        Ok(()) => {
                            found = Some(base);
                            break;
                        }
                        Err(e) => tried.push(e.to_string()),
                    }
                }
                Err(DeviceError::Modbus {
                    error: ModbusError::Exception(c),
                    ..
                }) => {
                    answered = true;
                    tried.push(format!("register {base}: exception {c}"));
                }
                // The link itself is down (no serial port, connection refused): no
                // base will do better.
                Err(
                    e @ DeviceError::Modbus {
                        error: ModbusError::Io(_),
                        ..
                    },
                ) if !answered => return Err(e),
                // A timeout, CRC or frame error at one base: some devices do not answer
                // a read of registers they do not have; the next base may be theirs.
                Err(e) => {
                    tried.push(format!("register {base}: {e}"));
                    last_transport_error = Some(e);
                }
            }
        }
        let Some(base) = found else {
            // Nothing answered at all: the transport error says more than "no map", and
            // every register tried is named (the last alone read as if only it was).
            if let (false, Some(e)) = (answered, last_transport_error) {
                return Err(match e {
                    DeviceError::Modbus { device, error, .. } if tried.len() > 1 => {
                        DeviceError::Modbus {
                            device,
                            during: format!(
                                "no answer at any SunSpec base register tried ({})",
                                tried_bases.join(", ")
                            ),
                            error,
                        }
                    }
                    e => e,
                });
            }
            return Err(self.sunspec_err(SunSpecError::NoMap {
                tried: tried.join("; "),
            }));
        };
        let mut map = SunSpecMap {
            base,
            models: Vec::new(),
            ended_early: None,
        };
        let mut at = base.checked_add(2).ok_or_else(|| {
            self.sunspec_err(SunSpecError::BrokenChain {
                at: base,
                reason: "base address leaves no room for the model chain".into(),
            })
        })?;
        loop {
            let header = match self.read_registers(at, 2).await {
                Ok(h) if h.len() >= 2 => [h[0], h[1]],
                Ok(h) => {
                    map.ended_early = Some(format!(
                        "register {at}: header read as {} register(s)",
                        h.len()
                    ));
                    break;
                }
                Err(DeviceError::Modbus {
                    error: ModbusError::Exception(c),
                    ..
                }) => {
                    let why = self.unreadable_header(&mut map, at, c).await?;
                    map.ended_early = Some(why);
                    break;
                }
                Err(e) => return Err(e),
            };
            match sunspec::chain_step(at, header, map.models.len()) {
                sunspec::ChainStep::End => break,
                sunspec::ChainStep::Stop { reason } => {
                    map.ended_early = Some(format!("register {at}: {reason}"));
                    break;
                }
                sunspec::ChainStep::Model { model, next } => {
                    map.models.push(model);
                    at = next;
                }
            }
        }
        if map.models.is_empty() {
            return Err(self.sunspec_err(SunSpecError::BrokenChain {
                at: base,
                reason: format!(
                    "'SunS' at {base} but no model after it ({})",
                    map.ended_early.as_deref().unwrap_or("end marker")
                ),
            }));
        }
        let mut chain = Vec::new();
        for (i, part) in map.split_devices().into_iter().enumerate() {
            let common = match part.find(1).copied() {
                Some(m1) => {
                    let regs = self
                        .read_registers(m1.start, m1.total_len().min(68))
                        .await?;
                    Some(sunspec::decode_common(&regs))
                }
                None => None,
            };
            chain.push(ChainDevice {
                position: u8::try_from(i + 1).unwrap_or(u8::MAX),
                map: part,
                common,
            });
        }
        log::info!(
            "device '{}': SunSpec map at {} with models {:?}{}",
            self.params.name,
            map.base,
            map.ids(),
            if chain.len() > 1 {
                format!(" ({} SunSpec devices in the chain)", chain.len())
            } else {
                String::new()
            }
        );
        if let Some(why) = &map.ended_early {
            log::warn!(
                "device '{}': SunSpec chain has no end marker; it ends at {why}; keeping \
                 the {} model(s) before it",
                self.params.name,
                map.models.len()
            );
        }
        self.chain = chain;
        self.selected = None;
        self.static_blocks = None;
        Ok(&*self.map.insert(map))
    }

    /// The chain's header at `at` answered exception `code`. When the last model's own
    /// registers are unreadable too (its length runs past what the device serves), it
    /// is dropped. Returns where and why the chain ended.
    async fn unreadable_header(
        &mut self,
        map: &mut SunSpecMap,
        at: u16,
        code: u8,
    ) -> Result<String, DeviceError> {
        let unreadable = format!("register {at}: header unreadable (Modbus exception {code})");
        let Some(last) = map.models.last().copied() else {
            return Ok(unreadable);
        };
        let last_reg = last
            .start
            .saturating_add(last.total_len().saturating_sub(1));
        match self.read_registers(last_reg, 1).await {
            Ok(_) => Ok(unreadable),
            Err(DeviceError::Modbus {
                error: ModbusError::Exception(_),
                ..
            }) => {
                map.models.pop();
                Ok(format!(
                    "register {}: model {} with length {} runs past the readable registers \
                     (register {last_reg} unreadable)",
                    last.start, last.id, last.len
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// The device of the chain that reads and writes go to: the configured position,
    /// else the first device with one of `wanted`.
    async fn select(
        &mut self,
        wanted: &[u16],
        what: &'static str,
    ) -> Result<SunSpecMap, DeviceError> {
        if self.map.is_none() {
            self.scan().await?;
        }
        let has = |d: &ChainDevice| d.map.find_any(wanted).is_some();
        let index = match self.params.chain_device {
            Some(pos) => {
                let i = usize::from(pos.max(1)) - 1;
                let Some(d) = self.chain.get(i) else {
                    return Err(self.sunspec_err(SunSpecError::BrokenChain {
                        at: self.map.as_ref().map_or(0, |m| m.base),
                        reason: format!(
                            "chain_device {pos} asked for, but the chain holds {} SunSpec \
                             device(s)",
                            self.chain.len()
                        ),
                    }));
                };
                if !has(d) {
                    return Err(self.sunspec_err(SunSpecError::MissingModel {
                        wanted: what,
                        present: d.map.ids(),
                    }));
                }
                i
            }
            None => match self.chain.iter().position(has) {
                Some(i) => i,
                None => {
                    return Err(self.sunspec_err(SunSpecError::MissingModel {
                        wanted: what,
                        present: self.map.as_ref().map(|m| m.ids()).unwrap_or_default(),
                    }));
                }
            },
        };
        self.selected = Some(index);
        Ok(self.chain[index].map.clone())
    }

    /// The inverter of the chain (the configured position, else the first device
    /// with an inverter measurement model).
    async fn inverter_map(&mut self) -> Result<SunSpecMap, DeviceError> {
        self.select(&sunspec::INVERTER_MODELS, INVERTER_WANTED)
            .await
    }

    async fn read_model(&mut self, m: &ModelRef) -> Result<Vec<u16>, DeviceError> {
        self.read_registers(m.start, m.total_len()).await
    }

    async fn read_blocks(&mut self, map: &SunSpecMap, ids: &[u16]) -> Result<Blocks, DeviceError> {
        let mut blocks = Blocks::new();
        for id in ids {
            if let Some(m) = map.find(*id).copied() {
                blocks.insert(*id, self.read_model(&m).await?);
            }
        }
        Ok(blocks)
    }

    /// Reads and decodes an inverter: the measurement model (103/102/101, 113/112/111 or
    /// 701) plus nameplate, settings, status and controls when present.
    pub async fn read_inverter(&mut self) -> Result<InverterReading, DeviceError> {
        let map = self.inverter_map().await?;
        let meas = map
            .find_any(&sunspec::INVERTER_MODELS)
            .map(|m| m.id)
            .ok_or_else(|| {
                self.sunspec_err(SunSpecError::MissingModel {
                    wanted: INVERTER_WANTED,
                    present: map.ids(),
                })
            })?;
        if self.static_blocks.is_none() {
            self.static_blocks = Some(self.read_blocks(&map, &[120, 121, 702]).await?);
        }
        let mut blocks = self
            .read_blocks(&map, &[meas, 122, 123, 124, 704, 713])
            .await?;
        if let Some(st) = &self.static_blocks {
            blocks.extend(st.iter().map(|(k, v)| (*k, v.clone())));
        }
        let mut r = sunspec::decode_inverter(&blocks).map_err(|e| self.sunspec_err(e))?;
        // The settings models (curves 126/132/705/706) are not read each cycle: what
        // the device offers comes from its model chain.
        r.controls.inverter_modes = Controls::of_models(map.ids()).inverter_modes;
        if let Some(block) = self.read_solaredge_block(&map).await? {
            r.limit = Some(solaredge::decode_limit(&block));
            r.controls.active_power_limit_model = Some(solaredge::BLOCK_ID);
            // No 120/121 on SolarEdge: MaxActivePower is its rating.
            if r.settings.w_max_w.is_none() {
                r.settings.w_max_w = solaredge::max_active_power_w(&block);
            }
        }
        self.last_reading_at = Some(Instant::now());
        Ok(r)
    }

    /// Reads and decodes a meter (201-204 or 211-214). `ac.w` > 0 = import.
    pub async fn read_meter(&mut self) -> Result<MeterReading, DeviceError> {
        let map = self
            .select(&sunspec::METER_MODELS, "meter (201-204, 211-214)")
            .await?;
        let id = map
            .find_any(&sunspec::METER_MODELS)
            .map(|m| m.id)
            .ok_or_else(|| {
                self.sunspec_err(SunSpecError::MissingModel {
                    wanted: "meter (201-204, 211-214)",
                    present: map.ids(),
                })
            })?;
        let blocks = self.read_blocks(&map, &[id]).await?;
        let r = sunspec::decode_meter(&blocks, self.params.invert_meter_sign)
            .map_err(|e| self.sunspec_err(e))?;
        self.last_reading_at = Some(Instant::now());
        Ok(r)
    }

    async fn write_and_confirm(
        &mut self,
        ctl: ModelRef,
        writes: Vec<sunspec::RegisterWrite>,
    ) -> Result<Vec<u16>, DeviceError> {
        self.write_registers(&writes).await?;
        let after = self.read_model(&ctl).await?;
        if let Err(detail) = sunspec::verify_writes(&ctl, &after, &writes) {
            self.stats.writes_unconfirmed += 1;
            return Err(DeviceError::NotConfirmed {
                device: self.params.name.clone(),
                detail,
            });
        }
        Ok(after)
    }

    /// Writes `writes` in order, without reading back.
    async fn write_registers(
        &mut self,
        writes: &[sunspec::RegisterWrite],
    ) -> Result<(), DeviceError> {
        let unit = self.params.unit_id;
        for w in writes {
            self.stats.writes += 1;
            log::debug!(
                "device '{}': write {} at {} = {:?}",
                self.params.name,
                w.point,
                w.address,
                w.values
            );
            self.bus
                .write_holding(
                    unit,
                    w.address,
                    &w.values,
                    self.params.timeout,
                    &mut self.stats.link,
                )
                .await
                .map_err(|e| {
                    self.modbus_err(format!("writing {} at register {}", w.point, w.address), e)
                })?;
        }
        Ok(())
    }

    /// Limits active power to `pct` % of WMax through model 704 when present, else 123,
    /// else SolarEdge's power control registers (see [`PowerControl`]),
    /// with a revert timer so that a csipd that stops refreshing does not leave the limit
    /// running forever (704 also reverts to `revert.fallback_pct`; 123 reverts to the
    /// inverter's default). The caller must re-send before `revert.timeout_s` runs out.
    /// Writes only the control registers, then reads the model back to confirm.
    pub async fn set_active_power_limit_pct(
        &mut self,
        pct: f64,
        revert: RevertPolicy,
    ) -> Result<LimitState, DeviceError> {
        let map = self.inverter_map().await?;
        if self.read_solaredge_block(&map).await?.is_some() {
            let writes = solaredge::plan_limit(pct, revert).map_err(|e| self.sunspec_err(e))?;
            let after = self.write_and_confirm(solaredge::block(), writes).await?;
            return Ok(solaredge::decode_limit(&after));
        }
        let ctl = map
            .find(704)
            .or_else(|| map.find(123))
            .copied()
            .ok_or_else(|| {
                self.sunspec_err(SunSpecError::MissingModel {
                    wanted: "controls (123 or 704)",
                    present: map.ids(),
                })
            })?;
        let before = self.read_model(&ctl).await?;
        let writes = sunspec::plan_active_power_limit(&ctl, &before, pct, revert)
            .map_err(|e| self.sunspec_err(e))?;
        let after = self.write_and_confirm(ctl, writes).await?;
        let mut blocks = Blocks::new();
        blocks.insert(ctl.id, after);
        sunspec::decode_limit(&blocks).ok_or_else(|| {
            self.sunspec_err(SunSpecError::MissingModel {
                wanted: "controls (123 or 704)",
                present: map.ids(),
            })
        })
    }

    /// Puts a volt-var or volt-watt curve on the inverter and enables the mode, then
    /// reads the model back to confirm. Models 705 (volt-var) / 706 (volt-watt) when
    /// the inverter has them ([`curves_7xx`]: write a writable curve, request its
    /// adoption with `AdptCrvReq`, wait for curve 1 to hold it with `AdptCrvRslt`
    /// COMPLETED, then `Ena`), else 126 / 132 ([`curves`]: a writable curve, `ActCrv`,
    /// `ModEna`). Returns the curve in force as read back. An inverter without the
    /// model answers [`DeviceError`] naming what it has: the mode cannot be applied
    /// there; one that refuses the curve answers [`DeviceError::CurveNotAdopted`].
    pub async fn set_curve(
        &mut self,
        curve: &curves::Curve,
    ) -> Result<curves::CurveState, DeviceError> {
        let ctl = self
            .control_model(
                curves::curve_models(curve.mode),
                curves::wanted_model(curve.mode),
            )
            .await?;
        let before = self.read_model(&ctl).await?;
        let after = if ctl.id >= 700 {
            self.adopt_curve(ctl, &before, curve).await?
        } else {
            let writes =
                curves::plan_curve(&ctl, &before, curve).map_err(|e| self.sunspec_err(e))?;
            self.write_and_confirm(ctl, writes).await?
        };
        self.curve_state(ctl, &after)
    }

    /// Turns a curve mode off (126/132 `ModEna` bit 0, 705/706 `Ena` 0) on every model
    /// of the inverter that carries it, then reads back to confirm. The curves stay
    /// stored. Returns the state of the preferred model (705/706 over 126/132) as read
    /// back. An inverter without such a model answers [`DeviceError`] naming what it
    /// has.
    pub async fn clear_curve(
        &mut self,
        mode: crate::schedule::ControlMode,
    ) -> Result<curves::CurveState, DeviceError> {
        if curves::curve_models(mode).is_empty() {
            return Err(self.sunspec_err(SunSpecError::OutOfRange {
                what: format!("{} is not a curve mode", mode.name()),
            }));
        }
        let map = self.inverter_map().await?;
        let models: Vec<ModelRef> = curves::curve_models(mode)
            .iter()
            .filter_map(|m| map.find(*m).copied())
            .collect();
        if models.is_empty() {
            return Err(self.sunspec_err(SunSpecError::MissingModel {
                wanted: curves::wanted_model(mode),
                present: map.ids(),
            }));
        }
        let mut first = None;
        for ctl in models {
            let before = self.read_model(&ctl).await?;
            let writes = if ctl.id >= 700 {
                curves_7xx::plan_clear(&ctl, &before)
            } else {
                curves::plan_clear(&ctl, &before)
            }
            .map_err(|e| self.sunspec_err(e))?;
            let after = self.write_and_confirm(ctl, writes).await?;
            if first.is_none() {
                first = Some(self.curve_state(ctl, &after)?);
            }
        }
        first.ok_or_else(|| {
            self.sunspec_err(SunSpecError::MissingModel {
                wanted: curves::wanted_model(mode),
                present: map.ids(),
            })
        })
    }

    /// The curve state of a curve model block as read.
    fn curve_state(&self, ctl: ModelRef, regs: &[u16]) -> Result<curves::CurveState, DeviceError> {
        let state = if ctl.id >= 700 {
            curves_7xx::decode_curve(ctl.id, regs)
        } else {
            curves::decode_curve(ctl.id, regs)
        };
        state.ok_or_else(|| {
            self.sunspec_err(SunSpecError::OutOfRange {
                what: format!(
                    "model {} read back without a readable curve in force (its enable, \
                     curve selection, point count or a point is not implemented)",
                    ctl.id
                ),
            })
        })
    }

    /// The 705/706 sequence of [`Device::set_curve`]: the curve (confirmed), the
    /// adoption request, curve 1 read until adopted (up to [`ADOPT_POLLS`] reads
    /// [`ADOPT_POLL`] apart), then `Ena` (confirmed). Returns the block as read last.
    async fn adopt_curve(
        &mut self,
        ctl: ModelRef,
        before: &[u16],
        curve: &curves::Curve,
    ) -> Result<Vec<u16>, DeviceError> {
        let plan = curves_7xx::plan_curve(&ctl, before, curve).map_err(|e| self.sunspec_err(e))?;
        self.write_and_confirm(ctl, plan.curve.clone()).await?;
        // AdptCrvReq is not read back: an inverter may reset it once done.
        self.write_registers(std::slice::from_ref(&plan.adopt))
            .await?;
        let mut polls = 0;
        loop {
            let regs = self.read_model(&ctl).await?;
            match curves_7xx::adoption(ctl.id, &regs, &plan) {
                curves_7xx::Adoption::Completed => break,
                curves_7xx::Adoption::Pending if polls < ADOPT_POLLS => {
                    polls += 1;
                    smol::Timer::after(ADOPT_POLL).await;
                }
                _ => {
                    self.stats.writes_unconfirmed += 1;
                    return Err(DeviceError::CurveNotAdopted {
                        device: self.params.name.clone(),
                        model: ctl.id,
                        curve: plan.index,
                        result: curves_7xx::result_name(&regs, ctl.id),
                    });
                }
            }
        }
        self.write_and_confirm(ctl, vec![plan.enable]).await
    }

    /// The first model of `preference` the inverter has, or an error naming what it
    /// has (`wanted` names the function). An empty `preference` (a mode the method
    /// does not carry) is an error naming `wanted`, before any IO.
    async fn control_model(
        &mut self,
        preference: &[u16],
        wanted: &'static str,
    ) -> Result<ModelRef, DeviceError> {
        if preference.is_empty() {
            return Err(self.sunspec_err(SunSpecError::OutOfRange {
                what: format!("not a mode of {wanted}"),
            }));
        }
        let map = self.inverter_map().await?;
        map.find_any(preference).copied().ok_or_else(|| {
            self.sunspec_err(SunSpecError::MissingModel {
                wanted,
                present: map.ids(),
            })
        })
    }

    /// The shared shape of a setting write: the inverter's first model of `models`
    /// (else [`DeviceError`] naming `wanted` and what it has), read, `plan`ned from the
    /// block as read, written and read back to confirm, then `decode`d from the
    /// read-back.
    async fn write_planned<T>(
        &mut self,
        models: &[u16],
        wanted: &'static str,
        plan: impl FnOnce(&ModelRef, &[u16]) -> Result<Vec<sunspec::RegisterWrite>, SunSpecError>,
        decode: impl FnOnce(&ModelRef, &[u16]) -> T,
    ) -> Result<T, DeviceError> {
        let ctl = self.control_model(models, wanted).await?;
        let before = self.read_model(&ctl).await?;
        let writes = plan(&ctl, &before).map_err(|e| self.sunspec_err(e))?;
        let after = self.write_and_confirm(ctl, writes).await?;
        Ok(decode(&ctl, &after))
    }

    /// Sets (or with `None` disables) a fixed power factor for `mode`
    /// (opModFixedPFInjectW or opModFixedPFAbsorbW): model 704 `PFWInj` / `PFWAbs`
    /// with `PFWInjEna` / `PFWAbsEna` when the inverter has 704, else (injection only)
    /// model 123 `OutPFSet` with `OutPFSet_Ena` ([`reactive`]). Reads the model back
    /// to confirm and returns the setting as read. An inverter without the model
    /// (opModFixedPFAbsorbW needs 704) answers [`DeviceError`] naming what it has.
    pub async fn set_fixed_pf(
        &mut self,
        mode: crate::schedule::ControlMode,
        setting: Option<FixedPf>,
    ) -> Result<FixedPfState, DeviceError> {
        self.write_planned(
            reactive::pf_models(mode),
            reactive::wanted_model(mode),
            |ctl, before| reactive::plan_fixed_pf(ctl, before, mode, setting),
            |ctl, after| reactive::decode_fixed_pf(ctl.id, after, mode),
        )
        .await
    }

    /// Sets (or with `None` disables) a fixed reactive power of `pct` % of VArMax
    /// (signed: positive injects; opModFixedVar): model 704 `VarSetPct` with
    /// `VarSetMod` VAR_MAX_PCT and `VarSetEna`, else model 123 `VArMaxPct` with
    /// `VArPct_Mod` VArMax and `VArPct_Ena` ([`reactive`]). Reads the model back to
    /// confirm and returns the setting as read. An inverter with neither answers
    /// [`DeviceError`] naming what it has.
    pub async fn set_fixed_var_pct(
        &mut self,
        pct: Option<f64>,
    ) -> Result<FixedVarState, DeviceError> {
        self.write_planned(
            &reactive::VAR_MODELS,
            reactive::wanted_model(crate::schedule::ControlMode::FixedVar),
            |ctl, before| reactive::plan_fixed_var(ctl, before, pct),
            |ctl, after| reactive::decode_fixed_var(ctl.id, after),
        )
        .await
    }

    /// Sets (or with `None` switches off) a reactive power target of `var` var
    /// (signed: positive injects; opModTargetVar): model 704 `VarSet` with `VarSetMod`
    /// VARS and `VarSetEna` ([`reactive::plan_target_var`]). Reads the model back to
    /// confirm and returns the target as read. An inverter without 704 (model 123 has
    /// no setting in var) answers [`DeviceError`] naming what it has.
    pub async fn set_target_var(
        &mut self,
        var: Option<f64>,
    ) -> Result<TargetVarState, DeviceError> {
        self.write_planned(
            &reactive::TARGET_VAR_MODELS,
            reactive::wanted_model(crate::schedule::ControlMode::TargetVar),
            |ctl, before| reactive::plan_target_var(ctl, before, var),
            |_, after| reactive::decode_target_var(after),
        )
        .await
    }

    /// Writes enter-service settings (2030.5 `setES*` units) to model 703 and reads the
    /// model back to confirm ([`enter_service`]); returns 703 as read. An inverter
    /// without 703 answers [`DeviceError`] naming what it has. The bus task calls it
    /// with the utility's DefaultDERControl `setES*` values.
    pub async fn set_enter_service(
        &mut self,
        es: &crate::sep2::EnterService,
    ) -> Result<enter_service::EnterServiceState, DeviceError> {
        self.write_planned(
            &[703],
            "enter service (703)",
            |ctl, before| enter_service::plan_enter_service(ctl, before, es),
            |_, after| enter_service::decode(after),
        )
        .await
    }

    /// Puts a frequency droop in force (opModFreqDroop; `None` turns it off: `Ena` 0)
    /// on model 711 (else 127: [`freq_droop::plan_127`], over-frequency only, with the
    /// nominal frequency from 121 `ECPNomHz` or 50 Hz): the first writable control written and confirmed, `AdptCtlReq`,
    /// control 1 read until adopted (up to [`ADOPT_POLLS`] reads [`ADOPT_POLL`] apart),
    /// then `Ena` ([`freq_droop`]). An inverter without 711 answers [`DeviceError`]
    /// naming what it has; one that does not adopt, `CurveNotAdopted` with the control's
    /// index.
    pub async fn set_freq_droop(
        &mut self,
        droop: Option<&crate::sep2::FreqDroop>,
    ) -> Result<freq_droop::FreqDroopState, DeviceError> {
        let ctl = self
            .control_model(
                &freq_droop::FREQ_DROOP_MODELS,
                "frequency droop (711 or 127)",
            )
            .await?;
        let before = self.read_model(&ctl).await?;
        if ctl.id == 127 {
            return self.set_freq_droop_127(ctl, &before, droop).await;
        }
        let Some(droop) = droop else {
            let writes = freq_droop::plan_clear(&ctl, &before).map_err(|e| self.sunspec_err(e))?;
            let after = self.write_and_confirm(ctl, writes).await?;
            return Ok(freq_droop::decode(&after));
        };
        let plan =
            freq_droop::plan_freq_droop(&ctl, &before, droop).map_err(|e| self.sunspec_err(e))?;
        self.write_and_confirm(ctl, vec![plan.values.clone()])
            .await?;
        // AdptCtlReq is not read back: an inverter may reset it once done.
        self.write_registers(std::slice::from_ref(&plan.adopt))
            .await?;
        let mut polls = 0;
        loop {
            let regs = self.read_model(&ctl).await?;
            match freq_droop::adoption(&regs, &plan) {
                curves_7xx::Adoption::Completed => break,
                curves_7xx::Adoption::Pending if polls < ADOPT_POLLS => {
                    polls += 1;
                    smol::Timer::after(ADOPT_POLL).await;
                }
                _ => {
                    self.stats.writes_unconfirmed += 1;
                    return Err(DeviceError::CurveNotAdopted {
                        device: self.params.name.clone(),
                        model: ctl.id,
                        curve: plan.index,
                        result: freq_droop::result_name(&regs),
                    });
                }
            }
        }
        let after = self.write_and_confirm(ctl, vec![plan.enable]).await?;
        Ok(freq_droop::decode(&after))
    }

    /// [`Device::set_freq_droop`] on an inverter whose droop model is 127: the nominal
    /// frequency from its 121 `ECPNomHz` (read now) or 50 Hz, the parameters written
    /// and read back, then `ModEna` ([`freq_droop::plan_127`]).
    async fn set_freq_droop_127(
        &mut self,
        ctl: ModelRef,
        before: &[u16],
        droop: Option<&crate::sep2::FreqDroop>,
    ) -> Result<freq_droop::FreqDroopState, DeviceError> {
        let map = self.inverter_map().await?;
        let settings = match map.find(121).copied() {
            Some(m) => Some(self.read_model(&m).await?),
            None => None,
        };
        let nominal = freq_droop::NominalHz::of_121(settings.as_deref());
        let writes = match droop {
            Some(droop) => freq_droop::plan_127(&ctl, before, droop, nominal),
            None => freq_droop::plan_clear(&ctl, before),
        }
        .map_err(|e| self.sunspec_err(e))?;
        let after = self.write_and_confirm(ctl, writes).await?;
        Ok(freq_droop::decode_127(&after, nominal))
    }

    /// Limits a storage inverter's charging to `limit_w` (model 124 InWRte with the
    /// CHARGE bit of StorCtl_Mod), or lifts the limit (`None`), with a revert timer of
    /// `revert_s` seconds (the caller re-sends before it runs out), then reads back to
    /// confirm. Returns the storage state as read back.
    pub async fn set_charge_limit_w(
        &mut self,
        limit_w: Option<f64>,
        revert_s: u32,
    ) -> Result<StorageState, DeviceError> {
        let map = self.inverter_map().await?;
        let ctl = map.find(124).copied().ok_or_else(|| {
            self.sunspec_err(SunSpecError::MissingModel {
                wanted: "basic storage controls (124)",
                present: map.ids(),
            })
        })?;
        let before = self.read_model(&ctl).await?;
        let writes = sunspec::plan_charge_limit(&ctl, &before, limit_w, revert_s)
            .map_err(|e| self.sunspec_err(e))?;
        let after = self.write_and_confirm(ctl, writes).await?;
        Ok(sunspec::decode_124(&after))
    }

    /// Makes a storage inverter hold `target_w` (positive discharges, negative charges;
    /// `None` ends the target) through model 124's rate window, then reads back to
    /// confirm ([`sunspec::plan_storage_target`]).
    pub async fn set_storage_target_w(
        &mut self,
        target_w: Option<f64>,
        revert_s: u32,
    ) -> Result<StorageState, DeviceError> {
        let map = self.inverter_map().await?;
        let ctl = map.find(124).copied().ok_or_else(|| {
            self.sunspec_err(SunSpecError::MissingModel {
                wanted: "basic storage controls (124)",
                present: map.ids(),
            })
        })?;
        let before = self.read_model(&ctl).await?;
        let writes = sunspec::plan_storage_target(&ctl, &before, target_w, revert_s)
            .map_err(|e| self.sunspec_err(e))?;
        let after = self.write_and_confirm(ctl, writes).await?;
        Ok(sunspec::decode_124(&after))
    }

    /// Connects (true) or disconnects (false) the inverter from the grid (model 123 Conn),
    /// then reads back to confirm.
    pub async fn set_connected(&mut self, connected: bool) -> Result<(), DeviceError> {
        let map = self.inverter_map().await?;
        let ctl = map.find(123).copied().ok_or_else(|| {
            self.sunspec_err(SunSpecError::MissingModel {
                wanted: "immediate controls (123)",
                present: map.ids(),
            })
        })?;
        let before = self.read_model(&ctl).await?;
        let writes =
            sunspec::plan_connect(&ctl, &before, connected).map_err(|e| self.sunspec_err(e))?;
        self.write_and_confirm(ctl, writes).await?;
        Ok(())
    }
}
