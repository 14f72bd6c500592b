//! `csipd modbus-scan`: an installer's check of the wiring. Finds the SunSpec map of each
//! unit id, lists its models, prints a decoded reading and the link counters as JSON.

use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use super::{Bus, BusParams, Device, DeviceParams, Parity, TransportParams, sunspec};

pub const USAGE: &str = "csipd modbus-scan BUS UNIT...
  BUS: tcp://HOST[:PORT] or rtu:/dev/ttyUSB0[@BAUD[/8N1|8E1|8O1|8N2]]
  UNIT: Modbus unit ids to scan (default 1)";

/// Parses `tcp://host[:port]` or `rtu:PATH[@BAUD[/8N1]]` (the form `TransportParams`
/// displays).
pub fn parse_transport(s: &str) -> Result<TransportParams, String> {
    if let Some(rest) = s.strip_prefix("tcp://") {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bus '{s}': port '{p}' is not a number 1-65535"))?,
            ),
            _ => (rest, 502),
        };
        if host.is_empty() {
            return Err(format!("bus '{s}': missing host"));
        }
        return Ok(TransportParams::Tcp {
            host: host.to_string(),
            port,
        });
    }
    if let Some(rest) = s.strip_prefix("rtu:") {
        let (path, line) = rest.split_once('@').unwrap_or((rest, "9600"));
        let (baud, framing) = line.split_once('/').unwrap_or((line, "8N1"));
        let baud: u32 = baud
            .parse()
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| format!("bus '{s}': baud rate '{baud}' is not a positive number"))?;
        let (parity, stop_bits) = match framing {
            "8N1" => (Parity::None, 1),
            "8N2" => (Parity::None, 2),
            "8E1" => (Parity::Even, 1),
            "8O1" => (Parity::Odd, 1),
            other => {
                return Err(format!(
                    "bus '{s}': framing '{other}' is not one of 8N1, 8N2, 8E1, 8O1"
                ));
            }
        };
        if path.is_empty() {
            return Err(format!("bus '{s}': missing serial device path"));
        }
        return Ok(TransportParams::Rtu {
            path: path.to_string(),
            baud,
            parity,
            stop_bits,
        });
    }
    Err(format!(
        "bus '{s}': expected tcp://HOST[:PORT] or rtu:/dev/ttyUSB0[@BAUD]"
    ))
}

/// `csipd modbus-scan BUS UNIT...`
pub fn cli_main(args: &[String]) -> ExitCode {
    let Some((bus_arg, units)) = args.split_first() else {
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
        match u.parse::<u8>() {
            Ok(id) => unit_ids.push(id),
            Err(_) => {
                eprintln!("csipd modbus-scan: unit id '{u}' is not a number 0-255");
                return ExitCode::from(2);
            }
        }
    }
    if unit_ids.is_empty() {
        unit_ids.push(1);
    }
    let bus = Rc::new(Bus::new(BusParams {
        transport,
        timeout: Duration::from_secs(1),
        retries: 1,
        rtu_local_echo: false,
    }));
    let mut failed = false;
    smol::block_on(async {
        for unit in unit_ids {
            let mut dev = Device::new(
                bus.clone(),
                DeviceParams::new(&format!("unit {unit}"), unit),
            );
            let mut out = serde_json::Map::new();
            out.insert("unit".into(), unit.into());
            match dev.scan().await {
                Ok(map) => {
                    out.insert("map".into(), serde_json::to_value(map).unwrap_or_default());
                    let map = map.clone();
                    if let Some(c) = dev.common() {
                        out.insert("common".into(), serde_json::to_value(c).unwrap_or_default());
                    }
                    if map.find_any(&sunspec::INVERTER_MODELS).is_some() {
                        match dev.read_inverter().await {
                            Ok(r) => out.insert(
                                "inverter".into(),
                                serde_json::to_value(r).unwrap_or_default(),
                            ),
                            Err(e) => out.insert("error".into(), e.to_string().into()),
                        };
                    }
                    if map.find_any(&sunspec::METER_MODELS).is_some() {
                        match dev.read_meter().await {
                            Ok(r) => out.insert(
                                "meter".into(),
                                serde_json::to_value(r).unwrap_or_default(),
                            ),
                            Err(e) => out.insert("error".into(), e.to_string().into()),
                        };
                    }
                }
                Err(e) => {
                    failed = true;
                    out.insert("error".into(), e.to_string().into());
                }
            }
            out.insert(
                "stats".into(),
                serde_json::to_value(dev.stats()).unwrap_or_default(),
            );
            println!("{}", serde_json::Value::Object(out));
        }
    });
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
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
        assert!(
            parse_transport("tcp://host:99999")
                .unwrap_err()
                .contains("99999")
        );
        assert!(
            parse_transport("rtu:/dev/x@fast")
                .unwrap_err()
                .contains("fast")
        );
        assert!(
            parse_transport("rtu:/dev/x@9600/7N1")
                .unwrap_err()
                .contains("7N1")
        );
        assert!(parse_transport("serial0").is_err());
    }
}
