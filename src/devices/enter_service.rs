//! Enter-service settings on the SunSpec 7xx-series model 703 (DER enter service),
//! layout from pysunspec2's model_703.json: `ES` (permit), `ESVHi`/`ESVLo` (% of
//! nominal voltage, `V_SF`), `ESHzHi`/`ESHzLo` (Hz, uint32, `Hz_SF`), `ESDlyTms`,
//! `ESRndTms`, `ESRmpTms` (s, uint32). Pure: plans the writes from the block as read and
//! decodes the block read back; the device does the IO
//! ([`super::Device::set_enter_service`]).
//!
//! The values come in IEEE 2030.5's units, as the DefaultDERControl's `setES*`
//! elements carry them (sep.xsd: voltages in hundredths of a percent, frequencies in
//! hundredths of Hz, times in hundredths of a second). Only the values given are
//! written (one write per point, thresholds before times); `ES` is not touched: 2030.5
//! has no enter-service permit in these settings.
//!
//! The values are [`crate::sep2::EnterService`], the one type of the concept: the
//! scheduler carries the utility's DefaultDERControl `setES*` to the bus task, which
//! writes them here (see README, "Curves, power factor and var from the utility").

use super::sunspec::{Block, ModelRef, RegisterWrite, SunSpecError};
use crate::sep2::EnterService;

const ES: usize = 2;
const ES_V_HI: usize = 3;
const ES_V_LO: usize = 4;
const ES_HZ_HI: usize = 5;
const ES_HZ_LO: usize = 7;
const ES_DLY_TMS: usize = 9;
const ES_RND_TMS: usize = 11;
const ES_RMP_TMS: usize = 13;
const V_SF: usize = 17;
const HZ_SF: usize = 18;
const LEN: usize = 19;

/// Model 703 as read, in SunSpec's units.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EnterServiceState {
    /// `ES` is 1 (ENABLED: entering service permitted).
    pub permitted: bool,
    pub v_hi_pct: Option<f64>,
    pub v_lo_pct: Option<f64>,
    pub hz_hi: Option<f64>,
    pub hz_lo: Option<f64>,
    pub delay_s: Option<u32>,
    pub random_delay_s: Option<u32>,
    pub ramp_s: Option<u32>,
}

fn scaled(value: f64, sf: Option<i16>, point: &'static str, max: f64) -> Result<u32, SunSpecError> {
    let sf = sf.ok_or(SunSpecError::UnknownScaleFactor { model: 703, point })?;
    let r = (value / 10f64.powi(i32::from(sf))).round();
    if !r.is_finite() || !(0.0..max).contains(&r) {
        return Err(SunSpecError::OutOfRange {
            what: format!("{point} {value} does not fit model 703 with scale factor {sf}"),
        });
    }
    Ok(r as u32)
}

/// The writes that put `es` on the 703 model `ctl`, given its block.
pub fn plan_enter_service(
    ctl: &ModelRef,
    regs: &[u16],
    es: &EnterService,
) -> Result<Vec<RegisterWrite>, SunSpecError> {
    if ctl.id != 703 {
        return Err(SunSpecError::MissingModel {
            wanted: "enter service (703)",
            present: vec![ctl.id],
        });
    }
    let b = Block::new(703, regs);
    b.ensure_len(LEN)?;
    let w = |off: usize, values: Vec<u16>, point| RegisterWrite {
        address: ctl.addr(off as u16),
        values,
        point,
    };
    let u32_words = |v: u32| vec![(v >> 16) as u16, v as u16];
    let mut out = Vec::new();
    for (off, v, point) in [
        (ES_V_HI, es.high_volt, "ESVHi"),
        (ES_V_LO, es.low_volt, "ESVLo"),
    ] {
        if let Some(v) = v {
            let pct = f64::from(v) / 100.0;
            out.push(w(
                off,
                vec![scaled(pct, b.sf(V_SF), point, 65535.0)? as u16],
                point,
            ));
        }
    }
    for (off, v, point) in [
        (ES_HZ_HI, es.high_freq, "ESHzHi"),
        (ES_HZ_LO, es.low_freq, "ESHzLo"),
    ] {
        if let Some(v) = v {
            let hz = f64::from(v) / 100.0;
            out.push(w(
                off,
                u32_words(scaled(hz, b.sf(HZ_SF), point, f64::from(u32::MAX))?),
                point,
            ));
        }
    }
    for (off, v, point) in [
        (ES_DLY_TMS, es.delay, "ESDlyTms"),
        (ES_RND_TMS, es.random_delay, "ESRndTms"),
        (ES_RMP_TMS, es.ramp_tms, "ESRmpTms"),
    ] {
        if let Some(v) = v {
            // Whole seconds: 703 has no time scale factor.
            out.push(w(off, u32_words((v + 50) / 100), point));
        }
    }
    Ok(out)
}

/// Model 703 as read.
pub fn decode(regs: &[u16]) -> EnterServiceState {
    let b = Block::new(703, regs);
    let hz = |off| {
        b.u32(off)
            .zip(b.sf(HZ_SF))
            .map(|(v, sf)| f64::from(v) * 10f64.powi(i32::from(sf)))
    };
    EnterServiceState {
        permitted: b.u16(ES) == Some(1),
        v_hi_pct: b.scaled_u16(ES_V_HI, V_SF),
        v_lo_pct: b.scaled_u16(ES_V_LO, V_SF),
        hz_hi: hz(ES_HZ_HI),
        hz_lo: hz(ES_HZ_LO),
        delay_s: b.u32(ES_DLY_TMS),
        random_delay_s: b.u32(ES_RND_TMS),
        ramp_s: b.u32(ES_RMP_TMS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_service_settings_in_2030_5_units_become_703_registers() {
        let mut regs = vec![0u16; LEN];
        regs[0] = 703;
        regs[1] = 17;
        regs[ES] = 1;
        regs[V_SF] = (-1i16) as u16;
        regs[HZ_SF] = (-2i16) as u16;
        let ctl = ModelRef {
            id: 703,
            start: 100,
            len: 17,
        };
        // AS/NZS 4777.2: 90.0–110.0 % V (as 2030.5's hundredths), 47.50–50.15 Hz,
        // 60 s delay, 360 s ramp.
        let es = EnterService {
            high_volt: Some(11_000),
            low_volt: Some(9_000),
            high_freq: Some(5015),
            low_freq: Some(4750),
            delay: Some(6000),
            random_delay: None,
            ramp_tms: Some(36_000),
        };
        let w = plan_enter_service(&ctl, &regs, &es).unwrap();
        let got: Vec<(u16, Vec<u16>)> = w.iter().map(|w| (w.address, w.values.clone())).collect();
        assert_eq!(
            got,
            vec![
                (103, vec![1100]),
                (104, vec![900]),
                (105, vec![0, 5015]),
                (107, vec![0, 4750]),
                (109, vec![0, 60]),
                (113, vec![0, 360]),
            ]
        );
        for x in &w {
            let off = usize::from(x.address - 100);
            regs[off..off + x.values.len()].copy_from_slice(&x.values);
        }
        let st = decode(&regs);
        assert!(st.permitted);
        assert_eq!((st.v_hi_pct, st.hz_lo), (Some(110.0), Some(47.5)));
        assert_eq!((st.delay_s, st.ramp_s), (Some(60), Some(360)));
        // Nothing given, nothing written; another model, an unknown scale factor: errors.
        assert!(
            plan_enter_service(&ctl, &regs, &EnterService::default())
                .unwrap()
                .is_empty()
        );
        assert!(plan_enter_service(&ModelRef { id: 704, ..ctl }, &regs, &es).is_err());
        regs[V_SF] = 0x8000;
        assert!(matches!(
            plan_enter_service(&ctl, &regs, &es),
            Err(SunSpecError::UnknownScaleFactor { .. })
        ));
    }
}
