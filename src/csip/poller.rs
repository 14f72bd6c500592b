//! Which resource is due for a poll, and when. Pure: the caller passes the time (a
//! monotonic clock in milliseconds) and reports each poll's outcome.
//!
//! Each tracked resource is a *poll group*: a list (or single resource) whose own
//! `pollRate` governs how often it and the resources hanging under it are re-read
//! (e.g. the DERProgramList's rate covers its programs, their DERControlLists and
//! DefaultDERControls, which is what the certification harness times). A changed rate
//! takes effect at once: the next poll is re-planned from the last poll with the new
//! rate. Resources under a group (a program's DERControlList, DefaultDERControl and
//! DERCurveList) *follow their parent*: the parent's good poll makes them due, so they
//! are read together at the parent's rate, but each fails and backs off on its own.
//! Failures back off exponentially from 2 s, capped at the poll rate and at
//! [`MAX_RETRY_MS`] (so the client is back within a minute of a server's return,
//! CSIP-AUS ALL-23); they never ask for rediscovery. Only a 404/410 on a known href
//! does ([`AfterPoll::Rediscover`]).

use std::collections::BTreeMap;

/// Poll rate used where the server states none. CSIP-AUS utility handbooks use five
/// minutes as the default poll and post rate (2030.5's own default is 900 s).
pub const DEFAULT_POLL_RATE_S: u32 = 300;

/// Shortest retry delay after a failed poll.
const MIN_RETRY_MS: u64 = 2_000;

/// Longest retry delay after failed polls, whatever the poll rate: the harness (ALL-23)
/// wants the client back within one pollRate, and never more than 60 s, of the
/// server's return.
pub const MAX_RETRY_MS: u64 = 60_000;

/// `next_due_ms` of a resource that waits for its parent's poll.
const WITH_PARENT: u64 = u64::MAX;

/// What kind of poll group a tracked href is; the driver knows what to do for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PollKind {
    /// The CSIP-AUS `/.well-known/csipaus` document (read until a version is chosen).
    WellKnown,
    DeviceCapability,
    Time,
    EndDeviceList,
    Registration,
    FunctionSetAssignmentsList,
    DerProgramList,
    DerList,
    MirrorUsagePointList,
    /// An FSA's TariffProfileList (Pricing).
    TariffProfileList,
    /// A RateComponent's TimeTariffIntervalList (or a TariffProfile's combined list), on
    /// its own pollRate.
    TimeTariffIntervalList,
    /// A program's DERControlList (follows its DERProgramList).
    DerControlList,
    /// A program's DefaultDERControl (follows its DERProgramList).
    DefaultDerControl,
    /// A program's DERCurveList (follows its DERProgramList).
    DerCurveList,
    /// A TariffProfile's RateComponentList (follows its TariffProfileList).
    RateComponentList,
    /// A RateComponent's ReadingType (read once, when its RateComponentList is).
    ReadingType,
    /// A RateComponent a combined interval list names and no RateComponentList holds
    /// (read once).
    RateComponent,
    /// A TimeTariffInterval's ConsumptionTariffIntervalList (follows its
    /// TimeTariffIntervalList).
    ConsumptionTariffIntervalList,
}

impl PollKind {
    /// Short name for logs and the status page.
    pub fn name(self) -> &'static str {
        match self {
            PollKind::WellKnown => "WellKnownCsipaus",
            PollKind::DeviceCapability => "DeviceCapability",
            PollKind::Time => "Time",
            PollKind::EndDeviceList => "EndDeviceList",
            PollKind::Registration => "Registration",
            PollKind::FunctionSetAssignmentsList => "FunctionSetAssignmentsList",
            PollKind::DerProgramList => "DERProgramList",
            PollKind::DerList => "DERList",
            PollKind::MirrorUsagePointList => "MirrorUsagePointList",
            PollKind::DerControlList => "DERControlList",
            PollKind::DefaultDerControl => "DefaultDERControl",
            PollKind::DerCurveList => "DERCurveList",
            PollKind::TariffProfileList => "TariffProfileList",
            PollKind::TimeTariffIntervalList => "TimeTariffIntervalList",
            PollKind::RateComponentList => "RateComponentList",
            PollKind::ReadingType => "ReadingType",
            PollKind::RateComponent => "RateComponent",
            PollKind::ConsumptionTariffIntervalList => "ConsumptionTariffIntervalList",
        }
    }

    /// For a resource on no timer of its own ([`PollKind::follows_parent`]): the poll
    /// group whose every read reads it again. `None` for a resource read once per href
    /// (a ReadingType, a RateComponent only a combined interval list names) and for one
    /// on its own timer.
    pub fn read_with(self) -> Option<PollKind> {
        match self {
            PollKind::DerControlList | PollKind::DefaultDerControl | PollKind::DerCurveList => {
                Some(PollKind::DerProgramList)
            }
            PollKind::RateComponentList => Some(PollKind::TariffProfileList),
            PollKind::ConsumptionTariffIntervalList => Some(PollKind::TimeTariffIntervalList),
            _ => None,
        }
    }

    /// Read when its parent is read, not on its own timer (see the module doc).
    pub fn follows_parent(self) -> bool {
        matches!(
            self,
            PollKind::DerControlList
                | PollKind::DefaultDerControl
                | PollKind::DerCurveList
                | PollKind::RateComponentList
                | PollKind::ReadingType
                | PollKind::RateComponent
                | PollKind::ConsumptionTariffIntervalList
        )
    }
}

/// One tracked poll group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollEntry {
    pub kind: PollKind,
    pub rate_s: u32,
    pub last_poll_ms: Option<u64>,
    pub next_due_ms: u64,
    pub consecutive_failures: u32,
    /// A request for it is out; it is not due again until answered.
    pub in_flight: bool,
}

/// What the driver should do after reporting a poll outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPoll {
    /// Carry on.
    Continue,
    /// The resource is gone (404/410 on an href the server gave): walk again from
    /// DeviceCapability.
    Rediscover,
}

/// The set of tracked poll groups, keyed by href.
#[derive(Debug, Clone, Default)]
pub struct Poller {
    /// One entry per resource of the server's tree csipd polls (`track`); resources
    /// that leave the tree are `forget`-ten, a rediscovery clears them all.
    entries: BTreeMap<String, PollEntry>,
    /// Longest interval allowed whatever the server says (lab servers that state 900 s).
    max_rate_s: Option<u32>,
}

impl Poller {
    pub fn new() -> Poller {
        Poller::default()
    }

    /// Caps every poll interval at `max_rate_s` (None: the server's rates as stated).
    pub fn set_max_rate_s(&mut self, max_rate_s: Option<u32>) {
        self.max_rate_s = max_rate_s.map(|m| m.max(1));
    }

    fn capped(&self, rate_s: u32) -> u32 {
        self.max_rate_s.map_or(rate_s, |max| rate_s.min(max)).max(1)
    }

    /// Starts tracking `href` (due at once if new) or updates its rate. `rate_s` is the
    /// server's `pollRate` if it sent one. A changed rate re-plans the next poll from the
    /// last one, so a shorter rate applies now and not after the old interval.
    /// A `None` rate on a tracked href keeps the rate it has (a parent re-linking a
    /// child does not know the child's rate; only the child's own answer does).
    pub fn track(&mut self, href: &str, kind: PollKind, rate_s: Option<u32>, now_ms: u64) {
        let rate_s = rate_s.map(|r| self.capped(r));
        let default_rate_s = self.capped(DEFAULT_POLL_RATE_S);
        match self.entries.get_mut(href) {
            Some(entry) => {
                entry.kind = kind;
                let Some(rate_s) = rate_s else { return };
                let rate_s = rate_s.max(1);
                if entry.rate_s != rate_s {
                    entry.rate_s = rate_s;
                    if entry.consecutive_failures == 0 && !kind.follows_parent() {
                        if let Some(last) = entry.last_poll_ms {
                            entry.next_due_ms = last + u64::from(rate_s) * 1000;
                        }
                    }
                }
            }
            None => {
                self.entries.insert(
                    href.to_string(),
                    PollEntry {
                        kind,
                        rate_s: rate_s.unwrap_or(default_rate_s),
                        last_poll_ms: None,
                        next_due_ms: now_ms,
                        consecutive_failures: 0,
                        in_flight: false,
                    },
                );
            }
        }
    }

    /// Makes `href` due at `now_ms` (e.g. re-read the MirrorUsagePointList right after
    /// creating a usage point).
    pub fn poll_soon(&mut self, href: &str, now_ms: u64) {
        if let Some(entry) = self.entries.get_mut(href) {
            entry.next_due_ms = entry.next_due_ms.min(now_ms);
        }
    }

    /// Stops tracking `href` (the server no longer links to it).
    pub fn untrack(&mut self, href: &str) {
        self.entries.remove(href);
    }

    /// Stops tracking every group of `kind` whose href is not in `keep`.
    pub fn retain_kind(&mut self, kind: PollKind, keep: &[String]) {
        self.entries
            .retain(|href, entry| entry.kind != kind || keep.iter().any(|k| k == href));
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Makes every resource that runs on its own timer due at `now_ms` (a walk from the
    /// top after a rediscovery; the groups' children follow their parents).
    pub fn all_soon(&mut self, now_ms: u64) {
        for entry in self.entries.values_mut() {
            if !entry.kind.follows_parent() {
                entry.next_due_ms = entry.next_due_ms.min(now_ms);
            }
        }
    }

    /// Marks `href` as requested: not due again until [`Poller::polled`].
    pub fn started(&mut self, href: &str) {
        if let Some(entry) = self.entries.get_mut(href) {
            entry.in_flight = true;
        }
    }

    /// The hrefs due at `now_ms` and not already requested, in a stable order (the
    /// kind's order, then href), so the DeviceCapability and Time come before the lists
    /// under them.
    pub fn due(&self, now_ms: u64) -> Vec<(String, PollKind)> {
        let mut due: Vec<(String, PollKind)> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.next_due_ms <= now_ms && !entry.in_flight)
            .map(|(href, entry)| (href.clone(), entry.kind))
            .collect();
        due.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        due
    }

    /// The earliest instant any resource not already requested is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.entries
            .values()
            .filter(|entry| !entry.in_flight && entry.next_due_ms != WITH_PARENT)
            .map(|entry| entry.next_due_ms)
            .min()
    }

    /// Records a poll of `href` at `now_ms`. `Failed` (timeouts, 5xx, garbage) backs
    /// off; `Gone` (a 404 on a known href) backs off too and asks for rediscovery.
    /// `retry_after_ms` is a server-requested delay (429/503) that overrides the plan.
    pub fn polled(
        &mut self,
        href: &str,
        now_ms: u64,
        outcome: PollOutcome,
        retry_after_ms: Option<u64>,
    ) -> AfterPoll {
        let Some(entry) = self.entries.get_mut(href) else {
            return AfterPoll::Continue;
        };
        let rate_ms = u64::from(entry.rate_s) * 1000;
        entry.in_flight = false;
        match outcome {
            PollOutcome::Ok => {
                entry.consecutive_failures = 0;
                entry.last_poll_ms = Some(now_ms);
                entry.next_due_ms = if entry.kind.follows_parent() {
                    WITH_PARENT
                } else {
                    now_ms + rate_ms
                };
                if let Some(delay) = retry_after_ms {
                    entry.next_due_ms = entry.next_due_ms.max(now_ms + delay);
                }
                AfterPoll::Continue
            }
            PollOutcome::Failed | PollOutcome::Gone => {
                entry.consecutive_failures += 1;
                let shift = entry.consecutive_failures.min(10) - 1;
                let backoff = (MIN_RETRY_MS << shift)
                    .min(rate_ms.min(MAX_RETRY_MS))
                    .max(MIN_RETRY_MS);
                entry.next_due_ms = now_ms + retry_after_ms.unwrap_or(backoff).max(backoff);
                if outcome == PollOutcome::Gone {
                    AfterPoll::Rediscover
                } else {
                    AfterPoll::Continue
                }
            }
        }
    }

    /// The tracked groups (for the status page).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &PollEntry)> {
        self.entries
            .iter()
            .map(|(href, entry)| (href.as_str(), entry))
    }

    pub fn get(&self, href: &str) -> Option<&PollEntry> {
        self.entries.get(href)
    }
}

/// How a poll went, for [`Poller::polled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    Ok,
    /// Transport error, timeout, 5xx, or a body that did not parse.
    Failed,
    /// 404/410: the server no longer has the resource.
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_resource_is_due_at_once_then_at_its_rate() {
        let mut poller = Poller::new();
        poller.track(
            "/edev/1/fsa",
            PollKind::FunctionSetAssignmentsList,
            Some(60),
            1_000,
        );
        assert_eq!(poller.due(1_000).len(), 1);
        poller.polled("/edev/1/fsa", 1_000, PollOutcome::Ok, None);
        assert!(poller.due(60_999).is_empty());
        assert_eq!(poller.due(61_000).len(), 1);
        assert_eq!(poller.next_due_ms(), Some(61_000));
    }

    #[test]
    fn missing_rate_uses_default() {
        let mut poller = Poller::new();
        poller.track("/tm", PollKind::Time, None, 0);
        poller.polled("/tm", 0, PollOutcome::Ok, None);
        assert_eq!(
            poller.next_due_ms(),
            Some(u64::from(DEFAULT_POLL_RATE_S) * 1000)
        );
    }

    #[test]
    fn changed_rate_takes_effect_at_once() {
        // ALL-19: FSA list polled at 300 s, then the server says 60 s: the next poll is
        // 60 s after the last one, not 300 s.
        let mut poller = Poller::new();
        poller.track(
            "/edev/1/fsa",
            PollKind::FunctionSetAssignmentsList,
            Some(300),
            0,
        );
        poller.polled("/edev/1/fsa", 0, PollOutcome::Ok, None);
        assert_eq!(poller.next_due_ms(), Some(300_000));
        poller.track(
            "/edev/1/fsa",
            PollKind::FunctionSetAssignmentsList,
            Some(60),
            5_000,
        );
        assert_eq!(poller.next_due_ms(), Some(60_000));
        // a parent re-linking the list (no rate known) leaves the rate alone
        poller.track(
            "/edev/1/fsa",
            PollKind::FunctionSetAssignmentsList,
            None,
            6_000,
        );
        assert_eq!(poller.next_due_ms(), Some(60_000));
        // and a longer rate pushes it out (ALL-20: 60 s -> 120 s)
        poller.track(
            "/edev/1/fsa",
            PollKind::FunctionSetAssignmentsList,
            Some(120),
            5_000,
        );
        assert_eq!(poller.next_due_ms(), Some(120_000));
    }

    #[test]
    fn failures_back_off_capped_and_never_ask_for_rediscovery() {
        let mut poller = Poller::new();
        poller.track("/dcap", PollKind::DeviceCapability, Some(300), 0);
        let mut at = 0;
        let mut delays = Vec::new();
        for _ in 0..10 {
            assert_eq!(
                poller.polled("/dcap", at, PollOutcome::Failed, None),
                AfterPoll::Continue
            );
            let next = poller.next_due_ms().expect("due");
            delays.push(next - at);
            at = next;
        }
        // 2, 4, 8, 16, 32 s, then never more than 60 s (ALL-23), though the rate is 300 s
        assert_eq!(
            delays,
            [
                2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000, 60_000
            ]
        );
        // a success resets the count
        poller.polled("/dcap", at, PollOutcome::Ok, None);
        assert_eq!(poller.get("/dcap").map(|e| e.consecutive_failures), Some(0));
        // and a short rate caps the backoff lower still
        poller.track("/tm", PollKind::Time, Some(5), 0);
        for _ in 0..5 {
            poller.polled("/tm", 0, PollOutcome::Failed, None);
        }
        assert_eq!(poller.get("/tm").map(|e| e.next_due_ms), Some(5_000));
    }

    #[test]
    fn children_follow_their_parent_and_fail_alone() {
        let mut poller = Poller::new();
        poller.track("/derp", PollKind::DerProgramList, Some(60), 0);
        poller.track("/derc", PollKind::DerControlList, Some(60), 0);
        poller.started("/derc");
        assert!(poller.due(0).iter().all(|(h, _)| h != "/derc"), "in flight");
        poller.polled("/derc", 0, PollOutcome::Ok, None);
        poller.polled("/derp", 0, PollOutcome::Ok, None);
        // healthy: only the parent's timer runs
        assert_eq!(poller.next_due_ms(), Some(60_000));
        poller.poll_soon("/derc", 60_000);
        assert_eq!(poller.due(60_000).len(), 2);
        // failing: its own backoff
        poller.polled("/derc", 60_000, PollOutcome::Failed, None);
        assert_eq!(poller.get("/derc").map(|e| e.next_due_ms), Some(62_000));
    }

    #[test]
    fn a_cap_shortens_long_server_rates() {
        let mut poller = Poller::new();
        poller.set_max_rate_s(Some(5));
        poller.track("/derp", PollKind::DerProgramList, Some(900), 0);
        poller.polled("/derp", 0, PollOutcome::Ok, None);
        assert_eq!(poller.next_due_ms(), Some(5_000));
        poller.track("/tm", PollKind::Time, None, 0);
        assert_eq!(poller.get("/tm").map(|e| e.rate_s), Some(5));
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut poller = Poller::new();
        poller.track("/dcap", PollKind::DeviceCapability, Some(60), 0);
        poller.polled("/dcap", 0, PollOutcome::Failed, Some(30_000));
        assert_eq!(poller.next_due_ms(), Some(30_000));
    }

    #[test]
    fn gone_asks_for_rediscovery_at_once() {
        let mut poller = Poller::new();
        poller.track("/edev/1/der", PollKind::DerList, Some(60), 0);
        assert_eq!(
            poller.polled("/edev/1/der", 0, PollOutcome::Gone, None),
            AfterPoll::Rediscover
        );
    }

    #[test]
    fn due_order_puts_dcap_first_and_retain_drops_vanished() {
        let mut poller = Poller::new();
        poller.track("/edev/1/fsa/2/derp", PollKind::DerProgramList, None, 0);
        poller.track("/edev/1/fsa/1/derp", PollKind::DerProgramList, None, 0);
        poller.track("/dcap", PollKind::DeviceCapability, None, 0);
        let due: Vec<String> = poller.due(0).into_iter().map(|(h, _)| h).collect();
        assert_eq!(due, ["/dcap", "/edev/1/fsa/1/derp", "/edev/1/fsa/2/derp"]);
        poller.retain_kind(
            PollKind::DerProgramList,
            &["/edev/1/fsa/2/derp".to_string()],
        );
        let due: Vec<String> = poller.due(0).into_iter().map(|(h, _)| h).collect();
        assert_eq!(due, ["/dcap", "/edev/1/fsa/2/derp"]);
    }
}
