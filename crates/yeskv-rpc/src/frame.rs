//! The frame codec: pure functions from messages to bytes and back. No sockets, no tokio.
//!
//! ```text
//!  0         4         8    9                  17                         8 + length
//!  +---------+---------+----+-------------------+--------------------------+
//!  | length  | crc32c  |kind| request id        | payload (postcard)       |
//!  | u32 LE  | u32 LE  | u8 | u64 LE            | length - 9 bytes         |
//!  +---------+---------+----+-------------------+--------------------------+
//!                      \______________ covered by the crc32c _____________/
//!                      \__________________ `length` bytes ________________/
//! ```
//!
//! Invariants:
//! - `length` counts exactly the bytes the CRC covers (kind, request id, payload), so it is at
//!   least [`FRAME_BODY_BYTES_MIN`]; a whole frame is `8 + length` bytes and never more than the
//!   configured `frame_bytes_max`. The limit is checked on the *declared* length before any
//!   payload byte is buffered, so a hostile length cannot make the reader allocate.
//! - A frame is delivered only if its CRC matches and its kind is known. Any single flipped bit in
//!   the CRC, kind, id or payload is always detected (a CRC detects every single-bit error and
//!   every burst of up to 32 bits); a flip in the length either exceeds the limit, leaves the
//!   frame incomplete (detected at end of stream, or by the CRC of the misaligned frame), or makes
//!   the CRC cover a different span (detected with probability 1 − 2⁻³²).
//! - The decoder never panics on arbitrary input (property-tested).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::error::{Error, Result};

/// Bytes of the length field.
pub const LENGTH_BYTES: usize = 4;
/// Bytes before the CRC-covered body: the length and the CRC.
pub const FRAME_PREFIX_BYTES: usize = 8;
/// Bytes of a frame before its payload: length, CRC, kind, request id.
pub const FRAME_HEADER_BYTES: usize = 17;
/// The smallest legal value of the length field: a kind and a request id, no payload.
pub const FRAME_BODY_BYTES_MIN: usize = 9;
/// Default for [`crate::RpcConfig::frame_bytes_max`]: 16 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// The largest frame accepted before the handshake completed (the `Hello`, `Welcome` and
/// `Refused` frames): an unauthenticated peer cannot make us buffer more than this.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 64 * 1024;

/// What a frame carries. The numbers are part of the wire format and never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Client → server, first frame of a connection: a [`crate::Hello`].
    Hello = 1,
    /// Server → client: the handshake is accepted, a [`crate::Welcome`].
    Welcome = 2,
    /// Server → client: the handshake is refused, a [`crate::Refused`]; the server then closes.
    Refused = 3,
    /// Client → server: a request; the payload is the caller's request type.
    Request = 4,
    /// Server → client: the response to the request with the same id.
    Response = 5,
    /// Server → client: the request with the same id could not be handled, a
    /// [`crate::protocol::Failure`].
    Failure = 6,
    /// Server → client: the server is shutting down; send no new requests on this connection
    /// (the ones in flight are still answered).
    GoAway = 7,
    /// Client → server keepalive; empty payload, request id 0.
    Ping = 8,
    /// Server → client answer to a ping; empty payload, request id 0.
    Pong = 9,
}

impl FrameKind {
    /// The kind for a wire byte, or `None` for a byte no kind uses.
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Hello,
            2 => FrameKind::Welcome,
            3 => FrameKind::Refused,
            4 => FrameKind::Request,
            5 => FrameKind::Response,
            6 => FrameKind::Failure,
            7 => FrameKind::GoAway,
            8 => FrameKind::Ping,
            9 => FrameKind::Pong,
            _ => return None,
        })
    }

    /// The wire byte of this kind.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// One decoded frame. The payload shares the read buffer's memory (no copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the frame carries.
    pub kind: FrameKind,
    /// The request this frame belongs to (0 for connection-level frames).
    pub request_id: u64,
    /// The postcard-encoded message.
    pub payload: Bytes,
}

/// Encodes one frame around an already encoded payload.
///
/// Fails with [`Error::FrameTooLarge`] if the frame would exceed `frame_bytes_max`.
pub fn encode_frame(
    kind: FrameKind,
    request_id: u64,
    payload: &[u8],
    frame_bytes_max: usize,
) -> Result<Vec<u8>> {
    let frame_bytes = FRAME_HEADER_BYTES + payload.len();
    if frame_bytes > frame_bytes_max {
        return Err(Error::FrameTooLarge {
            frame_bytes: frame_bytes as u64,
            frame_bytes_max: frame_bytes_max as u64,
        });
    }
    let mut bytes = Vec::with_capacity(frame_bytes);
    bytes.resize(FRAME_HEADER_BYTES, 0);
    bytes.extend_from_slice(payload);
    seal(&mut bytes, kind, request_id);
    Ok(bytes)
}

/// Encodes `message` with postcard into one frame.
///
/// Encoding stops as soon as the frame would exceed `frame_bytes_max` (a huge message is never
/// fully serialized just to be refused).
pub fn encode_message<T: Serialize + ?Sized>(
    kind: FrameKind,
    request_id: u64,
    message: &T,
    frame_bytes_max: usize,
) -> Result<Bytes> {
    Ok(UnsealedFrame::encode(message, frame_bytes_max)?.seal(kind, request_id))
}

/// A frame whose payload is encoded but whose header (kind, request id, CRC) is not written yet:
/// the client encodes a request before it knows which connection, hence which request id, will
/// carry it, and computes the CRC only once.
pub(crate) struct UnsealedFrame {
    bytes: Vec<u8>,
}

impl UnsealedFrame {
    /// Encodes `message` after room for the header, refusing frames over `frame_bytes_max`.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        message: &T,
        frame_bytes_max: usize,
    ) -> Result<UnsealedFrame> {
        let mut bytes = Vec::with_capacity(256);
        bytes.resize(FRAME_HEADER_BYTES, 0);
        let flavor = LimitedVec {
            bytes,
            bytes_max: frame_bytes_max,
        };
        match postcard::serialize_with_flavor(message, flavor) {
            Ok(bytes) => Ok(UnsealedFrame { bytes }),
            Err(postcard::Error::SerializeBufferFull) => Err(Error::FrameTooLarge {
                frame_bytes: frame_bytes_max as u64 + 1,
                frame_bytes_max: frame_bytes_max as u64,
            }),
            Err(error) => Err(Error::Encode {
                reason: error.to_string(),
            }),
        }
    }

    /// Writes the header and returns the finished frame.
    pub(crate) fn seal(mut self, kind: FrameKind, request_id: u64) -> Bytes {
        seal(&mut self.bytes, kind, request_id);
        Bytes::from(self.bytes)
    }
}

/// Fills in the header of `bytes` (which starts with [`FRAME_HEADER_BYTES`] bytes of room).
fn seal(bytes: &mut [u8], kind: FrameKind, request_id: u64) {
    debug_assert!(bytes.len() >= FRAME_HEADER_BYTES);
    let length = (bytes.len() - FRAME_PREFIX_BYTES) as u32;
    bytes[0..4].copy_from_slice(&length.to_le_bytes());
    bytes[8] = kind.as_u8();
    bytes[9..17].copy_from_slice(&request_id.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[FRAME_PREFIX_BYTES..]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A postcard output that refuses to grow past a limit.
struct LimitedVec {
    bytes: Vec<u8>,
    bytes_max: usize,
}

impl postcard::ser_flavors::Flavor for LimitedVec {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.bytes.len() + data.len() > self.bytes_max {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.bytes)
    }
}

/// Decodes frames from the front of a byte buffer.
///
/// Call [`FrameDecoder::decode`] after each read; it returns `Ok(None)` until a whole frame is
/// buffered. An `Err` means the stream is unusable (corrupt or oversized frame): close it.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    frame_bytes_max: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `frame_bytes_max` bytes (header included).
    pub fn new(frame_bytes_max: usize) -> FrameDecoder {
        FrameDecoder { frame_bytes_max }
    }

    /// The largest frame this decoder accepts.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Changes the limit (after the handshake the connection's real limit applies).
    pub fn set_frame_bytes_max(&mut self, frame_bytes_max: usize) {
        self.frame_bytes_max = frame_bytes_max;
    }

    /// Takes the first frame off `buffer` if it is complete and valid.
    ///
    /// - `Ok(Some(frame))`: a verified frame, removed from the buffer;
    /// - `Ok(None)`: more bytes are needed (the buffer is reserved for the whole frame);
    /// - `Err(Error::FrameTooLarge)` / `Err(Error::Corrupt)`: the stream must be closed.
    pub fn decode(&self, buffer: &mut BytesMut) -> Result<Option<Frame>> {
        if buffer.len() < LENGTH_BYTES {
            return Ok(None);
        }
        let length = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
        if length < FRAME_BODY_BYTES_MIN {
            return Err(Error::corrupt(format!(
                "frame length {length} is below the minimum of {FRAME_BODY_BYTES_MIN}"
            )));
        }
        let frame_bytes = FRAME_PREFIX_BYTES + length;
        if frame_bytes > self.frame_bytes_max {
            return Err(Error::FrameTooLarge {
                frame_bytes: frame_bytes as u64,
                frame_bytes_max: self.frame_bytes_max as u64,
            });
        }
        if buffer.len() < frame_bytes {
            buffer.reserve(frame_bytes - buffer.len());
            return Ok(None);
        }
        let crc_expected = u32::from_le_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
        let crc_actual = crc32c::crc32c(&buffer[FRAME_PREFIX_BYTES..frame_bytes]);
        if crc_actual != crc_expected {
            return Err(Error::corrupt(format!(
                "crc32c mismatch: header says {crc_expected:#010x}, body has {crc_actual:#010x}"
            )));
        }
        let kind_byte = buffer[FRAME_PREFIX_BYTES];
        let kind = FrameKind::from_u8(kind_byte)
            .ok_or_else(|| Error::corrupt(format!("unknown frame kind {kind_byte}")))?;
        let mut frame = buffer.split_to(frame_bytes);
        frame.advance(FRAME_PREFIX_BYTES + 1);
        let request_id = frame.get_u64_le();
        Ok(Some(Frame {
            kind,
            request_id,
            payload: frame.freeze(),
        }))
    }
}

/// Appends a whole frame to a buffer (used by tests and tools that write raw frames).
pub fn put_frame(buffer: &mut BytesMut, kind: FrameKind, request_id: u64, payload: &[u8]) {
    let length = (FRAME_BODY_BYTES_MIN + payload.len()) as u32;
    let mut crc = crc32c::crc32c(&[kind.as_u8()]);
    crc = crc32c::crc32c_append(crc, &request_id.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    buffer.put_u32_le(length);
    buffer.put_u32_le(crc);
    buffer.put_u8(kind.as_u8());
    buffer.put_u64_le(request_id);
    buffer.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1024 * 1024;

    fn kinds() -> impl Strategy<Value = FrameKind> {
        (1u8..=9).prop_map(|byte| FrameKind::from_u8(byte).expect("1..=9 are kinds"))
    }

    /// Decodes everything in `bytes`; `Ok(frames)` only if the bytes end on a frame boundary.
    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Frame>> {
        let decoder = FrameDecoder::new(max);
        let mut buffer = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buffer)? {
            frames.push(frame);
        }
        if buffer.is_empty() {
            Ok(frames)
        } else {
            Err(Error::disconnected("stream ended inside a frame"))
        }
    }

    #[test]
    fn kinds_round_trip_and_unknown_bytes_are_none() {
        for byte in 0..=255u8 {
            match FrameKind::from_u8(byte) {
                Some(kind) => assert_eq!(kind.as_u8(), byte),
                None => assert!(byte == 0 || byte > 9),
            }
        }
    }

    #[test]
    fn frame_layout_matches_the_documented_picture() {
        let bytes = encode_frame(FrameKind::Request, 0x0102_0304_0506_0708, b"xyz", MAX)
            .expect("small frame");
        assert_eq!(bytes.len(), FRAME_HEADER_BYTES + 3);
        assert_eq!(&bytes[0..4], &12u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &crc32c::crc32c(&bytes[8..]).to_le_bytes());
        assert_eq!(bytes[8], 4);
        assert_eq!(&bytes[9..17], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[17..], b"xyz");
        let mut buffer = BytesMut::new();
        put_frame(
            &mut buffer,
            FrameKind::Request,
            0x0102_0304_0506_0708,
            b"xyz",
        );
        assert_eq!(&buffer[..], &bytes[..]);
    }

    #[test]
    fn message_encoding_stops_at_the_limit() {
        let big = vec![7u8; 10_000];
        let error = encode_message(FrameKind::Request, 1, &big, 1000).expect_err("too large");
        assert!(matches!(
            error,
            Error::FrameTooLarge {
                frame_bytes_max: 1000,
                ..
            }
        ));
        let fits = encode_message(FrameKind::Request, 1, &big, 20_000).expect("fits");
        let frames = decode_all(&fits, 20_000).expect("decodes");
        let decoded: Vec<u8> = postcard::from_bytes(&frames[0].payload).expect("postcard");
        assert_eq!(decoded, big);
    }

    #[test]
    fn oversized_declared_length_is_refused_before_buffering() {
        let mut buffer = BytesMut::new();
        buffer.put_u32_le(u32::MAX);
        buffer.put_u32_le(0);
        let error = FrameDecoder::new(MAX)
            .decode(&mut buffer)
            .expect_err("too large");
        assert!(matches!(error, Error::FrameTooLarge { .. }));
        assert!(buffer.capacity() < 1024, "nothing was reserved for it");
    }

    #[test]
    fn short_length_is_corrupt() {
        let mut buffer = BytesMut::new();
        buffer.put_u32_le(3);
        buffer.put_slice(&[0; 20]);
        let error = FrameDecoder::new(MAX)
            .decode(&mut buffer)
            .expect_err("short");
        assert!(matches!(error, Error::Corrupt { .. }));
    }

    #[test]
    fn frames_split_at_every_byte_boundary_decode() {
        let mut stream = BytesMut::new();
        put_frame(&mut stream, FrameKind::Request, 1, b"first");
        put_frame(&mut stream, FrameKind::Response, 2, b"");
        put_frame(&mut stream, FrameKind::Ping, 0, b"third frame");
        let decoder = FrameDecoder::new(MAX);
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for byte in stream.iter() {
            buffer.put_u8(*byte);
            while let Some(frame) = decoder.decode(&mut buffer).expect("valid") {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].payload, Bytes::from_static(b"first"));
        assert_eq!(frames[1].kind, FrameKind::Response);
        assert_eq!(frames[2].request_id, 0);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            frames in proptest::collection::vec(
                (kinds(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 1..8)
        ) {
            let mut stream = Vec::new();
            for (kind, id, payload) in &frames {
                stream.extend(encode_frame(*kind, *id, payload, MAX).expect("fits"));
            }
            let decoded = decode_all(&stream, MAX).expect("valid stream");
            prop_assert_eq!(decoded.len(), frames.len());
            for (frame, (kind, id, payload)) in decoded.iter().zip(&frames) {
                prop_assert_eq!(frame.kind, *kind);
                prop_assert_eq!(frame.request_id, *id);
                prop_assert_eq!(&frame.payload[..], &payload[..]);
            }
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            kind in kinds(),
            id in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            bit_seed in any::<usize>(),
        ) {
            let mut bytes = encode_frame(kind, id, &payload, MAX).expect("fits");
            let bit = bit_seed % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            let result = decode_all(&bytes, MAX);
            prop_assert!(result.is_err(), "flip of bit {} went unnoticed", bit);
            if bit >= LENGTH_BYTES * 8 {
                // Outside the length field the CRC guarantees detection, as a corrupt frame.
                let corrupt = matches!(result, Err(Error::Corrupt { .. }));
                prop_assert!(corrupt, "flip of bit {} gave {:?}", bit, result);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_all(&bytes, 4096);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_prefix_never_panic(
            garbage in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = encode_frame(FrameKind::Ping, 0, &[], MAX).expect("fits");
            bytes.extend(garbage);
            let _ = decode_all(&bytes, 4096);
        }
    }
}
