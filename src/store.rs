//! Durable state in SQLite: controls cache, response ledger, registration state,
//! telemetry and event log, with flash-friendly writes.
