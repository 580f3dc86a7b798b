//! The versioned, checksummed binary envelope of everything this crate persists (layouts, layout
//! states, snapshots, Raft log records).
//!
//! ```text
//!  0        1                        len - 4         len
//!  +--------+-------------------------+---------------+
//!  | format | payload (postcard)      | crc32c LE     |
//!  | u8     |                         | u32           |
//!  +--------+-------------------------+---------------+
//!            \__ crc32c covers format and payload __/
//! ```
//!
//! - `format` is [`FORMAT`]; a reader refuses a format it does not know with
//!   [`LayoutError::UnsupportedFormat`] instead of misreading it. A new format bumps the byte
//!   and keeps a decoder for the old one (the fixture tests pin the bytes of each). Format 1 had
//!   no layout epoch and no transitions, format 2 no regions (members' and join specs' `region`,
//!   the layout's and the staging's replication per region), format 3 no bucket properties
//!   (the state's `buckets`), format 4 no API keys (the state's `keys`); all are still read ([`reading_format`] tells the decoders which
//!   schema they are reading) and never written.
//! - postcard is compact and not self-describing: the format byte is what names the schema.
//! - A checksum failure or a payload that does not decode is [`LayoutError::Corrupt`]; decoding
//!   never panics on any input (property-tested).

use std::cell::Cell;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::LayoutError;

/// The format byte this build writes (and the newest it reads).
pub const FORMAT: u8 = 5;

/// The oldest format this build reads.
pub const FORMAT_MIN: u8 = 1;

thread_local! {
    static READING: Cell<u8> = const { Cell::new(FORMAT) };
}

/// The format of the envelope being decoded on this thread ([`FORMAT`] outside [`open`]), for
/// the types whose encoding changed between formats.
pub fn reading_format() -> u8 {
    READING.with(Cell::get)
}

/// Smallest envelope: format byte and checksum.
pub const ENVELOPE_BYTES_MIN: usize = 5;

/// Wraps `value` in the envelope.
pub fn seal<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, LayoutError> {
    let mut out = vec![FORMAT];
    out = postcard::to_extend(value, out)
        .map_err(|error| LayoutError::corrupt(format!("cannot encode: {error}")))?;
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks and unwraps an envelope made by [`seal`].
pub fn open<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LayoutError> {
    if bytes.len() < ENVELOPE_BYTES_MIN {
        return Err(LayoutError::corrupt(format!(
            "{} bytes is shorter than the {ENVELOPE_BYTES_MIN}-byte envelope",
            bytes.len()
        )));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(crc_bytes);
    let stored = u32::from_le_bytes(crc);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(LayoutError::corrupt(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    if !(FORMAT_MIN..=FORMAT).contains(&body[0]) {
        return Err(LayoutError::UnsupportedFormat {
            found: body[0],
            supported: FORMAT,
        });
    }
    let previous = READING.with(|r| r.replace(body[0]));
    let decoded = postcard::from_bytes(&body[1..]);
    READING.with(|r| r.set(previous));
    decoded.map_err(|error| LayoutError::corrupt(format!("cannot decode: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_fixture() {
        let sealed = seal(&(7u64, "z".to_string())).expect("encodes");
        // format 5, varint 7, string of length 1 "z", crc32c LE.
        assert_eq!(&sealed[..4], &[5, 7, 1, b'z']);
        assert_eq!(sealed.len(), 8);
        let back: (u64, String) = open(&sealed).expect("decodes");
        assert_eq!(back, (7, "z".to_string()));
    }

    #[test]
    fn flipped_bit_is_corrupt_and_unknown_format_is_refused() {
        let mut sealed = seal(&42u32).expect("encodes");
        sealed[1] ^= 1;
        assert!(matches!(
            open::<u32>(&sealed),
            Err(LayoutError::Corrupt { .. })
        ));
        let mut body = vec![FORMAT + 1, 42];
        body.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        assert!(matches!(
            open::<u32>(&body),
            Err(LayoutError::UnsupportedFormat { found: 6, .. })
        ));
        assert!(matches!(
            open::<u32>(&[1, 2]),
            Err(LayoutError::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = open::<(u64, String, Vec<u16>)>(&bytes);
        }
    }
}
