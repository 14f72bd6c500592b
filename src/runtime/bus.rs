//! One task per Modbus bus: reads every device on it once a cycle (and a site meter on
//! it every `Config::meter_period_ms` in between, waking the coordinator's
//! feed-forward), stores the readings in the shared site state, and writes the
//! coordinator's setpoints to the inverters (refreshing them before the inverter's
//! revert timer runs out).

use super::site::{Command, DeviceState, SharedSite, Written};
use crate::config::{self, DeviceRole};
use crate::control::{InverterSettings, Setting};
use crate::devices::{
    Bus, BusParams, Controls, Device, DeviceParams, Excitation, FixedPf, RevertPolicy,
    TransportParams,
};
use crate::schedule::ControlMode;
use crate::status;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The inverter drops csipd's limit this long after the last refresh (csipd gone).
pub const REVERT_TIMEOUT_S: u32 = 120;
/// Re-send an unchanged setpoint this often, well before the revert timer runs out.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// A setpoint change smaller than this (percent of rating) is not written, unless it
/// tightens: that keeps a 9600-baud line from carrying a write every cycle.
pub const WRITE_DEADBAND_PCT: f64 = 0.5;
/// A charge limit change smaller than this (W) is not written unless it tightens.
pub const CHARGE_DEADBAND_W: f64 = 50.0;

/// The bus a device is on, as the device layer wants it (None: not a Modbus device).
pub fn bus_params(d: &config::DeviceConfig) -> Option<BusParams> {
    let mut p = match &d.transport {
        config::Transport::Powerwall { .. } => return None,
        config::Transport::Tcp { host, port } => BusParams::tcp(host, *port),
        config::Transport::Rtu {
            path,
            baud,
            parity,
            stop_bits,
        } => {
            let mut p = BusParams::rtu(path, *baud);
            p.transport = TransportParams::Rtu {
                path: path.clone(),
                baud: *baud,
                parity: match parity {
                    config::Parity::None => crate::devices::Parity::None,
                    config::Parity::Even => crate::devices::Parity::Even,
                    config::Parity::Odd => crate::devices::Parity::Odd,
                },
                stop_bits: *stop_bits,
            };
            p
        }
    };
    p.timeout = Duration::from_millis(u64::from(d.timeout_ms));
    Some(p)
}

/// Groups the enabled devices by bus: devices on the same transport share one `Bus`
/// (one request on the wire at a time). Order follows the config.
pub fn group_by_bus(
    devices: &[config::DeviceConfig],
) -> Vec<(BusParams, Vec<config::DeviceConfig>)> {
    let mut groups: Vec<(BusParams, Vec<config::DeviceConfig>)> = Vec::new();
    for d in devices.iter().filter(|d| d.enabled) {
        let Some(p) = bus_params(d) else { continue };
        match groups.iter_mut().find(|(q, _)| q.transport == p.transport) {
            Some((_, list)) => list.push(d.clone()),
            None => groups.push((p, vec![d.clone()])),
        }
    }
    groups
}

struct Slot {
    config: config::DeviceConfig,
    device: Device,
    /// The last setpoint written and when (monotonic), for deadband and refresh.
    last_write: Option<(f64, Instant)>,
    last_connect: Option<bool>,
    /// The last charge limit written (None = lifted) and when, for storage inverters.
    last_charge_write: Option<(Option<f64>, Instant)>,
    /// The last storage target written (opModStorageTargetW, W) and when; `None` while
    /// no target is in force.
    last_target_write: Option<(f64, Instant)>,
    /// The missing control model was logged (once per run, not per cycle).
    capability_logged: bool,
    /// The utility's inverter settings (curves, power factor, var) as last put on this
    /// inverter and confirmed by read-back; a change is written once.
    settings_applied: InverterSettings,
    /// Per setting whose write failed (by its name: the mode's, or `setES`): the error
    /// and when, so that it is said once
    /// (not every cycle) and tried again after [`SETTING_RETRY`].
    settings_failed: BTreeMap<&'static str, (String, Instant)>,
}

/// A failed write of an inverter setting is tried again this long after.
pub const SETTING_RETRY: Duration = Duration::from_secs(60);

/// The capability fact of an inverter without a SunSpec control model, as the log and
/// the status say it: it is read, never limited.
pub fn no_control_model_text(name: &str, role: DeviceRole, controls: &Controls) -> Option<String> {
    let missing = match role {
        DeviceRole::Meter => return None,
        _ if !controls.can_limit_power() => "no control model (SunSpec 123 or 704)",
        DeviceRole::Storage if !controls.charge_limit => "no storage control model (SunSpec 124)",
        _ => return None,
    };
    Some(format!(
        "device '{name}' has {missing}: csipd reads it but cannot limit it"
    ))
}

/// DERCapability says only what the site can do: when every inverter that has been read
/// lacks a control model (SunSpec 123/704, or SolarEdge's registers), the nameplate
/// offers no export or generation limit. `controls` are the controlled inverters' (None
/// while not yet read). Returns whether it took them away.
pub fn restrict_to_controls(
    nameplate: &mut crate::csip::Nameplate,
    controls: impl Iterator<Item = Option<Controls>>,
) -> bool {
    let known: Vec<Controls> = controls.flatten().collect();
    if known.is_empty() || known.iter().any(|c| c.can_limit_power()) {
        return false;
    }
    nameplate.can_limit_export = false;
    nameplate.can_limit_generation = false;
    true
}

/// The text for an inverter that was read, has a control model, but whose rating is
/// unknown (no SunSpec 120/121/702 and no `rated_w`): csipd cannot turn watts into
/// the percentage the control model takes, so it leaves the inverter alone.
pub fn no_rating_text(name: &str) -> String {
    format!(
        "device '{name}' reports no power rating (SunSpec 120, 121 or 702): set option \
         'rated_w' for csipd to limit it"
    )
}

/// Marks the limits in force that a device should enforce but cannot: export,
/// generation and connect limits need the inverters' 123 or 704 (connect: 123's Conn),
/// and a power limit needs the inverter's rating. `devices` are the controlled devices
/// (inverters and storage): name, what each lets csipd control (`None` while not yet
/// read) and whether its rating is known. The text is "not enforceable: <device> has
/// no control model" (or "… has no power rating"). A site whose other inverters can be
/// limited is still marked: csipd does not claim the whole of a limit is kept while one
/// of its inverters runs free.
pub fn mark_not_enforceable<'a>(
    limits: &mut [status::ActiveLimit],
    devices: impl Iterator<Item = (&'a str, Option<Controls>, bool)>,
) {
    let mut no_limit = Vec::new();
    let mut no_rating = Vec::new();
    let mut no_connect = Vec::new();
    let mut configured = 0;
    for (name, controls, rated) in devices {
        configured += 1;
        let Some(c) = controls else { continue };
        if !c.can_limit_power() {
            no_limit.push(name);
        } else if !rated {
            no_rating.push(name);
        }
        if !c.connect {
            no_connect.push(name);
        }
    }
    let text = |names: &[&str], what: &str| {
        let verb = if names.len() == 1 { "has" } else { "have" };
        format!("{} {verb} no {what}", names.join(", "))
    };
    for l in limits.iter_mut() {
        let mut why = Vec::new();
        match l.mode {
            // Nothing to write a limit to: the limit is computed and shown, never kept.
            status::LimitMode::Export | status::LimitMode::Generation if configured == 0 => {
                why.push("no inverter or battery is configured".to_string());
            }
            status::LimitMode::Connect if l.connect == Some(false) && configured == 0 => {
                why.push("no inverter or battery is configured".to_string());
            }
            status::LimitMode::Export | status::LimitMode::Generation => {
                if !no_limit.is_empty() {
                    why.push(text(&no_limit, "control model"));
                }
                if !no_rating.is_empty() {
                    why.push(text(&no_rating, "power rating"));
                }
            }
            status::LimitMode::Connect if l.connect == Some(false) && !no_connect.is_empty() => {
                why.push(text(&no_connect, "control model"));
            }
            _ => {}
        }
        if !why.is_empty() {
            l.not_enforceable = Some(format!("not enforceable: {}", why.join("; ")));
        }
    }
}

/// Runs one bus forever: poll every device, then sleep out the cycle; a meter on the
/// bus is read again every `meter_period` in between (`Config::meter_period_ms`).
pub async fn run_bus(
    params: BusParams,
    devices: Vec<config::DeviceConfig>,
    cycle: Duration,
    meter_period: Duration,
    stale_after: Duration,
    site: SharedSite,
) {
    let bus = Rc::new(Bus::new(params));
    let mut slots: Vec<Slot> = devices
        .into_iter()
        .map(|c| {
            let mut p = DeviceParams::new(&c.name, c.unit_id);
            p.sunspec_base = c.sunspec_base;
            p.chain_device = c.chain_device;
            p.power_control = c.power_control;
            p.stale_after = stale_after;
            p.timeout = Some(Duration::from_millis(u64::from(c.timeout_ms)));
            Slot {
                device: Device::new(bus.clone(), p),
                config: c,
                last_write: None,
                last_connect: None,
                last_charge_write: None,
                last_target_write: None,
                capability_logged: false,
                settings_applied: InverterSettings::default(),
                settings_failed: BTreeMap::new(),
            }
        })
        .collect();
    // The coordinator wakes this task when it has new setpoints, so a tightened limit
    // reaches the inverter at once instead of at the next poll.
    let (wake_tx, wake_rx) = smol::channel::bounded::<()>(1);
    let has_inverters = slots.iter().any(|s| s.config.role != DeviceRole::Meter);
    let has_meter = slots.iter().any(|s| s.config.role == DeviceRole::Meter);
    {
        let mut s = site.borrow_mut();
        for slot in &slots {
            s.devices
                .entry(slot.config.name.clone())
                .or_insert_with(|| DeviceState::new(slot.config.role));
        }
        if has_inverters {
            s.command_wake.push(wake_tx);
        }
    }
    loop {
        let started = Instant::now();
        for slot in &mut slots {
            poll_device(slot, &site).await;
        }
        let next_poll = started + cycle.max(Duration::from_millis(10));
        let mut next_meter = (has_meter && meter_period < cycle).then(|| started + meter_period);
        loop {
            // A meter read between cycles, unless the cycle's own is due within half a
            // meter period.
            let deadline = match next_meter {
                Some(t) if t + meter_period / 2 <= next_poll => t,
                _ => next_poll,
            };
            let woken = smol::future::or(
                async {
                    smol::Timer::at(deadline).await;
                    false
                },
                async {
                    match wake_rx.recv().await {
                        Ok(()) => true,
                        // No sender (not registered): only the poll timer remains.
                        Err(_) => std::future::pending().await,
                    }
                },
            )
            .await;
            if !woken && deadline == next_poll {
                break;
            }
            if !woken {
                for slot in slots
                    .iter_mut()
                    .filter(|s| s.config.role == DeviceRole::Meter)
                {
                    poll_device(slot, &site).await;
                }
                next_meter = next_meter.map(|t| t + meter_period);
                continue;
            }
            for slot in slots
                .iter_mut()
                .filter(|s| s.config.role != DeviceRole::Meter)
            {
                let command = site.borrow().commands.get(&slot.config.name).cloned();
                if let Some(cmd) = command {
                    apply_command(slot, cmd, &site).await;
                }
            }
        }
    }
}

async fn poll_device(slot: &mut Slot, site: &SharedSite) {
    let name = slot.config.name.clone();
    match slot.config.role {
        DeviceRole::Meter => {
            let r = slot.device.read_meter().await;
            let mut s = site.borrow_mut();
            let st = s
                .devices
                .entry(name.clone())
                .or_insert_with(|| DeviceState::new(DeviceRole::Meter));
            match r {
                Ok(m) => {
                    st.record_meter(&m, Instant::now());
                    if s.meter_name.as_deref() == Some(name.as_str()) {
                        if let Some(wake) = &s.meter_wake {
                            let _ = wake.try_send(());
                        }
                    }
                }
                Err(e) => st.record_read_error(e.to_string()),
            }
        }
        DeviceRole::Inverter | DeviceRole::Storage => {
            let r = slot.device.read_inverter().await;
            {
                let mut s = site.borrow_mut();
                let st = s
                    .devices
                    .entry(name.clone())
                    .or_insert_with(|| DeviceState::new(slot.config.role));
                match r {
                    Ok(inv) => {
                        st.record_inverter(&inv, slot.config.rated_w, Instant::now());
                        if !slot.capability_logged {
                            slot.capability_logged = true;
                            let text =
                                no_control_model_text(&name, slot.config.role, &inv.controls)
                                    .or_else(|| {
                                        st.rating_w.is_none().then(|| no_rating_text(&name))
                                    });
                            if let Some(text) = text {
                                log::warn!("{text}");
                            }
                        }
                        // Follow what the inverter says it is commanded to, so a change
                        // made behind csipd's back is corrected, and nothing is written
                        // when it already matches.
                        if let Some(conn) = inv.limit.as_ref().and_then(|l| l.conn_commanded) {
                            slot.last_connect = Some(conn);
                        }
                    }
                    Err(e) => {
                        st.record_read_error(e.to_string());
                        return;
                    }
                }
            }
            let command = site.borrow().commands.get(&name).cloned();
            if let Some(cmd) = command {
                apply_command(slot, cmd, site).await;
            }
        }
    }
}

/// Writes a storage inverter's charge limit when it changed beyond the deadband,
/// tightened, or is due for a refresh before the inverter's revert timer runs out. A
/// limit at or above WChaMax is written as "no limit".
async fn apply_charge_limit(slot: &mut Slot, cmd: &Command, site: &SharedSite) {
    let Some(wanted_w) = cmd.charge_limit_w else {
        return;
    };
    let name = slot.config.name.clone();
    let now = Instant::now();
    let max_w = site
        .borrow()
        .devices
        .get(&name)
        .and_then(|d| d.max_charge_w)
        .unwrap_or(f64::INFINITY);
    let wanted = (wanted_w < max_w - 0.5).then_some(wanted_w.max(0.0));
    let due = match slot.last_charge_write {
        None => true,
        Some((last, at)) => match (last, wanted) {
            (None, None) => false,
            (Some(_), None) | (None, Some(_)) => true,
            (Some(last), Some(w)) => {
                w < last - 1.0
                    || (w - last).abs() >= CHARGE_DEADBAND_W
                    || now.saturating_duration_since(at) >= REFRESH_EVERY
            }
        },
    };
    if !due {
        return;
    }
    let r = slot
        .device
        .set_charge_limit_w(wanted, REVERT_TIMEOUT_S)
        .await;
    let mut s = site.borrow_mut();
    let Some(st) = s.devices.get_mut(&name) else {
        return;
    };
    match r {
        Ok(state) => {
            if slot.last_charge_write.map(|(w, _)| w) != Some(wanted) {
                log::debug!("device '{name}': charge limit {wanted:?} W");
            }
            slot.last_charge_write = Some((wanted, now));
            st.writes_ok += 1;
            st.charge_limit_w = state.charge_limit_w();
        }
        Err(e) => st.record_write_error(e.to_string()),
    }
}

/// Writes a storage inverter's target (the utility's opModStorageTargetW as the control
/// law held it) when it changed beyond the deadband or is due for a refresh before the
/// inverter's revert timer runs out; ends it (both rate bits cleared) when the target
/// goes, after which the charge limit is written again. Returns whether a target is in
/// force (the charge limit is left alone then: the target owns the rates).
async fn apply_storage_target(slot: &mut Slot, cmd: &Command, site: &SharedSite) -> bool {
    let name = slot.config.name.clone();
    let now = Instant::now();
    let wanted = cmd.storage_target_w.filter(|w| w.is_finite());
    let due = match (slot.last_target_write, wanted) {
        (None, None) => return false,
        (Some(_), None) | (None, Some(_)) => true,
        (Some((last, at)), Some(w)) => {
            (w - last).abs() >= CHARGE_DEADBAND_W
                // Holding back harder (a tighter limit) is written at once.
                || (w.abs() < last.abs() - 1.0)
                || now.saturating_duration_since(at) >= REFRESH_EVERY
        }
    };
    if !due {
        return true;
    }
    let r = slot
        .device
        .set_storage_target_w(wanted, REVERT_TIMEOUT_S)
        .await;
    let mut s = site.borrow_mut();
    let Some(st) = s.devices.get_mut(&name) else {
        return wanted.is_some();
    };
    match r {
        Ok(state) => {
            match wanted {
                Some(w) => {
                    if slot.last_target_write.is_none() {
                        log::info!("device '{name}': storage target {w:.0} W");
                    }
                    slot.last_target_write = Some((w, now));
                }
                None => {
                    log::info!("device '{name}': storage target ended");
                    slot.last_target_write = None;
                    // The target cleared the charge bit: write the charge limit again.
                    slot.last_charge_write = None;
                }
            }
            st.writes_ok += 1;
            st.charge_limit_w = state.charge_limit_w();
        }
        Err(e) => st.record_write_error(e.to_string()),
    }
    wanted.is_some()
}

/// Writes what the device has a control model for; the rest is a capability fact,
/// said once when the device is first read and shown in the status, not an error
/// repeated every cycle.
async fn apply_command(slot: &mut Slot, cmd: Command, site: &SharedSite) {
    let controls = slot.device.controls().unwrap_or_default();
    if slot.config.role == DeviceRole::Storage
        && controls.charge_limit
        && !apply_storage_target(slot, &cmd, site).await
    {
        apply_charge_limit(slot, &cmd, site).await;
    }
    let name = slot.config.name.clone();
    let now = Instant::now();
    if controls.connect && slot.last_connect != Some(cmd.connect) {
        let r = slot.device.set_connected(cmd.connect).await;
        let mut s = site.borrow_mut();
        if let Some(st) = s.devices.get_mut(&name) {
            match r {
                Ok(()) => {
                    slot.last_connect = Some(cmd.connect);
                    st.writes_ok += 1;
                    log::info!(
                        "device '{name}': {}",
                        if cmd.connect {
                            "connected"
                        } else {
                            "disconnected"
                        }
                    );
                }
                Err(e) => st.record_write_error(e.to_string()),
            }
        }
    }
    apply_settings(slot, &cmd.settings, &controls, site).await;
    if !controls.can_limit_power() {
        return;
    }
    let pct = cmd.setpoint_pct.clamp(0.0, 100.0);
    let due = match slot.last_write {
        None => true,
        Some((last, at)) => {
            pct < last - 0.01
                || (pct - last).abs() >= WRITE_DEADBAND_PCT
                || now.saturating_duration_since(at) >= REFRESH_EVERY
        }
    };
    if !due {
        return;
    }
    let revert = RevertPolicy {
        timeout_s: REVERT_TIMEOUT_S,
        fallback_pct: cmd.fallback_pct.clamp(0.0, 100.0),
    };
    let r = slot.device.set_active_power_limit_pct(pct, revert).await;
    let mut s = site.borrow_mut();
    let Some(st) = s.devices.get_mut(&name) else {
        return;
    };
    match r {
        Ok(state) => {
            slot.last_write = Some((pct, now));
            st.writes_ok += 1;
            st.written = Some(Written {
                limit_pct: state.limit_pct.unwrap_or(pct),
                limit_w: cmd.setpoint_w,
                connect: cmd.connect,
                at_unix_s: super::unix_now_s(),
            });
        }
        Err(e) => st.record_write_error(e.to_string()),
    }
}

/// Puts the utility's curves, power factor and var level on the inverter where they
/// changed since the last confirmed write and the inverter offers the mode (its SunSpec
/// models, `Controls::offers`; one that does not is left alone: DERCapability did not
/// claim the mode for the site). A failed write is said once per mode (the device's
/// error in the status and log, one `ControlNotApplied` LogEvent) and tried again after
/// [`SETTING_RETRY`] with the same message said no more. A setting the utility no
/// longer sets is switched off (`clear_curve`, `set_fixed_pf(None)`,
/// `set_fixed_var_pct(None)`, `set_target_var(None)`, `set_freq_droop(None)`); one
/// csipd never set is left as the installer left it. The default's enter-service
/// settings go to model 703 the same way, except that when the utility sets them no
/// more nothing is written: they are the inverter's settings, not a mode with an end,
/// and it keeps the last ones (README, "Curves, power factor and var from the
/// utility").
async fn apply_settings(
    slot: &mut Slot,
    wanted: &InverterSettings,
    controls: &Controls,
    site: &SharedSite,
) {
    let now = Instant::now();
    for mode in InverterSettings::MODES {
        if !controls.offers(mode) || wanted.same(&slot.settings_applied, mode) {
            slot.settings_failed.remove(mode.name());
            continue;
        }
        if retry_pending(slot, mode.name(), now) {
            continue;
        }
        let mut nominal = None;
        let result = write_setting(&mut slot.device, mode, wanted.get(mode), &mut nominal).await;
        if settled(slot, mode.name(), result, now, site) {
            slot.settings_applied.copy_from(wanted, mode);
            if mode == ControlMode::FreqDroop {
                let name = slot.config.name.clone();
                if let Some(st) = site.borrow_mut().devices.get_mut(&name) {
                    st.droop_nominal = nominal;
                }
            }
        }
    }
    let es_wanted = wanted.enter_service.filter(|_| controls.enter_service);
    match es_wanted {
        Some(es) if slot.settings_applied.enter_service != Some(es) => {
            if !retry_pending(slot, ENTER_SERVICE, now) {
                let result =
                    slot.device.set_enter_service(&es).await.map(|_| {
                        format!("set: {}", crate::control::limits::enter_service_text(&es))
                    });
                if settled(slot, ENTER_SERVICE, result, now, site) {
                    slot.settings_applied.enter_service = Some(es);
                }
            }
        }
        Some(_) => {}
        None => {
            slot.settings_applied.enter_service = None;
            slot.settings_failed.remove(ENTER_SERVICE);
        }
    }
}

/// The key and log name of the enter-service settings among the settings' failures.
const ENTER_SERVICE: &str = "setES";

/// The setting `key` failed less than [`SETTING_RETRY`] ago: not tried again yet.
fn retry_pending(slot: &Slot, key: &str, now: Instant) -> bool {
    slot.settings_failed
        .get(key)
        .is_some_and(|(_, at)| now.saturating_duration_since(*at) < SETTING_RETRY)
}

/// Records a setting write's result: logged and counted when it worked, the device's
/// error said once (not again while the same error repeats) when it failed. Returns
/// whether it worked.
fn settled(
    slot: &mut Slot,
    key: &'static str,
    result: Result<String, crate::devices::DeviceError>,
    now: Instant,
    site: &SharedSite,
) -> bool {
    // Cloned only when something was written: this runs every cycle per inverter.
    let name = slot.config.name.clone();
    let mut s = site.borrow_mut();
    let Some(st) = s.devices.get_mut(&name) else {
        return false;
    };
    match result {
        Ok(what) => {
            slot.settings_failed.remove(key);
            st.writes_ok += 1;
            log::info!("device '{name}': {key} {what}");
            true
        }
        Err(e) => {
            let e = format!("{key}: {e}");
            let said = slot
                .settings_failed
                .get(key)
                .is_some_and(|(before, _)| *before == e);
            if !said {
                st.record_write_error(e.clone());
            }
            slot.settings_failed.insert(key, (e, now));
            false
        }
    }
}

/// The device layer's fixed power factor for a 2030.5 PowerFactorWithExcitation.
fn fixed_pf(pf: &crate::sep2::PowerFactorWithExcitation) -> FixedPf {
    FixedPf {
        pf: crate::schedule::power_factor(*pf),
        excitation: Excitation::from_2030_5_flag(pf.excitation),
    }
}

/// Writes one setting, or switches it off when the utility sets it no more (with
/// read-back, in the device layer); `Ok` says what is now in force, `Err` the device's
/// error as the status shows it.
async fn write_setting(
    device: &mut Device,
    mode: ControlMode,
    wanted: Option<&Setting>,
    nominal: &mut Option<crate::devices::freq_droop::NominalHz>,
) -> Result<String, crate::devices::DeviceError> {
    // What the device adds to the log line: the nominal frequency a 127 droop used.
    let mut note = None;
    match (mode, wanted) {
        (_, Some(Setting::Curve(curve))) => device.set_curve(curve).await.map(drop),
        (_, Some(Setting::PowerFactor(pf))) => device
            .set_fixed_pf(mode, Some(fixed_pf(pf)))
            .await
            .map(drop),
        (ControlMode::FixedPFInjectW | ControlMode::FixedPFAbsorbW, None) => {
            device.set_fixed_pf(mode, None).await.map(drop)
        }
        (_, Some(Setting::VarPct(pct))) => device.set_fixed_var_pct(Some(*pct)).await.map(drop),
        (ControlMode::FixedVar, None) => device.set_fixed_var_pct(None).await.map(drop),
        (_, Some(Setting::Var(var))) => device.set_target_var(Some(*var)).await.map(drop),
        (ControlMode::TargetVar, None) => device.set_target_var(None).await.map(drop),
        (_, Some(Setting::FreqDroop(d))) => device.set_freq_droop(Some(d)).await.map(|st| {
            *nominal = st.nominal;
            note = st.nominal.map(|n| format!(" (model 127, {})", n.text()));
        }),
        (ControlMode::FreqDroop, None) => device.set_freq_droop(None).await.map(drop),
        // The curve modes (a mode without a curve model is refused by the device).
        (_, None) => device.clear_curve(mode).await.map(drop),
    }
    .map(|()| match wanted {
        Some(s) => format!("set: {}{}", s.text(), note.unwrap_or_default()),
        None => "off".to_string(),
    })
}

/// The enabled Powerwall gateways (site meters over HTTPS), each run by its own task.
pub fn powerwall_devices(devices: &[config::DeviceConfig]) -> Vec<config::DeviceConfig> {
    devices
        .iter()
        .filter(|d| d.enabled && matches!(d.transport, config::Transport::Powerwall { .. }))
        .cloned()
        .collect()
}

/// Reads a Powerwall gateway's site meter once a cycle into the shared site state,
/// like a Modbus meter: a failure makes it stale (and the coordinator goes to its
/// fail-safe as for any stale meter). The HTTPS exchange runs on smol's blocking pool.
/// A first-use certificate pin is kept in `data_dir` as `powerwall-NAME.fingerprint`.
pub async fn run_powerwall(
    device: config::DeviceConfig,
    data_dir: String,
    cycle: Duration,
    site: SharedSite,
) {
    use crate::devices::powerwall::{Gateway, PowerwallParams};
    let config::Transport::Powerwall {
        host,
        port,
        password,
        password_file,
        fingerprint,
    } = &device.transport
    else {
        return;
    };
    let name = device.name.clone();
    site.borrow_mut()
        .devices
        .entry(name.clone())
        .or_insert_with(|| DeviceState::new(DeviceRole::Meter));
    let mut gateway: Option<Gateway> = None;
    loop {
        let started = Instant::now();
        if gateway.is_none() {
            // The password (or its file) is read until it can be: a file put in place
            // later is picked up without a restart.
            let pw = match (password, password_file) {
                (Some(p), _) => Ok(p.clone()),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| format!("device '{name}': password_file {f}: {e}")),
                (None, None) => Err(format!("device '{name}': no password")),
            };
            match pw {
                Ok(password) => {
                    gateway = Some(Gateway::new(PowerwallParams {
                        name: name.clone(),
                        host: host.clone(),
                        port: *port,
                        password,
                        fingerprint: fingerprint.clone(),
                        pin_file: Some(
                            std::path::Path::new(&data_dir)
                                .join(format!("powerwall-{name}.fingerprint")),
                        ),
                        timeout: Duration::from_millis(u64::from(device.timeout_ms)),
                    }))
                }
                Err(e) => {
                    let mut s = site.borrow_mut();
                    if let Some(st) = s.devices.get_mut(&name) {
                        st.record_read_error(e);
                    }
                }
            }
        }
        if let Some(mut gw) = gateway.take() {
            let (gw, r) = smol::unblock(move || {
                let r = gw.read_site();
                (gw, r)
            })
            .await;
            let mut s = site.borrow_mut();
            if let Some(st) = s.devices.get_mut(&name) {
                match r {
                    Ok(m) => st.record_meter(&m, Instant::now()),
                    Err(e) => st.record_read_error(e.to_string()),
                }
                st.tls_fingerprint = gw.fingerprint();
            }
            gateway = Some(gw);
        }
        smol::Timer::at(started + cycle.max(Duration::from_millis(100))).await;
    }
}

/// The devices map keys that the given configuration no longer has.
pub fn removed_devices(
    known: &BTreeMap<String, DeviceState>,
    devices: &[config::DeviceConfig],
) -> Vec<String> {
    known
        .keys()
        .filter(|k| !devices.iter().any(|d| d.enabled && &d.name == *k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(mode: status::LimitMode, connect: Option<bool>) -> status::ActiveLimit {
        status::ActiveLimit {
            mode,
            value_w: connect.is_none().then_some(1500.0),
            connect,
            source: status::LimitSource::Fixed {
                option: "export_limit_w".into(),
            },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        }
    }

    #[test]
    fn limits_a_device_cannot_enforce_are_marked_with_its_name() {
        let none = Controls::of_models([1, 113, 120, 121]);
        let full = Controls::of_models([1, 103, 120, 121, 123]);
        let mut limits = vec![
            limit(status::LimitMode::Export, None),
            limit(status::LimitMode::Import, None),
            limit(status::LimitMode::Connect, Some(false)),
        ];
        let devices = [
            ("fronius", Some(none), true),
            ("sma", Some(full), true),
            ("unread", None, false),
        ];
        mark_not_enforceable(&mut limits, devices.into_iter());
        assert_eq!(
            limits[0].not_enforceable.as_deref(),
            Some("not enforceable: fronius has no control model")
        );
        assert_eq!(limits[1].not_enforceable, None, "import is the battery's");
        assert_eq!(
            limits[2].not_enforceable.as_deref(),
            Some("not enforceable: fronius has no control model")
        );
        // A controllable inverter of unknown rating, and two without a control model.
        let mut limits = vec![limit(status::LimitMode::Generation, None)];
        let devices = [
            ("a", Some(none), true),
            ("b", Some(none), true),
            ("kostal", Some(full), false),
        ];
        mark_not_enforceable(&mut limits, devices.into_iter());
        assert_eq!(
            limits[0].not_enforceable.as_deref(),
            Some("not enforceable: a, b have no control model; kostal has no power rating")
        );
        // DERCapability: taken away only when no inverter read can be limited.
        let mut np = crate::csip::Nameplate {
            rtg_max_w: 5000.0,
            rtg_max_va: None,
            rtg_max_var: None,
            rtg_max_var_neg: None,
            rtg_v_nom: None,
            rtg_min_pf_over_excited: None,
            rtg_min_pf_under_excited: None,
            der_type: 4,
            can_limit_export: true,
            can_limit_import: false,
            can_limit_generation: true,
            can_limit_load: false,
            storage: None,
            inverter_modes: None,
        };
        assert!(!restrict_to_controls(
            &mut np,
            [None, Some(full), Some(none)].into_iter()
        ));
        assert!(!restrict_to_controls(&mut np, [None].into_iter()));
        assert_eq!(np.doe_modes(), 0b0101);
        assert!(restrict_to_controls(
            &mut np,
            [Some(none), None].into_iter()
        ));
        assert_eq!(np.doe_modes(), 0);
        // No inverter or battery configured at all (a meter alone, or nothing): export,
        // generation and disconnect are marked, import/load stay the storage's question.
        let mut limits = vec![
            limit(status::LimitMode::Export, None),
            limit(status::LimitMode::Generation, None),
            limit(status::LimitMode::Connect, Some(false)),
            limit(status::LimitMode::Import, None),
        ];
        mark_not_enforceable(&mut limits, std::iter::empty());
        for l in &limits[..3] {
            assert_eq!(
                l.not_enforceable.as_deref(),
                Some("not enforceable: no inverter or battery is configured"),
                "{:?}",
                l.mode
            );
        }
        assert_eq!(limits[3].not_enforceable, None);
        // Everything controllable: nothing marked.
        let mut limits = vec![limit(status::LimitMode::Export, None)];
        mark_not_enforceable(&mut limits, [("sma", Some(full), true)].into_iter());
        assert_eq!(limits[0].not_enforceable, None);
        assert!(no_control_model_text("m", DeviceRole::Meter, &none).is_none());
        assert!(
            no_control_model_text("bat", DeviceRole::Storage, &full)
                .unwrap()
                .contains("124")
        );
    }
}
