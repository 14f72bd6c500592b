//! The typed configuration of `/etc/config/csipd` and its validation. Pure: it takes a
//! parsed [`UciFile`] and returns a [`Config`] plus every problem found.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use super::uci::{OptionKind, Pos, Section, UciFile, UciOption};

#[path = "mqtt.rs"]
pub mod mqtt;
pub use mqtt::{BrokerUrl, MQTT_SECTION, MqttConfig, MqttScheme};

/// How bad a [`Diagnostic`] is. Any error makes the configuration unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE: error: message` (the form `check-config` prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{}:{}: {severity}: {}",
            self.file, self.line, self.message
        )
    }
}

/// Where something came from, for messages of later checks (e.g. certificate expiry):
/// displays as `FILE:LINE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Log verbosity (`log_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The matching `log` filter.
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `config csipd 'main'`: the daemon itself.
#[derive(Debug, Clone, PartialEq)]
pub struct MainConfig {
    /// Default `info`.
    pub log_level: LogLevel,
    /// Critical state that must survive a reboot (controls cache, response ledger,
    /// registration). On flash: written rarely. Default `/etc/csipd`.
    pub data_dir: String,
    /// Telemetry and other state that may be lost on reboot. Default `/tmp/csipd` (RAM),
    /// so frequent writes do not wear the flash.
    pub telemetry_dir: String,
    /// Status HTTP server address. Default `127.0.0.1:8080`.
    pub status_listen: SocketAddr,
    /// Must be true to bind `status_listen` to a non-loopback address. Default false.
    pub status_allow_remote: bool,
    /// POSIX TZ string (as in `/etc/TZ`) for local-time rules (tariff windows); `None`
    /// means use the system's `/etc/TZ`. Default `None`.
    pub timezone: Option<String>,
}

/// Which 2030.5 profile to speak (`profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// CSIP-AUS: csipaus extensions (site limits, connection point id). The default.
    CsipAus,
    /// Plain CSIP / IEEE 2030.5 without the Australian extensions.
    Csip,
}

/// Which `csipaus` XML namespace to use (`csipaus_namespace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsipAusNamespace {
    /// `https://csipaus.org/ns` (CSIP-AUS v1.1/v1.2). The default.
    Default,
    /// `https://csipaus.org/ns/v1.3` (CSIP-AUS v1.3 servers).
    V1_3,
}

/// `config server 'utility'`: the utility's 2030.5 server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// DeviceCapability URL (`https://host[:port]/path`). `None` until the installer
    /// sets it: csipd then runs without a utility connection.
    pub dcap_url: Option<String>,
    /// The server's origin (`https://host[:port]`, no path) for CSIP-AUS v1.3 service
    /// discovery through `/.well-known/csipaus`. Used only without `dcap_url`: when
    /// both are set, `dcap_url` wins (a warning) and this is `None`.
    pub server_url: Option<String>,
    /// Client certificate (PEM) path; needed for https.
    pub cert: Option<String>,
    /// Client private key (PEM) path; needed for https.
    pub key: Option<String>,
    /// CA bundle (PEM) that signs the server; `None` means the system trust store.
    pub ca: Option<String>,
    /// National Metering Identifier (connection point id), 10 or 11 characters.
    pub nmi: Option<String>,
    /// IANA Private Enterprise Number used in mRIDs.
    pub pen: Option<u32>,
    /// Register in band (check the server's Registration PIN). Default false.
    pub inband_registration: bool,
    /// The registration PIN the installer was given (up to 6 digits).
    pub registration_pin: Option<u32>,
    /// Default `csip-aus`.
    pub profile: Profile,
    /// Default `default`.
    pub csipaus_namespace: CsipAusNamespace,
    /// Skip server certificate verification. Lab use only. Default false.
    pub tls_insecure_lab: bool,
    /// Allow an `http://` dcap_url (no TLS). Lab use only. Default false.
    pub allow_plain_http: bool,
    /// `schema_2018`: write every PUT/POST body in the plain IEEE 2030.5-2018 shape
    /// (`sep2_schema_2018.xsd`, no csipaus extension elements, no ConnectionPoint PUT)
    /// for servers that reject the CSIP-AUS extensions in what they are sent; csipaus
    /// controls are still read. Default false.
    pub schema_2018: bool,
    /// `notification_listen`: address:port of csipd's mutual-TLS listener for 2030.5
    /// Notifications (subscriptions, CSIP-AUS classes S-L/S-G). `None`: polling only.
    pub notification_listen: Option<std::net::SocketAddr>,
    /// `notification_url`: the notificationURI put in the Subscriptions, as the server
    /// reaches the listener (`https://host:port/path`). Required with
    /// `notification_listen`.
    pub notification_url: Option<String>,
}

impl ServerConfig {
    /// The utility server csipd talks to: `dcap_url`, else `server_url` (service
    /// discovery); `None` when neither is set (local limits only).
    pub fn utility_url(&self) -> Option<&str> {
        self.dcap_url.as_deref().or(self.server_url.as_deref())
    }
}

/// `config limits 'fixed'`: the owner's or installer's fixed limits, in watts. `None`
/// means no fixed limit of that kind.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedLimits {
    pub export_limit_w: Option<u32>,
    pub import_limit_w: Option<u32>,
    pub generation_limit_w: Option<u32>,
    pub load_limit_w: Option<u32>,
    /// False keeps the site's DER disconnected. Default true.
    pub connect: bool,
}

impl Default for FixedLimits {
    /// No fixed limit, DER allowed to connect (the defaults of an absent section).
    fn default() -> Self {
        FixedLimits {
            export_limit_w: None,
            import_limit_w: None,
            generation_limit_w: None,
            load_limit_w: None,
            connect: true,
        }
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    const NAMES: [&'static str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    /// The weekday `days` days after a Sunday (0 = Sunday, 1 = Monday, …; taken mod 7),
    /// the count [`crate::control::tz::LocalTime::weekday`] gives.
    pub fn from_days_since_sunday(days: u8) -> Weekday {
        Weekday::ALL[(usize::from(days) + 6) % 7]
    }
}

/// A `config tariff` section: an export limit during a local-time window.
#[derive(Debug, Clone, PartialEq)]
pub struct TariffWindow {
    /// The section name or `@tariff[N]`.
    pub name: String,
    /// Start, minutes after local midnight (0..1440).
    pub start_min: u32,
    /// End, minutes after local midnight (1..=1440; `24:00` is 1440). An end before
    /// the start means the window crosses midnight.
    pub end_min: u32,
    /// The days on which the window starts. Default every day.
    pub days: Vec<Weekday>,
    pub export_limit_w: u32,
    /// Default true.
    pub enabled: bool,
}

impl TariffWindow {
    /// Whether the window runs past midnight into the next day.
    pub fn crosses_midnight(&self) -> bool {
        self.end_min < self.start_min
    }
}

/// Where feed-in prices come from (`source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// Amber Electric's public API.
    Amber,
}

/// `config price 'feed_in'`: export nothing while the feed-in price is negative.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceConfig {
    /// Default false.
    pub enabled: bool,
    /// Default `amber`.
    pub source: PriceSource,
    /// API base URL. Default `https://api.amber.com.au/v1`.
    pub url: String,
    pub site_id: Option<String>,
    pub token: Option<String>,
    /// Default 300 s; 30..=3600.
    pub poll_interval_s: u32,
    /// A price older than this is not acted on. Default 900 s; must be at least
    /// `poll_interval_s`.
    pub max_age_s: u32,
    /// `option utility_price_export '1'`: the feed-in price is the utility's, from the
    /// 2030.5 Pricing function set (the current export RateComponent's price, CSIP-AUS
    /// v1.3), not the price API; `site_id`/`token` are then not needed. Default false.
    pub utility_price_export: bool,
}

/// What a device is for (UCI `role`; also the status JSON's `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRole {
    /// A PV inverter (SunSpec 101-103/701, controlled through 123 or 704).
    Inverter,
    /// The site meter at the connection point (SunSpec 201-204).
    Meter,
    /// A battery inverter (SunSpec storage models; charge limit through 124).
    Storage,
}

impl DeviceRole {
    /// "inverter", "meter", "storage": the UCI and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceRole::Inverter => "inverter",
            DeviceRole::Meter => "meter",
            DeviceRole::Storage => "storage",
        }
    }
}

/// Serial parity (UCI `parity`): the devices module's type, which the Modbus RTU
/// transport uses as it is.
pub use crate::devices::Parity;

/// How to reach a Modbus device.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Tcp {
        host: String,
        /// Default 502.
        port: u16,
    },
    Rtu {
        /// Serial device, e.g. `/dev/ttyUSB0`.
        path: String,
        /// Default 9600.
        baud: u32,
        /// Default none.
        parity: Parity,
        /// 1 or 2. Default 1.
        stop_bits: u8,
    },
    /// A Tesla Powerwall 2 / Backup Gateway 2's local HTTPS API (meters only).
    Powerwall {
        host: String,
        /// Default 443.
        port: u16,
        /// The customer password, or the file holding it (one of them is required).
        password: Option<String>,
        password_file: Option<String>,
        /// The gateway certificate's SHA-256 fingerprint to pin; none = pin the first
        /// one seen (kept under `data_dir`).
        fingerprint: Option<String>,
    },
}

/// A `config device` section: a SunSpec Modbus device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// The section name or `@device[N]`.
    pub name: String,
    pub role: DeviceRole,
    pub transport: Transport,
    /// Modbus unit id 1..=247. Default 1.
    pub unit_id: u8,
    /// Register of the `SunS` marker; `None` means scan 0, 40000, 50000.
    pub sunspec_base: Option<u16>,
    /// Which SunSpec device of the unit's model chain this is, when one unit id holds
    /// several (each model 1 starts one; SolarEdge puts its meter in the inverter's
    /// chain): the 1-based position of its model 1, 1..=16. `None` (default): the first
    /// device of the chain that has the models of the role (the inverter, the meter).
    pub chain_device: Option<u8>,
    /// Where the active power limit is written: `auto` (default: SunSpec 704/123, else
    /// SolarEdge's own registers on a SolarEdge), `sunspec`, or `solaredge`.
    pub power_control: crate::devices::PowerControl,
    /// Nameplate power; `None` means read it from SunSpec model 120/702.
    pub rated_w: Option<u32>,
    /// Storage devices: usable battery capacity, Wh (SunSpec 124 gives only a state of
    /// charge). Sent as DERCapability rtgMaxWh and turns the state of charge into the
    /// stored-energy reading (CSIP-AUS v1.3 storage); `None`: neither is sent.
    pub capacity_wh: Option<u32>,
    /// Per-request timeout. Default 1000 ms; 50..=30000.
    pub timeout_ms: u32,
    /// Default true.
    pub enabled: bool,
}

/// `config control 'site'`: the control loop.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    /// Control cycle. Default 1 s; 0.1..=60.
    pub cycle_s: f64,
    /// Meter readings older than this put the site in fail-safe. Default 10 s; must be
    /// more than `cycle_s`.
    pub meter_stale_s: f64,
    /// Export limit applied to the inverters' output while the site meter's data is
    /// missing or stale (`control::law`, step 2). Default 0 W.
    pub failsafe_export_limit_w: u32,
    /// The site's export limit while the utility's is not known, on a site with a
    /// utility server configured: before a utility control is read or restored, and
    /// while the controls in force set no export limit
    /// ([`crate::control::fallback_export_limit`]). Default `failsafe_export_limit_w`.
    /// Read through [`Config::fallback_export_limit_w`], which is `None` without a
    /// utility server.
    pub fallback_export_limit_w: u32,
    /// How fast setpoints may rise, in percent of rated power per second, when the
    /// utility's control sets no ramp. Reductions are never ramped. Default 10 %/s.
    pub ramp_up_pct_per_s: f64,
    /// The inverters' response to a power-limit change as a first-order time constant τ
    /// (s): a cut larger than the site's excess is commanded for one cycle so their output
    /// reaches the limit within that cycle instead of after about 3 τ
    /// (`control::law`, step 3). 0 (the default) sends the plain target; 0..=10.
    pub inverter_response_s: f64,
    /// How often the site meter is read, ms, as configured (100..=`cycle_s`); `None`:
    /// chosen from the meter's bus ([`Config::meter_period_ms`]). Between cycles a
    /// reading over the export limit is fed forward at once (`control::law`).
    pub meter_period_ms: Option<u32>,
}

/// The whole of `/etc/config/csipd`, validated. Each part has its documented defaults
/// filled in. Use [`Config::location`] to point messages at the line an option is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from (as named to [`super::load`]).
    pub file: String,
    pub main: MainConfig,
    pub server: ServerConfig,
    pub limits: FixedLimits,
    pub tariffs: Vec<TariffWindow>,
    pub price: PriceConfig,
    pub devices: Vec<DeviceConfig>,
    pub control: ControlConfig,
    /// `config mqtt`: publishing to an MQTT broker (off by default).
    pub mqtt: MqttConfig,
    /// (section address, option name) -> position of the option's first value.
    locations: BTreeMap<(String, String), Pos>,
    /// section address -> position of its `config` line.
    section_locations: BTreeMap<String, Pos>,
}

impl Config {
    /// The devices the controller drives (inverters and storage), enabled, in config
    /// order.
    pub fn controlled_devices(&self) -> impl Iterator<Item = &DeviceConfig> {
        self.devices
            .iter()
            .filter(|d| d.enabled && matches!(d.role, DeviceRole::Inverter | DeviceRole::Storage))
    }

    /// The enabled site meter, if any (validation allows at most one).
    /// How often the site meter is read, ms: `meter_period_ms` when set, else from its
    /// bus: over TCP [`TCP_METER_PERIOD_MS`] (or the cycle, if shorter); on a serial line
    /// as often as the line carries besides the other devices on it
    /// ([`rtu_meter_period_ms`]); once a cycle for anything else.
    pub fn meter_period_ms(&self) -> u32 {
        let cycle_ms = (self.control.cycle_s * 1000.0).round().max(1.0);
        if let Some(ms) = self.control.meter_period_ms {
            return ms.min(cycle_ms as u32);
        }
        match self.site_meter().map(|m| &m.transport) {
            Some(Transport::Tcp { .. }) => TCP_METER_PERIOD_MS.min(cycle_ms as u32),
            Some(Transport::Rtu { .. }) => match meter_bus_airtime_ms(&self.devices) {
                Some((meter_ms, others_ms)) => rtu_meter_period_ms(cycle_ms, meter_ms, others_ms),
                None => cycle_ms as u32,
            },
            _ => cycle_ms as u32,
        }
    }

    /// `control.fallback_export_limit_w` on a site with a utility server configured
    /// (`dcap_url` or `server_url`); `None` on an owner-only site, where nothing is
    /// waited for.
    pub fn fallback_export_limit_w(&self) -> Option<u32> {
        self.server
            .utility_url()
            .map(|_| self.control.fallback_export_limit_w)
    }

    pub fn site_meter(&self) -> Option<&DeviceConfig> {
        self.devices
            .iter()
            .find(|d| d.enabled && d.role == DeviceRole::Meter)
    }

    /// Where `option` of section `section` (its name, or `@type[N]`) was set, if it was.
    /// Example: `config.location("utility", "cert")` -> `/etc/config/csipd:12`.
    pub fn location(&self, section: &str, option: &str) -> Option<SourceLocation> {
        let pos = self
            .locations
            .get(&(section.to_string(), option.to_string()))?;
        Some(self.at(*pos))
    }

    /// Where section `section` (its name, or `@type[N]`) starts, if present.
    pub fn section_location(&self, section: &str) -> Option<SourceLocation> {
        let pos = self.section_locations.get(section)?;
        Some(self.at(*pos))
    }

    /// Location of `server 'utility'`'s `cert` option (for certificate expiry messages).
    pub fn cert_location(&self) -> Option<SourceLocation> {
        self.location(SERVER_SECTION, "cert")
    }

    fn at(&self, pos: Pos) -> SourceLocation {
        SourceLocation {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
        }
    }
}

/// The address of the server section that [`Config::location`] uses for `server`
/// options (whatever name the file gave it, locations are recorded under this one).
pub const SERVER_SECTION: &str = "utility";

/// Per section type: the address [`Config::location`] records it under when it is a
/// singleton, and its known options.
const MAIN_OPTIONS: &[&str] = &[
    "log_level",
    "data_dir",
    "telemetry_dir",
    "status_listen",
    "status_allow_remote",
    "timezone",
];
const SERVER_OPTIONS: &[&str] = &[
    "dcap_url",
    "server_url",
    "cert",
    "key",
    "ca",
    "nmi",
    "pen",
    "inband_registration",
    "registration_pin",
    "profile",
    "csipaus_namespace",
    "tls_insecure_lab",
    "allow_plain_http",
    "schema_2018",
    "notification_listen",
    "notification_url",
];
const LIMITS_OPTIONS: &[&str] = &[
    "export_limit_w",
    "import_limit_w",
    "generation_limit_w",
    "load_limit_w",
    "connect",
];
const TARIFF_OPTIONS: &[&str] = &["start", "end", "days", "export_limit_w", "enabled"];
const PRICE_OPTIONS: &[&str] = &[
    "enabled",
    "source",
    "url",
    "site_id",
    "token",
    "poll_interval_s",
    "max_age_s",
    "utility_price_export",
];
const DEVICE_OPTIONS: &[&str] = &[
    "role",
    "transport",
    "host",
    "port",
    "path",
    "baud",
    "parity",
    "stop_bits",
    "unit_id",
    "sunspec_base",
    "chain_device",
    "power_control",
    "password",
    "password_file",
    "fingerprint",
    "rated_w",
    "capacity_wh",
    "timeout_ms",
    "enabled",
];
const CONTROL_OPTIONS: &[&str] = &[
    "cycle_s",
    "meter_stale_s",
    "failsafe_export_limit_w",
    "fallback_export_limit_w",
    "ramp_up_pct_per_s",
    "inverter_response_s",
    "meter_period_ms",
];

/// Every section type csipd knows: (section type, singleton address, options). The
/// validator warns about anything else; the LuCI settings test checks against it.
pub const SECTION_TYPES: &[(&str, Option<&str>, &[&str])] = &[
    ("csipd", Some("main"), MAIN_OPTIONS),
    ("server", Some(SERVER_SECTION), SERVER_OPTIONS),
    ("limits", Some("fixed"), LIMITS_OPTIONS),
    ("tariff", None, TARIFF_OPTIONS),
    ("price", Some("feed_in"), PRICE_OPTIONS),
    ("device", None, DEVICE_OPTIONS),
    ("control", Some("site"), CONTROL_OPTIONS),
    ("mqtt", Some(MQTT_SECTION), mqtt::MQTT_OPTIONS),
];

/// The option meant by a name other Modbus tools use (pymodbus, Home Assistant,
/// inverter manuals), where the closest spelling would point elsewhere ('device' is
/// nearer 'parity' than 'path').
fn known_alias(section_type: &str, name: &str) -> Option<&'static str> {
    if section_type != "device" {
        return None;
    }
    match name {
        "device" | "tty" | "serial" | "serial_port" | "port_path" | "dev" => Some("path"),
        "baudrate" | "baud_rate" | "speed" => Some("baud"),
        "ip" | "ip_address" | "ipaddr" | "address" | "hostname" => Some("host"),
        "slave" | "slave_id" | "unitid" | "unit" | "modbus_id" | "device_id" => Some("unit_id"),
        _ => None,
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .min_by_key(|c| (edit_distance(word, c), *c))
}

/// Collects diagnostics and option locations while the sections are read.
struct Checker<'a> {
    file: &'a str,
    diagnostics: Vec<Diagnostic>,
    locations: BTreeMap<(String, String), Pos>,
    section_locations: BTreeMap<String, Pos>,
}

impl Checker<'_> {
    fn push(&mut self, severity: Severity, pos: Pos, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            message,
        });
    }

    /// Remembers where a section starts, under `address` and under its own address.
    fn record_section(&mut self, section: &Section, address: &str) {
        self.section_locations
            .insert(address.to_string(), section.pos);
        self.section_locations
            .insert(section.address(), section.pos);
    }

    fn error(&mut self, pos: Pos, message: String) {
        self.push(Severity::Error, pos, message);
    }

    fn warning(&mut self, pos: Pos, message: String) {
        self.push(Severity::Warning, pos, message);
    }
}

/// Reads the options of one section, recording locations and problems.
struct SectionReader<'s, 'c, 'f> {
    section: &'s Section,
    /// The address locations are recorded under.
    address: String,
    checker: &'c mut Checker<'f>,
}

impl SectionReader<'_, '_, '_> {
    /// How messages name this section: `option 'x' of server 'utility'`.
    fn describe(&self) -> String {
        match &self.section.name {
            Some(name) => format!("{} '{}'", self.section.section_type, name),
            None => format!(
                "{} section {}",
                self.section.section_type,
                self.section.address()
            ),
        }
    }

    /// The single value of `name`, with its position; a `list` is an error.
    fn single(&mut self, name: &str) -> Option<(String, Pos)> {
        let option: &UciOption = self.section.get(name)?;
        let first = option.values.first()?;
        self.checker
            .locations
            .insert((self.address.clone(), name.to_string()), first.pos);
        if option.kind == OptionKind::List {
            let message = format!(
                "'{name}' in {} takes one value; write 'option {name} ...', not 'list'",
                self.describe()
            );
            self.checker.error(option.pos, message);
            return None;
        }
        Some((first.text.clone(), first.pos))
    }

    /// A non-empty string value (an empty one counts as unset).
    fn string(&mut self, name: &str) -> Option<String> {
        let (text, _) = self.single(name)?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        let Some((text, pos)) = self.single(name) else {
            return default;
        };
        // The spellings libuci users write (uci_to_bool in OpenWrt's shell functions).
        match text.to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" | "enabled" => true,
            "0" | "no" | "off" | "false" | "disabled" => false,
            _ => {
                let message = format!(
                    "option '{name}' must be a boolean (1/0, yes/no, on/off, true/false), got \
                     \"{text}\""
                );
                self.checker.error(pos, message);
                default
            }
        }
    }

    /// A whole number in `min..=max`; `what` says what the unit is (e.g. "watts").
    fn uint(&mut self, name: &str, what: &str, min: u64, max: u64) -> Option<u64> {
        let (text, pos) = self.single(name)?;
        let trimmed = text.trim();
        let parsed = if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
            trimmed.parse::<u64>().ok()
        } else {
            None
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(_) => {
                let message = format!(
                    "option '{name}' must be between {min} and {max} {what}, got \"{text}\""
                );
                self.checker.error(pos, message);
                None
            }
            None => {
                let message = {
                    // `what` is a unit ("watts") or, in parentheses, what the number is.
                    let of = if what.starts_with('(') { "" } else { "of " };
                    format!("option '{name}' must be a whole number {of}{what}, got \"{text}\"")
                };
                self.checker.error(pos, message);
                None
            }
        }
    }

    fn watts(&mut self, name: &str) -> Option<u32> {
        // Up to 100 MW: far above any site csipd runs on, so anything larger is a typo.
        self.uint(name, "watts", 0, 100_000_000)
            .and_then(|n| u32::try_from(n).ok())
    }

    /// A decimal number in `min..=max`.
    fn decimal(&mut self, name: &str, what: &str, min: f64, max: f64) -> Option<f64> {
        let (text, pos) = self.single(name)?;
        let trimmed = text.trim();
        let looks_decimal = !trimmed.is_empty()
            && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.')
            && trimmed.chars().filter(|c| *c == '.').count() <= 1
            && trimmed.chars().any(|c| c.is_ascii_digit());
        match trimmed.parse::<f64>().ok().filter(|_| looks_decimal) {
            Some(n) if n >= min && n <= max => Some(n),
            Some(_) => {
                let message = format!(
                    "option '{name}' must be between {min} and {max} {what}, got \"{text}\""
                );
                self.checker.error(pos, message);
                None
            }
            None => {
                let message = format!("option '{name}' must be a number of {what}, got \"{text}\"");
                self.checker.error(pos, message);
                None
            }
        }
    }

    /// One of `choices` (matched exactly, case-insensitively).
    fn choice<T: Copy>(&mut self, name: &str, choices: &[(&str, T)]) -> Option<T> {
        let (text, pos) = self.single(name)?;
        let lower = text.trim().to_ascii_lowercase();
        if let Some((_, value)) = choices.iter().find(|(c, _)| *c == lower) {
            return Some(*value);
        }
        let names: Vec<String> = choices.iter().map(|(c, _)| format!("'{c}'")).collect();
        let message = format!(
            "option '{name}' must be one of {}, got \"{text}\"",
            names.join(", ")
        );
        self.checker.error(pos, message);
        None
    }

    /// The position of `name`, or of the section line if it is not set.
    fn pos_of(&self, name: &str) -> Pos {
        self.section
            .get(name)
            .and_then(|o| o.values.first())
            .map_or(self.section.pos, |v| v.pos)
    }

    fn is_set(&self, name: &str) -> bool {
        self.section.get(name).is_some()
    }

    fn absolute_path(&mut self, name: &str, default: &str) -> String {
        match self.string(name) {
            Some(path) if path.starts_with('/') => path,
            Some(path) => {
                let pos = self.pos_of(name);
                let message = format!("option '{name}' must be an absolute path, got \"{path}\"");
                self.checker.error(pos, message);
                default.to_string()
            }
            None => default.to_string(),
        }
    }
}

/// Parses `HH:MM` (00:00..=24:00) into minutes after midnight.
fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    if !h.chars().chain(m.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= 24 * 60).then_some(minutes)
}

/// Checks a `dcap_url`/`url` with the `url` crate (WHATWG parsing, the same parser
/// `http` uses for the server URL): http or https, a host, a port in 1..=65535, no
/// spaces. Returns the scheme.
fn check_url(text: &str) -> Result<&'static str, String> {
    let not_a_url = || format!("\"{text}\" is not a URL; expected https://host[:port]/path");
    if text.chars().any(char::is_whitespace) {
        return Err(format!("\"{text}\" contains a space"));
    }
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(url::ParseError::InvalidPort) => {
            let authority = text.split_once("://").map_or("", |(_, rest)| {
                rest.split(['/', '?', '#']).next().unwrap_or("")
            });
            let port = authority.rsplit_once(':').map_or("", |(_, p)| p);
            return Err(format!("\"{text}\" has an invalid port '{port}'"));
        }
        Err(url::ParseError::EmptyHost) => {
            return Err(format!(
                "\"{text}\" has no host; expected https://host[:port]/path"
            ));
        }
        Err(_) => return Err(not_a_url()),
    };
    let scheme = match url.scheme() {
        "https" => "https",
        "http" => "http",
        _ => return Err(not_a_url()),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "\"{text}\" has no host; expected https://host[:port]/path"
        ));
    }
    if url.port() == Some(0) {
        return Err(format!("\"{text}\" has an invalid port '0'"));
    }
    Ok(scheme)
}

/// Checks a `server_url`: what [`check_url`] checks, plus https (http only with
/// `allow_plain_http`) and nothing after the origin (the DeviceCapability path comes
/// from `/.well-known/csipaus`). Returns the scheme.
fn check_server_url(text: &str, allow_plain_http: bool) -> Result<&'static str, String> {
    let scheme = check_url(text).map_err(|e| e.replace("[:port]/path", "[:port]"))?;
    if scheme == "http" && !allow_plain_http {
        return Err(format!(
            "\"{text}\" uses plain http; utilities require https with a client certificate \
             (set option allow_plain_http '1' only for a lab server)"
        ));
    }
    let rest = text.split_once("://").map_or("", |(_, rest)| rest);
    let after_authority = rest.find(['/', '?', '#']).map_or("", |i| &rest[i..]);
    if !after_authority.is_empty() && after_authority != "/" {
        return Err(format!(
            "\"{text}\" has a path; expected https://host[:port] only (csipd finds the \
             DeviceCapability through /.well-known/csipaus; for a known DeviceCapability \
             URL set option dcap_url instead)"
        ));
    }
    Ok(scheme)
}

/// Builds the typed configuration from a parsed file. Never fails: problems are
/// returned as diagnostics, and the `Config` holds defaults wherever a value was bad.
/// Callers must not use the `Config` if any diagnostic is an error.
pub fn build(file: &UciFile, file_name: &str) -> (Config, Vec<Diagnostic>) {
    let mut checker = Checker {
        file: file_name,
        diagnostics: Vec::new(),
        locations: BTreeMap::new(),
        section_locations: BTreeMap::new(),
    };
    if let Some(package) = &file.package {
        if package.text != "csipd" {
            checker.warning(
                package.pos,
                format!(
                    "package '{}' is not 'csipd'; this file is read as csipd's configuration",
                    package.text
                ),
            );
        }
    }

    // Which section of each singleton type is the one used; unknown types; unknown options.
    let mut singletons: BTreeMap<&str, &Section> = BTreeMap::new();
    for section in &file.sections {
        let Some((section_type, singleton, options)) = SECTION_TYPES
            .iter()
            .find(|(t, _, _)| *t == section.section_type)
        else {
            let hint = closest(
                &section.section_type,
                SECTION_TYPES.iter().map(|(t, _, _)| *t),
            )
            .unwrap_or("csipd");
            checker.warning(
                section.pos,
                format!(
                    "unknown section type '{}' (ignored); did you mean '{hint}'?",
                    section.section_type
                ),
            );
            continue;
        };
        for option in &section.options {
            if !options.contains(&option.name.as_str()) {
                let hint = known_alias(section_type, &option.name)
                    .or_else(|| closest(&option.name, options.iter().copied()))
                    .unwrap_or_default();
                checker.warning(
                    option.pos,
                    format!(
                        "unknown option '{}' in {} section (ignored); did you mean '{hint}'?",
                        option.name, section_type
                    ),
                );
            }
        }
        if let Some(expected_name) = singleton {
            if let Some(first) = singletons.get(section_type) {
                checker.error(
                    section.pos,
                    format!(
                        "a second '{section_type}' section; only one is allowed (the first is \
                         on line {})",
                        first.pos.line
                    ),
                );
                continue;
            }
            if let Some(name) = &section.name {
                if name != expected_name {
                    checker.warning(
                        section.pos,
                        format!(
                            "the {section_type} section is normally named '{expected_name}', \
                             not '{name}' (read anyway)"
                        ),
                    );
                }
            }
            singletons.insert(section_type, section);
        }
    }

    for (section_type, address, _) in SECTION_TYPES {
        if let (Some(section), Some(address)) = (singletons.get(section_type), address) {
            checker.record_section(section, address);
        }
    }
    let main = read_main(&mut checker, singletons.get("csipd").copied());
    let server = read_server(&mut checker, singletons.get("server").copied());
    let limits = read_limits(&mut checker, singletons.get("limits").copied());
    let price = read_price(&mut checker, singletons.get("price").copied(), &server);
    let control = read_control(&mut checker, singletons.get("control").copied(), &server);
    let mqtt = mqtt::read_mqtt(&mut checker, singletons.get("mqtt").copied());

    let mut tariffs = Vec::new();
    for section in file.sections_of("tariff") {
        checker.record_section(section, &section.address());
        if let Some(t) = read_tariff(&mut checker, section) {
            tariffs.push(t);
        }
    }
    let mut devices = Vec::new();
    for section in file.sections_of("device") {
        checker.record_section(section, &section.address());
        if let Some(d) = read_device(&mut checker, section) {
            devices.push(d);
        }
    }
    check_devices(
        &mut checker,
        file,
        &devices,
        control.failsafe_export_limit_w,
    );
    check_meter_period(
        &mut checker,
        singletons.get("control").copied(),
        &control,
        &devices,
    );
    check_storage_for_limits(
        &mut checker,
        singletons.get("limits").copied(),
        &limits,
        &devices,
    );

    // Keep file order so the CLI prints problems top to bottom.
    checker
        .diagnostics
        .sort_by_key(|d| (d.line, d.col, d.severity));
    let config = Config {
        file: file_name.to_string(),
        main,
        server,
        limits,
        tariffs,
        price,
        devices,
        control,
        mqtt,
        locations: checker.locations,
        section_locations: checker.section_locations,
    };
    (config, checker.diagnostics)
}

/// A reader for a singleton section (`address` is its canonical name).
fn singleton_reader<'s, 'c, 'f>(
    checker: &'c mut Checker<'f>,
    section: &'s Section,
    address: &str,
) -> SectionReader<'s, 'c, 'f> {
    SectionReader {
        section,
        address: address.to_string(),
        checker,
    }
}

/// Stands in for an absent singleton section: no options, messages point at line 1.
fn empty_section(section_type: &str, name: &str) -> Section {
    Section {
        section_type: section_type.to_string(),
        name: Some(name.to_string()),
        pos: Pos { line: 1, col: 1 },
        type_index: 0,
        options: Vec::new(),
    }
}

fn read_main(checker: &mut Checker<'_>, section: Option<&Section>) -> MainConfig {
    let empty = empty_section("csipd", "main");
    let section = section.unwrap_or(&empty);
    let mut r = singleton_reader(checker, section, "main");
    let log_level = r
        .choice(
            "log_level",
            &[
                ("off", LogLevel::Off),
                ("error", LogLevel::Error),
                ("warn", LogLevel::Warn),
                ("warning", LogLevel::Warn),
                ("info", LogLevel::Info),
                ("debug", LogLevel::Debug),
                ("trace", LogLevel::Trace),
            ],
        )
        .unwrap_or(LogLevel::Info);
    let data_dir = r.absolute_path("data_dir", "/etc/csipd");
    let telemetry_dir = r.absolute_path("telemetry_dir", "/tmp/csipd");
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    let status_listen = match r.string("status_listen") {
        None => default_listen,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                let pos = r.pos_of("status_listen");
                r.checker.error(
                    pos,
                    format!(
                        "option 'status_listen' must be an address and port such as \
                         127.0.0.1:8080 or [::1]:8080, got \"{text}\""
                    ),
                );
                default_listen
            }
        },
    };
    let status_allow_remote = r.bool("status_allow_remote", false);
    if !status_listen.ip().is_loopback() && !status_allow_remote {
        let pos = r.pos_of("status_listen");
        r.checker.error(
            pos,
            format!(
                "status_listen {status_listen} is reachable from the network; set option \
                 status_allow_remote '1' to allow that, or use 127.0.0.1"
            ),
        );
    }
    let timezone = match r.string("timezone") {
        None => None,
        // A valid POSIX string is kept as written ("UTC" is both a zone name and a
        // POSIX string: the runtime must see what the owner wrote).
        Some(tz) if crate::control::PosixTz::parse(&tz).is_ok() => Some(tz),
        // A zone name as OpenWrt's System page writes it: read as its POSIX rule.
        Some(tz) if super::zonenames::posix_tz(&tz).is_some() => {
            super::zonenames::posix_tz(&tz).map(str::to_string)
        }
        Some(tz) => {
            // The one POSIX TZ parser: what check-config accepts is what the runtime reads.
            if let Err(why) = crate::control::PosixTz::parse(&tz).map_err(|e| e.message) {
                let pos = r.pos_of("timezone");
                // A zone name has a '/' in it; a POSIX string only in its rules (after
                // the first ',', as in M4.1.0/3), and gets no zone-name hint.
                let hint = if tz.split(',').next().is_some_and(|zone| zone.contains('/')) {
                    " (that looks like a zone name csipd does not know; use the POSIX form \
                     from /etc/TZ, e.g. ACST-9:30ACDT,M10.1.0,M4.1.0/3 for Australia/Adelaide)"
                } else {
                    ""
                };
                r.checker.error(
                    pos,
                    format!("option 'timezone' \"{tz}\" is not a POSIX TZ string: {why}{hint}"),
                );
                None
            } else {
                Some(tz)
            }
        }
    };
    MainConfig {
        log_level,
        data_dir,
        telemetry_dir,
        status_listen,
        status_allow_remote,
        timezone,
    }
}

fn read_server(checker: &mut Checker<'_>, section: Option<&Section>) -> ServerConfig {
    let empty = empty_section("server", SERVER_SECTION);
    let present = section.is_some();
    let section = section.unwrap_or(&empty);
    let mut r = singleton_reader(checker, section, SERVER_SECTION);
    let allow_plain_http = r.bool("allow_plain_http", false);
    let tls_insecure_lab = r.bool("tls_insecure_lab", false);
    let mut dcap_url = r.string("dcap_url");
    let mut scheme = None;
    if let Some(url) = &dcap_url {
        let pos = r.pos_of("dcap_url");
        match check_url(url) {
            Ok("http") if !allow_plain_http => {
                r.checker.error(
                    pos,
                    "dcap_url uses plain http; utilities require https with a client \
                     certificate (set option allow_plain_http '1' only for a lab server)"
                        .to_string(),
                );
            }
            Ok("http") => {
                r.checker.warning(
                    pos,
                    "dcap_url uses plain http (allow_plain_http is set): no encryption and no \
                     server authentication; lab use only"
                        .to_string(),
                );
                scheme = Some("http");
            }
            Ok(s) => scheme = Some(s),
            Err(why) => r.checker.error(pos, format!("option 'dcap_url': {why}")),
        }
        if scheme.is_none() {
            dcap_url = None;
        }
    }
    let mut server_url = r.string("server_url");
    if let Some(url) = &server_url {
        let pos = r.pos_of("server_url");
        let checked = check_server_url(url, allow_plain_http);
        let usable = checked.is_ok() && !r.is_set("dcap_url");
        match checked {
            Err(why) => r.checker.error(pos, format!("option 'server_url': {why}")),
            Ok(_) if r.is_set("dcap_url") => r.checker.warning(
                pos,
                "server_url is ignored because dcap_url is set: csipd reads the \
                 DeviceCapability at dcap_url and skips /.well-known/csipaus service \
                 discovery (remove dcap_url to discover)"
                    .to_string(),
            ),
            Ok(s) => {
                if s == "http" {
                    r.checker.warning(
                        pos,
                        "server_url uses plain http (allow_plain_http is set): no encryption \
                         and no server authentication; lab use only"
                            .to_string(),
                    );
                }
                scheme = Some(s);
            }
        }
        if !usable {
            server_url = None;
        }
    }
    if !r.is_set("dcap_url") && !r.is_set("server_url") {
        let pos = r.pos_of("dcap_url");
        let where_ = if present {
            "server section"
        } else {
            "file (no server section)"
        };
        r.checker.warning(
            pos,
            format!(
                "no dcap_url (nor server_url) in the {where_}: csipd will not contact a \
                 utility server and applies only the local limits"
            ),
        );
    }
    let cert = r.string("cert");
    let key = r.string("key");
    let ca = r.string("ca");
    for (name, value) in [("cert", &cert), ("key", &key), ("ca", &ca)] {
        if let Some(path) = value {
            if !path.starts_with('/') {
                let pos = r.pos_of(name);
                r.checker.error(
                    pos,
                    format!("option '{name}' must be an absolute path, got \"{path}\""),
                );
            }
        }
    }
    if scheme == Some("https") {
        for (name, value) in [("cert", &cert), ("key", &key)] {
            if value.is_none() {
                let url_option = if dcap_url.is_some() {
                    "dcap_url"
                } else {
                    "server_url"
                };
                let pos = r.pos_of(url_option);
                r.checker.error(
                    pos,
                    format!(
                        "{url_option} is https but option '{name}' is not set; the utility \
                         server requires a client certificate and its key"
                    ),
                );
            }
        }
    }
    if tls_insecure_lab {
        let pos = r.pos_of("tls_insecure_lab");
        r.checker.warning(
            pos,
            "tls_insecure_lab is on: the server certificate is not verified; never use this \
             with a real utility"
                .to_string(),
        );
    }
    let nmi = r.string("nmi").map(|n| n.to_ascii_uppercase());
    if let Some(n) = &nmi {
        if !(n.len() == 10 || n.len() == 11) || !n.chars().all(|c| c.is_ascii_alphanumeric()) {
            let pos = r.pos_of("nmi");
            r.checker.error(
                pos,
                format!(
                    "option 'nmi' must be a National Metering Identifier of 10 letters and \
                     digits (11 with the checksum digit), got \"{n}\""
                ),
            );
        }
    }
    let pen = r
        .uint(
            "pen",
            "(an IANA Private Enterprise Number)",
            1,
            u64::from(u32::MAX),
        )
        .and_then(|n| u32::try_from(n).ok());
    let inband_registration = r.bool("inband_registration", false);
    let registration_pin = match r.single("registration_pin") {
        None => None,
        Some((text, pos)) => {
            let text = text.trim();
            if text.is_empty() {
                None
            } else if text.len() <= 6 && text.chars().all(|c| c.is_ascii_digit()) {
                text.parse::<u32>().ok()
            } else {
                r.checker.error(
                    pos,
                    format!(
                        "option 'registration_pin' must be the utility's PIN of up to 6 \
                         digits, got \"{text}\""
                    ),
                );
                None
            }
        }
    };
    if inband_registration && registration_pin.is_none() && !r.is_set("registration_pin") {
        let pos = r.pos_of("inband_registration");
        r.checker.error(
            pos,
            "inband_registration is on but registration_pin is not set; csipd checks the \
             server's Registration PIN against it"
                .to_string(),
        );
    }
    let profile = r
        .choice(
            "profile",
            &[("csip-aus", Profile::CsipAus), ("csip", Profile::Csip)],
        )
        .unwrap_or(Profile::CsipAus);
    let csipaus_namespace = r
        .choice(
            "csipaus_namespace",
            &[
                ("default", CsipAusNamespace::Default),
                ("v1.3", CsipAusNamespace::V1_3),
            ],
        )
        .unwrap_or(CsipAusNamespace::Default);
    let schema_2018 = r.bool("schema_2018", false);
    if schema_2018 && r.is_set("csipaus_namespace") {
        let pos = r.pos_of("csipaus_namespace");
        r.checker.warning(
            pos,
            "csipaus_namespace has no effect with schema_2018 '1': no csipaus element is \
             written"
                .to_string(),
        );
    }
    if schema_2018 && profile == Profile::CsipAus && nmi.is_some() {
        let pos = r.pos_of("schema_2018");
        r.checker.warning(
            pos,
            "schema_2018 '1': the nmi is not sent (the csipaus ConnectionPoint has no \
             IEEE 2030.5-2018 shape)"
                .to_string(),
        );
    }
    if profile == Profile::CsipAus && (dcap_url.is_some() || server_url.is_some()) && nmi.is_none()
    {
        let pos = r.pos_of("dcap_url");
        r.checker.warning(
            pos,
            "profile csip-aus without an nmi: the connection point id is not reported, and \
             utilities that match on it will not find this site"
                .to_string(),
        );
    }
    let notification_listen = match r.single("notification_listen") {
        None => None,
        Some((text, pos)) => match text.trim().parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                r.checker.error(
                    pos,
                    format!(
                        "option 'notification_listen' must be address:port (e.g.                          '0.0.0.0:8443'), got \"{text}\""
                    ),
                );
                None
            }
        },
    };
    let notification_url = match r.single("notification_url") {
        None => None,
        Some((text, pos)) => match url::Url::parse(text.trim()) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {
                Some(text.trim().to_string())
            }
            _ => {
                r.checker.error(
                    pos,
                    format!(
                        "option 'notification_url' must be an https URL the server can reach                          csipd's notification listener at, got \"{text}\""
                    ),
                );
                None
            }
        },
    };
    if notification_listen.is_some() != r.is_set("notification_url") {
        let (pos, message) = if notification_listen.is_some() {
            (
                r.pos_of("notification_listen"),
                "notification_listen is set but notification_url is not: the server needs the \
                 URL to send notifications to",
            )
        } else {
            (
                r.pos_of("notification_url"),
                "notification_url is set but notification_listen is not: nothing would receive \
                 the notifications",
            )
        };
        r.checker.error(pos, message.to_string());
    }
    if notification_listen.is_some() && (cert.is_none() || key.is_none() || ca.is_none()) {
        let pos = r.pos_of("notification_listen");
        r.checker.error(
            pos,
            "notification_listen needs options cert, key (the listener's identity) and ca (the \
             CA the utility's client certificate is checked against)"
                .to_string(),
        );
    }
    ServerConfig {
        dcap_url,
        server_url,
        cert,
        key,
        ca,
        nmi,
        pen,
        inband_registration,
        registration_pin,
        profile,
        csipaus_namespace,
        tls_insecure_lab,
        allow_plain_http,
        schema_2018,
        notification_listen,
        notification_url,
    }
}

fn read_limits(checker: &mut Checker<'_>, section: Option<&Section>) -> FixedLimits {
    let empty = empty_section("limits", "fixed");
    let section = section.unwrap_or(&empty);
    let mut r = singleton_reader(checker, section, "fixed");
    FixedLimits {
        export_limit_w: r.watts("export_limit_w"),
        import_limit_w: r.watts("import_limit_w"),
        generation_limit_w: r.watts("generation_limit_w"),
        load_limit_w: r.watts("load_limit_w"),
        connect: r.bool("connect", true),
    }
}

fn read_price(
    checker: &mut Checker<'_>,
    section: Option<&Section>,
    server: &ServerConfig,
) -> PriceConfig {
    let empty = empty_section("price", "feed_in");
    let section = section.unwrap_or(&empty);
    let mut r = singleton_reader(checker, section, "feed_in");
    let enabled = r.bool("enabled", false);
    let source = r
        .choice("source", &[("amber", PriceSource::Amber)])
        .unwrap_or(PriceSource::Amber);
    let default_url = "https://api.amber.com.au/v1";
    let url = match r.string("url") {
        None => default_url.to_string(),
        Some(url) => match check_url(&url) {
            Ok("https") => url,
            Ok(_) => {
                let pos = r.pos_of("url");
                r.checker.error(
                    pos,
                    "option 'url' must use https: the request carries the API token".to_string(),
                );
                default_url.to_string()
            }
            Err(why) => {
                let pos = r.pos_of("url");
                r.checker.error(pos, format!("option 'url': {why}"));
                default_url.to_string()
            }
        },
    };
    let site_id = r.string("site_id");
    let token = r.string("token");
    // Amber allows 50 requests a minute per token; prices change every 5 (or 30) minutes.
    let poll_interval_s = r
        .uint("poll_interval_s", "seconds", 30, 3600)
        .map_or(300, |n| n as u32);
    let max_age_s = r
        .uint("max_age_s", "seconds", 60, 86_400)
        .map_or(900, |n| n as u32);
    if max_age_s < poll_interval_s {
        let pos = r.pos_of("max_age_s");
        r.checker.error(
            pos,
            format!(
                "max_age_s ({max_age_s} s) is shorter than poll_interval_s ({poll_interval_s} \
                 s): every price would be too old before the next poll"
            ),
        );
    }
    let utility_price_export = r.bool("utility_price_export", false);
    if utility_price_export {
        let pos = r.pos_of("utility_price_export");
        if server.utility_url().is_none() {
            r.checker.error(
                pos,
                "option 'utility_price_export' takes the price from the utility's 2030.5 \
                 server, but none is configured (option dcap_url or server_url in config \
                 server 'utility')"
                    .to_string(),
            );
        }
        if !enabled {
            r.checker.warning(
                pos,
                "option 'utility_price_export' has no effect while option 'enabled' is 0"
                    .to_string(),
            );
        }
        for name in ["site_id", "token"] {
            if r.section.options.iter().any(|o| o.name == name) {
                let pos = r.pos_of(name);
                r.checker.warning(
                    pos,
                    format!(
                        "option '{name}' is not used: utility_price_export takes the \
                         feed-in price from the utility, not the price API"
                    ),
                );
            }
        }
    }
    if enabled && !utility_price_export {
        for (name, value) in [("site_id", &site_id), ("token", &token)] {
            if value.is_none() {
                let pos = r.pos_of("enabled");
                r.checker.error(
                    pos,
                    format!("price 'feed_in' is enabled but option '{name}' is not set"),
                );
            }
        }
    }
    PriceConfig {
        enabled,
        source,
        url,
        site_id,
        token,
        poll_interval_s,
        max_age_s,
        utility_price_export,
    }
}

fn read_control(
    checker: &mut Checker<'_>,
    section: Option<&Section>,
    server: &ServerConfig,
) -> ControlConfig {
    let empty = empty_section("control", "site");
    let section = section.unwrap_or(&empty);
    let mut r = singleton_reader(checker, section, "site");
    let cycle_read = r.decimal("cycle_s", "seconds", 0.1, 60.0);
    let stale_read = r.decimal("meter_stale_s", "seconds", 0.2, 3600.0);
    // A value written but refused has its own error; comparing against the default
    // in its place would name a number the installer never wrote.
    let both_usable = (cycle_read.is_some() || !r.is_set("cycle_s"))
        && (stale_read.is_some() || !r.is_set("meter_stale_s"));
    let cycle_s = cycle_read.unwrap_or(1.0);
    let meter_stale_s = stale_read.unwrap_or(10.0);
    if both_usable && meter_stale_s <= cycle_s {
        let pos = r.pos_of("meter_stale_s");
        r.checker.error(
            pos,
            format!(
                "meter_stale_s ({meter_stale_s} s) must be longer than cycle_s ({cycle_s} s), \
                 or every reading would count as stale"
            ),
        );
    }
    let failsafe_export_limit_w = r.watts("failsafe_export_limit_w").unwrap_or(0);
    let fallback_export_limit_w = r
        .watts("fallback_export_limit_w")
        .unwrap_or(failsafe_export_limit_w);
    if r.is_set("fallback_export_limit_w") && server.utility_url().is_none() {
        let pos = r.pos_of("fallback_export_limit_w");
        r.checker.warning(
            pos,
            "fallback_export_limit_w has no effect without a utility server (dcap_url or \
             server_url): it holds the export only while the utility's limit is not known"
                .to_string(),
        );
    }
    let ramp_up_pct_per_s = r
        .decimal("ramp_up_pct_per_s", "percent per second", 0.01, 100.0)
        .unwrap_or(10.0);
    let inverter_response_s = r
        .decimal("inverter_response_s", "seconds", 0.0, 10.0)
        .unwrap_or(0.0);
    let meter_period_ms = r
        .uint("meter_period_ms", "milliseconds", 100, 60_000)
        .map(|ms| ms as u32);
    if let Some(ms) =
        meter_period_ms.filter(|ms| cycle_read.is_some_and(|c| f64::from(*ms) > c * 1000.0))
    {
        let pos = r.pos_of("meter_period_ms");
        r.checker.error(
            pos,
            format!(
                "meter_period_ms ({ms} ms) must not be longer than cycle_s ({cycle_s} s): the \
                 meter is read at least once a cycle"
            ),
        );
    }
    ControlConfig {
        cycle_s,
        meter_stale_s,
        failsafe_export_limit_w,
        fallback_export_limit_w,
        ramp_up_pct_per_s,
        inverter_response_s,
        meter_period_ms: meter_period_ms.filter(|ms| f64::from(*ms) <= cycle_s * 1000.0),
    }
}

fn read_tariff(checker: &mut Checker<'_>, section: &Section) -> Option<TariffWindow> {
    let address = section.address();
    let mut r = SectionReader {
        section,
        address: address.clone(),
        checker,
    };
    let describe = r.describe();
    let mut ok = true;
    let time = |r: &mut SectionReader<'_, '_, '_>, name: &str| -> Option<u32> {
        match r.single(name) {
            None => {
                let pos = r.section.pos;
                r.checker.error(
                    pos,
                    format!("{describe} needs option '{name}' (local time HH:MM)"),
                );
                None
            }
            Some((text, pos)) => match parse_hhmm(&text) {
                Some(m) => Some(m),
                None => {
                    // 24:00 is only an end (the end of the day); a start says 00:00.
                    let last = if name == "end" { "24:00" } else { "23:59" };
                    let message = format!(
                        "option '{name}' must be a local time HH:MM between 00:00 and {last}, \
                         got \"{text}\""
                    );
                    r.checker.error(pos, message);
                    None
                }
            },
        }
    };
    let mut start_min = time(&mut r, "start");
    let end_min = time(&mut r, "end");
    if start_min == Some(24 * 60) {
        let pos = r.pos_of("start");
        r.checker
            .error(pos, "option 'start' cannot be 24:00; use 00:00".to_string());
        start_min = None;
    }
    if let (Some(s), Some(e)) = (start_min, end_min) {
        if s == e {
            let pos = r.pos_of("end");
            r.checker.error(
                pos,
                "option 'end' equals 'start': the window would be empty (for all day use \
                 00:00 to 24:00)"
                    .to_string(),
            );
            ok = false;
        }
    }
    let mut days = Vec::new();
    if let Some(option) = section.get("days") {
        r.checker
            .locations
            .insert((address.clone(), "days".to_string()), option.values[0].pos);
        for value in &option.values {
            // `option days 'mon tue'` is accepted as well as `list days`.
            for word in value.text.split_whitespace() {
                let lower = word.to_ascii_lowercase();
                match Weekday::NAMES.iter().position(|n| *n == lower) {
                    Some(i) => {
                        if !days.contains(&Weekday::ALL[i]) {
                            days.push(Weekday::ALL[i]);
                        }
                    }
                    None => {
                        r.checker.error(
                            value.pos,
                            format!(
                                "option 'days' has \"{word}\"; expected mon, tue, wed, thu, \
                                 fri, sat or sun"
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        days.sort();
        if days.is_empty() && ok {
            r.checker.error(
                option.values[0].pos,
                "option 'days' is empty; leave it out for every day".to_string(),
            );
            ok = false;
        }
    } else {
        days = Weekday::ALL.to_vec();
    }
    let export_limit_w = r.watts("export_limit_w");
    if !r.is_set("export_limit_w") {
        let pos = section.pos;
        r.checker
            .error(pos, format!("{describe} needs option 'export_limit_w'"));
    }
    let enabled = r.bool("enabled", true);
    Some(TariffWindow {
        name: address,
        start_min: start_min?,
        end_min: end_min?,
        days,
        export_limit_w: export_limit_w?,
        enabled,
    })
    .filter(|_| ok)
}

/// A device's `host` option: a host name or IP address alone. The forms installers
/// paste from elsewhere (`192.168.1.50:502`, `tcp://192.168.1.50`) are errors naming
/// the option to use, as csipd would otherwise try to resolve them as a name.
fn checked_host(r: &mut SectionReader<'_, '_, '_>) -> Option<String> {
    let host = r.string("host")?;
    let why = if host.contains("://") || host.contains('/') {
        Some("is a host name or IP address, not a URL".to_string())
    } else if host.chars().any(char::is_whitespace) {
        Some("must not contain spaces".to_string())
    } else {
        match host.rsplit_once(':') {
            // One ':' and digits after it: a port (an IPv6 address has several ':').
            Some((_, port))
                if host.matches(':').count() == 1
                    && !port.is_empty()
                    && port.chars().all(|c| c.is_ascii_digit()) =>
            {
                Some(format!("has a port; put {port} in option 'port'"))
            }
            _ => None,
        }
    };
    if let Some(why) = why {
        let pos = r.pos_of("host");
        r.checker
            .error(pos, format!("option 'host' \"{host}\" {why}"));
    }
    Some(host)
}

fn read_device(checker: &mut Checker<'_>, section: &Section) -> Option<DeviceConfig> {
    let address = section.address();
    let mut r = SectionReader {
        section,
        address: address.clone(),
        checker,
    };
    let describe = r.describe();
    let role = r.choice(
        "role",
        &[
            ("inverter", DeviceRole::Inverter),
            ("meter", DeviceRole::Meter),
            ("storage", DeviceRole::Storage),
        ],
    );
    if !r.is_set("role") {
        r.checker.error(
            section.pos,
            format!("{describe} needs option 'role' (inverter, meter or storage)"),
        );
    }
    let transport_kind = r.choice(
        "transport",
        &[("tcp", "tcp"), ("rtu", "rtu"), ("powerwall", "powerwall")],
    );
    if !r.is_set("transport") {
        r.checker.error(
            section.pos,
            format!("{describe} needs option 'transport' (tcp, rtu or powerwall)"),
        );
    }
    let powerwall_only: &[&str] = &["password", "password_file", "fingerprint"];
    if transport_kind != Some("powerwall") {
        for name in powerwall_only {
            if r.is_set(name) {
                let pos = r.pos_of(name);
                r.checker.warning(
                    pos,
                    format!("option '{name}' is for transport powerwall; ignored"),
                );
            }
        }
    }
    let tcp_only: &[&str] = &["host", "port"];
    let rtu_only: &[&str] = &["path", "baud", "parity", "stop_bits"];
    let transport = match transport_kind {
        Some("powerwall") => {
            let host = checked_host(&mut r);
            if host.is_none() {
                r.checker.error(
                    r.pos_of("transport"),
                    format!("{describe} uses transport powerwall but has no option 'host'"),
                );
            }
            let port = r
                .uint("port", "(TCP port)", 1, 65535)
                .map_or(443, |p| p as u16);
            let password = r.string("password");
            let password_file = r.string("password_file");
            if password.is_none() && password_file.is_none() {
                r.checker.error(
                    r.pos_of("transport"),
                    format!(
                        "{describe} uses transport powerwall but has neither option \
                         'password' nor 'password_file' (the gateway's customer password)"
                    ),
                );
            }
            let fingerprint = r.string("fingerprint");
            if let Some(f) = &fingerprint {
                let hex = crate::devices::powerwall::normalise_fingerprint(f);
                if hex.len() != 64 {
                    let pos = r.pos_of("fingerprint");
                    r.checker.error(
                        pos,
                        format!(
                            "option 'fingerprint' must be a SHA-256 fingerprint (64 hex \
                             digits, ':' allowed), got \"{f}\""
                        ),
                    );
                }
            }
            if role.is_some_and(|role| role != DeviceRole::Meter) {
                let pos = r.pos_of("transport");
                r.checker.error(
                    pos,
                    format!(
                        "{describe}: transport powerwall is a site meter: role must be 'meter'"
                    ),
                );
            }
            for name in [
                "path",
                "baud",
                "parity",
                "stop_bits",
                "unit_id",
                "sunspec_base",
            ] {
                if r.is_set(name) {
                    let pos = r.pos_of(name);
                    r.checker.warning(
                        pos,
                        format!("option '{name}' is for Modbus devices; ignored for powerwall"),
                    );
                }
            }
            host.map(|host| Transport::Powerwall {
                host,
                port,
                password,
                password_file,
                fingerprint,
            })
        }
        Some("tcp") => {
            for name in rtu_only {
                if r.is_set(name) {
                    let pos = r.pos_of(name);
                    r.checker.warning(
                        pos,
                        format!("option '{name}' is for transport rtu; ignored for tcp"),
                    );
                }
            }
            let host = checked_host(&mut r);
            if host.is_none() {
                r.checker.error(
                    r.pos_of("transport"),
                    format!("{describe} uses transport tcp but has no option 'host'"),
                );
            }
            let port = r
                .uint("port", "(TCP port)", 1, 65535)
                .map_or(502, |p| p as u16);
            host.map(|host| Transport::Tcp { host, port })
        }
        Some(_) => {
            for name in tcp_only {
                if r.is_set(name) {
                    let pos = r.pos_of(name);
                    r.checker.warning(
                        pos,
                        format!("option '{name}' is for transport tcp; ignored for rtu"),
                    );
                }
            }
            let path = r.string("path");
            match &path {
                None => r.checker.error(
                    r.pos_of("transport"),
                    format!(
                        "{describe} uses transport rtu but has no option 'path' (the serial \
                         port, e.g. /dev/ttyUSB0)"
                    ),
                ),
                Some(p) if !p.starts_with("/dev/") => {
                    let pos = r.pos_of("path");
                    r.checker.warning(
                        pos,
                        format!("option 'path' \"{p}\" is not under /dev; is it a serial port?"),
                    );
                }
                Some(_) => {}
            }
            // One rule with `csipd modbus-scan`'s `@BAUD` (devices::modbus::parse_baud).
            let baud = match r.single("baud") {
                Some((text, pos)) => match crate::devices::modbus::parse_baud(&text) {
                    Ok(b) => {
                        if let Some(warning) = crate::devices::modbus::baud_warning(b) {
                            r.checker.warning(pos, warning);
                        }
                        b
                    }
                    Err(e) => {
                        r.checker.error(pos, format!("option 'baud': {e}"));
                        9600
                    }
                },
                None => 9600,
            };
            let parity = r
                .choice(
                    "parity",
                    &[
                        ("none", Parity::None),
                        ("even", Parity::Even),
                        ("odd", Parity::Odd),
                    ],
                )
                .unwrap_or(Parity::None);
            let stop_bits = r
                .uint("stop_bits", "stop bits", 1, 2)
                .map_or(1, |n| n as u8);
            path.map(|path| Transport::Rtu {
                path,
                baud,
                parity,
                stop_bits,
            })
        }
        None => None,
    };
    let unit_id = r
        .uint("unit_id", "(Modbus unit id)", 1, 247)
        .map_or(1, |n| n as u8);
    let sunspec_base = r
        .uint("sunspec_base", "(register address)", 0, 65535)
        .map(|n| n as u16);
    let chain_device = r
        .uint(
            "chain_device",
            "(position of the device's model 1 in the chain)",
            1,
            16,
        )
        .map(|n| n as u8);
    let power_control = r
        .choice(
            "power_control",
            &[
                ("auto", crate::devices::PowerControl::Auto),
                ("sunspec", crate::devices::PowerControl::Sunspec),
                ("solaredge", crate::devices::PowerControl::Solaredge),
            ],
        )
        .unwrap_or_default();
    let rated_w = r.watts("rated_w");
    if rated_w == Some(0) {
        let pos = r.pos_of("rated_w");
        r.checker.error(
            pos,
            "option 'rated_w' must be more than 0 (leave it out to read it from the device)"
                .to_string(),
        );
    }
    let capacity_wh = r
        .uint("capacity_wh", "watt-hours", 1, 10_000_000)
        .and_then(|n| u32::try_from(n).ok());
    if capacity_wh.is_some() && role != Some(DeviceRole::Storage) {
        let pos = r.pos_of("capacity_wh");
        r.checker.warning(
            pos,
            "option 'capacity_wh' is for role 'storage' devices; it is ignored here".to_string(),
        );
    }
    let timeout_ms = r
        .uint("timeout_ms", "milliseconds", 50, 30_000)
        .map_or(1000, |n| n as u32);
    let enabled = r.bool("enabled", true);
    Some(DeviceConfig {
        name: address,
        role: role?,
        transport: transport?,
        unit_id,
        sunspec_base,
        chain_device,
        power_control,
        rated_w: rated_w.filter(|w| *w > 0),
        capacity_wh,
        timeout_ms,
        enabled,
    })
}

/// Import and load limits act through a battery's charge rate: without an enabled
/// storage device csipd cannot keep them, and an installer should hear it here.
fn check_storage_for_limits(
    checker: &mut Checker<'_>,
    section: Option<&Section>,
    limits: &FixedLimits,
    devices: &[DeviceConfig],
) {
    let has_storage = devices
        .iter()
        .any(|d| d.enabled && d.role == DeviceRole::Storage);
    let Some(section) = section.filter(|_| !has_storage) else {
        return;
    };
    for (name, value) in [
        ("import_limit_w", limits.import_limit_w),
        ("load_limit_w", limits.load_limit_w),
    ] {
        let pos = section
            .get(name)
            .and_then(|o| o.values.first())
            .map(|v| v.pos);
        if let (Some(pos), Some(_)) = (pos, value) {
            checker.warning(
                pos,
                format!(
                    "option '{name}' needs an enabled storage device (role 'storage', SunSpec \
                     model 124): csipd limits import and load through a battery's charge \
                     rate, and reports this limit as unsupported without one"
                ),
            );
        }
    }
}

/// Two devices on one bus and unit id pick the same SunSpec device of its chain: the
/// same `chain_device`, or both by role with the same kind of models (an inverter and a
/// storage inverter both take the chain's first inverter). A position on one and a role
/// on the other cannot be checked without the device; the runtime reports a wrong one.
fn same_chain_device(a: &DeviceConfig, b: &DeviceConfig) -> bool {
    let is_meter = |d: &DeviceConfig| d.role == DeviceRole::Meter;
    match (a.chain_device, b.chain_device) {
        (Some(x), Some(y)) => x == y,
        (None, None) => is_meter(a) == is_meter(b),
        _ => false,
    }
}

/// Checks across devices: two on the same address, and what is missing for control.
/// The site meter's period when `meter_period_ms` is not set, over Modbus TCP (ms): a
/// network link carries a 126-register read in a few ms, so this is about CPU, not the
/// link (two reads a second add about 0.05 s of CPU per 10 minutes on a router).
pub const TCP_METER_PERIOD_MS: u32 = 500;
/// What a device takes to start answering a Modbus RTU request, ms (SunSpec meters
/// and inverters seen in the field answer in 5-50 ms).
pub const RTU_TURNAROUND_MS: f64 = 20.0;
/// A meter read: one SunSpec meter model, the longest 211-214 (124 registers and the
/// 2-register header), in one exchange.
const METER_READ_REGISTERS: &[u32] = &[126];
/// An inverter's read each cycle: its measurement model (113: 60 + 2), 122 (44 + 2)
/// and 123 (24 + 2), an exchange each.
const INVERTER_READ_REGISTERS: &[u32] = &[62, 46, 26];
/// The share of a serial bus's time the reads may take: the rest is for setpoint
/// writes, their read-back, retries and the devices' own delays.
const RTU_BUS_SHARE: f64 = 0.5;

/// The time one Modbus RTU read of `registers` holding registers takes on a line of
/// `baud` with `bits_per_char` (start, 8 data, parity, stop bits: 10 for 8N1, 11 for
/// 8E1 or 8N2), ms: the 8-byte request and the `5 + 2·registers`-byte answer, each
/// followed by 3.5 characters of silence (the RTU frame gap), plus
/// [`RTU_TURNAROUND_MS`]. At 9600 baud 8N1 a 126-register meter read is about 320 ms.
pub fn rtu_read_ms(baud: u32, bits_per_char: u32, registers: u32) -> f64 {
    let char_ms = f64::from(bits_per_char) * 1000.0 / f64::from(baud.max(1));
    let chars = 8.0 + 3.5 + 5.0 + 2.0 * f64::from(registers) + 3.5;
    chars * char_ms + RTU_TURNAROUND_MS
}

/// How the site meter's bus can be scheduled: on a serial line, the airtime of one
/// meter read and of the other devices' reads on that line each cycle (ms). `None` for
/// a meter over TCP or the Powerwall's HTTPS (or no meter).
pub fn meter_bus_airtime_ms(devices: &[DeviceConfig]) -> Option<(f64, f64)> {
    let meter = devices
        .iter()
        .find(|d| d.enabled && d.role == DeviceRole::Meter)?;
    let Transport::Rtu {
        path,
        baud,
        parity,
        stop_bits,
    } = &meter.transport
    else {
        return None;
    };
    let bits = 1 + 8 + u32::from(*parity != Parity::None) + u32::from(*stop_bits);
    let read_ms = |regs: &[u32]| {
        regs.iter()
            .fold(0.0, |t, r| t + rtu_read_ms(*baud, bits, *r))
    };
    let others_ms: f64 = devices
        .iter()
        .filter(|d| d.enabled && !std::ptr::eq(*d, meter))
        .filter(|d| matches!(&d.transport, Transport::Rtu { path: p, .. } if p == path))
        .map(|d| match d.role {
            DeviceRole::Meter => read_ms(METER_READ_REGISTERS),
            _ => read_ms(INVERTER_READ_REGISTERS),
        })
        .sum();
    Some((read_ms(METER_READ_REGISTERS), others_ms))
}

/// The shortest meter period a serial line carries (ms), given the airtime of a meter
/// read and of the other devices' reads each cycle: the meter's `k` reads and the
/// others' must fit in [`RTU_BUS_SHARE`] of the cycle, at least one meter read a cycle.
pub fn rtu_meter_period_ms(cycle_ms: f64, meter_read_ms: f64, others_ms: f64) -> u32 {
    let reads = ((RTU_BUS_SHARE * cycle_ms - others_ms) / meter_read_ms)
        .floor()
        .max(1.0);
    // In steps of 10 ms, never below what one read takes.
    let period = (cycle_ms / reads)
        .max(meter_read_ms / RTU_BUS_SHARE)
        .min(cycle_ms);
    ((period / 10.0).ceil() * 10.0) as u32
}

/// A `meter_period_ms` the meter's serial line cannot carry is an error at its line.
fn check_meter_period(
    checker: &mut Checker<'_>,
    section: Option<&Section>,
    control: &ControlConfig,
    devices: &[DeviceConfig],
) {
    let (Some(section), Some(ms)) = (section, control.meter_period_ms) else {
        return;
    };
    let Some((meter_ms, others_ms)) = meter_bus_airtime_ms(devices) else {
        return;
    };
    let cycle_ms = control.cycle_s * 1000.0;
    let shortest = rtu_meter_period_ms(cycle_ms, meter_ms, others_ms);
    if ms >= shortest {
        return;
    }
    let pos = section
        .get("meter_period_ms")
        .and_then(|o| o.values.first())
        .map_or(section.pos, |v| v.pos);
    checker.error(
        pos,
        format!(
            "meter_period_ms ({ms} ms) is more than the meter's serial line carries: one \
             meter read takes about {meter_ms:.0} ms and the other devices on the line \
             {others_ms:.0} ms a cycle, so no less than {shortest} ms (or leave it unset)"
        ),
    );
}

/// `failsafe_export_limit_w` is what a site without a meter is held at (control::law).
fn check_devices(
    checker: &mut Checker<'_>,
    file: &UciFile,
    devices: &[DeviceConfig],
    failsafe_export_limit_w: u32,
) {
    let enabled: Vec<&DeviceConfig> = devices.iter().filter(|d| d.enabled).collect();
    for (i, a) in enabled.iter().enumerate() {
        for b in &enabled[..i] {
            let same_bus = match (&a.transport, &b.transport) {
                (Transport::Tcp { host: h1, port: p1 }, Transport::Tcp { host: h2, port: p2 }) => {
                    h1 == h2 && p1 == p2
                }
                (Transport::Rtu { path: p1, .. }, Transport::Rtu { path: p2, .. }) => p1 == p2,
                _ => false,
            };
            if same_bus && a.unit_id == b.unit_id && same_chain_device(a, b) {
                let pos = file.section(&a.name).map_or(Pos::default(), |s| s.pos);
                let other_line = file.section(&b.name).map_or(0, |s| s.pos.line);
                checker.error(
                    pos,
                    format!(
                        "device {} has the same bus and unit_id {} as device {} (line \
                         {other_line}); two devices may share a unit id only when they are \
                         different SunSpec devices of its chain (a meter and an inverter, or \
                         different option 'chain_device')",
                        a.name, a.unit_id, b.name
                    ),
                );
            }
        }
    }
    let meters = enabled
        .iter()
        .filter(|d| d.role == DeviceRole::Meter)
        .count();
    if meters > 1 {
        let second = enabled
            .iter()
            .filter(|d| d.role == DeviceRole::Meter)
            .nth(1)
            .and_then(|d| file.section(&d.name))
            .map_or(Pos::default(), |s| s.pos);
        checker.error(
            second,
            "more than one enabled meter; csipd reads one site meter at the connection point"
                .to_string(),
        );
    }
    let has_device_sections = file.sections_of("device").next().is_some();
    if devices.len() == file.sections_of("device").count() {
        // Point at the first device section, or the top of the file if there is none.
        let pos = file
            .sections_of("device")
            .next()
            .map_or(Pos { line: 1, col: 1 }, |s| s.pos);
        if enabled.is_empty() {
            let why = if has_device_sections {
                "no enabled device"
            } else {
                "no device sections"
            };
            checker.warning(
                pos,
                format!("{why}: csipd can neither measure nor control the site"),
            );
        } else if meters == 0 {
            checker.warning(
                pos,
                format!(
                    "no enabled meter: csipd cannot measure the site's export or import at the \
                     connection point, so the inverters are held at the fail-safe export limit \
                     (failsafe_export_limit_w, {failsafe_export_limit_w} W)"
                ),
            );
        }
    }
}
