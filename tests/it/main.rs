//! The integration tests of the device daemon (`tether`): one test binary,
//! one module per area, so the helpers compile and link once. Real
//! Mosquitto brokers, real HTTP servers, real ptys and the real `tether`
//! binary; the broker harness, the test PKI and the simulators' helpers
//! are the `tether-testkit` crate (`testkit/`).
//!
//! These drive the daemon from outside (its binary, or `tether::app::Daemon`
//! in-process) through its public API only; component tests that need the
//! crate's internals live beside their component (`src/hub/tests/`,
//! `src/bridge/tests/`, `src/relay/tests/`, `src/admin/tests/`;
//! `cargo test -p tether --lib`). Likewise the store: the outbox crate
//! tests its layout and records (`cargo test -p tether-outbox`); the tests
//! here see a store as files on disk, and put an older tether's store
//! there or damage one with the engine itself (`outbox_rig::raw`).
//!
//! Run one area with a filter, e.g. `cargo test -p tether --test it dps_daemon::`.

// Rigs shared by several areas.
mod chaos_rig;
mod ci;
mod outbox_rig;
mod powercut_rig;
mod powercut_run;

mod admin_api;
mod afero_failures;
mod broker_harness;
mod chaos_broker;
mod chaos_disk_full;
mod chaos_link;
mod chaos_soak;
mod chaos_store;
mod chaos_tether;
mod cli;
mod dps_daemon;
mod fuzz_corpus;
mod hub_poison;
mod outbox_capacity;
mod outbox_crash;
mod outbox_delivery;
mod outbox_failures;
mod outbox_highwater;
mod outbox_migration;
mod outbox_powercut;
mod outbox_powercut_migration;
mod outbox_powercut_salvage;
mod outbox_salvage;
mod outbox_webhook;
mod powercut_fs;
mod relay_e2e;
mod relay_schedule;
mod secrets_trace;
