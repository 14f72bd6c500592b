//! Tests of the typed configuration and its validation messages.

use super::typed::edit_distance;
use super::*;
use crate::control::PosixTz;

/// A complete, valid configuration; tests change one thing in it.
const VALID: &str = "\
package csipd
config csipd 'main'
	option log_level 'debug'
	option data_dir '/overlay/csipd'
	option timezone 'ACST-9:30ACDT,M10.1.0,M4.1.0/3'
config server 'utility'
	option dcap_url 'https://csip.example.com.au:8443/dcap'
	option cert '/etc/csipd/client.crt'
	option key '/etc/csipd/client.key'
	option ca '/etc/csipd/ca.pem'
	option nmi 'sa00012345'
	option pen '37244'
config limits 'fixed'
	option export_limit_w '5000'
	option connect 'yes'
config tariff 'evening'
	option start '22:00'
	option end '06:30'
	option days 'fri sat'
	option export_limit_w '1500'
config tariff
	option start '10:00'
	option end '24:00'
	option export_limit_w '0'
config price 'feed_in'
	option enabled '1'
	option site_id 'S1'
	option token 'psk_x'
config device 'meter'
	option role 'meter'
	option transport 'tcp'
	option host '10.0.0.5'
	option unit_id '240'
config device
	option role 'inverter'
	option transport 'rtu'
	option path '/dev/ttyUSB0'
	option baud '19200'
	option parity 'even'
	option stop_bits '2'
	option sunspec_base '40000'
	option rated_w '8200'
config control 'site'
	option cycle_s '0.5'
	option ramp_up_pct_per_s '2.5'
";

fn valid() -> (Config, Vec<Diagnostic>) {
    match from_text(VALID, "c") {
        Ok(ok) => ok,
        Err(d) => panic!("valid config rejected: {d:?}"),
    }
}

/// Replaces `from` (which must occur once) in VALID and returns every message.
fn messages_with(from: &str, to: &str) -> Vec<String> {
    assert_eq!(VALID.matches(from).count(), 1, "{from:?} must occur once");
    let text = VALID.replace(from, to);
    let diagnostics = match from_text(&text, "c") {
        Ok((_, warnings)) => warnings,
        Err(all) => all,
    };
    diagnostics.iter().map(|d| d.to_string()).collect()
}

#[test]
fn full_config_reads_every_value() {
    let (config, warnings) = valid();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.main.log_level, LogLevel::Debug);
    assert_eq!(config.main.data_dir, "/overlay/csipd");
    assert_eq!(config.main.telemetry_dir, "/tmp/csipd");
    assert_eq!(config.main.status_listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.main.timezone.as_deref(),
        Some("ACST-9:30ACDT,M10.1.0,M4.1.0/3")
    );
    let s = &config.server;
    assert_eq!(
        s.dcap_url.as_deref(),
        Some("https://csip.example.com.au:8443/dcap")
    );
    assert_eq!(s.nmi.as_deref(), Some("SA00012345"));
    assert_eq!(s.pen, Some(37244));
    assert_eq!(s.profile, Profile::CsipAus);
    assert_eq!(s.csipaus_namespace, CsipAusNamespace::Default);
    assert!(!s.inband_registration && !s.tls_insecure_lab && !s.allow_plain_http);
    assert!(!s.schema_2018);
    assert_eq!(config.limits.export_limit_w, Some(5000));
    assert_eq!(config.limits.import_limit_w, None);
    assert!(config.limits.connect);
    assert_eq!(config.tariffs.len(), 2);
    let evening = &config.tariffs[0];
    assert_eq!(evening.name, "evening");
    assert_eq!((evening.start_min, evening.end_min), (22 * 60, 6 * 60 + 30));
    assert!(evening.crosses_midnight());
    assert_eq!(evening.days, [Weekday::Fri, Weekday::Sat]);
    let midday = &config.tariffs[1];
    assert_eq!(midday.name, "@tariff[1]");
    assert_eq!(midday.end_min, 1440);
    assert!(!midday.crosses_midnight());
    assert_eq!(midday.days, Weekday::ALL);
    assert!(config.price.enabled);
    assert_eq!(config.price.url, "https://api.amber.com.au/v1");
    assert_eq!(config.price.poll_interval_s, 300);
    assert_eq!(config.price.max_age_s, 900);
    assert_eq!(config.devices.len(), 2);
    let meter = &config.devices[0];
    assert_eq!(meter.role, DeviceRole::Meter);
    assert_eq!(
        meter.transport,
        Transport::Tcp {
            host: "10.0.0.5".into(),
            port: 502
        }
    );
    assert_eq!(
        (meter.unit_id, meter.timeout_ms, meter.enabled),
        (240, 1000, true)
    );
    let inverter = &config.devices[1];
    assert_eq!(inverter.name, "@device[1]");
    assert_eq!(
        inverter.transport,
        Transport::Rtu {
            path: "/dev/ttyUSB0".into(),
            baud: 19200,
            parity: Parity::Even,
            stop_bits: 2
        }
    );
    assert_eq!(inverter.sunspec_base, Some(40000));
    assert_eq!(inverter.rated_w, Some(8200));
    assert_eq!(config.control.cycle_s, 0.5);
    assert_eq!(config.control.meter_stale_s, 10.0);
    assert_eq!(config.control.failsafe_export_limit_w, 0);
    assert_eq!(config.control.ramp_up_pct_per_s, 2.5);
}

#[test]
fn locations_of_options_and_sections() {
    let (config, _) = valid();
    let cert = config.cert_location().unwrap();
    assert_eq!((cert.line, cert.col), (8, 14));
    assert_eq!(cert.to_string(), "c:8");
    assert_eq!(config.location("@device[1]", "path").unwrap().line, 37);
    assert_eq!(config.location("evening", "days").unwrap().line, 19);
    assert_eq!(config.section_location("@tariff[1]").unwrap().line, 21);
    assert_eq!(config.section_location("site").unwrap().line, 43);
    assert!(config.location("fixed", "import_limit_w").is_none());
    // Locations of singletons use the canonical name, whatever the file calls them.
    let text = VALID.replace("config server 'utility'", "config server 'utility2'");
    let (renamed, warnings) = from_text(&text, "c").unwrap();
    assert_eq!(renamed.cert_location().unwrap().line, 8);
    assert_eq!(renamed.section_location("utility2").unwrap().line, 6);
    assert_eq!(
        warnings[0].to_string(),
        "c:6: warning: the server section is normally named 'utility', not 'utility2' (read \
         anyway)"
    );
    let (empty, _) = from_text("", "e").unwrap();
    assert!(empty.section_location("site").is_none());
    assert!(empty.cert_location().is_none());
}

#[test]
fn empty_file_gives_defaults_and_warnings() {
    let (config, warnings) = from_text("", "e").unwrap();
    assert_eq!(config.main.log_level, LogLevel::Info);
    assert_eq!(config.main.data_dir, "/etc/csipd");
    assert_eq!(config.main.telemetry_dir, "/tmp/csipd");
    assert!(!config.main.status_allow_remote);
    assert_eq!(config.main.timezone, None);
    assert_eq!(config.server.dcap_url, None);
    assert!(config.limits.connect);
    assert!(!config.price.enabled);
    assert_eq!(config.control.cycle_s, 1.0);
    assert_eq!(config.control.ramp_up_pct_per_s, 10.0);
    let messages: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        messages,
        [
            "e:1: warning: no dcap_url (nor server_url) in the file (no server section): \
             csipd will not contact a utility server and applies only the local limits",
            "e:1: warning: no device sections: csipd can neither measure nor control the site"
        ]
    );
}

#[test]
fn bad_number() {
    assert_eq!(
        messages_with("'5000'", "'5kW'"),
        ["c:14: error: option 'export_limit_w' must be a whole number of watts, got \"5kW\""]
    );
    assert_eq!(
        messages_with("'240'", "'248'"),
        ["c:33: error: option 'unit_id' must be between 1 and 247 (Modbus unit id), got \"248\""]
    );
    assert_eq!(
        messages_with("'240'", "'0x10'"),
        ["c:33: error: option 'unit_id' must be a whole number (Modbus unit id), got \"0x10\""]
    );
    assert_eq!(
        messages_with("'0.5'", "'-1'"),
        ["c:44: error: option 'cycle_s' must be a number of seconds, got \"-1\""]
    );
}

#[test]
fn bad_bool_and_choice() {
    assert_eq!(
        messages_with("'yes'", "'maybe'"),
        [
            "c:15: error: option 'connect' must be a boolean (1/0, yes/no, on/off, \
             true/false), got \"maybe\""
        ]
    );
    assert_eq!(
        messages_with("'even'", "'mark'"),
        ["c:39: error: option 'parity' must be one of 'none', 'even', 'odd', got \"mark\""]
    );
}

#[test]
fn rtu_without_path_and_tcp_without_host() {
    assert_eq!(
        messages_with("\toption path '/dev/ttyUSB0'\n", ""),
        [
            "c:36: error: device section @device[1] uses transport rtu but has no option \
             'path' (the serial port, e.g. /dev/ttyUSB0)"
        ]
    );
    assert_eq!(
        messages_with("\toption host '10.0.0.5'\n", ""),
        ["c:31: error: device 'meter' uses transport tcp but has no option 'host'"]
    );
    // What installers paste from a Modbus tool or a browser is named, at its line.
    assert_eq!(
        messages_with("'10.0.0.5'", "'10.0.0.5:502'"),
        ["c:32: error: option 'host' \"10.0.0.5:502\" has a port; put 502 in option 'port'"]
    );
    assert_eq!(
        messages_with("'10.0.0.5'", "'tcp://10.0.0.5'"),
        ["c:32: error: option 'host' \"tcp://10.0.0.5\" is a host name or IP address, not a URL"]
    );
    // An IPv6 address has colons of its own.
    assert!(messages_with("'10.0.0.5'", "'fd00::5'").is_empty());
}

#[test]
fn device_needs_role_and_transport() {
    assert_eq!(
        messages_with("\toption role 'meter'\n", ""),
        // The broken device is left out, so no "no enabled meter" warning on top.
        ["c:29: error: device 'meter' needs option 'role' (inverter, meter or storage)"]
    );
}

#[test]
fn options_of_the_other_transport_are_warned_about() {
    assert_eq!(
        messages_with(
            "\toption unit_id '240'\n",
            "\toption unit_id '240'\n\toption baud '9600'\n"
        ),
        ["c:34: warning: option 'baud' is for transport rtu; ignored for tcp"]
    );
}

#[test]
fn unknown_option_names_the_closest() {
    assert_eq!(
        messages_with(
            "option export_limit_w '5000'",
            "option export_limt_w '5000'"
        ),
        [
            "c:14: warning: unknown option 'export_limt_w' in limits section (ignored); did \
             you mean 'export_limit_w'?"
        ]
    );
}

#[test]
fn unknown_section_type_names_the_closest() {
    assert_eq!(
        messages_with("config control 'site'", "config contrl 'site'"),
        ["c:43: warning: unknown section type 'contrl' (ignored); did you mean 'control'?"]
    );
}

#[test]
fn list_where_one_value_is_expected() {
    assert_eq!(
        messages_with("option log_level 'debug'", "list log_level 'debug'"),
        [
            "c:3: error: 'log_level' in csipd 'main' takes one value; write 'option \
             log_level ...', not 'list'"
        ]
    );
}

#[test]
fn second_singleton_section_is_an_error() {
    assert_eq!(
        messages_with(
            "config control 'site'\n",
            "config control 'site'\nconfig control\n"
        ),
        ["c:44: error: a second 'control' section; only one is allowed (the first is on line 43)"]
    );
}

#[test]
fn server_url_rules() {
    assert_eq!(
        messages_with(
            "'https://csip.example.com.au:8443/dcap'",
            "'http://lab:8080/dcap'"
        ),
        [
            "c:7: error: dcap_url uses plain http; utilities require https with a client \
             certificate (set option allow_plain_http '1' only for a lab server)"
        ]
    );
    assert_eq!(
        messages_with(
            "'https://csip.example.com.au:8443/dcap'",
            "'http://lab:8080/dcap'\n\toption allow_plain_http '1'"
        ),
        [
            "c:7: warning: dcap_url uses plain http (allow_plain_http is set): no encryption \
             and no server authentication; lab use only"
        ]
    );
    assert_eq!(
        messages_with(
            "'https://csip.example.com.au:8443/dcap'",
            "'csip.example.com.au'"
        ),
        [
            "c:7: error: option 'dcap_url': \"csip.example.com.au\" is not a URL; expected \
             https://host[:port]/path"
        ]
    );
    assert_eq!(
        messages_with(":8443/", ":99999/"),
        [
            "c:7: error: option 'dcap_url': \"https://csip.example.com.au:99999/dcap\" has an \
             invalid port '99999'"
        ]
    );
    assert_eq!(
        messages_with("\toption key '/etc/csipd/client.key'\n", ""),
        [
            "c:7: error: dcap_url is https but option 'key' is not set; the utility server \
             requires a client certificate and its key"
        ]
    );
    assert_eq!(
        messages_with("'/etc/csipd/client.crt'", "'client.crt'"),
        ["c:8: error: option 'cert' must be an absolute path, got \"client.crt\""]
    );
    assert_eq!(
        messages_with("option pen '37244'", "option tls_insecure_lab '1'"),
        [
            "c:12: warning: tls_insecure_lab is on: the server certificate is not verified; \
             never use this with a real utility"
        ]
    );
}

#[test]
fn server_identity_rules() {
    assert_eq!(
        messages_with("'sa00012345'", "'SA123'"),
        [
            "c:11: error: option 'nmi' must be a National Metering Identifier of 10 letters \
             and digits (11 with the checksum digit), got \"SA123\""
        ]
    );
    assert_eq!(
        messages_with("\toption nmi 'sa00012345'\n", ""),
        [
            "c:7: warning: profile csip-aus without an nmi: the connection point id is not \
             reported, and utilities that match on it will not find this site"
        ]
    );
    assert_eq!(
        messages_with("option pen '37244'", "option inband_registration '1'"),
        [
            "c:12: error: inband_registration is on but registration_pin is not set; csipd \
             checks the server's Registration PIN against it"
        ]
    );
    assert_eq!(
        messages_with("option pen '37244'", "option registration_pin '12a45'"),
        [
            "c:12: error: option 'registration_pin' must be the utility's PIN of up to 6 \
             digits, got \"12a45\""
        ]
    );
    let (config, _) = from_text(
        &VALID.replace(
            "option pen '37244'",
            "option inband_registration 'on'\n\toption registration_pin '111115'\n\
             \toption profile 'csip'\n\toption csipaus_namespace 'v1.3'",
        ),
        "c",
    )
    .unwrap();
    assert!(config.server.inband_registration);
    assert_eq!(config.server.registration_pin, Some(111115));
    assert_eq!(config.server.profile, Profile::Csip);
    assert_eq!(config.server.csipaus_namespace, CsipAusNamespace::V1_3);
}

#[test]
fn schema_2018_is_a_checked_boolean_with_its_consequences_warned_about() {
    let (config, warnings) = from_text(
        &VALID.replace(
            "option pen '37244'",
            "option pen '37244'\n\toption schema_2018 '1'",
        ),
        "c",
    )
    .unwrap();
    assert!(config.server.schema_2018);
    let warnings: Vec<String> = warnings.iter().map(|d| d.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("schema_2018 '1': the nmi is not sent")),
        "{warnings:?}"
    );
    let line = warnings
        .iter()
        .find(|w| w.contains("schema_2018"))
        .and_then(|w| w.split(':').nth(1))
        .and_then(|n| n.parse::<usize>().ok())
        .expect("a FILE:LINE warning");
    let text = VALID.replace(
        "option pen '37244'",
        "option pen '37244'\n\toption schema_2018 '1'",
    );
    assert!(text.lines().nth(line - 1).unwrap().contains("schema_2018"));
    assert_eq!(
        messages_with(
            "option pen '37244'",
            "option pen '37244'\n\toption schema_2018 'maybe'"
        ),
        [format!(
            "c:{line}: error: option 'schema_2018' must be a boolean (1/0, yes/no, on/off, \
             true/false), got \"maybe\""
        )]
    );
    let with_ns = messages_with(
        "option pen '37244'",
        "option pen '37244'\n\toption schema_2018 'on'\n\toption csipaus_namespace 'v1.3'",
    );
    assert!(
        with_ns
            .iter()
            .any(|w| w.contains("warning: csipaus_namespace has no effect with schema_2018")),
        "{with_ns:?}"
    );
}

#[test]
fn status_listen_rules() {
    assert_eq!(
        messages_with(
            "option data_dir '/overlay/csipd'",
            "option status_listen '0.0.0.0:80'"
        ),
        [
            "c:4: error: status_listen 0.0.0.0:80 is reachable from the network; set option \
             status_allow_remote '1' to allow that, or use 127.0.0.1"
        ]
    );
    assert!(
        messages_with(
            "option data_dir '/overlay/csipd'",
            "option status_listen '[::]:8080'; option status_allow_remote 1"
        )
        .is_empty()
    );
    assert_eq!(
        messages_with(
            "option data_dir '/overlay/csipd'",
            "option status_listen 'localhost'"
        ),
        [
            "c:4: error: option 'status_listen' must be an address and port such as \
             127.0.0.1:8080 or [::1]:8080, got \"localhost\""
        ]
    );
    assert_eq!(
        messages_with("'/overlay/csipd'", "'overlay'"),
        ["c:4: error: option 'data_dir' must be an absolute path, got \"overlay\""]
    );
}

#[test]
fn timezone_rules() {
    // The zone name OpenWrt's System page writes is read as its POSIX rule.
    let text = VALID.replace("'ACST-9:30ACDT,M10.1.0,M4.1.0/3'", "'Australia/Adelaide'");
    let (config, _) = from_text(&text, "c").expect("a known zone name is accepted");
    assert_eq!(
        config.main.timezone.as_deref(),
        Some("ACST-9:30ACDT,M10.1.0,M4.1.0/3")
    );
    assert_eq!(
        messages_with("'ACST-9:30ACDT,M10.1.0,M4.1.0/3'", "'Australia/Atlantis'"),
        [
            "c:5: error: option 'timezone' \"Australia/Atlantis\" is not a POSIX TZ string: \
             expected a UTC offset such as -10 or -9:30 after the zone name (that looks like \
             a zone name csipd does not know; use the POSIX form from /etc/TZ, e.g. \
             ACST-9:30ACDT,M10.1.0,M4.1.0/3 for Australia/Adelaide)"
        ]
    );
    // A POSIX string with a bad rule is told what is wrong, not that it looks like a
    // zone name (its '/' is in the rule's time).
    let bad_rule = messages_with(
        "'ACST-9:30ACDT,M10.1.0,M4.1.0/3'",
        "'AEST-10AEDT,M13.1.0,M4.1.0/3'",
    );
    assert_eq!(bad_rule.len(), 1, "{bad_rule:?}");
    assert!(
        bad_rule[0].contains("M13.1.0") && !bad_rule[0].contains("zone name"),
        "{bad_rule:?}"
    );
    for good in [
        "AEST-10",
        "AWST-8",
        "UTC0",
        "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
        "AEST-10AEDT,M10.1.0,M4.1.0/3",
        "EST5EDT4,J60,J300/2",
    ] {
        assert!(PosixTz::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "AE-10",
        "AEST",
        "AEST-10AEDT,M10.1.0",
        "AEST-10AEDT;x",
        "AEST-123",
    ] {
        assert!(PosixTz::parse(bad).is_err(), "{bad}");
    }
}

/// OpenWrt's zone strings (the POSIX TZ column of LuCI's `luci.sys.zoneinfo` tzdata,
/// which OpenWrt writes to /etc/TZ), with the UTC offset (minutes east) each gives on
/// 2026-01-15 and 2026-07-15 at 00:00 UTC. Every form is here: plain names, quoted
/// names with signs and digits, half- and quarter-hour offsets, southern-hemisphere
/// DST, DST below standard time (Dublin), rule times past 24 h (Gaza), negative rule
/// times (Nuuk), and OpenWrt's default bare `UTC`.
const OPENWRT_ZONES: &[(&str, &str, i32, i32)] = &[
    ("UTC (OpenWrt default)", "UTC", 0, 0),
    ("Africa/Abidjan", "GMT0", 0, 0),
    ("Africa/Cairo", "EET-2EEST,M4.5.5/0,M10.5.4/24", 120, 180),
    ("Africa/Casablanca", "<+00>0", 0, 0),
    ("Africa/Johannesburg", "SAST-2", 120, 120),
    ("America/Adak", "HST10HDT,M3.2.0,M11.1.0", -600, -540),
    ("America/Havana", "CST5CDT,M3.2.0/0,M11.1.0/1", -300, -240),
    ("America/Miquelon", "<-03>3<-02>,M3.2.0,M11.1.0", -180, -120),
    ("America/New_York", "EST5EDT,M3.2.0,M11.1.0", -300, -240),
    ("America/Nuuk", "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -120, -60),
    ("America/Phoenix", "MST7", -420, -420),
    (
        "America/Santiago",
        "<-04>4<-03>,M9.1.6/24,M4.1.6/24",
        -180,
        -240,
    ),
    ("America/St_Johns", "NST3:30NDT,M3.2.0,M11.1.0", -210, -150),
    (
        "Antarctica/Macquarie",
        "AEST-10AEDT,M10.1.0,M4.1.0/3",
        660,
        600,
    ),
    (
        "Antarctica/Troll",
        "<+00>0<+02>-2,M3.5.0/1,M10.5.0/3",
        0,
        120,
    ),
    ("Asia/Beirut", "EET-2EEST,M3.5.0/0,M10.5.0/0", 120, 180),
    ("Asia/Colombo", "<+0530>-5:30", 330, 330),
    ("Asia/Gaza", "EET-2EEST,M3.4.4/50,M10.4.4/50", 120, 180),
    ("Asia/Jerusalem", "IST-2IDT,M3.4.4/26,M10.5.0", 120, 180),
    ("Asia/Kathmandu", "<+0545>-5:45", 345, 345),
    ("Asia/Kolkata", "IST-5:30", 330, 330),
    ("Asia/Tehran", "<+0330>-3:30", 210, 210),
    ("Asia/Tokyo", "JST-9", 540, 540),
    ("Asia/Yangon", "<+0630>-6:30", 390, 390),
    ("Atlantic/Azores", "<-01>1<+00>,M3.5.0/0,M10.5.0/1", -60, 0),
    (
        "Australia/Adelaide",
        "ACST-9:30ACDT,M10.1.0,M4.1.0/3",
        630,
        570,
    ),
    ("Australia/Brisbane", "AEST-10", 600, 600),
    (
        "Australia/Broken_Hill",
        "ACST-9:30ACDT,M10.1.0,M4.1.0/3",
        630,
        570,
    ),
    ("Australia/Darwin", "ACST-9:30", 570, 570),
    ("Australia/Eucla", "<+0845>-8:45", 525, 525),
    ("Australia/Hobart", "AEST-10AEDT,M10.1.0,M4.1.0/3", 660, 600),
    ("Australia/Lindeman", "AEST-10", 600, 600),
    (
        "Australia/Lord_Howe",
        "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
        660,
        630,
    ),
    (
        "Australia/Melbourne",
        "AEST-10AEDT,M10.1.0,M4.1.0/3",
        660,
        600,
    ),
    ("Australia/Perth", "AWST-8", 480, 480),
    ("Australia/Sydney", "AEST-10AEDT,M10.1.0,M4.1.0/3", 660, 600),
    ("Etc/GMT+12", "<-12>12", -720, -720),
    ("Etc/GMT-14", "<+14>-14", 840, 840),
    ("Europe/Athens", "EET-2EEST,M3.5.0/3,M10.5.0/4", 120, 180),
    ("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3", 60, 120),
    ("Europe/Dublin", "IST-1GMT0,M10.5.0,M3.5.0/1", 0, 60),
    ("Europe/London", "GMT0BST,M3.5.0/1,M10.5.0", 0, 60),
    ("Europe/Moscow", "MSK-3", 180, 180),
    ("Indian/Cocos", "<+0630>-6:30", 390, 390),
    ("Pacific/Auckland", "NZST-12NZDT,M9.5.0,M4.1.0/3", 780, 720),
    (
        "Pacific/Chatham",
        "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
        825,
        765,
    ),
    (
        "Pacific/Easter",
        "<-06>6<-05>,M9.1.6/22,M4.1.6/22",
        -300,
        -360,
    ),
    ("Pacific/Guam", "ChST-10", 600, 600),
    ("Pacific/Honolulu", "HST10", -600, -600),
    ("Pacific/Kiritimati", "<+14>-14", 840, 840),
    ("Pacific/Marquesas", "<-0930>9:30", -570, -570),
    (
        "Pacific/Norfolk",
        "<+11>-11<+12>,M10.1.0,M4.1.0/3",
        720,
        660,
    ),
];

/// check-config (`option timezone` validated by `config`) and the runtime (the zone
/// `runtime::coordinator` uses, from the option or from /etc/TZ) read every OpenWrt
/// zone string the same way, and both get the right offsets.
#[test]
fn check_config_and_the_runtime_agree_on_every_openwrt_zone() {
    use crate::control::tz::{days_from_civil, site_timezone};
    let jan = days_from_civil(2026, 1, 15) * 86_400;
    let jul = days_from_civil(2026, 7, 15) * 86_400;
    for &(zone, tz, jan_min, jul_min) in OPENWRT_ZONES {
        // check-config's verdict on the UCI option.
        let quoted = format!("'{tz}'");
        let diagnostics = messages_with("'ACST-9:30ACDT,M10.1.0,M4.1.0/3'", &quoted);
        assert!(
            diagnostics.iter().all(|d| !d.contains("timezone")),
            "{zone}: check-config rejects {tz}: {diagnostics:?}"
        );
        let text = VALID.replace("'ACST-9:30ACDT,M10.1.0,M4.1.0/3'", &quoted);
        let (config, _) = from_text(&text, "c").expect("valid");
        assert_eq!(config.main.timezone.as_deref(), Some(tz));
        // The runtime, from the option and from /etc/TZ (with its newline).
        let (from_option, problem) = site_timezone(config.main.timezone.as_deref(), None);
        assert_eq!(problem, None, "{zone}");
        let etc_tz = format!("{tz}\n");
        let (from_etc, problem) = site_timezone(None, Some(&etc_tz));
        assert_eq!(problem, None, "{zone}");
        assert_eq!(from_option, from_etc, "{zone}");
        for (at, want_min) in [(jan, jan_min), (jul, jul_min)] {
            assert_eq!(
                from_option.offset_at(at).0,
                want_min * 60,
                "{zone} ({tz}) at {at}"
            );
        }
    }
    // A zone name as OpenWrt's System page writes it is read as its POSIX rule, so
    // check-config and the runtime agree on it too.
    let text = VALID.replace("'ACST-9:30ACDT,M10.1.0,M4.1.0/3'", "'Australia/Perth'");
    let (config, _) = from_text(&text, "c").expect("a known zone name is valid");
    assert_eq!(config.main.timezone.as_deref(), Some("AWST-8"));
    // A zone name csipd does not know is refused by check-config and not silently read
    // as UTC by the runtime either: it says it fell back.
    let diagnostics = messages_with("'ACST-9:30ACDT,M10.1.0,M4.1.0/3'", "'Europe/Atlantis'");
    assert!(
        diagnostics
            .iter()
            .any(|d| d.contains("not a POSIX TZ string"))
    );
    let (tz, problem) = site_timezone(None, Some("Europe/Atlantis"));
    assert_eq!(tz.offset_at(jan).0, 0);
    assert!(problem.is_some_and(|p| p.contains("using UTC")));
}

#[test]
fn tariff_rules() {
    assert_eq!(
        messages_with("'06:30'", "'6.30pm'"),
        [
            "c:18: error: option 'end' must be a local time HH:MM between 00:00 and 24:00, got \
             \"6.30pm\""
        ]
    );
    assert_eq!(
        messages_with("'22:00'", "'25:00'"),
        [
            "c:17: error: option 'start' must be a local time HH:MM between 00:00 and 23:59, \
             got \"25:00\""
        ]
    );
    assert_eq!(
        messages_with("'06:30'", "'22:00'"),
        [
            "c:18: error: option 'end' equals 'start': the window would be empty (for all day \
             use 00:00 to 24:00)"
        ]
    );
    assert_eq!(
        messages_with("'fri sat'", "'fri saturday'"),
        [
            "c:19: error: option 'days' has \"saturday\"; expected mon, tue, wed, thu, fri, sat or sun"
        ]
    );
    assert_eq!(
        messages_with("\toption start '10:00'\n", ""),
        ["c:21: error: tariff section @tariff[1] needs option 'start' (local time HH:MM)"]
    );
    assert_eq!(
        messages_with("\toption export_limit_w '1500'\n", ""),
        ["c:16: error: tariff 'evening' needs option 'export_limit_w'"]
    );
    assert_eq!(
        messages_with("'10:00'", "'24:00'"),
        ["c:22: error: option 'start' cannot be 24:00; use 00:00"]
    );
}

#[test]
fn price_rules() {
    assert_eq!(
        messages_with("\toption token 'psk_x'\n", ""),
        ["c:26: error: price 'feed_in' is enabled but option 'token' is not set"]
    );
    assert_eq!(
        messages_with(
            "\toption site_id 'S1'\n",
            "\toption site_id 'S1'\n\toption max_age_s '60'\n"
        ),
        [
            "c:28: error: max_age_s (60 s) is shorter than poll_interval_s (300 s): every \
             price would be too old before the next poll"
        ]
    );
    assert_eq!(
        messages_with(
            "\toption site_id 'S1'\n",
            "\toption site_id 'S1'\n\toption url 'http://api.amber.com.au/v1'\n"
        ),
        ["c:28: error: option 'url' must use https: the request carries the API token"]
    );
}

#[test]
fn utility_price_export_rules() {
    // Valid: the utility's price replaces the API's; site_id/token are then unused.
    let (config, _) = from_text(
        &VALID.replace(
            "\toption site_id 'S1'\n\toption token 'psk_x'\n",
            "\toption utility_price_export '1'\n",
        ),
        "c",
    )
    .expect("valid");
    assert!(config.price.enabled && config.price.utility_price_export);
    assert!(!valid().0.price.utility_price_export, "default off");
    assert_eq!(
        messages_with(
            "\toption token 'psk_x'\n",
            "\toption utility_price_export 'maybe'\n"
        ),
        [
            "c:26: error: price 'feed_in' is enabled but option 'token' is not set",
            "c:28: error: option 'utility_price_export' must be a boolean (1/0, yes/no, \
             on/off, true/false), got \"maybe\""
        ]
    );
    assert_eq!(
        messages_with(
            "\toption token 'psk_x'\n",
            "\toption utility_price_export '1'\n"
        ),
        [
            "c:27: warning: option 'site_id' is not used: utility_price_export takes the \
             feed-in price from the utility, not the price API"
        ]
    );
    // No utility server to take a price from: an error at the option's line.
    let text = VALID
        .replace(
            "\toption dcap_url 'https://csip.example.com.au:8443/dcap'\n",
            "",
        )
        .replace(
            "\toption site_id 'S1'\n\toption token 'psk_x'\n",
            "\toption utility_price_export '1'\n",
        )
        .replace("\toption enabled '1'\n", "\toption enabled '0'\n");
    let messages: Vec<String> = match from_text(&text, "c") {
        Ok((_, warnings)) => warnings,
        Err(all) => all,
    }
    .iter()
    .map(|d| d.to_string())
    .filter(|m| m.contains("utility_price_export"))
    .collect();
    assert_eq!(
        messages,
        [
            "c:26: warning: option 'utility_price_export' has no effect while option \
             'enabled' is 0",
            "c:26: error: option 'utility_price_export' takes the price from the utility's \
             2030.5 server, but none is configured (option dcap_url or server_url in config \
             server 'utility')"
        ]
    );
}

#[test]
fn control_rules() {
    assert_eq!(
        messages_with("'2.5'", "'2.5'\n\toption meter_stale_s '0.5'"),
        [
            "c:46: error: meter_stale_s (0.5 s) must be longer than cycle_s (0.5 s), or every \
             reading would count as stale"
        ]
    );
    // An invalid cycle_s is reported alone: the staleness check does not compare
    // meter_stale_s with a default the installer never wrote.
    assert_eq!(
        messages_with("'0.5'", "'0.05'\n\toption meter_stale_s '0.5'"),
        ["c:44: error: option 'cycle_s' must be between 0.1 and 60 seconds, got \"0.05\""]
    );
    assert_eq!(
        messages_with("'2.5'", "'250'"),
        [
            "c:45: error: option 'ramp_up_pct_per_s' must be between 0.01 and 100 percent \
             per second, got \"250\""
        ]
    );
}

#[test]
fn device_conflicts() {
    assert_eq!(
        messages_with("'inverter'", "'meter'"),
        [
            "c:34: error: more than one enabled meter; csipd reads one site meter at the \
             connection point"
        ]
    );
    let twice = "config device 'inv2'\n\toption role 'inverter'\n\toption transport 'rtu'\n\
                 \toption path '/dev/ttyUSB0'\n";
    assert_eq!(
        messages_with(
            "config control 'site'\n",
            &format!("{twice}config control 'site'\n")
        ),
        [
            "c:43: error: device inv2 has the same bus and unit_id 1 as device @device[1] \
             (line 34); two devices may share a unit id only when they are different \
             SunSpec devices of its chain (a meter and an inverter, or different option \
             'chain_device')"
        ]
    );
    assert!(
        messages_with(
            "config control 'site'\n",
            &format!("{twice}\toption unit_id 2\nconfig control 'site'\n")
        )
        .is_empty()
    );
    // A block copied for a second inverter without renaming it: libuci merges it into
    // the first (so csipd does too), and check-config says so at the copy.
    let copy = "config device 'meter'\n\toption unit_id 3\n";
    assert_eq!(
        messages_with(
            "config control 'site'\n",
            &format!("{copy}config control 'site'\n")
        ),
        [
            "c:43: warning: section 'meter' is declared again (first on line 29): its options \
             are merged into that device section, not a second one; give each device its own \
             name"
        ]
    );
}

#[test]
fn powerwall_meter_transport() {
    let meter = "config device 'meter'\n\toption role 'meter'\n\toption transport 'tcp'\n\
                 \toption host '10.0.0.5'\n\toption unit_id '240'\n";
    assert_eq!(VALID.matches(meter).count(), 1);
    let tesla = "config device 'tesla'\n\toption role 'meter'\n\toption transport 'powerwall'\n\
                 \toption host '192.168.1.77'\n\toption password_file '/etc/csipd/tesla.pw'\n";
    let (config, warnings) = from_text(&VALID.replace(meter, tesla), "c").expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        config.devices[0].transport,
        Transport::Powerwall {
            host: "192.168.1.77".into(),
            port: 443,
            password: None,
            password_file: Some("/etc/csipd/tesla.pw".into()),
            fingerprint: None,
        }
    );
    let text_of = |t: &str| match from_text(t, "c") {
        Ok((_, w)) => w.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        Err(e) => e.iter().map(|d| d.to_string()).collect(),
    };
    let no_password = tesla.replace("\toption password_file '/etc/csipd/tesla.pw'\n", "");
    let e = text_of(&VALID.replace(meter, &no_password));
    assert!(
        e.iter().any(|m| m.contains("neither option 'password'")),
        "{e:?}"
    );
    let inverter = tesla.replace("'meter'", "'inverter'");
    let e = text_of(&VALID.replace(meter, &inverter));
    assert!(
        e.iter().any(|m| m.contains("role must be 'meter'")),
        "{e:?}"
    );
    let bad_pin = format!("{tesla}\toption fingerprint 'AB:CD'\n");
    let e = text_of(&VALID.replace(meter, &bad_pin));
    assert!(e.iter().any(|m| m.contains("64 hex digits")), "{e:?}");
    let stray = format!("{tesla}\toption unit_id '3'\n");
    let w = text_of(&VALID.replace(meter, &stray));
    assert!(
        w.iter().any(|m| m.contains("ignored for powerwall")),
        "{w:?}"
    );
    let e = text_of(&VALID.replace("option sunspec_base '40000'", "option password 'x'"));
    assert!(
        e.iter().any(|m| m.contains("is for transport powerwall")),
        "{e:?}"
    );
}

#[test]
fn power_control_option() {
    let (config, _) = valid();
    assert!(
        config
            .devices
            .iter()
            .all(|d| d.power_control == crate::devices::PowerControl::Auto)
    );
    let text = VALID.replace(
        "\toption rated_w '8200'",
        "\toption rated_w '8200'\n\toption power_control 'SolarEdge'",
    );
    let (config, _) = from_text(&text, "c").expect("valid");
    assert_eq!(
        config.devices[1].power_control,
        crate::devices::PowerControl::Solaredge
    );
    assert_eq!(
        messages_with("\toption rated_w '8200'", "\toption power_control 'kaco'"),
        [
            "c:42: error: option 'power_control' must be one of 'auto', 'sunspec', 'solaredge', got \"kaco\""
        ]
    );
}

#[test]
fn devices_of_one_chain_share_a_unit_id() {
    // SolarEdge: the inverter and its meter behind one unit id (field input 04).
    let solaredge = "config device 'se_inverter'\n\toption role 'inverter'\n\
                     \toption transport 'tcp'\n\toption host '10.0.0.9'\n\toption port '1502'\n\
                     config device 'se_meter'\n\toption role 'meter'\n\toption transport 'tcp'\n\
                     \toption host '10.0.0.9'\n\toption port '1502'\n";
    let text = VALID
        .replace(
            "config device 'meter'",
            "config device 'meter'\n\toption enabled '0'",
        )
        .replace(
            "config control 'site'\n",
            &format!("{solaredge}config control 'site'\n"),
        );
    let (config, warnings) = from_text(&text, "c").expect("meter and inverter share unit 1");
    assert!(
        warnings.iter().all(|w| !w.to_string().contains("unit_id")),
        "{warnings:?}"
    );
    assert!(config.devices.iter().all(|d| d.chain_device.is_none()));
    // Two inverters picking by role pick the same one: refused; positions tell them apart.
    let two = text.replace(
        "\toption role 'meter'\n\toption transport 'tcp'\n\
                     \toption host '10.0.0.9'",
        "\toption role 'inverter'\n\toption transport 'tcp'\n\
                     \toption host '10.0.0.9'",
    );
    let text_of = |e: Vec<Diagnostic>| e.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let e = text_of(from_text(&two, "c").unwrap_err());
    assert!(
        e.iter().any(|m| m.contains("same bus and unit_id 1")),
        "{e:?}"
    );
    let apart = two.replace(
        "config device 'se_meter'\n",
        "config device 'se_meter'\n\toption chain_device '3'\n",
    );
    let (config, _) = from_text(&apart, "c").expect("different chain devices");
    assert_eq!(config.devices.last().unwrap().chain_device, Some(3));
    let bad = apart.replace("chain_device '3'", "chain_device '0'");
    let e = text_of(from_text(&bad, "c").unwrap_err());
    assert!(e.iter().any(|m| m.contains("chain_device")), "{e:?}");
}

#[test]
fn disabled_devices_and_no_meter() {
    let text = VALID.replace(
        "option unit_id '240'",
        "option unit_id '240'; option enabled 0",
    );
    let (config, warnings) = from_text(&text, "c").unwrap();
    assert!(!config.devices[0].enabled);
    assert_eq!(
        warnings[0].to_string(),
        "c:29: warning: no enabled meter: csipd cannot measure the site's export or import at \
         the connection point, so the inverters are held at the fail-safe export limit \
         (failsafe_export_limit_w, 0 W)"
    );
    // The level named is the configured one.
    let text = text.replace(
        "config control 'site'\n",
        "config control 'site'\n\toption failsafe_export_limit_w '1500'\n",
    );
    let (_, warnings) = from_text(&text, "c").unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.to_string().ends_with("(failsafe_export_limit_w, 1500 W)")),
        "{warnings:?}"
    );
}

#[test]
fn syntax_error_is_one_diagnostic_with_column() {
    let Err(all) = from_text("config csipd main\n\toption log_level 'info\n", "f") else {
        panic!("accepted");
    };
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].line, all[0].col), (2, 19));
    assert_eq!(
        all[0].message,
        "unterminated single quote; expected a closing ' before the end of the file"
    );
}

#[test]
fn default_file_passes_with_only_first_install_warnings() {
    let text = include_str!("../../files/etc/config/csipd");
    let (config, warnings) = from_text(text, "csipd").unwrap();
    assert!(
        warnings.iter().all(|w| w.severity == Severity::Warning),
        "{warnings:?}"
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].message.starts_with("no dcap_url"));
    assert!(warnings[1].message.starts_with("no enabled device"));
    // The example devices are valid, only switched off.
    assert_eq!(config.devices.len(), 2);
    assert!(config.devices.iter().all(|d| !d.enabled));
    assert_eq!(config.main.status_listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn edit_distances() {
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("export_limt_w", "export_limit_w"), 1);
    assert_eq!(edit_distance("same", "same"), 0);
}

#[test]
fn load_reports_missing_file() {
    let err = load("/nonexistent/csipd.conf").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/csipd.conf: cannot read: "),
        "{err}"
    );
}

#[test]
fn an_import_limit_without_storage_is_warned_about_at_its_line() {
    let base = "config limits 'fixed'
\toption import_limit_w '2000'
\toption export_limit_w '1500'

config device 'inv'
\toption role 'inverter'
\toption transport 'tcp'
\toption host '10.0.0.5'

config device 'meter'
\toption role 'meter'
\toption transport 'tcp'
\toption host '10.0.0.5'
\toption unit_id '2'
";
    let (_, warnings) = from_text(base, "c").expect("valid");
    let texts: Vec<String> = warnings
        .iter()
        .map(|w| w.to_string())
        .filter(|t| !t.contains("no dcap_url"))
        .collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].starts_with("c:2: warning: option 'import_limit_w' needs an enabled storage"),
        "{texts:?}"
    );
    // With a battery configured the limit can be kept: no warning.
    let with_battery = format!(
        "{base}
config device 'bat'
\toption role 'storage'
\toption transport 'tcp'
\toption host '10.0.0.5'
\toption unit_id '3'
"
    );
    let (_, warnings) = from_text(&with_battery, "c").expect("valid");
    assert!(
        warnings.iter().all(|w| w.message.contains("no dcap_url")),
        "{warnings:?}"
    );
}

/// check-config and the HTTP client read a server URL with the same parser (the `url`
/// crate): what one accepts the other can connect to, what one rejects the other does.
#[test]
fn check_config_and_the_client_agree_on_server_urls() {
    for (url, ok) in [
        ("https://csip.example.com.au:8443/dcap", true),
        ("https://CSIP.Example.com.au/sep2/dcap?x=1", true),
        ("https://[::1]:8443/dcap", true),
        ("https://10.0.0.1/dcap", true),
        ("https://csip.example.com.au:99999/dcap", false),
        ("https://:8443/dcap", false),
        ("csip.example.com.au", false),
        ("ftp://csip.example.com.au/dcap", false),
    ] {
        let diagnostics = messages_with(
            "'https://csip.example.com.au:8443/dcap'",
            &format!("'{url}'"),
        );
        let config_ok = diagnostics.iter().all(|d| !d.contains("dcap_url"));
        let client_ok = crate::http::split_url(url).is_ok();
        assert_eq!((config_ok, client_ok), (ok, ok), "{url}: {diagnostics:?}");
    }
}

/// `server_url` (CSIP-AUS v1.3 service discovery): an https origin only, with file:line
/// errors; beside a `dcap_url` it is ignored with a warning (dcap_url wins).
#[test]
fn server_url_is_an_https_origin_and_dcap_url_wins_over_it() {
    let discovering = "'https://csip.example.com.au:8443/dcap'";
    // Only server_url: used, no warning; dcap_url is None.
    let text = VALID.replace(
        &format!("option dcap_url {discovering}"),
        "option server_url 'https://csip.example.com.au:8443'",
    );
    let (config, warnings) = from_text(&text, "c").expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.server.dcap_url, None);
    assert_eq!(
        config.server.server_url.as_deref(),
        Some("https://csip.example.com.au:8443")
    );
    assert_eq!(
        config.server.utility_url(),
        Some("https://csip.example.com.au:8443")
    );
    // A trailing slash is still just the origin.
    let slash = text.replace(":8443'", ":8443/'");
    assert!(from_text(&slash, "c").is_ok());
    // Bad values: an error at the option's line naming it.
    for (url, expect) in [
        (
            "https://csip.example.com.au:8443/dcap",
            "has a path; expected https://host[:port] only",
        ),
        ("https://csip.example.com.au/?x=1", "has a path"),
        ("http://csip.example.com.au", "uses plain http"),
        (
            "csip.example.com.au",
            "is not a URL; expected https://host[:port]",
        ),
        (
            "https://csip.example.com.au:99999",
            "has an invalid port '99999'",
        ),
        ("ftp://csip.example.com.au", "is not a URL"),
    ] {
        let bad = text.replace("'https://csip.example.com.au:8443'", &format!("'{url}'"));
        let diagnostics = match from_text(&bad, "c") {
            Ok((_, w)) => panic!("{url} accepted: {w:?}"),
            Err(all) => all,
        };
        let errors: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "{url}: {errors:?}");
        assert!(
            errors[0].starts_with(&format!("c:7: error: option 'server_url': \"{url}\"")),
            "{url}: {errors:?}"
        );
        assert!(errors[0].contains(expect), "{url}: {errors:?}");
    }
    // http with allow_plain_http: a warning, then used.
    let lab = text.replace(
        "'https://csip.example.com.au:8443'",
        "'http://lab:8080'\n\toption allow_plain_http '1'",
    );
    let (config, warnings) = from_text(&lab, "c").expect("valid for a lab");
    assert_eq!(config.server.server_url.as_deref(), Some("http://lab:8080"));
    assert!(
        warnings[0]
            .to_string()
            .starts_with("c:7: warning: server_url uses plain http")
    );
    // https without a client certificate: an error at server_url's line.
    let no_key = text.replace("\toption key '/etc/csipd/client.key'\n", "");
    let errors = from_text(&no_key, "c").unwrap_err();
    assert!(
        errors.iter().any(|d| d.to_string()
            == "c:7: error: server_url is https but option 'key' is not set; the utility \
                server requires a client certificate and its key"),
        "{errors:?}"
    );
    // Both set: dcap_url wins, server_url is dropped with a warning at its line.
    let both = VALID.replace(
        &format!("option dcap_url {discovering}"),
        &format!("option dcap_url {discovering}\n\toption server_url 'https://other.example'"),
    );
    let (config, warnings) = from_text(&both, "c").expect("valid");
    assert_eq!(config.server.server_url, None);
    assert_eq!(
        config.server.utility_url(),
        Some("https://csip.example.com.au:8443/dcap")
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .to_string()
            .starts_with("c:8: warning: server_url is ignored because dcap_url is set"),
        "{warnings:?}"
    );
}

#[test]
fn capacity_wh_is_for_storage_devices() {
    // On an inverter it is ignored, with a warning at its line.
    let warned = messages_with(
        "\toption rated_w '8200'",
        "\toption rated_w '8200'\n\toption capacity_wh '10000'",
    );
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("capacity_wh") && warned[0].contains("storage"),
        "{warned:?}"
    );
    // On a battery it is read; out of range is an error naming it.
    let battery = "\toption role 'inverter'\n\toption transport 'rtu'";
    let text = VALID.replace(
        battery,
        "\toption role 'storage'\n\toption transport 'rtu'\n\toption capacity_wh '13500'",
    );
    let (config, warnings) = from_text(&text, "c").expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.devices[1].capacity_wh, Some(13_500));
    let bad = messages_with("\toption rated_w '8200'", "\toption capacity_wh '0'");
    assert!(bad.iter().any(|m| m.contains("capacity_wh")), "{bad:?}");
}

/// `notification_listen` / `notification_url` (subscriptions): both or neither, an
/// address:port and an https URL, and the listener needs cert, key and ca.
#[test]
fn notification_options_go_together_and_are_checked() {
    let ca_line = "option ca '/etc/csipd/ca.pem'";
    let with = |extra: &str| VALID.replace(ca_line, &format!("{ca_line}\n\t{extra}"));
    let both = with(
        "option notification_listen '0.0.0.0:8443'\n\toption notification_url 'https://192.0.2.10:8443/notify'",
    );
    let (config, _) = from_text(&both, "c").expect("valid");
    assert_eq!(
        config.server.notification_listen,
        Some("0.0.0.0:8443".parse().unwrap())
    );
    assert_eq!(
        config.server.notification_url.as_deref(),
        Some("https://192.0.2.10:8443/notify")
    );
    let errors = |text: &str| -> Vec<String> {
        match from_text(text, "c") {
            Ok((_, w)) => panic!("accepted: {w:?}"),
            Err(all) => all
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect(),
        }
    };
    let e = errors(&with("option notification_listen '0.0.0.0:8443'"));
    assert!(e[0].contains("notification_url is not"), "{e:?}");
    let e = errors(&with("option notification_url 'https://192.0.2.10:8443/n'"));
    assert!(e[0].contains("notification_listen is not"), "{e:?}");
    let e = errors(&both.replace("0.0.0.0:8443'", "8443'"));
    assert!(
        e[0].contains("option 'notification_listen' must be address:port"),
        "{e:?}"
    );
    let e = errors(&both.replace("https://192.0.2.10", "http://192.0.2.10"));
    assert!(
        e[0].contains("option 'notification_url' must be an https URL"),
        "{e:?}"
    );
    let e = errors(&both.replace(&format!("\t{ca_line}\n"), "\n"));
    assert!(
        e.iter()
            .any(|e| e.contains("notification_listen needs options cert, key")),
        "{e:?}"
    );
}

/// `meter_period_ms` (issue 21): chosen from the meter's bus when unset, checked
/// against the cycle and against what a serial line carries when set.
#[test]
fn meter_period_follows_the_bus() {
    let (config, _) = valid();
    assert_eq!(config.control.meter_period_ms, None);
    // A TCP meter, cycle 0.5 s: read every cycle (the TCP default is longer).
    assert_eq!(config.meter_period_ms(), 500);
    let one_s = VALID.replace("option cycle_s '0.5'", "option cycle_s '1'");
    let (config, _) = from_text(&one_s, "c").unwrap();
    assert_eq!(config.meter_period_ms(), typed::TCP_METER_PERIOD_MS);
    let set = one_s.replace(
        "option cycle_s '1'",
        "option cycle_s '1'\n\toption meter_period_ms '250'",
    );
    let (config, _) = from_text(&set, "c").unwrap();
    assert_eq!(config.control.meter_period_ms, Some(250));
    assert_eq!(config.meter_period_ms(), 250);
}

/// A meter on a serial line: no more reads than the line carries in half its time,
/// with the other devices on it; at 9600 baud a 126-register read takes ~300 ms, so
/// the meter stays at once a cycle, alone or with an inverter.
#[test]
fn a_serial_meter_at_9600_baud_is_not_over_scheduled() {
    let rtu_meter = |baud: u32, with_inverter: bool| {
        let text = VALID
            .replace("option cycle_s '0.5'", "option cycle_s '1'")
            .replace(
                "\toption transport 'tcp'\n\toption host '10.0.0.5'",
                &format!(
                    "\toption transport 'rtu'\n\toption path '/dev/ttyUSB1'\n\toption baud '{baud}'"
                ),
            )
            .replace(
                "option path '/dev/ttyUSB0'",
                if with_inverter {
                    "option path '/dev/ttyUSB1'"
                } else {
                    "option path '/dev/ttyUSB0'"
                },
            )
            .replace("option baud '19200'", &format!("option baud '{baud}'"))
            .replace("option parity 'even'\n\toption stop_bits '2'\n", "");
        from_text(&text, "c").unwrap().0
    };
    for (baud, with_inverter, expected_ms) in [
        (9600, false, 1000),
        (9600, true, 1000),
        (19200, false, 340),
        (19200, true, 1000),
        (115200, false, 100),
    ] {
        let config = rtu_meter(baud, with_inverter);
        let period_ms = config.meter_period_ms();
        let (meter_ms, others_ms) = typed::meter_bus_airtime_ms(&config.devices).unwrap();
        println!(
            "{baud} baud, inverter on the line: {with_inverter}: meter read {meter_ms:.0} ms, \
             others {others_ms:.0} ms a cycle, meter every {period_ms} ms"
        );
        assert_eq!(
            period_ms, expected_ms,
            "{baud} baud, inverter {with_inverter}"
        );
        // The reads of one cycle fit in half of it (but for the one read a cycle the
        // meter always gets).
        let reads = (1000 / period_ms) as f64;
        if reads > 1.0 {
            assert!(reads * meter_ms + others_ms <= 500.0);
        }
    }
    let one = typed::rtu_read_ms(9600, 10, 126);
    assert!((280.0..=330.0).contains(&one), "{one} ms");
}

#[test]
fn meter_period_errors_name_the_line() {
    assert_eq!(
        messages_with(
            "option cycle_s '0.5'",
            "option cycle_s '0.5'\n\toption meter_period_ms '800'"
        ),
        [
            "c:45: error: meter_period_ms (800 ms) must not be longer than cycle_s (0.5 s): the \
          meter is read at least once a cycle"
        ]
    );
    assert_eq!(
        messages_with(
            "option cycle_s '0.5'",
            "option cycle_s '0.5'\n\toption meter_period_ms '50'"
        ),
        [
            "c:45: error: option 'meter_period_ms' must be between 100 and 60000 milliseconds, got \"50\""
        ]
    );
    // A meter at 9600 baud on the inverter's line, read every 300 ms.
    let text = VALID
        .replace(
            "option cycle_s '0.5'",
            "option cycle_s '1'\n\toption meter_period_ms '300'",
        )
        .replace(
            "\toption transport 'tcp'\n\toption host '10.0.0.5'",
            "\toption transport 'rtu'\n\toption path '/dev/ttyUSB0'\n\toption baud '9600'",
        )
        .replace("option baud '19200'", "option baud '9600'")
        .replace("option parity 'even'\n\toption stop_bits '2'\n", "");
    let errors = from_text(&text, "c").unwrap_err();
    let messages: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with(
            "c:44: error: meter_period_ms (300 ms) is more than the meter's serial line carries"
        ),
        "{}",
        messages[0]
    );
}

#[test]
fn unknown_device_options_hint_the_option_installers_mean() {
    // Names from other tools' configs: edit distance alone offered 'parity' for
    // 'device' and 'role' for 'ip'.
    for (written, meant) in [
        ("device", "path"),
        ("tty", "path"),
        ("serial_port", "path"),
        ("baudrate", "baud"),
        ("ip", "host"),
        ("ip_address", "host"),
        ("slave_id", "unit_id"),
        ("unitid", "unit_id"),
    ] {
        let text = VALID.replacen(
            "option unit_id '240'",
            &format!("option unit_id '240'\n\toption {written} 'x'"),
            1,
        );
        let (_, warnings) = from_text(&text, "c").unwrap();
        let hint = format!(
            "unknown option '{written}' in device section (ignored); did you mean '{meant}'?"
        );
        assert!(
            warnings.iter().any(|w| w.to_string().ends_with(&hint)),
            "{written}: {warnings:?}"
        );
    }
}

/// `fallback_export_limit_w`: defaults to the fail-safe export limit, is watts like
/// the other limits (a bad value is an error at its line), and takes effect only on a
/// site with a utility server (set without one it is a warning at its line).
#[test]
fn fallback_export_limit_defaults_to_the_fail_safe_and_needs_a_utility() {
    let (config, _) = valid();
    assert_eq!(config.control.fallback_export_limit_w, 0);
    assert_eq!(config.fallback_export_limit_w(), Some(0));
    let text = VALID.replace(
        "config control 'site'\n",
        "config control 'site'\n\toption failsafe_export_limit_w '1200'\n",
    );
    let (config, _) = from_text(&text, "c").unwrap();
    assert_eq!(config.fallback_export_limit_w(), Some(1200));
    let text = VALID.replace(
        "config control 'site'\n",
        "config control 'site'\n\toption failsafe_export_limit_w '1200'\n\toption fallback_export_limit_w '1500'\n",
    );
    let (config, _) = from_text(&text, "c").unwrap();
    assert_eq!(config.fallback_export_limit_w(), Some(1500));
    assert_eq!(config.control.failsafe_export_limit_w, 1200);

    let line = VALID
        .lines()
        .position(|l| l == "config control 'site'")
        .unwrap()
        + 2;
    for bad in ["1.5kW", "-1", "200000000"] {
        let text = VALID.replace(
            "config control 'site'\n",
            &format!("config control 'site'\n\toption fallback_export_limit_w '{bad}'\n"),
        );
        let Err(errors) = from_text(&text, "c") else {
            panic!("{bad} accepted");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = errors[0].to_string();
        assert!(
            e.starts_with(&format!("c:{line}:")) && e.contains("fallback_export_limit_w"),
            "{e}"
        );
    }

    // An owner-only site: nothing to wait for, and the option says it does nothing.
    let owner_only = "config control 'site'\n\toption fallback_export_limit_w '1500'\n";
    let (config, warnings) = from_text(owner_only, "c").unwrap();
    assert_eq!(config.fallback_export_limit_w(), None);
    assert!(
        warnings.iter().any(|w| w.to_string().starts_with(
            "c:2: warning: fallback_export_limit_w has no effect without a utility server"
        )),
        "{warnings:?}"
    );
}
