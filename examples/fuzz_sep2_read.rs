//! Long robustness run of the 2030.5 reader: random mutations of the captured utility
//! documents through every reader, for a given time. A panic aborts the run (and names
//! the seed so the case can be replayed).
//!
//! `cargo run --release --example fuzz_sep2_read -- [seconds] [seed]`

use std::time::{Duration, Instant};

use csipd::sep2::fuzz;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let deadline = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut total = fuzz::FuzzStats::default();
    let mut batch_seed = seed;
    while start.elapsed() < deadline {
        // Batches with their own seed, so a panic message's seed replays one batch.
        eprint!("\rseed {batch_seed}: {} cases so far", total.cases);
        let stats = fuzz::run(batch_seed, 1000);
        total.cases += stats.cases;
        total.accepted += stats.accepted;
        batch_seed += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!();
    println!(
        "{} mutated documents x 14 readers in {elapsed:.1} s ({:.0} documents/s), \
         {} accepted by some reader, no panic (seeds {seed}..{batch_seed})",
        total.cases,
        total.cases as f64 / elapsed,
        total.accepted
    );
}
