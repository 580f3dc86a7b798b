//! The fuzz targets of yeskv, as plain functions (the `fuzz_targets/` binaries only call them,
//! and `examples/seeds.rs` writes valid inputs for them).
//!
//! Every decoder that reads bytes a peer, a client or the disk controls has a target here. Each
//! input's first byte picks a mode:
//!
//! - **raw** (even byte): the rest of the input goes to the decoder as it is, the way an attacker
//!   would send it. Seeds in `fuzz/seeds/<target>/` are raw inputs holding real encodings.
//! - **structured** (odd byte): the rest is read with `arbitrary` into a description of a valid
//!   container (frames, records, tokens, packets, store files) whose lengths and checksums this
//!   code fills in, so that mutations reach the body parsers behind the CRC instead of dying at
//!   it.
//!
//! A target fails (libFuzzer reports a crash) on a panic, an abort, an allocation over
//! `-malloc_limit_mb`, or a broken property: a message that decodes must re-encode and decode to
//! the same encoding (round trip), a valid frame stream must decode to the frames it was built
//! from, and reopening a layout store must find what the first open recovered.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::BytesMut;
use chitchat::ChitchatEnvelope;
use serde::de::DeserializeOwned;
use serde::Serialize;
use yeskv_layout::store::{FileStore, RaftStore};
use yeskv_layout::{RaftRequest, RaftRpc, RaftRpcResponse};
use yeskv_node::peer::{PeerRequest, PeerResponse};
use yeskv_rpc::frame::{FrameDecoder, FrameKind, FRAME_PREFIX_BYTES};

/// The mode byte of a raw input (what the seeds use).
pub const RAW: u8 = 0;
/// The mode byte of a structured input.
pub const STRUCTURED: u8 = 1;

/// Splits the mode byte off: `(structured, rest)`.
fn mode(data: &[u8]) -> Option<(bool, &[u8])> {
    let (first, rest) = data.split_first()?;
    Some((first & 1 == 1, rest))
}

/// Postcard round trip: if `bytes` decode as `T`, the value's encoding must decode again to a
/// value with the same encoding. Returns the decoded value.
fn postcard_round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = postcard::from_bytes(bytes).ok()?;
    let encoded = postcard::to_allocvec(&value).expect("a decoded message encodes");
    let again: T = postcard::from_bytes(&encoded).expect("a re-encoded message decodes");
    let encoded_again = postcard::to_allocvec(&again).expect("encodes");
    assert_eq!(
        encoded, encoded_again,
        "postcard round trip changed the message"
    );
    Some(value)
}

// ---------------------------------------------------------------------------------------------
// rpc_frame

/// One frame to build: any kind byte (unknown kinds included), a request id, a payload.
#[derive(Arbitrary, Debug)]
pub struct FrameSpec {
    kind: u8,
    request_id: u64,
    payload: Vec<u8>,
}

/// A stream of frames, fed to the decoder in chunks, optionally with one byte changed.
#[derive(Arbitrary, Debug)]
pub struct FrameStream {
    frames: Vec<FrameSpec>,
    /// Chunk sizes the stream is delivered in (cycled; 0 means 1).
    chunks: Vec<u8>,
    /// `(position, xor)`: one byte of the stream changed after sealing.
    flip: Option<(u16, u8)>,
    /// The decoder's limit, in KiB above the minimum (small limits exercise the refusal).
    limit_kib: u16,
}

/// Seals one frame like `yeskv_rpc::frame::put_frame`, but with any kind byte.
fn put_raw_frame(stream: &mut Vec<u8>, kind: u8, request_id: u64, payload: &[u8]) {
    let length = (9 + payload.len()) as u32;
    let mut body = Vec::with_capacity(9 + payload.len());
    body.push(kind);
    body.extend_from_slice(&request_id.to_le_bytes());
    body.extend_from_slice(payload);
    stream.extend_from_slice(&length.to_le_bytes());
    stream.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    stream.extend_from_slice(&body);
}

/// Decodes a frame's payload as what its kind carries (the node's messages for requests and
/// responses), as the RPC client and server do.
fn decode_payload(kind: FrameKind, payload: &[u8]) {
    match kind {
        FrameKind::Hello => {
            let _ = yeskv_rpc::protocol::check_hello(
                payload,
                "yeskv",
                (yeskv_rpc::PROTOCOL_VERSION_MIN, yeskv_rpc::PROTOCOL_VERSION),
            );
        }
        FrameKind::Welcome => {
            let _ = postcard_round_trip::<yeskv_rpc::Welcome>(payload);
            let _ = yeskv_rpc::Welcome::decode(payload, yeskv_rpc::PROTOCOL_VERSION_MIN);
        }
        FrameKind::Refused => {
            let _ = postcard_round_trip::<yeskv_rpc::Refused>(payload);
        }
        FrameKind::Request => peer_request(payload),
        FrameKind::Response => {
            let _ = postcard_round_trip::<PeerResponse>(payload);
        }
        FrameKind::Failure => {
            let _ = postcard_round_trip::<yeskv_rpc::protocol::Failure>(payload);
        }
        FrameKind::GoAway | FrameKind::Ping | FrameKind::Pong => {}
    }
}

/// The RPC frame decoder (`yeskv_rpc::frame`), then the payload decoders.
pub fn rpc_frame(data: &[u8]) {
    let Some((structured, rest)) = mode(data) else {
        return;
    };
    if !structured {
        let decoder = FrameDecoder::new(yeskv_rpc::FRAME_BYTES_MAX_DEFAULT);
        let mut buffer = BytesMut::from(rest);
        while let Ok(Some(frame)) = decoder.decode(&mut buffer) {
            decode_payload(frame.kind, &frame.payload);
        }
        return;
    }
    let Ok(spec) = FrameStream::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let mut stream = Vec::new();
    let mut ends = Vec::new();
    for frame in &spec.frames {
        put_raw_frame(&mut stream, frame.kind, frame.request_id, &frame.payload);
        ends.push(stream.len());
    }
    let mut flipped = false;
    if let Some((position, xor)) = spec.flip {
        if !stream.is_empty() && xor != 0 {
            let position = position as usize % stream.len();
            stream[position] ^= xor;
            flipped = true;
        }
    }
    let limit = 17 + spec.limit_kib as usize * 1024;
    let decoder = FrameDecoder::new(limit);
    let mut buffer = BytesMut::new();
    let mut decoded = Vec::new();
    let mut offset = 0;
    let mut chunk = 0;
    let mut failed = false;
    'feed: while offset < stream.len() {
        let size = spec.chunks.get(chunk % spec.chunks.len().max(1)).copied();
        let size = (size.unwrap_or(255).max(1) as usize).min(stream.len() - offset);
        chunk += 1;
        buffer.extend_from_slice(&stream[offset..offset + size]);
        offset += size;
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    decode_payload(frame.kind, &frame.payload);
                    decoded.push(frame);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    if flipped {
        return;
    }
    // Unflipped: every frame up to the first unknown kind or oversized frame decodes exactly.
    let expected = spec
        .frames
        .iter()
        .take_while(|f| FrameKind::from_u8(f.kind).is_some() && 17 + f.payload.len() <= limit)
        .count();
    assert_eq!(
        decoded.len(),
        expected,
        "valid frames were lost or invented"
    );
    assert_eq!(failed, expected < spec.frames.len());
    for (frame, spec) in decoded.iter().zip(&spec.frames) {
        assert_eq!(frame.kind.as_u8(), spec.kind);
        assert_eq!(frame.request_id, spec.request_id);
        assert_eq!(&frame.payload[..], &spec.payload[..]);
    }
    if !failed {
        assert!(buffer.is_empty(), "a whole stream left bytes behind");
        assert_eq!(ends.last().copied().unwrap_or(0), stream.len());
    }
    let _ = FRAME_PREFIX_BYTES;
}

// ---------------------------------------------------------------------------------------------
// peer_message

/// A `PeerRequest` payload as the node's server decodes it, with the layout's snapshot bound.
fn peer_request(payload: &[u8]) {
    if let Some(PeerRequest::Layout(rpc)) = postcard_round_trip::<PeerRequest>(payload) {
        raft_rpc(rpc);
    }
}

/// What the layout service checks before openraft sees a message.
fn raft_rpc(rpc: RaftRpc) {
    if let RaftRequest::InstallSnapshot(chunk) = &rpc.body {
        let verdict = yeskv_layout::check_snapshot_chunk(chunk.offset, chunk.data.len());
        let end = chunk.offset.checked_add(chunk.data.len() as u64);
        assert_eq!(
            verdict.is_ok(),
            end.is_some_and(|end| end <= yeskv_layout::SNAPSHOT_BYTES_MAX)
        );
    }
}

/// Postcard decoding of the internode messages: the first byte of the rest picks the type
/// (`PeerRequest`, `PeerResponse`, `RaftRpc`, `RaftRpcResponse`, the RPC handshake).
pub fn peer_message(data: &[u8]) {
    // Postcard has no checksum of its own (the frame has it): raw bytes reach every parser, so
    // both modes are raw here.
    let Some((_, rest)) = mode(data) else {
        return;
    };
    let Some((which, payload)) = rest.split_first() else {
        return;
    };
    match which % 6 {
        0 => peer_request(payload),
        1 => {
            let _ = postcard_round_trip::<PeerResponse>(payload);
        }
        2 => {
            if let Some(rpc) = postcard_round_trip::<RaftRpc>(payload) {
                raft_rpc(rpc);
            }
        }
        3 => {
            let _ = postcard_round_trip::<RaftRpcResponse>(payload);
        }
        4 => {
            let _ = yeskv_rpc::protocol::check_hello(
                payload,
                "yeskv",
                (yeskv_rpc::PROTOCOL_VERSION_MIN, yeskv_rpc::PROTOCOL_VERSION),
            );
        }
        _ => {
            let _ = postcard_round_trip::<yeskv_rpc::Welcome>(payload);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// context_token

/// A token with a valid MAC: `[format][key tag][body]` + the first 16 bytes of HMAC-SHA256 under
/// one of the fuzzing keyring's context subkeys (or under a key not in it), base64url.
#[derive(Arbitrary, Debug)]
pub struct TokenSpec {
    key_tag: u32,
    /// Whether the token is presented for another key than it was made for.
    other_key: bool,
    format: u8,
    body: Vec<u8>,
    /// Which key signs: the primary, the older key still accepted, or one the keyring lacks.
    signer: Signer,
    /// Whitespace around the token (the decoder trims it).
    padded: bool,
}

/// Who signs a structured token.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Primary,
    Previous,
    Stranger,
}

/// The keyring the node under test holds (two keys: a rotation in progress), and a keyring
/// holding only a key it does not.
pub fn token_keys() -> &'static (yeskv_core::keyring::Subkeys, yeskv_core::keyring::Subkeys) {
    static KEYS: OnceLock<(yeskv_core::keyring::Subkeys, yeskv_core::keyring::Subkeys)> =
        OnceLock::new();
    KEYS.get_or_init(|| {
        use yeskv_core::keyring::{Keyring, Purpose};
        let node = Keyring::new(vec![[7; 32], [9; 32]]).expect("a two-key keyring");
        let stranger = Keyring::new(vec![[8; 32]]).expect("a one-key keyring");
        (
            node.derive(Purpose::Contexts),
            stranger.derive(Purpose::Contexts),
        )
    })
}

/// Decodes a token; a token that decodes must re-encode to one that decodes to the same context.
fn check_token(token: &str, key_tag: u32) -> bool {
    let (keys, _) = token_keys();
    let Ok(context) = yeskv_core::codec::decode_token(token, key_tag, keys) else {
        return false;
    };
    let again = yeskv_core::codec::encode_token(&context, key_tag, keys);
    let decoded =
        yeskv_core::codec::decode_token(&again, key_tag, keys).expect("a re-encoded token");
    assert_eq!(decoded, context, "token round trip changed the context");
    true
}

/// The causal context token decoder (`yeskv_core::codec::decode_token`).
pub fn context_token(data: &[u8]) {
    use hmac::Mac as _;
    let Some((structured, rest)) = mode(data) else {
        return;
    };
    if !structured {
        if rest.len() < 4 {
            return;
        }
        let (tag, token) = rest.split_at(4);
        let key_tag = u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]);
        check_token(&String::from_utf8_lossy(token), key_tag);
        return;
    }
    let Ok(spec) = TokenSpec::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let format = if spec.format < 128 {
        yeskv_core::codec::TOKEN_FORMAT
    } else {
        spec.format
    };
    let mut raw = vec![format];
    raw.extend_from_slice(&spec.key_tag.to_le_bytes());
    raw.extend_from_slice(&spec.body);
    let (keys, stranger) = token_keys();
    let key = match spec.signer {
        Signer::Primary => &keys.all()[0],
        Signer::Previous => &keys.all()[1],
        Signer::Stranger => stranger.primary(),
    };
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).expect("any key");
    mac.update(&raw);
    raw.extend_from_slice(&mac.finalize().into_bytes()[..yeskv_core::codec::TOKEN_MAC_BYTES]);
    let mut token = URL_SAFE_NO_PAD.encode(&raw);
    if spec.padded {
        token = format!(" {token}\n");
    }
    let presented = if spec.other_key {
        spec.key_tag.wrapping_add(1)
    } else {
        spec.key_tag
    };
    let accepted = check_token(&token, presented);
    // Only a token signed by a key of the keyring, for the key it is presented for, is accepted.
    if accepted {
        assert_ne!(
            spec.signer,
            Signer::Stranger,
            "a token signed by a stranger was accepted"
        );
        assert_eq!(
            presented, spec.key_tag,
            "a token was accepted for another key"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// record

/// A stored record with a valid checksum: `[format][CRC32C][reap_at_ms][body]`.
#[derive(Arbitrary, Debug)]
pub struct RecordSpec {
    format: u8,
    reap_at_ms: u64,
    body: Vec<u8>,
}

/// Decodes a record; one that decodes must re-encode to a record that decodes to the same object.
fn check_record(record: &[u8]) {
    let _ = yeskv_core::codec::record_reap_at_ms(record);
    let _ = yeskv_core::codec::record_expires_at_ms(record);
    let Ok(object) = yeskv_core::codec::decode_record(record) else {
        return;
    };
    let encoded = yeskv_core::codec::encode_record(&object, None);
    assert_eq!(encoded.len(), yeskv_core::codec::record_len(&object));
    let decoded = yeskv_core::codec::decode_record(&encoded).expect("a re-encoded record");
    assert_eq!(decoded, object, "record round trip changed the object");
}

/// The stored record codec (`yeskv_core::codec::decode_record` and the header readers).
pub fn record(data: &[u8]) {
    let Some((structured, rest)) = mode(data) else {
        return;
    };
    if !structured {
        check_record(rest);
        return;
    }
    let Ok(spec) = RecordSpec::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let mut record = vec![if spec.format < 192 {
        yeskv_core::codec::RECORD_FORMAT
    } else {
        spec.format
    }];
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&spec.reap_at_ms.to_le_bytes());
    record.extend_from_slice(&spec.body);
    let crc = crc32c::crc32c(&record[5..]);
    record[1..5].copy_from_slice(&crc.to_le_bytes());
    check_record(&record);
}

// ---------------------------------------------------------------------------------------------
// gossip_packet

/// One block of a chitchat stream: zstd-compressed or stored.
#[derive(Arbitrary, Debug)]
pub struct BlockSpec {
    compressed: bool,
    data: Vec<u8>,
}

/// A chitchat packet: header, then the message type's digest / cluster id / delta, with the
/// digest and delta streams built block by block so that their contents reach the item parsers.
#[derive(Arbitrary, Debug)]
pub struct PacketSpec {
    version: u8,
    message_type: u8,
    digest: Vec<BlockSpec>,
    cluster_id: String,
    delta: Vec<BlockSpec>,
    /// Bytes after the message.
    trailer: Vec<u8>,
}

/// chitchat's magic number (`message_serialize.rs`).
const CHITCHAT_MAGIC: u16 = 45_139;

thread_local! {
    /// One zstd compression context for every run (making one per block dominated the run time).
    static COMPRESSOR: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(1).expect("a zstd context"));
}

fn put_stream(out: &mut Vec<u8>, blocks: &[BlockSpec]) {
    for block in blocks {
        let data = &block.data[..block.data.len().min(u16::MAX as usize)];
        if block.compressed {
            let Ok(compressed) = COMPRESSOR.with(|c| c.borrow_mut().compress(data)) else {
                continue;
            };
            if compressed.len() > u16::MAX as usize {
                continue;
            }
            out.push(1);
            out.extend_from_slice(&(compressed.len() as u16).to_le_bytes());
            out.extend_from_slice(&compressed);
        } else {
            out.push(2);
            out.extend_from_slice(&(data.len() as u16).to_le_bytes());
            out.extend_from_slice(data);
        }
    }
    out.push(0);
}

/// Decodes a packet as the UDP transport does; one that decodes must re-encode to a packet that
/// decodes to the same encoding.
fn check_packet(packet: &[u8]) {
    let mut cursor = packet;
    let Ok(envelope) = ChitchatEnvelope::deserialize(&mut cursor) else {
        return;
    };
    let encoded = envelope.serialize_to_vec();
    let again = ChitchatEnvelope::deserialize(&mut &encoded[..]).expect("a re-encoded packet");
    assert_eq!(
        again.serialize_to_vec(),
        encoded,
        "gossip packet round trip changed the message"
    );
}

/// A gossip packet (`chitchat::ChitchatEnvelope::deserialize`, what the UDP socket calls on every
/// datagram), decompression included.
pub fn gossip_packet(data: &[u8]) {
    let Some((structured, rest)) = mode(data) else {
        return;
    };
    if !structured {
        check_packet(rest);
        return;
    }
    let Ok(spec) = PacketSpec::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let mut packet = CHITCHAT_MAGIC.to_le_bytes().to_vec();
    packet.push(spec.version % 3);
    let message_type = spec.message_type % 5;
    packet.push(message_type);
    let cluster_id = &spec.cluster_id.as_bytes()[..spec.cluster_id.len().min(u16::MAX as usize)];
    let put_digest = |packet: &mut Vec<u8>| {
        if spec.version % 3 == 0 {
            // V0 digest: the "blocks" are the raw bytes.
            for block in &spec.digest {
                packet.extend_from_slice(&block.data);
            }
        } else {
            put_stream(packet, &spec.digest);
        }
    };
    match message_type {
        0 => {
            put_digest(&mut packet);
            packet.extend_from_slice(&(cluster_id.len() as u16).to_le_bytes());
            packet.extend_from_slice(cluster_id);
        }
        1 => {
            put_digest(&mut packet);
            put_stream(&mut packet, &spec.delta);
        }
        2 => put_stream(&mut packet, &spec.delta),
        _ => {}
    }
    packet.extend_from_slice(&spec.trailer);
    // A datagram is at most 64 KiB.
    packet.truncate(65_507);
    check_packet(&packet);
}

// ---------------------------------------------------------------------------------------------
// layout_store

/// One envelope of the layout store (`yeskv_layout::codec`): format byte, postcard body, CRC32C.
#[derive(Arbitrary, Debug)]
pub struct EnvelopeSpec {
    format: u8,
    body: Vec<u8>,
    /// A wrong checksum (a corrupt envelope).
    bad_crc: bool,
}

impl EnvelopeSpec {
    fn bytes(&self) -> Vec<u8> {
        let format = if self.format < 224 {
            yeskv_layout::codec::FORMAT_MIN
                + self.format % (yeskv_layout::codec::FORMAT - yeskv_layout::codec::FORMAT_MIN + 1)
        } else {
            self.format
        };
        let mut out = vec![format];
        out.extend_from_slice(&self.body);
        let crc = crc32c::crc32c(&out) ^ u32::from(self.bad_crc);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// A log record: its length prefix is right unless `length_delta` changes it.
#[derive(Arbitrary, Debug)]
pub struct LogRecordSpec {
    envelope: EnvelopeSpec,
    length_delta: Option<i16>,
}

/// The files of a layout store directory.
#[derive(Arbitrary, Debug)]
pub struct StoreSpec {
    snapshot: Option<EnvelopeSpec>,
    records: Vec<LogRecordSpec>,
    /// Bytes after the last record (a torn write, zeros, garbage).
    tail: Vec<u8>,
    zero_tail: u8,
}

/// A scratch directory for the store (in memory when `/dev/shm` exists), reused across runs.
fn store_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("yeskv-fuzz-store")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                Path::new("/dev/shm").to_path_buf()
            } else {
                std::env::temp_dir()
            })
            .expect("a scratch directory");
        let path = dir.path().join("store");
        (dir, path)
    });
    path
}

/// Opens a store directory made of `snapshot` (if any) and `log`; if it opens, reopening it
/// (after the first open cut a torn tail or compacted) must recover the same contents.
fn check_store(snapshot: Option<&[u8]>, log: &[u8]) {
    let dir = store_dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("scratch directory");
    if let Some(snapshot) = snapshot {
        std::fs::write(dir.join(yeskv_layout::store::file::SNAPSHOT_FILE), snapshot)
            .expect("write snapshot");
    }
    std::fs::write(dir.join(yeskv_layout::store::file::LOG_FILE), log).expect("write log");
    let Ok(mut store) = FileStore::open(dir) else {
        return;
    };
    let first = store.load().expect("an open store loads");
    drop(store);
    let mut reopened = FileStore::open(dir).expect("a store that opened reopens");
    let second = reopened.load().expect("loads");
    assert_eq!(
        first, second,
        "reopening the layout store changed its contents"
    );
}

/// The layout's Raft store (`yeskv_layout::store::FileStore::open` on fuzzed files).
pub fn layout_store(data: &[u8]) {
    let Some((structured, rest)) = mode(data) else {
        return;
    };
    if !structured {
        // [snapshot length u32 LE, u32::MAX for none][snapshot][log]
        if rest.len() < 4 {
            return;
        }
        let (length, rest) = rest.split_at(4);
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]);
        if length == u32::MAX {
            check_store(None, rest);
        } else {
            let split = (length as usize).min(rest.len());
            let (snapshot, log) = rest.split_at(split);
            check_store(Some(snapshot), log);
        }
        return;
    }
    let Ok(spec) = StoreSpec::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let mut log = Vec::new();
    for record in &spec.records {
        let envelope = record.envelope.bytes();
        let length = envelope.len() as i64 + i64::from(record.length_delta.unwrap_or(0));
        log.extend_from_slice(&(length.clamp(0, u32::MAX as i64) as u32).to_le_bytes());
        log.extend_from_slice(&envelope);
    }
    log.extend_from_slice(&spec.tail);
    log.resize(log.len() + spec.zero_tail as usize, 0);
    let snapshot = spec.snapshot.as_ref().map(EnvelopeSpec::bytes);
    check_store(snapshot.as_deref(), &log);
}

/// Every target by name (for `examples/seeds.rs` and the replay test).
pub const TARGETS: [(&str, fn(&[u8])); 6] = [
    ("rpc_frame", rpc_frame),
    ("peer_message", peer_message),
    ("context_token", context_token),
    ("record", record),
    ("gossip_packet", gossip_packet),
    ("layout_store", layout_store),
];
