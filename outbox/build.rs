//! Records the build time so `clock::is_plausible` can tell a 1970 clock
//! (no RTC, no NTP yet) from a real one before the outbox trusts it for
//! ages and the daemon mints SAS tokens or checks certificates.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    // A day of slack: a device whose clock is set from a slightly older
    // source must still count as plausible.
    println!(
        "cargo:rustc-env=TETHER_BUILD_UNIX={}",
        epoch.saturating_sub(86_400)
    );
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}
