//! The fault schedule of a seed, and how each fault is applied to the simulation.
//!
//! [`schedule`] draws, from the seed, faults spread over the run: each has a start, an end (at
//! the latest when the workload stops: everything is healed then) and a kind:
//!
//! | kind | how |
//! |---|---|
//! | crash + restart | turmoil `crash` (every task of the host dropped) and the disk loses what was not fsynced; at the end `bounce` restarts the software, which reopens the replica |
//! | clean restart | the node is asked to stop (as by SIGTERM: servers and workers stop, the replica saves its state and the clean marker); at the end it starts again, keeping its actor epoch. A node that has not finished stopping by then is killed (a crash) |
//! | partition: one node isolated | every link of the node cut both ways |
//! | partition: minority / majority | the nodes split in two sides, every link across cut both ways |
//! | partition: bridge | two sides that only one node (the bridge) can talk to |
//! | partition: one way | one node cannot send to some others (they still reach it) |
//! | message loss | [`crate::chaos`]: a share of internode calls lose their request or their reply |
//! | duplication | [`crate::chaos`]: a share of `Read`/`Merge` calls are sent twice |
//! | delay | turmoil link latency between nodes raised to tens or hundreds of ms (messages on different connections reorder) |
//! | clock skew | one node's clock jumps by up to ±10 s |
//! | slow disk | one node's fsyncs take tens to hundreds of ms more |
//! | join | a spare node (a host running from the start with an empty disk, owning nothing) is staged to join and the plan committed ([`crate::topology::LayoutCell::change`]); it receives its partitions with the product's transfer worker |
//! | leave | a member is staged to leave gracefully and the plan committed; it serves as a source until its partitions are received elsewhere, and once the layout has dropped it, it is stopped for good (killed; its disk is never read again) |
//! | replace | a member is crashed for good, forced out (`leave --force`) and a fresh spare joins in the same plan; its partitions are rebuilt from the surviving data holders |
//! | region cut (seeds with regions) | every link between the hosts of one region and the hosts of every other region cut both ways, then healed |
//! | slow WAN (seeds with regions) | the latency of every link between one region and the others raised by tens to hundreds of ms, then restored |
//!
//! The membership faults (join, leave, replace: [`membership_changes`]) come from a generator of
//! their own, like the long split, and each needs a spare of its own for a join: the spares are
//! hosts `n{members+1}` and up. They are instantaneous (start = end) and permanent. Whether one
//! can run is decided when it starts, from the layout then: a leave needs a member that is an
//! owner while more than `NODES_MIN` owners remain, a replace an owner that holds no partition
//! which already lost a holder for good and is not rebuilt yet (two permanent disk losses among
//! the replicas of a partition before repair can lose a write acknowledged with `w = 2`, which
//! no layout check can see and the product does not promise against); the layout refuses a
//! plan that would lose the only copies of a partition and the driver, as the API, one after
//! which some partition has no data holder that is up. A fault refused or not applicable is
//! skipped (counted `join-skipped`, `leave-skipped`, `replace-skipped`, and
//! `replace-refused-data-loss` for the layout's data-loss refusal): never forced with loss.
//! Crashes, restarts, partitions, skews and slow disks are drawn over every host, spares
//! included (a spare crashed while it receives partitions restarts and receives them again).
//!
//! On top of that, one seed in [`LONG_SPLIT_ONE_IN`] gets a **long split**
//! ([`long_split`]): two nodes (one when there are only three) cut from the rest for
//! 3.5 to 6 s, from early in the run, with the workload going on for a while after the heal.
//! Writes through the small side to keys whose primaries are all on the other side are taken
//! by two stand-ins as hints only, kept for longer than any short fault lasts, and handed off
//! while clients keep writing through the nodes that held them: the pattern of the four writes
//! a 900 s chaos run lost (hints dropped for age after a 7.2 s split). It is drawn
//! from its own generator, so the rest of a seed's schedule is what it was without it.
//!
//! On a seed with regions ([`crate::regions`]), [`region_faults`] adds 1 to
//! [`REGION_FAULTS_MAX`] region cuts and slow WANs, drawn from the seed's region generator;
//! every other fault is drawn as on any seed, over all hosts whatever their region.
//!
//! Partitions are kept as counts per directed link, so overlapping partitions compose: a link is
//! cut while any active partition cuts it, and repaired when the last one ends. Clients are never
//! partitioned from nodes (as in Jepsen: the faults are between the nodes).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::regions::{region_name, Regions};
/// Normal one-way latency bound between any two hosts, ms.
pub const LATENCY_MS_MAX: u64 = 3;

/// One fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Node `node` crashes (power loss) and restarts at the end.
    Crash {
        /// Node index.
        node: usize,
    },
    /// Node `node` stops cleanly and starts again at the end.
    Restart {
        /// Node index.
        node: usize,
    },
    /// A partition: the directed links `(from, to)` that drop everything.
    Partition {
        /// Which shape.
        shape: Shape,
        /// Cut links, by node index.
        cut: Vec<(usize, usize)>,
    },
    /// Internode calls lose their request or reply with this probability.
    Loss {
        /// Probability per call.
        rate: f64,
    },
    /// Idempotent internode calls are sent twice with this probability.
    Duplicate {
        /// Probability per call.
        rate: f64,
    },
    /// Node-to-node message latency up to `max_ms`.
    Delay {
        /// Latency bound, ms.
        max_ms: u64,
    },
    /// Node `node`'s clock is off by `skew_ms`.
    ClockSkew {
        /// Node index.
        node: usize,
        /// Skew, ms.
        skew_ms: i64,
    },
    /// Node `node`'s fsyncs take `delay_ms` more.
    SlowDisk {
        /// Node index.
        node: usize,
        /// Extra fsync latency, ms.
        delay_ms: u64,
    },
    /// Spare `node` joins the layout.
    Join {
        /// Node index (a spare).
        node: usize,
    },
    /// Member `node` leaves gracefully; stopped for good once the layout dropped it.
    Leave {
        /// Node index.
        node: usize,
    },
    /// Member `node` is crashed for good and forced out, spare `with` joins in its place.
    Replace {
        /// Node index of the member replaced.
        node: usize,
        /// Node index of the spare that joins.
        with: usize,
    },
    /// Region `region` cut from every other region: the directed links `cut` drop everything.
    RegionCut {
        /// Region index (0 for `r1`).
        region: usize,
        /// Cut links, by node index: every host of the region to every host outside it and
        /// back.
        cut: Vec<(usize, usize)>,
    },
    /// The WAN links between region `region` and every other region `extra_ms` slower.
    SlowWan {
        /// Region index (0 for `r1`).
        region: usize,
        /// Latency added to both bounds of each link, ms.
        extra_ms: u64,
    },
}

/// The shape of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One node cut from all others.
    Isolate,
    /// A minority and a majority cut from each other.
    Split,
    /// Two sides connected only through one node.
    Bridge,
    /// Some links cut in one direction only.
    OneWay,
    /// A split held for seconds, longer than any other fault ([`long_split`]).
    LongSplit,
}

/// A fault with its window.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduled {
    /// Start, simulated ms.
    pub start_ms: u64,
    /// End (healed), simulated ms.
    pub end_ms: u64,
    /// The fault.
    pub fault: Fault,
}

/// Renders node indexes as names.
pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash { node } => write!(f, "crash {}", node_name(*node)),
            Fault::Restart { node } => write!(f, "restart {}", node_name(*node)),
            Fault::Partition { shape, cut } => {
                let links: Vec<String> = cut
                    .iter()
                    .map(|(a, b)| format!("{}->{}", node_name(*a), node_name(*b)))
                    .collect();
                write!(f, "partition {shape:?} [{}]", links.join(" "))
            }
            Fault::Loss { rate } => write!(f, "message loss {:.0}%", rate * 100.0),
            Fault::Duplicate { rate } => write!(f, "duplication {:.0}%", rate * 100.0),
            Fault::Delay { max_ms } => write!(f, "delay up to {max_ms} ms"),
            Fault::ClockSkew { node, skew_ms } => {
                write!(f, "clock skew {} {skew_ms:+} ms", node_name(*node))
            }
            Fault::SlowDisk { node, delay_ms } => {
                write!(f, "slow disk {} +{delay_ms} ms", node_name(*node))
            }
            Fault::Join { node } => write!(f, "join {}", node_name(*node)),
            Fault::Leave { node } => write!(f, "leave {}", node_name(*node)),
            Fault::Replace { node, with } => {
                write!(f, "replace {} with {}", node_name(*node), node_name(*with))
            }
            Fault::RegionCut { region, cut } => {
                write!(
                    f,
                    "region cut {} from the other regions ({} links)",
                    region_name(*region),
                    cut.len()
                )
            }
            Fault::SlowWan { region, extra_ms } => {
                write!(
                    f,
                    "slow WAN {} to the other regions +{extra_ms} ms",
                    region_name(*region)
                )
            }
        }
    }
}

impl Fault {
    /// The kind, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::Restart { .. } => "restart",
            Fault::Partition {
                shape: Shape::Isolate,
                ..
            } => "partition-isolate",
            Fault::Partition {
                shape: Shape::Split,
                ..
            } => "partition-split",
            Fault::Partition {
                shape: Shape::Bridge,
                ..
            } => "partition-bridge",
            Fault::Partition {
                shape: Shape::OneWay,
                ..
            } => "partition-oneway",
            Fault::Partition {
                shape: Shape::LongSplit,
                ..
            } => "partition-long-split",
            Fault::Loss { .. } => "loss",
            Fault::Duplicate { .. } => "duplicate",
            Fault::Delay { .. } => "delay",
            Fault::ClockSkew { .. } => "clock-skew",
            Fault::SlowDisk { .. } => "slow-disk",
            Fault::Join { .. } => "join",
            Fault::Leave { .. } => "leave",
            Fault::Replace { .. } => "replace",
            Fault::RegionCut { .. } => "region-cut",
            Fault::SlowWan { .. } => "slow-wan",
        }
    }

    /// The kind's count of faults skipped (not applicable, or refused), for membership faults.
    pub fn skipped_kind(&self) -> &'static str {
        match self {
            Fault::Join { .. } => "join-skipped",
            Fault::Leave { .. } => "leave-skipped",
            Fault::Replace { .. } => "replace-skipped",
            _ => "skipped",
        }
    }

    /// Whether it changes the layout (start = end, permanent).
    pub fn is_membership(&self) -> bool {
        matches!(
            self,
            Fault::Join { .. } | Fault::Leave { .. } | Fault::Replace { .. }
        )
    }
}

fn both_ways(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    let mut cut = Vec::new();
    for &x in a {
        for &y in b {
            cut.push((x, y));
            cut.push((y, x));
        }
    }
    cut
}

fn partition(rng: &mut StdRng, nodes: usize) -> Fault {
    let mut order: Vec<usize> = (0..nodes).collect();
    order.shuffle(rng);
    match rng.random_range(0..4) {
        0 => Fault::Partition {
            shape: Shape::Isolate,
            cut: both_ways(&order[..1], &order[1..]),
        },
        1 => {
            let minority = rng.random_range(1..=(nodes - 1) / 2);
            Fault::Partition {
                shape: Shape::Split,
                cut: both_ways(&order[..minority], &order[minority..]),
            }
        }
        2 => {
            // order[0] is the bridge: the only node both sides still reach.
            let rest = &order[1..];
            let half = rest.len() / 2;
            Fault::Partition {
                shape: Shape::Bridge,
                cut: both_ways(&rest[..half], &rest[half..]),
            }
        }
        _ => {
            let from = order[0];
            let count = rng.random_range(1..nodes);
            let cut = order[1..=count].iter().map(|&to| (from, to)).collect();
            Fault::Partition {
                shape: Shape::OneWay,
                cut,
            }
        }
    }
}

/// Draws the faults of a run of `duration_ms` on `nodes` nodes (see the module docs).
pub fn schedule(rng: &mut StdRng, nodes: usize, duration_ms: u64) -> Vec<Scheduled> {
    let count = (duration_ms / 500).max(1) as usize + rng.random_range(0..=2);
    let mut faults = Vec::with_capacity(count);
    for _ in 0..count {
        let start_ms = rng.random_range(100..duration_ms.saturating_sub(200).max(101));
        let length_ms = rng.random_range(100..=1_500);
        let end_ms = (start_ms + length_ms).min(duration_ms);
        let fault = match rng.random_range(0..10) {
            0 => Fault::Crash {
                node: rng.random_range(0..nodes),
            },
            1 => Fault::Restart {
                node: rng.random_range(0..nodes),
            },
            2..=4 => partition(rng, nodes),
            5 => Fault::Loss {
                rate: rng.random_range(0.05..=0.3),
            },
            6 => Fault::Duplicate {
                rate: rng.random_range(0.1..=0.5),
            },
            7 => Fault::Delay {
                max_ms: rng.random_range(20..=200),
            },
            8 => Fault::ClockSkew {
                node: rng.random_range(0..nodes),
                skew_ms: rng.random_range(-10_000..=10_000),
            },
            _ => Fault::SlowDisk {
                node: rng.random_range(0..nodes),
                delay_ms: rng.random_range(20..=400),
            },
        };
        faults.push(Scheduled {
            start_ms,
            end_ms,
            fault,
        });
    }
    faults.sort_by_key(|f| (f.start_ms, f.end_ms));
    faults
}

/// One seed in this many gets a long split ([`long_split`]).
pub const LONG_SPLIT_ONE_IN: u64 = 4;
/// How long the workload goes on after a long split heals, simulated ms.
pub const AFTER_LONG_SPLIT_MS: u64 = 1_500;

/// The long split of a seed, if it has one (see the module docs): drawn from `rng`, a
/// generator of its own. The workload must last until [`AFTER_LONG_SPLIT_MS`] past its end.
pub fn long_split(rng: &mut StdRng, nodes: usize) -> Option<Scheduled> {
    if rng.random_range(0..LONG_SPLIT_ONE_IN) != 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..nodes).collect();
    order.shuffle(rng);
    let small = if nodes >= 5 { 2 } else { 1 };
    let start_ms = rng.random_range(100..=800);
    let length_ms = rng.random_range(3_500..=6_000);
    Some(Scheduled {
        start_ms,
        end_ms: start_ms + length_ms,
        fault: Fault::Partition {
            shape: Shape::LongSplit,
            cut: both_ways(&order[..small], &order[small..]),
        },
    })
}

/// Most membership changes (joins, leaves, replaces) in one seed.
pub const MEMBERSHIP_CHANGES_MAX: usize = 3;

/// The membership faults of a seed (see the module docs), drawn from `rng`, a generator of
/// their own, over a cluster of `members` first members and a workload of `duration_ms`: 0 to
/// [`MEMBERSHIP_CHANGES_MAX`] joins, leaves and replaces at times like the other faults'. Each
/// join and each replace takes the next spare (`members`, `members + 1`, ...); a leave or a
/// replace names any node known by then (a spare that joins later is skipped if its leave comes
/// first). Returns the faults and the number of spares they need.
pub fn membership_changes(
    rng: &mut StdRng,
    members: usize,
    duration_ms: u64,
) -> (Vec<Scheduled>, usize) {
    let count = rng.random_range(0..=MEMBERSHIP_CHANGES_MAX);
    let mut spares = 0;
    let mut faults = Vec::with_capacity(count);
    for _ in 0..count {
        let start_ms = rng.random_range(100..duration_ms.saturating_sub(200).max(101));
        let fault = match rng.random_range(0..3) {
            0 => {
                spares += 1;
                Fault::Join {
                    node: members + spares - 1,
                }
            }
            1 => Fault::Leave {
                node: rng.random_range(0..members + spares),
            },
            _ => {
                let node = rng.random_range(0..members + spares);
                spares += 1;
                Fault::Replace {
                    node,
                    with: members + spares - 1,
                }
            }
        };
        faults.push(Scheduled {
            start_ms,
            end_ms: start_ms,
            fault,
        });
    }
    (faults, spares)
}

/// Most region faults (region cuts and slow WANs) in one seed with regions.
pub const REGION_FAULTS_MAX: usize = 3;
/// Shortest region cut, simulated ms.
pub const REGION_CUT_MS_MIN: u64 = 300;
/// Longest region cut, simulated ms.
pub const REGION_CUT_MS_MAX: u64 = 2_500;
/// Least latency a slow WAN adds, ms.
pub const SLOW_WAN_MS_MIN: u64 = 40;
/// Most latency a slow WAN adds, ms (above half the internode deadline: calls across it time
/// out).
pub const SLOW_WAN_MS_MAX: u64 = 250;

/// The region faults of a seed with `regions` (see the module docs), drawn from `rng` (the
/// region generator) over a workload of `duration_ms`: 1 to [`REGION_FAULTS_MAX`], each a
/// region cut (three in five) or a slow WAN, of a region drawn at random, ending at the latest
/// when the workload does.
pub fn region_faults(rng: &mut StdRng, regions: &Regions, duration_ms: u64) -> Vec<Scheduled> {
    let count = rng.random_range(1..=REGION_FAULTS_MAX);
    let mut faults = Vec::with_capacity(count);
    for _ in 0..count {
        let region = rng.random_range(0..regions.count());
        let start_ms = rng.random_range(100..duration_ms.saturating_sub(200).max(101));
        let (fault, length_ms) = if rng.random_range(0..5) < 3 {
            let inside = regions.hosts_in(region);
            let outside: Vec<usize> = (0..regions.hosts())
                .filter(|h| regions.region_of(*h) != region)
                .collect();
            let cut = both_ways(&inside, &outside);
            let length = rng.random_range(REGION_CUT_MS_MIN..=REGION_CUT_MS_MAX);
            (Fault::RegionCut { region, cut }, length)
        } else {
            let extra_ms = rng.random_range(SLOW_WAN_MS_MIN..=SLOW_WAN_MS_MAX);
            let length = rng.random_range(300..=1_500);
            (Fault::SlowWan { region, extra_ms }, length)
        };
        faults.push(Scheduled {
            start_ms,
            end_ms: (start_ms + length_ms).min(duration_ms),
            fault,
        });
    }
    faults
}

/// What is currently in force, composed from the active faults.
#[derive(Debug, Default)]
pub struct Active {
    /// Active crashes per node.
    pub crashed: BTreeMap<usize, usize>,
    /// Active restarts per node (it is down while either count is above 0).
    pub restarting: BTreeMap<usize, usize>,
    /// Active cuts per directed link.
    pub cut: BTreeMap<(usize, usize), usize>,
    /// Active loss rates (the highest applies).
    pub loss: Vec<f64>,
    /// Active duplication rates (the highest applies).
    pub duplicate: Vec<f64>,
    /// Active delay bounds (the highest applies).
    pub delay_ms: Vec<u64>,
    /// Active skews per node (the latest applies).
    pub skew_ms: BTreeMap<usize, Vec<i64>>,
    /// Active slow-disk delays per node (the highest applies).
    pub slow_ms: BTreeMap<usize, Vec<u64>>,
    /// Active slow-WAN latencies per region (the highest applies).
    pub slow_wan_ms: BTreeMap<usize, Vec<u64>>,
}

impl Active {
    /// The latency a slow WAN adds to the link between regions `a` and `b`: the highest in
    /// force on either side (0 within one region).
    pub fn slow_wan_between(&self, a: usize, b: usize) -> u64 {
        if a == b {
            return 0;
        }
        [a, b]
            .iter()
            .filter_map(|r| self.slow_wan_ms.get(r))
            .flatten()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

/// The highest of `rates`, or 0.
pub fn highest(rates: &[f64]) -> f64 {
    rates.iter().copied().fold(0.0, f64::max)
}

/// Removes one occurrence of `x` from `v`.
pub fn remove_one<T: PartialEq>(v: &mut Vec<T>, x: &T) {
    if let Some(i) = v.iter().position(|y| y == x) {
        v.remove(i);
    }
}

/// Latency bound for links while `delay` bounds are active.
pub fn latency(delay_ms: &[u64]) -> Duration {
    Duration::from_millis(delay_ms.iter().copied().max().unwrap_or(LATENCY_MS_MAX))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_region_cut_cuts_every_link_across_the_region_and_only_those() {
        let regions = Regions::draw(
            &mut StdRng::seed_from_u64(1),
            3,
            2,
            &[crate::regions::SpareRegion::RoundRobin],
        );
        let (mut cuts, mut slow) = (0, 0);
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let faults = region_faults(&mut rng, &regions, 3_000);
            assert!((1..=REGION_FAULTS_MAX).contains(&faults.len()));
            for f in faults {
                assert!(f.start_ms >= 100 && f.start_ms < f.end_ms && f.end_ms <= 3_000);
                match f.fault {
                    Fault::RegionCut { region, cut } => {
                        cuts += 1;
                        // 7 hosts: the region's two or three members and spares, both ways to
                        // each of the rest.
                        let inside = regions.hosts_in(region).len();
                        assert_eq!(cut.len(), 2 * inside * (7 - inside));
                        for (a, b) in cut {
                            assert_ne!(regions.region_of(a), regions.region_of(b));
                            assert!(
                                regions.region_of(a) == region || regions.region_of(b) == region
                            );
                        }
                    }
                    Fault::SlowWan { extra_ms, .. } => {
                        slow += 1;
                        assert!((SLOW_WAN_MS_MIN..=SLOW_WAN_MS_MAX).contains(&extra_ms));
                    }
                    other => panic!("not a region fault: {other:?}"),
                }
            }
        }
        assert!(cuts > 100 && slow > 100, "cuts {cuts}, slow WANs {slow}");
    }

    #[test]
    fn a_slow_wan_slows_the_links_that_leave_its_region() {
        let mut active = Active::default();
        active.slow_wan_ms.entry(1).or_default().extend([50, 120]);
        assert_eq!(active.slow_wan_between(0, 1), 120);
        assert_eq!(active.slow_wan_between(1, 2), 120);
        assert_eq!(active.slow_wan_between(0, 2), 0);
        assert_eq!(active.slow_wan_between(1, 1), 0, "inside the region: LAN");
    }

    #[test]
    fn each_join_and_replace_takes_a_spare_of_its_own() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (faults, spares) = membership_changes(&mut rng, 5, 3_000);
            assert!(faults.len() <= MEMBERSHIP_CHANGES_MAX);
            let mut taken: Vec<usize> = faults
                .iter()
                .filter_map(|f| match f.fault {
                    Fault::Join { node } | Fault::Replace { with: node, .. } => Some(node),
                    _ => None,
                })
                .collect();
            taken.sort_unstable();
            assert_eq!(taken, (5..5 + spares).collect::<Vec<_>>(), "seed {seed}");
            for f in &faults {
                assert!(f.fault.is_membership());
                assert_eq!(f.start_ms, f.end_ms);
                assert!(f.start_ms < 3_000);
            }
        }
    }
}
