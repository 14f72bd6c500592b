//! `csipd run` end to end for LogEvents: a pymodbus SunSpec inverter
//! (tests/peers/sunspec_sim.py, register map from pysunspec2's model JSON) whose model
//! 103 `Evt1` AC_OVER_VOLT bit is set and then cleared over Modbus by the test; csipd
//! reads it, and the hand-scripted CSIP-AUS server (tests/common/csip_server.rs, plain
//! HTTP lab mode) receives exactly two LogEvents for it (raised, cleared), each valid
//! against csipaus-core.xsd. Waits are for conditions with generous deadlines.

// devices_support and runtime_common each bring tests/support/wait.rs.
#![allow(clippy::duplicate_mod)]

#[path = "common/csip_server.rs"]
mod csip_server;
mod devices_support;
mod runtime_common;

use csip_server::{Scenario, ScriptedServer, element_text};
use devices_support::{peer_layout, start_peer, venv_python};
use runtime_common::*;
use serde_json::json;

/// Writes `words` at `address` of unit 1 with a pymodbus client (another Modbus
/// master on the line, as an installer's tool would be).
fn write_registers(port: u16, address: usize, words: &[u16]) {
    let script = format!(
        "from pymodbus.client import ModbusTcpClient\n\
         c = ModbusTcpClient('127.0.0.1', port={port})\n\
         assert c.connect()\n\
         r = c.write_registers({address}, {words:?}, device_id=1)\n\
         assert not r.isError(), r\n\
         c.close()\n"
    );
    let out = std::process::Command::new(venv_python())
        .args(["-c", &script])
        .output()
        .expect("run the pymodbus client");
    assert!(
        out.status.success(),
        "pymodbus write failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_inverter_alarm_set_and_cleared_over_modbus_gives_two_log_events() {
    let dir = temp_dir("runtime-log-events");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-log-event-test");
    let server = ScriptedServer::start(Scenario {
        lfdi: lfdi.clone(),
        sfdi,
        ..Scenario::default()
    });
    let inverter = json!({"devices": [{"unit": 1, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "Alarm Co", "Md": "AL-5", "SN": "SN-1"}},
        {"id": 103, "values": {
            "A": 215, "AphA": 72, "AphB": 71, "AphC": 72, "A_SF": -1,
            "PhVphA": 2401, "PhVphB": 2398, "PhVphC": 2405, "V_SF": -1,
            "W": 3000, "W_SF": 0, "Hz": 5001, "Hz_SF": -2,
            "VA": 3100, "VA_SF": 0, "WH": 1234567, "WH_SF": 0, "St": 4,
            "Evt1": 0, "Evt2": 0}},
        {"id": 120, "values": {"DERTyp": 4, "WRtg": 500, "WRtg_SF": 1}},
        {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 1000, "WMaxLimPct_SF": -1,
                               "WMaxLim_Ena": 0}}
    ]}]});
    let peer = start_peer("log-events", &inverter, None);
    // Where Evt1 is: the peer's own layout of model 103 (from pysunspec2), offset 40.
    let layout = peer_layout(&peer.config);
    let words: Vec<u64> = layout[0]["words"]
        .as_array()
        .expect("words")
        .iter()
        .map(|w| w.as_u64().expect("word"))
        .collect();
    let m103 = (0..words.len())
        .find(|&i| words[i] == 103 && words.get(i + 1) == Some(&50))
        .expect("model 103 in the layout");
    let evt1 = 40000 + m103 + 40;
    let config = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'

config server 'utility'
\toption dcap_url '{url}/dcap'
\toption cert '{cert}'
\toption key '{key}'
\toption allow_plain_http '1'
\toption pen '12345'
\toption nmi '4102345678'
{inv}",
        d = dir.display(),
        url = server.base_url,
        cert = cert.display(),
        key = key.display(),
        inv = uci_tcp_device("inv1", "inverter", &peer.port.to_string(), 1),
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    let (_run, _url) = start_run(&path.display().to_string());
    let over_volt = |server: &ScriptedServer| {
        server
            .requests_to("POST", "/edev/1/lel")
            .into_iter()
            .filter(|r| {
                element_text(&r.body, "details").is_some_and(|d| d.contains("AC_OVER_VOLT"))
            })
            .collect::<Vec<_>>()
    };
    // Registered and reporting before the alarm.
    assert!(server.wait_for(PATIENCE, |r| {
        r.iter()
            .any(|r| r.method == "PUT" && r.path == "/edev/1/der/1/ders")
    }));
    write_registers(peer.port, evt1, &[0, 1 << 10]);
    assert!(
        server.wait_for(PATIENCE, |_| !over_volt(&server).is_empty()),
        "no LogEvent for the raised alarm"
    );
    write_registers(peer.port, evt1, &[0, 0]);
    assert!(
        server.wait_for(PATIENCE, |_| over_volt(&server).len() >= 2),
        "no LogEvent for the cleared alarm"
    );
    // Then AC_UNDER_VOLT: once its LogEvent is in, csipd has read the cleared
    // AC_OVER_VOLT bit again (events go out in the order they happen), and nothing
    // more came for it.
    write_registers(peer.port, evt1, &[0, 1 << 11]);
    assert!(
        server.wait_for(PATIENCE, |r| r.iter().any(|r| r.path == "/edev/1/lel"
            && element_text(&r.body, "details")
                .is_some_and(|d| d.contains("AC_UNDER_VOLT")))),
        "no LogEvent for the next alarm"
    );
    let posts = over_volt(&server);
    assert_eq!(posts.len(), 2, "{posts:#?}");
    let raised: Vec<Option<String>> = posts
        .iter()
        .map(|p| element_text(&p.body, "extendedData"))
        .collect();
    assert_eq!(raised, [Some("1".into()), Some("0".into())]);
    for post in &posts {
        assert_eq!(
            element_text(&post.body, "logEventCode").as_deref(),
            Some("1")
        );
        assert_eq!(
            element_text(&post.body, "functionSet").as_deref(),
            Some("11")
        );
        if let Some(e) = csip_server::schema::schema_problem(&post.body) {
            panic!("LogEvent invalid: {e}\n{}", post.body);
        }
    }
}
