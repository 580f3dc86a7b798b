//! Sealed gossip: every UDP packet authenticated and encrypted with the cluster keyring, as
//! Serf/Consul's gossip keyring does.
//!
//! Without it, anyone who can send a UDP packet to a node's gossip port and knows the cluster
//! name can write chitchat state: one forged `Ack` naming a node with generation `u64::MAX`
//! marks it down everywhere for good. With a keyring (`security.cluster_keys`), a packet is
//!
//! ```text
//! [format = 1][nonce: 24 bytes][XChaCha20-Poly1305(sent_at_ms u64 LE ‖ chitchat envelope)]
//! ```
//!
//! under the keyring's gossip subkey (`yeskv_core::keyring::Purpose::Gossip`), with the
//! format byte and the cluster name as associated data (a packet of another cluster fails
//! even with the same keys). The nonce is random: 192 bits, so random nonces never repeat in
//! practice. A received packet is tried against every key of the ring, primary first
//! (rotation: a node still sealing with the old primary is understood while the old key is in
//! the ring). A packet that fails — forged, altered, truncated, sealed by a key not in the
//! ring, or of another cluster — is dropped and counted
//! ([`crate::GossipStats::sealed_refused`]); it never reaches chitchat.
//!
//! **Replays.** An attacker can resend a genuine packet. A packet whose `sent_at_ms` is more
//! than [`REPLAY_WINDOW_MS`] (5 minutes, Kerberos' default skew) from the receiver's clock is
//! dropped, so nodes' clocks must agree within that window (run NTP): a node whose clock is off
//! by more is cut off from the gossip, seen down by the others, and says why in its log (a
//! warning at most once a minute). Inside the window a replay is a genuine message of the last
//! minutes delivered twice, which chitchat's versioning already makes harmless: a digest or
//! delta with versions the receiver has is ignored, heartbeats only ever move forward, and no
//! replayed packet can carry a state that its sender did not hold. The window is wide on
//! purpose: it bounds how old a replayed packet can be, while a narrow one would turn an
//! ordinary clock drift into a partition (the chaos runner skews clocks by 30 s to 10 min).
//!
//! The envelope costs [`SEAL_OVERHEAD_BYTES`] per packet. chitchat fills a datagram up to the
//! UDP maximum only with far more cluster state than yeskv gossips (a few hundred bytes per
//! node); a packet that would not fit is not sent and counted as a send error.
//!
//! [`seal`] and [`open`] are pure (the caller gives the time and the nonce);
//! [`SealedUdpSocket`] is the chitchat socket that uses them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chitchat::transport::{RecvOutcome, SendOutcome, Socket};
use chitchat::ChitchatEnvelope;
use rand::RngCore;
use tokio::sync::mpsc;
use yeskv_core::keyring::Subkeys;

use crate::transport::GossipCounters;

/// Format byte of a sealed packet.
pub const SEAL_FORMAT: u8 = 1;
/// Bytes of the nonce.
pub const NONCE_BYTES: usize = 24;
/// Bytes a sealed packet adds to the chitchat envelope: format, nonce, timestamp, tag.
pub const SEAL_OVERHEAD_BYTES: usize = 1 + NONCE_BYTES + 8 + 16;
/// How far a packet's send time may be from the receiver's clock, either way (module docs).
pub const REPLAY_WINDOW_MS: u64 = 300_000;
/// The largest UDP payload (IPv4).
const DATAGRAM_BYTES_MAX: usize = 65_507;

/// Why a packet was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Too short, or of an unknown format.
    #[error("malformed sealed packet: {0}")]
    Malformed(&'static str),
    /// No key of the ring opens it (forged, altered, other keys or another cluster).
    #[error("packet not sealed by a key of this cluster's keyring")]
    NotAuthentic,
    /// Sent too long ago (or too far in the future) by the receiver's clock.
    #[error("packet sent {age_ms} ms away from now (window {REPLAY_WINDOW_MS} ms)")]
    OutsideWindow {
        /// Distance between its send time and now, in ms.
        age_ms: u64,
    },
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

fn associated_data(cluster: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + cluster.len());
    aad.push(SEAL_FORMAT);
    aad.extend_from_slice(cluster.as_bytes());
    aad
}

/// Seals `plain` (a serialized chitchat envelope) sent at `now_ms`, with the primary key.
pub fn seal(
    keys: &Subkeys,
    cluster: &str,
    now_ms: u64,
    nonce: [u8; NONCE_BYTES],
    plain: &[u8],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(8 + plain.len());
    message.extend_from_slice(&now_ms.to_le_bytes());
    message.extend_from_slice(plain);
    let aad = associated_data(cluster);
    let sealed = cipher(keys.primary())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &message,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 seals any message shorter than 256 GiB");
    let mut packet = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
    packet.push(SEAL_FORMAT);
    packet.extend_from_slice(&nonce);
    packet.extend_from_slice(&sealed);
    packet
}

/// Opens a sealed packet received at `now_ms`: the chitchat envelope's bytes.
pub fn open(keys: &Subkeys, cluster: &str, now_ms: u64, packet: &[u8]) -> Result<Vec<u8>, Refusal> {
    if packet.len() < SEAL_OVERHEAD_BYTES {
        return Err(Refusal::Malformed("shorter than the envelope"));
    }
    if packet[0] != SEAL_FORMAT {
        return Err(Refusal::Malformed("unknown format"));
    }
    let (nonce, sealed) = packet[1..].split_at(NONCE_BYTES);
    let aad = associated_data(cluster);
    let message = keys
        .all()
        .iter()
        .find_map(|key| {
            cipher(key)
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad,
                    },
                )
                .ok()
        })
        .ok_or(Refusal::NotAuthentic)?;
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&message[..8]);
    let age_ms = now_ms.abs_diff(u64::from_le_bytes(sent));
    if age_ms > REPLAY_WINDOW_MS {
        return Err(Refusal::OutsideWindow { age_ms });
    }
    Ok(message[8..].to_vec())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Messages opened by the receiving task and not yet taken by chitchat; past it, packets are
/// dropped (and counted) rather than queued without bound.
const RECEIVED_QUEUE_MAX: usize = 256;

/// A chitchat socket over UDP that seals what it sends and drops what does not open (module
/// docs). A task receives, opens and decodes packets and queues them for [`Socket::recv`], which
/// stays cancellation-safe (chitchat cancels it every gossip round); it ends with the socket.
pub struct SealedUdpSocket {
    socket: Arc<tokio::net::UdpSocket>,
    keys: Subkeys,
    cluster: String,
    received: mpsc::Receiver<RecvOutcome>,
}

impl SealedUdpSocket {
    /// Binds `addr` and starts the receiving task.
    pub(crate) async fn open(
        addr: SocketAddr,
        keys: Subkeys,
        cluster: String,
        counters: Arc<GossipCounters>,
    ) -> anyhow::Result<SealedUdpSocket> {
        let socket = Arc::new(
            tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("failed to bind to {addr}/UDP for gossip"))?,
        );
        let (sender, received) = mpsc::channel(RECEIVED_QUEUE_MAX);
        tokio::spawn(receive(
            socket.clone(),
            keys.clone(),
            cluster.clone(),
            counters,
            sender,
        ));
        Ok(SealedUdpSocket {
            socket,
            keys,
            cluster,
            received,
        })
    }
}

/// The receiving task: opens each packet, decodes it, queues it; drops and counts the rest.
async fn receive(
    socket: Arc<tokio::net::UdpSocket>,
    keys: Subkeys,
    cluster: String,
    counters: Arc<GossipCounters>,
    sender: mpsc::Sender<RecvOutcome>,
) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    let mut skew_warned: Option<std::time::Instant> = None;
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            () = sender.closed() => return,
        };
        let (len, from_addr) = match received {
            Ok(received) => received,
            Err(error) => {
                // Transient on most platforms (an ICMP error for an earlier send); a closed
                // socket ends the task through `closed()` above.
                tracing::debug!(%error, "gossip UDP receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let plain = match open(&keys, &cluster, now_ms(), &buf[..len]) {
            Ok(plain) => plain,
            Err(refusal) => {
                counters.count_sealed_refused();
                let warn = matches!(refusal, Refusal::OutsideWindow { .. })
                    && skew_warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
                if warn {
                    skew_warned = Some(std::time::Instant::now());
                    tracing::warn!(from = %from_addr, %refusal,
                        "gossip packet dropped: its sender's clock or ours is off (run NTP), or it is a replay");
                } else {
                    tracing::debug!(from = %from_addr, %refusal, "gossip packet dropped");
                }
                continue;
            }
        };
        match ChitchatEnvelope::deserialize(&mut &plain[..]) {
            Ok(envelope) => {
                let outcome = RecvOutcome {
                    from_addr,
                    envelope,
                    num_bytes_received: len,
                };
                if sender.try_send(outcome).is_err() {
                    counters.count_sealed_refused();
                }
            }
            Err(error) => {
                // Sealed by a key of ours, yet not a chitchat message: another build, or a bug.
                counters.count_sealed_refused();
                tracing::debug!(from = %from_addr, %error, "sealed gossip packet does not decode");
            }
        }
    }
}

#[async_trait]
impl Socket for SealedUdpSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("failed to get UDP socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let plain = envelope.serialize_to_vec();
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let packet = seal(&self.keys, &self.cluster, now_ms(), nonce, &plain);
        if packet.len() > DATAGRAM_BYTES_MAX {
            anyhow::bail!(
                "sealed gossip packet of {} bytes exceeds the UDP maximum",
                packet.len()
            );
        }
        let num_bytes_sent = self
            .socket
            .send_to(&packet, to)
            .await
            .context("failed to send a gossip packet")?;
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancellation-safe: a queued message stays queued until taken.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.received
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("the gossip receiving task ended"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yeskv_core::keyring::{Keyring, Purpose};

    fn keys(seed: u8) -> Subkeys {
        Keyring::new(vec![[seed; 32]])
            .expect("ring")
            .derive(Purpose::Gossip)
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_sealed_packet_opens_once_and_only_with_the_keys_and_cluster() {
        let packet = seal(&keys(1), "c", NOW, [7; NONCE_BYTES], b"hello");
        assert_eq!(packet.len(), 5 + SEAL_OVERHEAD_BYTES);
        assert_eq!(open(&keys(1), "c", NOW, &packet).expect("opens"), b"hello");
        assert_eq!(
            open(&keys(2), "c", NOW, &packet),
            Err(Refusal::NotAuthentic)
        );
        assert_eq!(
            open(&keys(1), "d", NOW, &packet),
            Err(Refusal::NotAuthentic)
        );
        assert!(!packet.windows(5).any(|w| w == b"hello"), "encrypted");
        assert!(matches!(
            open(&keys(1), "c", NOW, &packet[..10]),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn replays_outside_the_window_are_dropped() {
        let packet = seal(&keys(1), "c", NOW, [7; NONCE_BYTES], b"ack");
        assert!(open(&keys(1), "c", NOW + REPLAY_WINDOW_MS, &packet).is_ok());
        assert!(open(&keys(1), "c", NOW - REPLAY_WINDOW_MS, &packet).is_ok());
        assert_eq!(
            open(&keys(1), "c", NOW + REPLAY_WINDOW_MS + 1, &packet),
            Err(Refusal::OutsideWindow {
                age_ms: REPLAY_WINDOW_MS + 1
            })
        );
        assert!(open(&keys(1), "c", NOW - REPLAY_WINDOW_MS - 1, &packet).is_err());
    }

    #[test]
    fn rotation_old_primary_is_understood_while_in_the_ring() {
        let old = Keyring::new(vec![[1; 32]]).expect("ring");
        let both = old.with_primary([2; 32]).expect("room");
        let from_old = seal(&old.derive(Purpose::Gossip), "c", NOW, [0; 24], b"x");
        let from_new = seal(&both.derive(Purpose::Gossip), "c", NOW, [0; 24], b"y");
        assert!(open(&both.derive(Purpose::Gossip), "c", NOW, &from_old).is_ok());
        assert_eq!(
            open(&old.derive(Purpose::Gossip), "c", NOW, &from_new),
            Err(Refusal::NotAuthentic)
        );
        let new_only = Keyring::new(vec![[2; 32]])
            .expect("ring")
            .derive(Purpose::Gossip);
        assert!(open(&new_only, "c", NOW, &from_new).is_ok());
        assert!(open(&new_only, "c", NOW, &from_old).is_err());
    }

    proptest! {
        /// Changing any byte of a sealed packet makes it fail: nothing altered reaches chitchat.
        #[test]
        fn every_altered_packet_is_dropped(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            at in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut packet = seal(&keys(3), "c", NOW, [9; NONCE_BYTES], &body);
            prop_assert_eq!(open(&keys(3), "c", NOW, &packet).expect("opens"), body);
            let i = at.index(packet.len());
            packet[i] ^= flip;
            prop_assert!(open(&keys(3), "c", NOW, &packet).is_err());
        }

        /// Random bytes never open (and never panic).
        #[test]
        fn garbage_never_opens(packet in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(open(&keys(3), "c", NOW, &packet).is_err());
        }
    }
}
