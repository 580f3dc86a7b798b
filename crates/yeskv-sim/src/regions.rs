//! Regions in the simulation: which host is in which region, the WAN latency between each pair
//! of regions, and the replicas each region holds (issue 15, `docs/design/regions.md` §3).
//!
//! A seed with regions ([`Regions`]) has `R` regions `r1`..`rR` ([`REGIONS_MIN`] to
//! [`REGIONS_MAX`]; by default every [`REGIONS_EVERY`]th seed draws [`REGIONS_DEFAULT`]), each
//! of [`REGION_NODES_MIN`] to [`REGION_NODES_MAX`] members, in zones `z0`, `z1`, ... of their
//! own inside the region (hosts `n1`.. in region order, as `yeskv dev --regions` numbers them).
//! Spares take a region too: a spare that replaces a member takes the member's region (the
//! operator replaces a machine where it stood), a spare that joins takes the regions round
//! robin. The layout's members carry the region (`Member.region`), and the first commit stages
//! [`REPLICAS_PER_REGION`] replicas in every region before it plans
//! ([`crate::topology::LayoutCell::bootstrap`]), so the nodes route by the product's per-region
//! placement (`placement::assign_regions`) and quorums (`local_quorum` by default).
//!
//! **WAN.** Each pair of regions gets a one-way latency drawn once per seed: a base of
//! [`WAN_BASE_MS_MIN`] to [`WAN_BASE_MS_MAX`] ms and a jitter of [`WAN_JITTER_MS_MIN`] to
//! [`WAN_JITTER_MS_MAX`] ms on top. The driver sets it on every turmoil link between two nodes
//! of the two regions (`set_link_latency` for the base, `set_link_max_message_latency` for
//! base + jitter: turmoil draws each message's delay between the two on its exponential curve,
//! and its TCP puts a connection's segments back in order). Links inside a region keep the
//! LAN latency of every other seed (0 to [`crate::faults::LATENCY_MS_MAX`] ms), and so do the
//! clients' links: a client talks only to nodes of its own region.
//!
//! Everything here is drawn from the seed's region generator, apart from the other draws, so
//! that a seed without regions draws exactly what it drew before regions existed.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use yeskv_layout::Replication;

use crate::faults::{Fault, Scheduled};

/// Fewest regions of a seed with regions.
pub const REGIONS_MIN: usize = 2;
/// Most regions of a seed with regions.
pub const REGIONS_MAX: usize = 4;
/// Regions of the seeds that draw regions by default.
pub const REGIONS_DEFAULT: usize = 3;
/// By default every seed divisible by this has [`REGIONS_DEFAULT`] regions (seeds 3, 6, 9, ...).
pub const REGIONS_EVERY: u64 = 3;
/// Fewest members per region.
pub const REGION_NODES_MIN: usize = 2;
/// Most members per region (with three, a region has a node that is no replica of a partition:
/// a stand-in inside the region for sloppy quorum).
pub const REGION_NODES_MAX: usize = 3;
/// Replicas of every partition in each region.
pub const REPLICAS_PER_REGION: u8 = 2;
/// Zones per region: a region's members are in zones `z0`.. round robin.
pub const ZONES_PER_REGION: usize = 3;
/// Least one-way WAN latency between two regions, ms.
pub const WAN_BASE_MS_MIN: u64 = 20;
/// Most one-way WAN latency between two regions (before jitter), ms.
pub const WAN_BASE_MS_MAX: u64 = 60;
/// Least jitter on top of a WAN link's base latency, ms.
pub const WAN_JITTER_MS_MIN: u64 = 2;
/// Most jitter on top of a WAN link's base latency, ms.
pub const WAN_JITTER_MS_MAX: u64 = 15;

/// One pair of regions' WAN latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wan {
    /// Least one-way latency, ms.
    pub base_ms: u64,
    /// Most latency above the base, ms.
    pub jitter_ms: u64,
}

/// A turmoil link's latency bounds: every message takes between `min` and `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkLatency {
    /// Least latency.
    pub min: Duration,
    /// Most latency (at least `min`).
    pub max: Duration,
}

/// The regions of one seed (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regions {
    /// How many regions.
    count: usize,
    /// Region index (0 for `r1`) of every host, members first, then spares.
    host_region: Vec<usize>,
    /// Members per region at the start.
    members_per_region: usize,
    /// WAN latency per pair of regions `(a, b)`, `a < b`.
    wan: BTreeMap<(usize, usize), Wan>,
}

/// Region `r`'s name: `r1` for 0.
pub fn region_name(r: usize) -> String {
    format!("r{}", r + 1)
}

impl Regions {
    /// `count` regions of `members_per_region` members each (hosts `0..count ×
    /// members_per_region`, in region order), then one spare per entry of `spares`, each in the
    /// region it names (`SpareRegion`), WAN latencies drawn from `rng`.
    pub fn draw(
        rng: &mut StdRng,
        count: usize,
        members_per_region: usize,
        spares: &[SpareRegion],
    ) -> Self {
        let mut host_region: Vec<usize> = (0..count * members_per_region)
            .map(|h| h / members_per_region)
            .collect();
        let mut joined = 0;
        for spare in spares {
            let region = match *spare {
                SpareRegion::Of(host) => host_region.get(host).copied().unwrap_or(0),
                SpareRegion::RoundRobin => {
                    joined += 1;
                    (joined - 1) % count
                }
            };
            host_region.push(region);
        }
        let mut wan = BTreeMap::new();
        for a in 0..count {
            for b in a + 1..count {
                let link = Wan {
                    base_ms: rng.random_range(WAN_BASE_MS_MIN..=WAN_BASE_MS_MAX),
                    jitter_ms: rng.random_range(WAN_JITTER_MS_MIN..=WAN_JITTER_MS_MAX),
                };
                wan.insert((a, b), link);
            }
        }
        Regions {
            count,
            host_region,
            members_per_region,
            wan,
        }
    }

    /// How many regions.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Members per region at the start.
    pub fn members_per_region(&self) -> usize {
        self.members_per_region
    }

    /// Hosts in all, members and spares.
    pub fn hosts(&self) -> usize {
        self.host_region.len()
    }

    /// The region index of `host`.
    pub fn region_of(&self, host: usize) -> usize {
        self.host_region.get(host).copied().unwrap_or(0)
    }

    /// The hosts (members and spares) of region `r`.
    pub fn hosts_in(&self, r: usize) -> Vec<usize> {
        (0..self.host_region.len())
            .filter(|h| self.host_region[*h] == r)
            .collect()
    }

    /// The zone of `host` inside its region: `z0`, `z1`, ... by its rank among the region's
    /// hosts.
    pub fn zone_of(&self, host: usize) -> String {
        let region = self.region_of(host);
        let rank = (0..host).filter(|h| self.host_region[*h] == region).count();
        format!("z{}", rank % ZONES_PER_REGION)
    }

    /// The WAN latency between regions `a` and `b` (`None` for one region with itself).
    pub fn wan(&self, a: usize, b: usize) -> Option<Wan> {
        self.wan.get(&(a.min(b), a.max(b))).copied()
    }

    /// The latency bounds of the link between hosts `a` and `b`: `None` inside one region (the
    /// LAN's, set elsewhere), else the pair's WAN latency plus `extra_ms` (a slow-WAN fault)
    /// on both bounds, the upper bound raised to `delay_max` if a delay fault asks more.
    pub fn link_latency(
        &self,
        a: usize,
        b: usize,
        extra_ms: u64,
        delay_max: Duration,
    ) -> Option<LinkLatency> {
        let wan = self.wan(self.region_of(a), self.region_of(b))?;
        let min = Duration::from_millis(wan.base_ms + extra_ms);
        let max = Duration::from_millis(wan.base_ms + wan.jitter_ms + extra_ms).max(delay_max);
        Some(LinkLatency { min, max })
    }

    /// The replicas per region the first commit stages: [`REPLICAS_PER_REGION`] in each.
    pub fn replication(&self) -> Replication {
        (0..self.count())
            .map(|r| (region_name(r), REPLICAS_PER_REGION))
            .collect()
    }

    /// One line for the trace: the regions' hosts and the WAN latencies.
    pub fn describe(&self) -> String {
        let regions: Vec<String> = (0..self.count())
            .map(|r| {
                let hosts: Vec<String> = self
                    .hosts_in(r)
                    .into_iter()
                    .map(crate::faults::node_name)
                    .collect();
                format!("{} [{}]", region_name(r), hosts.join(" "))
            })
            .collect();
        let wan: Vec<String> = self
            .wan
            .iter()
            .map(|((a, b), w)| {
                format!(
                    "{}-{} {}+{} ms",
                    region_name(*a),
                    region_name(*b),
                    w.base_ms,
                    w.jitter_ms
                )
            })
            .collect();
        format!(
            "regions {}, {} replicas each; WAN {}",
            regions.join(", "),
            REPLICAS_PER_REGION,
            wan.join(", ")
        )
    }
}

/// Where a spare's region comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpareRegion {
    /// The region of this host (the member a replace takes the place of).
    Of(usize),
    /// The next region, round robin over the spares that join.
    RoundRobin,
}

/// The region of each spare that `membership` (the seed's membership faults, in the order
/// they were drawn, which is the order their spares were numbered) brings in.
pub fn spare_regions(membership: &[Scheduled]) -> Vec<SpareRegion> {
    membership
        .iter()
        .filter_map(|f| match f.fault {
            Fault::Join { .. } => Some(SpareRegion::RoundRobin),
            Fault::Replace { node, .. } => Some(SpareRegion::Of(node)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn regions(spares: &[SpareRegion]) -> Regions {
        Regions::draw(&mut StdRng::seed_from_u64(7), 3, 2, spares)
    }

    #[test]
    fn members_are_in_region_order_and_spares_take_the_region_they_are_given() {
        let r = regions(&[
            SpareRegion::Of(3),
            SpareRegion::RoundRobin,
            SpareRegion::RoundRobin,
            SpareRegion::Of(6),
        ]);
        assert_eq!(r.count(), 3);
        let of: Vec<usize> = (0..10).map(|h| r.region_of(h)).collect();
        // n1 n2 in r1, n3 n4 in r2, n5 n6 in r3; n7 replaces n4 (r2), n8 and n9 join r1 and r2,
        // n10 replaces n7 (r2).
        assert_eq!(of, [0, 0, 1, 1, 2, 2, 1, 0, 1, 1]);
        assert_eq!(r.hosts_in(1), [2, 3, 6, 8, 9]);
        assert_eq!(
            [r.zone_of(2), r.zone_of(3), r.zone_of(6), r.zone_of(8)],
            ["z0", "z1", "z2", "z0"].map(String::from)
        );
        assert_eq!(
            r.replication().into_iter().collect::<Vec<_>>(),
            [("r1".into(), 2), ("r2".into(), 2), ("r3".into(), 2)]
        );
    }

    #[test]
    fn wan_links_are_drawn_per_region_pair_and_lan_links_have_none() {
        for seed in 0..100 {
            let r = Regions::draw(&mut StdRng::seed_from_u64(seed), 3, 2, &[]);
            for (a, b) in [(0, 1), (0, 2), (1, 2)] {
                let w = r.wan(a, b).expect("a WAN link");
                assert_eq!(r.wan(b, a), Some(w));
                assert!((WAN_BASE_MS_MIN..=WAN_BASE_MS_MAX).contains(&w.base_ms));
                assert!((WAN_JITTER_MS_MIN..=WAN_JITTER_MS_MAX).contains(&w.jitter_ms));
            }
            assert_eq!(r.wan(1, 1), None);
            let none = Duration::ZERO;
            // n1 and n2 share r1: no WAN latency; n1 and n3 do not.
            assert_eq!(r.link_latency(0, 1, 0, none), None);
            let w = r.wan(0, 1).expect("r1-r2");
            let lan_to_wan = r.link_latency(0, 2, 0, none).expect("r1-r2 link");
            assert_eq!(lan_to_wan.min, Duration::from_millis(w.base_ms));
            assert_eq!(
                lan_to_wan.max,
                Duration::from_millis(w.base_ms + w.jitter_ms)
            );
            // A slow WAN adds to both bounds; a delay fault raises only the upper one.
            let slow = r.link_latency(0, 2, 100, none).expect("slow");
            assert_eq!(slow.min, Duration::from_millis(w.base_ms + 100));
            let delayed = r
                .link_latency(0, 2, 0, Duration::from_millis(500))
                .expect("delayed");
            assert_eq!(delayed.min, lan_to_wan.min);
            assert_eq!(delayed.max, Duration::from_millis(500));
        }
    }

    #[test]
    fn the_same_generator_draws_the_same_regions() {
        let draw = |seed| Regions::draw(&mut StdRng::seed_from_u64(seed), 3, 3, &[]);
        assert_eq!(draw(11), draw(11));
        assert!((0..20).any(|s| draw(s) != draw(11)), "WAN draws vary");
    }
}
