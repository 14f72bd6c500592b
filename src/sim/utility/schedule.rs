//! The simulated utility's day of dynamic operating envelopes (DOEs), sans IO.
//!
//! A CSIP-AUS network operator publishes site export and import limits in 5-minute
//! blocks (SA Power Networks and Energy Queensland both use 300 s DERControls carrying
//! `csipaus:opModExpLimW` / `csipaus:opModImpLimW`). The simulator plays one such day,
//! compressed: a virtual day of 288 blocks takes `day_s` real seconds, so each block
//! lasts `day_s / 288` real seconds (at least 1 s). The DERControls it serves carry real
//! Unix times (the client schedules by its own clock), only their spacing is compressed.
//!
//! The day starts at virtual 09:00, so the midday solar peak (tight export limits) comes
//! first. Special blocks, counted from the start:
//! - block [`RANDOMIZED_BLOCK`] carries `randomizeStart` (half a block);
//! - block [`CANCELLED_BLOCK`] is published, then cancelled three blocks before it
//!   starts;
//! - every block with `index % 12 == 11` is left out, so the program's
//!   DefaultDERControl ([`DEFAULT_EXPORT_LIMIT_W`]) applies for one block an hour.

use crate::clock::Now;

/// Blocks in a virtual day (5-minute blocks).
pub const BLOCKS_PER_DAY: u64 = 288;
/// Virtual length of one block (s).
pub const VIRTUAL_BLOCK_S: u32 = 300;
/// Virtual time of day at the first block (s after midnight): 09:00.
pub const VIRTUAL_START_S: u32 = 9 * 3600;
/// How many blocks ahead of the current one are published.
pub const LOOKAHEAD_BLOCKS: u64 = 12;
/// The block served with `randomizeStart`.
pub const RANDOMIZED_BLOCK: u64 = 2;
/// The block that is cancelled after it was published.
pub const CANCELLED_BLOCK: u64 = 8;
/// How many blocks before its start the cancelled block is cancelled (late enough that
/// a client started with the server has read it as scheduled first).
pub const CANCEL_LEAD_BLOCKS: u64 = 3;
/// The DefaultDERControl's limits (W).
pub const DEFAULT_EXPORT_LIMIT_W: i32 = 1200;

/// A `--day-s` the simulator cannot play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(pub String);

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

/// One compressed day, anchored at `origin_utc_s` (the first block's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayPlan {
    /// Unix seconds at which block 0 starts.
    pub origin_utc_s: i64,
    /// Real seconds per block.
    pub block_s: u32,
}

/// What a DERControl's EventStatus.currentStatus is at some moment (IEEE 2030.5
/// EventStatus: 0 scheduled, 1 active, 2 cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    Scheduled,
    Active,
    Cancelled,
}

impl BlockStatus {
    /// The `currentStatus` code.
    pub fn code(self) -> u8 {
        match self {
            BlockStatus::Scheduled => 0,
            BlockStatus::Active => 1,
            BlockStatus::Cancelled => 2,
        }
    }
}

/// One 5-minute DOE block as the utility publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Blocks since the day's start.
    pub index: u64,
    /// HexBinary128 mRID, unique per run (the origin is in it).
    pub mrid: String,
    /// Unix seconds.
    pub start_utc_s: i64,
    /// Real seconds.
    pub duration_s: u32,
    /// When the utility first lists it (Unix seconds): `LOOKAHEAD_BLOCKS` ahead.
    pub creation_utc_s: i64,
    pub export_limit_w: i32,
    /// Only in the evening peak (virtual 17:00-21:00); other blocks leave import free.
    pub import_limit_w: Option<i32>,
    /// `randomizeStart` (s), on [`RANDOMIZED_BLOCK`] only.
    pub randomize_start_s: Option<i16>,
    /// When it is cancelled (Unix seconds), on [`CANCELLED_BLOCK`] only.
    pub cancelled_at_utc_s: Option<i64>,
    /// Virtual time of day at its start (s after midnight).
    pub virtual_time_of_day_s: u32,
}

impl Block {
    /// Unix seconds at which it ends.
    pub fn end_utc_s(&self) -> i64 {
        self.start_utc_s + i64::from(self.duration_s)
    }

    /// Its status at `now`, and since when (Unix seconds) for EventStatus.dateTime.
    pub fn status_at(&self, now: Now) -> (BlockStatus, i64) {
        let t = now.utc_s();
        if let Some(c) = self.cancelled_at_utc_s.filter(|c| t >= *c) {
            return (BlockStatus::Cancelled, c);
        }
        if t >= self.start_utc_s && t < self.end_utc_s() {
            (BlockStatus::Active, self.start_utc_s)
        } else {
            (BlockStatus::Scheduled, self.creation_utc_s)
        }
    }
}

impl DayPlan {
    /// A day of `day_s` real seconds starting at `origin_utc_s`. `day_s` must give each
    /// block at least one second (≥ 288) and at most its real 300 s (≤ 86400).
    pub fn new(origin_utc_s: i64, day_s: u32) -> Result<DayPlan, ScheduleError> {
        if !(BLOCKS_PER_DAY as u32..=86_400).contains(&day_s) {
            return Err(ScheduleError(format!(
                "--day-s {day_s}: a simulated day must last 288..86400 s (1..300 s per 5-minute block)"
            )));
        }
        Ok(DayPlan {
            origin_utc_s,
            block_s: day_s / BLOCKS_PER_DAY as u32,
        })
    }

    /// The block index at `now` (0 before the origin).
    pub fn index_at(&self, now: Now) -> u64 {
        let since = now.utc_s() - self.origin_utc_s;
        if since <= 0 {
            0
        } else {
            (since / i64::from(self.block_s)) as u64
        }
    }

    /// Block `index`, or `None` for the hourly gap (the default control applies).
    pub fn block(&self, index: u64) -> Option<Block> {
        if index % 12 == 11 {
            return None;
        }
        let start = self.origin_utc_s + index as i64 * i64::from(self.block_s);
        let tod =
            ((u64::from(VIRTUAL_START_S) + index * u64::from(VIRTUAL_BLOCK_S)) % 86_400) as u32;
        let (export_limit_w, import_limit_w) = envelope_w(tod, index);
        Some(Block {
            index,
            mrid: block_mrid(self.origin_utc_s, index),
            start_utc_s: start,
            duration_s: self.block_s,
            creation_utc_s: (start - LOOKAHEAD_BLOCKS as i64 * i64::from(self.block_s))
                .max(self.origin_utc_s),
            export_limit_w,
            import_limit_w,
            randomize_start_s: (index == RANDOMIZED_BLOCK)
                .then(|| (self.block_s / 2).clamp(1, i16::MAX as u32) as i16),
            cancelled_at_utc_s: (index == CANCELLED_BLOCK).then(|| {
                (start - CANCEL_LEAD_BLOCKS as i64 * i64::from(self.block_s)).max(self.origin_utc_s)
            }),
            virtual_time_of_day_s: tod,
        })
    }

    /// The blocks listed at `now`: the current one and the next [`LOOKAHEAD_BLOCKS`]
    /// (gaps left out). A block stays listed until it has ended for every client,
    /// randomised start included (a client may take an event that vanishes early for a
    /// cancelled one); a cancelled block stays listed, cancelled, as long.
    pub fn published(&self, now: Now) -> Vec<Block> {
        let current = self.index_at(now);
        (current.saturating_sub(1)..=current + LOOKAHEAD_BLOCKS)
            .filter_map(|i| self.block(i))
            .filter(|b| {
                let listed_until =
                    b.end_utc_s() + i64::from(b.randomize_start_s.unwrap_or(0).max(0));
                b.creation_utc_s <= now.utc_s() && listed_until > now.utc_s()
            })
            .collect()
    }
}

/// A block's mRID: "D0E", the block index in 5 hex digits (so the 8 characters a
/// status line shows tell blocks apart), then the day's origin (unique per run).
pub fn block_mrid(origin_utc_s: i64, index: u64) -> String {
    format!("D0E{:05X}{:024X}", index & 0xF_FFFF, origin_utc_s as u64)
}

/// The block index in a mRID made by [`block_mrid`].
pub fn block_index_of(mrid: &str) -> Option<u64> {
    let hex = mrid.strip_prefix("D0E")?.get(..5)?;
    u64::from_str_radix(hex, 16).ok()
}

/// The envelope at virtual time of day `tod_s` (export W, import W if any), with a ±100 W
/// step per block so the limit visibly changes every block. The shape: generous at
/// night, tight around the solar noon (minimum system load), import-limited in the
/// evening peak.
pub fn envelope_w(tod_s: u32, index: u64) -> (i32, Option<i32>) {
    let hour = tod_s / 3600;
    // A deterministic wobble in -100..=100 W (multiplicative hash of the index).
    let wobble = ((index.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as i32 - 16) * 100 / 16;
    let (export, import) = match hour {
        0..=5 => (5000, None),
        6..=8 => (3000, None),
        9..=14 => {
            // 900 W at 09:00 down to 500 W at noon and back.
            let from_noon = (tod_s as i32 - 12 * 3600).abs();
            (500 + from_noon * 400 / (3 * 3600), None)
        }
        15..=16 => (2000, None),
        17..=20 => (5000, Some(2000)),
        _ => (5000, None),
    };
    ((export + wobble).max(0), import)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: i64 = 1_760_000_000;

    #[test]
    fn day_length_is_checked() {
        assert!(DayPlan::new(ORIGIN, 100).is_err());
        assert!(DayPlan::new(ORIGIN, 90_000).is_err());
        assert_eq!(DayPlan::new(ORIGIN, 2880).unwrap().block_s, 10);
        assert_eq!(DayPlan::new(ORIGIN, 86_400).unwrap().block_s, 300);
    }

    #[test]
    fn blocks_through_a_virtual_day() {
        let plan = DayPlan::new(ORIGIN, 2880).unwrap();
        let t0 = Now::at(ORIGIN);
        // Block 0: virtual 09:00, tight export, active from the origin.
        let published = plan.published(t0);
        let first = &published[0];
        assert_eq!(first.index, 0);
        assert_eq!(first.virtual_time_of_day_s, 9 * 3600);
        assert!((800..=1000).contains(&first.export_limit_w), "{first:?}");
        assert_eq!(first.status_at(t0), (BlockStatus::Active, ORIGIN));
        assert_eq!(first.mrid.len(), 32);
        assert_eq!(&first.mrid[..8], "D0E00000");
        assert_eq!(block_index_of(&plan.block(300).unwrap().mrid), Some(300));
        // The next 12 blocks are published, minus the hourly gap (index 11).
        let indices: Vec<u64> = published.iter().map(|b| b.index).collect();
        assert_eq!(indices, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]);
        // Limits change from block to block; the mRIDs are distinct.
        let exports: std::collections::BTreeSet<i32> =
            published.iter().map(|b| b.export_limit_w).collect();
        assert!(exports.len() > 3, "{exports:?}");
        let mrids: std::collections::BTreeSet<&str> =
            published.iter().map(|b| b.mrid.as_str()).collect();
        assert_eq!(mrids.len(), published.len());

        // Randomised start on block 2 only.
        assert_eq!(plan.block(2).unwrap().randomize_start_s, Some(5));
        assert!(
            published
                .iter()
                .filter(|b| b.index != 2)
                .all(|b| b.randomize_start_s.is_none())
        );

        // Block 8 is scheduled at first, cancelled three blocks before it starts, and
        // stays listed as cancelled until it would have ended.
        let c = plan.block(CANCELLED_BLOCK).unwrap();
        assert_eq!(c.status_at(t0).0, BlockStatus::Scheduled);
        assert_eq!(c.status_at(t0.plus_ms(49_000)).0, BlockStatus::Scheduled);
        let t_cancel = t0.plus_ms(50_000);
        assert_eq!(c.status_at(t_cancel), (BlockStatus::Cancelled, ORIGIN + 50));
        let t_in = t0.plus_ms(85_000);
        assert_eq!(plan.index_at(t_in), 8);
        let now_listed = plan.published(t_in);
        // Block 7 has ended (no randomisation): 8 comes first.
        assert_eq!(now_listed[0].index, 8);
        assert_eq!(now_listed[0].status_at(t_in).0, BlockStatus::Cancelled);

        // The randomised block stays listed for its randomisation after its end.
        let r = plan.block(RANDOMIZED_BLOCK).unwrap();
        let after_end = Now::at(r.end_utc_s() + 2);
        assert!(
            plan.published(after_end)
                .iter()
                .any(|b| b.index == RANDOMIZED_BLOCK)
        );
        let later = Now::at(r.end_utc_s() + 5);
        assert!(
            plan.published(later)
                .iter()
                .all(|b| b.index != RANDOMIZED_BLOCK)
        );

        // Block 11 (virtual 09:55) is the gap: nothing published for it.
        assert!(plan.block(11).is_none());
        let t_gap = t0.plus_ms(115_000);
        assert_eq!(plan.index_at(t_gap), 11);
        assert!(
            plan.published(t_gap)
                .iter()
                .all(|b| b.start_utc_s > t_gap.utc_s())
        );

        // Virtual noon (block 36) is the tightest export; the evening (virtual 18:00,
        // block 108) limits import instead.
        let noon = plan.block(36).unwrap();
        assert_eq!(noon.virtual_time_of_day_s, 12 * 3600);
        assert!(noon.export_limit_w <= 600, "{noon:?}");
        let evening = plan.block(108).unwrap();
        assert_eq!(evening.virtual_time_of_day_s, 18 * 3600);
        assert_eq!(evening.import_limit_w, Some(2000));
        assert_eq!(noon.import_limit_w, None);
        assert!(evening.export_limit_w >= 4900);
        // The day wraps: block 288 is virtual 09:00 again.
        assert_eq!(plan.block(288).unwrap().virtual_time_of_day_s, 9 * 3600);
    }
}
