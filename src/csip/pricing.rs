//! Pricing function set (IEEE 2030.5 §10.6, CSIP-AUS v1.3 PRC-01..05): the
//! TariffProfileLists the FSAs link, each TariffProfile's RateComponentList, each
//! RateComponent's ReadingType and TimeTariffIntervalList, and each TimeTariffInterval's
//! ConsumptionTariffIntervalList (its price blocks); from them a price timeline that
//! says, for each RateComponent, the price now and the next one.
//!
//! Polling (the certification harness counts the requests, PRC-01/03/05): the
//! TariffProfileList runs on its own `pollRate` and its RateComponentLists *follow* it
//! (read with it, never on their own timer); each TimeTariffIntervalList runs on its own
//! `pollRate` (the schema has none for it: until it states one, the TariffProfileList's)
//! and the ConsumptionTariffIntervalLists of its live intervals follow it. A
//! ReadingType is read once per href (it describes the unit, it does not change). So a
//! RateComponentList that changes is picked up at the next TariffProfileList poll, and
//! a new RateComponent's TimeTariffIntervalList is read at once.
//!
//! Failure isolation as everywhere in the engine: a list that fails keeps what was last
//! read of it and backs off alone; an item that does not read is left out alone
//! (`sep2::read_list`) and named in that list's status.
//!
//! The timeline ([`PricingSet::view`]) is a pure function of what was read and the server
//! time: an interval whose EventStatus is cancelled (2, 3) or superseded (4) is not in
//! it; randomizeStart/randomizeDuration are drawn once per interval mRID. Overlapping
//! intervals of one RateComponent: the one created last wins (2030.5 event rules).
//!
//! The reference CSIP-AUS v1.3 server (the certification harness's) also links a csipaus
//! `CombinedTimeTariffIntervalListLink` on each TariffProfile: every interval of every
//! component in one list, each interval naming its `RateComponentLink` and carrying its
//! price blocks inline (`ConsumptionTariffIntervalListSummary`). Where a profile has
//! one, it is the profile's only interval source (on its own pollRate, as a
//! TimeTariffIntervalList); a component an interval names that no RateComponentList read
//! so far holds is read on its own, once (`PollKind::RateComponent`).
//!
//! Responses (IEEE 2030.5 Table 27; PRC-04/05 check them): a TimeTariffInterval with a
//! `replyTo` is answered with a PriceResponse, as its `responseRequired` bits ask: 1
//! Received (bit 0) when first seen; with bit 1 (specific responses) 2 Started when it
//! begins, 3 Completed when it ends after it started, 6 Cancelled when seen cancelled;
//! each once, in order, one at a time, retried until the server accepts or refuses
//! (4xx). What was sent is remembered in memory only: after a restart the intervals
//! still listed are answered again (not persisted like the DER scheduler's ledger).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::http::Method;
use crate::schedule::Rng;
use crate::sep2::{
    ConsumptionTariffInterval, CurrentStatus, DerControlResponse, PriceResponse, RateComponent,
    ReadingType, TariffProfile, TimeTariffInterval,
};

use super::context::{Answer, Ctx, Paged, PollError, PollPart, Purpose, next_page, read};
use super::poller::PollKind;

/// ReadingType flowDirection 1: forward, energy delivered to the customer (import).
const FLOW_FORWARD: u8 = 1;
/// ReadingType flowDirection 19: reverse, energy received from the customer (export).
const FLOW_REVERSE: u8 = 19;
/// UomType 72: real energy, Wh.
const UOM_WH: u8 = 72;

/// Pricing state: everything read under the FSAs' TariffProfileLists.
#[derive(Debug, Clone)]
pub struct PricingSet {
    /// TariffProfileList hrefs of the FSAs, in FSA order.
    lists: Vec<String>,
    /// Profiles per TariffProfileList href.
    profiles: BTreeMap<String, Vec<TariffProfile>>,
    /// RateComponents per RateComponentList href.
    components: BTreeMap<String, Vec<RateComponent>>,
    /// RateComponents read on their own (a combined list's interval links one that no
    /// RateComponentList read so far holds), by href, read once.
    resolved: BTreeMap<String, RateComponent>,
    /// ReadingTypes by href (read once).
    reading_types: BTreeMap<String, ReadingType>,
    /// Intervals per TimeTariffIntervalList href.
    intervals: BTreeMap<String, Vec<TimeTariffInterval>>,
    /// Price blocks per ConsumptionTariffIntervalList href.
    blocks: BTreeMap<String, Vec<ConsumptionTariffInterval>>,
    /// Randomisation draws per interval mRID: (start offset s, duration offset s).
    draws: BTreeMap<String, (i64, i64)>,
    rng: Rng,
    /// PriceResponses due, oldest first: (replyTo, interval mRID, status, at Unix s).
    outbox: VecDeque<(String, String, u8, i64)>,
    /// (interval mRID, status) already queued (each is sent once).
    answered: BTreeSet<(String, u8)>,
    response_in_flight: bool,
    response_retry_at_ms: u64,
    response_failures: u32,
    /// Bumped whenever anything read changes (the status is rebuilt then).
    pub version: u64,
}

impl PricingSet {
    /// Nothing read yet; `rng_seed` seeds the randomisation draws (a stream apart from
    /// the DER scheduler's).
    pub fn new(rng_seed: u64) -> PricingSet {
        PricingSet {
            lists: Vec::new(),
            profiles: BTreeMap::new(),
            components: BTreeMap::new(),
            resolved: BTreeMap::new(),
            reading_types: BTreeMap::new(),
            intervals: BTreeMap::new(),
            blocks: BTreeMap::new(),
            draws: BTreeMap::new(),
            // Another stream than the DER scheduler's draws.
            rng: Rng::new(rng_seed ^ 0x5052_4943_4553),
            outbox: VecDeque::new(),
            answered: BTreeSet::new(),
            response_in_flight: false,
            response_retry_at_ms: 0,
            response_failures: 0,
            version: 0,
        }
    }

    /// The FSAs now link the TariffProfileLists `lists` (FSA order).
    pub fn link(&mut self, ctx: &mut Ctx, lists: &[String]) {
        if self.lists != lists {
            for href in lists.iter().filter(|h| !self.lists.contains(h)) {
                log::info!("csip: pricing: TariffProfileList {href}");
            }
        }
        self.lists = lists.to_vec();
        for href in lists {
            ctx.poller
                .track(href, PollKind::TariffProfileList, None, ctx.now.mono_ms);
        }
        self.retain(ctx);
    }

    /// Starts the GET of a due pricing resource.
    pub fn request(&self, ctx: &mut Ctx, href: &str, kind: PollKind) {
        let part = match kind {
            PollKind::TariffProfileList => PollPart::TariffProfiles(Paged::new(href)),
            PollKind::RateComponentList => PollPart::RateComponents(Paged::new(href)),
            PollKind::TimeTariffIntervalList => PollPart::TimeTariffIntervals(Paged::new(href)),
            PollKind::ConsumptionTariffIntervalList => {
                PollPart::ConsumptionTariffIntervals(Paged::new(href))
            }
            _ => PollPart::Single,
        };
        ctx.poll(href, kind, part);
    }

    /// A page of a TariffProfileList: its RateComponentLists are read now, with it.
    pub fn handle_profiles(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<TariffProfile>,
        answer: Answer,
    ) {
        if gone(ctx, href) {
            return;
        }
        let kind = PollKind::TariffProfileList;
        let Some(paged) = next_page(ctx, href, kind, paged, answer, PollPart::TariffProfiles)
        else {
            return;
        };
        ctx.poll_ok(href, kind, paged.poll_rate_s);
        let rate = ctx.poller.get(href).map(|e| e.rate_s);
        self.replace(|s| &mut s.profiles, href, paged.items);
        self.retain(ctx);
        let now_ms = ctx.now.mono_ms;
        for profile in self.profiles.get(href).into_iter().flatten() {
            if let Some(link) = &profile.rate_component_list_link {
                ctx.poller
                    .track(&link.href, PollKind::RateComponentList, rate, now_ms);
                ctx.poller.poll_soon(&link.href, now_ms);
            }
            if let Some(link) = &profile.combined_time_tariff_interval_list_link {
                track_intervals(ctx, &link.href, rate);
            }
        }
    }

    /// A page of a RateComponentList: new ReadingTypes are read now; each component's
    /// TimeTariffIntervalList runs on its own timer (a new one is due at once).
    pub fn handle_components(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<RateComponent>,
        answer: Answer,
    ) {
        if gone(ctx, href) {
            return;
        }
        let kind = PollKind::RateComponentList;
        let Some(paged) = next_page(ctx, href, kind, paged, answer, PollPart::RateComponents)
        else {
            return;
        };
        ctx.poll_ok(href, kind, None);
        let rate = ctx.poller.get(href).map(|e| e.rate_s);
        self.replace(|s| &mut s.components, href, paged.items);
        self.retain(ctx);
        // A profile with a combined list takes its intervals from there only (reading
        // both would double the interval reads the harness counts, PRC-03).
        let combined = self.profiles.values().flatten().any(|p| {
            p.combined_time_tariff_interval_list_link.is_some()
                && p.rate_component_list_link.as_ref().map(|l| l.href.as_str()) == Some(href)
        });
        for component in self.components.get(href).into_iter().flatten() {
            self.want_reading_type(ctx, component);
            if let (false, Some(link)) = (combined, &component.time_tariff_interval_list_link) {
                track_intervals(ctx, &link.href, rate);
            }
        }
        self.resolve_components(ctx);
    }

    /// A combined list's intervals name their RateComponent: one that the profile's
    /// RateComponentList (once read) does not hold is read on its own, once (PRC-05: a
    /// component added while the TariffProfileList waits out its pollRate).
    fn resolve_components(&self, ctx: &mut Ctx) {
        let now_ms = ctx.now.mono_ms;
        for profile in self.profiles.values().flatten() {
            let Some(combined) = &profile.combined_time_tariff_interval_list_link else {
                continue;
            };
            if let Some(rcl) = &profile.rate_component_list_link {
                // Not before the list is read: it most likely holds them all.
                if !self.components.contains_key(&rcl.href) {
                    continue;
                }
            }
            let unknown: BTreeSet<&str> = self
                .intervals
                .get(&combined.href)
                .into_iter()
                .flatten()
                .filter_map(|i| i.rate_component_link.as_ref())
                .map(|l| l.href.as_str())
                .filter(|h| self.component(h).is_none())
                .collect();
            for rc_href in unknown {
                if ctx.poller.get(rc_href).is_none() {
                    ctx.poller
                        .track(rc_href, PollKind::RateComponent, None, now_ms);
                    ctx.poller.poll_soon(rc_href, now_ms);
                }
            }
        }
    }

    /// Reads `component`'s ReadingType now unless it is known.
    fn want_reading_type(&self, ctx: &mut Ctx, component: &RateComponent) {
        if let Some(link) = &component.reading_type_link {
            if !self.reading_types.contains_key(&link.href) {
                let now_ms = ctx.now.mono_ms;
                ctx.poller
                    .track(&link.href, PollKind::ReadingType, None, now_ms);
                ctx.poller.poll_soon(&link.href, now_ms);
            }
        }
    }

    /// The RateComponent at `href`, from a RateComponentList or read on its own.
    fn component(&self, href: &str) -> Option<&RateComponent> {
        self.components
            .values()
            .flatten()
            .find(|c| c.href.as_deref() == Some(href))
            .or_else(|| self.resolved.get(href))
    }

    /// A RateComponent read on its own (linked by a combined list's interval).
    pub fn handle_component(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) {
        if gone(ctx, href) {
            return;
        }
        let kind = PollKind::RateComponent;
        let component = match answer {
            Answer::Ok(response) => match read::<RateComponent>(&response) {
                Ok(component) => component,
                Err(err) => return ctx.poll_failed(href, kind, PollError::parse(err)),
            },
            other => return ctx.poll_failed(href, kind, PollError::of(other)),
        };
        ctx.poll_ok(href, kind, None);
        self.want_reading_type(ctx, &component);
        if self.resolved.get(href) != Some(&component) {
            self.resolved.insert(href.to_string(), component);
            self.version += 1;
        }
    }

    /// A RateComponent's ReadingType.
    pub fn handle_reading_type(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) {
        if gone(ctx, href) {
            return;
        }
        let kind = PollKind::ReadingType;
        let reading_type = match answer {
            Answer::Ok(response) => match read::<ReadingType>(&response) {
                Ok(reading_type) => reading_type,
                Err(err) => return ctx.poll_failed(href, kind, PollError::parse(err)),
            },
            other => return ctx.poll_failed(href, kind, PollError::of(other)),
        };
        ctx.poll_ok(href, kind, None);
        if self.reading_types.get(href) != Some(&reading_type) {
            self.reading_types.insert(href.to_string(), reading_type);
            self.version += 1;
        }
    }

    /// A page of a TimeTariffIntervalList: the price blocks of its live intervals are
    /// read now, with it.
    pub fn handle_intervals(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<TimeTariffInterval>,
        answer: Answer,
    ) {
        if gone(ctx, href) {
            return;
        }
        let kind = PollKind::TimeTariffIntervalList;
        let Some(paged) = next_page(
            ctx,
            href,
            kind,
            paged,
            answer,
            PollPart::TimeTariffIntervals,
        ) else {
            return;
        };
        ctx.poll_ok(href, kind, paged.poll_rate_s);
        let rate = ctx.poller.get(href).map(|e| e.rate_s);
        let mut items = paged.items;
        // An interval that no longer reads but was read before keeps its good copy.
        for bad in &paged.skipped {
            let good = bad.mrid.as_ref().and_then(|m| {
                self.intervals
                    .get(href)
                    .and_then(|old| old.iter().find(|i| &i.mrid == m))
            });
            if let Some(good) = good {
                items.push(good.clone());
            }
        }
        for interval in &items {
            let known = self
                .intervals
                .get(href)
                .is_some_and(|old| old.iter().any(|o| o.mrid == interval.mrid));
            if !known {
                log::info!(
                    "csip: pricing: TimeTariffInterval {} ({}) from {} for {} s{}",
                    interval.mrid,
                    interval.description.as_deref().unwrap_or("-"),
                    interval.interval.start,
                    interval.interval.duration_s,
                    if is_cancelled(interval) {
                        ", cancelled"
                    } else {
                        ""
                    }
                );
            }
        }
        self.replace(|s| &mut s.intervals, href, items);
        self.retain(ctx);
        let now_ms = ctx.now.mono_ms;
        let server_now_s = ctx.server_now_s();
        for interval in self.intervals.get(href).into_iter().flatten() {
            if let Some(link) = blocks_link(interval, server_now_s) {
                ctx.poller
                    .track(link, PollKind::ConsumptionTariffIntervalList, rate, now_ms);
                ctx.poller.poll_soon(link, now_ms);
            }
        }
        self.resolve_components(ctx);
        self.queue_responses(ctx);
        // Draw each new interval's randomisation once.
        for interval in self.intervals.get(href).into_iter().flatten() {
            if !self.draws.contains_key(&interval.mrid) {
                let start = draw(&mut self.rng, interval.randomize_start_s);
                let duration = draw(&mut self.rng, interval.randomize_duration_s);
                self.draws.insert(interval.mrid.clone(), (start, duration));
            }
        }
    }

    /// A page of a ConsumptionTariffIntervalList.
    pub fn handle_blocks(
        &mut self,
        ctx: &mut Ctx,
        href: &str,
        paged: Paged<ConsumptionTariffInterval>,
        answer: Answer,
    ) {
        if gone(ctx, href) {
            return;
        }
        let kind = PollKind::ConsumptionTariffIntervalList;
        let Some(paged) = next_page(
            ctx,
            href,
            kind,
            paged,
            answer,
            PollPart::ConsumptionTariffIntervals,
        ) else {
            return;
        };
        ctx.poll_ok(href, kind, None);
        self.replace(|s| &mut s.blocks, href, paged.items);
    }

    /// Replaces what was read at `href` in one of the maps, noting a change.
    fn replace<T: PartialEq>(
        &mut self,
        map: fn(&mut PricingSet) -> &mut BTreeMap<String, Vec<T>>,
        href: &str,
        items: Vec<T>,
    ) {
        let slot = map(self);
        if slot.get(href) != Some(&items) {
            slot.insert(href.to_string(), items);
            self.version += 1;
        }
    }

    /// Forgets (and stops polling) whatever is no longer linked from the FSAs down.
    fn retain(&mut self, ctx: &mut Ctx) {
        let server_now_s = ctx.server_now_s();
        let lists = self.lists.clone();
        let before = self.version;
        retain_map(&mut self.profiles, &lists, &mut self.version);
        let rc_lists: Vec<String> = self
            .profiles
            .values()
            .flatten()
            .filter_map(|p| p.rate_component_list_link.as_ref())
            .map(|l| l.href.clone())
            .collect();
        retain_map(&mut self.components, &rc_lists, &mut self.version);
        // Per-component interval lists of profiles without a combined list, and the
        // combined lists.
        let mut tti_lists: Vec<String> = Vec::new();
        for profile in self.profiles.values().flatten() {
            match (
                &profile.combined_time_tariff_interval_list_link,
                &profile.rate_component_list_link,
            ) {
                (Some(combined), _) => tti_lists.push(combined.href.clone()),
                (None, Some(rcl)) => tti_lists.extend(
                    self.components
                        .get(&rcl.href)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.time_tariff_interval_list_link.as_ref())
                        .map(|l| l.href.clone()),
                ),
                (None, None) => {}
            }
        }
        retain_map(&mut self.intervals, &tti_lists, &mut self.version);
        // Components read on their own: those the intervals still name and no list has.
        let listed: BTreeSet<String> = self
            .components
            .values()
            .flatten()
            .filter_map(|c| c.href.clone())
            .collect();
        let resolved: Vec<String> = self
            .intervals
            .values()
            .flatten()
            .filter_map(|i| i.rate_component_link.as_ref())
            .map(|l| l.href.clone())
            .filter(|h| !listed.contains(h))
            .collect();
        retain_map(&mut self.resolved, &resolved, &mut self.version);
        let reading_types: Vec<String> = self
            .components
            .values()
            .flatten()
            .chain(self.resolved.values())
            .filter_map(|c| c.reading_type_link.as_ref())
            .map(|l| l.href.clone())
            .collect();
        let cti_lists: Vec<String> = self
            .intervals
            .values()
            .flatten()
            .filter_map(|i| blocks_link(i, server_now_s))
            .map(str::to_string)
            .collect();
        retain_map(&mut self.blocks, &cti_lists, &mut self.version);
        self.reading_types
            .retain(|href, _| reading_types.contains(href));
        let live: BTreeSet<&str> = self
            .intervals
            .values()
            .flatten()
            .map(|i| i.mrid.as_str())
            .collect();
        self.draws.retain(|mrid, _| live.contains(mrid.as_str()));
        ctx.poller.retain_kind(PollKind::TariffProfileList, &lists);
        ctx.poller
            .retain_kind(PollKind::RateComponentList, &rc_lists);
        ctx.poller
            .retain_kind(PollKind::ReadingType, &reading_types);
        ctx.poller.retain_kind(PollKind::RateComponent, &resolved);
        ctx.poller
            .retain_kind(PollKind::TimeTariffIntervalList, &tti_lists);
        ctx.poller
            .retain_kind(PollKind::ConsumptionTariffIntervalList, &cti_lists);
        if self.version != before {
            log::debug!("csip: pricing: resources no longer linked forgotten");
        }
    }

    /// The prices now and next at server time `now_s`, per RateComponent.
    pub fn view(&self, now_s: i64) -> Vec<RatePrice> {
        let mut out = Vec::new();
        for list in &self.lists {
            for profile in self.profiles.get(list).into_iter().flatten() {
                let tp_href = profile.href.clone().unwrap_or_default();
                // (component, its intervals) pairs of this profile.
                let mut parts: Vec<(RateComponent, Vec<&TimeTariffInterval>)> = Vec::new();
                if let Some(link) = &profile.combined_time_tariff_interval_list_link {
                    // Grouped by the interval's RateComponentLink.
                    for interval in self.intervals.get(&link.href).into_iter().flatten() {
                        let rc_href = interval
                            .rate_component_link
                            .as_ref()
                            .map(|l| l.href.clone())
                            .unwrap_or_default();
                        match parts
                            .iter_mut()
                            .find(|(c, _)| c.href.as_deref() == Some(rc_href.as_str()))
                        {
                            Some((_, intervals)) => intervals.push(interval),
                            None => parts.push((
                                self.component(&rc_href).cloned().unwrap_or(RateComponent {
                                    href: Some(rc_href),
                                    ..RateComponent::default()
                                }),
                                vec![interval],
                            )),
                        }
                    }
                } else if let Some(link) = &profile.rate_component_list_link {
                    for component in self.components.get(&link.href).into_iter().flatten() {
                        let intervals = component
                            .time_tariff_interval_list_link
                            .as_ref()
                            .and_then(|l| self.intervals.get(&l.href))
                            .map(|v| v.iter().collect())
                            .unwrap_or_default();
                        parts.push((component.clone(), intervals));
                    }
                }
                for (component, intervals) in parts {
                    let reading_type = component
                        .reading_type_link
                        .as_ref()
                        .and_then(|l| self.reading_types.get(&l.href));
                    out.push(self.rate_price(
                        profile,
                        &tp_href,
                        &component,
                        reading_type,
                        &intervals,
                        now_s,
                    ));
                }
            }
        }
        out
    }

    fn rate_price(
        &self,
        profile: &TariffProfile,
        tp_href: &str,
        component: &RateComponent,
        reading_type: Option<&ReadingType>,
        intervals: &[&TimeTariffInterval],
        now_s: i64,
    ) -> RatePrice {
        let unit = Unit::of(reading_type);
        let price_pow10 = profile.price_power_of_ten_multiplier.unwrap_or(0);
        let timed: Vec<(i64, i64, &TimeTariffInterval)> = intervals
            .iter()
            .filter(|i| !is_cancelled(i))
            .map(|i| {
                let (ds, dd) = self.draws.get(&i.mrid).copied().unwrap_or((0, 0));
                let start = i.interval.start + ds;
                let end = (i.interval.end() + ds + dd).max(start);
                (start, end, *i)
            })
            .collect();
        // Of overlapping intervals the one created last wins.
        let current = timed
            .iter()
            .filter(|(start, end, _)| *start <= now_s && now_s < *end)
            .max_by_key(|(start, _, i)| (i.creation_time, *start));
        let next = timed
            .iter()
            .filter(|(start, _, _)| *start > now_s)
            .min_by_key(|(start, _, i)| (*start, std::cmp::Reverse(i.creation_time)));
        let point = |(start, end, interval): &(i64, i64, &TimeTariffInterval)| {
            let blocks: &[ConsumptionTariffInterval] = if interval.consumption_blocks.is_empty() {
                interval
                    .consumption_tariff_interval_list_link
                    .as_ref()
                    .and_then(|l| self.blocks.get(&l.href))
                    .map(Vec::as_slice)
                    .unwrap_or_default()
            } else {
                &interval.consumption_blocks
            };
            let mut blocks: Vec<PriceBlock> = blocks
                .iter()
                .filter_map(|b| {
                    let price = b.price?;
                    Some(PriceBlock {
                        start_value: b.start_value,
                        price: price as i64,
                        price_per_unit: unit.per_unit(price, price_pow10),
                    })
                })
                .collect();
            blocks.sort_by_key(|b| b.start_value);
            PricePoint {
                mrid: interval.mrid.clone(),
                description: interval.description.clone(),
                start_unix_s: *start,
                end_unix_s: *end,
                blocks,
            }
        };
        RatePrice {
            tariff_profile_href: tp_href.to_string(),
            rate_component_href: component.href.clone().unwrap_or_default(),
            description: component
                .description
                .clone()
                .or_else(|| profile.description.clone()),
            primacy: profile.primacy,
            direction: unit.direction,
            unit: unit.name.clone(),
            currency: profile.currency,
            price_power_of_ten_multiplier: price_pow10,
            current: current.map(point),
            next: next.map(point),
        }
    }

    /// When the timeline next changes after server time `now_s` (an interval starts or
    /// ends), in the engine's monotonic ms.
    pub fn next_change_ms(&self, ctx: &Ctx) -> Option<u64> {
        let now_s = ctx.server_now_s();
        let next_s = self
            .intervals
            .values()
            .flatten()
            .filter(|i| !is_cancelled(i))
            .flat_map(|i| {
                let (ds, dd) = self.draws.get(&i.mrid).copied().unwrap_or((0, 0));
                [i.interval.start + ds, i.interval.end() + ds + dd]
            })
            .filter(|t| *t > now_s)
            .min()?;
        let server_now_ms = ctx.now.utc_ms + ctx.clock.offset_s() * 1000;
        let wait_ms = (next_s * 1000 - server_now_ms).max(0) as u64;
        Some(ctx.now.mono_ms + wait_ms)
    }
}

/// Tracks a TimeTariffIntervalList on its own timer, due at once when new. The
/// schema gives these lists no pollRate: until the list states one (the reference
/// server adds it), it runs at `parent_rate_s`, the TariffProfileList's.
fn track_intervals(ctx: &mut Ctx, href: &str, parent_rate_s: Option<u32>) {
    if ctx.poller.get(href).is_none() {
        ctx.poller.track(
            href,
            PollKind::TimeTariffIntervalList,
            parent_rate_s,
            ctx.now.mono_ms,
        );
    }
}

/// The request of this function set: the POST of a PriceResponse.
#[derive(Debug)]
pub struct Req {
    /// The interval answered.
    pub mrid: String,
    /// Response status (IEEE 2030.5 Table 27): 1 received, 6 cancelled.
    pub status: u8,
}

/// responseRequired bit 0: Received; bit 1: specific responses (e.g. Cancelled).
const RESPONSE_RECEIVED_BIT: u8 = 1;
const RESPONSE_SPECIFIC_BIT: u8 = 2;
/// Delay before a PriceResponse is tried again after a failure (doubling, capped).
const RESPONSE_RETRY_MS: u64 = 5_000;
const RESPONSE_RETRY_MAX_MS: u64 = 60_000;

impl PricingSet {
    /// Queues the responses the intervals ask for now: Received when first seen,
    /// Started when it begins, Completed when it ends after it started, Cancelled when
    /// seen cancelled (effective times, randomisation applied).
    fn queue_responses(&mut self, ctx: &Ctx) {
        let now_s = ctx.server_now_s();
        let mut due: Vec<(String, String, u8)> = Vec::new();
        for interval in self.intervals.values().flatten() {
            let Some(reply_to) = &interval.reply_to else {
                continue;
            };
            let required = interval.response_required.unwrap_or(0);
            let specific = required & RESPONSE_SPECIFIC_BIT != 0;
            let (ds, dd) = self.draws.get(&interval.mrid).copied().unwrap_or((0, 0));
            let start = interval.interval.start + ds;
            let end = (interval.interval.end() + ds + dd).max(start);
            let started = self.answered.contains(&(interval.mrid.clone(), 2));
            let mut statuses = Vec::new();
            if required & RESPONSE_RECEIVED_BIT != 0 {
                statuses.push(1);
            }
            if specific && is_cancelled(interval) {
                statuses.push(6);
            } else if specific && start <= now_s && now_s < end {
                statuses.push(2);
            } else if specific && now_s >= end && started {
                statuses.push(3);
            }
            for status in statuses {
                due.push((reply_to.clone(), interval.mrid.clone(), status));
            }
        }
        for (reply_to, mrid, status) in due {
            if self.answered.insert((mrid.clone(), status)) {
                self.outbox.push_back((reply_to, mrid, status, now_s));
            }
        }
        // Bounded memory: forget what no list holds any more.
        let live: BTreeSet<&str> = self
            .intervals
            .values()
            .flatten()
            .map(|i| i.mrid.as_str())
            .collect();
        let outbox = &self.outbox;
        self.answered.retain(|(mrid, _)| {
            live.contains(mrid.as_str()) || outbox.iter().any(|(_, m, _, _)| m == mrid)
        });
    }

    /// POSTs the front PriceResponse when writes are allowed and none is in flight.
    pub fn flush(&mut self, ctx: &mut Ctx) {
        self.queue_responses(ctx);
        if !ctx.writable() || self.response_in_flight || ctx.now.mono_ms < self.response_retry_at_ms
        {
            return;
        }
        while let Some((reply_to, mrid, status, at_s)) = self.outbox.front().cloned() {
            let body = PriceResponse(DerControlResponse {
                href: None,
                created_date_time: Some(at_s),
                end_device_lfdi: ctx.config.lfdi.to_ascii_uppercase(),
                status: Some(status),
                subject: mrid.clone(),
            });
            match ctx.write(&body) {
                Ok(xml) => {
                    self.response_in_flight = true;
                    ctx.send(
                        Method::Post,
                        reply_to,
                        Some(xml),
                        Purpose::Pricing(Req { mrid, status }),
                    );
                    return;
                }
                Err(err) => {
                    ctx.error(format!("cannot write PriceResponse to {mrid}: {err}"));
                    self.outbox.pop_front();
                }
            }
        }
    }

    /// The answer to a PriceResponse POST: accepted or refused (4xx) settles it, any
    /// other failure retries it with backoff.
    pub fn handle_response(&mut self, ctx: &mut Ctx, req: Req, href: &str, answer: Answer) {
        self.response_in_flight = false;
        let refused = match answer {
            Answer::Ok(_) => {
                ctx.send_ok();
                self.response_failures = 0;
                log::info!(
                    "csip: price response {} to {} sent to {href}",
                    req.status,
                    req.mrid
                );
                false
            }
            Answer::Gone(status) => {
                ctx.error(format!(
                    "price response {} to {} refused by {href}: HTTP {status}",
                    req.status, req.mrid
                ));
                true
            }
            Answer::Failed(err) => {
                ctx.send_failed(&err);
                if err
                    .status()
                    .is_some_and(|s| (400..500).contains(&s) && s != 429)
                {
                    ctx.error(format!(
                        "price response {} to {} refused by {href}; not retried: {err}",
                        req.status, req.mrid
                    ));
                    true
                } else {
                    self.response_failures += 1;
                    let backoff = (RESPONSE_RETRY_MS << (self.response_failures.min(8) - 1))
                        .min(RESPONSE_RETRY_MAX_MS);
                    let after = err.retry_after().map_or(0, |d| d.as_millis() as u64);
                    self.response_retry_at_ms = ctx.now.mono_ms + after.max(backoff);
                    return;
                }
            }
        };
        if refused {
            log::warn!(
                "csip: price response {} to {} dropped",
                req.status,
                req.mrid
            );
        }
        self.outbox.pop_front();
    }

    /// When a PriceResponse that failed is due again (monotonic ms), if one waits.
    pub fn next_response_ms(&self) -> Option<u64> {
        (!self.outbox.is_empty() && !self.response_in_flight).then_some(self.response_retry_at_ms)
    }

    /// PriceResponses waiting to be sent.
    pub fn responses_pending(&self) -> usize {
        self.outbox.len()
    }
}

/// An answer for a resource no longer linked (untracked while its request was out):
/// dropped, so it is not tracked (and read) again.
fn gone(ctx: &Ctx, href: &str) -> bool {
    ctx.poller.get(href).is_none()
}

fn retain_map<T>(map: &mut BTreeMap<String, T>, keep: &[String], version: &mut u64) {
    let before = map.len();
    map.retain(|href, _| keep.contains(href));
    if map.len() != before {
        *version += 1;
    }
}

fn draw(rng: &mut Rng, bound_s: Option<i16>) -> i64 {
    match bound_s {
        Some(bound) if bound != 0 => i64::from(rng.draw_offset_s(i32::from(bound))),
        _ => 0,
    }
}

/// Cancelled (2, 3) or superseded (4): not in the timeline.
fn is_cancelled(interval: &TimeTariffInterval) -> bool {
    matches!(
        interval.event_status.current_status,
        CurrentStatus::Cancelled
            | CurrentStatus::CancelledWithRandomization
            | CurrentStatus::Superseded
    )
}

/// The ConsumptionTariffIntervalList to read for `interval`: none when cancelled,
/// ended, or its blocks came inline.
fn blocks_link(interval: &TimeTariffInterval, server_now_s: i64) -> Option<&str> {
    if is_cancelled(interval)
        || interval.interval.end() <= server_now_s
        || !interval.consumption_blocks.is_empty()
    {
        return None;
    }
    interval
        .consumption_tariff_interval_list_link
        .as_ref()
        .map(|l| l.href.as_str())
}

/// Which way the priced energy flows, from the RateComponent's ReadingType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceDirection {
    /// flowDirection 1 (forward): energy the site imports.
    Import,
    /// flowDirection 19 (reverse): energy the site exports.
    Export,
    /// No (known) flow direction, e.g. a daily charge, or the ReadingType is not read
    /// yet.
    Other,
}

/// The unit a component's prices are per, from its ReadingType.
struct Unit {
    direction: PriceDirection,
    /// "kWh" for energy; else "uom N×10^m" (UomType code and power of ten).
    name: String,
    /// Power of ten that turns a price per ReadingType unit into a price per `name`.
    pow10: i32,
}

impl Unit {
    fn of(reading_type: Option<&ReadingType>) -> Unit {
        let Some(rt) = reading_type else {
            return Unit {
                direction: PriceDirection::Other,
                name: "unknown unit (ReadingType not read)".into(),
                pow10: 0,
            };
        };
        let direction = match rt.flow_direction {
            Some(FLOW_FORWARD) => PriceDirection::Import,
            Some(FLOW_REVERSE) => PriceDirection::Export,
            _ => PriceDirection::Other,
        };
        let m = i32::from(rt.power_of_ten_multiplier.unwrap_or(0));
        match rt.uom {
            // A price per 10^m Wh is a price per kWh times 10^(3-m).
            Some(UOM_WH) => Unit {
                direction,
                name: "kWh".into(),
                pow10: 3 - m,
            },
            uom => Unit {
                direction,
                name: match uom {
                    Some(uom) if m == 0 => format!("uom {uom}"),
                    Some(uom) => format!("uom {uom}×10^{m}"),
                    None => "unknown unit (no uom)".into(),
                },
                pow10: 0,
            },
        }
    }

    /// Currency units per `name` (e.g. dollars per kWh), from the integer price and the
    /// powers of ten: exact as a decimal (3000 × 10^-4 per Wh × 10^3 is 0.3, never
    /// 0.30000000000000004).
    fn per_unit(&self, price: i32, price_pow10: i8) -> f64 {
        crate::sep2::types::decimal(price.into(), i32::from(price_pow10) + self.pow10)
    }
}

/// One price block of an interval (a ConsumptionTariffInterval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceBlock {
    /// Consumption in the billing period from which this price applies (ReadingType
    /// units, 0 for the first block).
    pub start_value: u64,
    /// The price as sent (Int32, × 10^`price_power_of_ten_multiplier` currency).
    pub price: i64,
    /// Currency units per [`RatePrice::unit`] (e.g. AUD per kWh; negative = a credit).
    pub price_per_unit: f64,
}

/// One TimeTariffInterval in the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricePoint {
    pub mrid: String,
    pub description: Option<String>,
    /// Effective start and end (randomisation applied), Unix seconds, server time.
    pub start_unix_s: i64,
    pub end_unix_s: i64,
    /// Ordered by `start_value`; empty until its ConsumptionTariffIntervalList is read.
    pub blocks: Vec<PriceBlock>,
}

impl PricePoint {
    /// The first block's price per unit: what applies from the start of a billing
    /// period (csipd does not track the period's consumption, so it acts on this one).
    pub fn first_price_per_unit(&self) -> Option<f64> {
        self.blocks.first().map(|b| b.price_per_unit)
    }
}

/// The price of one RateComponent now and next (the status page's `utility.prices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatePrice {
    pub tariff_profile_href: String,
    pub rate_component_href: String,
    pub description: Option<String>,
    /// The TariffProfile's primacy (lower = higher priority).
    pub primacy: u8,
    pub direction: PriceDirection,
    /// What each price is per: "kWh" for energy.
    pub unit: String,
    /// ISO 4217 numeric code from the TariffProfile (36 = AUD).
    pub currency: Option<u16>,
    /// The TariffProfile's pricePowerOfTenMultiplier (already applied in
    /// `price_per_unit`).
    pub price_power_of_ten_multiplier: i8,
    pub current: Option<PricePoint>,
    pub next: Option<PricePoint>,
}

/// ISO 4217 alphabetic code of a numeric one, for the few currencies csipd names.
pub fn currency_name(code: Option<u16>) -> &'static str {
    match code {
        Some(36) => "AUD",
        Some(554) => "NZD",
        Some(840) => "USD",
        Some(978) => "EUR",
        Some(826) => "GBP",
        _ => "currency units",
    }
}

/// The export energy price in force from `prices`: of the export components per kWh
/// with a current interval, that of the profile with the lowest primacy, then the
/// interval that started last (the more specific one). Returns (currency units per
/// kWh, interval end Unix s). Positive means exporting costs the owner money.
pub fn export_price_now(prices: &[RatePrice]) -> Option<(f64, i64)> {
    prices
        .iter()
        .filter(|p| p.direction == PriceDirection::Export && p.unit == "kWh")
        .filter_map(|p| {
            let current = p.current.as_ref()?;
            Some((p.primacy, current, current.first_price_per_unit()?))
        })
        .min_by_key(|(primacy, current, _)| (*primacy, std::cmp::Reverse(current.start_unix_s)))
        .map(|(_, current, price)| (price, current.end_unix_s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sep2::{DateTimeInterval, EventStatus, Link, ListLink};

    fn interval(
        mrid: &str,
        start: i64,
        duration_s: u32,
        status: u8,
        created: i64,
    ) -> TimeTariffInterval {
        TimeTariffInterval {
            mrid: mrid.into(),
            creation_time: created,
            event_status: EventStatus {
                current_status: CurrentStatus::from_code(status),
                ..EventStatus::default()
            },
            interval: DateTimeInterval { start, duration_s },
            consumption_tariff_interval_list_link: Some(ListLink {
                href: format!("/cti/{mrid}"),
                all: Some(1),
            }),
            ..TimeTariffInterval::default()
        }
    }

    fn set_with(intervals: Vec<TimeTariffInterval>, flow: u8, pow10: i8) -> PricingSet {
        let mut set = PricingSet::new(1);
        set.lists = vec!["/tp".into()];
        set.profiles.insert(
            "/tp".into(),
            vec![TariffProfile {
                href: Some("/tp/1".into()),
                mrid: "01".into(),
                currency: Some(36),
                price_power_of_ten_multiplier: Some(-4),
                rate_component_list_link: Some(ListLink {
                    href: "/tp/1/rc".into(),
                    all: Some(1),
                }),
                ..TariffProfile::default()
            }],
        );
        set.components.insert(
            "/tp/1/rc".into(),
            vec![RateComponent {
                href: Some("/tp/1/rc/1".into()),
                mrid: "02".into(),
                reading_type_link: Some(Link {
                    href: "/rt/1".into(),
                }),
                time_tariff_interval_list_link: Some(ListLink {
                    href: "/tp/1/rc/1/tti".into(),
                    all: None,
                }),
                ..RateComponent::default()
            }],
        );
        set.reading_types.insert(
            "/rt/1".into(),
            ReadingType {
                flow_direction: Some(flow),
                uom: Some(UOM_WH),
                power_of_ten_multiplier: Some(pow10),
                ..ReadingType::default()
            },
        );
        for i in &intervals {
            set.blocks.insert(
                format!("/cti/{}", i.mrid),
                vec![ConsumptionTariffInterval {
                    consumption_block: 1,
                    price: Some(i.mrid.len() as i32 * -1000),
                    start_value: 0,
                    ..ConsumptionTariffInterval::default()
                }],
            );
        }
        set.intervals.insert("/tp/1/rc/1/tti".into(), intervals);
        set
    }

    #[test]
    fn current_and_next_with_units_and_cancellation() {
        // Prices in 10^-4 AUD per Wh (pow10 0): 'a' = -1000 → -0.1 AUD/Wh = -100 AUD/kWh.
        let set = set_with(
            vec![
                interval("a", 1000, 300, 0, 1),
                interval("bb", 1300, 300, 2, 1), // cancelled: not next
                interval("ccc", 1600, 300, 1, 1),
            ],
            FLOW_REVERSE,
            0,
        );
        let view = set.view(1100);
        assert_eq!(view.len(), 1);
        let rc = &view[0];
        assert_eq!(
            (rc.direction, rc.unit.as_str()),
            (PriceDirection::Export, "kWh")
        );
        let current = rc.current.as_ref().expect("current");
        assert_eq!(current.mrid, "a");
        assert!((current.blocks[0].price_per_unit - -100.0).abs() < 1e-9);
        assert_eq!(rc.next.as_ref().map(|n| n.mrid.as_str()), Some("ccc"));
        // Between 'a' and 'ccc' the cancelled one is no price: none now.
        assert!(set.view(1400)[0].current.is_none());
        assert_eq!(export_price_now(&view), Some((-100.0, 1300)));
    }

    /// A price is the exact decimal of its integer and powers of ten in the status JSON
    /// (what `/status`, LuCI and `csipd status` show): 3 × 10^-4 AUD per Wh is 0.3 per
    /// kWh, not 0.30000000000000004.
    #[test]
    fn prices_are_exact_decimals_in_the_status_json() {
        let mut noisy_before = 0;
        for (price, reading_pow10, json) in [
            (3, 0, "0.3"),
            (7, 0, "0.7"),
            (3000, 3, "0.3"),
            (-11, 0, "-1.1"),
            (123_456, 3, "12.3456"),
            (2800, 3, "0.28"),
            (-123, 3, "-0.0123"),
        ] {
            // The old rule, value × 10f64.powi(multipliers).
            let old = f64::from(price) * 10f64.powi(-4 + 3 - i32::from(reading_pow10));
            noisy_before += usize::from(old.to_string() != json);
            let mut set = set_with(
                vec![interval("a", 0, 1000, 0, 1)],
                FLOW_REVERSE,
                reading_pow10,
            );
            set.blocks.get_mut("/cti/a").unwrap()[0].price = Some(price);
            let view = set.view(10);
            let block = &view[0].current.as_ref().unwrap().blocks[0];
            let text = serde_json::to_value(block).unwrap()["price_per_unit"].to_string();
            assert_eq!(text, json, "{price} × 10^-4 per Wh × 10^{reading_pow10}");
            let now = export_price_now(&view).unwrap().0;
            assert_eq!(now.to_string(), json);
        }
        assert!(
            noisy_before >= 2,
            "the cases show the noise of the old rule"
        );
    }

    #[test]
    fn kwh_reading_type_scales_and_later_creation_wins() {
        // ReadingType in kWh (10^3 Wh): price 'a' -1000 × 10^-4 = -0.1 AUD per kWh.
        let set = set_with(
            vec![interval("a", 0, 1000, 0, 5), interval("bb", 100, 100, 0, 9)],
            FLOW_FORWARD,
            3,
        );
        let view = set.view(150);
        assert_eq!(view[0].direction, PriceDirection::Import);
        let current = view[0].current.as_ref().unwrap();
        assert_eq!(current.mrid, "bb", "created later");
        assert!((current.first_price_per_unit().unwrap() - -0.2).abs() < 1e-12);
        assert_eq!(set.view(250)[0].current.as_ref().unwrap().mrid, "a");
        assert_eq!(export_price_now(&view), None, "no export component");
    }
}
