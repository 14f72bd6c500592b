//! A minimal `log` backend for procd. procd hands a service's stdout to logd at
//! `daemon.info` and its stderr at `daemon.err` (the init script sets `procd_set_param
//! stdout 1` and `stderr 1`), so each line goes to the stream that keeps its level:
//! info, debug and trace to stdout, warnings and errors to stderr ([`stream_for`]).
//! The level comes from `CSIPD_LOG` when set, else from the configuration.

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

/// Which standard stream a log line is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// procd logs it as `daemon.info`.
    Stdout,
    /// procd logs it as `daemon.err`.
    Stderr,
}

/// The stream for a level: warnings and errors to stderr, the rest to stdout.
pub fn stream_for(level: log::Level) -> Stream {
    match level {
        log::Level::Error | log::Level::Warn => Stream::Stderr,
        log::Level::Info | log::Level::Debug | log::Level::Trace => Stream::Stdout,
    }
}

struct ProcdLogger;

impl Log for ProcdLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One write per line so lines from the status thread never interleave.
        let line = format!(
            "{} {}: {}\n",
            record.level(),
            record.target(),
            record.args()
        );
        let _ = match stream_for(record.level()) {
            Stream::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            // Flushed per line: stdout is block-buffered into a pipe, and a line that
            // waits in the buffer is a line missing from logread.
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|()| out.flush())
            }
        };
    }

    fn flush(&self) {}
}

static LOGGER: ProcdLogger = ProcdLogger;

/// Parses a level name as used in the config and in `CSIPD_LOG`.
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    match name.trim().to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// Installs the logger. `CSIPD_LOG` (if set and valid) overrides `configured`.
pub fn init(configured: LevelFilter) {
    let level = std::env::var("CSIPD_LOG")
        .ok()
        .and_then(|value| parse_level(&value))
        .unwrap_or(configured);
    // A second init (tests) keeps the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Changes the level after start-up (config reload).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names() {
        assert_eq!(parse_level("Warning"), Some(LevelFilter::Warn));
        assert_eq!(parse_level(" debug "), Some(LevelFilter::Debug));
        assert_eq!(parse_level("loud"), None);
    }

    #[test]
    fn warnings_and_errors_go_to_stderr_the_rest_to_stdout() {
        use log::Level;
        assert_eq!(stream_for(Level::Error), Stream::Stderr);
        assert_eq!(stream_for(Level::Warn), Stream::Stderr);
        assert_eq!(stream_for(Level::Info), Stream::Stdout);
        assert_eq!(stream_for(Level::Debug), Stream::Stdout);
        assert_eq!(stream_for(Level::Trace), Stream::Stdout);
    }
}
