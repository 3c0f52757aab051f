//! Unix time as the wire formats write it: SAS expiries and blob SAS `se`
//! in seconds, Afero's `utcTimestamp` in milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 for times before it.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch; 0 for times before it.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_before_the_epoch_read_zero() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(unix_seconds(t), 1_700_000_000);
        assert_eq!(unix_ms(t), 1_700_000_000_123);
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!((unix_seconds(before), unix_ms(before)), (0, 0));
    }
}
