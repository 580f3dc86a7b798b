//! The membership configuration: one struct, every field documented with its unit, default and
//! bounds; defaults in [`MembershipConfig::new`], and [`MembershipConfig::validate`] refusing
//! nonsense before anything is bound.

use std::net::SocketAddr;
use std::time::Duration;

use yeskv_core::NodeId;

use crate::error::{Error, Result};
use crate::wire::{ADDRESS_BYTES_MAX, DEFAULT_REGION, REGION_BYTES_MAX, ZONE_BYTES_MAX};

/// Default [`MembershipConfig::gossip_interval_ms`].
pub const GOSSIP_INTERVAL_MS_DEFAULT: u64 = 500;
/// Default [`MembershipConfig::phi_threshold`] (Cassandra's and chitchat's default).
pub const PHI_THRESHOLD_DEFAULT: f64 = 8.0;
/// Default [`MembershipConfig::heartbeat_interval_max_ms`].
pub const HEARTBEAT_INTERVAL_MAX_MS_DEFAULT: u64 = 10_000;
/// Default [`MembershipConfig::dead_node_grace_ms`]: one hour.
pub const DEAD_NODE_GRACE_MS_DEFAULT: u64 = 60 * 60 * 1000;
/// Default [`MembershipConfig::members_max`].
pub const MEMBERS_MAX_DEFAULT: usize = 1024;
/// Longest accepted cluster id, in bytes.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;
/// Most seed addresses accepted.
pub const SEEDS_MAX: usize = 64;
/// How many heartbeat intervals per peer the failure detector averages over.
pub(crate) const HEARTBEAT_SAMPLES_MAX: usize = 1000;

/// Settings of one node's [`crate::Membership`].
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipConfig {
    /// This node's id, unique in the cluster.
    pub node_id: NodeId,
    /// The cluster's name. Gossip from a node with another cluster id is answered with a refusal
    /// and never enters the view (chitchat checks it on every SYN). 1 to
    /// [`CLUSTER_ID_BYTES_MAX`] bytes, no control characters.
    pub cluster_id: String,
    /// This node's zone (failure domain), gossiped. 1 to [`ZONE_BYTES_MAX`] bytes.
    pub zone: String,
    /// This node's region, gossiped. 1 to [`REGION_BYTES_MAX`] bytes; [`DEFAULT_REGION`] unless
    /// set.
    pub region: String,
    /// The client HTTP address (`host:port`), gossiped as given. 1 to [`ADDRESS_BYTES_MAX`]
    /// bytes.
    pub http_addr: String,
    /// The internode RPC address (`host:port`, TCP), gossiped as given. 1 to
    /// [`ADDRESS_BYTES_MAX`] bytes.
    pub peer_addr: String,
    /// UDP address the gossip socket binds. Default `None`: the peer address, same IP and same
    /// port number (TCP and UDP ports do not collide), which then must be an `IP:port` literal.
    /// Port 0 picks a free port (tests).
    pub gossip_addr: Option<SocketAddr>,
    /// Gossip address announced to peers. Default `None`: the bound gossip address; if that
    /// binds the unspecified IP (`0.0.0.0`, `::`), the peer address's IP with the gossip port.
    pub gossip_advertise_addr: Option<SocketAddr>,
    /// Other nodes' gossip addresses to join through (`host:port`; by convention their peer
    /// addresses). Host names are resolved, and resolved again every minute. Empty: this node
    /// starts a cluster of its own and waits to be contacted. At most [`SEEDS_MAX`].
    pub seeds: Vec<String>,
    /// Period of a gossip round, in milliseconds: every round the node contacts up to 3 live
    /// peers (plus, with some probability, one dead node and one seed). Default
    /// [`GOSSIP_INTERVAL_MS_DEFAULT`]; 10 to 60 000.
    pub gossip_interval_ms: u64,
    /// Phi-accrual threshold: a peer is down once the time since its last heartbeat exceeds
    /// `phi_threshold` times its mean heartbeat interval (chitchat models intervals as
    /// exponential, phi = elapsed / mean). Lower detects faster and flaps more. Default
    /// [`PHI_THRESHOLD_DEFAULT`]; 1 to 100.
    pub phi_threshold: f64,
    /// The mean heartbeat interval assumed for a peer before its intervals are measured, in
    /// milliseconds; it weighs as 5 samples, so it dominates the first seconds after a peer is
    /// met. Default `None`: the gossip interval. 1 to 60 000.
    pub heartbeat_interval_prior_ms: Option<u64>,
    /// Heartbeat intervals longer than this (a paused process, a healed partition) are left out
    /// of the mean, in milliseconds. Default [`HEARTBEAT_INTERVAL_MAX_MS_DEFAULT`]; at least
    /// twice the gossip interval, at most 600 000.
    pub heartbeat_interval_max_ms: u64,
    /// How long chitchat keeps gossiping a dead incarnation's state before dropping it, in
    /// milliseconds. The view keeps showing the node `down` after that, until it is forgotten.
    /// Default [`DEAD_NODE_GRACE_MS_DEFAULT`]; at least 10 gossip intervals, at most 30 days.
    pub dead_node_grace_ms: u64,
    /// The layout version this node holds when it starts (gossiped; raise it later with
    /// [`crate::Membership::set_layout_version`]). Default 0: none yet.
    pub layout_version: u64,
    /// Most members (this node included) the view holds; gossip about further nodes is dropped
    /// and counted. Default [`MEMBERS_MAX_DEFAULT`]; 1 to 65 536.
    pub members_max: usize,
}

impl MembershipConfig {
    /// A configuration with every optional field at its default.
    pub fn new(
        node_id: NodeId,
        cluster_id: impl Into<String>,
        zone: impl Into<String>,
        http_addr: impl Into<String>,
        peer_addr: impl Into<String>,
    ) -> Self {
        MembershipConfig {
            node_id,
            cluster_id: cluster_id.into(),
            zone: zone.into(),
            region: DEFAULT_REGION.into(),
            http_addr: http_addr.into(),
            peer_addr: peer_addr.into(),
            gossip_addr: None,
            gossip_advertise_addr: None,
            seeds: Vec::new(),
            gossip_interval_ms: GOSSIP_INTERVAL_MS_DEFAULT,
            phi_threshold: PHI_THRESHOLD_DEFAULT,
            heartbeat_interval_prior_ms: None,
            heartbeat_interval_max_ms: HEARTBEAT_INTERVAL_MAX_MS_DEFAULT,
            dead_node_grace_ms: DEAD_NODE_GRACE_MS_DEFAULT,
            layout_version: 0,
            members_max: MEMBERS_MAX_DEFAULT,
        }
    }

    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<()> {
        let text = |name: &str, value: &str, bytes_max: usize| -> Result<()> {
            if value.is_empty() || value.len() > bytes_max {
                return Err(invalid(format!(
                    "{name} must be 1 to {bytes_max} bytes, got {}",
                    value.len()
                )));
            }
            if value.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "{name} {value:?} contains control characters"
                )));
            }
            Ok(())
        };
        text("cluster_id", &self.cluster_id, CLUSTER_ID_BYTES_MAX)?;
        text("zone", &self.zone, ZONE_BYTES_MAX)?;
        text("region", &self.region, REGION_BYTES_MAX)?;
        text("http_addr", &self.http_addr, ADDRESS_BYTES_MAX)?;
        text("peer_addr", &self.peer_addr, ADDRESS_BYTES_MAX)?;
        if self.seeds.len() > SEEDS_MAX {
            return Err(invalid(format!(
                "at most {SEEDS_MAX} seeds, got {}",
                self.seeds.len()
            )));
        }
        for seed in &self.seeds {
            text("seed", seed, ADDRESS_BYTES_MAX)?;
        }
        self.gossip_listen_addr()?;
        if let Some(advertise) = self.gossip_advertise_addr {
            if advertise.ip().is_unspecified() || advertise.port() == 0 {
                return Err(invalid(format!(
                    "gossip_advertise_addr {advertise} must name a reachable IP and port"
                )));
            }
        }
        in_range("gossip_interval_ms", self.gossip_interval_ms, 10, 60_000)?;
        if !(self.phi_threshold.is_finite() && (1.0..=100.0).contains(&self.phi_threshold)) {
            return Err(invalid(format!(
                "phi_threshold must be 1 to 100, got {}",
                self.phi_threshold
            )));
        }
        if let Some(prior) = self.heartbeat_interval_prior_ms {
            in_range("heartbeat_interval_prior_ms", prior, 1, 60_000)?;
        }
        in_range(
            "heartbeat_interval_max_ms",
            self.heartbeat_interval_max_ms,
            self.gossip_interval_ms.saturating_mul(2),
            600_000,
        )?;
        in_range(
            "dead_node_grace_ms",
            self.dead_node_grace_ms,
            self.gossip_interval_ms.saturating_mul(10),
            30 * 24 * 60 * 60 * 1000,
        )?;
        in_range("members_max", self.members_max as u64, 1, 65_536)?;
        Ok(())
    }

    /// The UDP address the gossip socket binds: [`Self::gossip_addr`], else the peer address.
    pub fn gossip_listen_addr(&self) -> Result<SocketAddr> {
        if let Some(addr) = self.gossip_addr {
            return Ok(addr);
        }
        self.peer_addr.parse().map_err(|_| {
            invalid(format!(
                "peer_addr {:?} is not an IP:port, so gossip_addr must be set",
                self.peer_addr
            ))
        })
    }

    /// The gossip address announced to peers once the socket is bound at `bound`.
    pub fn gossip_advertise_addr_for(&self, bound: SocketAddr) -> Result<SocketAddr> {
        if let Some(addr) = self.gossip_advertise_addr {
            return Ok(addr);
        }
        if !bound.ip().is_unspecified() {
            return Ok(bound);
        }
        match self.peer_addr.parse::<SocketAddr>() {
            Ok(peer) if !peer.ip().is_unspecified() => Ok(SocketAddr::new(peer.ip(), bound.port())),
            _ => Err(invalid(format!(
                "gossip binds {bound} and peer_addr {:?} names no IP to announce: set \
                 gossip_advertise_addr",
                self.peer_addr
            ))),
        }
    }

    pub(crate) fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms)
    }

    pub(crate) fn heartbeat_interval_prior(&self) -> Duration {
        Duration::from_millis(
            self.heartbeat_interval_prior_ms
                .unwrap_or(self.gossip_interval_ms),
        )
    }

    /// The longest a peer that stopped can stay `Up` once its mean heartbeat interval is
    /// `mean_interval`: phi crosses the threshold, then the next gossip round notices.
    pub fn time_to_down(&self, mean_interval: Duration) -> Duration {
        mean_interval.mul_f64(self.phi_threshold) + self.gossip_interval()
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidConfig { reason }
}

fn in_range(name: &str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name} must be {min} to {max}, got {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MembershipConfig {
        MembershipConfig::new(
            NodeId::new("n1").expect("valid id"),
            "shop",
            "eu-1",
            "127.0.0.1:8081",
            "127.0.0.1:7081",
        )
    }

    #[test]
    fn defaults_are_valid_and_gossip_defaults_to_the_peer_address() {
        let config = config();
        config.validate().expect("defaults are valid");
        let listen = config
            .gossip_listen_addr()
            .expect("peer address is a literal");
        assert_eq!(listen, "127.0.0.1:7081".parse().expect("literal"));
        assert_eq!(config.heartbeat_interval_prior(), config.gossip_interval());
    }

    #[test]
    fn a_wildcard_bind_announces_the_peer_ip() {
        let mut config = config();
        config.gossip_addr = Some("0.0.0.0:0".parse().expect("literal"));
        let bound: SocketAddr = "0.0.0.0:40000".parse().expect("literal");
        assert_eq!(
            config.gossip_advertise_addr_for(bound).expect("peer ip"),
            "127.0.0.1:40000".parse().expect("literal")
        );
        config.peer_addr = "db-1.internal:7081".into();
        assert!(config.gossip_advertise_addr_for(bound).is_err());
        config.gossip_advertise_addr = Some("10.0.0.5:7081".parse().expect("literal"));
        assert_eq!(
            config.gossip_advertise_addr_for(bound).expect("explicit"),
            "10.0.0.5:7081".parse().expect("literal")
        );
    }

    #[test]
    fn validate_rejects_nonsense() {
        type Breakage = Box<dyn Fn(&mut MembershipConfig)>;
        let cases: Vec<(&str, Breakage)> = vec![
            ("empty cluster id", Box::new(|c| c.cluster_id.clear())),
            (
                "long cluster id",
                Box::new(|c| c.cluster_id = "c".repeat(65)),
            ),
            ("control char", Box::new(|c| c.zone = "eu\n1".into())),
            ("empty zone", Box::new(|c| c.zone.clear())),
            ("empty http", Box::new(|c| c.http_addr.clear())),
            (
                "host name peer, no gossip addr",
                Box::new(|c| c.peer_addr = "db-1:7081".into()),
            ),
            ("interval 0", Box::new(|c| c.gossip_interval_ms = 0)),
            ("phi 0", Box::new(|c| c.phi_threshold = 0.0)),
            ("phi NaN", Box::new(|c| c.phi_threshold = f64::NAN)),
            (
                "prior 0",
                Box::new(|c| c.heartbeat_interval_prior_ms = Some(0)),
            ),
            (
                "max below interval",
                Box::new(|c| c.heartbeat_interval_max_ms = 600),
            ),
            ("grace too short", Box::new(|c| c.dead_node_grace_ms = 1000)),
            ("no members", Box::new(|c| c.members_max = 0)),
            (
                "too many seeds",
                Box::new(|c| c.seeds = vec!["127.0.0.1:1".into(); 65]),
            ),
            ("empty seed", Box::new(|c| c.seeds = vec![String::new()])),
            (
                "unspecified advertise",
                Box::new(|c| {
                    c.gossip_advertise_addr = Some("0.0.0.0:7081".parse().expect("literal"))
                }),
            ),
        ];
        for (what, break_it) in cases {
            let mut config = config();
            break_it(&mut config);
            assert!(
                matches!(config.validate(), Err(Error::InvalidConfig { .. })),
                "{what} should be rejected"
            );
        }
    }

    #[test]
    fn time_to_down_is_phi_mean_intervals_plus_one_round() {
        let config = config();
        assert_eq!(
            config.time_to_down(Duration::from_millis(250)),
            Duration::from_millis(8 * 250 + 500)
        );
    }
}
