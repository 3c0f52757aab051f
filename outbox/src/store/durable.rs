//! Directory entries that survive a power cut. A `fsync` of a file makes
//! its content durable, but POSIX makes a new name (a created directory, a
//! rename) durable only when its parent directory is fsynced too. Without
//! that, a power cut after tether created `store.path` or moved a store
//! aside can take the whole directory, with every acknowledged message in
//! it (`tests/it/outbox_powercut.rs` showed it). Public because the daemon
//! writes its DPS provisioning cache the same way.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// `fsync`s the directory `dir`, so the names it holds are durable.
///
/// # Errors
/// When the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing ancestors, and makes each of their names
/// durable by syncing its parent; `dir`'s own parent is synced even when
/// `dir` existed, since a process killed before that sync left it
/// undurable.
///
/// # Errors
/// When a directory cannot be created or synced.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    std::fs::create_dir_all(dir)?;
    let made: &[&Path] = if missing.is_empty() { &[dir] } else { &missing };
    for created in made.iter().rev() {
        match created.parent() {
            Some(p) if p.as_os_str().is_empty() => sync_dir(Path::new("."))?,
            Some(p) => sync_dir(p)?,
            None => {}
        }
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` atomically: written beside as
/// `name.tmp`, synced, renamed over, and the rename made durable, so a
/// power cut leaves the old content or the new, never a torn file.
///
/// # Errors
/// When the file cannot be written, synced or renamed, or `dir` synced.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_ancestors_and_accepts_an_existing_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/c");
        create_dir_all(&dir).unwrap();
        assert!(dir.is_dir());
        create_dir_all(&dir).unwrap();
        create_dir_all(root.path()).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(create_dir_all(&file.join("d")).is_err());
    }
}
