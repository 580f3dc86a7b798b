//! Tictac trees: the hash trees of active anti-entropy.
//!
//! Every node keeps one [`TictacTree`] per partition replica it holds. The tree summarises the
//! replica's keys and their causal state so that two replicas can find where they differ by
//! exchanging a few hundred bytes instead of their keys (Dynamo §4.7 uses Merkle trees for this).
//! The construction follows Riak 3's Tictac AAE (`leveled_tictac.erl`, Martin Sumner): the tree
//! has a *fixed* shape, and every hash in it is the XOR of the hashes below it. XOR is its own
//! inverse, so a write changes the tree in O(1) — XOR the key's old digest out of its segment,
//! branch and root, XOR the new one in — without reading any other key and without a scan before
//! an exchange. A classic Merkle tree over sorted keys would need the neighbours of the key to
//! recompute its path; a Tictac tree needs only the key's previous digest, which the write path
//! has in hand (it read the stored object to merge into it).
//!
//! ## Shape
//! A tree has `branches × leaves_per_branch` *segments* (both powers of two, see
//! [`TreeGeometry`]; 32 × 32 = 1,024 by default). A key lives in segment
//! [`TreeGeometry::segment_of`]`(storage_key)`, a stable function of the storage key alone;
//! segment `s` belongs to branch `s / leaves_per_branch`. Then:
//! - a segment's hash is the XOR of the [`object_digest`]s of its keys;
//! - a branch's hash is the XOR of its segments' hashes;
//! - the root is the XOR of the branch hashes, i.e. of every digest in the tree.
//!
//! The root is an XOR rather than a hash over the branch array so that it, too, is kept in O(1)
//! per write and read in O(1) for `/v1/status`. It loses nothing that matters here: two replicas
//! whose key sets differ produce roots that differ by the XOR of the differing digests, which is
//! zero only with probability 2⁻⁶⁴ for the non-adversarial digests of a trusted cluster (Tictac
//! makes the same trade: the trees are not meant to resist tampering, only to find drift).
//!
//! ## Exchange
//! Replicas compare roots; if they differ, they compare the [`branches`](TictacTree::branches)
//! ([`differing_branches`](TictacTree::differing_branches)), then the segments of each differing
//! branch ([`differing_segments`](TictacTree::differing_segments)), then list `(storage_key,
//! digest)` for those segments on both sides and [`diff_keys`] names the keys to sync both ways.
//! With the default shape, equal replicas exchange one 8-byte root; a few differing keys cost a
//! 256-byte branch array and a 256-byte segment array per differing branch.
//!
//! ## Invariants
//! - A tree holds, for each present key, exactly one digest: the caller must remove (or
//!   [`replace`](TictacTree::replace)) the old digest of a key whenever it changes the key. Adding
//!   the same digest twice cancels it out — the tree then misrepresents the store, which the next
//!   exchange repairs only as far as it sees a difference. A node that cannot trust its tree
//!   (crash while the tree was not persisted) rebuilds it with [`TictacTree::from_digests`].
//! - `branches[b]` is always the XOR of the segments of `b`, and `root` the XOR of all branches
//!   (checked by [`TictacTree::from_bytes`], which recomputes them rather than trusting stored
//!   copies).
//! - [`object_digest`], [`TreeGeometry::segment_of`] and the byte encoding are persisted and
//!   compared between nodes, possibly of different releases: they must never change without a
//!   bump of [`DIGEST_FORMAT`] or [`TREE_FORMAT`] (pinned by tests).

use std::cmp::Ordering;

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use crate::causality::Actor;
use crate::error::Error;
use crate::object::{Object, Version};

/// Version of what a tree holds: the [`object_digest`] and [`TreeGeometry::segment_of`]
/// functions, and which objects count ([`tree_digest`]). Trees persisted under another version
/// are rebuilt (their encoding records the version they were made with).
///
/// - 1: every object but the empty one.
/// - 2: expiring objects ([`Object::expires_at_ms`]) no longer count. Digests themselves did
///   not change ([`OBJECT_HASH_VERSION`] is still 1), so during a rolling upgrade a node of
///   format 1 and one of format 2 still agree on every key that does not expire.
pub const DIGEST_FORMAT: u8 = 2;
/// Version of the [`object_digest`] function itself, hashed into every digest: bumping it
/// changes every digest (and makes nodes of two releases disagree on every key until all are
/// upgraded), so it changes only when the function does. Any change bumps [`DIGEST_FORMAT`] too.
pub const OBJECT_HASH_VERSION: u8 = 1;
/// Format version of the [`TictacTree::to_bytes`] encoding written by this build.
pub const TREE_FORMAT: u8 = 1;
/// Branches of a tree by default.
pub const BRANCHES_DEFAULT: u32 = 32;
/// Segments per branch by default.
pub const LEAVES_PER_BRANCH_DEFAULT: u32 = 32;
/// Most branches a tree may have (a branch array is what an exchange sends first: 8 KiB at most).
pub const BRANCHES_MAX: u32 = 1024;
/// Most segments per branch (a branch's segment array is sent per differing branch: 8 KiB at most).
pub const LEAVES_PER_BRANCH_MAX: u32 = 1024;
/// Bytes before the segment hashes in an encoded tree.
pub const TREE_HEADER_LEN: usize = 22;

/// Seed of the key → segment hash. It differs from the digest's input (which starts with a domain
/// tag) so that a key's segment and its digest are unrelated.
const SEGMENT_SEED: u64 = 0x7969_6b76_7365_676d; // "yikvsegm"
/// Domain tag hashed first into every object digest.
const DIGEST_TAG: &[u8] = b"yeskv.aae.object";
/// Domain tag hashed first into every version digest.
const VERSION_TAG: &[u8] = b"yeskv.aae.version";

const FLAG_TOMBSTONE: u8 = 1;
const FLAG_EXPIRES: u8 = 2;

/// The stable 64-bit digest of what a replica holds for one key: the storage key and the object's
/// causal state.
///
/// It hashes (XXH3-64, fixed-width little-endian integers, every variable-length field
/// length-prefixed so that no two inputs share an encoding): [`OBJECT_HASH_VERSION`]; the storage key;
/// the clock's `(actor, counter)` entries in actor order; and per sibling, in dot order, its dot
/// and a digest of its version (tombstone flag, write time, expiry, value bytes). Objects keep
/// their siblings sorted by dot and their clock as a sorted map, so equal objects — e.g. the same
/// objects synced in either order — give equal digests, and any difference a DVV can see (a write
/// one replica lacks, a sibling one replica dropped, a different value under the same dot)
/// changes the digest.
///
/// Values are hashed although dots identify writes: a dot reused for a different value (the riak
/// kv679 bug that actor epochs exist to prevent) or a value damaged on one replica then shows up
/// as a difference instead of hiding behind an equal clock.
///
/// Persisted in trees and compared between nodes: it must never change across releases without
/// a bump of [`OBJECT_HASH_VERSION`] and [`DIGEST_FORMAT`] (pinned by a test). An empty object
/// (a key nobody wrote, or one physically reaped) and an expiring one contribute nothing to a
/// tree: see [`tree_digest`].
pub fn object_digest(storage_key: &[u8], obj: &Object) -> u64 {
    let mut h = Xxh3::new();
    h.update(DIGEST_TAG);
    h.update(&[OBJECT_HASH_VERSION]);
    put_bytes(&mut h, storage_key);
    let clock = obj.clock();
    h.update(&(clock.len() as u64).to_le_bytes());
    for (actor, counter) in clock.iter() {
        put_actor(&mut h, actor);
        h.update(&counter.to_le_bytes());
    }
    let siblings = obj.siblings();
    h.update(&(siblings.len() as u64).to_le_bytes());
    for s in siblings {
        put_actor(&mut h, &s.dot.actor);
        h.update(&s.dot.counter.to_le_bytes());
        h.update(&version_digest(&s.version).to_le_bytes());
    }
    h.digest()
}

/// A key's contribution to a tree: `None` for an empty object (the key counts as absent, so a
/// replica that never saw a key and one that reaped it agree) and for an *expiring* one
/// ([`Object::expires_at_ms`]: every sibling a value with an expiry), else [`object_digest`].
/// Feed the old and new results of a write to [`TictacTree::replace`].
///
/// Expiring objects are left out because each replica drops them by itself, at a time of its
/// own choosing (its storage engine's compaction, some grace after the expiry by its own clock):
/// counted, they would make replicas differ across every expiry, and anti-entropy would carry
/// expired records back and forth. Left out, a replica that dropped a record and one that still
/// holds it are equal, and no exchange ever compares or ships an expiring key. What keeps the
/// replicas of an expiring key in step is replication, hinted handoff and read repair; an object
/// that stops being expiring (a write without expiry, a delete) counts again at once.
pub fn tree_digest(storage_key: &[u8], obj: &Object) -> Option<u64> {
    (!obj.is_empty() && obj.expires_at_ms().is_none()).then(|| object_digest(storage_key, obj))
}

/// Digest of one version: tombstone flag, write time, expiry and value bytes.
fn version_digest(v: &Version) -> u64 {
    let mut h = Xxh3::new();
    h.update(VERSION_TAG);
    let mut flags = 0u8;
    if v.is_tombstone() {
        flags |= FLAG_TOMBSTONE;
    }
    if v.expires_at_ms.is_some() {
        flags |= FLAG_EXPIRES;
    }
    h.update(&[flags]);
    h.update(&v.written_at_ms.to_le_bytes());
    if let Some(exp) = v.expires_at_ms {
        h.update(&exp.to_le_bytes());
    }
    if let Some(value) = &v.value {
        put_bytes(&mut h, value);
    }
    h.digest()
}

fn put_bytes(h: &mut Xxh3, b: &[u8]) {
    h.update(&(b.len() as u64).to_le_bytes());
    h.update(b);
}

fn put_actor(h: &mut Xxh3, a: &Actor) {
    put_bytes(h, a.node.as_str().as_bytes());
    h.update(&a.epoch.to_le_bytes());
}

/// The fixed shape of a tree: how many branches, how many segments per branch. Two trees can only
/// be compared if their geometries are equal (a segment number means nothing across shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TreeGeometry {
    branches: u32,
    leaves_per_branch: u32,
}

impl Default for TreeGeometry {
    fn default() -> Self {
        TreeGeometry {
            branches: BRANCHES_DEFAULT,
            leaves_per_branch: LEAVES_PER_BRANCH_DEFAULT,
        }
    }
}

impl TreeGeometry {
    /// A geometry of `branches` branches of `leaves_per_branch` segments each: both powers of two,
    /// at most [`BRANCHES_MAX`] and [`LEAVES_PER_BRANCH_MAX`].
    pub fn new(branches: u32, leaves_per_branch: u32) -> Result<Self, Error> {
        let check = |name: &str, n: u32, max: u32| {
            if n.is_power_of_two() && n <= max {
                Ok(())
            } else {
                Err(Error::TreeGeometry(format!(
                    "{name} must be a power of two from 1 to {max}, got {n}"
                )))
            }
        };
        check("branches", branches, BRANCHES_MAX)?;
        check(
            "leaves_per_branch",
            leaves_per_branch,
            LEAVES_PER_BRANCH_MAX,
        )?;
        Ok(TreeGeometry {
            branches,
            leaves_per_branch,
        })
    }

    /// Number of branches.
    pub fn branches(&self) -> u32 {
        self.branches
    }

    /// Number of segments in each branch.
    pub fn leaves_per_branch(&self) -> u32 {
        self.leaves_per_branch
    }

    /// Number of segments in the tree (`branches × leaves_per_branch`, a power of two).
    pub fn segments(&self) -> u32 {
        self.branches * self.leaves_per_branch
    }

    /// The segment of a storage key: the low bits of a seeded XXH3-64 of the key. Stable across
    /// releases (see [`DIGEST_FORMAT`]); depends only on the key, never on its value.
    pub fn segment_of(&self, storage_key: &[u8]) -> u32 {
        let hash = xxh3_64_with_seed(storage_key, SEGMENT_SEED);
        (hash & u64::from(self.segments() - 1)) as u32
    }

    /// The branch holding `segment`.
    pub fn branch_of_segment(&self, segment: u32) -> u32 {
        segment / self.leaves_per_branch
    }

    /// The segments of branch `branch`, as a range of segment numbers.
    pub fn segments_in_branch(&self, branch: u32) -> std::ops::Range<u32> {
        let start = branch * self.leaves_per_branch;
        start..start + self.leaves_per_branch
    }
}

/// The Tictac tree of one partition replica (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TictacTree {
    geometry: TreeGeometry,
    /// Segment hashes, `geometry.segments()` of them; branch `b` owns
    /// `segments[b * leaves .. (b + 1) * leaves]`.
    segments: Vec<u64>,
    /// Branch hashes: `branches[b]` is the XOR of branch `b`'s segments.
    branches: Vec<u64>,
    /// XOR of all branches.
    root: u64,
    /// Keys present (adds minus removes).
    key_count: u64,
}

impl TictacTree {
    /// An empty tree (no keys: every hash is zero).
    pub fn new(geometry: TreeGeometry) -> Self {
        TictacTree {
            geometry,
            segments: vec![0; geometry.segments() as usize],
            branches: vec![0; geometry.branches() as usize],
            root: 0,
            key_count: 0,
        }
    }

    /// A tree built from scratch from every `(storage_key, digest)` of a replica (the background
    /// rebuild after a crash or a geometry change). Each key must appear once.
    pub fn from_digests<'a>(
        geometry: TreeGeometry,
        entries: impl IntoIterator<Item = (&'a [u8], u64)>,
    ) -> Self {
        let mut tree = Self::new(geometry);
        for (key, digest) in entries {
            tree.add(key, digest);
        }
        tree
    }

    /// The tree's shape.
    pub fn geometry(&self) -> TreeGeometry {
        self.geometry
    }

    /// The root hash: XOR of every digest in the tree; 0 for an empty tree.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Number of keys in the tree.
    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    /// The branch hashes, `geometry().branches()` of them.
    pub fn branches(&self) -> &[u64] {
        &self.branches
    }

    /// Every segment hash, in segment order.
    pub fn segments(&self) -> &[u64] {
        &self.segments
    }

    /// The segment hashes of branch `branch` (`leaves_per_branch` of them, in segment order).
    /// A branch number out of range (e.g. from a confused peer) is an error.
    pub fn segments_of_branch(&self, branch: u32) -> Result<&[u64], Error> {
        if branch >= self.geometry.branches() {
            return Err(Error::TreeGeometry(format!(
                "branch {branch} out of range (tree has {})",
                self.geometry.branches()
            )));
        }
        let range = self.geometry.segments_in_branch(branch);
        Ok(&self.segments[range.start as usize..range.end as usize])
    }

    /// The segment of a storage key in this tree (see [`TreeGeometry::segment_of`]).
    pub fn segment_of(&self, storage_key: &[u8]) -> u32 {
        self.geometry.segment_of(storage_key)
    }

    /// XORs `delta` into the segment of `storage_key`, its branch and the root.
    fn toggle(&mut self, storage_key: &[u8], delta: u64) {
        let segment = self.geometry.segment_of(storage_key);
        let branch = self.geometry.branch_of_segment(segment);
        self.segments[segment as usize] ^= delta;
        self.branches[branch as usize] ^= delta;
        self.root ^= delta;
    }

    /// Adds a key that was absent with its digest. O(1).
    pub fn add(&mut self, storage_key: &[u8], digest: u64) {
        self.toggle(storage_key, digest);
        self.key_count += 1;
    }

    /// Removes a present key whose current digest is `digest`. O(1). Removing more keys than were
    /// added leaves `key_count` at zero (the caller broke the invariant; a rebuild repairs it).
    pub fn remove(&mut self, storage_key: &[u8], digest: u64) {
        self.toggle(storage_key, digest);
        self.key_count = self.key_count.saturating_sub(1);
    }

    /// A write changed the key's contribution from `old` to `new` (`None` = absent, see
    /// [`tree_digest`]). O(1).
    pub fn replace(&mut self, storage_key: &[u8], old: Option<u64>, new: Option<u64>) {
        match (old, new) {
            (None, None) => {}
            (None, Some(n)) => self.add(storage_key, n),
            (Some(o), None) => self.remove(storage_key, o),
            (Some(o), Some(n)) => self.toggle(storage_key, o ^ n),
        }
    }

    /// The branches whose hashes differ from a peer's branch array (ascending). The peer's array
    /// must have this tree's branch count, else the trees are not comparable: an error.
    pub fn differing_branches(&self, other_branches: &[u64]) -> Result<Vec<u32>, Error> {
        if other_branches.len() != self.branches.len() {
            return Err(Error::TreeGeometry(format!(
                "peer sent {} branch hashes, this tree has {}",
                other_branches.len(),
                self.branches.len()
            )));
        }
        Ok(differing_positions(&self.branches, other_branches, 0))
    }

    /// The segments of `branch` whose hashes differ from a peer's segment hashes for that branch,
    /// as (global, ascending) segment numbers. A branch out of range or an array of the wrong
    /// length is an error.
    pub fn differing_segments(
        &self,
        branch: u32,
        other_segment_hashes: &[u64],
    ) -> Result<Vec<u32>, Error> {
        let ours = self.segments_of_branch(branch)?;
        if other_segment_hashes.len() != ours.len() {
            return Err(Error::TreeGeometry(format!(
                "peer sent {} segment hashes for branch {branch}, this tree has {}",
                other_segment_hashes.len(),
                ours.len()
            )));
        }
        let first = self.geometry.segments_in_branch(branch).start;
        Ok(differing_positions(ours, other_segment_hashes, first))
    }

    /// The persisted encoding (format [`TREE_FORMAT`]):
    /// ```text
    /// [0]       format = 1
    /// [1..5]    CRC32C (little endian) of bytes [5..]
    /// [5]       DIGEST_FORMAT the digests were made with
    /// [6..10]   branches, u32 LE
    /// [10..14]  leaves_per_branch, u32 LE
    /// [14..22]  key_count, u64 LE
    /// [22..]    segment hashes, u64 LE each, in segment order
    /// ```
    /// Branch hashes and the root are not stored: decoding recomputes them from the segments, so
    /// they cannot disagree with them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TREE_HEADER_LEN + 8 * self.segments.len());
        out.push(TREE_FORMAT);
        out.extend_from_slice(&[0; 4]);
        out.push(DIGEST_FORMAT);
        out.extend_from_slice(&self.geometry.branches.to_le_bytes());
        out.extend_from_slice(&self.geometry.leaves_per_branch.to_le_bytes());
        out.extend_from_slice(&self.key_count.to_le_bytes());
        for s in &self.segments {
            out.extend_from_slice(&s.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[5..]);
        out[1..5].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output, expecting the tree to have `expected`
    /// geometry (the node's configured one). Wrong format, wrong digest format, a failed
    /// checksum, a bad length or another geometry are errors — the caller then rebuilds the
    /// tree from the store. Never panics.
    pub fn from_bytes(bytes: &[u8], expected: TreeGeometry) -> Result<Self, Error> {
        const WHAT: &str = "tictac tree";
        let (&format, _) = bytes
            .split_first()
            .ok_or_else(|| Error::corrupt(WHAT, "empty"))?;
        if format != TREE_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: WHAT,
                version: format,
            });
        }
        if bytes.len() < TREE_HEADER_LEN {
            return Err(Error::corrupt(WHAT, "truncated header"));
        }
        let stored_crc = u32::from_le_bytes(array_at(bytes, 1));
        if crc32c::crc32c(&bytes[5..]) != stored_crc {
            return Err(Error::corrupt(WHAT, "checksum mismatch"));
        }
        let digest_format = bytes[5];
        if digest_format != DIGEST_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: "object digest",
                version: digest_format,
            });
        }
        let branches = u32::from_le_bytes(array_at(bytes, 6));
        let leaves_per_branch = u32::from_le_bytes(array_at(bytes, 10));
        let geometry = TreeGeometry::new(branches, leaves_per_branch)?;
        if geometry != expected {
            return Err(Error::TreeGeometry(format!(
                "stored tree is {branches}x{leaves_per_branch}, expected {}x{}",
                expected.branches, expected.leaves_per_branch
            )));
        }
        let key_count = u64::from_le_bytes(array_at(bytes, 14));
        let body = &bytes[TREE_HEADER_LEN..];
        if body.len() != 8 * geometry.segments() as usize {
            return Err(Error::corrupt(
                WHAT,
                format!(
                    "{} bytes of segment hashes for {} segments",
                    body.len(),
                    geometry.segments()
                ),
            ));
        }
        let mut tree = Self::new(geometry);
        tree.key_count = key_count;
        for (i, chunk) in body.chunks_exact(8).enumerate() {
            let hash = u64::from_le_bytes(array_at(chunk, 0));
            tree.segments[i] = hash;
            tree.branches[geometry.branch_of_segment(i as u32) as usize] ^= hash;
            tree.root ^= hash;
        }
        Ok(tree)
    }
}

/// `N` bytes of `bytes` from `at`; callers have checked the length.
fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Positions (plus `offset`) where two equally long hash arrays differ.
fn differing_positions(ours: &[u64], theirs: &[u64], offset: u32) -> Vec<u32> {
    ours.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| offset + i as u32)
        .collect()
}

/// The keys two replicas must sync, given each side's `(storage_key, digest)` list for one
/// segment: the keys whose digests differ and the keys only one side has. Ascending, without
/// duplicates.
///
/// Lists are expected sorted by key (a range scan yields them so); a list that is not is sorted
/// here first rather than giving a wrong answer, since the peer's list comes off the network. A
/// key listed twice on one side with different digests is reported (the side is inconsistent).
pub fn diff_keys(ours: &[(Vec<u8>, u64)], theirs: &[(Vec<u8>, u64)]) -> Vec<Vec<u8>> {
    let ours = sorted_refs(ours);
    let theirs = sorted_refs(theirs);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut push = |k: &[u8]| {
        if out.last().map(Vec::as_slice) != Some(k) {
            out.push(k.to_vec());
        }
    };
    let (mut i, mut j) = (0, 0);
    while i < ours.len() || j < theirs.len() {
        let order = match (ours.get(i), theirs.get(j)) {
            (Some(a), Some(b)) => a.0.cmp(b.0),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                push(ours[i].0);
                i += 1;
            }
            Ordering::Greater => {
                push(theirs[j].0);
                j += 1;
            }
            Ordering::Equal => {
                if ours[i].1 != theirs[j].1 {
                    push(ours[i].0);
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The entries as `(key, digest)` references sorted by key then digest (no copy of keys).
fn sorted_refs(entries: &[(Vec<u8>, u64)]) -> Vec<(&[u8], u64)> {
    let mut refs: Vec<(&[u8], u64)> = entries.iter().map(|(k, d)| (k.as_slice(), *d)).collect();
    if !refs.windows(2).all(|w| w[0] <= w[1]) {
        refs.sort_unstable();
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::{CausalContext, NodeId};

    fn actor(n: &str) -> Actor {
        Actor::new(NodeId::new(n).expect("valid"), 9)
    }

    fn written(values: &[&str]) -> Object {
        let mut o = Object::new();
        for v in values {
            o.update(
                &CausalContext::empty(),
                &actor("a"),
                Version::value(v.as_bytes().to_vec(), 5, None),
                0,
            );
        }
        o
    }

    #[test]
    fn digest_segment_and_encoding_are_pinned() {
        // Persisted and compared between nodes of different releases: a change to any of these
        // values needs a DIGEST_FORMAT or TREE_FORMAT bump (and old trees are then rebuilt).
        let o = written(&["x", "y"]);
        let key = b"\x00\x01\x00\x01bk";
        assert_eq!(object_digest(key, &o), 0x2941_6a29_f390_0b51);
        let g = TreeGeometry::default();
        let segments: Vec<u32> = [&key[..], b"", b"alice", b"bob"]
            .iter()
            .map(|k| g.segment_of(k))
            .collect();
        assert_eq!(segments, vec![314, 795, 629, 137]);
        let small = TreeGeometry::new(2, 2).expect("valid");
        let t = TictacTree::from_digests(small, [(&key[..], 0x0102_0304_0506_0708)]);
        let hex: String = t.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        // format, CRC32C, digest format, 2 branches, 2 leaves, 1 key, then segments 0..4 (the
        // key's segment 314 is segment 2 of this 4-segment tree).
        let want = concat!(
            "01",
            "0288209d",
            "02",
            "02000000",
            "02000000",
            "0100000000000000",
            "0000000000000000",
            "0000000000000000",
            "0807060504030201",
            "0000000000000000",
        );
        assert_eq!(hex, want);
        let fixture: Vec<u8> = (0..want.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&want[i..i + 2], 16).expect("hex"))
            .collect();
        assert_eq!(
            TictacTree::from_bytes(&fixture, small).expect("fixture decodes"),
            t
        );
    }

    #[test]
    fn digest_sees_every_part_of_a_version() {
        let base = written(&["x"]);
        let d = object_digest(b"k", &base);
        assert_ne!(object_digest(b"k2", &base), d, "key");
        let dot = base.siblings()[0].dot.clone();
        let with = |v: Version| {
            let s = crate::object::Sibling {
                dot: dot.clone(),
                version: v,
            };
            Object::from_parts(base.clock().clone(), vec![s]).expect("valid parts")
        };
        assert_eq!(
            object_digest(b"k", &with(Version::value(b"x".to_vec(), 5, None))),
            d
        );
        for (what, v) in [
            ("value", Version::value(b"z".to_vec(), 5, None)),
            ("written_at", Version::value(b"x".to_vec(), 6, None)),
            ("expiry", Version::value(b"x".to_vec(), 5, Some(7))),
            ("tombstone", Version::tombstone(5)),
            ("empty value", Version::value(Vec::new(), 5, None)),
        ] {
            assert_ne!(object_digest(b"k", &with(v)), d, "{what}");
        }
        let with_expiry = |exp| object_digest(b"k", &with(Version::value(b"x".to_vec(), 5, exp)));
        assert_ne!(with_expiry(Some(7)), with_expiry(Some(8)), "expiry instant");
        // A clock that saw more (a dropped sibling), of another actor or of the same one, differs
        // from one that did not.
        for (who, counter) in [(actor("b"), 1), (actor("a"), 2)] {
            let mut clock = base.clock().clone();
            clock.raise(&who, counter);
            let wider = Object::from_parts(clock, base.siblings().to_vec()).expect("valid parts");
            assert_ne!(object_digest(b"k", &wider), d, "clock {who}:{counter}");
        }
        // The same version under another dot differs too.
        let mut clock = base.clock().clone();
        clock.raise(&actor("a"), 2);
        let moved = crate::object::Sibling {
            dot: crate::causality::Dot {
                actor: actor("a"),
                counter: 2,
            },
            version: base.siblings()[0].version.clone(),
        };
        let (stay, go) = (
            Object::from_parts(clock.clone(), base.siblings().to_vec()).expect("valid parts"),
            Object::from_parts(clock, vec![moved]).expect("valid parts"),
        );
        assert_ne!(object_digest(b"k", &stay), object_digest(b"k", &go), "dot");
    }

    #[test]
    fn tree_digest_of_empty_object_is_absent() {
        assert_eq!(tree_digest(b"k", &Object::new()), None);
        let o = written(&["x"]);
        assert_eq!(tree_digest(b"k", &o), Some(object_digest(b"k", &o)));
    }

    /// Expiring objects are out of the trees, expired or not; an object stops being left out as
    /// soon as one sibling is a tombstone or a value that never expires. Fails if `tree_digest`
    /// counts expiring objects (replicas would then differ across every expiry).
    #[test]
    fn tree_digest_leaves_expiring_objects_out() {
        let blind = CausalContext::empty();
        let mut o = Object::new();
        o.update(
            &blind,
            &actor("a"),
            Version::value(b"s".to_vec(), 5, Some(60_000)),
            0,
        );
        assert_eq!(tree_digest(b"k", &o), None);
        let mut both = o.clone();
        both.update(
            &blind,
            &actor("b"),
            Version::value(b"t".to_vec(), 5, Some(10)),
            0,
        );
        assert_eq!(tree_digest(b"k", &both), None, "two expiring siblings");
        let mut kept = o.clone();
        kept.update(
            &blind,
            &actor("b"),
            Version::value(b"u".to_vec(), 5, None),
            0,
        );
        assert_eq!(tree_digest(b"k", &kept), Some(object_digest(b"k", &kept)));
        let mut deleted = o.clone();
        deleted.update(&blind, &actor("b"), Version::tombstone(5), 0);
        assert_eq!(
            tree_digest(b"k", &deleted),
            Some(object_digest(b"k", &deleted))
        );
        // A tree holding the expiring key and one without it are equal.
        let g = TreeGeometry::default();
        let mut with = TictacTree::new(g);
        with.replace(b"k", None, tree_digest(b"k", &o));
        assert_eq!(with, TictacTree::new(g));
    }

    /// A tree saved by a build of digest format 1 (expiring objects counted) is refused, so the
    /// node rebuilds it without them instead of trusting it.
    #[test]
    fn a_tree_of_digest_format_1_is_rebuilt() {
        let small = TreeGeometry::new(2, 2).expect("valid");
        let hex = concat!(
            "01",
            "f53c47d0",
            "01",
            "02000000",
            "02000000",
            "0100000000000000",
            "0000000000000000",
            "0000000000000000",
            "0807060504030201",
            "0000000000000000",
        );
        let fixture: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        assert!(matches!(
            TictacTree::from_bytes(&fixture, small),
            Err(Error::UnsupportedFormat {
                what: "object digest",
                version: 1
            })
        ));
    }

    #[test]
    fn geometry_is_validated() {
        assert!(TreeGeometry::new(32, 32).is_ok());
        assert!(TreeGeometry::new(1, 1).is_ok());
        assert!(TreeGeometry::new(BRANCHES_MAX, LEAVES_PER_BRANCH_MAX).is_ok());
        for (b, l) in [(0, 32), (32, 0), (3, 32), (32, 48), (2048, 1), (1, 2048)] {
            assert!(
                matches!(TreeGeometry::new(b, l), Err(Error::TreeGeometry(_))),
                "{b}x{l}"
            );
        }
        assert_eq!(TreeGeometry::default().segments(), 1024);
    }

    #[test]
    fn updates_keep_levels_consistent_and_cancel() {
        let g = TreeGeometry::new(4, 8).expect("valid");
        let mut t = TictacTree::new(g);
        t.add(b"a", 0xdead);
        t.add(b"b", 0xbeef);
        assert_eq!(t.key_count(), 2);
        assert_eq!(t.root(), 0xdead ^ 0xbeef);
        for b in 0..g.branches() {
            let x = t
                .segments_of_branch(b)
                .expect("in range")
                .iter()
                .fold(0, |acc, s| acc ^ s);
            assert_eq!(x, t.branches()[b as usize]);
        }
        t.replace(b"a", Some(0xdead), Some(0x1234));
        assert_eq!(t.key_count(), 2);
        assert_eq!(t.root(), 0x1234 ^ 0xbeef);
        t.replace(b"a", Some(0x1234), None);
        t.remove(b"b", 0xbeef);
        assert_eq!(t, TictacTree::new(g));
    }

    #[test]
    fn differing_levels_point_at_the_changed_key() {
        let g = TreeGeometry::default();
        let mut a = TictacTree::new(g);
        let mut b = TictacTree::new(g);
        for i in 0..100u32 {
            let k = i.to_be_bytes();
            a.add(&k, u64::from(i) * 7919 + 1);
            b.add(&k, u64::from(i) * 7919 + 1);
        }
        assert!(a.differing_branches(b.branches()).expect("same").is_empty());
        let k = 42u32.to_be_bytes();
        b.replace(&k, Some(42 * 7919 + 1), Some(5));
        let seg = g.segment_of(&k);
        let branch = g.branch_of_segment(seg);
        assert_eq!(
            a.differing_branches(b.branches()).expect("same"),
            vec![branch]
        );
        let theirs = b.segments_of_branch(branch).expect("in range");
        assert_eq!(
            a.differing_segments(branch, theirs).expect("same"),
            vec![seg]
        );
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let t = TictacTree::new(TreeGeometry::default());
        assert!(t.differing_branches(&[0; 31]).is_err());
        assert!(t.differing_segments(0, &[0; 33]).is_err());
        assert!(t.differing_segments(32, &[0; 32]).is_err());
        assert!(t.segments_of_branch(32).is_err());
        let other = TreeGeometry::new(16, 64).expect("valid");
        let bytes = TictacTree::new(other).to_bytes();
        assert!(matches!(
            TictacTree::from_bytes(&bytes, TreeGeometry::default()),
            Err(Error::TreeGeometry(_))
        ));
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let g = TreeGeometry::new(2, 4).expect("valid");
        let mut t = TictacTree::new(g);
        t.add(b"k1", 11);
        t.add(b"k2", 22);
        let bytes = t.to_bytes();
        assert_eq!(bytes.len(), TREE_HEADER_LEN + 8 * 8);
        assert_eq!(TictacTree::from_bytes(&bytes, g).expect("round trip"), t);
        for len in 0..bytes.len() {
            assert!(TictacTree::from_bytes(&bytes[..len], g).is_err(), "{len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(TictacTree::from_bytes(&longer, g).is_err());
    }

    #[test]
    fn diff_keys_finds_changed_and_one_sided_keys() {
        let e = |k: &str, d: u64| (k.as_bytes().to_vec(), d);
        let ours = vec![e("a", 1), e("b", 2), e("c", 3), e("e", 5)];
        let theirs = vec![e("a", 1), e("b", 9), e("d", 4), e("e", 5)];
        let want: Vec<Vec<u8>> = ["b", "c", "d"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        assert_eq!(diff_keys(&ours, &theirs), want);
        assert_eq!(diff_keys(&theirs, &ours), want);
        assert!(diff_keys(&ours, &ours).is_empty());
        // Unsorted input gives the same answer.
        let mut shuffled = theirs.clone();
        shuffled.reverse();
        assert_eq!(diff_keys(&ours, &shuffled), want);
        assert_eq!(diff_keys(&[], &ours).len(), 4);
    }
}
