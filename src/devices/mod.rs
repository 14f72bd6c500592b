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
pub mod modbus;
pub mod sunspec;

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use modbus::{Bus, BusParams, LinkStats, ModbusError, Parity, TransportParams};
pub use sunspec::{
    Blocks, CommonInfo, InverterReading, LimitState, MeterReading, ModelRef, OperatingState,
    RevertPolicy, StorageState, SunSpecError, SunSpecMap,
};

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
        }
    }
}

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
        detail: String,
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
    pub models: Vec<u16>,
    pub common: Option<CommonInfo>,
    pub stats: DeviceStats,
}

/// One SunSpec device (inverter or meter) at a unit id on a bus.
pub struct Device {
    bus: Rc<Bus>,
    params: DeviceParams,
    map: Option<SunSpecMap>,
    common: Option<CommonInfo>,
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
            common: None,
            stats: DeviceStats::default(),
            last_reading_at: None,
            static_blocks: None,
        }
    }

    pub fn params(&self) -> &DeviceParams {
        &self.params
    }
    pub fn map(&self) -> Option<&SunSpecMap> {
        self.map.as_ref()
    }
    pub fn common(&self) -> Option<&CommonInfo> {
        self.common.as_ref()
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
            models: self.map.as_ref().map(|m| m.ids()).unwrap_or_default(),
            common: self.common.clone(),
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

    /// Finds the SunSpec map (configured base, else 40000, 0, 50000), checks `SunS` and
    /// walks the model chain to the end marker. Reads model 1 for identity.
    pub async fn scan(&mut self) -> Result<&SunSpecMap, DeviceError> {
        self.stats.scans += 1;
        let bases: Vec<u16> = match self.params.sunspec_base {
            Some(b) => vec![b],
            None => sunspec::DEFAULT_BASES.to_vec(),
        };
        let mut tried = Vec::new();
        let mut found = None;
        for base in bases {
            match self.read_registers(base, 2).await {
                Ok(regs) => match sunspec::check_marker(base, &regs) {
                    Ok(()) => {
                        found = Some(base);
                        break;
                    }
                    Err(e) => tried.push(e.to_string()),
                },
                // An exception (illegal address) means "not here"; a timeout means the
                // device is not answering at all: stop.
                Err(DeviceError::Modbus {
                    error: ModbusError::Exception(c),
                    ..
                }) => tried.push(format!("register {base}: exception {c}")),
                Err(e) => return Err(e),
            }
        }
        let Some(base) = found else {
            return Err(self.sunspec_err(SunSpecError::BrokenChain {
                at: 0,
                reason: format!("no SunSpec map found ({})", tried.join("; ")),
            }));
        };
        let mut map = SunSpecMap {
            base,
            models: Vec::new(),
        };
        let mut at = base.checked_add(2).ok_or_else(|| {
            self.sunspec_err(SunSpecError::BrokenChain {
                at: base,
                reason: "base address leaves no room for the model chain".into(),
            })
        })?;
        loop {
            let header = self.read_registers(at, 2).await?;
            let step = sunspec::chain_step(at, [header[0], header[1]], map.models.len())
                .map_err(|e| self.sunspec_err(e))?;
            match step {
                None => break,
                Some((m, next)) => {
                    map.models.push(m);
                    at = next;
                }
            }
        }
        if let Some(m1) = map.find(1).copied() {
            let regs = self
                .read_registers(m1.start, m1.total_len().min(68))
                .await?;
            self.common = Some(sunspec::decode_common(&regs));
        }
        log::info!(
            "device '{}': SunSpec map at {} with models {:?}",
            self.params.name,
            map.base,
            map.ids()
        );
        self.static_blocks = None;
        Ok(&*self.map.insert(map))
    }

    async fn ensure_map(&mut self) -> Result<SunSpecMap, DeviceError> {
        if self.map.is_none() {
            self.scan().await?;
        }
        self.map.clone().ok_or_else(|| {
            self.sunspec_err(SunSpecError::BrokenChain {
                at: 0,
                reason: "no map".into(),
            })
        })
    }

    async fn read_model(&mut self, m: &ModelRef) -> Result<Vec<u16>, DeviceError> {
        self.read_registers(m.start, m.total_len()).await
    }

    async fn read_blocks(&mut self, ids: &[u16]) -> Result<Blocks, DeviceError> {
        let map = self.ensure_map().await?;
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
        let map = self.ensure_map().await?;
        let meas = map
            .find_any(&sunspec::INVERTER_MODELS)
            .map(|m| m.id)
            .ok_or_else(|| {
                self.sunspec_err(SunSpecError::MissingModel {
                    wanted: "inverter measurement (101-103, 111-113, 701)",
                    present: map.ids(),
                })
            })?;
        if self.static_blocks.is_none() {
            self.static_blocks = Some(self.read_blocks(&[120, 121, 702]).await?);
        }
        let mut blocks = self.read_blocks(&[meas, 122, 123, 124, 704]).await?;
        if let Some(st) = &self.static_blocks {
            blocks.extend(st.iter().map(|(k, v)| (*k, v.clone())));
        }
        let r = sunspec::decode_inverter(&blocks).map_err(|e| self.sunspec_err(e))?;
        self.last_reading_at = Some(Instant::now());
        Ok(r)
    }

    /// Reads and decodes a meter (201-204 or 211-214). `ac.w` > 0 = import.
    pub async fn read_meter(&mut self) -> Result<MeterReading, DeviceError> {
        let map = self.ensure_map().await?;
        let id = map
            .find_any(&sunspec::METER_MODELS)
            .map(|m| m.id)
            .ok_or_else(|| {
                self.sunspec_err(SunSpecError::MissingModel {
                    wanted: "meter (201-204, 211-214)",
                    present: map.ids(),
                })
            })?;
        let blocks = self.read_blocks(&[id]).await?;
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
        let unit = self.params.unit_id;
        for w in &writes {
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

    /// Limits active power to `pct` % of WMax through model 704 when present, else 123,
    /// with a revert timer so that a csipd that stops refreshing does not leave the limit
    /// running forever (704 also reverts to `revert.fallback_pct`; 123 reverts to the
    /// inverter's default). The caller must re-send before `revert.timeout_s` runs out.
    /// Writes only the control registers, then reads the model back to confirm.
    pub async fn set_active_power_limit_pct(
        &mut self,
        pct: f64,
        revert: RevertPolicy,
    ) -> Result<LimitState, DeviceError> {
        let map = self.ensure_map().await?;
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

    /// Limits a storage inverter's charging to `limit_w` (model 124 InWRte with the
    /// CHARGE bit of StorCtl_Mod), or lifts the limit (`None`), with a revert timer of
    /// `revert_s` seconds (the caller re-sends before it runs out), then reads back to
    /// confirm. Returns the storage state as read back.
    pub async fn set_charge_limit_w(
        &mut self,
        limit_w: Option<f64>,
        revert_s: u32,
    ) -> Result<StorageState, DeviceError> {
        let map = self.ensure_map().await?;
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

    /// Connects (true) or disconnects (false) the inverter from the grid (model 123 Conn),
    /// then reads back to confirm.
    pub async fn set_connected(&mut self, connected: bool) -> Result<(), DeviceError> {
        let map = self.ensure_map().await?;
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
