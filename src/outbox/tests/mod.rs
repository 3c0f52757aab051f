//! Component tests of the outbox's delivery and health, composed from the
//! crate's parts where the daemon offers no seam: a storage that fails on
//! demand. End-to-end behaviour is tested through the daemon in `tests/it`.

mod full_disk;
