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
            _ => {
                return Err(format!(
                    "bus '{s}': framing '{framing}' is not one of 8N1, 8E1, 8O1, 8N2, 8E2, 8O2 \
                     (data bits, parity none/even/odd, stop bits)"
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
        "bus '{s}': expected tcp://HOST[:PORT] or rtu:/dev/ttyUSB0[@BAUD[/8N1]]"
    ))
}

/// A unit id as the config takes it (`unit_id`, 1..247): 0 is the Modbus broadcast
/// address, which no device answers, and 248..255 are reserved.
pub fn parse_unit(s: &str) -> Result<u8, String> {
    s.parse::<u8>()
        .ok()
        .filter(|id| (1..=247).contains(id))
        .ok_or_else(|| {
            format!("unit id '{s}' is not a number 1-247 (0 is broadcast, which no device answers)")
        })
}

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
    let bus = Rc::new(Bus::new(BusParams {
        transport,
        timeout: Duration::from_secs(1),
        retries: 1,
        rtu_local_echo: false,
    }));
    let mut failed = false;
    smol::block_on(async {
        for unit in unit_ids {
            let mut params = DeviceParams::new(&format!("unit {unit}"), unit);
            params.sunspec_base = base;
            let mut dev = Device::new(bus.clone(), params);
            let out = scan_unit(&mut dev, unit).await;
            failed |= out.contains_key("error");
            println!("{}", serde_json::Value::Object(out));
        }
    });
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// One unit's scan as JSON: the chain (`map`), and under `devices` each SunSpec device
/// of the chain with its position, identity, models and a decoded reading. The first
/// device's identity and reading are repeated at the top level (`common`, `inverter`,
/// `meter`) for a unit with one device.
async fn scan_unit(dev: &mut Device, unit: u8) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    out.insert("unit".into(), unit.into());
    let map = match dev.scan().await {
        Ok(map) => map.clone(),
        Err(e) => {
            out.insert("error".into(), e.to_string().into());
            out.insert("stats".into(), json(dev.stats()));
            return out;
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
    out
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

    #[test]
    fn unit_ids_are_the_configs_1_to_247() {
        assert_eq!(parse_unit("1"), Ok(1));
        assert_eq!(parse_unit("247"), Ok(247));
        for bad in ["0", "248", "255", "256", "abc", ""] {
            let why = parse_unit(bad).unwrap_err();
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
        assert!(
            parse_transport("rtu:/dev/x@9600/8E3")
                .unwrap_err()
                .contains("8E3")
        );
    }
}
