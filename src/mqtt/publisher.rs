//! The sans-IO MQTT publisher: the connection to the broker as a state machine, and what
//! to publish when. Packets are encoded and decoded with `mqtt-proto`; the runtime task
//! ([`super::task`]) owns the socket and the clock.
//!
//! Call order (after any input, call [`Publisher::poll`] and act on its [`Output`]):
//! 1. `poll(snapshot, now)`: when `connect` is set, open a connection (TCP, then TLS) and
//!    report [`Publisher::handle_connected`] or [`Publisher::handle_connect_failed`].
//! 2. Write `transmit` (whole MQTT packets, in order) to the connection.
//! 3. When `close` is set, close the connection and report
//!    [`Publisher::handle_disconnected`].
//! 4. Feed every byte read to [`Publisher::handle_input`]; an error there means close.
//! 5. Sleep until `wake_at_ms` (monotonic) or until bytes arrive, then poll again.
//!
//! Memory is bounded whether the broker is up or down: nothing is queued while
//! disconnected. On every (re)connect each topic is published once from the snapshot
//! of that moment, so a broker that was down for a day gets the latest value per topic,
//! never a backlog. `transmit` holds at most one payload per topic (the topics of one
//! snapshot: 4 + one per device, plus the discovery configs), and the receive buffer is
//! capped at [`MAX_RX_BYTES`].
//!
//! Read-only by design: csipd subscribes to nothing, and a PUBLISH from the broker
//! (which it could only send if subscribed) is dropped.

use super::topics::{self, Cadence, OFFLINE, ONLINE};
use crate::clock::Now;
use crate::config::MqttConfig;
use crate::http::{Backoff, BackoffPolicy};
use crate::status::Snapshot;
use mqtt_proto::v3::{Connect, ConnectReturnCode, Header, LastWill, Packet, Publish};
use mqtt_proto::{Pid, QoS, QosPid, TopicName};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Keep-alive sent in CONNECT (MQTT 3.1.1 §3.1.2.10): the broker drops us after 1.5×
/// this without a packet, and we send PINGREQ when idle this long.
pub const KEEP_ALIVE_S: u16 = 30;
/// How long to wait for CONNACK, or for PINGRESP after a PINGREQ, before giving up on
/// the connection.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the snapshot is compared with what was published (the "on change" delay).
pub const CHANGE_CHECK: Duration = Duration::from_secs(1);
/// Received bytes kept while waiting for the rest of a packet. The broker sends us only
/// CONNACK, PINGRESP and acknowledgements (4 bytes each); anything bigger is refused.
pub const MAX_RX_BYTES: usize = 64 * 1024;

/// What the publisher knows about the broker connection, from its own settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of the state topics (`csipd`).
    pub base_topic: String,
    /// `None`: no Home Assistant discovery.
    pub discovery_prefix: Option<String>,
    /// Sent in CONNECT (MQTT 3.1.1 §3.1.3.1).
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// QoS of the state topics (availability and discovery use QoS 1).
    pub qos: QoS,
    /// Retain the state topics (availability and discovery are always retained).
    pub retain: bool,
    /// Readings are published, and everything republished, at this interval.
    pub interval: Duration,
}

impl Settings {
    /// From the `config mqtt` section; `password` is option `password` or the first line
    /// of `password_file`, read by the runtime.
    pub fn from_config(config: &MqttConfig, password: Option<String>) -> Settings {
        Settings {
            base_topic: config.base_topic.clone(),
            discovery_prefix: config.discovery.then(|| config.discovery_prefix.clone()),
            client_id: config.client_id.clone(),
            username: config.username.clone(),
            password,
            qos: match config.qos {
                0 => QoS::Level0,
                1 => QoS::Level1,
                _ => QoS::Level2,
            },
            retain: config.retain,
            interval: Duration::from_secs(u64::from(config.interval_s.max(1))),
        }
    }
}

/// Why the connection to the broker must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttError {
    /// The broker refused CONNECT (MQTT 3.1.1 §3.2.2.3 return code).
    Refused(String),
    /// Bytes that are not MQTT, or a packet a broker must not send to a client.
    Protocol(String),
    /// No CONNACK or PINGRESP within [`RESPONSE_TIMEOUT`].
    Timeout(&'static str),
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqttError::Refused(why) => write!(f, "broker refused the connection: {why}"),
            MqttError::Protocol(why) => write!(f, "MQTT protocol error: {why}"),
            MqttError::Timeout(what) => write!(
                f,
                "no {what} from the broker within {} s",
                RESPONSE_TIMEOUT.as_secs()
            ),
        }
    }
}

impl std::error::Error for MqttError {}

/// What the runtime should do after [`Publisher::poll`].
#[derive(Debug, Default, PartialEq)]
pub struct Output {
    /// Open a connection to the broker now.
    pub connect: bool,
    /// Bytes to write: whole MQTT packets, in order.
    pub transmit: Vec<u8>,
    /// Close the connection (then call [`Publisher::handle_disconnected`]).
    pub close: Option<MqttError>,
    /// Poll again at this monotonic time (ms) at the latest.
    pub wake_at_ms: u64,
}

/// Things worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted: publishing.
    Connected,
    /// The connection ended (or could not be made); the next try is in `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
}

#[derive(Debug)]
enum Link {
    /// No connection; try again at `retry_at_ms`.
    Down { retry_at_ms: u64 },
    /// `connect` was handed out; waiting for the runtime's answer.
    Opening,
    /// CONNECT sent at `since_ms`, waiting for CONNACK.
    AwaitingConnack { since_ms: u64 },
    /// Publishing.
    Up {
        /// When a packet was last sent (for keep-alive).
        last_tx_ms: u64,
        /// A PINGREQ is outstanding since then.
        ping_sent_ms: Option<u64>,
    },
}

/// The publisher core. See the module doc for the call order.
pub struct Publisher {
    settings: Settings,
    link: Link,
    backoff: Backoff,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// What went out on this connection, per topic (state and discovery): one entry per
    /// topic of the configuration's entities (a few per device), cleared on reconnect.
    sent: BTreeMap<String, Vec<u8>>,
    /// Discovery topics published with a config (kept across connections so an entity
    /// whose device was removed from the configuration is deleted from Home Assistant).
    discovery_topics: Vec<String>,
    /// [`topics::discovery_key`] of the configs published on this connection.
    discovery_key: Option<(String, Vec<(String, crate::status::DeviceRole)>)>,
    next_full_ms: u64,
    next_check_ms: u64,
    next_pid: u16,
    /// Connection events not yet taken by `poll_event`, which the task drains after
    /// every input (a connect, a close: a few at most).
    events: VecDeque<Event>,
    close: Option<MqttError>,
}

impl Publisher {
    /// A publisher that will connect at the first poll.
    pub fn new(settings: Settings, now: Now) -> Publisher {
        let seed = settings
            .client_id
            .bytes()
            .fold(now.mono_ms ^ 0x9e37_79b9, |h, b| {
                h.rotate_left(5) ^ u64::from(b)
            });
        Publisher {
            settings,
            link: Link::Down {
                retry_at_ms: now.mono_ms,
            },
            backoff: Backoff::new(
                BackoffPolicy {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(60),
                    jitter: 0.3,
                    max_retry_after: Duration::from_secs(60),
                },
                seed,
            ),
            rx: Vec::new(),
            tx: Vec::new(),
            sent: BTreeMap::new(),
            discovery_topics: Vec::new(),
            discovery_key: None,
            next_full_ms: 0,
            next_check_ms: 0,
            next_pid: 1,
            events: VecDeque::new(),
            close: None,
        }
    }

    /// True while CONNACK has been accepted and the connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// The next thing worth logging.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn topic(name: &str) -> Result<TopicName, MqttError> {
        TopicName::try_from(name)
            .map_err(|e| MqttError::Protocol(format!("topic '{name}' is not valid: {e}")))
    }

    fn encode(&mut self, packet: &Packet) {
        match packet.encode() {
            Ok(bytes) => self.tx.extend_from_slice(bytes.as_ref()),
            // Only an over-long topic or payload (> 256 MB) fails; nothing we build.
            Err(e) => log::warn!("mqtt: cannot encode {:?}: {e}", packet.get_type()),
        }
    }

    fn publish(&mut self, topic: &str, payload: &[u8], retain: bool, qos: QoS) {
        let Ok(topic_name) = Self::topic(topic) else {
            log::warn!("mqtt: not publishing to invalid topic '{topic}'");
            return;
        };
        let qos_pid = match qos {
            QoS::Level0 => QosPid::Level0,
            QoS::Level1 => QosPid::Level1(self.pid()),
            QoS::Level2 => QosPid::Level2(self.pid()),
        };
        let mut publish = Publish::new(qos_pid, topic_name, payload.to_vec().into());
        publish.retain = retain;
        self.encode(&Packet::Publish(publish));
        self.sent.insert(topic.to_string(), payload.to_vec());
    }

    fn pid(&mut self) -> Pid {
        let pid = Pid::try_from(self.next_pid).unwrap_or_default();
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        pid
    }

    /// The transport (TCP, and TLS for mqtts) is up: CONNECT goes out with the last will.
    pub fn handle_connected(&mut self, now: Now) {
        let will_topic = topics::availability_topic(&self.settings.base_topic);
        let mut connect = Connect::new(Arc::from(self.settings.client_id.as_str()), KEEP_ALIVE_S);
        // A clean session: nothing is resumed, every topic is published afresh.
        connect.clean_session = true;
        connect.last_will = Self::topic(&will_topic).ok().map(|t| {
            let mut will = LastWill::new(QoS::Level1, t, OFFLINE.as_bytes().to_vec().into());
            will.retain = true;
            will
        });
        connect.username = self.settings.username.as_deref().map(Arc::from);
        connect.password = self
            .settings
            .password
            .as_ref()
            .map(|p| p.as_bytes().to_vec().into());
        self.rx.clear();
        self.tx.clear();
        self.sent.clear();
        self.discovery_key = None;
        self.close = None;
        self.encode(&Packet::Connect(connect));
        self.link = Link::AwaitingConnack {
            since_ms: now.mono_ms,
        };
    }

    /// The connection could not be made (DNS, TCP, TLS): back off.
    pub fn handle_connect_failed(&mut self, now: Now, reason: &str) {
        self.go_down(now, reason.to_string());
    }

    /// The connection closed (by either side): back off, then reconnect.
    pub fn handle_disconnected(&mut self, now: Now, reason: &str) {
        if matches!(self.link, Link::Down { .. }) {
            return;
        }
        self.go_down(now, reason.to_string());
    }

    fn go_down(&mut self, now: Now, reason: String) {
        // A connection that got as far as CONNACK resets the backoff; one refused or
        // failing at once keeps growing it, so a broken broker is not hammered.
        if matches!(self.link, Link::Up { .. }) {
            self.backoff.reset();
        }
        let retry_in = self.backoff.next_delay(None);
        self.link = Link::Down {
            retry_at_ms: now.mono_after_ms(retry_in),
        };
        self.rx.clear();
        self.tx.clear();
        self.sent.clear();
        self.close = None;
        self.events
            .push_back(Event::Disconnected { reason, retry_in });
    }

    /// Bytes from the broker. An error means the connection must close.
    pub fn handle_input(&mut self, bytes: &[u8], now: Now) -> Result<(), MqttError> {
        if self.rx.len() + bytes.len() > MAX_RX_BYTES {
            return Err(MqttError::Protocol(format!(
                "more than {MAX_RX_BYTES} bytes of unfinished packet from the broker"
            )));
        }
        self.rx.extend_from_slice(bytes);
        loop {
            let header = match Header::decode(&self.rx) {
                Ok(h) => h,
                Err(e) if e.is_eof() => return Ok(()),
                Err(e) => return Err(MqttError::Protocol(format!("bad packet header: {e}"))),
            };
            // The whole packet's length from its remaining length (MQTT 3.1.1 §2.2.3).
            let total = mqtt_proto::total_len(header.remaining_len as usize)
                .map_err(|e| MqttError::Protocol(format!("bad remaining length: {e}")))?;
            if total > MAX_RX_BYTES {
                return Err(MqttError::Protocol(format!(
                    "a {total}-byte packet from the broker (a client gets only small \
                     acknowledgements)"
                )));
            }
            if self.rx.len() < total {
                return Ok(());
            }
            let packet = match Packet::decode(&self.rx[..total]) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(MqttError::Protocol(format!("bad packet: {e}"))),
            };
            self.rx.drain(..total);
            self.handle_packet(packet, now)?;
        }
    }

    fn handle_packet(&mut self, packet: Packet, now: Now) -> Result<(), MqttError> {
        match (&self.link, packet) {
            (Link::AwaitingConnack { .. }, Packet::Connack(ack)) => {
                if ack.code != ConnectReturnCode::Accepted {
                    return Err(MqttError::Refused(describe_refusal(ack.code)));
                }
                self.link = Link::Up {
                    last_tx_ms: now.mono_ms,
                    ping_sent_ms: None,
                };
                // Publish everything at the next poll.
                self.next_check_ms = now.mono_ms;
                self.next_full_ms = now.mono_ms;
                self.events.push_back(Event::Connected);
                Ok(())
            }
            (Link::Up { last_tx_ms, .. }, Packet::Pingresp) => {
                self.link = Link::Up {
                    last_tx_ms: *last_tx_ms,
                    ping_sent_ms: None,
                };
                Ok(())
            }
            // QoS 1 and 2 acknowledgements. Nothing is kept for redelivery: a lost
            // message is replaced by the next value of its topic (and all topics are
            // published again after a reconnect).
            (Link::Up { .. }, Packet::Puback(_) | Packet::Pubcomp(_)) => Ok(()),
            (Link::Up { .. }, Packet::Pubrec(pid)) => {
                self.encode(&Packet::Pubrel(pid));
                Ok(())
            }
            (Link::Up { .. }, Packet::Publish(p)) => {
                // We subscribe to nothing; a broker bridging something to us is ignored.
                log::debug!("mqtt: ignoring a message on '{}'", &*p.topic_name);
                if let QosPid::Level1(pid) = p.qos_pid {
                    self.encode(&Packet::Puback(pid));
                } else if let QosPid::Level2(pid) = p.qos_pid {
                    self.encode(&Packet::Pubrec(pid));
                }
                Ok(())
            }
            (Link::Up { .. }, Packet::Pubrel(pid)) => {
                self.encode(&Packet::Pubcomp(pid));
                Ok(())
            }
            (_, other) => Err(MqttError::Protocol(format!(
                "unexpected {:?} from the broker",
                other.get_type()
            ))),
        }
    }

    /// Advances timers and publishes what `snapshot` calls for. See [`Output`].
    pub fn poll(&mut self, snapshot: &Snapshot, now: Now) -> Output {
        let mono = now.mono_ms;
        let mut out = Output {
            wake_at_ms: mono.saturating_add(CHANGE_CHECK.as_millis() as u64),
            ..Output::default()
        };
        match self.link {
            Link::Down { retry_at_ms } => {
                if mono >= retry_at_ms {
                    self.link = Link::Opening;
                    out.connect = true;
                } else {
                    out.wake_at_ms = retry_at_ms;
                }
            }
            Link::Opening => {}
            Link::AwaitingConnack { since_ms } => {
                let deadline = since_ms.saturating_add(RESPONSE_TIMEOUT.as_millis() as u64);
                if mono >= deadline {
                    self.close = Some(MqttError::Timeout("CONNACK"));
                } else {
                    out.wake_at_ms = out.wake_at_ms.min(deadline);
                }
            }
            Link::Up { .. } => self.publish_due(snapshot, mono),
        }
        if let Link::Up {
            last_tx_ms,
            ping_sent_ms,
        } = self.link
        {
            let keep_alive = u64::from(KEEP_ALIVE_S) * 1000;
            let mut last_tx_ms = last_tx_ms;
            let mut ping_sent_ms = ping_sent_ms;
            if let Some(sent) = ping_sent_ms {
                let deadline = sent.saturating_add(RESPONSE_TIMEOUT.as_millis() as u64);
                if mono >= deadline {
                    self.close = Some(MqttError::Timeout("PINGRESP"));
                } else {
                    out.wake_at_ms = out.wake_at_ms.min(deadline);
                }
            } else if self.tx.is_empty() && mono >= last_tx_ms.saturating_add(keep_alive) {
                self.encode(&Packet::Pingreq);
                ping_sent_ms = Some(mono);
            }
            if !self.tx.is_empty() {
                last_tx_ms = mono;
            }
            out.wake_at_ms = out
                .wake_at_ms
                .min(last_tx_ms.saturating_add(keep_alive))
                .min(self.next_check_ms.max(mono + 1));
            self.link = Link::Up {
                last_tx_ms,
                ping_sent_ms,
            };
        }
        out.close = self.close.take();
        out.transmit = std::mem::take(&mut self.tx);
        out
    }

    fn publish_due(&mut self, snapshot: &Snapshot, mono: u64) {
        if mono < self.next_check_ms {
            return;
        }
        self.next_check_ms = mono.saturating_add(CHANGE_CHECK.as_millis() as u64);
        let full = mono >= self.next_full_ms;
        if full {
            let interval = self.settings.interval.as_millis() as u64;
            // Keep the cadence, but never burst to catch up after a stall.
            self.next_full_ms = self.next_full_ms.saturating_add(interval).max(mono + 1);
            if self.next_full_ms > mono + interval {
                self.next_full_ms = mono + interval;
            }
        }
        let availability = topics::availability_topic(&self.settings.base_topic);
        if !self.sent.contains_key(&availability) {
            self.publish(&availability, ONLINE.as_bytes(), true, QoS::Level1);
        }
        let key = topics::discovery_key(snapshot);
        if let Some(prefix) = self
            .settings
            .discovery_prefix
            .clone()
            .filter(|_| self.discovery_key.as_ref() != Some(&key))
        {
            self.discovery_key = Some(key);
            let configs = topics::discovery_configs(&prefix, &self.settings.base_topic, snapshot);
            // Entities of devices no longer configured: an empty retained config deletes
            // them in Home Assistant.
            let stale: Vec<String> = self
                .discovery_topics
                .iter()
                .filter(|t| !configs.iter().any(|(c, _)| c == *t))
                .cloned()
                .collect();
            for topic in stale {
                self.publish(&topic, b"", true, QoS::Level1);
                self.sent.remove(&topic);
            }
            self.discovery_topics = configs.iter().map(|(t, _)| t.clone()).collect();
            for (topic, payload) in configs {
                if self.sent.get(&topic) != Some(&payload) {
                    self.publish(&topic, &payload, true, QoS::Level1);
                }
            }
        }
        let (qos, retain) = (self.settings.qos, self.settings.retain);
        for t in topics::state_topics(&self.settings.base_topic, snapshot, full) {
            let changed = self.sent.get(&t.topic) != Some(&t.payload);
            let due = full
                || (changed && t.cadence == Cadence::OnChange)
                || !self.sent.contains_key(&t.topic);
            if due {
                self.publish(&t.topic, &t.payload, retain, qos);
            }
        }
    }
}

fn describe_refusal(code: ConnectReturnCode) -> String {
    match code {
        ConnectReturnCode::Accepted => "accepted".into(),
        ConnectReturnCode::UnacceptableProtocolVersion => {
            "it does not speak MQTT 3.1.1 (return code 1)".into()
        }
        ConnectReturnCode::IdentifierRejected => {
            "client id rejected (return code 2); set option client_id".into()
        }
        ConnectReturnCode::ServerUnavailable => "server unavailable (return code 3)".into(),
        ConnectReturnCode::BadUserNameOrPassword => {
            "bad username or password (return code 4)".into()
        }
        ConnectReturnCode::NotAuthorized => "not authorized (return code 5)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_proto::v3::Connack;

    fn settings() -> Settings {
        Settings::from_config(
            &MqttConfig {
                enabled: true,
                interval_s: 10,
                qos: 1,
                ..MqttConfig::default()
            },
            None,
        )
    }

    /// Splits a byte stream into packets.
    fn packets(mut bytes: &[u8]) -> Vec<Packet> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let header = Header::decode(bytes).unwrap();
            let total = mqtt_proto::total_len(header.remaining_len as usize).unwrap();
            out.push(Packet::decode(&bytes[..total]).unwrap().unwrap());
            bytes = &bytes[total..];
        }
        out
    }

    fn published(bytes: &[u8]) -> Vec<(String, Vec<u8>, bool)> {
        packets(bytes)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => {
                    Some((p.topic_name.to_string(), p.payload.to_vec(), p.retain))
                }
                _ => None,
            })
            .collect()
    }

    fn connack(code: ConnectReturnCode) -> Vec<u8> {
        Packet::Connack(Connack::new(false, code))
            .encode()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// A publisher that is connected at `t0`, with its first publications drained.
    fn connected(t0: Now, snapshot: &Snapshot) -> (Publisher, Vec<u8>) {
        let mut p = Publisher::new(settings(), t0);
        assert!(p.poll(snapshot, t0).connect);
        p.handle_connected(t0);
        let out = p.poll(snapshot, t0);
        match packets(&out.transmit).as_slice() {
            [Packet::Connect(c)] => {
                let will = c.last_will.as_ref().expect("a last will");
                assert_eq!(&*will.topic_name, "csipd/availability");
                assert_eq!(&will.message[..], b"offline");
                assert!(will.retain);
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        p.handle_input(&connack(ConnectReturnCode::Accepted), t0)
            .unwrap();
        assert_eq!(p.poll_event(), Some(Event::Connected));
        let out = p.poll(snapshot, t0);
        (p, out.transmit)
    }

    #[test]
    fn after_connack_availability_discovery_and_every_topic_go_out() {
        let t0 = Now::at(1_700_000_000);
        let s = Snapshot::new(1_700_000_000);
        let (_, first) = connected(t0, &s);
        let sent = published(&first);
        assert_eq!(
            sent[0],
            ("csipd/availability".into(), b"online".to_vec(), true)
        );
        let topics: Vec<&str> = sent.iter().map(|(t, _, _)| t.as_str()).collect();
        for t in [
            "csipd/limits",
            "csipd/events",
            "csipd/utility",
            "csipd/site",
        ] {
            assert!(topics.contains(&t), "{t} missing from {topics:?}");
        }
        assert!(
            topics.contains(&"homeassistant/sensor/csipd/export_limit/config"),
            "{topics:?}"
        );
    }

    #[test]
    fn state_changes_go_out_within_a_second_readings_at_the_interval() {
        let t0 = Now::at(1_700_000_000);
        let mut s = Snapshot::new(1_700_000_000);
        let (mut p, _) = connected(t0, &s);
        // A reading changes: not published before the interval.
        s.site.site_w = Some(-500.0);
        let t1 = t0.plus_ms(1000);
        assert!(published(&p.poll(&s, t1).transmit).is_empty());
        // A limit changes: published at the next check.
        s.limits.push(crate::status::ActiveLimit {
            mode: crate::status::LimitMode::Export,
            value_w: Some(0.0),
            connect: None,
            source: crate::status::LimitSource::FailSafe {
                cause: crate::status::FailSafeCause::MeterStale,
            },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        });
        let t2 = t0.plus_ms(2000);
        let sent = published(&p.poll(&s, t2).transmit);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, "csipd/limits");
        // At the interval, every state topic goes out again (discovery only on change).
        let t10 = t0.plus_ms(10_000);
        let out = p.poll(&s, t10);
        let topics: Vec<String> = published(&out.transmit)
            .into_iter()
            .map(|(t, _, _)| t)
            .collect();
        assert!(topics.contains(&"csipd/site".to_string()), "{topics:?}");
        assert!(topics.contains(&"csipd/limits".to_string()), "{topics:?}");
        assert!(
            !topics.iter().any(|t| t.starts_with("homeassistant/")),
            "{topics:?}"
        );
    }

    #[test]
    fn keep_alive_pings_and_a_missing_pingresp_closes() {
        let t0 = Now::at(1_700_000_000);
        let mut s = Snapshot::new(1_700_000_000);
        s.site.site_w = Some(1.0);
        let mut p = Publisher::new(
            Settings {
                interval: Duration::from_secs(3600),
                ..settings()
            },
            t0,
        );
        p.poll(&s, t0);
        p.handle_connected(t0);
        p.poll(&s, t0);
        p.handle_input(&connack(ConnectReturnCode::Accepted), t0)
            .unwrap();
        p.poll(&s, t0);
        // Idle for the keep-alive: a PINGREQ.
        let mut t = t0;
        let mut ping_at = None;
        for _ in 0..40 {
            t = t.plus_ms(1000);
            let out = p.poll(&s, t);
            assert!(out.wake_at_ms > t.mono_ms);
            if packets(&out.transmit).contains(&Packet::Pingreq) {
                ping_at = Some(t);
                break;
            }
        }
        let ping_at = ping_at.expect("no PINGREQ within 40 s");
        assert_eq!(
            ping_at.since(t0),
            Duration::from_secs(u64::from(KEEP_ALIVE_S))
        );
        // No PINGRESP: the connection is given up.
        let out = p.poll(&s, ping_at.plus(RESPONSE_TIMEOUT));
        assert_eq!(out.close, Some(MqttError::Timeout("PINGRESP")));
    }

    #[test]
    fn a_refused_connect_backs_off_and_grows() {
        let t0 = Now::at(1_700_000_000);
        let s = Snapshot::new(1_700_000_000);
        let mut p = Publisher::new(settings(), t0);
        let mut t = t0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            // Wait for the next connect.
            let mut out = p.poll(&s, t);
            while !out.connect {
                t = Now {
                    mono_ms: out.wake_at_ms,
                    utc_ms: t.utc_ms + (out.wake_at_ms - t.mono_ms) as i64,
                };
                out = p.poll(&s, t);
            }
            p.handle_connected(t);
            p.poll(&s, t);
            let err = p
                .handle_input(&connack(ConnectReturnCode::BadUserNameOrPassword), t)
                .unwrap_err();
            assert!(
                err.to_string().contains("bad username or password"),
                "{err}"
            );
            p.handle_disconnected(t, &err.to_string());
            match p.poll_event() {
                Some(Event::Disconnected { retry_in, .. }) => delays.push(retry_in),
                other => panic!("{other:?}"),
            }
        }
        assert!(delays[0] <= Duration::from_secs(1), "{delays:?}");
        assert!(delays[5] > Duration::from_secs(20), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(60)),
            "{delays:?}"
        );
    }

    #[test]
    fn input_is_reassembled_across_reads_and_garbage_closes() {
        let t0 = Now::at(1_700_000_000);
        let s = Snapshot::new(1_700_000_000);
        let mut p = Publisher::new(settings(), t0);
        p.poll(&s, t0);
        p.handle_connected(t0);
        p.poll(&s, t0);
        let ack = connack(ConnectReturnCode::Accepted);
        p.handle_input(&ack[..1], t0).unwrap();
        assert!(!p.is_connected());
        p.handle_input(&ack[1..], t0).unwrap();
        assert!(p.is_connected());
        assert!(p.handle_input(&[0xff, 0x00], t0).is_err());
        // A CONNACK timeout when the broker says nothing.
        let mut q = Publisher::new(settings(), t0);
        q.poll(&s, t0);
        q.handle_connected(t0);
        q.poll(&s, t0);
        let out = q.poll(&s, t0.plus(RESPONSE_TIMEOUT));
        assert_eq!(out.close, Some(MqttError::Timeout("CONNACK")));
    }

    #[test]
    fn a_removed_device_has_its_entities_deleted() {
        let t0 = Now::at(1_700_000_000);
        let mut s = Snapshot::new(1_700_000_000);
        s.devices.push(crate::status::Device {
            name: "inverter1".into(),
            role: crate::status::DeviceRole::Inverter,
            stale: false,
            last_reading_age_s: None,
            readings: Default::default(),
            stats: Default::default(),
            read_only: None,
            tls_fingerprint: None,
        });
        let (mut p, first) = connected(t0, &s);
        assert!(
            published(&first)
                .iter()
                .any(|(t, _, _)| t == "homeassistant/sensor/csipd/inverter1_power/config")
        );
        s.devices.clear();
        let sent = published(&p.poll(&s, t0.plus_ms(1000)).transmit);
        let deleted: Vec<&str> = sent
            .iter()
            .filter(|(_, payload, retain)| payload.is_empty() && *retain)
            .map(|(t, _, _)| t.as_str())
            .collect();
        assert!(
            deleted.contains(&"homeassistant/sensor/csipd/inverter1_power/config"),
            "{sent:?}"
        );
    }

    #[test]
    fn a_day_offline_costs_nothing_and_reconnecting_sends_each_topic_once() {
        let t0 = Now::at(1_700_000_000);
        let mut s = Snapshot::new(1_700_000_000);
        s.devices.push(crate::status::Device {
            name: "inverter1".into(),
            role: crate::status::DeviceRole::Inverter,
            stale: false,
            last_reading_age_s: None,
            readings: Default::default(),
            stats: Default::default(),
            read_only: None,
            tls_fingerprint: None,
        });
        let mut p = Publisher::new(settings(), t0);
        // The broker refuses every connection for a virtual day while the site changes
        // every second; nothing accumulates.
        let mut t = t0;
        let mut polls = 0u32;
        while t.since(t0) < Duration::from_secs(86_400) {
            s.site.site_w = Some(f64::from(polls % 5000));
            let out = p.poll(&s, t);
            assert!(
                out.transmit.is_empty()
                    || out.connect
                    || matches!(p.link, Link::AwaitingConnack { .. })
            );
            if out.connect {
                p.handle_connect_failed(t, "connection refused");
            }
            assert!(p.tx.is_empty() && p.rx.is_empty() && p.sent.is_empty());
            assert!(p.events.len() <= 1);
            p.poll_event();
            t = t.plus_ms(1000);
            polls += 1;
        }
        // Then the broker is back: one message per topic, with the latest values.
        while !p.poll(&s, t).connect {
            t = t.plus_ms(1000);
        }
        p.handle_connected(t);
        p.poll(&s, t);
        p.handle_input(&connack(ConnectReturnCode::Accepted), t)
            .unwrap();
        let sent = published(&p.poll(&s, t).transmit);
        let mut topics: Vec<&str> = sent.iter().map(|(t, _, _)| t.as_str()).collect();
        let n = topics.len();
        topics.sort();
        topics.dedup();
        assert_eq!(topics.len(), n, "each topic once: {topics:?}");
        let site = sent
            .iter()
            .find(|(t, _, _)| t == "csipd/site")
            .expect("site");
        let v: serde_json::Value = serde_json::from_slice(&site.1).unwrap();
        assert_eq!(
            v["site_w"],
            f64::from((polls - 1) % 5000),
            "the latest value"
        );
        // availability + limits, events, utility, site, device + discovery (11 site
        // sensors + 3 for the inverter).
        assert_eq!(n, 1 + 5 + 14, "{topics:?}");
    }
}
