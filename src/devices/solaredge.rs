//! SolarEdge's own power control registers ("Enhanced Dynamic Power Control", from
//! SolarEdge's power control technical note): SolarEdge inverters expose SunSpec
//! readings (1, 101-103) but no SunSpec control model, so their active power limit is
//! written here instead. Pure: the plan of writes and the decoding of the block.
//!
//! The block read and written is 0xF300..=0xF323. Its 32-bit values (uint32, float32)
//! have the low word first (unlike SunSpec's), as SolarEdge documents them:
//! - 0xF300 `EnableDynamicPowerControl` (uint16, 1 = on);
//! - 0xF304 `MaxActivePower` (float32, W; read only);
//! - 0xF310 `CommandTimeout` (uint32, s): with no new command for this long the
//!   inverter goes to the fallback limit (csipd's revert timer);
//! - 0xF312 `FallbackActivePowerLimit` (float32, %): the level it reverts to;
//! - 0xF322 `DynamicActivePowerLimit` (float32, % of the rating): the limit.
//!
//! Like model 704, the inverter itself falls back to a level csipd chose (the
//! fail-safe export limit as a percentage) when csipd stops refreshing, so a dead csipd
//! leaves it safe.

use super::sunspec::{CommonInfo, LimitState, ModelRef, RegisterWrite, RevertPolicy, SunSpecError};

/// First register of the block csipd reads and writes.
pub const BLOCK_START: u16 = 0xF300;
/// Registers in the block (0xF300..=0xF323).
pub const BLOCK_LEN: u16 = 0x24;
/// `EnableDynamicPowerControl` (uint16).
pub const ENABLE_DYNAMIC_POWER_CONTROL: u16 = 0xF300;
/// `MaxActivePower` (float32, W).
pub const MAX_ACTIVE_POWER: u16 = 0xF304;
/// `CommandTimeout` (uint32, s).
pub const COMMAND_TIMEOUT: u16 = 0xF310;
/// `FallbackActivePowerLimit` (float32, %).
pub const FALLBACK_ACTIVE_POWER_LIMIT: u16 = 0xF312;
/// `DynamicActivePowerLimit` (float32, %).
pub const DYNAMIC_ACTIVE_POWER_LIMIT: u16 = 0xF322;

/// The pseudo model id csipd gives SolarEdge's block in a `LimitState` and in
/// `Controls::active_power_limit_model` (it is no SunSpec model; its first register).
pub const BLOCK_ID: u16 = BLOCK_START;

/// The block as a `ModelRef`, so that reading back and verifying work as for a model
/// (its "ID" and "L" registers are ordinary registers here).
pub fn block() -> ModelRef {
    ModelRef {
        id: BLOCK_ID,
        start: BLOCK_START,
        len: BLOCK_LEN - 2,
    }
}

/// The device says it is a SolarEdge (model 1 `Mn`).
pub fn is_solaredge(common: &CommonInfo) -> bool {
    common.manufacturer.trim().eq_ignore_ascii_case("solaredge")
}

/// float32 as two registers, low word first.
pub fn encode_f32(v: f32) -> [u16; 2] {
    let b = v.to_bits();
    [b as u16, (b >> 16) as u16]
}

/// uint32 as two registers, low word first.
pub fn encode_u32(v: u32) -> [u16; 2] {
    [v as u16, (v >> 16) as u16]
}

fn word(block: &[u16], addr: u16) -> Option<u16> {
    block
        .get(usize::from(addr.checked_sub(BLOCK_START)?))
        .copied()
}

fn pair(block: &[u16], addr: u16) -> Option<u32> {
    let lo = word(block, addr)?;
    let hi = word(block, addr.checked_add(1)?)?;
    Some((u32::from(hi) << 16) | u32::from(lo))
}

fn f32_at(block: &[u16], addr: u16) -> Option<f64> {
    pair(block, addr)
        .map(f32::from_bits)
        .filter(|v| v.is_finite())
        .map(f64::from)
}

/// The limit in force as the block says (`model` = [`BLOCK_ID`]).
pub fn decode_limit(block: &[u16]) -> LimitState {
    LimitState {
        model: BLOCK_ID,
        enabled: word(block, ENABLE_DYNAMIC_POWER_CONTROL).map(|v| v == 1),
        limit_pct: f32_at(block, DYNAMIC_ACTIVE_POWER_LIMIT),
        revert_s: pair(block, COMMAND_TIMEOUT),
        conn_commanded: None,
    }
}

/// `MaxActivePower`, W, when the inverter reports a positive one.
pub fn max_active_power_w(block: &[u16]) -> Option<f64> {
    f32_at(block, MAX_ACTIVE_POWER).filter(|w| *w > 0.0)
}

/// The writes that limit active power to `pct` % of the rating: the command timeout
/// and the fallback level first (so the limit never runs without them), then the
/// limit, then the enable. 100 % releases the limit. A `timeout_s` of 0 is refused:
/// SolarEdge has no "never" and csipd always wants a revert.
pub fn plan_limit(pct: f64, revert: RevertPolicy) -> Result<Vec<RegisterWrite>, SunSpecError> {
    for (what, v) in [
        ("active power limit", pct),
        ("fallback limit", revert.fallback_pct),
    ] {
        if !(0.0..=100.0).contains(&v) || v.is_nan() {
            return Err(SunSpecError::OutOfRange {
                what: format!("SolarEdge {what} {v}% is outside 0..=100"),
            });
        }
    }
    if revert.timeout_s == 0 {
        return Err(SunSpecError::OutOfRange {
            what: "SolarEdge command timeout 0 s: csipd always sets a revert timer".into(),
        });
    }
    let timeout = encode_u32(revert.timeout_s);
    let fallback = encode_f32(revert.fallback_pct as f32);
    let limit = encode_f32(pct as f32);
    Ok(vec![
        RegisterWrite {
            address: COMMAND_TIMEOUT,
            // CommandTimeout (0xF310-11) and FallbackActivePowerLimit (0xF312-13) are
            // adjacent: one write covers exactly these two points.
            values: vec![timeout[0], timeout[1], fallback[0], fallback[1]],
            point: "CommandTimeout+FallbackActivePowerLimit",
        },
        RegisterWrite {
            address: DYNAMIC_ACTIVE_POWER_LIMIT,
            values: limit.to_vec(),
            point: "DynamicActivePowerLimit",
        },
        RegisterWrite {
            address: ENABLE_DYNAMIC_POWER_CONTROL,
            values: vec![1],
            point: "EnableDynamicPowerControl",
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::sunspec::verify_writes;

    #[test]
    fn words_are_low_first() {
        assert_eq!(encode_u32(120), [120, 0]);
        assert_eq!(encode_u32(0x0001_0002), [2, 1]);
        // 50.0f32 = 0x42480000
        assert_eq!(encode_f32(50.0), [0x0000, 0x4248]);
    }

    #[test]
    fn plan_writes_timeout_and_fallback_first_and_reads_back() {
        let w = plan_limit(
            37.5,
            RevertPolicy {
                timeout_s: 120,
                fallback_pct: 20.0,
            },
        )
        .unwrap();
        assert_eq!(
            w.iter().map(|w| w.address).collect::<Vec<_>>(),
            vec![0xF310, 0xF322, 0xF300]
        );
        let mut regs = vec![0u16; usize::from(BLOCK_LEN)];
        for wr in &w {
            let off = usize::from(wr.address - BLOCK_START);
            regs[off..off + wr.values.len()].copy_from_slice(&wr.values);
        }
        assert!(verify_writes(&block(), &regs, &w).is_ok());
        let st = decode_limit(&regs);
        assert_eq!(st.enabled, Some(true));
        assert_eq!(st.limit_pct, Some(37.5));
        assert_eq!(st.revert_s, Some(120));
        regs[usize::from(DYNAMIC_ACTIVE_POWER_LIMIT - BLOCK_START)] ^= 1;
        assert!(verify_writes(&block(), &regs, &w).is_err());
        let bad = |pct, timeout_s, fallback_pct| {
            plan_limit(
                pct,
                RevertPolicy {
                    timeout_s,
                    fallback_pct,
                },
            )
            .is_err()
        };
        assert!(bad(101.0, 60, 0.0));
        assert!(bad(f64::NAN, 60, 0.0));
        assert!(bad(50.0, 0, 0.0));
        assert!(bad(50.0, 60, -1.0));
    }

    #[test]
    fn detected_by_manufacturer() {
        let c = |m: &str| CommonInfo {
            manufacturer: m.into(),
            ..Default::default()
        };
        assert!(is_solaredge(&c("SolarEdge ")));
        assert!(is_solaredge(&c("SOLAREDGE")));
        assert!(!is_solaredge(&c("Fronius")));
    }
}
