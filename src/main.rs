//! The `csipd` command line. Each subcommand lives in the module that owns it; this file
//! only dispatches.

use std::process::ExitCode;

const USAGE: &str = "usage: csipd <command> [args]

commands:
  run [--config FILE]   run the daemon (default /etc/config/csipd); SIGHUP reloads
  demo [--seconds N] [--port P] [--no-utility] [--utility-only [--listen ADDR]]
                        run csipd against a simulated site and a simulated CSIP-AUS
                        utility and show where to look (`csipd demo --help`);
                        lab builds only (not in the router packages), as is fleet
  fleet --devices N --dcap URL (--ca-cert F --ca-key K | --certs DIR)
                        N simulated DERs, each its own certificate and client engine,
                        against a utility server: a load test (`csipd fleet --help`)
  check-config [FILE]   check a configuration file (default /etc/config/csipd);
                        prints FILE:LINE: problems, exits 2 on any error
  modbus-scan [--base N] BUS UNIT...
                        find SunSpec devices on a bus and print what they report;
                        BUS: tcp://HOST[:PORT] or rtu:/dev/ttyUSB0[@BAUD[/8N1]]
  version               print the version
  status [--json] [--url URL]
                        summary of the running daemon (limits, utility, devices)
  rpcd list|call METHOD the rpcd plugin behind `ubus call csipd ...`
  help                  this text
  fetch PATH [--config FILE] [--url URL --cert FILE --key FILE --ca FILE]
                        GET one resource from the utility server and print it
  discover [--config FILE]
                        walk the utility server once from its DeviceCapability and
                        print the tree (device, registration, programs, controls, rates)
  cert request|show|selfsigned|sign ...
                        device key, CSR, certificate details (LFDI/SFDI), lab certificate,
                        and the manufacturer step: sign a CSR with a CA (cert sign
                        --ca-cert M --ca-key K --csr F --out C [--days N])
";

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Installed (symlinked) as /usr/libexec/rpcd/csipd, the binary is the rpcd plugin.
    if csipd::status::rpcd::is_plugin_path(&argv0) {
        return csipd::status::rpcd::rpcd_main(&args);
    }
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
        "run" => csipd::runtime::run_main(rest),
        #[cfg(feature = "lab")]
        "demo" => csipd::runtime::demo::demo_main(rest),
        #[cfg(feature = "lab")]
        "fleet" => csipd::runtime::fleet::fleet_main(rest),
        #[cfg(not(feature = "lab"))]
        "demo" | "fleet" => {
            eprintln!(
                "csipd {command}: not in this build. The router packages leave the lab tools \
                 (`csipd demo`, `csipd fleet`, the simulated site and utility) out to save \
                 flash; a default build has them: `cargo build --release` on a PC, or \
                 `cargo build --release --features lab` with the router's options"
            );
            ExitCode::from(2)
        }
        "status" => csipd::status::cli::status_main(rest),
        "rpcd" => csipd::status::rpcd::rpcd_main(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "fetch" => csipd::http::fetch_main(rest),
        "discover" => csipd::csip::discover_main(rest),
        "cert" => csipd::pki::cert_main(rest),
        "modbus-scan" => csipd::devices::cli::cli_main(rest),
        other => {
            let _ = rest;
            eprintln!("csipd: unknown command '{other}'\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
