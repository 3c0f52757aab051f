//! Inbound messages refused before any handler sees them: a PUBLISH over the
//! packet limit (its payload discarded unread by the codec, issue 16) or a C2D
//! message or twin document that is not JSON. A refused message costs only
//! itself: it is acknowledged so the broker never redelivers it, answered
//! where the protocol allows (a direct method gets 413 on its `$rid`),
//! counted, and logged once with its topic and size, never its payload.

/// Why an inbound message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Over [`super::options::MAX_PACKET_BYTES`]; its payload was never read.
    TooLarge,
    /// A C2D message or twin document that is not JSON.
    NotJson,
}

impl Reason {
    /// Every reason, in the order metrics list them.
    pub(crate) const ALL: [Reason; 2] = [Reason::TooLarge, Reason::NotJson];

    /// The `reason` label of `tether_hub_inbound_refused_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::NotJson => "not_json",
        }
    }
}

/// Refused inbound messages since start, per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Refused {
    /// [`Reason::TooLarge`].
    pub too_large: u64,
    /// [`Reason::NotJson`].
    pub not_json: u64,
}

impl Refused {
    /// Counts one refusal.
    pub(crate) fn add(&mut self, reason: Reason) {
        match reason {
            Reason::TooLarge => self.too_large += 1,
            Reason::NotJson => self.not_json += 1,
        }
    }

    /// The count for `reason`.
    pub(crate) fn get(&self, reason: Reason) -> u64 {
        match reason {
            Reason::TooLarge => self.too_large,
            Reason::NotJson => self.not_json,
        }
    }
}

/// A direct-method call refused before its handler ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MethodRefusal {
    /// The call's packet exceeded the limit; its payload was discarded.
    #[error(
        "the call's message of {size} bytes exceeds this device's limit of {max} bytes; \
         send a smaller payload"
    )]
    TooLarge {
        /// Packet size on the wire.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Whether `body` is one JSON document (without building it).
pub(crate) fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

#[cfg(test)]
mod tests {
    use rumqttc::{Codec, Packet, PublishTooLarge, QoS};
    use tokio_util::bytes::BytesMut;
    use tokio_util::codec::Decoder;

    use super::*;

    /// A QoS 1 PUBLISH of `payload` bytes on `topic` with packet id 7.
    fn publish_bytes(topic: &str, payload: usize) -> Vec<u8> {
        let mut p = rumqttc::Publish::new(topic, QoS::AtLeastOnce, vec![b'x'; payload]);
        p.pkid = 7;
        let mut out = BytesMut::new();
        p.write(&mut out).expect("encodes");
        out.to_vec()
    }

    /// The patched codec reports an oversize PUBLISH with its topic and
    /// packet id as soon as its header is in (so it is acknowledged even if
    /// the link breaks before the rest arrives), streams the rest to nowhere
    /// in small reads, and decodes the packet after it: the connection
    /// survives and the buffer never holds more than a read or two.
    #[test]
    fn an_oversize_publish_is_discarded_and_the_next_packet_still_decodes() {
        let limit = 1024;
        let mut codec = Codec::new(limit, limit);
        let mut wire = publish_bytes("devices/d/methods/POST/RestApi/?$rid=9", 300_000);
        let oversize = wire.len();
        wire.extend(publish_bytes("devices/d/twin/desired", 10));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for (i, chunk) in wire.chunks(4096).enumerate() {
            buf.extend_from_slice(chunk);
            while let Some(p) = codec.decode(&mut buf).expect("no error") {
                got.push(p);
            }
            assert!(buf.len() <= 2 * 4096, "buffered {} bytes", buf.len());
            if i == 0 {
                assert_eq!(got.len(), 1, "the refusal is reported from the first read");
            }
        }
        let refused = PublishTooLarge {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "devices/d/methods/POST/RestApi/?$rid=9".into(),
            pkid: 7,
            size: oversize,
        };
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Packet::PublishTooLarge(refused));
        assert!(matches!(&got[1], Packet::Publish(p) if p.payload.len() == 10));
    }

    /// Packets other than PUBLISH over the limit still fail the connection:
    /// nothing legitimate is that large, and there is nothing to answer.
    #[test]
    fn an_oversize_packet_of_another_kind_is_still_an_error() {
        let mut codec = Codec::new(16, 16);
        // SUBACK with a remaining length of 300.
        let mut buf = BytesMut::from(&[0x90, 0xAC, 0x02, 0x00, 0x01][..]);
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn refusals_are_counted_per_reason() {
        let mut r = Refused::default();
        r.add(Reason::TooLarge);
        r.add(Reason::TooLarge);
        r.add(Reason::NotJson);
        assert_eq!((r.get(Reason::TooLarge), r.get(Reason::NotJson)), (2, 1));
        assert!(is_json(br#"{"a":1}"#) && !is_json(b"\xff\x00garbage"));
    }
}
