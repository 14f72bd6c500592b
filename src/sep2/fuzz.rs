//! Robustness check for the reader: seeded random mutations of real documents, fed to
//! every reader. Nothing may panic; every input must give `Ok` or a `ReadError`.
//! Used by a unit test (fixed seed, fixed count) and by `examples/fuzz_sep2_read.rs`
//! for long runs. No IO, no external crates: a xorshift generator keeps runs repeatable.

use super::read::{Readable, read};
use super::types::*;

/// Seed documents: the captured utility responses.
pub const SEEDS: &[&[u8]] = &[
    include_bytes!("../../tests/fixtures/utility-servers/getDcap.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getTm.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getEdev.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getEdev_csipaus.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getEdev__EQLDEV3_rg.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getEdev__EQLDEV3_fsa.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getEdev__EQLDEV3_der.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getEdev__EQLDEV3_fsa_2_derp.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getDerp_TESTPROG3_derc.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getDerp_derc_sapn.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getDerp_dderc_sapn.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getEdev_cp_csipaus.xml"),
    include_bytes!("../../tests/fixtures/utility-servers/getMup.xml"),
];

/// Fragments that tend to reach unusual parser states.
const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"/>",
    b"</",
    b"&",
    b"&amp;",
    b"&#x0;",
    b"&#xFFFFFFFF;",
    b"&#99999999999;",
    b"&unknown;",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?xml version=\"1.0\"?>",
    b"<!DOCTYPE x [<!ENTITY e \"e\">]>",
    b"xmlns=\"urn:ieee:std:2030.5:ns\"",
    b"xmlns:c=\"https://csipaus.org/ns\"",
    b"xmlns:c=\"\"",
    b"c:",
    b"\"",
    b"'",
    b"=",
    b"<c:opModExpLimW>",
    b"<value>",
    b"</value>",
    b"<multiplier>127</multiplier>",
    b"-",
    b"+",
    b"99999999999999999999999",
    b"-129",
    b"0x10",
    b"FF",
    b"gg",
    b"\xFF\xFE",
    b"\xC3",
    b"\xEF\xBB\xBF",
    b"\0",
    b"\t\r\n",
    b" all=\"-1\"",
    b" responseRequired=\"ZZ\"",
    b"<DERControl>",
    b"</DERControl>",
    b"<EventStatus/>",
    b"<interval/>",
];

/// xorshift64*: tiny, seeded, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// One mutated document: 1–8 random edits of a seed.
pub fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut doc = SEEDS[rng.below(SEEDS.len())].to_vec();
    for _ in 0..=rng.below(8) {
        let len = doc.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 => {
                // Flip a byte.
                if at < len {
                    doc[at] = rng.next_u64() as u8;
                }
            }
            1 => {
                // Delete a range.
                let end = (at + rng.below(64)).min(len);
                doc.drain(at..end);
            }
            2 => {
                // Duplicate a range somewhere else.
                let end = (at + rng.below(256)).min(len);
                let piece = doc[at..end].to_vec();
                let to = rng.below(doc.len() + 1);
                doc.splice(to..to, piece);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                doc.splice(at..at, token.iter().copied());
            }
            4 => doc.truncate(at),
            5 => {
                // Replace a digit run with a huge or negative number.
                let token: &[u8] =
                    [b"-1".as_slice(), b"4294967296", b"-9223372036854775809"][rng.below(3)];
                if let Some(pos) = doc[at..].iter().position(u8::is_ascii_digit) {
                    let start = at + pos;
                    let end = start
                        + doc[start..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .count();
                    doc.splice(start..end, token.iter().copied());
                }
            }
            6 => {
                // Splice in a piece of another seed.
                let other = SEEDS[rng.below(SEEDS.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(512)).min(other.len());
                doc.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                // Nest deeply.
                let depth = rng.below(200);
                let open = b"<a>".repeat(depth);
                let close = b"</a>".repeat(depth);
                doc.splice(at..at, open.into_iter().chain(close));
            }
        }
    }
    doc
}

fn try_one<T: Readable>(doc: &[u8]) -> bool {
    match read::<T>(doc) {
        Ok(_) => true,
        Err(e) => {
            // Errors must say something.
            assert!(!e.problem.is_empty());
            false
        }
    }
}

/// Feeds `doc` to every reader; returns how many accepted it.
pub fn read_all(doc: &[u8]) -> usize {
    [
        try_one::<DeviceCapability>(doc),
        try_one::<Time>(doc),
        try_one::<EndDeviceList>(doc),
        try_one::<EndDevice>(doc),
        try_one::<Registration>(doc),
        try_one::<FunctionSetAssignmentsList>(doc),
        try_one::<DerProgramList>(doc),
        try_one::<DerControlList>(doc),
        try_one::<DefaultDerControl>(doc),
        try_one::<DerCurveList>(doc),
        try_one::<DerList>(doc),
        try_one::<MirrorUsagePointList>(doc),
        try_one::<LogEventList>(doc),
        try_one::<ConnectionPoint>(doc),
    ]
    .iter()
    .filter(|ok| **ok)
    .count()
}

/// Outcome of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct FuzzStats {
    pub cases: u64,
    /// Cases at least one reader accepted (mutations that kept the document valid).
    pub accepted: u64,
}

/// Runs `cases` mutated documents from `seed` through every reader.
pub fn run(seed: u64, cases: u64) -> FuzzStats {
    let mut rng = Rng::new(seed);
    let mut stats = FuzzStats::default();
    for _ in 0..cases {
        let doc = mutate(&mut rng);
        stats.cases += 1;
        if read_all(&doc) > 0 {
            stats.accepted += 1;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutated_documents_never_panic() {
        let stats = run(0x0005_EED2_0305, 1500);
        assert_eq!(stats.cases, 1500);
        // Both outcomes occur, so the mutations neither always break nor never break.
        assert!(
            stats.accepted > 0 && stats.accepted < stats.cases,
            "{stats:?}"
        );
    }

    #[test]
    fn pure_random_bytes_never_panic() {
        let mut rng = Rng::new(7);
        for _ in 0..500 {
            let len = rng.below(300);
            let doc: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            read_all(&doc);
        }
    }
}
