//! A SunSpec device simulator served over Modbus TCP (the demo's inverter and meter).
//!
//! One server holds several simulated devices, each at its own unit id, all with the
//! SunSpec map at 40000. The site physics (`sim::site`) sets the values from outside
//! (`SimInverter::set_output_w`, `SimMeter::set_power_w`) and reads back what csipd
//! commanded (`SimInverter::limit_pct`, `connected`). Frames are parsed and built by
//! rmodbus; the server runs on the smol loop (single thread, `Rc` handles).
//!
//! Layouts (offsets as in the SunSpec model definitions, like `devices::sunspec`):
//! - inverter: models 1, 103, 120, 121, 123, 126, 132, and on request
//!   ([`SunSpecSimulator::add_inverter_offering`]) any of [`OPTIONAL_MODELS`]: 131, 704,
//!   705, 706, 711, 712. Only the control points are writable (123's, the curve models'
//!   controls and writable curves, 704's settings, 711's writable control, model 1
//!   `DA`); a write anywhere else gets exception 2 (illegal data address), as strict
//!   real inverters answer. 126 (volt-var), 131 (watt-PF) and 132 (volt-watt) hold two
//!   curves of up to 4 points: curve 1 the read-only factory curve (AS/NZS 4777.2:2020
//!   Australia A; 131 the 4777.2:2015 watt-PF shape), curve 2 writable; the selected
//!   curve (`ActCrv`) is in force while `ModEna` bit 0 is set. 705/706/712 (3, 2 and 2
//!   curves of 4 points) and 711 (2 controls) work the 7xx way: slot 1 is read-only and
//!   in force while `Ena` is 1; writing an index to `AdptCrvReq` / `AdptCtlReq` copies
//!   that curve or control into slot 1 and answers `AdptCrvRslt` COMPLETED, or FAILED
//!   for a curve that is not one (no points, x not increasing, an unknown `DeptRef`, a
//!   zero droop gradient), then resets the request to 0. 704 carries the active power
//!   limit (with its revert timer and fallback; with 123's also on, the lower holds),
//!   the fixed power factors while injecting and absorbing (`PFWInj`, `PFWAbs`, PF_SF
//!   -3) and the var setpoint (`VarSetPct`, SF -1, or `VarSet` in var). What is in
//!   force is read with csipd's own decoders (`SimInverter::volt_var`, `watt_var`,
//!   `freq_droop`, …; 7xx before 1xx) and handed to the physics
//!   ([`SimInverter::drive`]), whose W, VAr, voltage and frequency go back to 103
//!   ([`SimInverter::show`]); 121 `VRef` (230 V) and `VArMaxQ1` (60 % of the rating)
//!   are what the curves' percentages refer to. (The revert timers of the reactive
//!   modes and the 7xx curves' `RspTms` are not modelled: the inverter's own lag is.)
//! - battery: the inverter's models plus 124 (basic storage controls: WChaMax,
//!   StorCtl_Mod, InWRte and its revert timer writable). Output is negative while it
//!   charges.
//! - meter: models 1, 203. Nothing is writable. `W` > 0 = import.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rmodbus::server::{ModbusFrame, Read, Write};
use rmodbus::{ErrorKind, ModbusProto};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor};

use crate::devices::curves::{self, Curve};
use crate::devices::curves_7xx;
use crate::devices::freq_droop::{self, FreqDroopState};
use crate::devices::reactive::{self, FixedPf};
use crate::devices::sunspec::{m123, m124, m704};
use crate::schedule::ControlMode;
use crate::sim::site::{SimInverter as PhysInverter, SimInverterKind};

/// Base address of every simulated map.
pub const SIM_BASE: u16 = 40000;

const NOT_IMPL_I16: u16 = 0x8000;

/// Model lengths (L) from the SunSpec model definitions.
const L_COMMON: u16 = 66;
const L_103: u16 = 50;
const L_120: u16 = 26;
const L_121: u16 = 30;
const L_123: u16 = 24;
const L_124: u16 = 24;
/// 126 and 132 with two curves (10 fixed registers, 54 per curve).
const L_CURVES: u16 = 10 + 2 * 54;
/// Registers before the first curve of 126/132, and of one curve.
const CURVES_FIXED: usize = 12;
const CURVE_LEN: usize = 54;
/// Nominal (reference) voltage, V.
pub const NOMINAL_V: f64 = 230.0;
/// The factory curves (curve 1, read-only): AS/NZS 4777.2:2020 Australia A. Volt-var:
/// 207, 220, 240, 258 V → +44, 0, 0, -60 % of VArMax; volt-watt: 253, 260 V → 100, 20 %
/// of WMax. Voltages in 0.1 % of VRef (V_SF -1), values in % (DeptRef_SF 0).
const FACTORY_VOLT_VAR: [(u16, i16); 4] = [(900, 44), (957, 0), (1043, 0), (1122, -60)];
const FACTORY_VOLT_WATT: [(u16, i16); 2] = [(1100, 100), (1130, 20)];
/// Model 131's factory watt-PF curve (curve 1, read-only): unity up to half the rating,
/// then to 0.90 absorbing at full output (the AS/NZS 4777.2:2015 shape). W in % of
/// WMax (W_SF 0), PF signed in hundredths (PF_SF -2).
const FACTORY_WATT_PF: [(i16, i16); 2] = [(50, 100), (100, -90)];
/// Model 712's factory watt-var curve: none until half the rating, then to 30 %
/// of VArMax absorbed at full output (W % of WMax, W_SF 0; var %, DeptRef_SF 0).
const FACTORY_WATT_VAR: [(i16, i16); 2] = [(50, 0), (100, -30)];
/// Model 711's factory droop (control 1, read-only): AS/NZS 4777.2:2020 Australia A,
/// output falling from 50.25 Hz to nothing at 52 Hz (k = 1.75 / 50 = 0.035) and the
/// mirror below 49.75 Hz; response 1 s. Db_SF -3 (mHz), K_SF -3, RspTms_SF -2.
const FACTORY_DROOP: [u16; 9] = [0, 250, 0, 250, 35, 35, 0, 100, 0];
const L_203: u16 = 105;

/// The control models a simulated inverter can offer beyond its standard set (1, 103,
/// 120, 121, 123, 126, 132): 131 watt-PF, and the 7xx series' 704 (AC controls: active
/// power limit, fixed PF while injecting and absorbing, var setpoint in % or var), 705
/// volt-var, 706 volt-watt, 711 frequency droop, 712 watt-var. csipd prefers a 7xx
/// model over its 1xx twin, so offering 704/705/706 moves the limit and curves there.
pub const OPTIONAL_MODELS: [u16; 6] = [131, 704, 705, 706, 711, 712];

/// 7xx lengths (L) as laid out here: 704 from model_704.json; 705 with 3 curves of 4
/// points (curve 1 the one in force), 706 and 712 with 2, 711 with 2 controls.
const L_704: u16 = 65;
const L_705: u16 = 13 + 3 * (10 + 2 * 4);
const L_706: u16 = 13 + 2 * (5 + 2 * 4);
const L_711: u16 = 12 + 2 * 10;
const L_712: u16 = 12 + 2 * (4 + 2 * 4);

/// Where a 7xx curve model's parts are (as `devices::curves_7xx` reads them): the
/// registers before curve 1, the head of a curve before its points, `ReadOnly` within
/// a curve, whether the x point is signed, the highest 7xx `DeptRef` code.
struct Layout7xx {
    fixed: usize,
    head: usize,
    read_only: usize,
    x_signed: bool,
    max_dept_ref: u16,
}

fn layout_7xx(model: u16) -> Option<Layout7xx> {
    let (fixed, head, read_only, x_signed, max_dept_ref) = match model {
        705 => (15, 10, 9, false, 3),
        706 => (15, 5, 4, false, 1),
        712 => (14, 4, 3, true, 3),
        _ => return None,
    };
    Some(Layout7xx {
        fixed,
        head,
        read_only,
        x_signed,
        max_dept_ref,
    })
}

/// A model the simulated inverter cannot offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedModel {
    pub model: u16,
}

impl std::fmt::Display for UnsupportedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the simulated inverter cannot offer SunSpec model {} (optional models: {:?})",
            self.model, OPTIONAL_MODELS
        )
    }
}

impl std::error::Error for UnsupportedModel {}

struct Model {
    id: u16,
    start: u16,
}

/// Registers of one simulated device.
struct Regs {
    base: u16,
    words: Vec<u16>,
    models: Vec<Model>,
    /// (first, last) absolute addresses that accept writes.
    writable: Vec<(u16, u16)>,
    last_write: Option<Instant>,
}

impl Regs {
    fn build(manufacturer: &str, model_name: &str, serial: &str, models: &[(u16, u16)]) -> Regs {
        let base = SIM_BASE;
        let mut words = vec![0x5375, 0x6e53];
        let mut placed = Vec::new();
        for (id, len) in models {
            let start = base + words.len() as u16;
            placed.push(Model { id: *id, start });
            words.push(*id);
            words.push(*len);
            words.extend(std::iter::repeat_n(NOT_IMPL_I16, usize::from(*len)));
        }
        words.extend([0xFFFF, 0]);
        let mut r = Regs {
            base,
            words,
            models: placed,
            writable: Vec::new(),
            last_write: None,
        };
        // model 1: strings are zero-padded, DA and Pad
        let c = r.start(1);
        for off in 2..66 {
            r.set(c, off, 0);
        }
        r.set_str(c, 2, 16, manufacturer);
        r.set_str(c, 18, 16, model_name);
        r.set_str(c, 42, 8, crate::VERSION);
        r.set_str(c, 50, 16, serial);
        r.set(c, 66, 1);
        r.writable.push((c + 66, c + 66));
        r
    }
    fn start(&self, id: u16) -> u16 {
        self.models
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.start)
            .unwrap_or(self.base)
    }
    fn idx(&self, start: u16, off: usize) -> usize {
        usize::from(start - self.base) + off
    }
    fn set(&mut self, start: u16, off: usize, v: u16) {
        let i = self.idx(start, off);
        if let Some(w) = self.words.get_mut(i) {
            *w = v;
        }
    }
    fn get(&self, start: u16, off: usize) -> u16 {
        self.words
            .get(self.idx(start, off))
            .copied()
            .unwrap_or(0xFFFF)
    }
    fn set_i16(&mut self, start: u16, off: usize, v: f64) {
        self.set(
            start,
            off,
            (v.round().clamp(-32767.0, 32767.0) as i16) as u16,
        );
    }
    fn set_u16(&mut self, start: u16, off: usize, v: f64) {
        self.set(start, off, v.round().clamp(0.0, 65534.0) as u16);
    }
    fn set_acc32(&mut self, start: u16, off: usize, v: u32) {
        self.set(start, off, (v >> 16) as u16);
        self.set(start, off + 1, v as u16);
    }
    fn set_str(&mut self, start: u16, off: usize, len: usize, s: &str) {
        let mut bytes = s.as_bytes().to_vec();
        bytes.resize(len * 2, 0);
        for i in 0..len {
            self.set(
                start,
                off + i,
                u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]),
            );
        }
    }

    fn read(&self, addr: u16, count: u16) -> Result<Vec<u16>, ErrorKind> {
        let from = usize::from(
            addr.checked_sub(self.base)
                .ok_or(ErrorKind::IllegalDataAddress)?,
        );
        let to = from + usize::from(count);
        self.words
            .get(from..to)
            .map(|s| s.to_vec())
            .ok_or(ErrorKind::IllegalDataAddress)
    }

    fn write(&mut self, addr: u16, values: &[u16], now: Instant) -> Result<(), ErrorKind> {
        let last = u32::from(addr) + values.len() as u32 - 1;
        let allowed = self
            .writable
            .iter()
            .any(|(a, b)| u32::from(*a) <= u32::from(addr) && last <= u32::from(*b));
        if !allowed || values.is_empty() {
            return Err(ErrorKind::IllegalDataAddress);
        }
        let from = usize::from(addr - self.base);
        self.words[from..from + values.len()].copy_from_slice(values);
        self.last_write = Some(now);
        self.adopt_requested(u32::from(addr), last);
        Ok(())
    }

    /// The block of model `id` (from its ID register), if the device has it.
    fn block(&self, id: u16) -> Option<Vec<u16>> {
        let start = self.models.iter().find(|m| m.id == id)?.start;
        let len = self.get(start, 1);
        self.read(start, len.checked_add(2)?).ok()
    }

    /// After a write covering a 705/706/712 `AdptCrvReq` or a 711 `AdptCtlReq`: adopts
    /// the requested curve or control into slot 1 (the one in force), as a 7xx inverter
    /// does, answering `AdptCrvRslt` COMPLETED, or FAILED for an index out of range or
    /// a curve that is not one (no points, more than `NPt`, x not increasing, a
    /// `DeptRef` the model has not; a droop with a zero gradient). The request is then
    /// reset to 0, as some inverters do once done.
    fn adopt_requested(&mut self, first: u32, last: u32) {
        let ids: Vec<(u16, u16)> = self.models.iter().map(|m| (m.id, m.start)).collect();
        for (id, m) in ids {
            if !(matches!(id, 705 | 706 | 711 | 712)
                && (first..=last).contains(&(u32::from(m) + 3)))
            {
                continue;
            }
            let req = usize::from(self.get(m, 3));
            let ok = if id == 711 {
                self.adopt_droop(m, req)
            } else {
                self.adopt_curve(id, m, req)
            };
            if let Some(ok) = ok {
                self.set(m, 4, if ok { 1 } else { 2 });
            }
            self.set(m, 3, 0);
        }
    }

    /// Adopts curve `req` (1-based) of 705/706/712 at `m`; `None` for request 0.
    fn adopt_curve(&mut self, id: u16, m: u16, req: usize) -> Option<bool> {
        let lay = layout_7xx(id)?;
        if req == 0 {
            return None;
        }
        let (n_pt, n_crv) = (usize::from(self.get(m, 5)), usize::from(self.get(m, 6)));
        let crv_len = lay.head + 2 * n_pt;
        if req > n_crv {
            return Some(false);
        }
        let src = lay.fixed + (req - 1) * crv_len;
        let act_pt = usize::from(self.get(m, src));
        let xs: Vec<i32> = (0..act_pt.min(n_pt))
            .map(|i| {
                let raw = self.get(m, src + lay.head + 2 * i);
                if lay.x_signed {
                    i32::from(raw as i16)
                } else {
                    i32::from(raw)
                }
            })
            .collect();
        let valid = (1..=n_pt).contains(&act_pt)
            && xs.windows(2).all(|w| w[1] > w[0])
            && self.get(m, src + 1) <= lay.max_dept_ref;
        if valid && req > 1 {
            for i in (0..crv_len).filter(|i| *i != lay.read_only) {
                let v = self.get(m, src + i);
                self.set(m, lay.fixed + i, v);
            }
        }
        Some(valid)
    }

    /// Adopts control `req` (1-based) of 711 at `m`; `None` for request 0.
    fn adopt_droop(&mut self, m: u16, req: usize) -> Option<bool> {
        const FIXED: usize = 14;
        const CTL: usize = 10;
        if req == 0 {
            return None;
        }
        if req > usize::from(self.get(m, 5)) {
            return Some(false);
        }
        let src = FIXED + (req - 1) * CTL;
        // KOf and KUf: a zero gradient is an infinite droop.
        let valid = self.get(m, src + 4) > 0 && self.get(m, src + 5) > 0;
        if valid && req > 1 {
            for i in 0..CTL - 1 {
                let v = self.get(m, src + i);
                self.set(m, FIXED + i, v);
            }
        }
        Some(valid)
    }
}

/// Registers shared between a device handle and the server.
type SharedRegs = Rc<RefCell<Regs>>;

/// Handle of a simulated inverter (cheap to clone; shares state with the server).
#[derive(Clone)]
pub struct SimInverter {
    regs: Rc<RefCell<Regs>>,
    rating_w: f64,
}

impl SimInverter {
    /// A PV inverter, or with `max_charge_w` a battery inverter (model 124 added),
    /// offering the `extra` models of [`OPTIONAL_MODELS`] too.
    fn new(serial: &str, rating_w: f64, max_charge_w: Option<f64>, extra: &[u16]) -> SimInverter {
        let mut models = vec![
            (1, L_COMMON),
            (103, L_103),
            (120, L_120),
            (121, L_121),
            (123, L_123),
            (126, L_CURVES),
        ];
        let offers = |id: u16| extra.contains(&id);
        if offers(131) {
            models.push((131, L_CURVES));
        }
        models.push((132, L_CURVES));
        for (id, len) in [
            (704, L_704),
            (705, L_705),
            (706, L_706),
            (711, L_711),
            (712, L_712),
        ] {
            if offers(id) {
                models.push((id, len));
            }
        }
        if max_charge_w.is_some() {
            models.push((124, L_124));
        }
        let mut r = Regs::build(
            "csipd-sim",
            if max_charge_w.is_some() {
                "SimBattery"
            } else {
                "SimInverter"
            },
            serial,
            &models,
        );
        // W_SF 0 up to 30 kW, else 1: W (int16) must hold the rating.
        let w_sf: i16 = if rating_w > 30000.0 { 1 } else { 0 };
        let wscale = 10f64.powi(i32::from(w_sf));
        let m = r.start(103);
        r.set(m, 6, (-2i16) as u16); // A_SF
        r.set(m, 13, (-1i16) as u16); // V_SF
        r.set(m, 15, w_sf as u16); // W_SF
        r.set(m, 17, (-2i16) as u16); // Hz_SF
        r.set(m, 19, w_sf as u16); // VA_SF
        r.set(m, 21, w_sf as u16); // VAr_SF
        r.set(m, 23, (-2i16) as u16); // PF_SF
        r.set(m, 26, 0); // WH_SF
        r.set_acc32(m, 24, 0);
        for off in 7..13 {
            r.set(m, off, 0xFFFF);
        }
        r.set(m, 38, 2); // St: sleeping
        // Evt1, Evt2, EvtVnd1-4 (bitfield32): no event. Left at the int16 fill (0x8000)
        // they read as HW_TEST_FAILURE and bit 31, which csipd reports to the utility.
        for off in 40..52 {
            r.set(m, off, 0);
        }
        let n = r.start(120);
        r.set(n, 2, if max_charge_w.is_some() { 82 } else { 4 }); // DERTyp PV / PV_STOR
        r.set_u16(n, 3, rating_w / wscale);
        r.set(n, 4, w_sf as u16);
        r.set_u16(n, 5, rating_w / wscale);
        r.set(n, 6, w_sf as u16);
        let s = r.start(121);
        r.set_u16(s, 2, rating_w / wscale); // WMax
        r.set(s, 22, w_sf as u16);
        r.set_u16(s, 7, rating_w / wscale); // VAMax
        r.set(s, 26, w_sf as u16);
        r.set_u16(s, 3, NOMINAL_V); // VRef
        r.set(s, 23, 0); // VRef_SF
        r.set_i16(s, 8, crate::sim::site::VAR_MAX_SHARE * rating_w / wscale); // VArMaxQ1
        r.set(s, 27, w_sf as u16); // VArMax_SF
        for (id, dept_ref, factory) in [
            (126, 2, &FACTORY_VOLT_VAR[..]),
            (132, 1, &FACTORY_VOLT_WATT[..]),
        ] {
            let m = r.start(id);
            for off in 2..usize::from(L_CURVES) + 2 {
                r.set(m, off, 0);
            }
            r.set(m, 2, 1); // ActCrv: the factory curve
            r.set(m, 7, 2); // NCrv
            r.set(m, 8, 4); // NPt
            r.set(m, 9, (-1i16) as u16); // V_SF
            let c1 = CURVES_FIXED;
            r.set(m, c1, factory.len() as u16); // ActPt
            r.set(m, c1 + 1, dept_ref);
            for (i, (v, y)) in factory.iter().enumerate() {
                r.set(m, c1 + 2 + 2 * i, *v);
                r.set(m, c1 + 3 + 2 * i, *y as u16);
            }
            r.set(m, c1 + CURVE_LEN - 1, 1); // ReadOnly
            // writable: ActCrv .. RmpTms, and curve 2 up to (not) its ReadOnly
            r.writable.push((m + 2, m + 6));
            let c2 = m + (CURVES_FIXED + CURVE_LEN) as u16;
            r.writable.push((c2, c2 + CURVE_LEN as u16 - 2));
        }
        let c = r.start(123);
        for off in 2..=22 {
            r.set(c, off, 0);
        }
        r.set(c, m123::CONN, 1);
        r.set(c, m123::WMAXLIMPCT, 100);
        r.set(c, m123::WMAXLIMPCT_SF, 0);
        r.set(c, 24, (-3i16) as u16); // OutPFSet_SF: cos φ in thousandths
        r.set(c, 25, (-1i16) as u16); // VArPct_SF
        // writable: Conn_WinTms .. VArPct_Ena (offsets 2..=22), never ID/L/SFs
        r.writable.push((c + 2, c + 22));
        if let Some(max_w) = max_charge_w {
            let b = r.start(124);
            for off in 2..=17 {
                r.set(b, off, 0);
            }
            r.set_u16(b, m124::WCHAMAX, max_w / wscale);
            r.set(b, m124::WCHAMAX_SF, w_sf as u16);
            r.set(b, m124::CHASTATE, 500); // 50.0 %
            r.set(b, m124::CHASTATE_SF, (-1i16) as u16);
            r.set(b, m124::INWRTE, 10000); // 100.00 % of WChaMax
            r.set(b, m124::INOUTWRTE_SF, (-2i16) as u16);
            for off in [19, 20, 21, 23, 24] {
                r.set(b, off, 0); // the other scale factors
            }
            // writable: WChaMax .. ChaGriSet except the read-only state points 8..=11
            r.writable.push((b + 2, b + 7));
            r.writable.push((b + 12, b + 17));
        }
        if offers(131) {
            build_131(&mut r);
        }
        if offers(704) {
            build_704(&mut r);
        }
        for id in [705, 706, 712] {
            if offers(id) {
                build_curves_7xx(&mut r, id);
            }
        }
        if offers(711) {
            build_711(&mut r);
        }
        let inv = SimInverter {
            regs: Rc::new(RefCell::new(r)),
            rating_w,
        };
        inv.set_output_w(0.0);
        inv
    }

    pub fn rating_w(&self) -> f64 {
        self.rating_w
    }

    /// Sets the AC output the physics computed (W ≥ 0 = generation) at unity power
    /// factor and nominal voltage; see [`SimInverter::set_ac`].
    pub fn set_output_w(&self, w: f64) {
        self.set_ac(w, 0.0, NOMINAL_V);
    }

    /// Sets the AC output the physics computed: `w` (≥ 0 = generation), `var`
    /// (positive = injecting) at `v` volts per phase; fills W, VA, VAr, PF, currents,
    /// voltages, frequency and the operating state (model 103).
    pub fn set_ac(&self, w: f64, var: f64, v: f64) {
        let mut r = self.regs.borrow_mut();
        let m = r.start(103);
        let wscale = 10f64.powi(i32::from(r.get(m, 15) as i16));
        let va = w.hypot(var);
        r.set_i16(m, 14, w / wscale);
        r.set_i16(m, 18, va / wscale);
        r.set_i16(m, 20, var / wscale);
        // PF in % (PF_SF -2): |W| / VA.
        r.set_i16(m, 22, if va > 0.0 { 1e4 * w.abs() / va } else { 0.0 });
        let v = if v > 0.0 { v } else { NOMINAL_V };
        let a_phase = va / 3.0 / v;
        r.set_u16(m, 2, a_phase * 3.0 * 100.0);
        for i in 0..3 {
            r.set_u16(m, 3 + i, a_phase * 100.0);
            r.set_u16(m, 10 + i, v * 10.0);
        }
        r.set_u16(m, 16, 5000.0);
        let c = r.start(123);
        let limited = r.get(c, m123::WMAXLIM_ENA) == 1
            || r.models
                .iter()
                .find(|x| x.id == 704)
                .is_some_and(|x| r.get(x.start, m704::WMAXLIMPCT_ENA) == 1);
        let st = if w == 0.0 {
            2
        } else if limited {
            5
        } else {
            4
        };
        r.set(m, 38, st);
    }

    /// Adds energy to the lifetime counter (WH, acc32).
    pub fn add_energy_wh(&self, wh: f64) {
        let mut r = self.regs.borrow_mut();
        let m = r.start(103);
        let now = (u32::from(r.get(m, 24)) << 16) | u32::from(r.get(m, 25));
        r.set_acc32(m, 24, now.wrapping_add(wh.max(0.0).round() as u32));
    }

    /// The active power limit csipd set, in % of WMax, if enabled and not reverted at
    /// `now`: model 123 `WMaxLimPct` while `WMaxLim_Ena`, and with model 704
    /// `WMaxLimPct` while `WMaxLimPctEna` (the lower wins when both are on). 123's
    /// revert timer ends its limit; 704's falls back to `WMaxLimPctRvrt` when
    /// `WMaxLimPctEnaRvrt` is set, else ends it. The timers run from the device's last
    /// write.
    pub fn limit_pct_at(&self, now: Instant) -> Option<f64> {
        let l123 = self.limit_123_at(now);
        let l704 = self.limit_704_at(now);
        match (l123, l704) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn limit_123_at(&self, now: Instant) -> Option<f64> {
        let mut r = self.regs.borrow_mut();
        let c = r.start(123);
        if r.get(c, m123::WMAXLIM_ENA) != 1 {
            return None;
        }
        let rvrt = r.get(c, m123::WMAXLIMPCT_RVRT_TMS);
        if rvrt > 0 {
            if let Some(t) = r.last_write {
                if now.saturating_duration_since(t) > Duration::from_secs(u64::from(rvrt)) {
                    // Revert timer ran out: back to the default (no limit), as model 123 says.
                    r.set(c, m123::WMAXLIM_ENA, 0);
                    return None;
                }
            }
        }
        let sf = r.get(c, m123::WMAXLIMPCT_SF) as i16;
        Some(f64::from(r.get(c, m123::WMAXLIMPCT)) * 10f64.powi(i32::from(sf)))
    }

    fn limit_704_at(&self, now: Instant) -> Option<f64> {
        let mut r = self.regs.borrow_mut();
        let c = r.models.iter().find(|m| m.id == 704)?.start;
        if r.get(c, m704::WMAXLIMPCT_ENA) != 1 {
            return None;
        }
        let rvrt = (u32::from(r.get(c, m704::WMAXLIMPCT_RVRT_TMS)) << 16)
            | u32::from(r.get(c, m704::WMAXLIMPCT_RVRT_TMS + 1));
        let sf = i32::from(r.get(c, m704::WMAXLIMPCT_SF) as i16);
        if rvrt > 0 {
            if let Some(t) = r.last_write {
                if now.saturating_duration_since(t) > Duration::from_secs(u64::from(rvrt)) {
                    if r.get(c, m704::WMAXLIMPCT_ENA_RVRT) == 1 {
                        return Some(f64::from(r.get(c, m704::WMAXLIMPCT_RVRT)) * 10f64.powi(sf));
                    }
                    r.set(c, m704::WMAXLIMPCT_ENA, 0);
                    return None;
                }
            }
        }
        Some(f64::from(r.get(c, m704::WMAXLIMPCT)) * 10f64.powi(sf))
    }

    /// `limit_pct_at(Instant::now())`.
    pub fn limit_pct(&self) -> Option<f64> {
        self.limit_pct_at(Instant::now())
    }

    /// The limit in watts (limit % × WMax), if one is active.
    pub fn limit_w(&self) -> Option<f64> {
        self.limit_pct().map(|p| p / 100.0 * self.rating_w)
    }

    /// A battery's charge limit in watts (model 124 InWRte % of WChaMax) if csipd set
    /// one (StorCtl_Mod CHARGE bit) and its revert timer (from the device's last write)
    /// has not run out at `now`; `None` for a PV inverter.
    pub fn charge_limit_w_at(&self, now: Instant) -> Option<f64> {
        let mut r = self.regs.borrow_mut();
        if !r.models.iter().any(|m| m.id == 124) {
            return None;
        }
        let b = r.start(124);
        let bits = r.get(b, m124::STORCTL_MOD);
        if bits & m124::STORCTL_CHARGE == 0 {
            return None;
        }
        let rvrt = r.get(b, m124::INOUTWRTE_RVRT_TMS);
        if rvrt > 0 {
            if let Some(t) = r.last_write {
                if now.saturating_duration_since(t) > Duration::from_secs(u64::from(rvrt)) {
                    r.set(b, m124::STORCTL_MOD, bits & !m124::STORCTL_CHARGE);
                    return None;
                }
            }
        }
        let scale = |v: u16, sf: u16| f64::from(v) * 10f64.powi(i32::from(sf as i16));
        let pct = scale(r.get(b, m124::INWRTE), r.get(b, m124::INOUTWRTE_SF));
        let max_w = scale(r.get(b, m124::WCHAMAX), r.get(b, m124::WCHAMAX_SF));
        Some((pct / 100.0 * max_w).max(0.0))
    }

    /// `charge_limit_w_at(Instant::now())`.
    pub fn charge_limit_w(&self) -> Option<f64> {
        self.charge_limit_w_at(Instant::now())
    }

    /// The volt-var curve in force: model 705's curve 1 while `Ena` is set, else model
    /// 126's selected curve while `ModEna` bit 0 is set, decoded as csipd's driver
    /// decodes them (`devices::curves_7xx`, `devices::curves`).
    pub fn volt_var(&self) -> Option<Curve> {
        self.curve(705, ControlMode::VoltVar)
            .or_else(|| self.curve(126, ControlMode::VoltVar))
    }

    /// The volt-watt curve in force (model 706, else 132), like [`SimInverter::volt_var`].
    pub fn volt_watt(&self) -> Option<Curve> {
        self.curve(706, ControlMode::VoltWatt)
            .or_else(|| self.curve(132, ControlMode::VoltWatt))
    }

    /// The watt-var curve in force (model 712 curve 1 while `Ena`): x in % of WMax.
    pub fn watt_var(&self) -> Option<Curve> {
        self.curve(712, ControlMode::WattVar)
    }

    /// The watt-PF curve in force (model 131's selected curve while `ModEna` bit 0):
    /// x in % of WMax, y the signed cos φ in % (negative absorbing).
    pub fn watt_pf(&self) -> Option<Curve> {
        self.curve(131, ControlMode::WattPF)
    }

    /// The fixed power factor in force while injecting: model 704 `PFWInj` while
    /// `PFWInjEna`, else model 123 `OutPFSet` while `OutPFSet_Ena` (sign: positive
    /// over-excited, as `devices::reactive` writes it).
    pub fn fixed_pf(&self) -> Option<FixedPf> {
        let r = self.regs.borrow();
        let from = |model: u16| {
            let block = r.block(model)?;
            let st = reactive::decode_fixed_pf(model, &block, ControlMode::FixedPFInjectW);
            st.enabled.then_some(st.setting).flatten()
        };
        from(704).or_else(|| from(123))
    }

    /// The fixed power factor in force while absorbing active power: model 704
    /// `PFWAbs` while `PFWAbsEna`, else model 123 `OutPFSet` while `OutPFSet_Ena` (123
    /// has one power factor for both directions; 704's `PFWInj` is for injecting only).
    pub fn fixed_pf_absorb(&self) -> Option<FixedPf> {
        let r = self.regs.borrow();
        let from = |model: u16, mode| {
            let block = r.block(model)?;
            let st = reactive::decode_fixed_pf(model, &block, mode);
            st.enabled.then_some(st.setting).flatten()
        };
        from(704, ControlMode::FixedPFAbsorbW).or_else(|| from(123, ControlMode::FixedPFInjectW))
    }

    /// The fixed reactive power in force, % of VArMax: model 704 `VarSetPct` while
    /// `VarSetEna` with `VarSetMod` VAR_MAX_PCT, else model 123 `VArMaxPct` while
    /// `VArPct_Ena` with `VArPct_Mod` VArMax.
    pub fn fixed_var_pct(&self) -> Option<f64> {
        let r = self.regs.borrow();
        let from = |model: u16| {
            let block = r.block(model)?;
            let st = reactive::decode_fixed_var(model, &block);
            st.enabled.then_some(st.pct).flatten()
        };
        from(704).or_else(|| from(123))
    }

    /// The reactive power target in force, var: model 704 `VarSet` while `VarSetEna`
    /// with `VarSetMod` VARS.
    pub fn target_var(&self) -> Option<f64> {
        let block = self.regs.borrow().block(704)?;
        let st = reactive::decode_target_var(&block);
        st.enabled.then_some(st.var).flatten()
    }

    /// The frequency droop in force: model 711 control 1 while `Ena` is set.
    pub fn freq_droop(&self) -> Option<FreqDroopState> {
        let block = self.regs.borrow().block(711)?;
        Some(freq_droop::decode(&block)).filter(|d| d.enabled)
    }

    fn curve(&self, model: u16, mode: ControlMode) -> Option<Curve> {
        let block = self.regs.borrow().block(model)?;
        let st = if model >= 700 {
            curves_7xx::decode_curve(model, &block)?
        } else {
            curves::decode_curve(model, &block)?
        };
        let default_ref = match model {
            126 | 705 | 712 => 2,
            131 => 0,
            _ => 1,
        };
        (st.enabled && !st.points.is_empty()).then(|| Curve {
            mode,
            points: st.points,
            dept_ref: st.dept_ref.unwrap_or(default_ref),
        })
    }

    /// Hands the physics what csipd put in force at `now`: the active power limit (as a
    /// setpoint in W), the connection, every curve and setting, a battery's charge
    /// limit. The demo and the tests step the site with these.
    pub fn drive(&self, phys: &mut PhysInverter, now: Instant) {
        phys.setpoint_w = self
            .limit_pct_at(now)
            .map_or(self.rating_w, |p| p / 100.0 * self.rating_w);
        phys.connected = self.connected();
        phys.volt_var = self.volt_var();
        phys.volt_watt = self.volt_watt();
        phys.watt_var = self.watt_var();
        phys.watt_pf = self.watt_pf();
        phys.fixed_pf = self.fixed_pf();
        phys.fixed_pf_absorb = self.fixed_pf_absorb();
        phys.fixed_var_pct = self.fixed_var_pct();
        phys.target_var = self.target_var();
        phys.freq_droop = self.freq_droop();
        if matches!(phys.kind, SimInverterKind::Battery { .. }) {
            phys.charge_limit_w = self.charge_limit_w_at(now);
        }
    }

    /// Shows the physics' result in model 103: W and VAr of `phys` at `v` volts and
    /// `hz` hertz ([`SimInverter::set_ac`], then `Hz`).
    pub fn show(&self, phys: &PhysInverter, v: f64, hz: f64) {
        self.set_ac(phys.output_w, phys.var_output, v);
        self.set_hz(hz);
    }

    /// Sets the frequency the inverter measures (model 103 `Hz`, Hz_SF -2).
    pub fn set_hz(&self, hz: f64) {
        let mut r = self.regs.borrow_mut();
        let m = r.start(103);
        r.set_u16(m, 16, hz * 100.0);
    }

    /// Model 123 Conn: false after csipd disconnected the inverter.
    pub fn connected(&self) -> bool {
        let r = self.regs.borrow();
        let c = r.start(123);
        r.get(c, m123::CONN) != 0
    }
}

/// Model 131 (watt-PF): two curves of up to 4 points, curve 1 the read-only factory
/// curve, curve 2 writable; `ActCrv`, `ModEna` as 126/132 (W_SF 0, PF_SF -2).
fn build_131(r: &mut Regs) {
    let m = r.start(131);
    for off in 2..usize::from(L_CURVES) + 2 {
        r.set(m, off, 0);
    }
    r.set(m, 2, 1); // ActCrv
    r.set(m, 7, 2); // NCrv
    r.set(m, 8, 4); // NPt
    r.set(m, 10, (-2i16) as u16); // PF_SF
    let c1 = CURVES_FIXED;
    r.set(m, c1, FACTORY_WATT_PF.len() as u16);
    for (i, (w, pf)) in FACTORY_WATT_PF.iter().enumerate() {
        r.set(m, c1 + 1 + 2 * i, *w as u16);
        r.set(m, c1 + 2 + 2 * i, *pf as u16);
    }
    r.set(m, c1 + 52, 1); // ReadOnly
    r.writable.push((m + 2, m + 6));
    let c2 = m + (CURVES_FIXED + CURVE_LEN) as u16;
    r.writable.push((c2, c2 + 51));
}

/// Model 704 (DER AC controls): every setting point writable (not the `*RvrtRem`
/// countdowns or the scale factors); PF_SF -3, WMaxLimPct_SF 0, VarSet_SF 0,
/// VarSetPct_SF -1; the limit at 100 %, the power factors at unity, nothing enabled.
fn build_704(r: &mut Regs) {
    let m = r.start(704);
    for off in 2..usize::from(L_704) + 2 {
        r.set(m, off, 0);
    }
    r.set(m, 15, 100); // WMaxLimPct
    r.set(m, 16, 100); // WMaxLimPctRvrt
    r.set(m, 53, (-3i16) as u16); // PF_SF
    r.set(m, 58, (-1i16) as u16); // VarSetPct_SF
    for off in [59, 61, 63, 65] {
        r.set(m, off, 1000); // PFWInj.PF … PFWAbsRvrt.PF: unity
    }
    for (a, b) in [
        (2, 5),
        (8, 11),
        (14, 19),
        (22, 32),
        (35, 46),
        (49, 52),
        (59, 66),
    ] {
        r.writable.push((m + a, m + b));
    }
}

/// A 7xx curve model (705, 706, 712): `NCrv` curves of 4 points, curve 1 the one in
/// force (read-only, the factory curve at start), the others writable; `Ena`,
/// `AdptCrvReq` and the revert points writable. V_SF -1 (705/706: V in 0.1 % of VRef),
/// W_SF 0 (712), DeptRef_SF 0, RspTms_SF 0.
fn build_curves_7xx(r: &mut Regs, id: u16) {
    let Some(lay) = layout_7xx(id) else {
        return;
    };
    let (len, n_crv, dept_ref, factory): (u16, usize, u16, Vec<(u16, u16)>) = match id {
        705 => (
            L_705,
            3,
            1, // VAR_MAX_PCT
            FACTORY_VOLT_VAR
                .iter()
                .map(|(v, y)| (*v, *y as u16))
                .collect(),
        ),
        706 => (
            L_706,
            2,
            0, // W_MAX_PCT
            FACTORY_VOLT_WATT
                .iter()
                .map(|(v, y)| (*v, *y as u16))
                .collect(),
        ),
        _ => (
            L_712,
            2,
            1, // VAR_MAX_PCT
            FACTORY_WATT_VAR
                .iter()
                .map(|(w, y)| (*w as u16, *y as u16))
                .collect(),
        ),
    };
    let m = r.start(id);
    for off in 2..usize::from(len) + 2 {
        r.set(m, off, 0);
    }
    r.set(m, 4, 1); // AdptCrvRslt: COMPLETED (the factory curve)
    r.set(m, 5, 4); // NPt
    r.set(m, 6, n_crv as u16); // NCrv
    if id != 712 {
        r.set(m, 12, (-1i16) as u16); // V_SF
    }
    let crv_len = lay.head + 8;
    for k in 0..n_crv {
        let c = lay.fixed + k * crv_len;
        r.set(m, c, factory.len() as u16); // ActPt
        r.set(m, c + 1, dept_ref);
        if id == 705 {
            r.set(m, c + 3, 1000); // VRef: 100.0 %
        }
        for (i, (x, y)) in factory.iter().enumerate() {
            r.set(m, c + lay.head + 2 * i, *x);
            r.set(m, c + lay.head + 1 + 2 * i, *y);
        }
        if k == 0 {
            r.set(m, c + lay.read_only, 1);
        } else {
            let a = m + c as u16;
            r.writable.push((a, a + lay.read_only as u16 - 1));
            r.writable
                .push((a + lay.head as u16, a + crv_len as u16 - 1));
        }
    }
    r.writable.push((m + 2, m + 3)); // Ena, AdptCrvReq
    r.writable.push((m + 7, m + 8)); // RvrtTms
    r.writable.push((m + 11, m + 11)); // RvrtCrv
}

/// Model 711 (frequency droop): two controls, control 1 the one in force (read-only,
/// the factory droop at start), control 2 writable (`DbOf` … `PMin`).
fn build_711(r: &mut Regs) {
    let m = r.start(711);
    for off in 2..usize::from(L_711) + 2 {
        r.set(m, off, 0);
    }
    r.set(m, 4, 1); // AdptCtlRslt: COMPLETED (the factory control)
    r.set(m, 5, 2); // NCtl
    r.set(m, 11, (-3i16) as u16); // Db_SF
    r.set(m, 12, (-3i16) as u16); // K_SF
    r.set(m, 13, (-2i16) as u16); // RspTms_SF
    for k in 0..2usize {
        let c = 14 + 10 * k;
        for (i, v) in FACTORY_DROOP.iter().enumerate() {
            r.set(m, c + i, *v);
        }
        if k == 0 {
            r.set(m, c + 9, 1);
        } else {
            r.writable.push((m + c as u16, m + c as u16 + 8));
        }
    }
    r.writable.push((m + 2, m + 3)); // Ena, AdptCtlReq
    r.writable.push((m + 6, m + 7)); // RvrtTms
    r.writable.push((m + 10, m + 10)); // RvrtCtl
}

/// Handle of a simulated site meter.
#[derive(Clone)]
pub struct SimMeter {
    regs: Rc<RefCell<Regs>>,
}

impl SimMeter {
    fn new(serial: &str) -> SimMeter {
        let mut r = Regs::build(
            "csipd-sim",
            "SimMeter",
            serial,
            &[(1, L_COMMON), (203, L_203)],
        );
        let m = r.start(203);
        r.set(m, 6, (-2i16) as u16); // A_SF
        r.set(m, 15, (-1i16) as u16); // V_SF
        r.set(m, 17, (-2i16) as u16); // Hz_SF
        r.set(m, 22, 0); // W_SF
        r.set(m, 27, 0); // VA_SF
        r.set(m, 32, 0); // VAR_SF
        r.set(m, 54, 0); // TotWh_SF
        for off in 38..54 {
            r.set(m, off, 0);
        }
        let me = SimMeter {
            regs: Rc::new(RefCell::new(r)),
        };
        me.set_power_w(0.0);
        me
    }

    /// Sets the site power at the connection point: > 0 import, < 0 export; no
    /// reactive power, nominal voltage.
    pub fn set_power_w(&self, w: f64) {
        self.set_site(w, 0.0, NOMINAL_V);
    }

    /// Sets the connection point's flows: `w` and `var` (> 0 import), at `v` volts per
    /// phase (model 203 W, VAR, VA, A, PhV and per phase).
    pub fn set_site(&self, w: f64, var: f64, v: f64) {
        let mut r = self.regs.borrow_mut();
        let m = r.start(203);
        let v = if v > 0.0 { v } else { NOMINAL_V };
        let va = w.hypot(var);
        r.set_i16(m, 18, w);
        r.set_i16(m, 23, va);
        r.set_i16(m, 28, var);
        r.set_i16(m, 2, va / v * 100.0);
        r.set_i16(m, 7, v * 10.0);
        r.set_i16(m, 16, 5000.0);
        for i in 0..3 {
            r.set_i16(m, 19 + i, w / 3.0);
            r.set_i16(m, 24 + i, va / 3.0);
            r.set_i16(m, 29 + i, var / 3.0);
            r.set_i16(m, 3 + i, va / 3.0 / v * 100.0);
            r.set_i16(m, 8 + i, v * 10.0);
        }
    }

    /// Sets the frequency at the connection point (model 203 `Hz`, Hz_SF -2).
    pub fn set_hz(&self, hz: f64) {
        let mut r = self.regs.borrow_mut();
        let m = r.start(203);
        r.set_i16(m, 16, hz * 100.0);
    }

    /// Sets the lifetime energy counters.
    pub fn set_energy_wh(&self, import_wh: f64, export_wh: f64) {
        let mut r = self.regs.borrow_mut();
        let m = r.start(203);
        r.set_acc32(m, 38, export_wh.max(0.0).round() as u32);
        r.set_acc32(m, 46, import_wh.max(0.0).round() as u32);
    }
}

/// The simulator: devices by unit id, served over Modbus TCP.
#[derive(Clone, Default)]
pub struct SunSpecSimulator {
    devices: Rc<RefCell<Vec<(u8, SharedRegs)>>>,
}

impl SunSpecSimulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an inverter of `rating_w` at `unit_id`.
    pub fn add_inverter(&self, unit_id: u8, rating_w: f64) -> SimInverter {
        let inv = SimInverter::new(&format!("SIM-INV-{unit_id}"), rating_w, None, &[]);
        self.devices.borrow_mut().push((unit_id, inv.regs.clone()));
        inv
    }

    /// Adds an inverter of `rating_w` at `unit_id` that offers the `extra` models of
    /// [`OPTIONAL_MODELS`] besides the standard set; any other model is refused.
    pub fn add_inverter_offering(
        &self,
        unit_id: u8,
        rating_w: f64,
        extra: &[u16],
    ) -> Result<SimInverter, UnsupportedModel> {
        if let Some(model) = extra.iter().find(|m| !OPTIONAL_MODELS.contains(m)) {
            return Err(UnsupportedModel { model: *model });
        }
        let inv = SimInverter::new(&format!("SIM-INV-{unit_id}"), rating_w, None, extra);
        self.devices.borrow_mut().push((unit_id, inv.regs.clone()));
        Ok(inv)
    }

    /// Adds a battery inverter of `rating_w` that charges at up to `max_charge_w`.
    pub fn add_battery(&self, unit_id: u8, rating_w: f64, max_charge_w: f64) -> SimInverter {
        let inv = SimInverter::new(
            &format!("SIM-BAT-{unit_id}"),
            rating_w,
            Some(max_charge_w),
            &[],
        );
        self.devices.borrow_mut().push((unit_id, inv.regs.clone()));
        inv
    }

    /// Adds a battery inverter like [`SunSpecSimulator::add_battery`] that offers the
    /// `extra` models of [`OPTIONAL_MODELS`] too; any other model is refused.
    pub fn add_battery_offering(
        &self,
        unit_id: u8,
        rating_w: f64,
        max_charge_w: f64,
        extra: &[u16],
    ) -> Result<SimInverter, UnsupportedModel> {
        if let Some(model) = extra.iter().find(|m| !OPTIONAL_MODELS.contains(m)) {
            return Err(UnsupportedModel { model: *model });
        }
        let inv = SimInverter::new(
            &format!("SIM-BAT-{unit_id}"),
            rating_w,
            Some(max_charge_w),
            extra,
        );
        self.devices.borrow_mut().push((unit_id, inv.regs.clone()));
        Ok(inv)
    }

    /// Adds a site meter at `unit_id`.
    pub fn add_meter(&self, unit_id: u8) -> SimMeter {
        let m = SimMeter::new(&format!("SIM-MTR-{unit_id}"));
        self.devices.borrow_mut().push((unit_id, m.regs.clone()));
        m
    }

    fn device(&self, unit: u8) -> Option<Rc<RefCell<Regs>>> {
        self.devices
            .borrow()
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, r)| r.clone())
    }

    /// Binds 127.0.0.1:`port` (0 = any free port).
    pub fn bind(port: u16) -> std::io::Result<Async<TcpListener>> {
        Async::<TcpListener>::bind(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Serves Modbus TCP on `listener` forever; each connection runs as a task on `ex`.
    pub async fn serve(
        &self,
        listener: Async<TcpListener>,
        ex: Rc<LocalExecutor<'static>>,
    ) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            log::debug!("sunspec sim: connection from {peer}");
            let sim = self.clone();
            ex.spawn(async move {
                if let Err(e) = sim.connection(stream).await {
                    log::debug!("sunspec sim: connection {peer} closed: {e}");
                }
            })
            .detach();
        }
    }

    async fn connection(&self, mut stream: Async<TcpStream>) -> std::io::Result<()> {
        loop {
            let mut head = [0u8; 6];
            stream.read_exact(&mut head).await?;
            let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
            if !(2..=254).contains(&len) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bad MBAP length",
                ));
            }
            let mut frame = head.to_vec();
            frame.resize(6 + len, 0);
            stream.read_exact(&mut frame[6..]).await?;
            if let Some(reply) = self.handle(&frame, Instant::now()) {
                stream.write_all(&reply).await?;
            }
        }
    }

    /// Answers one Modbus TCP frame (None = no reply).
    pub fn handle(&self, frame: &[u8], now: Instant) -> Option<Vec<u8>> {
        let unit = *frame.get(6)?;
        let Some(dev) = self.device(unit) else {
            // a gateway with no such unit: exception 11 (gateway target failed to respond)
            let func = *frame.get(7)?;
            return Some(vec![
                frame[0],
                frame[1],
                0,
                0,
                0,
                3,
                unit,
                func | 0x80,
                0x0B,
            ]);
        };
        let mut response = Vec::new();
        let mut f = ModbusFrame::new(unit, frame, ModbusProto::TcpUdp, &mut response);
        f.parse().ok()?;
        if f.processing_required {
            if f.readonly {
                let result = match f.get_external_read() {
                    Ok(Read::Words(rw)) => match dev.borrow().read(rw.address, rw.count) {
                        Ok(words) => {
                            for (i, w) in words.iter().enumerate() {
                                rw.buf[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    Ok(Read::Bits(_)) => Err(ErrorKind::IllegalFunction),
                    Err(e) => Err(e),
                };
                f.process_external_read(result).ok()?;
            } else {
                let result = match f.get_external_write() {
                    Ok(Write::Words(ww)) => {
                        let values: Vec<u16> = ww
                            .data
                            .chunks_exact(2)
                            .take(usize::from(ww.count))
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect();
                        dev.borrow_mut().write(ww.address, &values, now)
                    }
                    Ok(Write::Bits(_)) => Err(ErrorKind::IllegalFunction),
                    Err(e) => Err(e),
                };
                f.process_external_write(result).ok()?;
            }
        }
        if f.response_required {
            f.finalize_response().ok()?;
            Some(response)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::sunspec::{self, Blocks};

    fn read_frame(unit: u8, addr: u16, count: u16) -> Vec<u8> {
        let mut req = rmodbus::client::ModbusRequest::new_tcp_udp(unit, 7);
        let mut f = Vec::new();
        req.generate_get_holdings(addr, count, &mut f).unwrap();
        f
    }

    fn read(sim: &SunSpecSimulator, unit: u8, addr: u16, count: u16) -> Vec<u16> {
        let reply = sim
            .handle(&read_frame(unit, addr, count), Instant::now())
            .unwrap();
        assert_eq!(reply[7], 3, "not an exception: {reply:02x?}");
        reply[9..]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn inverter_map_decodes_with_devices_sunspec() {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter(1, 5000.0);
        inv.set_output_w(3300.0);
        let total: u16 = 2 + 68 + 52 + 28 + 32 + 26 + 2 * (L_CURVES + 2) + 2;
        let mut regs = Vec::new();
        for at in (0..total).step_by(100) {
            regs.extend(read(&sim, 1, SIM_BASE + at, (total - at).min(100)));
        }
        assert_eq!(&regs[..2], &sunspec::SUNS_MARKER);
        let mut at = SIM_BASE + 2;
        let mut blocks = Blocks::new();
        while let sunspec::ChainStep::Model { model: m, next } = sunspec::chain_step(
            at,
            [
                regs[usize::from(at - SIM_BASE)],
                regs[usize::from(at - SIM_BASE) + 1],
            ],
            blocks.len(),
        ) {
            let s = usize::from(m.start - SIM_BASE);
            blocks.insert(m.id, regs[s..s + usize::from(m.total_len())].to_vec());
            at = next;
        }
        assert_eq!(
            blocks.keys().copied().collect::<Vec<_>>(),
            vec![1, 103, 120, 121, 123, 126, 132]
        );
        let r = sunspec::decode_inverter(&blocks).unwrap();
        assert_eq!(r.ac.w, Some(3300.0));
        assert_eq!(r.nameplate.w_rtg_w, Some(5000.0));
        assert_eq!(r.settings.v_ref_v, Some(230.0));
        assert_eq!(r.state, Some(sunspec::OperatingState::Running));
        assert_eq!(r.limit.unwrap().enabled, Some(false));
        // A healthy inverter raises no event: csipd would send each bit to the utility
        // as a LogEvent (the fill 0x8000 read as HW_TEST_FAILURE and bit 31).
        assert_eq!(r.events, Some(sunspec::InverterEvents { evt1: 0, evt2: 0 }));
        // The factory volt-var curve, selected but not enabled.
        let vv = curves::decode_curve(126, &blocks[&126]).unwrap();
        assert!(!vv.enabled);
        assert_eq!(
            (vv.active_curve, vv.points.len(), vv.dept_ref),
            (1, 4, Some(2))
        );
        assert_eq!(vv.points[3].y_pct, -60.0);
        assert_eq!(inv.volt_var(), None, "not in force while ModEna is 0");
        // W, VAr and voltage as the physics set them.
        inv.set_ac(3000.0, -1200.0, 245.0);
        let m103 = read(&sim, 1, SIM_BASE + 2 + 68, 52);
        let mut b = Blocks::new();
        b.insert(103, m103);
        let r = sunspec::decode_inverter(&b).unwrap();
        assert_eq!((r.ac.w, r.ac.var), (Some(3000.0), Some(-1200.0)));
        assert!((r.ac.v.unwrap() - 245.0).abs() < 1e-9);
    }

    #[test]
    fn takes_a_planned_fixed_power_factor_and_var_on_123() {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter(1, 5000.0);
        let start = inv.regs.borrow().start(123);
        let ctl = sunspec::ModelRef {
            id: 123,
            start,
            len: L_123,
        };
        let t0 = Instant::now();
        let apply = |writes: &[sunspec::RegisterWrite]| {
            for w in writes {
                let mut req = rmodbus::client::ModbusRequest::new_tcp_udp(1, 9);
                let mut f = Vec::new();
                req.generate_set_holdings_bulk(w.address, &w.values, &mut f)
                    .unwrap();
                assert_eq!(sim.handle(&f, t0).unwrap()[7], 0x10, "{}", w.point);
            }
        };
        assert_eq!((inv.fixed_pf(), inv.fixed_var_pct()), (None, None));
        let pf = reactive::FixedPf {
            pf: 0.95,
            excitation: reactive::Excitation::UnderExcited,
        };
        let block = read(&sim, 1, start, L_123 + 2);
        apply(
            &reactive::plan_fixed_pf(&ctl, &block, ControlMode::FixedPFInjectW, Some(pf)).unwrap(),
        );
        let got = inv.fixed_pf().expect("in force");
        assert!((got.pf - 0.95).abs() < 1e-9);
        assert_eq!(got.excitation, reactive::Excitation::UnderExcited);
        let block = read(&sim, 1, start, L_123 + 2);
        apply(&reactive::plan_fixed_var(&ctl, &block, Some(-20.0)).unwrap());
        assert_eq!(inv.fixed_var_pct(), Some(-20.0));
        let block = read(&sim, 1, start, L_123 + 2);
        apply(&reactive::plan_fixed_var(&ctl, &block, None).unwrap());
        assert_eq!(inv.fixed_var_pct(), None);
    }

    fn write_at(sim: &SunSpecSimulator, addr: u16, values: &[u16], now: Instant) -> Vec<u8> {
        let mut req = rmodbus::client::ModbusRequest::new_tcp_udp(1, 9);
        let mut f = Vec::new();
        req.generate_set_holdings_bulk(addr, values, &mut f)
            .unwrap();
        sim.handle(&f, now).unwrap()
    }

    #[test]
    fn optional_models_are_offered_only_when_asked() {
        let sim = SunSpecSimulator::new();
        let Err(e) = sim.add_inverter_offering(1, 5000.0, &[704, 134]) else {
            panic!("model 134 is not offered");
        };
        assert_eq!(e.model, 134);
        assert!(e.to_string().contains("134"), "{e}");
        let inv = sim
            .add_inverter_offering(1, 5000.0, &OPTIONAL_MODELS)
            .unwrap();
        let ids: Vec<u16> = inv.regs.borrow().models.iter().map(|m| m.id).collect();
        assert_eq!(
            ids,
            vec![
                1, 103, 120, 121, 123, 126, 131, 132, 704, 705, 706, 711, 712
            ]
        );
        // Each block's L as laid out, and the chain ends where the last one does.
        let r = inv.regs.borrow();
        for (id, len) in [
            (131, L_CURVES),
            (704, L_704),
            (705, L_705),
            (706, L_706),
            (711, L_711),
            (712, L_712),
        ] {
            assert_eq!(r.block(id).unwrap().len(), usize::from(len) + 2, "{id}");
        }
        let end = r.start(712) + L_712 + 2;
        assert_eq!(r.read(end, 2).unwrap(), vec![0xFFFF, 0]);
        // Nothing enabled at start: no setting in force.
        drop(r);
        assert_eq!(inv.watt_var(), None);
        assert_eq!(inv.watt_pf(), None);
        assert_eq!(inv.freq_droop(), None);
        assert_eq!((inv.fixed_pf(), inv.fixed_pf_absorb()), (None, None));
        assert_eq!((inv.target_var(), inv.fixed_var_pct()), (None, None));
        assert_eq!(inv.limit_pct(), None);
    }

    #[test]
    fn a_7xx_curve_is_adopted_only_when_it_is_one() {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter_offering(1, 5000.0, &[705]).unwrap();
        let m = inv.regs.borrow().start(705);
        let t0 = Instant::now();
        let c2 = m + 15 + 18;
        let factory = read(&sim, 1, m + 15, 18);
        // Voltages that do not increase: FAILED, curve 1 untouched, request reset.
        assert_eq!(write_at(&sim, c2, &[3, 1], t0)[7], 0x10);
        assert_eq!(
            write_at(&sim, c2 + 10, &[950, 0, 940, 0, 1100, 0], t0)[7],
            0x10
        );
        assert_eq!(write_at(&sim, m + 3, &[2], t0)[7], 0x10);
        let after = read(&sim, 1, m, 5);
        assert_eq!((after[3], after[4]), (0, 2), "AdptCrvReq reset, FAILED");
        assert_eq!(read(&sim, 1, m + 15, 18), factory);
        // A curve that does not exist: FAILED too.
        write_at(&sim, m + 3, &[4], t0);
        assert_eq!(read(&sim, 1, m + 4, 1), vec![2]);
        // A good one: COMPLETED, curve 1 holds it (still read-only), and with Ena it is
        // the curve in force.
        write_at(
            &sim,
            c2 + 10,
            &[940, 20, 1000, 0, 1100, (-40i16) as u16],
            t0,
        );
        write_at(&sim, m + 3, &[2], t0);
        assert_eq!(read(&sim, 1, m + 4, 1), vec![1]);
        let c1 = read(&sim, 1, m + 15, 18);
        assert_eq!((c1[0], c1[9], c1[10]), (3, 1, 940));
        assert_eq!(inv.volt_var(), None, "not before Ena");
        write_at(&sim, m + 2, &[1], t0);
        let vv = inv.volt_var().unwrap();
        assert_eq!(vv.points.len(), 3);
        assert!((vv.points[2].y_pct + 40.0).abs() < 1e-9);
        // Curve 1 cannot be written directly.
        assert_eq!(write_at(&sim, m + 15, &[2], t0)[7], 0x90);
    }

    #[test]
    fn a_704_limit_reverts_to_its_fallback() {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter_offering(1, 5000.0, &[704]).unwrap();
        let start = inv.regs.borrow().start(704);
        let ctl = sunspec::ModelRef {
            id: 704,
            start,
            len: L_704,
        };
        let t0 = Instant::now();
        let block = read(&sim, 1, start, L_704 + 2);
        let revert = sunspec::RevertPolicy {
            timeout_s: 60,
            fallback_pct: 30.0,
        };
        for w in sunspec::plan_active_power_limit(&ctl, &block, 55.0, revert).unwrap() {
            assert_eq!(
                write_at(&sim, w.address, &w.values, t0)[7],
                0x10,
                "{}",
                w.point
            );
        }
        assert_eq!(inv.limit_pct_at(t0 + Duration::from_secs(60)), Some(55.0));
        assert_eq!(inv.limit_pct_at(t0 + Duration::from_secs(61)), Some(30.0));
        // With 123's limit on too, the lower one holds.
        let c = inv.regs.borrow().start(123);
        write_at(&sim, c + m123::WMAXLIMPCT as u16, &[20], t0);
        write_at(&sim, c + m123::WMAXLIM_ENA as u16, &[1], t0);
        assert_eq!(inv.limit_pct_at(t0), Some(20.0));
        // The RvrtRem countdowns and the scale factors are read-only.
        assert_eq!(write_at(&sim, start + 20, &[1], t0)[7], 0x90);
        assert_eq!(write_at(&sim, start + 54, &[1], t0)[7], 0x90);
    }

    #[test]
    fn takes_a_planned_curve_on_126_and_puts_it_in_force() {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter(1, 5000.0);
        let start = inv.regs.borrow().start(126);
        let ctl = sunspec::ModelRef {
            id: 126,
            start,
            len: L_CURVES,
        };
        let block = read(&sim, 1, start, L_CURVES + 2);
        let curve = Curve {
            mode: ControlMode::VoltVar,
            points: [(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)]
                .into_iter()
                .map(|(v_pct, y_pct)| curves::CurvePoint { v_pct, y_pct })
                .collect(),
            dept_ref: 2,
        };
        // devices::curves' plan, frame by frame as the device layer writes it.
        let t0 = Instant::now();
        let writes = curves::plan_curve(&ctl, &block, &curve).unwrap();
        for w in &writes {
            let mut req = rmodbus::client::ModbusRequest::new_tcp_udp(1, 9);
            let mut f = Vec::new();
            req.generate_set_holdings_bulk(w.address, &w.values, &mut f)
                .unwrap();
            let reply = sim.handle(&f, t0).unwrap();
            assert_eq!(reply[7], 0x10, "{} accepted: {reply:02x?}", w.point);
        }
        let after = read(&sim, 1, start, L_CURVES + 2);
        assert!(sunspec::verify_writes(&ctl, &after, &writes).is_ok());
        let in_force = inv.volt_var().expect("curve 2 in force");
        assert_eq!(in_force.points.len(), 4);
        assert!((in_force.points[0].v_pct - 90.4).abs() < 1e-9);
        assert_eq!(in_force.dept_ref, 2);
        assert_eq!(inv.volt_watt(), None);
        // The factory curve is read-only, and so are the counts.
        let mut req = rmodbus::client::ModbusRequest::new_tcp_udp(1, 9);
        let mut f = Vec::new();
        req.generate_set_holdings_bulk(start + CURVES_FIXED as u16, &[1], &mut f)
            .unwrap();
        assert_eq!(sim.handle(&f, t0).unwrap()[7], 0x90);
        let mut f = Vec::new();
        req.generate_set_holdings_bulk(start + 7, &[5], &mut f)
            .unwrap();
        assert_eq!(sim.handle(&f, t0).unwrap()[7], 0x90);
    }

    #[test]
    fn honours_123_writes_and_refuses_others() {
        let sim = SunSpecSimulator::new();
        let inv = sim.add_inverter(1, 5000.0);
        let c = inv.regs.borrow().start(123);
        // Every write at one instant: the revert timer runs from it, not from the wall
        // clock (a loaded machine must not make the limit revert mid-test).
        let t0 = Instant::now();
        let write = |addr: u16, v: u16| {
            let mut req = rmodbus::client::ModbusRequest::new_tcp_udp(1, 9);
            let mut f = Vec::new();
            req.generate_set_holdings_bulk(addr, &[v], &mut f).unwrap();
            sim.handle(&f, t0).unwrap()
        };
        assert_eq!(inv.limit_pct_at(t0), None);
        write(c + m123::WMAXLIMPCT_RVRT_TMS as u16, 60);
        write(c + m123::WMAXLIMPCT as u16, 40);
        let ok = write(c + m123::WMAXLIM_ENA as u16, 1);
        assert_eq!(ok[7], 0x10);
        assert_eq!(inv.limit_pct_at(t0 + Duration::from_secs(60)), Some(40.0));
        // (limit_w reads the wall clock: well inside the 60 s)
        assert_eq!(inv.limit_w(), Some(2000.0));
        // revert timer: 60 s without a refresh → limit gone
        assert_eq!(inv.limit_pct_at(t0 + Duration::from_secs(61)), None);
        // scale factor and ID are read-only
        let e = write(c + m123::WMAXLIMPCT_SF as u16, 1);
        assert_eq!((e[7], e[8]), (0x90, 2));
        let e = write(c, 1);
        assert_eq!(e[8], 2);
        write(c + m123::CONN as u16, 0);
        assert!(!inv.connected());
    }

    #[test]
    fn battery_takes_a_planned_charge_limit_and_reverts() {
        let sim = SunSpecSimulator::new();
        let bat = sim.add_battery(2, 5000.0, 3000.0);
        bat.set_output_w(-2500.0);
        let b = bat.regs.borrow().start(124);
        let ctl = sunspec::ModelRef {
            id: 124,
            start: b,
            len: L_124,
        };
        let block = read(&sim, 2, b, L_124 + 2);
        let mut blocks = Blocks::new();
        blocks.insert(124, block.clone());
        let st = sunspec::decode_storage(&blocks).expect("model 124");
        assert_eq!(st.w_cha_max_w, Some(3000.0));
        assert_eq!(st.charge_limited, Some(false));
        assert_eq!(st.soc_pct, Some(50.0));
        assert_eq!(bat.charge_limit_w(), None);
        // devices::sunspec's plan, written frame by frame as the device layer does.
        // Written at one instant t0 with a 60 s revert timer: virtual time from there.
        let t0 = Instant::now();
        let writes = sunspec::plan_charge_limit(&ctl, &block, Some(1200.0), 60).unwrap();
        for w in &writes {
            let mut req = rmodbus::client::ModbusRequest::new_tcp_udp(2, 9);
            let mut f = Vec::new();
            req.generate_set_holdings_bulk(w.address, &w.values, &mut f)
                .unwrap();
            let reply = sim.handle(&f, t0).unwrap();
            assert_eq!(reply[7], 0x10, "{} accepted: {reply:02x?}", w.point);
        }
        let after = read(&sim, 2, b, L_124 + 2);
        assert!(sunspec::verify_writes(&ctl, &after, &writes).is_ok());
        assert_eq!(
            bat.charge_limit_w_at(t0 + Duration::from_secs(60)),
            Some(1200.0)
        );
        assert_eq!(
            bat.charge_limit_w_at(t0 + Duration::from_secs(61)),
            None,
            "reverted after 60 s without a refresh"
        );
        // Charging (negative output) reads as running, not sleeping.
        let m = read(&sim, 2, SIM_BASE + 2 + 68, 52);
        let mut blocks = Blocks::new();
        blocks.insert(103, m);
        let r = sunspec::decode_inverter(&blocks).unwrap();
        assert_eq!(r.ac.w, Some(-2500.0));
        assert_eq!(r.state, Some(sunspec::OperatingState::Running));
    }

    #[test]
    fn meter_and_unknown_unit() {
        let sim = SunSpecSimulator::new();
        let m = sim.add_meter(2);
        m.set_power_w(-2400.0);
        let c = m.regs.borrow().start(203);
        let regs = read(&sim, 2, c, 107);
        let mut blocks = Blocks::new();
        blocks.insert(203, regs);
        let r = sunspec::decode_meter(&blocks, false).unwrap();
        assert_eq!(r.ac.w, Some(-2400.0));
        assert_eq!(r.ac.phases[0].w, Some(-800.0));
        let reply = sim
            .handle(&read_frame(9, SIM_BASE, 2), Instant::now())
            .unwrap();
        assert_eq!((reply[7], reply[8]), (0x83, 0x0B));
    }
}
