//! The `csipd` command line. Each subcommand lives in the module that owns it; this file
//! only dispatches.

use std::process::ExitCode;

const USAGE: &str = "usage: csipd <command> [args]

commands:
  version               print the version
  help                  this text
  fetch PATH [--url URL --cert FILE --key FILE --ca FILE]
                        GET one resource from the utility server and print it
  cert request|show|selfsigned ...
                        device key, CSR, certificate details (LFDI/SFDI), lab certificate
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        "version" | "--version" | "-V" => {
            println!("csipd {}", csipd::VERSION);
            ExitCode::SUCCESS
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "fetch" => csipd::http::fetch_main(rest),
        "cert" => csipd::pki::cert_main(rest),
        other => {
            let _ = rest;
            eprintln!("csipd: unknown command '{other}'\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
