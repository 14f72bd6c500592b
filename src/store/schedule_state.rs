//! The scheduler's memory (`schedule::State`) in the store: one row per event (its
//! randomisation draws and record) and one ledger entry per response, so a change to
//! one event rewrites one small row, not the whole state.

use crate::schedule::{self, ResponseDue, ResponseKey, ResponseStatus};

use super::{LedgerKey, SchedulerEvent, Store};

/// The scheduler's response status of a Response.status code.
pub fn response_status(code: u8) -> Option<ResponseStatus> {
    ResponseStatus::ALL.into_iter().find(|s| s.code() == code)
}

/// The store's ledger key of a scheduler response.
pub fn ledger_key(key: &ResponseKey) -> LedgerKey {
    LedgerKey {
        event_mrid: key.event_mrid.clone(),
        status: key.status.code(),
    }
}

impl Store {
    /// Records one scheduler evaluation: each response that fell due goes into the
    /// ledger (urgent: flush before POSTing any of them), each event record is stored
    /// when it changed (new draws are urgent), and events the scheduler forgot are
    /// forgotten with their ledger entries. Call with `outcome.state` and
    /// `outcome.responses` of `schedule::evaluate`.
    pub fn save_schedule(&mut self, state: &schedule::State, due: &[ResponseDue]) {
        for r in due {
            self.ledger_record(ledger_key(&r.key), r.reply_to.as_deref(), r.at_s);
        }
        // An unchanged record costs a serialisation and a comparison with the stored
        // JSON (save_schedule runs when controls change or responses fall due, not every
        // cycle), so the store keeps no second copy of the scheduler's records.
        let mut json: Vec<u8> = Vec::with_capacity(512);
        for (mrid, record) in &state.events {
            json.clear();
            if let Err(e) = serde_json::to_writer(&mut json, record) {
                log::error!("scheduler record of event {mrid} not stored: {e}");
                continue;
            }
            let Ok(record_json) = std::str::from_utf8(&json) else {
                continue; // serde_json writes UTF-8 only
            };
            let unchanged = self
                .scheduler_events()
                .get(mrid)
                .is_some_and(|stored| stored.record_json == record_json);
            if unchanged {
                continue;
            }
            self.put_scheduler_event(
                mrid,
                SchedulerEvent {
                    start_offset_s: record.start_offset_s,
                    duration_offset_s: record.duration_offset_s,
                    record_json: record_json.to_owned(),
                },
            );
        }
        // Events the scheduler forgot, with their ledger entries. (A ledger entry whose
        // event has no record, a response restored as pending after a restart, stays
        // until it is settled and `ledger_retention_s` old.)
        let forgotten: Vec<String> = self
            .scheduler_events()
            .keys()
            .filter(|mrid| !state.events.contains_key(*mrid))
            .cloned()
            .collect();
        for mrid in forgotten {
            self.forget_event(&mrid);
        }
    }

    /// Responses the ledger holds as issued but not yet settled (no 2xx, no refusal),
    /// oldest first: the engine queues them again at start-up, so a response whose POST
    /// a crash or power cut interrupted is still delivered (at least once).
    pub fn pending_responses(&self) -> Vec<ResponseDue> {
        self.ledger_pending()
            .into_iter()
            .filter_map(|entry| {
                let status = response_status(entry.key.status)?;
                Some(ResponseDue {
                    key: ResponseKey {
                        event_mrid: entry.key.event_mrid.clone(),
                        status,
                    },
                    // Not kept in the ledger, and not part of the Response body.
                    program_mrid: String::new(),
                    reply_to: entry.reply_to.clone(),
                    at_s: entry.created_at_s,
                })
            })
            .collect()
    }

    /// The scheduler's memory as stored: pass it as `previous` to the first
    /// `schedule::evaluate` after a restart, so no response is issued twice and every
    /// event keeps its draws. A record that does not read back is logged and skipped.
    pub fn schedule_state(&self) -> schedule::State {
        let mut state = schedule::State::default();
        for (mrid, stored) in self.scheduler_events() {
            match serde_json::from_str::<schedule::EventRecord>(&stored.record_json) {
                Ok(record) => {
                    state.events.insert(mrid.clone(), record);
                }
                Err(e) => log::warn!(
                    "{}: scheduler record of event {mrid} does not read back ({e}); skipped",
                    self.path().display()
                ),
            }
        }
        // The record and the ledger entry of a response are written in the same
        // transaction; should they ever disagree, the ledger wins: a response in the
        // ledger counts as issued.
        for entry in self.ledger() {
            let Some(status) = response_status(entry.key.status) else {
                log::warn!(
                    "ledger entry of event {} has unknown status {}; skipped",
                    entry.key.event_mrid,
                    entry.key.status
                );
                continue;
            };
            if let Some(record) = state.events.get_mut(&entry.key.event_mrid) {
                record.responses_sent |= status.bit();
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{ActivePower, ControlMode, ControlSet, Event, Input, Program, Rng};

    const T0: i64 = 1_795_321_500;

    fn event(mrid: &str, start_s: i64, export_w: i32) -> Event {
        let mut e = Event::new(
            mrid,
            "P1",
            start_s - 600,
            start_s,
            300,
            ControlSet {
                exp_lim_w: Some(ActivePower::from_watts(export_w)),
                ..ControlSet::default()
            },
        );
        e.response_required = 0x03;
        e.reply_to = Some("/rsp".into());
        e.randomize_start_s = 60;
        e
    }

    #[test]
    fn a_restart_keeps_draws_and_never_reissues_a_response() {
        let dir = std::env::temp_dir().join(format!("csipd-store-sched-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let programs = [Program {
            mrid: "P1".into(),
            fsa: "/fsa/1".into(),
            primacy: 1,
            default_control: None,
        }];
        let events = [event("E1", T0, 1500), event("E2", T0 + 300, 2500)];
        let input = |now_s| Input {
            programs: &programs,
            events: &events,
            now_s,
        };
        let mut rng = Rng::new(7);

        // Before the crash: E1 received and started, E2 received.
        let (mut store, _) = Store::open(&dir, T0).expect("open");
        let first = schedule::evaluate(&input(T0 + 100), &mut rng, &schedule::State::default());
        let issued: Vec<(String, u8)> = first
            .responses
            .iter()
            .map(|r| (r.key.event_mrid.clone(), r.key.status.code()))
            .collect();
        assert!(issued.contains(&("E1".into(), 1)), "{issued:?}");
        assert!(issued.contains(&("E2".into(), 1)), "{issued:?}");
        store.save_schedule(&first.state, &first.responses);
        assert!(store.is_urgent());
        store.flush(T0 + 100).expect("flush");
        let draws_e1 = store.randomization_draws("E1").expect("draws");
        assert_eq!(draws_e1.0, first.state.events["E1"].start_offset_s);
        drop(store); // the crash

        // After the restart: the same state comes back; nothing already issued is due.
        let (store, _) = Store::open(&dir, T0 + 200).expect("reopen");
        let restored = store.schedule_state();
        assert_eq!(restored, first.state);
        let mut other_rng = Rng::new(99); // a different seed must not matter now
        let again = schedule::evaluate(&input(T0 + 100), &mut other_rng, &restored);
        assert!(again.responses.is_empty(), "{:?}", again.responses);
        assert_eq!(store.randomization_draws("E1"), Some(draws_e1));
        assert_eq!(
            again.active.watts(ControlMode::ExpLimW),
            first.active.watts(ControlMode::ExpLimW),
            "the same limit applies at once after the restart"
        );
        // Should a record ever lack a response its ledger has, the ledger wins.
        let mut store = store;
        let mut stale = first.state.events["E1"].clone();
        stale.responses_sent = 0;
        store.put_scheduler_event(
            "E1",
            SchedulerEvent {
                start_offset_s: stale.start_offset_s,
                duration_offset_s: stale.duration_offset_s,
                record_json: serde_json::to_string(&stale).expect("json"),
            },
        );
        assert_eq!(store.schedule_state(), first.state);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn saving_an_unchanged_schedule_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("csipd-store-sched2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let programs = [Program {
            mrid: "P1".into(),
            fsa: "/fsa/1".into(),
            primacy: 1,
            default_control: None,
        }];
        let events = [event("E1", T0, 1500), event("E2", T0 + 300, 2500)];
        let mut rng = Rng::new(3);
        let (mut store, _) = Store::open(&dir, T0).expect("open");
        let mut state = schedule::State::default();
        let mut rows = Vec::new();
        for now in [T0 - 60, T0 - 59, T0 - 58, T0 + 400] {
            let input = Input {
                programs: &programs,
                events: &events,
                now_s: now,
            };
            let outcome = schedule::evaluate(&input, &mut rng, &state);
            store.save_schedule(&outcome.state, &outcome.responses);
            rows.push(store.flush(now).expect("flush").rows_written);
            state = outcome.state;
        }
        assert!(
            rows[0] >= 2,
            "first evaluation: both events stored: {rows:?}"
        );
        assert_eq!(
            rows[1..3],
            [0, 0],
            "nothing changed, nothing written: {rows:?}"
        );
        assert!(rows[3] > 0, "E1 started and ended, E2 started: {rows:?}");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The store's rows and ledger follow the scheduler's bound: past
    /// `schedule::RECORD_LIMIT` finished events, the forgotten ones leave the store too.
    #[test]
    fn stored_records_and_ledger_follow_the_record_limit() {
        let dir = std::env::temp_dir().join(format!("csipd-store-sched3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let programs = [Program {
            mrid: "P1".into(),
            fsa: "/fsa/1".into(),
            primacy: 1,
            default_control: None,
        }];
        let (mut store, _) = Store::open(&dir, T0).expect("open");
        let mut state = schedule::State::default();
        let mut rng = Rng::new(11);
        let total = schedule::RECORD_LIMIT + 100;
        for i in 0..total {
            let start = T0 + 60 * i as i64;
            let mut e = event(&format!("E{i:05}"), start, 1000);
            e.randomize_start_s = 0;
            let listed = [e];
            for now in [start - 5, start + 400] {
                let input = Input {
                    programs: &programs,
                    events: &listed,
                    now_s: now,
                };
                let outcome = schedule::evaluate_owned(&input, &mut rng, state);
                // Saved now and then, as the runtime does when controls change.
                if i % 64 == 0 || i == total - 1 {
                    store.save_schedule(&outcome.state, &outcome.responses);
                } else {
                    for r in &outcome.responses {
                        store.ledger_record(ledger_key(&r.key), r.reply_to.as_deref(), r.at_s);
                    }
                }
                state = outcome.state;
            }
        }
        assert_eq!(state.events.len(), schedule::RECORD_LIMIT + 1);
        assert_eq!(store.scheduler_events().len(), state.events.len());
        let ledger_events: std::collections::BTreeSet<&str> =
            store.ledger().map(|e| e.key.event_mrid.as_str()).collect();
        assert!(
            ledger_events.len() <= state.events.len(),
            "{}",
            ledger_events.len()
        );
        assert!(ledger_events.iter().all(|m| state.events.contains_key(*m)));
        store.flush(T0 + 86_400).expect("flush");
        drop(store);
        let (store, _) = Store::open(&dir, T0 + 86_400).expect("reopen");
        assert_eq!(
            store.schedule_state().events.len(),
            schedule::RECORD_LIMIT + 1
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn status_codes_map_back() {
        for s in ResponseStatus::ALL {
            assert_eq!(response_status(s.code()), Some(s));
        }
        assert_eq!(response_status(0), None);
    }
}
