use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Error, Packet, PublishTooLarge};

/// MQTT v4 codec
#[derive(Debug, Clone)]
pub struct Codec {
    /// Maximum packet size allowed by client
    pub max_incoming_size: usize,
    /// Maximum packet size allowed by broker
    pub max_outgoing_size: usize,
    /// tether patch: the oversize PUBLISH being streamed to nowhere.
    discarding: Option<Discarding>,
}

/// tether patch: what is left of an oversize PUBLISH, and its record.
#[derive(Debug, Clone)]
struct Discarding {
    left: usize,
    record: PublishTooLarge,
}

impl Codec {
    pub fn new(max_incoming_size: usize, max_outgoing_size: usize) -> Codec {
        Codec {
            max_incoming_size,
            max_outgoing_size,
            discarding: None,
        }
    }

    /// tether patch: starts discarding the oversize PUBLISH at the start of
    /// `src` once its topic and packet id are buffered. Any other packet
    /// over the limit still fails the connection, as upstream.
    fn refuse(&mut self, src: &mut BytesMut, size: usize) -> Result<Option<Packet>, Error> {
        if src.first().map(|b| b >> 4) != Some(3) {
            return Err(Error::PayloadSizeLimitExceeded(size));
        }
        match PublishTooLarge::read_header(src) {
            Ok((record, used)) => {
                let left = record.size - used;
                src.advance(used);
                self.discarding = Some(Discarding { left, record });
                self.discard(src)
            }
            Err(Error::InsufficientBytes(b)) => {
                src.reserve(b);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// tether patch: drops what `src` holds of the packet being discarded;
    /// yields its record once the last byte is gone.
    fn discard(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, Error> {
        let Some(d) = self.discarding.as_mut() else {
            return Ok(None);
        };
        let n = d.left.min(src.len());
        src.advance(n);
        d.left -= n;
        if d.left > 0 {
            return Ok(None);
        }
        let record = self.discarding.take().map(|d| d.record);
        Ok(record.map(Packet::PublishTooLarge))
    }
}

impl Decoder for Codec {
    type Item = Packet;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if self.discarding.is_some() {
            return self.discard(src);
        }
        match Packet::read(src, self.max_incoming_size) {
            Ok(packet) => Ok(Some(packet)),
            Err(Error::InsufficientBytes(b)) => {
                // Get more packets to construct the incomplete packet
                src.reserve(b);
                Ok(None)
            }
            Err(Error::PayloadSizeLimitExceeded(size)) => self.refuse(src, size),
            Err(e) => Err(e),
        }
    }
}

impl Encoder<Packet> for Codec {
    type Error = Error;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.write(dst, self.max_outgoing_size)?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    use super::Codec;
    use crate::{mqttbytes::Error, Packet, Publish, QoS};

    #[test]
    fn outgoing_max_packet_size_check() {
        let mut buf = BytesMut::new();
        let mut codec = Codec::new(100, 200);

        let mut small_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 100]);
        small_publish.pkid = 1;
        codec
            .encode(Packet::Publish(small_publish), &mut buf)
            .unwrap();

        let large_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 265]);
        match codec.encode(Packet::Publish(large_publish), &mut buf) {
            Err(Error::OutgoingPacketTooLarge {
                pkt_size: 281,
                max: 200,
            }) => {}
            _ => unreachable!(),
        }
    }
}
