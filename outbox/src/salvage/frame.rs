//! The export stream: what the reading child (`tether outbox export DIR`)
//! writes on its stdout, one frame after another: a tag byte, the payload
//! length (u32 BE), the payload. A child that dies mid-frame leaves a short
//! frame, which reads as the end of the stream.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest payload accepted: a record is at most a 256 KiB body plus its
/// fields; a length above this means the stream is garbage.
const MAX_PAYLOAD: usize = 1 << 20;

/// What the source store says about itself, sent first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Header {
    /// The store layout (`k:format`).
    pub format: u32,
    /// `k:id`, when the store has one.
    pub store_id: Option<String>,
    /// The age-clock checkpoint (`k:clock`), as stored.
    pub clock: Option<Vec<u8>>,
    /// Messages the store counted (`k:live`): sizes what could not be read
    /// when the engine stops early.
    pub messages: u64,
    /// Push failures it counted (`k:fails`).
    pub failures: u64,
    /// Each sink's cursor: messages below every sink's cursor are done.
    pub cursors: Vec<(String, u64)>,
}

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The source store's header.
    Header(Header),
    /// A message record (`m` key) as stored: its sequence number and bytes.
    Message {
        /// Source sequence number.
        seq: u64,
        /// The record (see `message::Stored::encode`).
        record: Vec<u8>,
    },
    /// A push failure record (`f` key) as stored.
    Failure {
        /// Source failure number.
        id: u64,
        /// The record (store-clock ms + JSON).
        record: Vec<u8>,
    },
    /// The engine failed; nothing more comes.
    Stopped(String),
    /// The store cannot be opened for now (I/O: a lock held by another
    /// process, permissions); nothing was read, try again later.
    Unavailable(String),
    /// Everything was read.
    Done,
}

const HEADER: u8 = b'H';
const MESSAGE: u8 = b'M';
const FAILURE: u8 = b'F';
const STOPPED: u8 = b'S';
const DONE: u8 = b'D';
const UNAVAILABLE: u8 = b'U';

fn numbered(n: u64, record: &[u8]) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    v.extend_from_slice(record);
    v
}

/// Writes one frame.
///
/// # Errors
/// When `out` fails (the reader is gone).
pub(crate) fn write(out: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let (tag, payload) = match frame {
        Frame::Header(h) => (HEADER, serde_json::to_vec(h).map_err(io::Error::other)?),
        Frame::Message { seq, record } => (MESSAGE, numbered(*seq, record)),
        Frame::Failure { id, record } => (FAILURE, numbered(*id, record)),
        Frame::Stopped(why) => (STOPPED, why.as_bytes().to_vec()),
        Frame::Unavailable(why) => (UNAVAILABLE, why.as_bytes().to_vec()),
        Frame::Done => (DONE, Vec::new()),
    };
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    out.write_all(&[tag])?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&payload)
}

/// Reads the next frame; `None` at the end of the stream, also a short one
/// (the child died mid-frame).
///
/// # Errors
/// When reading fails, or the bytes are not a frame (`InvalidData`).
pub(crate) fn read(input: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    if !fill(input, &mut head)? {
        return Ok(None);
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(invalid(format!("a frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    if !fill(input, &mut payload)? {
        return Ok(None);
    }
    let split = |p: Vec<u8>| -> io::Result<(u64, Vec<u8>)> {
        let n = p
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| invalid("a record frame without its number".into()))?;
        Ok((n, p[8..].to_vec()))
    };
    Ok(Some(match head[0] {
        HEADER => Frame::Header(
            serde_json::from_slice(&payload).map_err(|e| invalid(format!("header: {e}")))?,
        ),
        MESSAGE => {
            let (seq, record) = split(payload)?;
            Frame::Message { seq, record }
        }
        FAILURE => {
            let (id, record) = split(payload)?;
            Frame::Failure { id, record }
        }
        STOPPED => Frame::Stopped(String::from_utf8_lossy(&payload).into_owned()),
        UNAVAILABLE => Frame::Unavailable(String::from_utf8_lossy(&payload).into_owned()),
        DONE => Frame::Done,
        other => return Err(invalid(format!("unknown frame tag {other}"))),
    }))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the export stream is malformed: {what}"),
    )
}

/// Fills `buf`; false when the stream ended first.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match input.read(&mut buf[at..]) {
            Ok(0) => return Ok(false),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_cut_stream_just_ends() {
        let frames = [
            Frame::Header(Header {
                format: 1,
                store_id: Some("abc".into()),
                clock: Some(vec![1, 2]),
                messages: 3,
                failures: 1,
                cursors: vec![("hub".into(), 4)],
            }),
            Frame::Message {
                seq: 7,
                record: b"rec".to_vec(),
            },
            Frame::Failure {
                id: 2,
                record: b"f".to_vec(),
            },
            Frame::Stopped("engine said no".into()),
            Frame::Unavailable("locked".into()),
            Frame::Done,
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            write(&mut bytes, f).unwrap();
        }
        let mut input = bytes.as_slice();
        for f in &frames {
            assert_eq!(read(&mut input).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read(&mut input).unwrap(), None);
        let mut cut = &bytes[..bytes.len() - 12];
        let mut n = 0;
        while read(&mut cut).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 4, "the cut fifth frame reads as the end");
        assert!(read(&mut &b"Z\0\0\0\0"[..]).is_err());
    }
}
