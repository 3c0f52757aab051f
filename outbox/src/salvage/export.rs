//! The reading child, `tether outbox export DIR` (hidden): opens the store
//! in `DIR` with whichever engine wrote it, writes its header on stdout,
//! reads the resume point (`<after seq> <after failure>`) from one stdin
//! line, then streams every record after it and ends with `Done`, or with
//! `Stopped` when the engine fails. A damaged store may make the engine
//! panic (and release builds abort): only this process dies, and the
//! salvaging daemon counts what it did not get.

use std::io::{self, BufRead, BufWriter, Write};
use std::path::Path;

use super::frame::{self, Frame};
use super::reader::{self, ExportError, Resume};
use crate::store::{open_existing, StoreError};

/// The page cache the child opens the store with.
const CACHE_BYTES: u64 = 8 << 20;

/// Runs the export of `dir`; returns the exit code (0 when everything was
/// read, 1 when the engine stopped, 2 when the reader went away).
pub fn run(dir: &Path) -> i32 {
    let mut out = BufWriter::new(io::stdout().lock());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream(dir, &mut out)));
    let end = match result {
        Ok(Ok(())) => Frame::Done,
        Ok(Err(ExportError::Out(_))) => return 2,
        Ok(Err(ExportError::Unavailable(e))) => Frame::Unavailable(e.to_string()),
        Ok(Err(e)) => Frame::Stopped(e.to_string()),
        Err(_) => Frame::Stopped("the storage engine panicked while reading the store".into()),
    };
    let code = i32::from(end != Frame::Done);
    if frame::write(&mut out, &end)
        .and_then(|()| out.flush())
        .is_err()
    {
        return 2;
    }
    code
}

fn stream(dir: &Path, out: &mut impl Write) -> Result<(), ExportError> {
    let (storage, format) = open_existing(dir, CACHE_BYTES).map_err(|e| match e {
        // Not the store's fault: a lock, permissions, a full disk.
        e @ (StoreError::Io(_) | StoreError::DiskFull(_)) => ExportError::Unavailable(e),
        e => ExportError::Store(e),
    })?;
    let header = reader::header(storage.as_ref(), format)?;
    frame::write(out, &Frame::Header(header))?;
    out.flush()?;
    let from = read_resume(&mut io::stdin().lock())?;
    reader::export(storage.as_ref(), format, from, &mut |f| {
        frame::write(out, &f)
    })?;
    Ok(())
}

/// Reads `<after seq> <after failure>`; an empty line is the start.
fn read_resume(input: &mut impl BufRead) -> io::Result<Resume> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let mut parts = line.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (None, _) => Ok(Resume::default()),
        (Some(Ok(after_seq)), Some(Ok(after_failure))) => Ok(Resume {
            after_seq,
            after_failure,
        }),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("expected `<after seq> <after failure>` on stdin, got {line:?}"),
        )),
    }
}

/// The line `read_resume` reads.
pub(crate) fn resume_line(from: Resume) -> String {
    format!("{} {}\n", from.after_seq, from.after_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_line_round_trips() {
        let r = Resume {
            after_seq: 42,
            after_failure: 7,
        };
        assert_eq!(read_resume(&mut resume_line(r).as_bytes()).unwrap(), r);
        assert_eq!(read_resume(&mut &b"\n"[..]).unwrap(), Resume::default());
        assert!(read_resume(&mut &b"x y\n"[..]).is_err());
    }
}
