//! `csipd discover [--config FILE]`: walk the utility server once from its
//! DeviceCapability with the configured identity and print the tree with the values an
//! installer or the utility's engineer asks for first (is the device registered, which
//! programs and controls apply, what the poll and post rates are). Also the mapping from
//! the UCI [`Config`] to the engine's [`EngineConfig`].

use std::fmt::Write as _;
use std::process::ExitCode;

use crate::config::{self, Config, CsipAusNamespace, DeviceRole, Profile};
use crate::http::ClientConfig;
use crate::schedule;

use super::discovery::Tree;
use super::well_known::{Choice, version_label};
use super::{
    EngineConfig, EngineError, EngineSink, EngineStatus, Nameplate, SiteMeasurement,
    StorageNameplate,
};

const DEFAULT_CONFIG: &str = "/etc/config/csipd";

impl EngineConfig {
    /// The engine's configuration from `/etc/config/csipd` and the identity in its
    /// client certificate (`option cert`): [`EngineConfig::from_config`] with the LFDI
    /// and SFDI read from that file. Errors: no `cert` option (`NoCertificate`), a certificate
    /// that cannot be read or parsed (`Certificate`), server settings that make no
    /// client (`Server`).
    pub fn from_config_and_certificate(config: &Config) -> Result<EngineConfig, EngineError> {
        let cert = config
            .server
            .cert
            .as_deref()
            .ok_or_else(|| EngineError::NoCertificate {
                file: config.file.clone(),
            })?;
        let certificate_error = |message: String| EngineError::Certificate {
            path: cert.to_string(),
            message,
        };
        let pem = std::fs::read(cert).map_err(|e| certificate_error(e.to_string()))?;
        let identity =
            crate::sep2::identity_from_pem(&pem).map_err(|e| certificate_error(e.to_string()))?;
        EngineConfig::from_config(config, &identity.lfdi, identity.sfdi)
    }

    /// The engine's configuration from `/etc/config/csipd` and the device identity
    /// (LFDI/SFDI of the client certificate). Errors: server settings that make no
    /// HTTP client configuration ([`EngineError::Server`], naming the file).
    pub fn from_config(
        config: &Config,
        lfdi: &str,
        sfdi: u64,
    ) -> Result<EngineConfig, EngineError> {
        let server = &config.server;
        // One URL parser for config, http and the engine (the url crate, in `http`);
        // dcap_url wins over server_url (check-config warns when both are set).
        let (http, dcap_path) =
            ClientConfig::from_server_config(server).map_err(|source| EngineError::Server {
                file: config.file.clone(),
                source: Box::new(source),
            })?;
        let service_discovery = server.dcap_url.is_none() && server.server_url.is_some();
        // With service discovery the DeviceCapability path comes from the chosen version.
        let dcap_path = if service_discovery {
            String::new()
        } else {
            dcap_path
        };
        let rated = |role: DeviceRole| -> f64 {
            config
                .devices
                .iter()
                .filter(|d| d.enabled && d.role == role)
                .filter_map(|d| d.rated_w)
                .map(f64::from)
                .sum()
        };
        let has = |role: DeviceRole| config.devices.iter().any(|d| d.enabled && d.role == role);
        let generation = has(DeviceRole::Inverter) || has(DeviceRole::Storage);
        // Import and load can only be limited with something that consumes on command.
        let controllable_load = has(DeviceRole::Storage);
        // A battery: its ratings are refined from SunSpec 124 once it is read; until
        // then the configured rated_w and capacity_wh. opModStorageTargetW is run.
        let capacity_wh: f64 = config
            .devices
            .iter()
            .filter(|d| d.enabled && d.role == DeviceRole::Storage)
            .filter_map(|d| d.capacity_wh)
            .map(f64::from)
            .sum();
        let storage = controllable_load.then(|| StorageNameplate {
            max_charge_rate_w: rated(DeviceRole::Storage),
            max_discharge_rate_w: rated(DeviceRole::Storage),
            max_wh: (capacity_wh > 0.0).then_some(capacity_wh),
            min_wh: None,
            can_target: true,
        });
        Ok(EngineConfig {
            http,
            dcap_path,
            service_discovery,
            lfdi: lfdi.to_string(),
            sfdi,
            pin: server.registration_pin,
            in_band_registration: server.inband_registration,
            nmi: server.nmi.clone(),
            pen: server.pen.unwrap_or(0),
            csipaus: server.profile == Profile::CsipAus,
            csipaus_v1_3: server.csipaus_namespace == CsipAusNamespace::V1_3,
            schema_2018: server.schema_2018,
            nameplate: Nameplate {
                rtg_max_w: rated(DeviceRole::Inverter) + rated(DeviceRole::Storage),
                rtg_max_va: None,
                rtg_max_var: None,
                rtg_max_var_neg: None,
                rtg_v_nom: Some(230.0),
                rtg_min_pf_over_excited: None,
                rtg_min_pf_under_excited: None,
                der_type: if has(DeviceRole::Storage) { 81 } else { 4 },
                can_limit_export: generation,
                can_limit_import: controllable_load,
                can_limit_generation: generation,
                can_limit_load: controllable_load,
                storage,
                // Known once the inverters are read (`runtime::engine`); a site
                // without any knows now that it has none.
                inverter_modes: (!generation).then_some(0),
            },
            max_poll_interval_s: None,
            report_backstop_s: 3600,
            default_post_rate_s: 300,
            reading_buffer_intervals: 288,
            rng_seed: sfdi,
            notification_uri: server
                .notification_listen
                .and(server.notification_url.clone()),
        })
    }
}

/// Collects nothing: discovery needs no sink.
struct NoSink;

impl EngineSink for NoSink {
    fn controls(&mut self, _outcome: &schedule::Outcome) {}
    fn status(&mut self, _status: &EngineStatus) {}
}

fn no_measurements() -> Option<SiteMeasurement> {
    None
}

/// `csipd discover [--config FILE]`.
pub fn discover_main(args: &[String]) -> ExitCode {
    let path = match args {
        [] => DEFAULT_CONFIG.to_string(),
        [flag, file] if flag == "--config" => file.clone(),
        _ => {
            eprintln!("usage: csipd discover [--config FILE]   (default {DEFAULT_CONFIG})");
            return ExitCode::from(2);
        }
    };
    let config = match config::load(&path) {
        Ok((config, _warnings)) => config,
        Err(err) => {
            eprintln!("csipd discover: {err}");
            return ExitCode::from(2);
        }
    };
    let engine_config = match EngineConfig::from_config_and_certificate(&config) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("csipd discover: {err}");
            return ExitCode::from(2);
        }
    };
    match discover_once(engine_config) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(DiscoverError::Setup(err)) => {
            println!("{err}");
            ExitCode::from(1)
        }
        Err(DiscoverError::Incomplete { report }) => {
            print!("{report}");
            ExitCode::from(1)
        }
    }
}

/// Why [`discover_once`] did not give a complete walk.
#[derive(Debug)]
pub enum DiscoverError {
    /// The engine or its HTTP client could not be set up.
    Setup(EngineError),
    /// The walk did not reach this device's EndDevice, or ended with an error: `report`
    /// is the tree as far as it got, with the error line.
    Incomplete { report: String },
}

impl std::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoverError::Setup(err) => write!(f, "{err}"),
            DiscoverError::Incomplete { report } => write!(f, "{report}"),
        }
    }
}

impl std::error::Error for DiscoverError {}

/// Longest a walk may take (a slow server, many pages).
const WALK_DEADLINE_MS: u64 = 60_000;

/// Walks the server once and renders the tree. `Err(Incomplete)` carries the rendering
/// plus the error when the walk did not reach this device's programs.
pub fn discover_once(config: EngineConfig) -> Result<String, DiscoverError> {
    let config_discovers = config.service_discovery;
    let server_url = config.http.server_url.clone();
    let clock = crate::runtime::clock::SystemClock::new();
    let mut client = crate::http::Client::new(config.http.clone())
        .map_err(|e| DiscoverError::Setup(EngineError::Http(e)))?;
    let mut engine = super::Engine::new(config, clock.now()).map_err(DiscoverError::Setup)?;
    engine.set_read_only(true);
    let started_ms = clock.now().mono_ms;
    let service_discovery_from =
        config_discovers.then(|| format!("{}{}", server_url, super::well_known::WELL_KNOWN_PATH));
    let mut source = no_measurements;
    smol::block_on(crate::runtime::engine::drive(
        &mut engine,
        &mut client,
        &clock,
        &mut source,
        &mut NoSink,
        |engine, now| {
            // The walk is over when every resource linked so far has been read once.
            engine.walked() || now.mono_ms > started_ms + WALK_DEADLINE_MS
        },
    ));
    let status = engine.status();
    let mut text = String::new();
    if let Some(url) = service_discovery_from {
        text.push_str(&render_service_discovery(&url, engine.well_known_choice()));
    }
    text.push_str(&render(&engine.tree(), &status));
    if engine.tree().edev.is_some() && status.last_error.is_none() {
        Ok(text)
    } else {
        Err(DiscoverError::Incomplete { report: text })
    }
}

/// What service discovery chose from `url` (the well-known document), and what it left
/// out and why; "none" when nothing was chosen (the error line of [`render`] says why).
pub fn render_service_discovery(url: &str, choice: Option<&Choice>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "csipaus  service discovery {url}");
    match choice {
        Some(choice) => {
            let _ = writeln!(
                out,
                "  using {} ({}), DeviceCapability {}",
                version_label(choice.ns),
                choice.version_uri,
                choice.dcap_path
            );
            for skipped in &choice.skipped {
                let _ = writeln!(out, "  skipped {skipped}");
            }
        }
        None => {
            let _ = writeln!(out, "  no version chosen (see the error below)");
        }
    }
    out
}

/// " storage target N W" for a control that sets opModStorageTargetW (CSIP-AUS v1.3),
/// nothing otherwise (the line stays as it was for controls without one).
fn storage_target(p: Option<crate::sep2::ActivePower>) -> String {
    p.map(|p| format!(" storage target {:.0} W", p.watts()))
        .unwrap_or_default()
}

/// The inverter settings a control or default sets (" volt-var 4 points 90.4 %V → 44 %,
/// …", " fixed PF cos φ 0.950 injecting vars", " fixed var -25.00 % (refType 2)",
/// " target var -1500 var (absorbing)", " watt-var 4 points -100.0 %W → 30 %, …"), its
/// curve links resolved in the program's `curves` (or the reason they do not resolve);
/// nothing for a control without any.
fn inverter_settings(
    base: &crate::sep2::DerControlBase,
    curves: &[crate::sep2::DerCurve],
) -> String {
    use crate::control::limits::{curve_text, power_factor_text, target_var_text};
    use crate::schedule::ControlMode;
    let mut out = String::new();
    for (mode, what, link) in [
        (ControlMode::VoltVar, "volt-var", &base.op_mod_volt_var),
        (ControlMode::VoltWatt, "volt-watt", &base.op_mod_volt_watt),
        (ControlMode::WattVar, "watt-var", &base.op_mod_watt_var),
        (ControlMode::WattPF, "watt-PF", &base.op_mod_watt_pf),
        (ControlMode::FreqWatt, "freq-watt", &base.op_mod_freq_watt),
    ] {
        if let Some(link) = link {
            match super::derp::curve_for(mode, &link.href, curves) {
                Ok(curve) => out.push_str(&format!(" {what} {}", curve_text(&curve))),
                Err(e) => out.push_str(&format!(" {what} ({e})")),
            }
        }
    }
    for (what, pf) in [
        ("fixed PF", &base.op_mod_fixed_pf_inject_w),
        ("fixed PF absorbing", &base.op_mod_fixed_pf_absorb_w),
    ] {
        if let Some(pf) = pf {
            out.push_str(&format!(" {what} {}", power_factor_text(pf)));
        }
    }
    if let Some(var) = &base.op_mod_fixed_var {
        out.push_str(&format!(
            " fixed var {:.2} % (refType {})",
            f64::from(var.value) / 100.0,
            var.ref_type
        ));
    }
    if let Some(d) = &base.op_mod_freq_droop {
        out.push_str(&format!(
            " freq droop {}",
            crate::control::limits::freq_droop_text(d)
        ));
    }
    if let Some(q) = &base.op_mod_target_var {
        out.push_str(&format!(" target var {}", target_var_text(&q.vars())));
    }
    out
}

fn watts(p: Option<crate::sep2::ActivePower>) -> String {
    p.map(|p| format!("{} W", p.watts()))
        .unwrap_or_else(|| "-".into())
}

/// The tree as text.
pub fn render(tree: &Tree, status: &EngineStatus) -> String {
    let mut out = String::new();
    let rate = |href: &str| {
        status
            .polls
            .iter()
            .find(|p| p.href == href)
            .map(|p| format!(" (poll every {} s)", p.rate_s))
            .unwrap_or_default()
    };
    let _ = writeln!(out, "device   LFDI {}  SFDI {}", status.lfdi, status.sfdi);
    let _ = writeln!(
        out,
        "state    {}  clock offset {} s",
        status.state.as_str(),
        status.clock_offset_s
    );
    let _ = writeln!(out, "dcap     {}{}", tree.dcap_href, rate(&tree.dcap_href));
    if let Some(tm) = &tree.time_href {
        let _ = writeln!(out, "time     {tm}{}", rate(tm));
    }
    if let Some(list) = &tree.edev_list_href {
        let _ = writeln!(out, "edev     {list}{}", rate(list));
    }
    match (&tree.edev, &tree.edev_href) {
        (Some(edev), href) => {
            let _ = writeln!(
                out,
                "  this device {} (sFDI {}, enabled {})",
                href.as_deref().unwrap_or("?"),
                edev.sfdi,
                edev.enabled
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into())
            );
            match &tree.registration {
                Some(rg) => {
                    let _ = writeln!(out, "  registration PIN {}", rg.pin);
                }
                None if edev.registration_link.is_none() => {
                    let _ = writeln!(out, "  registration: no RegistrationLink");
                }
                None => {}
            }
            if let Some(cp) = &edev.connection_point_link {
                let _ = writeln!(out, "  connection point {}", cp.href);
            }
        }
        _ => {
            let _ = writeln!(out, "  this device: NOT FOUND in the EndDeviceList");
        }
    }
    if let Some(list) = &tree.fsa_list_href {
        let _ = writeln!(out, "fsa      {list}{}", rate(list));
    }
    for fsa in &tree.fsas {
        let _ = writeln!(
            out,
            "  FSA {} {}",
            fsa.href,
            fsa.fsa.description.as_deref().unwrap_or("")
        );
        if let Some(link) = &fsa.fsa.tariff_profile_list_link {
            let _ = writeln!(out, "    tariffs {}{}", link.href, rate(&link.href));
        }
        let Some(link) = &fsa.fsa.der_program_list_link else {
            continue;
        };
        let _ = writeln!(out, "    programs {}{}", link.href, rate(&link.href));
        for program in tree.programs.get(&link.href).into_iter().flatten() {
            let _ = writeln!(
                out,
                "    DERProgram {} primacy {} mRID {} {}",
                program.href,
                program.program.primacy,
                program.program.mrid,
                program.program.description.as_deref().unwrap_or("")
            );
            match &program.default_control {
                Some(d) => {
                    let _ = writeln!(
                        out,
                        "      default: export {} import {} gen {} load {} setGradW {}{}{}",
                        watts(d.base.op_mod_exp_lim_w),
                        watts(d.base.op_mod_imp_lim_w),
                        watts(d.base.op_mod_gen_lim_w),
                        watts(d.base.op_mod_load_lim_w),
                        d.set_grad_w
                            .map(|g| g.to_string())
                            .unwrap_or_else(|| "-".into()),
                        storage_target(d.base.op_mod_storage_target_w),
                        inverter_settings(&d.base, &program.curves)
                    );
                    if !d.enter_service.is_empty() {
                        let _ = writeln!(
                            out,
                            "        enter service (setES*): {}",
                            crate::control::limits::enter_service_text(&d.enter_service)
                        );
                    }
                }
                None => {
                    let _ = writeln!(out, "      default: none");
                }
            }
            for c in &program.controls {
                let _ = writeln!(
                    out,
                    "      control {} status {} start {} ({}) for {} s: export {} import {} gen {} load {}{}{}{}",
                    c.mrid,
                    c.event_status.current_status.code(),
                    c.interval.start,
                    // The XML's epoch seconds, and the same as a date an engineer reads.
                    u64::try_from(c.interval.start)
                        .ok()
                        .and_then(|s| std::time::UNIX_EPOCH
                            .checked_add(std::time::Duration::from_secs(s)))
                        .map(httpdate::fmt_http_date)
                        .unwrap_or_else(|| "before 1970".into()),
                    c.interval.duration_s,
                    watts(c.base.op_mod_exp_lim_w),
                    watts(c.base.op_mod_imp_lim_w),
                    watts(c.base.op_mod_gen_lim_w),
                    watts(c.base.op_mod_load_lim_w),
                    storage_target(c.base.op_mod_storage_target_w),
                    inverter_settings(&c.base, &program.curves),
                    c.reply_to
                        .as_deref()
                        .map(|r| format!(" (responses to {r})"))
                        .unwrap_or_default()
                );
            }
            if program.curve_count > 0 {
                let _ = writeln!(out, "      curves: {}", program.curve_count);
            }
        }
    }
    if let Some(list) = &tree.der_list_href {
        let _ = writeln!(out, "der      {list}{}", rate(list));
        for der in &tree.ders {
            let _ = writeln!(out, "  DER {}", der.href.as_deref().unwrap_or("?"));
        }
    }
    if let Some(list) = &tree.mup_list_href {
        let _ = writeln!(out, "mup      {list}{}", rate(list));
        for mup in &tree.mups {
            let _ = writeln!(
                out,
                "  MirrorUsagePoint {} mRID {} roleFlags {:02X} postRate {}",
                mup.href.as_deref().unwrap_or("?"),
                mup.mrid,
                mup.role_flags,
                mup.post_rate_s
                    .map(|r| format!("{r} s"))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    if !status.prices.is_empty() {
        out.push_str("prices (UTC)\n");
        for price in &status.prices {
            let _ = writeln!(out, "  {}", crate::status::render::price_line(price, 0));
        }
    }
    if let (Some(list), Some(count)) = (&tree.log_event_list_href, tree.log_event_count) {
        let _ = writeln!(out, "logs     {list} ({count} events)");
    }
    if let Some(err) = &status.last_error {
        let _ = writeln!(out, "error    {err}");
    }
    out
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn config(devices: &str) -> Config {
        let text = format!(
            "config server 'utility'\n\toption dcap_url 'https://utility.example:8443/api/dcap'\n\toption cert '/etc/csipd/cert.pem'\n\toption key '/etc/csipd/key.pem'\n\toption pen '12345'\n\toption nmi '4102345678'\n\toption registration_pin '111115'\n{devices}"
        );
        match crate::config::from_text(&text, "test") {
            Ok((config, _)) => config,
            Err(diagnostics) => panic!("{diagnostics:?}"),
        }
    }

    #[test]
    fn engine_config_from_uci() {
        let pv = config(
            "config device 'inv'\n\toption role 'inverter'\n\toption transport 'tcp'\n\toption host '10.0.0.5'\n\toption rated_w '5000'\n",
        );
        let engine = EngineConfig::from_config(&pv, "AB", 7).expect("engine config");
        assert_eq!(engine.http.server_url, "https://utility.example:8443");
        assert_eq!(engine.dcap_path, "/api/dcap");
        let mut plain = config("");
        plain.server.dcap_url = Some("http://127.0.0.1:9000/dcap".into());
        let err = EngineConfig::from_config(&plain, "AB", 7).expect_err("plain http refused");
        assert!(
            matches!(err, EngineError::Server { .. }),
            "a server setting, not a parse error: {err:?}"
        );
        assert!(err.to_string().contains("allow_plain_http"), "{err}");
        assert_eq!((engine.pen, engine.pin), (12345, Some(111115)));
        assert_eq!(engine.nmi.as_deref(), Some("4102345678"));
        assert!(engine.csipaus);
        assert_eq!(engine.nameplate.rtg_max_w, 5000.0);
        // PV only: export and generation limits, no import/load limiting
        assert_eq!(engine.nameplate.doe_modes(), 0b0101);
        assert_eq!(engine.nameplate.storage, None);
        let battery = config(
            "config device 'bat'\n\toption role 'storage'\n\toption transport 'tcp'\n\toption host '10.0.0.6'\n\toption rated_w '3000'\n\toption capacity_wh '9800'\n",
        );
        let engine = EngineConfig::from_config(&battery, "AB", 7).expect("engine config");
        assert_eq!(engine.nameplate.doe_modes(), 0b1111);
        assert_eq!(engine.nameplate.der_type, 81);
        // The battery until it is read: rated_w for its rates, capacity_wh, and the
        // storage target offered (refined from model 124 once read).
        let storage = engine.nameplate.storage.expect("storage nameplate");
        assert_eq!(
            (
                storage.max_charge_rate_w,
                storage.max_wh,
                storage.can_target
            ),
            (3000.0, Some(9800.0), true)
        );
    }

    #[test]
    fn server_url_means_service_discovery() {
        let text = "config server 'utility'\n\toption server_url 'https://utility.example:8443/'\n\toption cert '/etc/csipd/cert.pem'\n\toption key '/etc/csipd/key.pem'\n\toption nmi '4102345678'\n\toption csipaus_namespace 'v1.3'\n";
        let config = match crate::config::from_text(text, "test") {
            Ok((config, _)) => config,
            Err(diagnostics) => panic!("{diagnostics:?}"),
        };
        let engine = EngineConfig::from_config(&config, "AB", 7).expect("engine config");
        assert!(engine.service_discovery);
        assert_eq!(engine.http.server_url, "https://utility.example:8443");
        // dcap_url (explicit) keeps the configured path, no discovery.
        let pv = config_text_engine();
        assert!(!pv.service_discovery);
        assert_eq!(pv.dcap_path, "/api/dcap");
    }

    fn config_text_engine() -> EngineConfig {
        EngineConfig::from_config(&config(""), "AB", 7).expect("engine config")
    }

    #[test]
    fn service_discovery_is_rendered_with_what_was_skipped() {
        let choice = crate::csip::well_known::choose(
            br#"{"supportedSchemaVersions": {"https://csipaus.org/ns/v99.99": {"dcap": ["/r1"]},
                "https://csipaus.org/ns/v1.3": {"dcap": ["/r3"]}}}"#,
            "https://u.example",
        )
        .expect("v1.3");
        let text = render_service_discovery("https://u.example/.well-known/csipaus", Some(&choice));
        assert_eq!(
            text,
            "csipaus  service discovery https://u.example/.well-known/csipaus\n  using v1.3 \
             (https://csipaus.org/ns/v1.3), DeviceCapability /r3\n  skipped \
             https://csipaus.org/ns/v99.99: not supported\n"
        );
        assert!(render_service_discovery("x", None).contains("no version chosen"));
    }

    #[test]
    fn status_maps_into_the_status_page() {
        let status = EngineStatus {
            state: super::super::ConnectionState::PinMismatch,
            lfdi: "AB".into(),
            sfdi: 7,
            clock_offset_s: -3,
            edev_href: None,
            polls: vec![super::super::PollStatus {
                href: "/edev".into(),
                kind: "EndDeviceList",
                rate_s: 60,
                last_poll_s: Some(100),
                next_poll_s: Some(160),
                next_read: None,
                last_error: Some("HTTP 500".into()),
            }],
            readings_pending: 2,
            readings_dropped: 0,
            readings_posted: 17,
            responses_pending: 0,
            log_events: Default::default(),
            last_error: Some("PIN mismatch".into()),
            csipaus_version: Some("v1.3"),
            prices: Vec::new(),
        };
        let utility = status.to_utility(Some("https://x/dcap".into()), 50);
        assert_eq!(utility.state, super::super::ConnectionState::PinMismatch);
        assert_eq!(
            utility.registration_problem.as_deref(),
            Some("PIN mismatch")
        );
        assert_eq!(utility.clock_offset_s, Some(-3.0));
        assert_eq!(utility.csipaus_version.as_deref(), Some("v1.3"));
        assert_eq!((utility.readings_posted, utility.readings_pending), (17, 2));
        assert_eq!(utility.resources[0].name, "EndDeviceList");
        assert_eq!(utility.resources[0].next_poll_unix_s, Some(160));
        assert_eq!(utility.resources[0].last_error.as_deref(), Some("HTTP 500"));
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;
    use crate::sep2::{CurveData, DerControlBase, DerCurve, Link, ReactivePower};

    /// `csipd discover` names a watt-var curve in % of WMax and a target in var.
    #[test]
    fn watt_var_and_target_var_are_shown() {
        let curve = DerCurve {
            href: Some("/derp/1/dc/2".into()),
            curve_type: 14,
            y_ref_type: 2,
            curve_data: [(-100, 30), (100, -44)]
                .into_iter()
                .map(|(x, y)| CurveData {
                    excitation: None,
                    xvalue: x,
                    yvalue: y,
                })
                .collect(),
            ..DerCurve::default()
        };
        let base = DerControlBase {
            op_mod_watt_var: Some(Link {
                href: "/derp/1/dc/2".into(),
            }),
            op_mod_target_var: Some(ReactivePower {
                multiplier: 1,
                value: -150,
            }),
            ..DerControlBase::default()
        };
        assert_eq!(
            inverter_settings(&base, &[curve]),
            " watt-var 2 points -100.0 %W → 30 %, 100.0 %W → -44 % target var -1500 var \
             (absorbing)"
        );
    }
}
