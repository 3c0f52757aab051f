//! Segments (store format 2): the messages of one group commit, cut into
//! runs of consecutive sequence numbers, each stored under one key (see
//! [`super::keys::SegKey`]). One key per segment instead of one per
//! message keeps the engine's index, and so its memory, proportional to
//! the segments, not the messages.
//!
//! A segment holds at most [`MAX_RECORDS`] messages and [`RAW_BOUND`]
//! record bytes (a larger message is a segment alone): about 16 attribute
//! messages, 1.4 KiB compressed. sled splits leaves by count (17 values),
//! and rewrites a whole leaf on consolidation, so small values keep its
//! leaves far under its 128 KiB inline-item limit (no blob files) and its
//! memory while accepting low: with a 1,000,000-message backlog, 16 KiB
//! segments peaked at 47 MiB while accepting, 8 KiB at 32 MiB, 4 KiB at
//! 23 MiB, for 139-153 disk bytes per message (`bench/results/experiments/`,
//! `seg-*`). The record area is LZ4 compressed when that makes it smaller.
//!
//! Value layout: version (1 byte, 2), flags (1 byte: 1 = LZ4), the number
//! of records (u32 BE), the first record's age-clock time (u64 BE), then
//! the record area: for each record its length (u32 BE) and its bytes
//! ([`Stored::encode`]).

use crate::keys::SegKey;
use crate::message::Stored;

/// Messages per segment at most.
pub(crate) const MAX_RECORDS: usize = 64;
/// Record bytes per segment at most (one larger message is alone).
pub(crate) const RAW_BOUND: usize = 4 * 1024;
const VERSION: u8 = 2;
const LZ4: u8 = 1;
const HEADER: usize = 14;

/// A decoded segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Its key.
    pub(crate) key: SegKey,
    /// Its messages, `key.first..=key.last` in order.
    pub(crate) records: Vec<Stored>,
}

/// Encodes consecutive records (`records[i].seq == first + i`) as one
/// segment: its key and value.
pub(crate) fn encode(records: &[Stored]) -> (SegKey, Vec<u8>) {
    let mut area = Vec::new();
    for r in records {
        let e = r.encode();
        area.extend_from_slice(&(e.len() as u32).to_be_bytes());
        area.extend_from_slice(&e);
    }
    let raw: u64 = records.iter().map(Stored::encoded_len).sum();
    let key = SegKey {
        first: records.first().map_or(0, |r| r.seq),
        last: records.last().map_or(0, |r| r.seq),
        bytes: u32::try_from(raw).unwrap_or(u32::MAX),
    };
    let packed = lz4_flex::compress_prepend_size(&area);
    let (flags, body) = if packed.len() < area.len() {
        (LZ4, packed)
    } else {
        (0, area)
    };
    let mut v = Vec::with_capacity(HEADER + body.len());
    v.push(VERSION);
    v.push(flags);
    v.extend_from_slice(&(records.len() as u32).to_be_bytes());
    v.extend_from_slice(&records.first().map_or(0, |r| r.accepted_ms).to_be_bytes());
    v.extend_from_slice(&body);
    (key, v)
}

/// The first record's age-clock time, from the header alone.
pub(crate) fn first_accepted_ms(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(6..14)?.try_into().ok()?))
}

/// Decodes a segment stored under `key`.
///
/// # Errors
/// A description of what is malformed.
pub(crate) fn decode(key: SegKey, value: &[u8]) -> Result<Segment, String> {
    let bad = |what: &str| format!("segment {}..={}: {what}", key.first, key.last);
    if value.len() < HEADER || value[0] != VERSION {
        return Err(bad("unknown layout"));
    }
    let count = u32::from_be_bytes(value[2..6].try_into().map_err(|_| bad("short"))?) as u64;
    if count != key.count() {
        return Err(bad("holds a different number of records than its key says"));
    }
    let area = match value[1] {
        0 => value[HEADER..].to_vec(),
        LZ4 => lz4_flex::decompress_size_prepended(&value[HEADER..])
            .map_err(|e| bad(&format!("cannot be decompressed ({e})")))?,
        _ => return Err(bad("unknown flags")),
    };
    let mut records = Vec::with_capacity(count as usize);
    let mut pos = 0;
    for seq in key.first..=key.last {
        let len = area
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| bad("truncated"))? as usize;
        let rec = area
            .get(pos + 4..pos + 4 + len)
            .ok_or_else(|| bad("truncated"))?;
        records.push(Stored::decode(seq, rec)?);
        pos += 4 + len;
    }
    Ok(Segment { key, records })
}

/// Cuts records, in sequence order, into segments: a new one starts at a
/// gap in the sequence numbers or where the bounds would be exceeded.
pub(crate) fn cut(records: &[Stored]) -> Vec<&[Stored]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, r) in records.iter().enumerate() {
        let len = r.encoded_len() as usize;
        let gap = i > start && records[i - 1].seq + 1 != r.seq;
        let full = i - start >= MAX_RECORDS || (i > start && bytes + len > RAW_BOUND);
        if gap || full {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    pub(crate) fn record(seq: u64, body_len: usize) -> Stored {
        let id = Uuid::new_v4();
        let mut body = format!(
            r#"{{"id":"{id}","deviceId":"dev-0001","utcTimestamp":1700000000{seq:03},"attributeId":1024,"attributeData":"{:08x}","attributeDataType":"SINT32","attributeDataConverted":"{seq}"}}"#,
            seq
        );
        while body.len() < body_len {
            body.push(' ');
        }
        Stored {
            seq,
            id,
            message_type: "attribute".into(),
            utc_ms: 1_700_000_000_000 + seq,
            accepted_ms: 1000 + seq,
            only_sink: seq.is_multiple_of(7).then(|| "partner".to_string()),
            body: body.into_bytes(),
        }
    }

    #[test]
    fn segments_round_trip_with_their_range_and_size() {
        let recs: Vec<Stored> = (10..40).map(|s| record(s, 194)).collect();
        let (key, value) = encode(&recs);
        assert_eq!((key.first, key.last), (10, 39));
        assert_eq!(
            key.bytes as u64,
            recs.iter().map(Stored::encoded_len).sum::<u64>()
        );
        assert_eq!(first_accepted_ms(&value), Some(1010));
        let seg = decode(key, &value).unwrap();
        assert_eq!(seg.records, recs);
    }

    #[test]
    fn damaged_segments_are_errors_not_panics() {
        let recs: Vec<Stored> = (1..20).map(|s| record(s, 194)).collect();
        let (key, value) = encode(&recs);
        for cut in [0, 5, HEADER, value.len() / 2, value.len() - 1] {
            assert!(decode(key, &value[..cut]).is_err(), "cut at {cut}");
        }
        let wrong = SegKey { last: 30, ..key };
        assert!(decode(wrong, &value).is_err());
        let mut flipped = value.clone();
        flipped[1] = 9;
        assert!(decode(key, &flipped).is_err());
    }

    #[test]
    fn cutting_respects_gaps_and_both_bounds() {
        let mut recs: Vec<Stored> = (1..=600).map(|s| record(s, 20)).collect();
        recs.retain(|r| r.seq != 5);
        let parts = cut(&recs);
        assert_eq!(parts[0].last().unwrap().seq, 4, "a gap ends a segment");
        assert!(parts.iter().all(|p| p.len() <= MAX_RECORDS));
        let tiny: Vec<Stored> = (1..=600)
            .map(|s| Stored {
                body: Vec::new(),
                ..record(s, 0)
            })
            .collect();
        assert_eq!(cut(&tiny)[0].len(), MAX_RECORDS, "the count bound");
        assert!(parts
            .iter()
            .all(|p| p.windows(2).all(|w| w[0].seq + 1 == w[1].seq)));
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 599);
        let big: Vec<Stored> = (1..=6).map(|s| record(s, RAW_BOUND / 3)).collect();
        let parts = cut(&big);
        assert!(parts.len() >= 3);
        assert!(parts
            .iter()
            .all(|p| p.iter().map(|r| r.encoded_len() as usize).sum::<usize>() <= RAW_BOUND));
        let huge = vec![record(1, 100_000)];
        assert_eq!(cut(&huge).len(), 1, "a large message is a segment alone");
    }

    #[test]
    fn attribute_messages_compress_well_below_their_raw_size() {
        let recs: Vec<Stored> = (1..=256).map(|s| record(s, 194)).collect();
        for part in cut(&recs) {
            let (key, value) = encode(part);
            let per_msg = value.len() / part.len();
            assert!(
                value.len() < key.bytes as usize * 3 / 4,
                "{} records: {} bytes for {} raw ({per_msg}/message)",
                part.len(),
                value.len(),
                key.bytes
            );
        }
    }
}
