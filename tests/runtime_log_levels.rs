//! The daemon's log lines keep their level on the way to the system log: procd logs a
//! service's stdout as `daemon.info` and its stderr as `daemon.err`, so csipd writes
//! info and debug lines to stdout and warnings and errors to stderr, and the init
//! script hands both streams to logd.

mod runtime_common;

use runtime_common::*;
use std::time::Duration;

#[test]
fn info_goes_to_stdout_and_warnings_to_stderr() {
    let dir = temp_dir("runtime-log-levels");
    let path = dir.join("csipd");
    // No devices: the daemon warns that no site meter is configured.
    std::fs::write(
        &path,
        format!(
            "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'

config limits 'fixed'
\toption export_limit_w '1000'
",
            d = dir.display()
        ),
    )
    .unwrap();
    // start_run waits for the status server's info line on stdout.
    let (mut run, _url) = start_run(&path.display().to_string());
    let running = run.stdout_containing(" running: config ", Duration::from_secs(30));
    assert!(running.starts_with("INFO "), "{running}");
    let warning = run.stderr_line("no site meter configured", Duration::from_secs(30));
    assert!(warning.starts_with("WARN "), "{warning}");
    run.drain_stderr();
    let misplaced: Vec<&String> = run
        .seen_stderr
        .iter()
        .filter(|l| l.starts_with("INFO ") || l.starts_with("DEBUG "))
        .collect();
    assert!(
        misplaced.is_empty(),
        "info lines on stderr would reach the log as daemon.err: {misplaced:?}"
    );
}

#[test]
fn the_init_script_hands_both_streams_to_logd() {
    let init = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/files/etc/init.d/csipd"
    ))
    .expect("init script");
    let instance: Vec<&str> = init
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("procd_open_instance"))
        .take_while(|l| !l.starts_with("procd_close_instance"))
        .collect();
    for param in ["procd_set_param stdout 1", "procd_set_param stderr 1"] {
        assert!(
            instance.contains(&param),
            "the procd instance lacks '{param}': {instance:?}"
        );
    }
}
