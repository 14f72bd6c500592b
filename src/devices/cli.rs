//! `csipd modbus-scan`: an installer's check of the wiring. Finds the SunSpec map of each
//! unit id, lists its models, prints a decoded reading and the link counters as JSON.

use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use super::{Bus, BusParams, Device, DeviceParams, Parity, TransportParams, sunspec};

pub const USAGE: &str = "csipd modbus-scan [--base N] BUS UNIT...
  BUS: tcp://HOST[:PORT] or rtu:/dev/ttyUSB0[@BAUD[/8N1|8E1|8O1|8N2|8E2|8O2]]
  UNIT: Modbus unit ids to scan, 1-247 (default 1)
  --base N: the register of the SunSpec marker (default: try 40000, 0, 50000)
Prints one JSON line per unit: the model chain, and each SunSpec device in it (a unit
can hold several, e.g. an inverter and its meter) with its identity and a reading.";

/// A `BUS` argument of `csipd modbus-scan` that does not parse: the argument, and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusArgError {
    /// The argument as given.
    pub bus: String,
    pub problem: BusArgProblem,
}

/// What is wrong with a `BUS` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusArgProblem {
    /// The TCP port is not a number 1-65535.
    Port(String),
    /// `tcp://` without a host.
    NoHost,
    /// The RTU baud rate is not a serial line rate (the rule of UCI `baud`).
    Baud(super::modbus::BaudError),
    /// The RTU framing is not 8 data bits, parity N/E/O and 1 or 2 stop bits.
    Framing(String),
    /// `rtu:` without a serial device path.
    NoPath,
    /// Neither `tcp://` nor `rtu:`.
    Scheme,
}

impl std::fmt::Display for BusArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bus '{}': ", self.bus)?;
        match &self.problem {
            BusArgProblem::Port(p) => write!(f, "port '{p}' is not a number 1-65535"),
            BusArgProblem::NoHost => write!(f, "missing host"),
            BusArgProblem::Baud(e) => write!(f, "{e}"),
            BusArgProblem::Framing(other) => write!(
                f,
                "framing '{other}' is not one of 8N1, 8E1, 8O1, 8N2, 8E2, 8O2 \
                 (data bits, parity none/even/odd, stop bits)"
            ),
            BusArgProblem::NoPath => write!(f, "missing serial device path"),
            BusArgProblem::Scheme => {
                write!(
                    f,
                    "expected tcp://HOST[:PORT] or rtu:/dev/ttyUSB0[@BAUD[/8N1]]"
                )
            }
        }
    }
}

impl std::error::Error for BusArgError {}

/// Parses `tcp://host[:port]` or `rtu:PATH[@BAUD[/8N1]]` (the form `TransportParams`
/// displays).
pub fn parse_transport(s: &str) -> Result<TransportParams, BusArgError> {
    let err = |problem| BusArgError {
        bus: s.to_string(),
        problem,
    };
    if let Some(rest) = s.strip_prefix("tcp://") {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h,
                p.parse::<u16>()
                    .map_err(|_| err(BusArgProblem::Port(p.to_string())))?,
            ),
            _ => (rest, 502),
        };
        if host.is_empty() {
            return Err(err(BusArgProblem::NoHost));
        }
        return Ok(TransportParams::Tcp {
            host: host.to_string(),
            port,
        });
    }
    if let Some(rest) = s.strip_prefix("rtu:") {
        let (path, line) = rest.split_once('@').unwrap_or((rest, "9600"));
        let (baud, framing) = line.split_once('/').unwrap_or((line, "8N1"));
        let baud = super::modbus::parse_baud(baud).map_err(|e| err(BusArgProblem::Baud(e)))?;
        // Every framing the config allows (parity none/even/odd, stop_bits 1/2), so the
        // bus string the status and logs show for a configured device scans as is.
        let (parity, stop_bits) = match framing.as_bytes() {
            [b'8', p @ (b'N' | b'E' | b'O'), stop @ (b'1' | b'2')] => (
                match p {
                    b'N' => Parity::None,
                    b'E' => Parity::Even,
                    _ => Parity::Odd,
                },
                stop - b'0',
            ),
            _ => return Err(err(BusArgProblem::Framing(framing.to_string()))),
        };
        if path.is_empty() {
            return Err(err(BusArgProblem::NoPath));
        }
        return Ok(TransportParams::Rtu {
            path: path.to_string(),
            baud,
            parity,
            stop_bits,
        });
    }
    Err(err(BusArgProblem::Scheme))
}

/// A unit id as the config takes it (`unit_id`, 1..247): 0 is the Modbus broadcast
/// address, which no device answers, and 248..255 are reserved.
pub fn parse_unit(s: &str) -> Result<u8, UnitArgError> {
    s.parse::<u8>()
        .ok()
        .filter(|id| (1..=247).contains(id))
        .ok_or_else(|| UnitArgError {
            unit: s.to_string(),
        })
}

/// A `UNIT` argument of `csipd modbus-scan` that is not a Modbus unit id 1-247.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitArgError {
    /// The argument as given.
    pub unit: String,
}

impl std::fmt::Display for UnitArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unit id '{}' is not a number 1-247 (0 is broadcast, which no device answers)",
            self.unit
        )
    }
}

impl std::error::Error for UnitArgError {}

/// `csipd modbus-scan [--base N] BUS UNIT...`
pub fn cli_main(args: &[String]) -> ExitCode {
    let mut base = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--base" {
            match it.next().map(|v| v.parse::<u16>()) {
                Some(Ok(b)) => base = Some(b),
                Some(Err(_)) | None => {
                    eprintln!("csipd modbus-scan: --base needs a register address 0-65535");
                    return ExitCode::from(2);
                }
            }
        } else {
            rest.push(a.clone());
        }
    }
    let Some((bus_arg, units)) = rest.split_first() else {
        eprintln!("usage:\n{USAGE}");
        return ExitCode::from(2);
    };
    let transport = match parse_transport(bus_arg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("csipd modbus-scan: {e}");
            return ExitCode::from(2);
        }
    };
    let mut unit_ids = Vec::new();
    for u in units {
        match parse_unit(u) {
            Ok(id) => unit_ids.push(id),
            Err(e) => {
                eprintln!("csipd modbus-scan: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if unit_ids.is_empty() {
        unit_ids.push(1);
    }
    if let TransportParams::Rtu { baud, .. } = &transport {
        if let Some(warning) = super::modbus::baud_warning(*baud) {
            eprintln!("csipd modbus-scan: warning: bus '{bus_arg}': {warning}");
        }
    }
    let bases: Vec<String> = match base {
        Some(b) => vec![b.to_string()],
        None => sunspec::DEFAULT_BASES.iter().map(u16::to_string).collect(),
    };
    let shown = transport.to_string();
    let bus = Rc::new(Bus::new(BusParams {
        transport: transport.clone(),
        timeout: Duration::from_secs(1),
        retries: 1,
        rtu_local_echo: false,
    }));
    let mut failed = false;
    let mut silent = Vec::new();
    smol::block_on(async {
        for unit in unit_ids {
            let mut params = DeviceParams::new(&format!("unit {unit}"), unit);
            params.sunspec_base = base;
            let mut dev = Device::new(bus.clone(), params);
            let (out, answered) = scan_unit(&mut dev, unit).await;
            failed |= out.contains_key("error");
            if !answered {
                silent.push(unit);
            }
            println!("{}", serde_json::Value::Object(out));
        }
    });
    if !silent.is_empty() {
        eprintln!(
            "csipd modbus-scan: {}",
            no_answer_message(&transport, &shown, &silent, &bases)
        );
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The summary of the unit ids that never answered: every address tried (unit ids,
/// base registers, and on a serial line the baud rate and framing), and what to check.
/// "no answer on rtu:/dev/ttyUSB0@9600/8N1 from unit ids 1, 2 (each asked for the
/// SunSpec marker at registers 40000, 0, 50000): ..."
pub fn no_answer_message(
    transport: &TransportParams,
    shown: &str,
    units: &[u8],
    bases: &[String],
) -> String {
    let ids: Vec<String> = units.iter().map(u8::to_string).collect();
    let which = if ids.len() == 1 {
        format!("unit id {}", ids[0])
    } else {
        format!("unit ids {}", ids.join(", "))
    };
    let registers = if bases.len() == 1 {
        format!("register {}", bases[0])
    } else {
        format!("registers {}", bases.join(", "))
    };
    let check = match transport {
        TransportParams::Rtu {
            path,
            baud,
            parity,
            stop_bits,
        } => {
            let p = match parity {
                Parity::None => 'N',
                Parity::Even => 'E',
                Parity::Odd => 'O',
            };
            // An example of another line setting, not the one tried.
            let other_baud = if *baud == 9600 { 19200 } else { 9600 };
            let other_framing = if *parity == Parity::None {
                "8E1"
            } else {
                "8N1"
            };
            format!(
                "check the wiring (A/B swapped? ground?), the devices' unit ids, and their \
                 baud rate and framing: only {baud} baud 8{p}{stop_bits} was tried (another: \
                 rtu:{path}@{other_baud}/{other_framing})"
            )
        }
        TransportParams::Tcp { .. } => "check the devices' unit ids (a gateway answers only \
             for the devices behind it, and some inverters only for their own id)"
            .to_string(),
    };
    format!(
        "no answer on {shown} from {which} (each asked for the SunSpec marker at \
         {registers}): {check}"
    )
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// One unit's scan as JSON: the chain (`map`), and under `devices` each SunSpec device
/// of the chain with its position, identity, models and a decoded reading. The first
/// device's identity and reading are repeated at the top level (`common`, `inverter`,
/// `meter`) for a unit with one device. The flag is false when the unit never answered
/// (timeouts at every register tried).
async fn scan_unit(
    dev: &mut Device,
    unit: u8,
) -> (serde_json::Map<String, serde_json::Value>, bool) {
    let mut out = serde_json::Map::new();
    out.insert("unit".into(), unit.into());
    let map = match dev.scan().await {
        Ok(map) => map.clone(),
        Err(e) => {
            let answered = !matches!(
                e,
                super::DeviceError::Modbus {
                    error: super::ModbusError::Timeout,
                    ..
                }
            );
            out.insert("error".into(), e.to_string().into());
            out.insert("stats".into(), json(dev.stats()));
            return (out, answered);
        }
    };
    out.insert("map".into(), json(&map));
    let chain = dev.chain_devices().to_vec();
    let mut devices = Vec::new();
    for d in &chain {
        let mut entry = serde_json::Map::new();
        entry.insert("position".into(), d.position.into());
        if let Some(c) = &d.common {
            entry.insert("common".into(), json(c));
        }
        entry.insert("models".into(), json(&d.map.ids()));
        dev.set_chain_device(Some(d.position));
        if d.map.find_any(&sunspec::INVERTER_MODELS).is_some() {
            match dev.read_inverter().await {
                Ok(r) => {
                    entry.insert("inverter".into(), json(&r));
                }
                Err(e) => {
                    entry.insert("error".into(), e.to_string().into());
                }
            }
        }
        if d.map.find_any(&sunspec::METER_MODELS).is_some() {
            match dev.read_meter().await {
                Ok(r) => {
                    entry.insert("meter".into(), json(&r));
                }
                Err(e) => {
                    entry.insert("error".into(), e.to_string().into());
                }
            }
        }
        devices.push(serde_json::Value::Object(entry));
    }
    if let Some(serde_json::Value::Object(first)) = devices.first() {
        for key in ["common", "inverter", "meter"] {
            if let Some(v) = first.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    // A device that could not be read makes the unit's scan a failure too.
    if let Some(e) = devices
        .iter()
        .find_map(|d| d.get("error").and_then(|e| e.as_str()))
    {
        out.insert("error".into(), e.into());
    }
    out.insert("devices".into(), serde_json::Value::Array(devices));
    out.insert("stats".into(), json(dev.stats()));
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bus_strings() {
        assert_eq!(
            parse_transport("tcp://192.168.1.50").unwrap(),
            TransportParams::Tcp {
                host: "192.168.1.50".into(),
                port: 502
            }
        );
        assert_eq!(
            parse_transport("tcp://inverter.lan:1502").unwrap(),
            TransportParams::Tcp {
                host: "inverter.lan".into(),
                port: 1502
            }
        );
        assert_eq!(
            parse_transport("rtu:/dev/ttyUSB0@19200/8E1").unwrap(),
            TransportParams::Rtu {
                path: "/dev/ttyUSB0".into(),
                baud: 19200,
                parity: Parity::Even,
                stop_bits: 1
            }
        );
        assert_eq!(
            parse_transport("rtu:/dev/ttyUSB0").unwrap().to_string(),
            "rtu:/dev/ttyUSB0@9600/8N1"
        );
        let port = parse_transport("tcp://host:99999").unwrap_err();
        assert_eq!(port.problem, BusArgProblem::Port("99999".into()));
        assert!(port.to_string().contains("99999"), "{port}");
        let baud = parse_transport("rtu:/dev/x@fast").unwrap_err();
        assert!(baud.to_string().contains("fast"), "{baud}");
        // The rule of UCI `baud`: a serial line rate, nothing else.
        for odd in ["9601", "0", "1234567", "-9600", ""] {
            let bus = format!("rtu:/dev/x@{odd}");
            let e = parse_transport(&bus).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "bus '{bus}': baud rate '{odd}' is not a serial line rate: use the \
                     device's setting, usually one of 1200, 2400, 4800, 9600, 19200, 38400, \
                     57600, 115200 (also accepted: 300 to 921600 at the standard UART rates)"
                )
            );
        }
        for rate in crate::devices::modbus::BAUD_RATES {
            assert!(
                parse_transport(&format!("rtu:/dev/x@{rate}")).is_ok(),
                "{rate}"
            );
        }
        assert_eq!(
            parse_transport("rtu:/dev/x@9600/7N1").unwrap_err().problem,
            BusArgProblem::Framing("7N1".into())
        );
        assert_eq!(
            parse_transport("serial0").unwrap_err().problem,
            BusArgProblem::Scheme
        );
    }

    /// `csipd modbus-scan` and check-config share the baud rule: what one refuses the
    /// other refuses, with the same words.
    #[test]
    fn baud_rates_are_one_rule_with_the_config() {
        for text in [
            "9601", "0", "1234567", "300", "9600", "14400", "921600", "x",
        ] {
            let scan = parse_transport(&format!("rtu:/dev/ttyUSB0@{text}"));
            let config = crate::config::from_text(
                &format!(
                    "config device 'd'\n\toption role 'meter'\n\toption transport 'rtu'\n\
                     \toption path '/dev/ttyUSB0'\n\toption baud '{text}'\n"
                ),
                "c",
            );
            match (&scan, &config) {
                (Ok(_), Ok(_)) => {}
                (Err(s), Err(c)) => {
                    let BusArgProblem::Baud(why) = &s.problem else {
                        panic!("{s}")
                    };
                    let c = format!("{c:?}");
                    assert!(c.contains(&format!("option 'baud': {why}")), "{text}: {c}");
                }
                _ => panic!("{text}: scan {scan:?}, config {config:?}"),
            }
        }
    }

    #[test]
    fn no_answer_names_every_address_tried() {
        let rtu = parse_transport("rtu:/dev/ttyUSB0@19200/8E1").unwrap();
        let bases: Vec<String> = ["40000", "0", "50000"].map(String::from).to_vec();
        assert_eq!(
            no_answer_message(&rtu, &rtu.to_string(), &[1, 2, 3], &bases),
            "no answer on rtu:/dev/ttyUSB0@19200/8E1 from unit ids 1, 2, 3 (each asked for \
             the SunSpec marker at registers 40000, 0, 50000): check the wiring (A/B \
             swapped? ground?), the devices' unit ids, and their baud rate and framing: only \
             19200 baud 8E1 was tried (another: rtu:/dev/ttyUSB0@9600/8N1)"
        );
        let tcp = parse_transport("tcp://gw:502").unwrap();
        assert!(
            no_answer_message(&tcp, "tcp://gw:502", &[7], &["40000".into()]).starts_with(
                "no answer on tcp://gw:502 from unit id 7 (each asked for the \
                              SunSpec marker at register 40000): check the devices' unit ids"
            )
        );
    }

    #[test]
    fn unit_ids_are_the_configs_1_to_247() {
        assert_eq!(parse_unit("1"), Ok(1));
        assert_eq!(parse_unit("247"), Ok(247));
        for bad in ["0", "248", "255", "256", "abc", ""] {
            let why = parse_unit(bad).unwrap_err().to_string();
            assert!(
                why.contains(&format!("'{bad}'")) && why.contains("1-247"),
                "{why}"
            );
        }
    }

    /// Every framing a configured device can have (parity none/even/odd, stop_bits 1/2)
    /// scans from the bus string the status and logs show for it.
    #[test]
    fn every_configurable_framing_round_trips() {
        for parity in [Parity::None, Parity::Even, Parity::Odd] {
            for stop_bits in [1, 2] {
                let shown = TransportParams::Rtu {
                    path: "/dev/ttyUSB0".into(),
                    baud: 19200,
                    parity,
                    stop_bits,
                };
                let text = shown.to_string();
                assert_eq!(parse_transport(&text).as_ref(), Ok(&shown), "{text}");
            }
        }
        let framing = parse_transport("rtu:/dev/x@9600/8E3").unwrap_err();
        assert_eq!(framing.problem, BusArgProblem::Framing("8E3".into()));
        assert!(framing.to_string().contains("8E3"), "{framing}");
    }
}
