//! One filled-in example of every document csipd writes, with every field set that the
//! type carries (so a schema check of these covers the whole writer). Used by the
//! schema-validation test and as a reference for callers.

use super::types::*;
use super::write::{WriteError, WriteProfile, write};
use super::{identity, mrid};

const LFDI: &str = "3E4F45AB31EDFE5B67E343E5E4562E3100028547";
const PEN: u32 = 28547;
const NOW: i64 = 1_700_000_000;

fn w(value: i16, multiplier: i8) -> ActivePower {
    ActivePower { multiplier, value }
}

fn var(value: i16, multiplier: i8) -> ReactivePower {
    ReactivePower { multiplier, value }
}

fn u(value: u16, multiplier: i8) -> UnsignedScaled {
    UnsignedScaled { multiplier, value }
}

fn pf(displacement: u16) -> PowerFactor {
    PowerFactor {
        displacement,
        multiplier: -3,
    }
}

fn link(href: &str) -> Option<Link> {
    Some(Link { href: href.into() })
}

fn list_link(href: &str, all: u32) -> Option<ListLink> {
    Some(ListLink {
        href: href.into(),
        all: Some(all),
    })
}

pub fn end_device() -> EndDevice {
    EndDevice {
        href: Some("/edev/1".into()),
        subscribable: Some(0),
        configuration_link: link("/edev/1/cfg"),
        der_list_link: list_link("/edev/1/der", 1),
        device_category: Some(0x0004_0000),
        device_information_link: link("/edev/1/di"),
        device_status_link: link("/edev/1/ds"),
        file_status_link: link("/edev/1/fs"),
        ip_interface_list_link: list_link("/edev/1/ns", 0),
        lfdi: Some(LFDI.into()),
        load_shed_availability_list_link: list_link("/edev/1/lsl", 0),
        log_event_list_link: list_link("/edev/1/lel", 0),
        power_status_link: link("/edev/1/ps"),
        sfdi: identity::sfdi(LFDI).unwrap_or(0),
        changed_time: NOW,
        enabled: Some(true),
        flow_reservation_request_list_link: list_link("/edev/1/frq", 0),
        flow_reservation_response_list_link: list_link("/edev/1/frp", 0),
        function_set_assignments_list_link: list_link("/edev/1/fsa", 1),
        post_rate_s: Some(60),
        registration_link: link("/edev/1/rg"),
        subscription_list_link: list_link("/edev/1/sub", 0),
        connection_point_link: link("/edev/1/cp"),
    }
}

/// The minimal EndDevice of in-band registration.
pub fn registration_end_device() -> EndDevice {
    EndDevice::for_registration(LFDI, identity::sfdi(LFDI).unwrap_or(0), NOW)
}

pub fn connection_point() -> ConnectionPoint {
    ConnectionPoint {
        href: Some("/edev/1/cp".into()),
        connection_point_id: "4310012345".into(),
    }
}

pub fn der_capability() -> DerCapability {
    DerCapability {
        href: Some("/edev/1/der/1/dercap".into()),
        modes_supported: 0x0050_0088,
        rtg_abnormal_category: Some(2),
        rtg_max_a: Some(u(32, 0)),
        rtg_max_ah: Some(u(200, 0)),
        rtg_max_charge_rate_va: Some(u(5000, 0)),
        rtg_max_charge_rate_w: Some(w(5000, 0)),
        rtg_max_discharge_rate_va: Some(u(5000, 0)),
        rtg_max_discharge_rate_w: Some(w(5000, 0)),
        rtg_max_v: Some(u(2530, -1)),
        rtg_max_va: Some(u(5000, 0)),
        rtg_max_var: Some(var(3000, 0)),
        rtg_max_var_neg: Some(var(-3000, 0)),
        rtg_max_w: w(5000, 0),
        rtg_max_wh: Some(u(10, 3)),
        rtg_min_pf_over_excited: Some(pf(800)),
        rtg_min_pf_under_excited: Some(pf(800)),
        rtg_min_v: Some(u(1800, -1)),
        rtg_normal_category: Some(1),
        rtg_v_nom: Some(u(230, 0)),
        der_type: 81,
        doe_modes_supported: 0x0F,
        // v1.3 storage elements: see `storage_der_capability`.
        vpp_modes_supported: None,
    }
}

pub fn der_settings() -> DerSettings {
    DerSettings {
        href: Some("/edev/1/der/1/derg".into()),
        subscribable: Some(0),
        modes_enabled: Some(0x0000_0080),
        enter_service: EnterService {
            delay: Some(6000),
            high_freq: Some(5015),
            high_volt: Some(2530),
            low_freq: Some(4985),
            low_volt: Some(2160),
            ramp_tms: Some(36000),
            random_delay: Some(0),
        },
        set_grad_w: 27,
        set_max_a: Some(u(32, 0)),
        set_max_ah: Some(u(200, 0)),
        set_max_charge_rate_va: Some(u(5000, 0)),
        set_max_charge_rate_w: Some(w(5000, 0)),
        set_max_discharge_rate_va: Some(u(5000, 0)),
        set_max_discharge_rate_w: Some(w(5000, 0)),
        set_max_v: Some(u(2530, -1)),
        set_max_va: Some(u(5000, 0)),
        set_max_var: Some(var(3000, 0)),
        set_max_var_neg: Some(var(-3000, 0)),
        set_max_w: w(5000, 0),
        set_max_wh: Some(u(10, 3)),
        set_min_pf_over_excited: Some(pf(800)),
        set_min_pf_under_excited: Some(pf(800)),
        set_min_v: Some(u(1800, -1)),
        set_soft_grad_w: Some(27),
        set_v_nom: Some(u(230, 0)),
        set_v_ref: Some(u(230, 0)),
        set_v_ref_ofs: Some(u(0, 0)),
        updated_time: NOW,
        doe_modes_enabled: Some(0x0F),
        vpp_modes_enabled: None,
        set_min_wh: None,
    }
}

pub fn der_status() -> DerStatus {
    let at = |value| {
        Some(StatusValue {
            date_time: NOW,
            value,
        })
    };
    DerStatus {
        href: Some("/edev/1/der/1/ders".into()),
        subscribable: Some(0),
        alarm_status: Some(0),
        gen_connect_status: at(0x07),
        inverter_status: at(4),
        local_control_mode_status: at(0),
        manufacturer_status: Some(StatusValue {
            date_time: NOW,
            value: "OK".into(),
        }),
        operational_mode_status: at(2),
        reading_time: NOW,
        state_of_charge_status: Some(StatusValue {
            date_time: NOW,
            value: 5500,
        }),
        storage_mode_status: at(0),
        stor_connect_status: at(0x07),
    }
}

pub fn der_availability() -> DerAvailability {
    DerAvailability {
        href: Some("/edev/1/der/1/dera".into()),
        subscribable: Some(0),
        availability_duration_s: Some(3600),
        max_charge_duration_s: Some(7200),
        reading_time: NOW,
        reserve_charge_percent: Some(2000),
        reserve_percent: Some(1000),
        stat_var_avail: Some(var(3000, 0)),
        stat_w_avail: Some(w(4200, 0)),
    }
}

fn reading_type(uom: u8, phase: u8) -> ReadingType {
    ReadingType {
        href: None,
        accumulation_behaviour: Some(12),
        commodity: Some(1),
        data_qualifier: Some(2),
        flow_direction: Some(1),
        interval_length_s: Some(60),
        kind: Some(37),
        max_number_of_intervals: Some(1),
        phase: Some(phase),
        power_of_ten_multiplier: Some(0),
        sub_interval_length_s: Some(60),
        uom: Some(uom),
    }
}

/// A site MirrorUsagePoint with a W reading (one reading set) and a var reading.
pub fn mirror_usage_point() -> MirrorUsagePoint {
    let mmr = |reading: &str, uom| MirrorMeterReading {
        href: None,
        mrid: mrid::mirror_meter_reading(LFDI, "site", reading, PEN).unwrap_or_default(),
        description: Some(format!("site {reading}")),
        version: Some(0),
        last_update_time: Some(NOW),
        mirror_reading_sets: vec![MirrorReadingSet {
            href: None,
            mrid: mrid::mirror_reading_set(LFDI, "site", reading, NOW - 60, PEN)
                .unwrap_or_default(),
            description: Some("1 min".into()),
            version: Some(0),
            time_period: DateTimeInterval {
                duration_s: 60,
                start: NOW - 60,
            },
            readings: vec![Reading {
                href: None,
                quality_flags: Some(0x0001),
                time_period: Some(DateTimeInterval {
                    duration_s: 60,
                    start: NOW - 60,
                }),
                tou_tier: None,
                value: Some(-3150),
                local_id: Some(0),
            }],
        }],
        next_update_time: Some(NOW + 60),
        reading: None,
        reading_type: Some(reading_type(uom, 0)),
    };
    MirrorUsagePoint {
        href: None,
        mrid: mrid::mirror_usage_point(LFDI, "site", PEN).unwrap_or_default(),
        description: Some("Site measurement".into()),
        version: Some(0),
        role_flags: 0x0003,
        service_category_kind: 0,
        status: 1,
        device_lfdi: LFDI.into(),
        mirror_meter_readings: vec![mmr("w", 38), mmr("var", 63)],
        post_rate_s: Some(60),
    }
}

/// A MirrorMeterReading POSTed to an existing MirrorUsagePoint: a single `Reading`.
pub fn mirror_meter_reading() -> MirrorMeterReading {
    MirrorMeterReading {
        href: None,
        mrid: mrid::mirror_meter_reading(LFDI, "der", "v-a", PEN).unwrap_or_default(),
        description: Some("DER voltage phase A".into()),
        version: None,
        last_update_time: None,
        mirror_reading_sets: Vec::new(),
        next_update_time: None,
        reading: Some(Reading {
            href: None,
            quality_flags: None,
            time_period: Some(DateTimeInterval {
                duration_s: 60,
                start: NOW,
            }),
            tou_tier: None,
            value: Some(2412),
            local_id: None,
        }),
        reading_type: Some(ReadingType {
            power_of_ten_multiplier: Some(-1),
            data_qualifier: Some(2),
            ..reading_type(29, 129)
        }),
    }
}

pub fn der_control_response() -> DerControlResponse {
    DerControlResponse {
        href: None,
        created_date_time: Some(NOW),
        end_device_lfdi: LFDI.into(),
        status: Some(2),
        subject: "f51df42347494526b7cc2fe85c98aec3".into(),
    }
}

pub fn log_event() -> LogEvent {
    LogEvent {
        href: None,
        created_date_time: NOW,
        details: Some("comms restored".into()),
        extended_data: Some(0),
        function_set: 22,
        log_event_code: 1,
        log_event_id: 7,
        log_event_pen: PEN,
        profile_id: 2,
    }
}

pub fn subscription() -> Subscription {
    Subscription {
        href: None,
        subscribed_resource: "/derp/1/derc".into(),
        condition: Some(Condition {
            attribute_identifier: 0,
            lower_threshold: 0,
            upper_threshold: 100,
        }),
        encoding: 0,
        level: "+S1".into(),
        limit: 10,
        notification_uri: "https://192.0.2.10:8443/ntfy?a=1&b=2".into(),
    }
}

/// Every sample written in `profile`, by root element name (ConnectionPoint is an
/// error in plain mode).
/// DERCapability of a battery with the CSIP-AUS v1.3 storage elements
/// (vppModesSupported), for the v1.3 storage schema.
pub fn storage_der_capability() -> DerCapability {
    DerCapability {
        vpp_modes_supported: Some(0x01),
        ..der_capability()
    }
}

/// DERSettings of a battery with the CSIP-AUS v1.3 storage elements (vppModesEnabled,
/// setMinWh).
pub fn storage_der_settings() -> DerSettings {
    DerSettings {
        vpp_modes_enabled: Some(0x01),
        set_min_wh: Some(u(5, 2)),
        ..der_settings()
    }
}

/// The documents that carry CSIP-AUS v1.3 storage elements (validated against
/// csipaus-core-v1.3-beta_storage.xsd, not csipaus-core.xsd).
pub fn storage_documents(profile: WriteProfile) -> Vec<(&'static str, Result<String, WriteError>)> {
    vec![
        (
            "StorageDERCapability",
            write(&storage_der_capability(), profile),
        ),
        (
            "StorageDERSettings",
            write(&storage_der_settings(), profile),
        ),
        ("StorageDERStatus", write(&der_status(), profile)),
    ]
}

pub fn documents(profile: WriteProfile) -> Vec<(&'static str, Result<String, WriteError>)> {
    vec![
        ("EndDevice", write(&end_device(), profile)),
        (
            "EndDeviceRegistration",
            write(&registration_end_device(), profile),
        ),
        ("ConnectionPoint", write(&connection_point(), profile)),
        ("DERCapability", write(&der_capability(), profile)),
        ("DERSettings", write(&der_settings(), profile)),
        ("DERStatus", write(&der_status(), profile)),
        ("DERAvailability", write(&der_availability(), profile)),
        ("MirrorUsagePoint", write(&mirror_usage_point(), profile)),
        (
            "MirrorMeterReading",
            write(&mirror_meter_reading(), profile),
        ),
        (
            "DERControlResponse",
            write(&der_control_response(), profile),
        ),
        ("LogEvent", write(&log_event(), profile)),
        ("Subscription", write(&subscription(), profile)),
    ]
}
