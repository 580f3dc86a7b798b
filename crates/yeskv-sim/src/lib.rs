//! # yeskv-sim: deterministic simulation of yeskv clusters
//!
//! Whole clusters of 3 to 7 nodes — or, on a seed with regions, 2 to 4 regions of 2 or 3 nodes
//! each — (plus the spares that membership changes join) run in one
//! thread inside a [`turmoil`] simulation, driven by a
//! seed: the seed picks the cluster (node and client counts, keys), the faults and their times,
//! every random choice of the nodes (actor epochs, reconnect jitter), of the network (latencies)
//! and of the clients. Concurrent clients run the register, cart, server-side cart and TTL
//! workloads ([`workload`]) and record a history; at the end the cluster is healed, left to repair itself, and the history judged by `yeskv-check`. The same
//! seed replays the same run, event for event (`--hash`).
//!
//! ## What runs: the product's node code
//!
//! Each simulated node is a turmoil host running the product's node, assembled by the same
//! [`yeskv_node::node::NodeBuilder`] as the server and the tests: the replica (actor epochs, DVV
//! updates, stripe locks, hints, anti-entropy trees rebuilt at every start), the coordinator
//! (quorum reads and writes, forwarding, sloppy quorum with stand-ins, read repair, background
//! replication), the dispatcher of peer messages, the background workers (hinted handoff,
//! anti-entropy exchanges, the reaper, with fast simulated intervals and a 3 s tombstone grace),
//! the transfer worker that receives the partitions a layout change gives a node
//! (`yeskv_node::transfer`), and internode RPC (`yeskv-rpc`: frames, CRCs, handshake,
//! keepalive, reconnect backoff).
//! What is simulated instead ([`node`]):
//!
//! - **Network** ([`net`]): `yeskv-rpc`'s `Connector`/`Listener` seams over turmoil's TCP.
//!   Latency, partitions (symmetric and one-way) and crashes come from turmoil; message loss and
//!   duplication from a chaos wrapper around the coordinator's peer client ([`chaos`]), because
//!   a reliable TCP stream never loses one message.
//! - **Disk** ([`engine`]): a `MemoryEngine` of durable state plus a queue of writes awaiting a
//!   simulated fsync, kept outside the host so it outlives crashes; a crash loses exactly the
//!   writes not yet durable (a power cut), the replica reopens on what remains and takes a new
//!   actor epoch. Slow disks delay the fsync.
//! - **Clock** ([`clock`]): simulated time plus a base plus a per-node skew.
//! - **Layout, topology and liveness** ([`topology`]): a real `yeskv_layout::Layout` in a cell
//!   shared by the driver and the nodes, changed only by the product's state machine
//!   (`yeskv_layout::apply`: bootstrap, stage, commit, `TransferDone`) without Raft; every node
//!   routes by it through the product's `ClusterTopology` (preference lists, data holders,
//!   write sets, syncing partitions), and reports received partitions to it through its
//!   `LayoutControl`. Liveness from a small ping failure detector over the simulated network.
//!   Gossip (chitchat) is not used: it draws its gossip targets from a thread-local RNG that
//!   cannot be seeded, so it cannot run deterministically.
//! - **Client API** ([`protocol`]): a small request/response protocol over `yeskv-rpc` whose
//!   handler calls the coordinator exactly as the HTTP API does (axum cannot run on turmoil's
//!   sockets). Not simulated: the HTTP layer, the Raft layout service (its state machine is, on
//!   one shared cell: no log, no leader, every change applied at once; a bucket's data type is
//!   set on it with the product's `Command::SetBucket`), metrics export (a few of the nodes'
//!   counters are read, [`counters`]), the compaction filter that drops expired records (TTL'd
//!   values expire on reads; tombstones are reaped).
//!
//! ## Regions ([`regions`])
//!
//! By default every third seed (3, 6, 9, ...) has three regions `r1`..`r3` of 2 or 3 members
//! each, zones inside each region, and the forming commit stages 2 replicas per region
//! (`--regions R` gives every seed R regions, `--regions 0` none; `--region-nodes` fixes the
//! members per region). The product then places replicas region by region and its quorums are
//! regional: requests without `r`/`w` ask `local_quorum`. Links between two regions' nodes
//! carry a WAN latency drawn per region pair (20–60 ms plus 2–15 ms of jitter), links inside a
//! region stay LAN-like. Clients belong to a region and talk to its nodes only; one write in
//! ten asks `each_quorum` and one `quorum` (their failures during a region cut are
//! indeterminate, never acknowledged). The faults gain **region cuts** (a region's every link
//! to the others cut, then healed) and **slow WANs** (a region's links to the others slowed by
//! 40–250 ms for a while). Everything of a seed's regions is drawn from a generator of its own,
//! so a seed without regions runs exactly as before regions existed. Cross-region
//! replication today is the coordinator's write to every region's replicas (beyond the local
//! quorum, in the background), hints kept in another region for a region cut off, and
//! anti-entropy; the settle phase waits until every replica of every region agrees.
//!
//! ## Faults ([`faults`])
//!
//! Crash and restart, clean restart, partitions (one node isolated, minority/majority, bridge,
//! one-way, and in one seed in four a long split: one or two nodes cut off for seconds while writes
//! through them live only as hints), message loss, duplication, delay, clock skew and slow disks,
//! region cuts and slow WANs on seeds with regions,
//! and membership changes: a spare **joins**, a member **leaves** gracefully (stopped for good
//! once the layout has dropped it), a member is **replaced** (crashed for good, forced out with
//! the layout's data-loss check, a fresh spare joining in the same plan), drawn from the seed
//! and spread over the run, logged in the trace as they start and end. At the end of the
//! workload every fault has ended; crashed nodes are restarted (not those gone for good); the
//! cluster settles (at least [`run::SETTLE_MIN_MS`] and until every TTL'd value must have
//! expired, until the replicas agree and no partition is in transition, at most
//! [`run::SETTLE_MAX_MS`]) and the final state is read from the final
//! layout's holders ([`run`]).
//!
//! ## Judging
//!
//! The history ([`workload`]) follows `yeskv-check`'s model: `ok`, `fail` (a `4xx`-like refusal)
//! or `info` (timeouts, quorum misses: indeterminate). Final reads: per key, an `r = all` read
//! through a coordinator recorded as node `merged`, and each replica's own copy read from its
//! disk (the replicas of the final layout; nodes that left are not read). `yeskv_check::check`
//! then looks for lost acknowledged writes and cart adds (client-side and server-side),
//! resurrected deletes and removed server-side cart items, refused or unknown values that
//! became visible, values visible past their TTL (judged with the seed's exact clock-skew
//! spread, [`run::expiry_skew_bound_ms`]; the settle phase outlasts every TTL), too many
//! siblings, and diverged replicas. After healing the driver samples every node's anti-entropy tree root of each
//! partition it is a replica of in the layout; convergence is enforced by default: equal roots within
//! [`run::CONVERGENCE_BOUND_MS`] of healing and equal per-replica final reads
//! (`--no-convergence` reports it only; `--no-repair` turns the nodes' repair off, to show the
//! rule failing). A seed also fails if a partition is still in transition at the final reads
//! (a transfer that never completed).
//!
//! `--inject-bug ignore-ttl` makes `n1`'s client API drop the TTL of the writes it takes, and
//! `--inject-bug skip-remove` acknowledge server-side cart removes without applying them: the
//! expiry and removed-items rules catch them (tests prove it within 5 seeds and on seed 1).
//! `--inject-bug lose-ack` makes node `n1`'s disk acknowledge half of its data writes and then
//! drop them; the checkers catch it within a few seeds (a test proves it within 10). Replication
//! masks a single lost copy, so the loss shows where the product is genuinely exposed: `n1`
//! forgets dots it minted, reuses them for new writes, and DVV merges then keep one of two
//! different values with the same dot (the kv679 failure mode).
//!
//! ## Determinism
//!
//! A run is a function of the seed: turmoil runs every host on one thread with paused, stepped
//! time; all randomness is seeded from the seed (`StdRng` of the `rand` version in
//! `Cargo.lock`); nothing reads the wall clock; maps that are iterated are ordered
//! (`BTreeMap`). What had to change in shared code for this: `yeskv-rpc`'s client failed the
//! pending calls of a closed connection in `HashMap` order (random per process), which changed
//! which task woke first; it is a `BTreeMap` now. `yeskv-storage` gained
//! `Durable::deferred`, so an engine outside the crate can complete durability later. Known
//! limits: tokio's `select!` without `biased;` draws from a runtime RNG that can only be seeded
//! with `--cfg tokio_unstable`; every `select!` on the simulated path (`yeskv-rpc`, and in
//! `yeskv-node` the read-repair collector and the handoff, exchange and reaper loops) is
//! `biased;`; a `select!` added later without it could make runs diverge (the hash test would
//! catch it). Not deterministic today: a former holder's cleanup compacts the partition's range
//! on tokio's blocking pool (`Replica::compact_partition`, `spawn_blocking`), a real thread, so
//! a seed whose layout changes lead to a cleanup may take another path from then on
//! (`docs/reliability.md`, "What the simulation does not cover").
//!
//! ## Running
//!
//! ```text
//! cargo run --release -p yeskv-sim -- --seeds 1000          # a long run: seeds 1..=1000
//! cargo run --release -p yeskv-sim -- --seed 417 -v         # replay one seed, print its trace
//! cargo run --release -p yeskv-sim -- --seed 417 --hash     # its trace hash (same on every run)
//! cargo run --release -p yeskv-sim -- --seeds 10 --inject-bug lose-ack   # must fail
//! cargo run --release -p yeskv-sim -- --seeds 1000 --regions 3   # three regions on every seed
//! ```
//!
//! The closing report counts the membership changes committed and skipped, the partitions
//! received and the keys copied. The last line is always `seeds N, failed F, ops O, acked A,
//! lost L`; any violation exits 1
//! after printing the seed, the violations, the last events on each violating key and the faults.
//! With regions the report also sums the writes of the seeds with regions by the quorum they
//! asked: acknowledged (with their median and p99 latency), indeterminate, refused.
//! Options: `--nodes`, `--clients`, `--duration-ms` (simulated workload time, default 3000),
//! `--regions`, `--region-nodes`, `--no-convergence`, `--no-repair`, `--from S` (first seed of
//! `--seeds`). A failure prints the replay command with the options that change what a seed
//! draws.

pub mod chaos;
pub mod clock;
pub mod counters;
pub mod engine;
pub mod error;
pub mod faults;
pub mod net;
pub mod node;
pub mod protocol;
pub mod regions;
pub mod run;
pub mod topology;
pub mod trace;
pub mod workload;

pub use error::Error;
pub use run::{run_seed, Bug, SeedOutcome, SimOptions};
