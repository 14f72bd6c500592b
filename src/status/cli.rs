//! `csipd status [--json] [--url URL]`: asks the running daemon and prints a summary.

use super::{client, render, snapshot::Snapshot};
use std::process::ExitCode;

pub const USAGE: &str = "usage: csipd status [--json] [--url URL]
  --json      print the daemon's /status JSON as is (for scripts)
  --url URL   the status server (default $CSIPD_STATUS_URL, else status_listen of
              /etc/config/csipd, else http://127.0.0.1:8080)
";

/// Entry point of `csipd status`; `args` are the words after `status`.
pub fn status_main(args: &[String]) -> ExitCode {
    let mut json = false;
    let mut url = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--json" => json = true,
            "--url" => match words.next() {
                Some(u) => url = Some(client::StatusUrl::from_option(u)),
                None => {
                    eprint!("csipd status: --url needs a value\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprint!("csipd status: unknown argument '{other}'\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let url = url.unwrap_or_else(client::default_url);
    let text = match client::get_text_at(&url, "/status") {
        Ok(text) => text,
        Err(e) => {
            eprintln!("csipd status: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{}", text.trim_end());
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<Snapshot>(&text) {
        Ok(snapshot) => {
            print!("{}", render::summary(&snapshot));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "csipd status: the answer of {}/status is not a csipd status snapshot ({e}); \
                 is that server a csipd of the same version? `--json` shows it raw",
                url.url.trim_end_matches('/').trim_end_matches("/status")
            );
            ExitCode::from(1)
        }
    }
}
