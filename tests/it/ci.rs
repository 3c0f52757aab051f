//! Tests that need root (they mount a file system) skip elsewhere, but CI
//! (`CI=true`, as root) must run them: there a missing prerequisite fails
//! the test instead of skipping it.

/// Skips the test `name`, which cannot run because `failed`, saying what
/// it `needs`; in CI, fails it instead, saying CI must give it that.
pub(crate) fn skip_or_fail(name: &str, failed: &str, needs: &str) {
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{name}: {failed}; CI (CI=true) must run this test: give it {needs}"
    );
    eprintln!("SKIPPED {name}: {failed}; it needs {needs}");
}
