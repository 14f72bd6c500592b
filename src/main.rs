//! The `csipd` command line. Each subcommand lives in the module that owns it; this file
//! only dispatches.

use std::process::ExitCode;

const USAGE: &str = "usage: csipd <command> [args]

commands:
  check-config [FILE]   check a configuration file (default /etc/config/csipd);
                        prints FILE:LINE: problems, exits 2 on any error
  modbus-scan BUS UNIT...  find SunSpec devices on a bus and print what they report;
                        BUS: tcp://HOST[:PORT] or rtu:/dev/ttyUSB0[@BAUD[/8N1]]
  version               print the version
  help                  this text
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
        "check-config" => csipd::config::cli_check_config(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "modbus-scan" => csipd::devices::cli::cli_main(rest),
        other => {
            let _ = rest;
            eprintln!("csipd: unknown command '{other}'\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
