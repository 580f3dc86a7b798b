//! Regression tests of the gossip packet decoder (the vendored chitchat's changes, see
//! `vendor/chitchat/YESKV.md`).
//!
//! Gossip packets are decoded by chitchat (`ChitchatEnvelope::deserialize`, on every UDP
//! datagram), which decompresses the digest and delta streams block by block. Issue 17: a 64 KiB
//! packet of tiny zstd blocks, each decompressing to 64 KiB, made the receiver decompress and
//! buffer ~200 MiB. The vendored chitchat (`vendor/chitchat/YESKV.md`) stops a stream at
//! `STREAM_DECOMPRESSED_BYTES_MAX`.

use chitchat::{ChitchatEnvelope, STREAM_DECOMPRESSED_BYTES_MAX};

/// An `Ack` packet whose delta stream is `blocks` zstd blocks of 64 KiB - 1 zeros each.
fn ack_of_zero_blocks(blocks: usize) -> Vec<u8> {
    let zeros = vec![0u8; u16::MAX as usize];
    let block = zstd::bulk::compress(&zeros, 3).expect("compresses");
    let mut packet = 45_139u16.to_le_bytes().to_vec(); // chitchat's magic number
    packet.extend_from_slice(&[1, 2]); // protocol version 1, message type Ack
    for _ in 0..blocks {
        packet.push(1); // a compressed block
        packet.extend_from_slice(&(block.len() as u16).to_le_bytes());
        packet.extend_from_slice(&block);
    }
    packet.push(0); // no more blocks
    packet
}

#[test]
fn a_packet_that_decompresses_past_the_bound_is_refused() {
    // As many blocks as fit one datagram: the packet.
    let block_bytes = ack_of_zero_blocks(1).len() - 5;
    let blocks = (65_507 - 5) / block_bytes;
    let packet = ack_of_zero_blocks(blocks);
    assert!(packet.len() <= 65_507, "fits one datagram");
    let decompressed_bytes = blocks * u16::MAX as usize;
    assert!(
        decompressed_bytes > 100 * 1024 * 1024,
        "the packet would decompress to {decompressed_bytes} bytes"
    );
    let error = ChitchatEnvelope::deserialize(&mut &packet[..]).expect_err("refused");
    let reason = format!("{error:#}");
    assert!(
        reason.contains(&format!("more than {STREAM_DECOMPRESSED_BYTES_MAX} bytes")),
        "the reason names the bound: {reason}"
    );
}

#[test]
fn a_stream_within_the_bound_is_decompressed() {
    // 16 blocks of 64 KiB - 1 stay within 1 MiB: decompression succeeds, and what fails (if
    // anything) is the parsing of zeros as delta operations, not the bound.
    let blocks = STREAM_DECOMPRESSED_BYTES_MAX / u16::MAX as usize;
    assert!(blocks * u16::MAX as usize <= STREAM_DECOMPRESSED_BYTES_MAX);
    let packet = ack_of_zero_blocks(blocks);
    if let Err(error) = ChitchatEnvelope::deserialize(&mut &packet[..]) {
        let reason = format!("{error:#}");
        assert!(!reason.contains("more than"), "{reason}");
    }
    // One more block crosses it.
    let over = ack_of_zero_blocks(blocks + 1);
    let reason = format!(
        "{:#}",
        ChitchatEnvelope::deserialize(&mut &over[..]).expect_err("over the bound")
    );
    assert!(reason.contains("more than"), "{reason}");
}

/// Found by the `gossip_packet` fuzz target: an `Ack` whose delta stream is one empty stored
/// block decodes, and re-encoding the decoded envelope asserted (the encoding is 1 byte, the
/// wire held 4) and panicked.
#[test]
fn a_received_delta_re_encodes_without_panicking() {
    let mut packet = 45_139u16.to_le_bytes().to_vec();
    packet.extend_from_slice(&[1, 2]); // protocol version 1, Ack
    packet.extend_from_slice(&[2, 0, 0]); // a stored block of 0 bytes
    packet.push(0); // no more blocks
    let envelope = ChitchatEnvelope::deserialize(&mut &packet[..]).expect("a valid Ack");
    let encoded = envelope.serialize_to_vec();
    assert_eq!(
        encoded,
        [&packet[..4], &[0]].concat(),
        "an empty delta is one end byte"
    );
    let again = ChitchatEnvelope::deserialize(&mut &encoded[..]).expect("re-encoded decodes");
    assert_eq!(again.serialize_to_vec(), encoded);
}
