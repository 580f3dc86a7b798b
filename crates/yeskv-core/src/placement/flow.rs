//! The minimum-cost flow solver behind [`super::assign`]: a flow network with integer
//! capacities and costs, and successive shortest paths to push flow through it at least cost.
//!
//! Placement states its goals as flow networks (module docs of [`super`]: replicas, then
//! primaries); this module knows nothing of partitions, zones or nodes, only vertices and edges,
//! so the placement rules and the graph algorithm can each be read (and checked) on their own.
//!
//! # Representation
//!
//! [`GraphBuilder`] collects edges; [`GraphBuilder::build`] lays them out by tail (compressed
//! adjacency: the out-edges of a vertex are contiguous, in insertion order, so the search order
//! and hence the result are a pure function of the order edges were added). Every edge `e` has
//! a residual twin `e ^ 1` of opposite cost that starts with no capacity; pushing on one gives
//! capacity to the other. Capacities are `u32` and costs `i32`: the placement graphs are bounded
//! by [`PAIRS_MAX`](super::PAIRS_MAX), and their costs are 0 or 1.
//!
//! # Algorithm
//!
//! [`Graph::min_cost_flow`] starts from the current flow, which must be of minimum cost for its
//! value with zero potentials (every residual edge of cost ≥ 0: true when it uses only edges of
//! cost 0 and no edge has a negative cost; placement pre-fills such a flow from the previous
//! layout). It then repeats: Dijkstra on reduced costs to the sink, potentials raised by the
//! distances (every reduced cost stays ≥ 0 and those on shortest paths become 0), and Dinic-style
//! blocking flows on the zero-reduced-cost subgraph, with an iterative path search so that long
//! alternating paths cannot overflow the stack. Each phase keeps the flow of minimum cost for its
//! value, so the result is a minimum-cost flow of the value reached.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Collects the edges of a flow network; [`GraphBuilder::build`] lays them out by tail.
pub(super) struct GraphBuilder {
    /// Vertices are `0..vertices`.
    vertices: usize,
    /// Per edge (twins included): the vertex it leaves.
    tail: Vec<u32>,
    /// Per edge: the vertex it enters.
    head: Vec<u32>,
    /// Per edge: its capacity (0 for a twin).
    capacity: Vec<u32>,
    /// Per edge: the cost of one unit (a twin's is the opposite).
    cost: Vec<i32>,
}

impl GraphBuilder {
    /// A network of `vertices` vertices and no edges.
    pub(super) fn new(vertices: usize) -> Self {
        GraphBuilder {
            vertices,
            tail: Vec::new(),
            head: Vec::new(),
            capacity: Vec::new(),
            cost: Vec::new(),
        }
    }

    /// Adds `from → to` and its residual twin; returns the edge id (the twin is `id ^ 1`).
    /// Vertex counts are below 2^32 by [`PAIRS_MAX`](super::PAIRS_MAX).
    pub(super) fn edge(&mut self, from: usize, to: usize, capacity: u32, cost: i32) -> usize {
        let id = self.tail.len();
        self.tail.extend([from as u32, to as u32]);
        self.head.extend([to as u32, from as u32]);
        self.capacity.extend([capacity, 0]);
        self.cost.extend([cost, -cost]);
        id
    }

    /// Lays the edges out by tail, keeping their insertion order within each vertex.
    pub(super) fn build(self) -> Graph {
        let mut start = vec![0u32; self.vertices + 1];
        for &t in &self.tail {
            start[t as usize + 1] += 1;
        }
        for v in 0..self.vertices {
            start[v + 1] += start[v];
        }
        let mut fill = start.clone();
        let mut out = vec![0u32; self.tail.len()];
        for (e, &t) in self.tail.iter().enumerate() {
            out[fill[t as usize] as usize] = e as u32;
            fill[t as usize] += 1;
        }
        Graph {
            start,
            out,
            head: self.head,
            residual: self.capacity,
            cost: self.cost,
        }
    }
}

/// A flow network in compressed adjacency form; edge `e ^ 1` is the residual twin of `e`.
pub(super) struct Graph {
    /// Out-edges of vertex `v` are `out[start[v]..start[v + 1]]`, in insertion order.
    start: Vec<u32>,
    /// Edge ids, grouped by tail.
    out: Vec<u32>,
    /// Per edge: the vertex it points to.
    head: Vec<u32>,
    /// Per edge: the capacity left (a twin's residual is the flow on its edge).
    residual: Vec<u32>,
    /// Per edge: the cost of one unit (a twin's is the opposite).
    cost: Vec<i32>,
}

impl Graph {
    /// The vertex edge `e` points to.
    pub(super) fn head_of(&self, e: usize) -> usize {
        self.head[e] as usize
    }

    /// Capacity left on edge `e`.
    pub(super) fn residual(&self, e: usize) -> u32 {
        self.residual[e]
    }

    /// Flow on forward edge `e` (its twin started with no residual capacity).
    pub(super) fn flow(&self, e: usize) -> u32 {
        self.residual[e ^ 1]
    }

    /// Sends `amount` more units along edge `e` (at most its residual capacity).
    pub(super) fn push(&mut self, e: usize, amount: u32) {
        self.residual[e] -= amount;
        self.residual[e ^ 1] += amount;
    }

    /// Positions in `out` of the out-edges of vertex `v`.
    fn out_edges(&self, v: usize) -> std::ops::Range<usize> {
        self.start[v] as usize..self.start[v + 1] as usize
    }

    /// Pushes up to `want` more units from `source` to `sink` along successively shortest
    /// paths; returns the amount pushed. The current flow must be of minimum cost for its value
    /// with zero potentials, i.e. every residual edge has cost ≥ 0 (true when the initial flow
    /// only uses edges of cost 0 and no edge has negative cost). The result is then a minimum
    /// cost flow of the new value.
    pub(super) fn min_cost_flow(&mut self, source: usize, sink: usize, want: u64) -> u64 {
        let vertices = self.start.len() - 1;
        let mut potential = vec![0i64; vertices];
        let mut distance = vec![i64::MAX; vertices];
        let mut level = vec![u32::MAX; vertices];
        let mut cursor = vec![0usize; vertices];
        let mut heap = BinaryHeap::new();
        let mut queue = Vec::with_capacity(vertices);
        let mut path = Vec::new();
        let mut pushed = 0u64;
        while pushed < want {
            // Dijkstra on reduced costs, stopped when the sink is settled.
            distance.fill(i64::MAX);
            distance[source] = 0;
            heap.clear();
            heap.push(Reverse((0i64, source)));
            while let Some(Reverse((d, u))) = heap.pop() {
                if d > distance[u] {
                    continue;
                }
                if u == sink {
                    break;
                }
                for k in self.out_edges(u) {
                    let e = self.out[k] as usize;
                    if self.residual[e] == 0 {
                        continue;
                    }
                    let v = self.head[e] as usize;
                    let reduced = i64::from(self.cost[e]) + potential[u] - potential[v];
                    debug_assert!(reduced >= 0, "negative reduced cost");
                    if d + reduced < distance[v] {
                        distance[v] = d + reduced;
                        heap.push(Reverse((d + reduced, v)));
                    }
                }
            }
            let to_sink = distance[sink];
            if to_sink == i64::MAX {
                break;
            }
            // Keeps every reduced cost ≥ 0 and makes those on shortest paths exactly 0.
            for (p, &d) in potential.iter_mut().zip(&distance) {
                *p += d.min(to_sink);
            }
            // Blocking flows on the admissible (zero reduced cost) subgraph, Dinic style.
            loop {
                level.fill(u32::MAX);
                level[source] = 0;
                queue.clear();
                queue.push(source);
                let mut head = 0;
                while head < queue.len() && level[sink] == u32::MAX {
                    let u = queue[head];
                    head += 1;
                    for k in self.out_edges(u) {
                        let e = self.out[k] as usize;
                        let v = self.head[e] as usize;
                        if self.residual[e] > 0
                            && level[v] == u32::MAX
                            && i64::from(self.cost[e]) + potential[u] == potential[v]
                        {
                            level[v] = level[u] + 1;
                            queue.push(v);
                        }
                    }
                }
                if level[sink] == u32::MAX {
                    break;
                }
                for (v, c) in cursor.iter_mut().enumerate() {
                    *c = self.start[v] as usize;
                }
                while pushed < want {
                    let amount = self.augment(
                        source,
                        sink,
                        &level,
                        &mut cursor,
                        &potential,
                        want - pushed,
                        &mut path,
                    );
                    if amount == 0 {
                        break;
                    }
                    pushed += u64::from(amount);
                }
                if pushed >= want {
                    break;
                }
            }
        }
        pushed
    }

    /// Finds one path along increasing levels of admissible edges and pushes its bottleneck
    /// (at most `limit`); returns 0 when the level graph is blocked. Iterative, so long
    /// alternating paths cannot overflow the stack.
    #[allow(clippy::too_many_arguments)]
    fn augment(
        &mut self,
        source: usize,
        sink: usize,
        level: &[u32],
        cursor: &mut [usize],
        potential: &[i64],
        limit: u64,
        path: &mut Vec<usize>,
    ) -> u32 {
        path.clear();
        let mut u = source;
        loop {
            if u == sink {
                let bottleneck = path
                    .iter()
                    .map(|&e| self.residual[e])
                    .min()
                    .unwrap_or(0)
                    .min(u32::try_from(limit).unwrap_or(u32::MAX));
                for &e in path.iter() {
                    self.push(e, bottleneck);
                }
                return bottleneck;
            }
            let end = self.start[u + 1] as usize;
            let mut advanced = false;
            while cursor[u] < end {
                let e = self.out[cursor[u]] as usize;
                let v = self.head[e] as usize;
                if self.residual[e] > 0
                    && level[v] == level[u] + 1
                    && (v == sink || level[v] < level[sink])
                    && i64::from(self.cost[e]) + potential[u] == potential[v]
                {
                    path.push(e);
                    u = v;
                    advanced = true;
                    break;
                }
                cursor[u] += 1;
            }
            if !advanced {
                match path.pop() {
                    None => return 0,
                    Some(e) => {
                        u = self.head[e ^ 1] as usize;
                        cursor[u] += 1;
                    }
                }
            }
        }
    }
}
