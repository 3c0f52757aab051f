//! Component tests of the admin API: the token check, and the failure
//! routes on an outbox whose failures the test makes.

mod failures;

use super::constant_time_eq;

#[test]
fn token_comparison_matches_only_equal_tokens() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
}
