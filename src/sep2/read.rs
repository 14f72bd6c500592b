//! Tolerant reader: XML bytes → resource types.
//!
//! Elements are matched by namespace URI and local name (any prefix), elements in
//! foreign namespaces and unknown elements are skipped, hexBinary is accepted in either
//! case, and fields real servers omit get the defaults documented in `types`. A
//! problem is reported with the path of the element it was found in, e.g.
//! `DERControlList/DERControl[2]/interval/start: expected an integer, got "abc"`.

use std::fmt;

use super::dom::{self, Node};
use super::types::*;

/// Why a document could not be read: where (element path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// Element path from the root, innermost last (built while unwinding).
    path: Vec<String>,
    pub problem: String,
}

impl ReadError {
    pub fn new(problem: String) -> Self {
        ReadError {
            path: Vec::new(),
            problem,
        }
    }

    /// Prepends an element name to the path (called on the way out).
    fn within(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }

    /// The element path, e.g. `DERControlList/DERControl[2]/interval`.
    pub fn path(&self) -> String {
        let mut parts: Vec<&str> = self.path.iter().map(String::as_str).collect();
        parts.reverse();
        parts.join("/")
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.path(), self.problem)
        }
    }
}

impl std::error::Error for ReadError {}

/// A resource that can be read from a document whose root element is `ROOT`.
pub trait Readable: Sized {
    /// Local name of the root element.
    const ROOT: &'static str;
    #[doc(hidden)]
    fn from_node(node: &Node) -> Result<Self, ReadError>;
}

/// Reads a document of type `T` (e.g. `read::<DerControlList>(body)`).
/// The root element must be `T::ROOT` in the 2030.5 or a csipaus namespace.
pub fn read<T: Readable>(xml: &[u8]) -> Result<T, ReadError> {
    let root = dom::parse(xml)?;
    if !root.is_known() || root.name != T::ROOT {
        return Err(ReadError::new(format!(
            "expected a <{}> document, got <{}>{}",
            T::ROOT,
            root.name,
            if root.is_known() {
                ""
            } else {
                " in a foreign namespace"
            }
        )));
    }
    T::from_node(&root).map_err(|e| e.within(T::ROOT))
}

/// Text → value conversions for leaf elements and attributes.
trait FromText: Sized {
    const WHAT: &'static str;
    fn from_text(s: &str) -> Option<Self>;
}

macro_rules! from_text_int {
    ($($t:ty => $what:literal),*) => {$(
        impl FromText for $t {
            const WHAT: &'static str = $what;
            fn from_text(s: &str) -> Option<Self> {
                // XML Schema allows a leading '+'.
                let s = s.trim();
                s.strip_prefix('+').unwrap_or(s).parse().ok()
            }
        }
    )*};
}
from_text_int!(
    i8 => "an integer in -128..=127",
    i16 => "an integer in -32768..=32767",
    i32 => "a 32-bit integer",
    i64 => "an integer",
    u8 => "an integer in 0..=255",
    u16 => "an integer in 0..=65535",
    u32 => "an unsigned 32-bit integer",
    u64 => "an unsigned integer"
);

impl FromText for bool {
    const WHAT: &'static str = "a boolean (true/false/1/0)";
    fn from_text(s: &str) -> Option<Self> {
        match s.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        }
    }
}

impl FromText for String {
    const WHAT: &'static str = "text";
    fn from_text(s: &str) -> Option<Self> {
        Some(s.trim().to_string())
    }
}

/// hexBinary of up to `bytes` bytes, either case, as an integer.
fn hex_value(s: &str, bytes: usize) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > bytes * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn bad_value(what: &str, text: &str) -> String {
    let shown: String = text.chars().take(40).collect();
    let more = if text.chars().count() > 40 { "…" } else { "" };
    format!("expected {what}, got \"{shown}{more}\"")
}

fn leaf<T: FromText>(n: &Node) -> Result<T, ReadError> {
    T::from_text(&n.text)
        .ok_or_else(|| ReadError::new(bad_value(T::WHAT, &n.text)).within(n.name.clone()))
}

fn opt<T: FromText>(n: &Node, name: &str) -> Result<Option<T>, ReadError> {
    n.child(name).map(leaf).transpose()
}

fn req<T: FromText>(n: &Node, name: &str) -> Result<T, ReadError> {
    match n.child(name) {
        Some(c) => leaf(c),
        None => Err(missing(name)),
    }
}

fn missing(name: &str) -> ReadError {
    ReadError::new(format!("required element <{name}> is missing"))
}

fn opt_hex(n: &Node, name: &str, bytes: usize) -> Result<Option<u64>, ReadError> {
    match n.child(name) {
        None => Ok(None),
        Some(c) => hex_value(&c.text, bytes).map(Some).ok_or_else(|| {
            ReadError::new(bad_value(
                &format!("hexBinary of up to {bytes} bytes"),
                &c.text,
            ))
            .within(name)
        }),
    }
}

fn opt_hex8(n: &Node, name: &str) -> Result<Option<u8>, ReadError> {
    Ok(opt_hex(n, name, 1)?.map(|v| v as u8))
}
fn opt_hex16(n: &Node, name: &str) -> Result<Option<u16>, ReadError> {
    Ok(opt_hex(n, name, 2)?.map(|v| v as u16))
}
fn opt_hex32(n: &Node, name: &str) -> Result<Option<u32>, ReadError> {
    Ok(opt_hex(n, name, 4)?.map(|v| v as u32))
}

fn attr<T: FromText>(n: &Node, name: &str) -> Result<Option<T>, ReadError> {
    match n.attr(name) {
        None => Ok(None),
        Some(v) => T::from_text(v)
            .map(Some)
            .ok_or_else(|| ReadError::new(format!("attribute {name}: {}", bad_value(T::WHAT, v)))),
    }
}

fn attr_hex8(n: &Node, name: &str) -> Result<Option<u8>, ReadError> {
    match n.attr(name) {
        None => Ok(None),
        Some(v) => hex_value(v, 1).map(|v| Some(v as u8)).ok_or_else(|| {
            ReadError::new(format!(
                "attribute {name}: {}",
                bad_value("hexBinary of one byte", v)
            ))
        }),
    }
}

fn href(n: &Node) -> Option<String> {
    n.attr("href").map(str::to_string)
}

/// A nested structure read from one element.
trait FromElem: Sized {
    fn from_elem(n: &Node) -> Result<Self, ReadError>;
}

fn opt_elem<T: FromElem>(n: &Node, name: &str) -> Result<Option<T>, ReadError> {
    n.child(name)
        .map(|c| T::from_elem(c).map_err(|e| e.within(name)))
        .transpose()
}

fn req_elem<T: FromElem>(n: &Node, name: &str) -> Result<T, ReadError> {
    opt_elem(n, name)?.ok_or_else(|| missing(name))
}

fn many<T: FromElem>(n: &Node, name: &str) -> Result<Vec<T>, ReadError> {
    n.children_named(name)
        .enumerate()
        .map(|(i, c)| T::from_elem(c).map_err(|e| e.within(format!("{name}[{}]", i + 1))))
        .collect()
}

impl<T: Readable> FromElem for T {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        T::from_node(n)
    }
}

impl Readable for Link {
    const ROOT: &'static str = "Link";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        let href = n
            .attr("href")
            .ok_or_else(|| ReadError::new("link without href attribute".to_string()))?;
        Ok(Link {
            href: href.to_string(),
        })
    }
}

impl Readable for ListLink {
    const ROOT: &'static str = "ListLink";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(ListLink {
            href: Link::from_node(n)?.href,
            all: attr(n, "all")?,
        })
    }
}

/// Reads `value` × 10^`multiplier` pairs.
macro_rules! scaled {
    ($t:ty, $val:ident) => {
        impl FromElem for $t {
            fn from_elem(n: &Node) -> Result<Self, ReadError> {
                Ok(Self {
                    // A missing multiplier means 10^0.
                    multiplier: opt(n, "multiplier")?.unwrap_or(0),
                    $val: req(n, stringify!($val))?,
                })
            }
        }
    };
}
scaled!(ActivePower, value);
scaled!(ReactivePower, value);
scaled!(UnsignedScaled, value);
scaled!(PowerFactor, displacement);

impl FromElem for PowerFactorWithExcitation {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            displacement: req(n, "displacement")?,
            excitation: opt(n, "excitation")?.unwrap_or(false),
            multiplier: opt(n, "multiplier")?.unwrap_or(0),
        })
    }
}

impl FromElem for FixedVar {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            ref_type: req(n, "refType")?,
            value: req(n, "value")?,
        })
    }
}

impl FromElem for FreqDroop {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            db_of: req(n, "dBOF")?,
            db_uf: req(n, "dBUF")?,
            k_of: req(n, "kOF")?,
            k_uf: req(n, "kUF")?,
            open_loop_tms: req(n, "openLoopTms")?,
        })
    }
}

impl FromElem for DateTimeInterval {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            duration_s: req(n, "duration")?,
            start: req(n, "start")?,
        })
    }
}

impl<T: Readable> Readable for List<T>
where
    T: ListItem,
{
    const ROOT: &'static str = T::LIST;
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        let items: Vec<T> = many(n, T::ITEM)?;
        let count = items.len() as u32;
        Ok(List {
            href: href(n),
            // `all`/`results` are required; a server that omits them gets the count
            // of what it sent.
            all: attr(n, "all")?.unwrap_or(count),
            results: attr(n, "results")?.unwrap_or(count),
            subscribable: attr(n, "subscribable")?,
            poll_rate_s: attr(n, "pollRate")?,
            items,
        })
    }
}

/// A list item that could not be read, kept out of the list so its good siblings are
/// not lost with it. `mrid` and `reply_to` are what could still be read of it (a
/// DERControl with both is answered with a rejection, IEEE 2030.5 §12.1.3.3 Response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedItem {
    /// 1-based position of the item in the page.
    pub position: usize,
    /// The item's `<mRID>` text, if it has one.
    pub mrid: Option<String>,
    /// The item's `replyTo` attribute, if it has one.
    pub reply_to: Option<String>,
    /// Why it could not be read, with the element path (`DERControlList/DERControl[2]/…`).
    pub error: ReadError,
}

/// Reads a list page item by item: an item that fails to read is left out and reported
/// in the second value; the list's own attributes and the other items are kept. A
/// document that is not the list at all is still an error.
pub fn read_list<T>(xml: &[u8]) -> Result<(List<T>, Vec<SkippedItem>), ReadError>
where
    T: Readable + ListItem,
{
    let root = dom::parse(xml)?;
    if !root.is_known() || root.name != T::LIST {
        return Err(ReadError::new(format!(
            "expected a <{}> document, got <{}>",
            T::LIST,
            root.name
        )));
    }
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for (i, c) in root.children_named(T::ITEM).enumerate() {
        match T::from_node(c) {
            Ok(item) => items.push(item),
            Err(e) => skipped.push(SkippedItem {
                position: i + 1,
                mrid: c.child("mRID").map(|m| m.text.trim().to_string()),
                reply_to: c.attr("replyTo").map(str::to_string),
                error: e.within(format!("{}[{}]", T::ITEM, i + 1)).within(T::LIST),
            }),
        }
    }
    let count = (items.len() + skipped.len()) as u32;
    let within = |e: ReadError| e.within(T::LIST);
    let list = List {
        href: href(&root),
        all: attr(&root, "all").map_err(within)?.unwrap_or(count),
        results: attr(&root, "results").map_err(within)?.unwrap_or(count),
        subscribable: attr(&root, "subscribable").map_err(within)?,
        poll_rate_s: attr(&root, "pollRate").map_err(within)?,
        items,
    };
    Ok((list, skipped))
}

/// Names of a list resource and its items.
pub trait ListItem {
    const LIST: &'static str;
    const ITEM: &'static str;
}

macro_rules! list_item {
    ($($t:ty => $list:literal, $item:literal);* $(;)?) => {$(
        impl ListItem for $t {
            const LIST: &'static str = $list;
            const ITEM: &'static str = $item;
        }
    )*};
}
list_item!(
    EndDevice => "EndDeviceList", "EndDevice";
    FunctionSetAssignments => "FunctionSetAssignmentsList", "FunctionSetAssignments";
    DerProgram => "DERProgramList", "DERProgram";
    DerControl => "DERControlList", "DERControl";
    DerCurve => "DERCurveList", "DERCurve";
    Der => "DERList", "DER";
    MirrorUsagePoint => "MirrorUsagePointList", "MirrorUsagePoint";
    LogEvent => "LogEventList", "LogEvent";
    Subscription => "SubscriptionList", "Subscription";
    TariffProfile => "TariffProfileList", "TariffProfile";
    RateComponent => "RateComponentList", "RateComponent";
    TimeTariffInterval => "TimeTariffIntervalList", "TimeTariffInterval";
    ConsumptionTariffInterval => "ConsumptionTariffIntervalList", "ConsumptionTariffInterval";
);

impl Readable for DeviceCapability {
    const ROOT: &'static str = "DeviceCapability";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            poll_rate_s: attr(n, "pollRate")?,
            customer_account_list_link: opt_elem(n, "CustomerAccountListLink")?,
            demand_response_program_list_link: opt_elem(n, "DemandResponseProgramListLink")?,
            der_program_list_link: opt_elem(n, "DERProgramListLink")?,
            file_list_link: opt_elem(n, "FileListLink")?,
            messaging_program_list_link: opt_elem(n, "MessagingProgramListLink")?,
            prepayment_list_link: opt_elem(n, "PrepaymentListLink")?,
            response_set_list_link: opt_elem(n, "ResponseSetListLink")?,
            tariff_profile_list_link: opt_elem(n, "TariffProfileListLink")?,
            time_link: opt_elem(n, "TimeLink")?,
            usage_point_list_link: opt_elem(n, "UsagePointListLink")?,
            end_device_list_link: opt_elem(n, "EndDeviceListLink")?,
            mirror_usage_point_list_link: opt_elem(n, "MirrorUsagePointListLink")?,
            self_device_link: opt_elem(n, "SelfDeviceLink")?,
        })
    }
}

impl Readable for Time {
    const ROOT: &'static str = "Time";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            poll_rate_s: attr(n, "pollRate")?,
            current_time: req(n, "currentTime")?,
            dst_end_time: opt(n, "dstEndTime")?,
            dst_offset_s: opt(n, "dstOffset")?.unwrap_or(0),
            dst_start_time: opt(n, "dstStartTime")?,
            local_time: opt(n, "localTime")?,
            quality: opt(n, "quality")?,
            tz_offset_s: opt(n, "tzOffset")?.unwrap_or(0),
        })
    }
}

impl Readable for EndDevice {
    const ROOT: &'static str = "EndDevice";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        // Some servers spell the element `LFDI`.
        let lfdi = n
            .child("lFDI")
            .or_else(|| n.child("LFDI"))
            .map(|c| c.text.trim().to_ascii_uppercase());
        Ok(Self {
            href: href(n),
            subscribable: attr(n, "subscribable")?,
            configuration_link: opt_elem(n, "ConfigurationLink")?,
            der_list_link: opt_elem(n, "DERListLink")?,
            device_category: opt_hex32(n, "deviceCategory")?,
            device_information_link: opt_elem(n, "DeviceInformationLink")?,
            device_status_link: opt_elem(n, "DeviceStatusLink")?,
            file_status_link: opt_elem(n, "FileStatusLink")?,
            ip_interface_list_link: opt_elem(n, "IPInterfaceListLink")?,
            lfdi,
            load_shed_availability_list_link: opt_elem(n, "LoadShedAvailabilityListLink")?,
            log_event_list_link: opt_elem(n, "LogEventListLink")?,
            power_status_link: opt_elem(n, "PowerStatusLink")?,
            // Required by the schema; 0 (no SFDI) when a server leaves it out.
            sfdi: opt(n, "sFDI")?.unwrap_or(0),
            changed_time: opt(n, "changedTime")?.unwrap_or(0),
            enabled: opt(n, "enabled")?,
            flow_reservation_request_list_link: opt_elem(n, "FlowReservationRequestListLink")?,
            flow_reservation_response_list_link: opt_elem(n, "FlowReservationResponseListLink")?,
            function_set_assignments_list_link: opt_elem(n, "FunctionSetAssignmentsListLink")?,
            post_rate_s: opt(n, "postRate")?,
            registration_link: opt_elem(n, "RegistrationLink")?,
            subscription_list_link: opt_elem(n, "SubscriptionListLink")?,
            connection_point_link: opt_elem(n, "ConnectionPointLink")?,
        })
    }
}

impl Readable for Registration {
    const ROOT: &'static str = "Registration";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            poll_rate_s: attr(n, "pollRate")?,
            date_time_registered: opt(n, "dateTimeRegistered")?.unwrap_or(0),
            pin: req(n, "pIN")?,
        })
    }
}

impl Readable for FunctionSetAssignments {
    const ROOT: &'static str = "FunctionSetAssignments";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            subscribable: attr(n, "subscribable")?,
            customer_account_list_link: opt_elem(n, "CustomerAccountListLink")?,
            demand_response_program_list_link: opt_elem(n, "DemandResponseProgramListLink")?,
            der_program_list_link: opt_elem(n, "DERProgramListLink")?,
            file_list_link: opt_elem(n, "FileListLink")?,
            messaging_program_list_link: opt_elem(n, "MessagingProgramListLink")?,
            prepayment_list_link: opt_elem(n, "PrepaymentListLink")?,
            response_set_list_link: opt_elem(n, "ResponseSetListLink")?,
            tariff_profile_list_link: opt_elem(n, "TariffProfileListLink")?,
            time_link: opt_elem(n, "TimeLink")?,
            usage_point_list_link: opt_elem(n, "UsagePointListLink")?,
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
        })
    }
}

impl Readable for DerProgram {
    const ROOT: &'static str = "DERProgram";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            subscribable: attr(n, "subscribable")?,
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            active_der_control_list_link: opt_elem(n, "ActiveDERControlListLink")?,
            default_der_control_link: opt_elem(n, "DefaultDERControlLink")?,
            der_control_list_link: opt_elem(n, "DERControlListLink")?,
            der_curve_list_link: opt_elem(n, "DERCurveListLink")?,
            primacy: req(n, "primacy")?,
        })
    }
}

impl FromElem for EventStatus {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            current_status: CurrentStatus::from_code(req(n, "currentStatus")?),
            date_time: opt(n, "dateTime")?.unwrap_or(0),
            potentially_superseded: opt(n, "potentiallySuperseded")?.unwrap_or(false),
            potentially_superseded_time: opt(n, "potentiallySupersededTime")?,
            reason: opt::<String>(n, "reason")?.filter(|r| !r.is_empty()),
        })
    }
}

impl FromElem for DerControlBase {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            op_mod_connect: opt(n, "opModConnect")?,
            op_mod_energize: opt(n, "opModEnergize")?,
            op_mod_fixed_pf_absorb_w: opt_elem(n, "opModFixedPFAbsorbW")?,
            op_mod_fixed_pf_inject_w: opt_elem(n, "opModFixedPFInjectW")?,
            op_mod_fixed_var: opt_elem(n, "opModFixedVar")?,
            op_mod_fixed_w: opt(n, "opModFixedW")?,
            op_mod_freq_droop: opt_elem(n, "opModFreqDroop")?,
            op_mod_freq_watt: opt_elem(n, "opModFreqWatt")?,
            op_mod_hfrt_may_trip: opt_elem(n, "opModHFRTMayTrip")?,
            op_mod_hfrt_must_trip: opt_elem(n, "opModHFRTMustTrip")?,
            op_mod_hvrt_may_trip: opt_elem(n, "opModHVRTMayTrip")?,
            op_mod_hvrt_momentary_cessation: opt_elem(n, "opModHVRTMomentaryCessation")?,
            op_mod_hvrt_must_trip: opt_elem(n, "opModHVRTMustTrip")?,
            op_mod_lfrt_may_trip: opt_elem(n, "opModLFRTMayTrip")?,
            op_mod_lfrt_must_trip: opt_elem(n, "opModLFRTMustTrip")?,
            op_mod_lvrt_may_trip: opt_elem(n, "opModLVRTMayTrip")?,
            op_mod_lvrt_momentary_cessation: opt_elem(n, "opModLVRTMomentaryCessation")?,
            op_mod_lvrt_must_trip: opt_elem(n, "opModLVRTMustTrip")?,
            op_mod_max_lim_w: opt(n, "opModMaxLimW")?,
            op_mod_target_var: opt_elem(n, "opModTargetVar")?,
            op_mod_target_w: opt_elem(n, "opModTargetW")?,
            op_mod_volt_var: opt_elem(n, "opModVoltVar")?,
            op_mod_volt_watt: opt_elem(n, "opModVoltWatt")?,
            op_mod_watt_pf: opt_elem(n, "opModWattPF")?,
            op_mod_watt_var: opt_elem(n, "opModWattVar")?,
            ramp_tms: opt(n, "rampTms")?,
            op_mod_imp_lim_w: opt_elem(n, "opModImpLimW")?,
            op_mod_exp_lim_w: opt_elem(n, "opModExpLimW")?,
            op_mod_gen_lim_w: opt_elem(n, "opModGenLimW")?,
            op_mod_load_lim_w: opt_elem(n, "opModLoadLimW")?,
            op_mod_storage_target_w: opt_elem(n, "opModStorageTargetW")?,
        })
    }
}

impl Readable for DerControl {
    const ROOT: &'static str = "DERControl";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            reply_to: n.attr("replyTo").map(str::to_string),
            response_required: attr_hex8(n, "responseRequired")?,
            subscribable: attr(n, "subscribable")?,
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            creation_time: opt(n, "creationTime")?.unwrap_or(0),
            event_status: req_elem(n, "EventStatus")?,
            interval: req_elem(n, "interval")?,
            randomize_duration_s: opt(n, "randomizeDuration")?,
            randomize_start_s: opt(n, "randomizeStart")?,
            base: req_elem(n, "DERControlBase")?,
            device_category: opt_hex32(n, "deviceCategory")?,
        })
    }
}

/// The `setES*` elements of a DefaultDERControl or DERSettings.
fn enter_service(n: &Node) -> Result<EnterService, ReadError> {
    Ok(EnterService {
        delay: opt(n, "setESDelay")?,
        high_freq: opt(n, "setESHighFreq")?,
        high_volt: opt(n, "setESHighVolt")?,
        low_freq: opt(n, "setESLowFreq")?,
        low_volt: opt(n, "setESLowVolt")?,
        ramp_tms: opt(n, "setESRampTms")?,
        random_delay: opt(n, "setESRandomDelay")?,
    })
}

impl Readable for DefaultDerControl {
    const ROOT: &'static str = "DefaultDERControl";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            subscribable: attr(n, "subscribable")?,
            mrid: opt(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            base: opt_elem(n, "DERControlBase")?.unwrap_or_default(),
            enter_service: enter_service(n)?,
            set_grad_w: opt(n, "setGradW")?,
            set_soft_grad_w: opt(n, "setSoftGradW")?,
        })
    }
}

impl FromElem for CurveData {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            excitation: opt(n, "excitation")?,
            xvalue: req(n, "xvalue")?,
            yvalue: req(n, "yvalue")?,
        })
    }
}

impl Readable for DerCurve {
    const ROOT: &'static str = "DERCurve";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            autonomous_v_ref_enable: opt(n, "autonomousVRefEnable")?,
            autonomous_v_ref_time_constant: opt(n, "autonomousVRefTimeConstant")?,
            creation_time: opt(n, "creationTime")?.unwrap_or(0),
            curve_data: many(n, "CurveData")?,
            curve_type: req(n, "curveType")?,
            open_loop_tms: opt(n, "openLoopTms")?,
            ramp_dec_tms: opt(n, "rampDecTms")?,
            ramp_inc_tms: opt(n, "rampIncTms")?,
            ramp_pt1_tms: opt(n, "rampPT1Tms")?,
            v_ref: opt(n, "vRef")?,
            x_multiplier: opt(n, "xMultiplier")?.unwrap_or(0),
            y_multiplier: opt(n, "yMultiplier")?.unwrap_or(0),
            y_ref_type: req(n, "yRefType")?,
        })
    }
}

impl Readable for Der {
    const ROOT: &'static str = "DER";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            subscribable: attr(n, "subscribable")?,
            associated_der_program_list_link: opt_elem(n, "AssociatedDERProgramListLink")?,
            associated_usage_point_link: opt_elem(n, "AssociatedUsagePointLink")?,
            current_der_program_link: opt_elem(n, "CurrentDERProgramLink")?,
            der_availability_link: opt_elem(n, "DERAvailabilityLink")?,
            der_capability_link: opt_elem(n, "DERCapabilityLink")?,
            der_settings_link: opt_elem(n, "DERSettingsLink")?,
            der_status_link: opt_elem(n, "DERStatusLink")?,
        })
    }
}

impl Readable for ConnectionPoint {
    const ROOT: &'static str = "ConnectionPoint";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            connection_point_id: req(n, "connectionPointId")?,
        })
    }
}

impl Readable for DerCapability {
    const ROOT: &'static str = "DERCapability";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            modes_supported: opt_hex32(n, "modesSupported")?.unwrap_or(0),
            rtg_abnormal_category: opt(n, "rtgAbnormalCategory")?,
            rtg_max_a: opt_elem(n, "rtgMaxA")?,
            rtg_max_ah: opt_elem(n, "rtgMaxAh")?,
            rtg_max_charge_rate_va: opt_elem(n, "rtgMaxChargeRateVA")?,
            rtg_max_charge_rate_w: opt_elem(n, "rtgMaxChargeRateW")?,
            rtg_max_discharge_rate_va: opt_elem(n, "rtgMaxDischargeRateVA")?,
            rtg_max_discharge_rate_w: opt_elem(n, "rtgMaxDischargeRateW")?,
            rtg_max_v: opt_elem(n, "rtgMaxV")?,
            rtg_max_va: opt_elem(n, "rtgMaxVA")?,
            rtg_max_var: opt_elem(n, "rtgMaxVar")?,
            rtg_max_var_neg: opt_elem(n, "rtgMaxVarNeg")?,
            rtg_max_w: req_elem(n, "rtgMaxW")?,
            rtg_max_wh: opt_elem(n, "rtgMaxWh")?,
            rtg_min_pf_over_excited: opt_elem(n, "rtgMinPFOverExcited")?,
            rtg_min_pf_under_excited: opt_elem(n, "rtgMinPFUnderExcited")?,
            rtg_min_v: opt_elem(n, "rtgMinV")?,
            rtg_normal_category: opt(n, "rtgNormalCategory")?,
            rtg_v_nom: opt_elem(n, "rtgVNom")?,
            der_type: req(n, "type")?,
            doe_modes_supported: opt_hex8(n, "doeModesSupported")?.unwrap_or(0),
            vpp_modes_supported: opt_hex8(n, "vppModesSupported")?,
        })
    }
}

impl Readable for DerSettings {
    const ROOT: &'static str = "DERSettings";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            subscribable: attr(n, "subscribable")?,
            modes_enabled: opt_hex32(n, "modesEnabled")?,
            enter_service: enter_service(n)?,
            set_grad_w: opt(n, "setGradW")?.unwrap_or(0),
            set_max_a: opt_elem(n, "setMaxA")?,
            set_max_ah: opt_elem(n, "setMaxAh")?,
            set_max_charge_rate_va: opt_elem(n, "setMaxChargeRateVA")?,
            set_max_charge_rate_w: opt_elem(n, "setMaxChargeRateW")?,
            set_max_discharge_rate_va: opt_elem(n, "setMaxDischargeRateVA")?,
            set_max_discharge_rate_w: opt_elem(n, "setMaxDischargeRateW")?,
            set_max_v: opt_elem(n, "setMaxV")?,
            set_max_va: opt_elem(n, "setMaxVA")?,
            set_max_var: opt_elem(n, "setMaxVar")?,
            set_max_var_neg: opt_elem(n, "setMaxVarNeg")?,
            set_max_w: req_elem(n, "setMaxW")?,
            set_max_wh: opt_elem(n, "setMaxWh")?,
            set_min_pf_over_excited: opt_elem(n, "setMinPFOverExcited")?,
            set_min_pf_under_excited: opt_elem(n, "setMinPFUnderExcited")?,
            set_min_v: opt_elem(n, "setMinV")?,
            set_soft_grad_w: opt(n, "setSoftGradW")?,
            set_v_nom: opt_elem(n, "setVNom")?,
            set_v_ref: opt_elem(n, "setVRef")?,
            set_v_ref_ofs: opt_elem(n, "setVRefOfs")?,
            updated_time: opt(n, "updatedTime")?.unwrap_or(0),
            doe_modes_enabled: opt_hex8(n, "doeModesEnabled")?,
            vpp_modes_enabled: opt_hex8(n, "vppModesEnabled")?,
            set_min_wh: opt_elem(n, "setMinWh")?,
        })
    }
}

/// Status value readers: plain integer, hexBinary8, or text.
struct PlainStatus(StatusValue<u8>);
struct HexStatus(StatusValue<u8>);
struct PercentStatus(StatusValue<u16>);
struct TextStatus(StatusValue<String>);

impl FromElem for PlainStatus {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self(StatusValue {
            date_time: opt(n, "dateTime")?.unwrap_or(0),
            value: req(n, "value")?,
        }))
    }
}
impl FromElem for HexStatus {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self(StatusValue {
            date_time: opt(n, "dateTime")?.unwrap_or(0),
            value: opt_hex8(n, "value")?.ok_or_else(|| missing("value"))?,
        }))
    }
}
impl FromElem for PercentStatus {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self(StatusValue {
            date_time: opt(n, "dateTime")?.unwrap_or(0),
            value: req(n, "value")?,
        }))
    }
}
impl FromElem for TextStatus {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self(StatusValue {
            date_time: opt(n, "dateTime")?.unwrap_or(0),
            value: req(n, "value")?,
        }))
    }
}

impl Readable for DerStatus {
    const ROOT: &'static str = "DERStatus";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            subscribable: attr(n, "subscribable")?,
            alarm_status: opt_hex32(n, "alarmStatus")?,
            gen_connect_status: opt_elem::<HexStatus>(n, "genConnectStatus")?.map(|s| s.0),
            inverter_status: opt_elem::<PlainStatus>(n, "inverterStatus")?.map(|s| s.0),
            local_control_mode_status: opt_elem::<PlainStatus>(n, "localControlModeStatus")?
                .map(|s| s.0),
            manufacturer_status: opt_elem::<TextStatus>(n, "manufacturerStatus")?.map(|s| s.0),
            operational_mode_status: opt_elem::<PlainStatus>(n, "operationalModeStatus")?
                .map(|s| s.0),
            reading_time: opt(n, "readingTime")?.unwrap_or(0),
            state_of_charge_status: opt_elem::<PercentStatus>(n, "stateOfChargeStatus")?
                .map(|s| s.0),
            storage_mode_status: opt_elem::<PlainStatus>(n, "storageModeStatus")?.map(|s| s.0),
            stor_connect_status: opt_elem::<HexStatus>(n, "storConnectStatus")?.map(|s| s.0),
        })
    }
}

impl Readable for DerAvailability {
    const ROOT: &'static str = "DERAvailability";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            subscribable: attr(n, "subscribable")?,
            availability_duration_s: opt(n, "availabilityDuration")?,
            max_charge_duration_s: opt(n, "maxChargeDuration")?,
            reading_time: opt(n, "readingTime")?.unwrap_or(0),
            reserve_charge_percent: opt(n, "reserveChargePercent")?,
            reserve_percent: opt(n, "reservePercent")?,
            stat_var_avail: opt_elem(n, "statVarAvail")?,
            stat_w_avail: opt_elem(n, "statWAvail")?,
        })
    }
}

impl Readable for MirrorUsagePoint {
    const ROOT: &'static str = "MirrorUsagePoint";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            role_flags: opt_hex16(n, "roleFlags")?.unwrap_or(0),
            service_category_kind: opt(n, "serviceCategoryKind")?.unwrap_or(0),
            status: opt(n, "status")?.unwrap_or(0),
            device_lfdi: opt::<String>(n, "deviceLFDI")?
                .unwrap_or_default()
                .to_ascii_uppercase(),
            mirror_meter_readings: many(n, "MirrorMeterReading")?,
            post_rate_s: opt(n, "postRate")?,
        })
    }
}

impl Readable for MirrorMeterReading {
    const ROOT: &'static str = "MirrorMeterReading";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            last_update_time: opt(n, "lastUpdateTime")?,
            mirror_reading_sets: many(n, "MirrorReadingSet")?,
            next_update_time: opt(n, "nextUpdateTime")?,
            reading: opt_elem(n, "Reading")?,
            reading_type: opt_elem(n, "ReadingType")?,
        })
    }
}

impl Readable for ReadingType {
    const ROOT: &'static str = "ReadingType";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            accumulation_behaviour: opt(n, "accumulationBehaviour")?,
            commodity: opt(n, "commodity")?,
            data_qualifier: opt(n, "dataQualifier")?,
            flow_direction: opt(n, "flowDirection")?,
            interval_length_s: opt(n, "intervalLength")?,
            kind: opt(n, "kind")?,
            max_number_of_intervals: opt(n, "maxNumberOfIntervals")?,
            phase: opt(n, "phase")?,
            power_of_ten_multiplier: opt(n, "powerOfTenMultiplier")?,
            sub_interval_length_s: opt(n, "subIntervalLength")?,
            uom: opt(n, "uom")?,
        })
    }
}

impl Readable for MirrorReadingSet {
    const ROOT: &'static str = "MirrorReadingSet";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            time_period: req_elem(n, "timePeriod")?,
            readings: many(n, "Reading")?,
        })
    }
}

impl Readable for Reading {
    const ROOT: &'static str = "Reading";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            quality_flags: opt_hex16(n, "qualityFlags")?,
            time_period: opt_elem(n, "timePeriod")?,
            tou_tier: opt(n, "touTier")?,
            value: opt(n, "value")?,
            local_id: opt_hex16(n, "localID")?,
        })
    }
}

impl Readable for DerControlResponse {
    const ROOT: &'static str = "DERControlResponse";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            created_date_time: opt(n, "createdDateTime")?,
            end_device_lfdi: req::<String>(n, "endDeviceLFDI")?.to_ascii_uppercase(),
            status: opt(n, "status")?,
            subject: req(n, "subject")?,
        })
    }
}

impl Readable for TariffProfile {
    const ROOT: &'static str = "TariffProfile";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            currency: opt(n, "currency")?,
            price_power_of_ten_multiplier: opt(n, "pricePowerOfTenMultiplier")?,
            primacy: opt(n, "primacy")?.unwrap_or(0),
            rate_code: opt(n, "rateCode")?,
            rate_component_list_link: opt_elem(n, "RateComponentListLink")?,
            service_category_kind: opt(n, "serviceCategoryKind")?.unwrap_or(0),
            combined_time_tariff_interval_list_link: opt_elem(
                n,
                "CombinedTimeTariffIntervalListLink",
            )?,
        })
    }
}

impl Readable for RateComponent {
    const ROOT: &'static str = "RateComponent";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            active_time_tariff_interval_list_link: opt_elem(n, "ActiveTimeTariffIntervalListLink")?,
            reading_type_link: opt_elem(n, "ReadingTypeLink")?,
            role_flags: opt_hex16(n, "roleFlags")?.unwrap_or(0),
            time_tariff_interval_list_link: opt_elem(n, "TimeTariffIntervalListLink")?,
        })
    }
}

impl Readable for TimeTariffInterval {
    const ROOT: &'static str = "TimeTariffInterval";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        let consumption_blocks = match n.child("ConsumptionTariffIntervalListSummary") {
            Some(summary) => many(summary, "ConsumptionTariffInterval")
                .map_err(|e| e.within("ConsumptionTariffIntervalListSummary"))?,
            None => Vec::new(),
        };
        Ok(Self {
            href: href(n),
            reply_to: n.attr("replyTo").map(str::to_string),
            response_required: attr_hex8(n, "responseRequired")?,
            mrid: req(n, "mRID")?,
            description: opt(n, "description")?,
            version: opt(n, "version")?,
            creation_time: opt(n, "creationTime")?.unwrap_or(0),
            event_status: req_elem(n, "EventStatus")?,
            interval: req_elem(n, "interval")?,
            randomize_duration_s: opt(n, "randomizeDuration")?,
            randomize_start_s: opt(n, "randomizeStart")?,
            consumption_tariff_interval_list_link: opt_elem(
                n,
                "ConsumptionTariffIntervalListLink",
            )?,
            tou_tier: opt(n, "touTier")?.unwrap_or(0),
            rate_component_link: opt_elem(n, "RateComponentLink")?,
            consumption_blocks,
        })
    }
}

impl Readable for ConsumptionTariffInterval {
    const ROOT: &'static str = "ConsumptionTariffInterval";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            consumption_block: opt(n, "consumptionBlock")?.unwrap_or(0),
            price: opt(n, "price")?,
            start_value: req(n, "startValue")?,
        })
    }
}

impl Readable for LogEvent {
    const ROOT: &'static str = "LogEvent";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            created_date_time: req(n, "createdDateTime")?,
            details: opt(n, "details")?,
            extended_data: opt(n, "extendedData")?,
            function_set: req(n, "functionSet")?,
            log_event_code: req(n, "logEventCode")?,
            log_event_id: req(n, "logEventID")?,
            log_event_pen: req(n, "logEventPEN")?,
            profile_id: req(n, "profileID")?,
        })
    }
}

impl FromElem for Condition {
    fn from_elem(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            attribute_identifier: req(n, "attributeIdentifier")?,
            lower_threshold: req(n, "lowerThreshold")?,
            upper_threshold: req(n, "upperThreshold")?,
        })
    }
}

impl Readable for Notification {
    const ROOT: &'static str = "Notification";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            subscribed_resource: req(n, "subscribedResource")?,
            new_resource_uri: opt(n, "newResourceURI")?,
            status: req(n, "status")?,
            subscription_uri: req(n, "subscriptionURI")?,
            has_resource: n.child("Resource").is_some(),
        })
    }
}

impl Readable for Subscription {
    const ROOT: &'static str = "Subscription";
    fn from_node(n: &Node) -> Result<Self, ReadError> {
        Ok(Self {
            href: href(n),
            subscribed_resource: req(n, "subscribedResource")?,
            condition: opt_elem(n, "Condition")?,
            encoding: req(n, "encoding")?,
            level: req(n, "level")?,
            limit: req(n, "limit")?,
            notification_uri: req(n, "notificationURI")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pricing_resources_read_with_any_prefix_and_the_reference_servers_extensions() {
        // A prefixed 2030.5 namespace, the csipaus combined-list link and inline blocks.
        let tp = br#"<s:TariffProfile xmlns:s="urn:ieee:std:2030.5:ns" xmlns:c="https://csipaus.org/ns/v1.3" href="/tp/1"><s:mRID>0A</s:mRID><s:currency>36</s:currency><s:pricePowerOfTenMultiplier>-4</s:pricePowerOfTenMultiplier><s:primacy>1</s:primacy><s:RateComponentListLink href="/tp/1/rc" all="2"/><s:serviceCategoryKind>0</s:serviceCategoryKind><c:CombinedTimeTariffIntervalListLink href="/tp/1/ctti"/></s:TariffProfile>"#;
        let tp: TariffProfile = read(tp).expect("TariffProfile");
        assert_eq!(
            (tp.currency, tp.price_power_of_ten_multiplier, tp.primacy),
            (Some(36), Some(-4), 1)
        );
        assert_eq!(tp.rate_component_list_link.unwrap().all, Some(2));
        assert_eq!(
            tp.combined_time_tariff_interval_list_link.unwrap().href,
            "/tp/1/ctti"
        );
        let tti = br#"<TimeTariffInterval xmlns="urn:ieee:std:2030.5:ns" href="/t/1" replyTo="/rsp" responseRequired="03"><mRID>0B</mRID><creationTime>5</creationTime><EventStatus><currentStatus>2</currentStatus><dateTime>5</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus><interval><duration>300</duration><start>100</start></interval><randomizeStart>60</randomizeStart><touTier>0</touTier><c:ConsumptionTariffIntervalListSummary xmlns:c="https://csipaus.org/ns"><ConsumptionTariffInterval><consumptionBlock>1</consumptionBlock><price>-7</price><startValue>0</startValue></ConsumptionTariffInterval></c:ConsumptionTariffIntervalListSummary><RateComponentLink href="/tp/1/rc/2"/></TimeTariffInterval>"#;
        let tti: TimeTariffInterval = read(tti).expect("TimeTariffInterval");
        assert_eq!(tti.event_status.current_status, CurrentStatus::Cancelled);
        assert_eq!((tti.interval.start, tti.interval.duration_s), (100, 300));
        assert_eq!(tti.randomize_start_s, Some(60));
        assert_eq!(tti.response_required, Some(3));
        assert_eq!(tti.consumption_blocks[0].price, Some(-7));
        assert_eq!(tti.rate_component_link.unwrap().href, "/tp/1/rc/2");
        // A block without its required startValue is named with its path.
        let bad = br#"<ConsumptionTariffIntervalList xmlns="urn:ieee:std:2030.5:ns" all="2" results="2"><ConsumptionTariffInterval><consumptionBlock>1</consumptionBlock><price>3</price><startValue>0</startValue></ConsumptionTariffInterval><ConsumptionTariffInterval><consumptionBlock>2</consumptionBlock><price>4</price></ConsumptionTariffInterval></ConsumptionTariffIntervalList>"#;
        let (list, skipped) = read_list::<ConsumptionTariffInterval>(bad).expect("list");
        assert_eq!(list.items.len(), 1);
        assert!(
            skipped[0]
                .error
                .to_string()
                .contains("ConsumptionTariffInterval[2]"),
            "{}",
            skipped[0].error
        );
    }

    #[test]
    fn time_without_dst_and_quality_reads_with_defaults() {
        // As GridAPPS-D sends it.
        let t: Time = read(
            br#"<Time xmlns="urn:ieee:std:2030.5:ns" href="/tm"><currentTime>1700000000</currentTime>
            <dstOffset>0</dstOffset><localTime>1700036000</localTime><tzOffset>36000</tzOffset></Time>"#,
        )
        .unwrap();
        assert_eq!(t.current_time, 1700000000);
        assert_eq!(
            (t.dst_start_time, t.dst_end_time, t.quality),
            (None, None, None)
        );
        assert_eq!(t.tz_offset_s, 36000);
    }

    #[test]
    fn event_status_without_potentially_superseded_is_false() {
        let c: DerControl = read(
            br#"<DERControl xmlns="urn:ieee:std:2030.5:ns"><mRID>AB</mRID><creationTime>5</creationTime>
            <EventStatus><currentStatus>1</currentStatus><dateTime>7</dateTime></EventStatus>
            <interval><duration>60</duration><start>100</start></interval>
            <DERControlBase><opModMaxLimW>5000</opModMaxLimW><opModConnect>false</opModConnect></DERControlBase>
            </DERControl>"#,
        )
        .unwrap();
        assert!(!c.event_status.potentially_superseded);
        assert_eq!(c.event_status.current_status, CurrentStatus::Active);
        assert_eq!(c.base.op_mod_max_lim_w, Some(5000));
        assert_eq!(c.base.op_mod_connect, Some(false));
        assert_eq!((c.reply_to, c.response_required), (None, None));
    }

    #[test]
    fn one_bad_list_item_is_skipped_and_its_siblings_kept() {
        let body = br#"<DERControlList xmlns="urn:ieee:std:2030.5:ns" all="2" results="2" pollRate="60">
            <DERControl replyTo="/rsp" responseRequired="03"><mRID>A1</mRID><creationTime>1</creationTime>
              <EventStatus><currentStatus>1</currentStatus><dateTime>1</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus>
              <interval><duration>60</duration><start>10</start></interval><DERControlBase/></DERControl>
            <DERControl replyTo="/rsp2"><mRID>B2</mRID><creationTime>1</creationTime>
              <EventStatus><currentStatus>0</currentStatus><dateTime>1</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus>
              <interval><duration>60</duration><start>soon</start></interval><DERControlBase/></DERControl>
            </DERControlList>"#;
        let (list, skipped) = read_list::<DerControl>(body).expect("list");
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].mrid, "A1");
        assert_eq!((list.all, list.poll_rate_s), (2, Some(60)));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].mrid.as_deref(), Some("B2"));
        assert_eq!(skipped[0].reply_to.as_deref(), Some("/rsp2"));
        assert_eq!(
            skipped[0].error.to_string(),
            r#"DERControlList/DERControl[2]/interval/start: expected an integer, got "soon""#
        );
        assert!(read_list::<DerControl>(b"<Time xmlns=\"urn:ieee:std:2030.5:ns\"/>").is_err());
    }

    #[test]
    fn any_prefix_and_v13_namespace_match_and_foreign_elements_are_skipped() {
        let xml = br#"<s:DERControlBase xmlns:s="urn:ieee:std:2030.5:ns"
              xmlns:c="https://csipaus.org/ns/v1.3" xmlns:x="urn:vendor">
            <x:opModExpLimW><s:multiplier>0</s:multiplier><s:value>1</s:value></x:opModExpLimW>
            <c:opModExpLimW><s:multiplier>3</s:multiplier><s:value>5</s:value></c:opModExpLimW>
            <s:unknownFutureElement><s:deep/></s:unknownFutureElement>
            <s:rampTms>300</s:rampTms></s:DERControlBase>"#;
        let root = dom::parse(xml).unwrap();
        let base = DerControlBase::from_elem(&root).unwrap();
        assert_eq!(base.op_mod_exp_lim_w.unwrap().watts(), 5000.0);
        assert_eq!(base.ramp_tms, Some(300));
    }

    #[test]
    fn storage_target_is_read_signed_in_any_csipaus_namespace() {
        for ns in [
            "https://csipaus.org/ns/v1.3",
            "https://csipaus.org/ns/v1.3-beta/storage",
        ] {
            let xml = format!(
                r#"<DERControlBase xmlns="urn:ieee:std:2030.5:ns" xmlns:c="{ns}">
                <c:opModExpLimW><multiplier>0</multiplier><value>2500</value></c:opModExpLimW>
                <c:opModStorageTargetW><multiplier>1</multiplier><value>-300</value></c:opModStorageTargetW>
                </DERControlBase>"#
            );
            let root = dom::parse(xml.as_bytes()).unwrap();
            let base = DerControlBase::from_elem(&root).unwrap();
            assert_eq!(base.op_mod_storage_target_w.unwrap().watts(), -3000.0);
            assert_eq!(base.op_mod_exp_lim_w.unwrap().watts(), 2500.0);
        }
    }

    #[test]
    fn hex_binary_in_either_case() {
        let xml = |flags: &str| {
            format!(
                r#"<MirrorUsagePoint xmlns="urn:ieee:std:2030.5:ns"><mRID>1</mRID>
                <roleFlags>{flags}</roleFlags><serviceCategoryKind>0</serviceCategoryKind>
                <status>1</status><deviceLFDI>abcdef</deviceLFDI></MirrorUsagePoint>"#
            )
        };
        let lower: MirrorUsagePoint = read(xml("4a").as_bytes()).unwrap();
        let upper: MirrorUsagePoint = read(xml("4A").as_bytes()).unwrap();
        assert_eq!((lower.role_flags, upper.role_flags), (0x4a, 0x4a));
        assert_eq!(lower.device_lfdi, "ABCDEF");
        let err = read::<MirrorUsagePoint>(xml("4G").as_bytes()).unwrap_err();
        assert_eq!(err.path(), "MirrorUsagePoint/roleFlags");
    }

    #[test]
    fn errors_name_the_element_and_the_problem() {
        let err = read::<DerControlList>(
            br#"<DERControlList xmlns="urn:ieee:std:2030.5:ns" all="2" results="2">
            <DERControl><mRID>A</mRID><EventStatus><currentStatus>0</currentStatus></EventStatus>
            <interval><duration>1</duration><start>2</start></interval><DERControlBase/></DERControl>
            <DERControl><mRID>B</mRID><EventStatus><currentStatus>0</currentStatus></EventStatus>
            <interval><duration>1</duration><start>soon</start></interval><DERControlBase/></DERControl>
            </DERControlList>"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"DERControlList/DERControl[2]/interval/start: expected an integer, got "soon""#
        );
        let err = read::<DerControl>(
            br#"<DERControl xmlns="urn:ieee:std:2030.5:ns"><mRID>A</mRID></DERControl>"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "DERControl: required element <EventStatus> is missing"
        );
        let err = read::<Time>(b"<EndDevice xmlns=\"urn:ieee:std:2030.5:ns\"/>").unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a <Time> document, got <EndDevice>"
        );
        let err = read::<Time>(b"<Time><currentTime>1</currentTime>").unwrap_err();
        assert!(err.to_string().contains("Time"), "{err}");
        let err = read::<Time>(b"").unwrap_err();
        assert!(err.to_string().contains("no root element"), "{err}");
        let err = read::<Time>(b"<Time><a>&bogus;</a></Time>").unwrap_err();
        assert!(err.to_string().contains("&bogus;"), "{err}");
    }

    #[test]
    fn entities_and_cdata_are_unescaped() {
        let r: DerControlResponse = read(
            br#"<DERControlResponse xmlns="urn:ieee:std:2030.5:ns"><endDeviceLFDI>ab</endDeviceLFDI>
            <subject>A&amp;B&#x43;<![CDATA[<D>]]></subject></DERControlResponse>"#,
        )
        .unwrap();
        assert_eq!(r.subject, "A&BC<D>");
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflow() {
        let depth = 10_000;
        let xml = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        let err = read::<Time>(xml.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn der_curve_and_log_event_lists() {
        let l: DerCurveList = read(
            br#"<DERCurveList xmlns="urn:ieee:std:2030.5:ns" href="/derp/1/dc" all="1" results="1">
            <DERCurve href="/derp/1/dc/1"><mRID>0A</mRID><creationTime>10</creationTime>
            <CurveData><xvalue>9200</xvalue><yvalue>3000</yvalue></CurveData>
            <CurveData><excitation>true</excitation><xvalue>10800</xvalue><yvalue>-3000</yvalue></CurveData>
            <curveType>11</curveType><xMultiplier>-2</xMultiplier><yMultiplier>-2</yMultiplier>
            <yRefType>3</yRefType></DERCurve></DERCurveList>"#,
        )
        .unwrap();
        let c = &l.items[0];
        assert_eq!((c.curve_type, c.x_multiplier, c.y_ref_type), (11, -2, 3));
        assert_eq!(c.curve_data.len(), 2);
        assert_eq!(
            c.curve_data[1],
            CurveData {
                excitation: Some(true),
                xvalue: 10800,
                yvalue: -3000
            }
        );
        let l: LogEventList = read(
            br#"<LogEventList xmlns="urn:ieee:std:2030.5:ns" all="1" results="1" pollRate="900">
            <LogEvent><createdDateTime>5</createdDateTime><functionSet>22</functionSet>
            <logEventCode>1</logEventCode><logEventID>7</logEventID><logEventPEN>28547</logEventPEN>
            <profileID>2</profileID></LogEvent></LogEventList>"#,
        )
        .unwrap();
        assert_eq!(l.poll_rate_s, Some(900));
        assert_eq!(l.items[0].log_event_pen, 28547);
    }
}
