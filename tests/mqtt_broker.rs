//! `csipd run` publishing to a real mosquitto broker (Debian package, started here on a
//! free loopback port with its own configuration file), read back with mosquitto_sub:
//! the state topics and Home Assistant discovery payloads, the last will after
//! `kill -9`, recovery after the broker restarts (with the control loop running on while
//! it is down), and mqtts with a test CA and a client certificate.
//!
//! Needs `mosquitto` and `mosquitto_sub` (tests/setup.d/60-mqtt.sh installs them).

#[path = "support/ports.rs"]
mod ports;
mod runtime_common;
#[path = "common/test_pki.rs"]
mod test_pki;

use runtime_common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use test_pki::{KeyPair, make_ca, make_leaf};

/// Generous: the test machine is loaded.
const DEADLINE: Duration = Duration::from_secs(60);

fn tool(name: &str) -> &str {
    let found = Command::new(name)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(found, "{name} missing: run `bash tests/setup.sh`");
    name
}

/// The TLS files of a broker listener: CA, the broker's certificate, and a client
/// certificate it requires.
struct Pki {
    ca: KeyPair,
    server: KeyPair,
    client: KeyPair,
}

/// A mosquitto process with its own configuration; killed on drop.
struct Broker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Broker {
    /// mosquitto on a port of its own (it cannot bind port 0 and say which it got: a
    /// port below the ephemeral range, another one if that is taken meanwhile).
    fn start(dir: &Path, pki: Option<&Pki>) -> Broker {
        Broker::start_with(dir, pki, "allow_anonymous true\n")
    }

    /// `auth`: the authentication lines of the listener.
    fn start_with(dir: &Path, pki: Option<&Pki>, auth: &str) -> Broker {
        let mut taken = Vec::new();
        for _ in 0..ports::BIND_ATTEMPTS {
            match Broker::start_on(dir, ports::candidate(), pki, auth) {
                Ok(broker) => return broker,
                Err(port) => taken.push(port),
            }
        }
        panic!("mosquitto found every port taken: {taken:?}")
    }

    /// mosquitto on `port` (anonymous clients allowed): for a broker that comes back
    /// where csipd expects it. Panics if the port is taken.
    fn restart_on(dir: &Path, port: u16) -> Broker {
        Broker::start_on(dir, port, None, "allow_anonymous true\n")
            .unwrap_or_else(|port| panic!("port {port} taken while the broker was down"))
    }

    /// Starts mosquitto on `port` and waits until it says it is running; `Err(port)`
    /// when it could not bind it (taken).
    fn start_on(dir: &Path, port: u16, pki: Option<&Pki>, auth: &str) -> Result<Broker, u16> {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let log = dir.join(format!("mosquitto-{port}.log"));
        let mut text = format!(
            "listener {port} 127.0.0.1\n{auth}persistence false\nlog_dest stderr\nlog_type all\n"
        );
        // As root, mosquitto would switch to user 'mosquitto' and lose our key files.
        text.push_str("user root\n");
        if let Some(p) = pki {
            text.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                p.ca.cert.display(),
                p.server.cert.display(),
                p.server.key.display()
            ));
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(tool("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start mosquitto");
        let mut broker = Broker { child, port, log };
        // "running" is logged once the listener is open; a failed bind exits instead.
        // (A connect test would be fooled by whoever else took the port.)
        let running = wait_until(DEADLINE, "mosquitto running", || {
            let text = broker.log_text();
            if text.contains(" running") {
                return Ok(true);
            }
            match broker.child.try_wait() {
                Ok(Some(_)) if ports::port_taken(&text) => Ok(false),
                Ok(Some(status)) => panic!("mosquitto exited ({status}): {text}"),
                _ => Err(text),
            }
        });
        if running { Ok(broker) } else { Err(port) }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    retained: bool,
    payload: String,
}

impl Msg {
    fn json(&self) -> Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.topic, self.payload))
    }
}

/// mosquitto_sub on `csipd/#` and `homeassistant/#`, one message per line.
struct Sub {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<Msg>,
}

impl Sub {
    fn start(port: u16, tls: Option<&Pki>) -> Sub {
        let mut cmd = Command::new(tool("mosquitto_sub"));
        cmd.args(["-p", &port.to_string()]);
        match tls {
            Some(p) => {
                cmd.args(["-h", "localhost", "--cafile"])
                    .arg(&p.ca.cert)
                    .arg("--cert")
                    .arg(&p.client.cert)
                    .arg("--key")
                    .arg(&p.client.key);
            }
            None => {
                cmd.args(["-h", "127.0.0.1"]);
            }
        }
        Sub::spawn(&mut cmd)
    }

    fn spawn(cmd: &mut Command) -> Sub {
        cmd.args(["-v", "-F", "%t\t%r\t%p"])
            .args(["-t", "csipd/#", "-t", "homeassistant/#"]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Sub {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first message (seen before or arriving within `timeout`) for which `ok`
    /// holds; panics listing what arrived.
    fn wait(&mut self, what: &str, timeout: Duration, ok: impl Fn(&Msg) -> bool) -> Msg {
        if let Some(m) = self.seen.iter().find(|m| ok(m)) {
            return m.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let mut parts = line.splitn(3, '\t');
                    let msg = Msg {
                        topic: parts.next().unwrap_or_default().to_string(),
                        retained: parts.next() == Some("1"),
                        payload: parts.next().unwrap_or_default().to_string(),
                    };
                    self.seen.push(msg.clone());
                    if ok(&msg) {
                        return msg;
                    }
                }
                Err(_) => panic!(
                    "{what}: not published within {timeout:?}; the last messages: {:#?}",
                    self.seen
                        .iter()
                        .rev()
                        .take(12)
                        .map(|m| format!("{} = {}", m.topic, m.payload))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// The latest message on `topic` within `timeout` whose JSON passes `ok`.
    fn wait_json(&mut self, topic: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait(topic, timeout, |m| {
            m.topic == topic && serde_json::from_str(&m.payload).is_ok_and(|v| ok(&v))
        })
        .json()
    }
}

impl Sub {
    /// A subscriber with a user name and password (plain TCP).
    fn start_auth(port: u16, user: &str, password: &str) -> Sub {
        Sub::spawn(
            Command::new(tool("mosquitto_sub"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-u", user, "-P", password]),
        )
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(data: &Path, mqtt: &str, devices: &str) -> String {
    format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{data}/state'
\toption telemetry_dir '{data}/telemetry'

config limits 'fixed'
\toption export_limit_w '1500'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
{devices}
config mqtt 'broker'
\toption enabled '1'
\toption interval_s '2'
{mqtt}",
        data = data.display()
    )
}

fn start_csipd(dir: &Path, name: &str, text: &str) -> (Proc, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    start_run(&path.display().to_string())
}

#[test]
fn state_topics_and_discovery_are_published_and_the_last_will_follows_kill_9() {
    let dir = temp_dir("mqtt-topics");
    let mut broker = Broker::start(&dir, None);
    let (_sim, devices) = sim_devices(600);
    let mqtt = format!("\toption url 'mqtt://127.0.0.1:{}'\n", broker.port);
    let (run, _url) = start_csipd(&dir, "csipd", &config_text(&dir, &mqtt, &devices));
    let mut sub = Sub::start(broker.port, None);

    sub.wait("availability", DEADLINE, |m| {
        m.topic == "csipd/availability" && m.payload == "online"
    });

    // The owner's fixed limit, with its source.
    let limits = sub.wait_json("csipd/limits", DEADLINE, |v| {
        v["export"]["value_w"] == 1500.0
    });
    assert_eq!(limits["export"]["source"]["kind"], "fixed");
    assert!(limits["import"].is_null(), "{limits}");
    // Site flows from the simulated meter and inverter.
    let site = sub.wait_json("csipd/site", DEADLINE, |v| {
        v["site_w"].is_number() && v["pv_w"].as_f64().is_some_and(|w| w > 0.0)
    });
    assert!(site["load_w"].is_number(), "{site}");
    assert!(site["updated_unix_s"].is_i64(), "{site}");
    // Per-device readings and the setpoint csipd wrote.
    let inverter = sub.wait_json("csipd/device/inv1", DEADLINE, |v| {
        v["w"].is_number() && v["v"].is_number() && v["setpoint"]["limit_w"].is_number()
    });
    assert_eq!(inverter["role"], "inverter");
    let meter = sub.wait_json("csipd/device/meter", DEADLINE, |v| v["w"].is_number());
    assert_eq!(meter["role"], "meter");
    // No dcap_url: the utility connection says so.
    let utility = sub.wait_json("csipd/utility", DEADLINE, |_| true);
    assert_eq!(utility["state"], "not_configured");
    let events = sub.wait_json("csipd/events", DEADLINE, |_| true);
    assert_eq!(events["count"], 0);

    // Home Assistant discovery: retained configs with device class, unit, state class,
    // availability and one device block.
    let config = |sub: &mut Sub, object: &str| -> (Value, bool) {
        let topic = format!("homeassistant/sensor/csipd/{object}/config");
        let m = sub.wait(&topic, DEADLINE, |m| m.topic == topic);
        (m.json(), m.retained)
    };
    let (export, _) = config(&mut sub, "export_limit");
    assert_eq!(export["device_class"], "power");
    assert_eq!(export["unit_of_measurement"], "W");
    assert_eq!(export["state_class"], "measurement");
    assert_eq!(export["state_topic"], "csipd/limits");
    assert_eq!(export["availability_topic"], "csipd/availability");
    assert_eq!(export["unique_id"], "csipd_export_limit");
    assert_eq!(export["device"]["identifiers"][0], "csipd_csipd");
    assert_eq!(export["device"]["sw_version"], csipd::VERSION);
    for (object, class, unit, topic) in [
        ("import_limit", "power", "W", "csipd/limits"),
        ("site_power", "power", "W", "csipd/site"),
        ("pv_power", "power", "W", "csipd/site"),
        ("load_power", "power", "W", "csipd/site"),
        ("inv1_power", "power", "W", "csipd/device/inv1"),
        ("inv1_voltage", "voltage", "V", "csipd/device/inv1"),
        ("meter_voltage", "voltage", "V", "csipd/device/meter"),
    ] {
        let (c, _) = config(&mut sub, object);
        assert_eq!(c["device_class"], class, "{object}: {c}");
        assert_eq!(c["unit_of_measurement"], unit, "{object}: {c}");
        assert_eq!(c["state_topic"], topic, "{object}: {c}");
        assert_eq!(c["device"], export["device"], "{object}: one device block");
    }
    let (utility_state, _) = config(&mut sub, "utility_state");
    assert_eq!(utility_state["device_class"], "enum");
    assert!(
        utility_state["options"]
            .as_array()
            .is_some_and(|o| o.contains(&Value::from("not_configured"))),
        "{utility_state}"
    );

    // A subscriber that comes later gets availability, state and discovery at once: all
    // retained (MQTT 3.1.1 §3.3.1.3 sets the flag only on messages sent because of a
    // new subscription).
    let mut late = Sub::start(broker.port, None);
    for topic in [
        "csipd/availability",
        "csipd/limits",
        "csipd/device/inv1",
        "homeassistant/sensor/csipd/export_limit/config",
    ] {
        let m = late.wait(topic, DEADLINE, |m| m.topic == topic);
        assert!(m.retained, "{topic} is retained");
    }

    // Readings are republished at the interval (2 s): a later site message arrives.
    let first = site["updated_unix_s"].as_i64().unwrap_or_default();
    sub.wait_json("csipd/site", DEADLINE, |v| {
        v["updated_unix_s"].as_i64().is_some_and(|t| t > first)
    });

    // kill -9: the broker publishes the last will.
    run.signal("KILL");
    sub.wait("last will", DEADLINE, |m| {
        m.topic == "csipd/availability" && m.payload == "offline"
    });
    let mut after = Sub::start(broker.port, None);
    let will = after.wait("retained last will", DEADLINE, |m| {
        m.topic == "csipd/availability"
    });
    assert!(
        will.retained && will.payload == "offline",
        "the last will is retained: {will:?}"
    );
    assert!(
        broker.log_text().contains("csipd-csipd"),
        "the broker logged our client id"
    );
    broker.kill();
}

#[test]
fn publishing_recovers_after_the_broker_restarts_and_never_stalls_control() {
    let dir = temp_dir("mqtt-restart");
    let mut broker = Broker::start(&dir, None);
    let port = broker.port;
    let (_sim, devices) = sim_devices(600);
    let mqtt = format!("\toption url 'mqtt://127.0.0.1:{port}'\n");
    let (mut run, url) = start_csipd(&dir, "csipd", &config_text(&dir, &mqtt, &devices));
    let mut sub = Sub::start(port, None);
    sub.wait("online", DEADLINE, |m| {
        m.topic == "csipd/availability" && m.payload == "online"
    });
    run.stdout_containing("mqtt: connected to", DEADLINE);

    // The broker dies: csipd notices, and the control loop carries on regardless.
    broker.kill();
    drop(sub);
    run.stderr_line("reconnecting in", DEADLINE);
    let before = status(&url).site.updated_unix_s.unwrap_or_default();
    let during = wait_for(
        &url,
        DEADLINE,
        "meter readings while the broker is down",
        |s| s.site.updated_unix_s.is_some_and(|t| t >= before + 5),
    );
    assert!(
        during.devices.iter().all(|d| !d.stale),
        "devices are still read: {:?}",
        during.devices
    );
    assert!(
        during.last_errors.iter().any(|e| e.source == "mqtt"),
        "the lost broker shows in the status: {:?}",
        during.last_errors
    );

    // Worse than down: something on the port accepts and never answers. csipd gives up
    // on it after the CONNACK timeout; the control loop does not notice at all.
    let black_hole = TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    // Held until csipd has given up on it (not for a guessed 20 s: on a loaded machine
    // csipd's 15 s CONNACK timeout may fire late, and the hole must not close first).
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in black_hole.incoming().take(1) {
            held.push(conn);
        }
        let _ = hold.recv();
        drop(held);
    });
    let before = status(&url).site.updated_unix_s.unwrap_or_default();
    run.stderr_line("no CONNACK from the broker", DEADLINE * 2);
    drop(release);
    let s = status(&url);
    assert!(
        s.site.updated_unix_s.is_some_and(|t| t >= before + 5),
        "meter readings went on while csipd waited for CONNACK: {:?} then {:?}",
        before,
        s.site.updated_unix_s
    );
    held.join().expect("black hole thread");

    // Back on the same port: csipd reconnects on its own and publishes everything again.
    let broker = Broker::restart_on(&dir, port);
    let mut sub = Sub::start(broker.port, None);
    sub.wait("online again", DEADLINE * 2, |m| {
        m.topic == "csipd/availability" && m.payload == "online"
    });
    sub.wait_json("csipd/limits", DEADLINE, |v| {
        v["export"]["value_w"] == 1500.0
    });
    sub.wait_json("csipd/site", DEADLINE, |v| {
        v["updated_unix_s"].as_i64().is_some_and(|t| t > before)
    });
    sub.wait("discovery again", DEADLINE, |m| {
        m.topic == "homeassistant/sensor/csipd/export_limit/config"
    });
    assert!(run.alive(), "csipd kept running");
    assert_eq!(run.terminate(), Some(0));
}

#[test]
fn mqtts_with_a_test_ca_and_client_certificate() {
    let dir = temp_dir("mqtt-tls");
    let ca = make_ca(&dir, "mqtt-ca");
    let server = make_leaf(&dir, &ca, "broker");
    let client = make_leaf(&dir, &ca, "csipd-client");
    let pki = Pki { ca, server, client };
    let broker = Broker::start(&dir, Some(&pki));
    let mqtt = format!(
        "\toption url 'mqtts://localhost:{}'\n\toption ca '{}'\n\toption cert '{}'\n\toption key \
         '{}'\n\toption base_topic 'csipd/tls'\n",
        broker.port,
        pki.ca.cert.display(),
        pki.client.cert.display(),
        pki.client.key.display()
    );
    let (mut run, _url) = start_csipd(&dir, "csipd", &config_text(&dir, &mqtt, ""));
    let mut sub = Sub::start(broker.port, Some(&pki));
    sub.wait("online over TLS", DEADLINE, |m| {
        m.topic == "csipd/tls/availability" && m.payload == "online"
    });
    // No meter configured here: the fail-safe export limit holds, and says so.
    let limits = sub.wait_json("csipd/tls/limits", DEADLINE, |v| v["export"].is_object());
    assert_eq!(limits["export"]["source"]["kind"], "fail_safe", "{limits}");
    assert_eq!(limits["export"]["value_w"], 0.0, "{limits}");
    let (export_cfg_topic, object_prefix) = (
        "homeassistant/sensor/csipd_tls/export_limit/config",
        "csipd_tls_",
    );
    let config = sub.wait("discovery over TLS", DEADLINE, |m| {
        m.topic == export_cfg_topic
    });
    assert_eq!(
        config.json()["unique_id"],
        format!("{object_prefix}export_limit")
    );
    assert_eq!(
        config.json()["availability_topic"],
        "csipd/tls/availability"
    );

    // A broker whose certificate the configured CA did not sign is refused.
    let other_ca = make_ca(&dir, "other-ca");
    let mqtt = format!(
        "\toption url 'mqtts://localhost:{}'\n\toption ca '{}'\n\toption cert '{}'\n\toption key \
         '{}'\n\toption base_topic 'csipd/wrongca'\n",
        broker.port,
        other_ca.cert.display(),
        pki.client.cert.display(),
        pki.client.key.display()
    );
    let data = dir.join("wrong");
    std::fs::create_dir_all(&data).unwrap();
    let (mut wrong, _) = start_csipd(&dir, "csipd-wrong", &config_text(&data, &mqtt, ""));
    let line = wrong.stderr_line("certificate rejected", DEADLINE);
    assert!(
        line.contains("certificate rejected") && line.contains("reconnecting in"),
        "{line}"
    );
    assert_eq!(wrong.terminate(), Some(0));
    assert_eq!(run.terminate(), Some(0));
    // A clean stop drops the connection without DISCONNECT: the will says offline.
    sub.wait("offline after SIGTERM", DEADLINE, |m| {
        m.topic == "csipd/tls/availability" && m.payload == "offline"
    });
}

#[test]
fn a_refused_password_is_reported_and_sighup_with_the_fixed_file_connects() {
    let dir = temp_dir("mqtt-auth");
    let passwords = dir.join("mosquitto.passwd");
    let made = Command::new(tool("mosquitto_passwd"))
        .arg("-c")
        .arg("-b")
        .arg(&passwords)
        .args(["csipd", "right-one"])
        .status()
        .expect("mosquitto_passwd");
    assert!(made.success());
    let auth = format!(
        "allow_anonymous false\npassword_file {}\n",
        passwords.display()
    );
    let broker = Broker::start_with(&dir, None, &auth);
    let secret = dir.join("mqtt.pass");
    std::fs::write(&secret, "wrong-one\n").unwrap();
    let mqtt = format!(
        "\toption url 'mqtt://127.0.0.1:{}'\n\toption username 'csipd'\n\toption \
         password_file '{}'\n",
        broker.port,
        secret.display()
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config_text(&dir, &mqtt, "")).unwrap();
    let (mut run, url) = start_run(&path.display().to_string());
    let line = run.stderr_line("refused the connection", DEADLINE);
    assert!(line.contains("return code"), "{line}");
    wait_for(&url, DEADLINE, "the refusal in the status", |s| {
        s.last_errors
            .iter()
            .any(|e| e.source == "mqtt" && e.message.contains("refused"))
    });

    // The owner fixes the file; SIGHUP reads it again (the section itself is unchanged).
    std::fs::write(&secret, "right-one\n").unwrap();
    let mut sub = Sub::start_auth(broker.port, "csipd", "right-one");
    run.signal("HUP");
    run.stdout_containing("reconnecting to the MQTT broker", DEADLINE);
    sub.wait("online with the right password", DEADLINE, |m| {
        m.topic == "csipd/availability" && m.payload == "online"
    });
    assert_eq!(run.terminate(), Some(0));
}
