//! What csipd publishes: the status snapshot as compact JSON state topics, and the Home
//! Assistant discovery configs that turn them into entities. Pure: a snapshot in,
//! (topic, payload) pairs out. README "MQTT" lists every topic and entity made here.

use crate::status::{
    ActiveLimit, ConnectionState, Device, DeviceRole, LimitMode, LimitSource, Setpoint, Snapshot,
};
use serde_json::{Value, json};

/// At most this many upcoming events go into `<base>/events` (soonest first); the
/// payload says how many were left out. Bounds the payload whatever the server sends.
pub const MAX_PUBLISHED_EVENTS: usize = 16;

/// How often a topic is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// State (limits, events, utility connection): within a second of a change, and at
    /// the interval.
    OnChange,
    /// Readings and setpoints, which move every control cycle: at the interval.
    Interval,
}

/// One state topic and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTopic {
    /// Full topic name, `<base>/...`.
    pub topic: String,
    /// Compact JSON.
    pub payload: Vec<u8>,
    pub cadence: Cadence,
}

/// `<base>/availability`: `online` while connected, `offline` (the last will) otherwise.
pub fn availability_topic(base: &str) -> String {
    format!("{base}/availability")
}

/// The availability payload while connected (Home Assistant's default).
pub const ONLINE: &str = "online";
/// The availability payload of the last will (Home Assistant's default).
pub const OFFLINE: &str = "offline";

/// A device's UCI section name as one topic level and id: `[A-Za-z0-9_-]` kept, anything
/// else (the `@device[0]` of anonymous sections) becomes `_`.
pub fn topic_level(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches('_');
    if trimmed.is_empty() {
        "device".to_string()
    } else {
        trimmed.to_string()
    }
}

fn source_json(source: &LimitSource) -> Value {
    match source {
        LimitSource::UtilityEvent { mrid } => json!({"kind": source.kind(), "mrid": mrid}),
        LimitSource::UtilityDefault { program } => {
            json!({"kind": source.kind(), "program": program})
        }
        LimitSource::TariffWindow { name } => json!({"kind": source.kind(), "name": name}),
        LimitSource::Fallback { cause } => json!({"kind": source.kind(), "cause": cause}),
        LimitSource::FailSafe { cause } => json!({"kind": source.kind(), "cause": cause}),
        LimitSource::Fixed { .. } | LimitSource::NegativePrice { .. } => {
            json!({"kind": source.kind()})
        }
    }
}

fn limit_json(limit: &ActiveLimit) -> Value {
    let mut v = json!({
        "value_w": limit.value_w,
        "source": source_json(&limit.source),
        "end_unix_s": limit.end_unix_s,
        "unsupported": limit.unsupported,
    });
    if limit.mode == LimitMode::Connect {
        v["connect"] = json!(limit.connect);
    }
    v
}

const MODES: [LimitMode; 5] = [
    LimitMode::Export,
    LimitMode::Import,
    LimitMode::Generation,
    LimitMode::Load,
    LimitMode::Connect,
];

fn limits_payload(s: &Snapshot) -> Value {
    let mut map = serde_json::Map::new();
    for mode in MODES {
        // Every mode is present, null when no limit of it is in force, so a template
        // can test it without tripping over a missing key.
        map.insert(
            mode.as_str().to_string(),
            s.limit(mode).map_or(Value::Null, limit_json),
        );
    }
    Value::Object(map)
}

fn events_payload(s: &Snapshot) -> Value {
    let events: Vec<Value> = s
        .upcoming_events
        .iter()
        .take(MAX_PUBLISHED_EVENTS)
        .map(|e| {
            json!({
                "mrid": e.mrid,
                "description": e.description,
                "program": e.program,
                "start_unix_s": e.start_unix_s,
                "end_unix_s": e.end_unix_s,
                "limits": e.limits.iter().map(|l| json!({
                    "mode": l.mode.as_str(),
                    "value_w": l.value_w,
                    "connect": l.connect,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "count": s.upcoming_events.len(),
        "omitted": s.upcoming_events.len().saturating_sub(MAX_PUBLISHED_EVENTS),
        "events": events,
    })
}

fn site_payload(s: &Snapshot) -> Value {
    let f = &s.site;
    json!({
        "site_w": f.site_w,
        "export_w": f.export_w,
        "import_w": f.site_w.map(|w| w.max(0.0)),
        "pv_w": f.pv_w,
        "load_w": f.load_w,
        "updated_unix_s": f.updated_unix_s,
    })
}

fn utility_payload(s: &Snapshot) -> Value {
    let u = &s.utility;
    json!({
        "state": u.state.as_str(),
        "since_unix_s": u.since_unix_s,
        "server_url": u.server_url,
        "lfdi": u.lfdi,
        "sfdi": u.sfdi,
        "registration_problem": u.registration_problem,
    })
}

fn device_payload(d: &Device, setpoint: Option<&Setpoint>) -> Value {
    json!({
        "name": d.name,
        "role": d.role.as_str(),
        "stale": d.stale,
        "w": d.readings.w,
        "var": d.readings.var,
        "v": d.readings.v,
        "hz": d.readings.hz,
        "setpoint": setpoint.map(|p| json!({
            "limit_w": p.limit_w,
            "limit_pct": p.limit_pct,
            "connect": p.connect,
            "charge_limit_w": p.charge_limit_w,
            "written_unix_s": p.written_unix_s,
        })),
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    // Serializing a Value built above cannot fail (string keys only).
    serde_json::to_vec(v).unwrap_or_default()
}

/// The state topics for `snapshot` under `base`, in a fixed order: `limits`, `events`,
/// `utility`, then (when `with_readings`; they are only published at the interval, so
/// they are not built every second) `site` and `device/<name>` per device.
pub fn state_topics(base: &str, snapshot: &Snapshot, with_readings: bool) -> Vec<StateTopic> {
    let mut out = vec![
        StateTopic {
            topic: format!("{base}/limits"),
            payload: bytes(&limits_payload(snapshot)),
            cadence: Cadence::OnChange,
        },
        StateTopic {
            topic: format!("{base}/events"),
            payload: bytes(&events_payload(snapshot)),
            cadence: Cadence::OnChange,
        },
        StateTopic {
            topic: format!("{base}/utility"),
            payload: bytes(&utility_payload(snapshot)),
            cadence: Cadence::OnChange,
        },
    ];
    if !with_readings {
        return out;
    }
    out.push(StateTopic {
        topic: format!("{base}/site"),
        payload: bytes(&site_payload(snapshot)),
        cadence: Cadence::Interval,
    });
    for d in &snapshot.devices {
        let setpoint = snapshot.setpoints.iter().find(|p| p.device == d.name);
        out.push(StateTopic {
            topic: format!("{base}/device/{}", topic_level(&d.name)),
            payload: bytes(&device_payload(d, setpoint)),
            cadence: Cadence::Interval,
        });
    }
    out
}

/// One Home Assistant sensor: its object id and how to read it.
struct Sensor {
    object_id: String,
    name: String,
    state_topic: String,
    value_template: String,
    device_class: Option<&'static str>,
    unit: Option<&'static str>,
    state_class: Option<&'static str>,
    options: Option<Vec<&'static str>>,
}

fn power(object_id: String, name: String, topic: String, template: String) -> Sensor {
    Sensor {
        object_id,
        name,
        state_topic: topic,
        value_template: template,
        device_class: Some("power"),
        unit: Some("W"),
        state_class: Some("measurement"),
        options: None,
    }
}

fn sensors(base: &str, snapshot: &Snapshot) -> Vec<Sensor> {
    let limits = format!("{base}/limits");
    let site = format!("{base}/site");
    let mut out = Vec::new();
    for (mode, label) in [
        (LimitMode::Export, "Export limit"),
        (LimitMode::Import, "Import limit"),
        (LimitMode::Generation, "Generation limit"),
        (LimitMode::Load, "Load limit"),
    ] {
        let m = mode.as_str();
        out.push(power(
            format!("{m}_limit"),
            label.to_string(),
            limits.clone(),
            // "None" makes Home Assistant show the sensor as unknown: no limit in force.
            format!("{{{{ value_json.{m}.value_w if value_json.{m} else None }}}}"),
        ));
    }
    out.push(Sensor {
        object_id: "export_limit_source".into(),
        name: "Export limit source".into(),
        state_topic: limits.clone(),
        value_template: "{{ value_json.export.source.kind if value_json.export else None }}".into(),
        device_class: None,
        unit: None,
        state_class: None,
        options: None,
    });
    for (key, label) in [
        ("site_w", "Site power"),
        ("export_w", "Export power"),
        ("import_w", "Import power"),
        ("pv_w", "PV power"),
        ("load_w", "Load power"),
    ] {
        let object = key.trim_end_matches("_w");
        out.push(power(
            format!("{object}_power"),
            label.to_string(),
            site.clone(),
            format!("{{{{ value_json.{key} }}}}"),
        ));
    }
    out.push(Sensor {
        object_id: "utility_state".into(),
        name: "Utility connection".into(),
        state_topic: format!("{base}/utility"),
        value_template: "{{ value_json.state }}".into(),
        device_class: Some("enum"),
        unit: None,
        state_class: None,
        options: Some(ConnectionState::ALL.iter().map(|s| s.as_str()).collect()),
    });
    for d in &snapshot.devices {
        let level = topic_level(&d.name);
        let topic = format!("{base}/device/{level}");
        out.push(power(
            format!("{level}_power"),
            format!("{} power", d.name),
            topic.clone(),
            "{{ value_json.w }}".into(),
        ));
        out.push(Sensor {
            object_id: format!("{level}_voltage"),
            name: format!("{} voltage", d.name),
            state_topic: topic.clone(),
            value_template: "{{ value_json.v }}".into(),
            device_class: Some("voltage"),
            unit: Some("V"),
            state_class: Some("measurement"),
            options: None,
        });
        if matches!(d.role, DeviceRole::Inverter | DeviceRole::Storage) {
            out.push(power(
                format!("{level}_setpoint"),
                format!("{} setpoint", d.name),
                topic,
                "{{ value_json.setpoint.limit_w if value_json.setpoint else None }}".into(),
            ));
        }
    }
    out
}

/// What the discovery configs depend on: the version and each device's name and role.
/// When it is unchanged, the configs are too (they are not rebuilt every second).
pub fn discovery_key(snapshot: &Snapshot) -> (String, Vec<(String, DeviceRole)>) {
    (
        snapshot.version.clone(),
        snapshot
            .devices
            .iter()
            .map(|d| (d.name.clone(), d.role))
            .collect(),
    )
}

/// Home Assistant discovery configs (`<prefix>/sensor/<node>/<object>/config`, retained)
/// for the sensors `snapshot` calls for. `node` is `base` as one topic level. Each
/// names the availability topic and one device block (the csipd gateway), so the
/// entities appear grouped without YAML.
pub fn discovery_configs(prefix: &str, base: &str, snapshot: &Snapshot) -> Vec<(String, Vec<u8>)> {
    let node = topic_level(base);
    let device = json!({
        "identifiers": [format!("csipd_{node}")],
        "name": if node == "csipd" { "csipd".to_string() } else { format!("csipd {node}") },
        "manufacturer": "csipd",
        "model": "CSIP-AUS gateway",
        "sw_version": snapshot.version,
    });
    sensors(base, snapshot)
        .into_iter()
        .map(|s| {
            let mut config = json!({
                "name": s.name,
                "unique_id": format!("{node}_{}", s.object_id),
                "state_topic": s.state_topic,
                "value_template": s.value_template,
                "availability_topic": availability_topic(base),
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "device": device,
                "origin": {"name": "csipd", "sw_version": snapshot.version},
            });
            if let Some(c) = s.device_class {
                config["device_class"] = json!(c);
            }
            if let Some(u) = s.unit {
                config["unit_of_measurement"] = json!(u);
            }
            if let Some(c) = s.state_class {
                config["state_class"] = json!(c);
            }
            if let Some(o) = s.options {
                config["options"] = json!(o);
            }
            (
                format!("{prefix}/sensor/{node}/{}/config", s.object_id),
                bytes(&config),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Readings, SiteFlows, UpcomingEvent};

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::new(1_700_000_000);
        s.limits.push(ActiveLimit {
            mode: LimitMode::Export,
            value_w: Some(1500.0),
            connect: None,
            source: LimitSource::UtilityEvent {
                mrid: "AB12".into(),
            },
            end_unix_s: Some(1_700_003_600),
            unsupported: false,
            not_enforceable: None,
        });
        s.site = SiteFlows::from_site_and_pv(-1200.0, 4000.0, 1_700_000_005);
        s.devices.push(Device {
            name: "@device[1]".into(),
            role: DeviceRole::Inverter,
            stale: false,
            last_reading_age_s: Some(0.4),
            readings: Readings {
                w: Some(4000.0),
                var: None,
                v: Some(241.5),
                hz: Some(50.0),
            },
            stats: Default::default(),
            read_only: None,
            tls_fingerprint: None,
        });
        s.setpoints.push(Setpoint {
            device: "@device[1]".into(),
            limit_w: Some(4200.0),
            limit_pct: Some(84.0),
            connect: None,
            written_unix_s: Some(1_700_000_004),
            charge_limit_w: None,
        });
        s
    }

    fn json_of(topics: &[StateTopic], topic: &str) -> Value {
        let t = topics
            .iter()
            .find(|t| t.topic == topic)
            .unwrap_or_else(|| panic!("no {topic}"));
        serde_json::from_slice(&t.payload).unwrap()
    }

    #[test]
    fn state_topics_carry_limits_with_source_and_end() {
        let topics = state_topics("csipd", &snapshot(), true);
        let limits = json_of(&topics, "csipd/limits");
        assert_eq!(limits["export"]["value_w"], 1500.0);
        assert_eq!(limits["export"]["source"]["kind"], "utility_event");
        assert_eq!(limits["export"]["source"]["mrid"], "AB12");
        assert_eq!(limits["export"]["end_unix_s"], 1_700_003_600);
        assert!(limits["import"].is_null());
        let site = json_of(&topics, "csipd/site");
        assert_eq!(site["export_w"], 1200.0);
        assert_eq!(site["import_w"], 0.0);
        assert_eq!(site["load_w"], 2800.0);
        let device = json_of(&topics, "csipd/device/device_1");
        assert_eq!(device["name"], "@device[1]");
        assert_eq!(device["v"], 241.5);
        assert_eq!(device["setpoint"]["limit_w"], 4200.0);
        assert_eq!(json_of(&topics, "csipd/utility")["state"], "discovering");
        // The fallback export limit says why it holds.
        let mut s = snapshot();
        s.limits[0].source = LimitSource::Fallback {
            cause: crate::status::FallbackCause::UtilityNotRead,
        };
        let limits = json_of(&state_topics("csipd", &s, true), "csipd/limits");
        assert_eq!(limits["export"]["source"]["kind"], "fallback");
        assert_eq!(limits["export"]["source"]["cause"], "utility_not_read");
        // And the fail-safe its cause, as README's MQTT table says.
        s.limits[0].source = LimitSource::FailSafe {
            cause: crate::status::FailSafeCause::NoMeter,
        };
        let limits = json_of(&state_topics("csipd", &s, true), "csipd/limits");
        assert_eq!(limits["export"]["source"]["cause"], "no_meter");
    }

    #[test]
    fn events_are_bounded() {
        let mut s = snapshot();
        for i in 0..40 {
            s.upcoming_events.push(UpcomingEvent {
                mrid: format!("E{i}"),
                description: None,
                program: None,
                start_unix_s: 1_700_010_000 + i,
                end_unix_s: 1_700_020_000 + i,
                limits: vec![],
            });
        }
        let events = json_of(&state_topics("b", &s, true), "b/events");
        assert_eq!(events["count"], 40);
        assert_eq!(events["omitted"], 40 - MAX_PUBLISHED_EVENTS);
        assert_eq!(
            events["events"].as_array().map(Vec::len),
            Some(MAX_PUBLISHED_EVENTS)
        );
        assert_eq!(events["events"][0]["mrid"], "E0");
    }

    #[test]
    fn discovery_configs_describe_power_sensors_with_a_device() {
        let configs = discovery_configs("homeassistant", "home/csipd", &snapshot());
        let find = |object: &str| -> Value {
            let topic = format!("homeassistant/sensor/home_csipd/{object}/config");
            let (_, payload) = configs
                .iter()
                .find(|(t, _)| *t == topic)
                .unwrap_or_else(|| panic!("no {topic}"));
            serde_json::from_slice(payload).unwrap()
        };
        let export = find("export_limit");
        assert_eq!(export["device_class"], "power");
        assert_eq!(export["unit_of_measurement"], "W");
        assert_eq!(export["state_class"], "measurement");
        assert_eq!(export["state_topic"], "home/csipd/limits");
        assert_eq!(export["availability_topic"], "home/csipd/availability");
        assert_eq!(export["unique_id"], "home_csipd_export_limit");
        assert_eq!(export["device"]["identifiers"][0], "csipd_home_csipd");
        let voltage = find("device_1_voltage");
        assert_eq!(voltage["device_class"], "voltage");
        assert_eq!(voltage["unit_of_measurement"], "V");
        assert_eq!(voltage["state_topic"], "home/csipd/device/device_1");
        let utility = find("utility_state");
        assert_eq!(utility["device_class"], "enum");
        assert_eq!(utility["options"].as_array().map(Vec::len), Some(6));
        assert!(
            utility["options"]
                .as_array()
                .is_some_and(|o| o.contains(&json!("pin_mismatch"))),
            "a PIN mismatch is a state Home Assistant can show"
        );
        for object in [
            "site_power",
            "pv_power",
            "load_power",
            "import_limit",
            "device_1_power",
        ] {
            assert_eq!(find(object)["unit_of_measurement"], "W", "{object}");
        }
        // Every unique_id is distinct.
        let mut ids: Vec<String> = configs
            .iter()
            .map(|(_, p)| serde_json::from_slice::<Value>(p).unwrap()["unique_id"].to_string())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), configs.len());
    }

    #[test]
    fn device_names_become_clean_topic_levels() {
        assert_eq!(topic_level("inverter1"), "inverter1");
        assert_eq!(topic_level("@device[0]"), "device_0");
        assert_eq!(topic_level("a/b+c"), "a_b_c");
        assert_eq!(topic_level("@[]"), "device");
    }
}
