//! tether patch (issue 16): an incoming PUBLISH over the packet limit.
//!
//! Upstream rumqttc fails the whole connection on such a packet; a broker
//! holding it for a persistent session (QoS 1) or as a retained message then
//! sends it again on every reconnect, and the client never stays connected.
//! The codec instead reads the topic and packet id, yields this record at
//! once so the owner can acknowledge and answer it, and streams the rest of
//! the packet to nowhere as it arrives (memory stays bounded by the topic's
//! 64 KiB).

use super::*;

/// A PUBLISH refused because it exceeds the incoming packet limit: only its
/// header is kept, its payload is discarded unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTooLarge {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    pub pkid: u16,
    /// Size of the whole packet on the wire, fixed header included.
    pub size: usize,
}

impl PublishTooLarge {
    /// A payload-less [`Publish`] with this packet's QoS and packet id, for
    /// acknowledging it through [`crate::AsyncClient::ack`].
    pub fn to_ack(&self) -> Publish {
        let mut p = Publish::new(self.topic.clone(), self.qos, Vec::new());
        p.pkid = self.pkid;
        p
    }

    /// Reads the header of the oversize PUBLISH at the start of `stream`.
    /// Returns the record and
    /// how many bytes of `stream` it took, or `InsufficientBytes` while the
    /// topic and packet id are not all buffered yet.
    pub(crate) fn read_header(stream: &[u8]) -> Result<(Self, usize), Error> {
        let fixed_header = parse_fixed_header(stream.iter())?;
        let byte1 = fixed_header.byte1;
        let qos = qos((byte1 & 0b0110) >> 1)?;
        let start = fixed_header.fixed_header_len;
        let need = |n: usize| {
            if stream.len() < n {
                Err(Error::InsufficientBytes(n - stream.len()))
            } else {
                Ok(())
            }
        };
        need(start + 2)?;
        let topic_len = u16::from_be_bytes([stream[start], stream[start + 1]]) as usize;
        let pkid_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
        let header_len = start + 2 + topic_len + pkid_len;
        need(header_len)?;
        if header_len > fixed_header.frame_length() {
            return Err(Error::BoundaryCrossed(topic_len));
        }
        let topic = std::str::from_utf8(&stream[start + 2..start + 2 + topic_len])
            .map_err(|_| Error::TopicNotUtf8)?
            .to_string();
        let pkid = if pkid_len == 0 {
            0
        } else {
            let at = start + 2 + topic_len;
            u16::from_be_bytes([stream[at], stream[at + 1]])
        };
        if qos != QoS::AtMostOnce && pkid == 0 {
            return Err(Error::PacketIdZero);
        }
        let record = PublishTooLarge {
            dup: (byte1 & 0b1000) != 0,
            qos,
            retain: (byte1 & 0b0001) != 0,
            topic,
            pkid,
            size: fixed_header.frame_length(),
        };
        Ok((record, header_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_of_a_qos1_publish_is_read_without_its_payload() {
        let stream = [
            0x32, 0xFF, 0xFF, 0x03, // PUBLISH, QoS 1; remaining length 65535
            0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
            0x00, 0x0A, // packet identifier 10
            0xDE, 0xAD, // the first payload bytes
        ];
        let (p, used) = PublishTooLarge::read_header(&stream).unwrap();
        assert_eq!(used, 11);
        assert_eq!((p.topic.as_str(), p.pkid, p.qos), ("a/b", 10, QoS::AtLeastOnce));
        assert_eq!(p.size, 4 + 65535);
    }

    #[test]
    fn an_incomplete_topic_asks_for_more_bytes() {
        let stream = [0x30, 0xFF, 0xFF, 0x03, 0x00, 0x05, b'a'];
        assert_eq!(
            PublishTooLarge::read_header(&stream),
            Err(Error::InsufficientBytes(4))
        );
    }
}
