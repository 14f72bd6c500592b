//! Modbus RTU at 9600 8N1 over a socat pseudo-terminal pair, with pymodbus as the RTU
//! server on the other end (two devices daisy-chained on the one line).

mod devices_support;

use std::rc::Rc;
use std::time::Instant;

use csipd::devices::modbus::rtu_read_wire_time;
use csipd::devices::{Bus, BusParams, Device, DeviceError, DeviceParams, ModbusError};
use devices_support::{PEER_TIMEOUT, PacedLine, PtyPair, SILENT_TIMEOUT, start_peer};
use serde_json::json;

const BAUD: u32 = 9600;

fn rtu_config() -> serde_json::Value {
    json!({"devices": [
        {"unit": 1, "base": 40000, "models": [
            {"id": 1, "values": {"Mn": "RTU Inverter"}},
            {"id": 103, "values": {"W": 3210, "W_SF": 0, "Hz": 5000, "Hz_SF": -2,
                                   "PhVphA": 2400, "V_SF": -1, "St": 4}},
            {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 100, "WMaxLimPct_SF": 0, "WMaxLim_Ena": 0}}
        ]},
        {"unit": 2, "base": 40000, "models": [
            {"id": 1, "values": {"Mn": "RTU Meter"}},
            {"id": 203, "values": {"W": 1500, "WphA": 500, "WphB": 500, "WphC": 500, "W_SF": 0,
                                   "Hz": 5000, "Hz_SF": -2}}
        ]}
    ]})
}

fn rtu_bus(path: &str) -> Rc<Bus> {
    let mut p = BusParams::rtu(path, BAUD);
    p.timeout = PEER_TIMEOUT;
    p.retries = 2;
    Rc::new(Bus::new(p))
}

#[test]
fn rtu_9600_8n1_over_socat_pty_pair() {
    let pty = PtyPair::new();
    let _peer = start_peer("rtu", &rtu_config(), Some(&pty.a));
    smol::block_on(async {
        let bus = rtu_bus(&pty.b);
        let mut inv = Device::new(bus.clone(), DeviceParams::new("rtu-inv", 1));
        let mut meter = Device::new(bus.clone(), DeviceParams::new("rtu-meter", 2));
        let r = inv.read_inverter().await.expect("inverter over RTU");
        assert_eq!(r.model, 103);
        assert_eq!(r.ac.w, Some(3210.0));
        assert_eq!(r.ac.phases[0].v, Some(240.0));
        assert_eq!(inv.common().unwrap().manufacturer, "RTU Inverter");
        let m = meter.read_meter().await.expect("meter over RTU");
        assert_eq!(m.model, 203);
        assert_eq!(m.ac.w, Some(1500.0));
        // the two devices polled concurrently share the line one request at a time
        let (a, b) = smol::future::zip(inv.read_inverter(), meter.read_meter()).await;
        assert_eq!(a.expect("inv").ac.w, Some(3210.0));
        assert_eq!(b.expect("meter").ac.w, Some(1500.0));
        // a write over RTU, confirmed by read-back
        let lim = inv
            .set_active_power_limit_pct(
                60.0,
                csipd::devices::RevertPolicy {
                    timeout_s: 120,
                    fallback_pct: 0.0,
                },
            )
            .await
            .expect("limit over RTU");
        assert_eq!(lim.limit_pct, Some(60.0));
        assert_eq!(inv.stats().link.crc_errors, 0);
        assert_eq!(inv.stats().link.timeouts, 0);

        // a unit id nobody answers to: timeouts counted, retried, device stale
        // (its own short timeout: nobody can answer in time anyway)
        let mut ghost_params = DeviceParams::new("ghost", 9);
        ghost_params.timeout = Some(SILENT_TIMEOUT);
        let mut ghost = Device::new(bus.clone(), ghost_params);
        let e = ghost.scan().await.unwrap_err();
        assert!(
            matches!(
                &e,
                DeviceError::Modbus {
                    error: ModbusError::Timeout,
                    ..
                }
            ),
            "{e}"
        );
        // Each of the three candidate bases (40000, 0, 50000), three attempts each.
        assert_eq!(ghost.stats().link.timeouts, 9);
        assert!(ghost.is_stale(Instant::now()));
        // and the line still works afterwards
        assert_eq!(
            meter.read_meter().await.expect("meter after timeouts").ac.w,
            Some(1500.0)
        );
    });
}

/// Modbus CRC-16 (poly 0xA001, init 0xFFFF), low byte first on the wire.
fn crc16(data: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0xFFFF;
    for b in data {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc.to_le_bytes()
}

/// CRC errors and exception responses are counted (and CRC errors retried). The far end
/// is a hand-scripted RTU responder on the pty (pymodbus cannot be told to send a bad CRC).
#[test]
fn crc_errors_and_exceptions_are_counted() {
    use std::io::{Read, Write};
    let pty = PtyPair::new();
    let path = pty.a.clone();
    let responder = std::thread::spawn(move || {
        let mut port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open pty");
        let mut replies: Vec<Vec<u8>> = Vec::new();
        // 1: "SunS" with a corrupted CRC, 2: the same, correct, 3: exception 2
        let mut good = vec![1u8, 3, 4, 0x53, 0x75, 0x6e, 0x53];
        good.extend(crc16(&good));
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x5a;
        let mut exc = vec![1u8, 0x83, 2];
        exc.extend(crc16(&exc));
        replies.push(bad);
        replies.push(good);
        replies.push(exc);
        let mut requests = Vec::new();
        for reply in replies {
            let mut req = [0u8; 8];
            port.read_exact(&mut req).expect("read request");
            assert_eq!(&req[6..], &crc16(&req[..6]), "request CRC");
            requests.push(req);
            port.write_all(&reply).expect("write reply");
        }
        requests
    });
    smol::block_on(async {
        let bus = rtu_bus(&pty.b);
        let mut dev = Device::new(bus, DeviceParams::new("scripted", 1));
        let regs = dev
            .read_registers(40000, 2)
            .await
            .expect("second attempt succeeds");
        assert_eq!(regs, vec![0x5375, 0x6e53]);
        let s = dev.stats().link.clone();
        assert_eq!((s.crc_errors, s.retries, s.ok), (1, 1, 1), "{s:?}");
        let e = dev.read_registers(0, 2).await.unwrap_err();
        assert!(
            matches!(
                &e,
                DeviceError::Modbus {
                    error: ModbusError::Exception(2),
                    ..
                }
            ),
            "{e}"
        );
        let s = dev.stats().link.clone();
        assert_eq!(
            (s.exceptions, s.retries, s.requests),
            (1, 1, 3),
            "exceptions are not retried: {s:?}"
        );
        assert!(
            s.last_error
                .unwrap_or_default()
                .contains("illegal data address")
        );
    });
    let requests = responder.join().expect("responder");
    // function 3, unit 1, addresses 40000, 40000, 0, count 2
    assert_eq!(requests[0][..6], [1, 3, 0x9c, 0x40, 0, 2]);
    assert_eq!(requests[1], requests[0]);
    assert_eq!(requests[2][..6], [1, 3, 0, 0, 0, 2]);
}

/// A 2-wire adapter that hears itself: with `rtu_local_echo` the echo is checked and
/// skipped; a corrupted echo (collision) is a framing error and is retried.
/// Hand-scripted responder: it echoes each request back, then answers.
#[test]
fn local_echo_is_checked_and_skipped() {
    use std::io::{Read, Write};
    let pty = PtyPair::new();
    let path = pty.a.clone();
    let responder = std::thread::spawn(move || {
        let mut port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open pty");
        let mut good = vec![1u8, 3, 4, 0x53, 0x75, 0x6e, 0x53];
        good.extend(crc16(&good));
        for round in 0..2 {
            let mut req = [0u8; 8];
            port.read_exact(&mut req).expect("read request");
            let mut echo = req.to_vec();
            if round == 0 {
                echo[3] ^= 0xff; // a collision garbles the echo
            }
            // Echo and reply back to back in one write, as on the wire: two writes
            // could be far apart on a loaded machine, and csipd would rightly take a
            // late reply for noise.
            echo.extend_from_slice(&good);
            port.write_all(&echo).expect("echo and reply");
        }
    });
    smol::block_on(async {
        let mut p = BusParams::rtu(&pty.b, BAUD);
        p.timeout = PEER_TIMEOUT;
        p.rtu_local_echo = true;
        let mut dev = Device::new(Rc::new(Bus::new(p)), DeviceParams::new("echoing", 1));
        let regs = dev.read_registers(40000, 2).await.expect("read with echo");
        assert_eq!(regs, vec![0x5375, 0x6e53]);
        let s = dev.stats().link.clone();
        assert_eq!((s.frame_errors, s.retries, s.ok), (1, 1, 1), "{s:?}");
    });
    responder.join().expect("responder");
}

/// Measurement (README "Measurements"): time to read models 103 and 203 over RTU at
/// 9600 baud against the wire-time floor (bytes × 11 bits / baud).
/// `cargo test --test devices_rtu -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_rtu_read_103_and_203() {
    let pty = PtyPair::new();
    let _peer = start_peer("rtu-bench", &rtu_config(), Some(&pty.a));
    bench_on(&pty.b, "socat pty pair (bytes cross instantly)");
    let line = PacedLine::new(BAUD);
    let _peer = start_peer("rtu-bench-paced", &rtu_config(), Some(&line.a));
    bench_on(
        &line.b,
        "paced line (10 bit times per byte, like a real 8N1 UART)",
    );
}

fn bench_on(path: &str, what: &str) {
    smol::block_on(async {
        let bus = rtu_bus(path);
        let mut inv = Device::new(bus.clone(), DeviceParams::new("inv", 1));
        let mut meter = Device::new(bus.clone(), DeviceParams::new("meter", 2));
        inv.scan().await.expect("scan inverter");
        meter.scan().await.expect("scan meter");
        let m103 = *inv.map().unwrap().find(103).unwrap();
        let m203 = *meter.map().unwrap().find(203).unwrap();
        let floor =
            rtu_read_wire_time(m103.total_len(), BAUD) + rtu_read_wire_time(m203.total_len(), BAUD);
        let rounds = 20;
        let start = Instant::now();
        for _ in 0..rounds {
            inv.read_registers(m103.start, m103.total_len())
                .await
                .expect("read 103");
            meter
                .read_registers(m203.start, m203.total_len())
                .await
                .expect("read 203");
        }
        let per_round = start.elapsed() / rounds;
        println!(
            "RTU {BAUD} 8N1, {what}: read 103 ({} regs) + 203 ({} regs): {:.1} ms per round, wire-time floor (11 bits/byte) {:.1} ms, ratio {:.2}; vs 10 bits/byte (8N1 on the wire) {:.2}",
            m103.total_len(),
            m203.total_len(),
            per_round.as_secs_f64() * 1e3,
            floor.as_secs_f64() * 1e3,
            per_round.as_secs_f64() / floor.as_secs_f64(),
            per_round.as_secs_f64() / (floor.as_secs_f64() * 10.0 / 11.0)
        );
        assert_eq!(
            inv.stats().link.crc_errors + meter.stats().link.crc_errors,
            0
        );
    });
}

#[test]
fn missing_serial_port_is_a_clear_error() {
    smol::block_on(async {
        let bus = rtu_bus("/dev/ttyUSB-csipd-missing");
        let mut dev = Device::new(bus, DeviceParams::new("meter-on-usb", 1));
        let e = dev.read_meter().await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("meter-on-usb") && text.contains("/dev/ttyUSB-csipd-missing"),
            "{text}"
        );
        assert!(
            matches!(
                &e,
                DeviceError::Modbus {
                    error: ModbusError::Io(_),
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(dev.stats().link.io_errors, 3, "tried again on each attempt");
        assert!(dev.is_stale(Instant::now()));
    });
}
