//! The guard of issue 26: no test waits for a guessed duration and then asserts. A
//! test waits for the condition it needs (tests/support/wait.rs, or an event such as a
//! log line, a request the peer recorded, a process exiting) or drives a virtual clock.
//!
//! Every sleep in the test files (`sleep(` in Rust and Python, `Timer::after(`/`at(`/
//! `interval(`, `sleep N` in shell scripts) must carry a comment `sleep-ok: WHY` on its
//! line or on one of the three lines above it, saying why the pause is not a wait for
//! something (a random kill moment, a peer's own pace, a benchmark's measuring period,
//! the poll interval of a wait with a deadline). tests/support/wait.rs, the one place
//! that polls for conditions, is exempt.

use std::path::{Path, PathBuf};

/// wait.rs polls for conditions with a deadline; this file names sleeps as its own test
/// data.
const EXEMPT: &[&str] = &["tests/support/wait.rs", "tests/no_fixed_sleeps.rs"];

/// How many lines above a sleep its `sleep-ok:` comment may stand.
const REASON_WITHIN: usize = 3;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            // Data only (server responses, register maps).
            if !path.ends_with("fixtures") {
                files(&path, out);
            }
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "py" || e == "sh")
        {
            out.push(path);
        }
    }
}

/// Whether `line` (code, not a comment) pauses for a fixed time.
fn is_sleep(line: &str, shell: bool) -> bool {
    let code = line.trim_start();
    if code.starts_with("//") || code.starts_with('#') {
        return false;
    }
    if shell {
        let words: Vec<&str> = code.split_whitespace().collect();
        return words.windows(2).any(|w| {
            w[0].trim_start_matches(['(', ';']) == "sleep"
                && w[1].starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '$')
        }) || words.first() == Some(&"sleep");
    }
    ["sleep(", "Timer::after(", "Timer::at(", "Timer::interval("]
        .iter()
        .any(|p| code.contains(p))
}

/// Every sleep without a `sleep-ok:` reason, as "path:line: text".
fn unexplained_sleeps(root: &Path) -> Vec<String> {
    let mut all = Vec::new();
    files(&root.join("tests"), &mut all);
    let mut found = Vec::new();
    for path in all {
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let rel_text = rel.to_string_lossy().replace('\\', "/");
        if EXEMPT.contains(&rel_text.as_str()) {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines: Vec<&str> = text.lines().collect();
        let shell = rel_text.ends_with(".sh");
        for (i, line) in lines.iter().enumerate() {
            if !is_sleep(line, shell) {
                continue;
            }
            let reasoned = lines[i.saturating_sub(REASON_WITHIN)..=i]
                .iter()
                .any(|l| l.contains("sleep-ok:"));
            if !reasoned {
                found.push(format!("{rel_text}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn every_sleep_in_the_tests_says_why_it_is_not_a_wait() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = unexplained_sleeps(root);
    assert!(
        found.is_empty(),
        "fixed sleeps in the tests (issue 26): wait for the condition instead \
         (tests/support/wait.rs: wait_until with a deadline of tens of seconds), or for an \
         event that proves the time passed, or drive a virtual clock; a sleep that is not a \
         wait takes a `sleep-ok: WHY` comment on its line or the {REASON_WITHIN} above:\n{}",
        found.join("\n")
    );
}

/// The guard finds what it is for, and lets a reasoned sleep pass.
#[test]
fn the_guard_catches_a_bare_sleep_and_passes_a_reasoned_one() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("no-fixed-sleeps-{}", std::process::id()));
    let tests = root.join("tests");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(tests.join("support")).unwrap();
    std::fs::create_dir_all(tests.join("fixtures")).unwrap();
    std::fs::write(
        tests.join("a.rs"),
        "fn t() {\n    std::thread::sleep(Duration::from_secs(3));\n    assert!(done());\n}\n\
         // std::thread::sleep(x) in a comment\n\
         fn u() {\n    // sleep-ok: the kill moment\n    std::thread::sleep(d);\n}\n\
         fn w() {}\nfn x() {}\n\
         async fn v() { smol::Timer::after(Duration::from_millis(5)).await; }\n",
    )
    .unwrap();
    std::fs::write(tests.join("peer.py"), "import time\ntime.sleep(1)\n").unwrap();
    std::fs::write(
        tests.join("x.sh"),
        "#!/bin/sh\nsleep 2\n# sleep 3\nx; sleep 1\n",
    )
    .unwrap();
    std::fs::write(
        tests.join("support/wait.rs"),
        "std::thread::sleep(every);\n",
    )
    .unwrap();
    std::fs::write(tests.join("fixtures/data.py"), "time.sleep(9)\n").unwrap();
    let found = unexplained_sleeps(&root);
    assert_eq!(
        found,
        [
            "tests/a.rs:2: std::thread::sleep(Duration::from_secs(3));",
            "tests/a.rs:12: async fn v() { smol::Timer::after(Duration::from_millis(5)).await; }",
            "tests/peer.py:2: time.sleep(1)",
            "tests/x.sh:2: sleep 2",
            "tests/x.sh:4: x; sleep 1",
        ]
    );
    let _ = std::fs::remove_dir_all(&root);
}
