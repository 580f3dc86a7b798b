//! Metrics: names of every counter and histogram the node exports, and the `/metrics` renderer.
//!
//! Code records with the `metrics` facade next to what it measures; the binary installs the
//! Prometheus recorder. Engine figures (memtable size, pending compaction bytes, stalls) are
//! sampled into gauges when `/metrics` is scraped.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::Method;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;
use yeskv_storage::Engine;

/// HTTP requests, by `route`, `method` and `status`.
pub const HTTP_REQUESTS: &str = "yeskv_http_requests_total";
/// HTTP request latency in seconds, by `route` and `method`.
pub const HTTP_DURATION: &str = "yeskv_http_request_duration_seconds";
/// Client connections closed at once because `server.http_connections_max` were open.
pub const HTTP_CONNECTIONS_REFUSED: &str = "yeskv_http_connections_refused_total";
/// Client connections open now.
pub const HTTP_CONNECTIONS_OPEN: &str = "yeskv_http_connections_open";
/// Requests refused for their API key, labelled by `status` (`401`, `403`; `resp` for a RESP
/// command refused for its connection's key).
pub const AUTH_REFUSED: &str = "yeskv_auth_refused_total";
/// Records that failed their checksum.
pub const CORRUPT_RECORDS: &str = "yeskv_corrupt_records_total";
/// Siblings returned per read.
pub const READ_SIBLINGS: &str = "yeskv_read_siblings";
/// Writes that left a plain key with more than `limits.siblings_max` siblings (taken, flagged).
pub const SIBLINGS_OVER_LIMIT: &str = "yeskv_siblings_over_limit_total";
/// Objects a restore merged into their write sets (`POST /v1/admin/import`).
pub const IMPORTED_OBJECTS: &str = "yeskv_imported_objects_total";
/// Data-type operations applied as coordinator, by `type`.
pub const DT_OPS: &str = "yeskv_dt_ops_total";
/// Expiry extensions (touches) sent, by `reason` (`sliding` on a read or write, `touch`).
pub const TOUCHES: &str = "yeskv_touches_total";
/// Writes refused because the key's object would pass `limits.object_bytes_max`.
pub const OBJECT_LIMIT_REFUSED: &str = "yeskv_object_limit_refused_total";
/// Writes a fallback took for a down or slow primary (sloppy quorum), by `reason`.
pub const SLOPPY_WRITES: &str = "yeskv_sloppy_writes_total";
/// Times this node refused to stand in because it held its hint limit for the target.
pub const HINTS_REFUSED: &str = "yeskv_hints_refused_total";
/// Hints handed off to their primary and removed.
pub const HINTS_HANDED_OFF: &str = "yeskv_hints_handed_off_total";
/// Hints whose target left the layout, delivered to the key's current primaries instead.
pub const HINTS_REHOMED: &str = "yeskv_hints_rehomed_total";
/// Bytes of the hints this node holds (keys and records as stored).
pub const HINT_BYTES: &str = "yeskv_hint_bytes";
/// Rounds a background worker ran, by `worker`.
pub const WORKER_ROUNDS: &str = "yeskv_worker_rounds_total";
/// Rounds of a background worker that failed, by `worker`.
pub const WORKER_FAILURES: &str = "yeskv_worker_failures_total";
/// 1 while a background worker is in a round, by `worker`.
pub const WORKER_BUSY: &str = "yeskv_worker_busy";
/// Bytes of objects handed off.
pub const HANDOFF_BYTES: &str = "yeskv_handoff_bytes_total";
/// Hints this node holds for others.
pub const HINTS_PENDING: &str = "yeskv_hints_pending";
/// Replicas sent the merged object after a read found them behind.
pub const READ_REPAIRS: &str = "yeskv_read_repairs_total";
/// Read repairs skipped because too many were in flight.
pub const READ_REPAIRS_SKIPPED: &str = "yeskv_read_repairs_skipped_total";
/// Anti-entropy exchanges, by `result` (`equal`, `repaired`, `failed`).
pub const AAE_EXCHANGES: &str = "yeskv_aae_exchanges_total";
/// Keys anti-entropy found different and synced (counted on the node that ran the exchange).
pub const AAE_KEYS_REPAIRED: &str = "yeskv_aae_keys_repaired_total";
/// Partitions whose roots this node compared with a peer's in its last anti-entropy round.
pub const AAE_PARTITIONS_COMPARED: &str = "yeskv_aae_partitions_compared";
/// Of those, the partitions whose roots differed (0 once the replicas agree).
pub const AAE_PARTITIONS_DIFFERING: &str = "yeskv_aae_partitions_differing";
/// Anti-entropy trees found to disagree with the disk while listing a segment's keys, and
/// replaced by one built from the disk (a tree that lags its disk would keep its partition
/// unequal forever).
pub const AAE_TREES_REPLACED: &str = "yeskv_aae_trees_replaced_total";
/// Bytes of anti-entropy messages sent (trees, key lists, objects).
pub const AAE_BYTES: &str = "yeskv_aae_bytes_total";
/// Tombstones (and keys mixing tombstones with expiring values) removed by the reaper after
/// every primary held them past the grace period.
pub const TOMBSTONES_REAPED: &str = "yeskv_tombstones_reaped_total";
/// Reap-queue entries written (stores of objects holding a tombstone: expiring objects need
/// none).
pub const REAP_QUEUED: &str = "yeskv_reap_queued_total";
/// Reap requests this node sent to other primaries (the reaper's coordination).
pub const REAP_REQUESTS_SENT: &str = "yeskv_reap_requests_sent_total";
/// Records the compaction filter dropped: expiring objects past `ttl.expiry_grace_secs`.
pub const EXPIRED_RECORDS_DROPPED: &str = "yeskv_expired_records_dropped_total";
/// Bytes of the records the compaction filter dropped.
pub const EXPIRED_BYTES_DROPPED: &str = "yeskv_expired_bytes_dropped_total";
/// Compactions of the data space the expiry worker ran (`crate::expiry`).
pub const EXPIRY_COMPACTIONS: &str = "yeskv_expiry_compactions_total";
/// Bytes of records droppable (expired past the grace) written since the last expiry
/// compaction.
pub const EXPIRY_DUE_BYTES: &str = "yeskv_expiry_due_bytes";
/// Records droppable written since the last expiry compaction.
pub const EXPIRY_DUE_RECORDS: &str = "yeskv_expiry_due_records";
/// Bytes of expiring records written since start and not droppable yet.
pub const EXPIRY_PENDING_BYTES: &str = "yeskv_expiry_pending_bytes";
/// Expiring records written since start and not droppable yet.
pub const EXPIRY_PENDING_RECORDS: &str = "yeskv_expiry_pending_records";
/// Expired expiring objects not stored or not sent, by `path` (`merge`: into a copy holding
/// nothing of the key; `hint`: a hint dropped instead of delivered; `transfer`; `cross-region`).
pub const EXPIRED_SKIPPED: &str = "yeskv_expired_skipped_total";
/// Writes this node's storage refused (a full disk) that it handed to another primary.
pub const WRITES_FORWARDED_STORAGE: &str = "yeskv_writes_forwarded_storage_total";
/// Corrupt records replaced by another replica's copy (replication, repair, anti-entropy).
pub const CORRUPT_RECORDS_REPLACED: &str = "yeskv_corrupt_records_replaced_total";
/// Forwarded writes that went to the next replica because no connection to the first could be
/// made (the request was never sent there).
pub const WRITES_REROUTED: &str = "yeskv_writes_rerouted_total";
/// Writes re-placed by a newer layout of their coordinator after a member of their write set
/// refused them by its own, newer, layout.
pub const WRITES_REPLACED: &str = "yeskv_writes_replaced_total";
/// Partitions this node is receiving (syncing in the layout).
pub const TRANSFER_PARTITIONS_PENDING: &str = "yeskv_transfer_partitions_pending";
/// Partitions this node received and reported complete to the layout.
pub const TRANSFER_PARTITIONS_DONE: &str = "yeskv_transfer_partitions_done_total";
/// Keys copied into partitions this node is receiving.
pub const TRANSFER_KEYS: &str = "yeskv_transfer_keys_total";
/// Bytes (keys and records) streamed into partitions this node is receiving.
pub const TRANSFER_BYTES: &str = "yeskv_transfer_bytes_total";
/// Transfer batches refused: their checksum or a record's did not hold, or their keys were out
/// of order (asked again).
pub const TRANSFER_BATCHES_REFUSED: &str = "yeskv_transfer_batches_refused_total";
/// Partitions whose data this node removed after it stopped holding them (cleanup).
pub const TRANSFER_PARTITIONS_CLEANED: &str = "yeskv_transfer_partitions_cleaned_total";
/// `local_quorum` reads whose region could not make its majority, answered by as many data
/// holders of the whole cluster.
pub const READS_SPILLED: &str = "yeskv_reads_spilled_total";
/// Writes queued for another region, by `region`, waiting to be sent (`crate::xr`).
pub const XR_QUEUE: &str = "yeskv_xr_queue_entries";
/// Age of the oldest write queued for a region, by `region` (0 when none is queued).
pub const XR_LAG: &str = "yeskv_xr_lag_seconds";
/// Writes delivered to another region and removed from its queue, by `region`.
pub const XR_DELIVERED: &str = "yeskv_xr_delivered_total";
/// Time from a write's store to its delivery in another region, by `region`.
pub const XR_DELIVERY: &str = "yeskv_xr_delivery_seconds";
/// Writes not queued for a region because its queue was full (left to anti-entropy), by
/// `region`.
pub const XR_OVERFLOW: &str = "yeskv_xr_overflow_total";
/// Batches sent to another region that failed, by `region`.
pub const XR_FAILURES: &str = "yeskv_xr_failures_total";
/// 1 while the last batch sent to a region got through (or it owed nothing and a node of it
/// is up), by `region`.
pub const XR_LINK_UP: &str = "yeskv_xr_link_up";
/// Objects per coalesced replica write (`MergeMany`) a coordinator sent (`crate::merges`).
pub const MERGE_BATCH: &str = "yeskv_merge_batch_objects";
/// RESP commands run, by `command` (the table's lower-case name, `unknown`, `protocol`).
pub const RESP_COMMANDS: &str = "yeskv_resp_commands_total";
/// RESP commands answered with an error, by `command` and `code` (`ERR`, `WRONGTYPE`, …).
pub const RESP_ERRORS: &str = "yeskv_resp_errors_total";
/// RESP command latency in seconds, by `command`.
pub const RESP_DURATION: &str = "yeskv_resp_command_duration_seconds";
/// RESP connections open now.
pub const RESP_CONNECTIONS_OPEN: &str = "yeskv_resp_connections_open";
/// RESP connections closed at once because `resp.connections_max` were open.
pub const RESP_CONNECTIONS_REFUSED: &str = "yeskv_resp_connections_refused_total";

/// Per route (matched pattern), per (method, status): the request counter and the latency
/// histogram of that route and method.
type HttpSeries = HashMap<String, HashMap<(Method, u16), (Counter, Histogram)>>;

static HTTP_SERIES: LazyLock<RwLock<HttpSeries>> = LazyLock::new(Default::default);

/// The handles [`HTTP_REQUESTS`] and [`HTTP_DURATION`] record a request into. Each series is
/// looked up in the recorder once and its handles kept: a lookup hashes and allocates every
/// label, which was a measurable share of a request costing ~20 µs of CPU. Handles taken before
/// the recorder is installed do nothing, so the recorder is installed before serving.
pub fn http_series(route: &str, method: &Method, status: u16) -> (Counter, Histogram) {
    // Any method name is valid HTTP: those the API does not know share one label, so a client
    // cannot make a new series per request.
    let method = match *method {
        Method::GET
        | Method::HEAD
        | Method::PUT
        | Method::POST
        | Method::DELETE
        | Method::OPTIONS
        | Method::PATCH => method.clone(),
        _ => Method::from_bytes(b"OTHER").unwrap_or(Method::GET),
    };
    let method = &method;
    if let Some(series) = HTTP_SERIES
        .read()
        .get(route)
        .and_then(|by_method| by_method.get(&(method.clone(), status)))
    {
        return series.clone();
    }
    let series = (
        metrics::counter!(HTTP_REQUESTS, "route" => route.to_owned(), "method" => method.as_str().to_owned(), "status" => status.to_string()),
        metrics::histogram!(HTTP_DURATION, "route" => route.to_owned(), "method" => method.as_str().to_owned()),
    );
    HTTP_SERIES
        .write()
        .entry(route.to_owned())
        .or_default()
        .insert((method.clone(), status), series.clone());
    series
}

/// The [`READ_SIBLINGS`] histogram (looked up once; see [`http_series`]).
pub fn read_siblings() -> &'static Histogram {
    static H: LazyLock<Histogram> = LazyLock::new(|| metrics::histogram!(READ_SIBLINGS));
    &H
}

/// Records one coalesced batch of `objects` replica writes ([`MERGE_BATCH`]).
pub fn merge_batch(objects: usize) {
    static H: LazyLock<Histogram> = LazyLock::new(|| metrics::histogram!(MERGE_BATCH));
    H.record(objects as f64);
}

/// Installs the process-wide Prometheus recorder; `None` if one is already installed.
pub fn install() -> Option<PrometheusHandle> {
    let latency_buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .and_then(|b| {
            // A region cut off for minutes is what this histogram is for.
            b.set_buckets_for_metric(
                Matcher::Full(XR_DELIVERY.into()),
                &[
                    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                ],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(MERGE_BATCH.into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(READ_SIBLINGS.into()),
                &[1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 100.0],
            )
        })
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status.");
    metrics::describe_counter!(
        IMPORTED_OBJECTS,
        "Objects a restore merged into every node of their write set."
    );
    metrics::describe_histogram!(HTTP_DURATION, "HTTP request latency in seconds.");
    metrics::describe_counter!(
        CORRUPT_RECORDS,
        "Stored records that failed their checksum."
    );
    metrics::describe_histogram!(READ_SIBLINGS, "Siblings returned per read.");
    metrics::describe_histogram!(
        MERGE_BATCH,
        "Objects per coalesced replica write (MergeMany) this node sent as coordinator."
    );
    metrics::describe_counter!(
        SIBLINGS_OVER_LIMIT,
        "Writes taken that left a plain key with more siblings than limits.siblings_max."
    );
    metrics::counter!(SIBLINGS_OVER_LIMIT).increment(0);
    metrics::describe_counter!(
        AUTH_REFUSED,
        "Requests refused for their API key, by status (401, 403; resp: a RESP command)."
    );
    for status in ["401", "403", "resp"] {
        metrics::counter!(AUTH_REFUSED, "status" => status).increment(0);
    }
    metrics::describe_counter!(DT_OPS, "Data-type operations coordinated, by type.");
    metrics::describe_counter!(TOUCHES, "Expiry extensions sent, by reason.");
    metrics::describe_counter!(
        OBJECT_LIMIT_REFUSED,
        "Writes refused because the key's object would pass limits.object_bytes_max."
    );
    metrics::describe_counter!(
        yeskv_tls::PEER_REFUSED,
        "Connections and messages refused, by reason: tls (failed TLS handshake: no or foreign \
         certificate, plain text on a TLS port), identity (a certificate naming another node \
         than the one announced or expected), not_member (a message of a node not in the layout)."
    );
    for reason in ["tls", "identity", "not_member"] {
        metrics::counter!(yeskv_tls::PEER_REFUSED, "reason" => reason).increment(0);
    }
    let counters = [
        (
            AAE_TREES_REPLACED,
            "Anti-entropy trees found to disagree with the disk and rebuilt from it.",
        ),
        (
            WRITES_FORWARDED_STORAGE,
            "Writes this node's storage refused that another primary coordinated.",
        ),
        (
            SLOPPY_WRITES,
            "Writes a fallback took for a down or slow primary.",
        ),
        (
            HINTS_REFUSED,
            "Stand-in writes refused: hint limit for the target reached.",
        ),
        (
            HINTS_HANDED_OFF,
            "Hints handed off to their primary and removed.",
        ),
        (
            HINTS_REHOMED,
            "Hints whose target left the layout, delivered to the key's current primaries.",
        ),
        (HANDOFF_BYTES, "Bytes of objects handed off."),
        (WORKER_ROUNDS, "Rounds a background worker ran."),
        (
            WORKER_FAILURES,
            "Rounds of a background worker that failed.",
        ),
        (
            READ_REPAIRS,
            "Replicas repaired after a read found them behind.",
        ),
        (
            READ_REPAIRS_SKIPPED,
            "Read repairs skipped: too many in flight.",
        ),
        (AAE_EXCHANGES, "Anti-entropy exchanges by result."),
        (
            AAE_KEYS_REPAIRED,
            "Keys anti-entropy found different and synced.",
        ),
        (AAE_BYTES, "Bytes of anti-entropy messages sent."),
        (
            TOMBSTONES_REAPED,
            "Tombstones reaped after every primary held them past the grace period.",
        ),
        (
            REAP_QUEUED,
            "Reap-queue entries written (objects holding a tombstone; expiring ones need none).",
        ),
        (
            REAP_REQUESTS_SENT,
            "Reap requests sent to other primaries by the reaper.",
        ),
        (
            EXPIRED_RECORDS_DROPPED,
            "Records the compaction filter dropped: expiring objects past the expiry grace.",
        ),
        (
            EXPIRED_BYTES_DROPPED,
            "Bytes of records the compaction filter dropped.",
        ),
        (
            EXPIRY_COMPACTIONS,
            "Compactions of the data the expiry worker ran for expired records.",
        ),
        (
            EXPIRED_SKIPPED,
            "Expired expiring objects not stored or not sent, by path.",
        ),
        (
            CORRUPT_RECORDS,
            "Stored records that failed their checksum.",
        ),
        (
            CORRUPT_RECORDS_REPLACED,
            "Corrupt records replaced by another replica's copy.",
        ),
        (
            WRITES_REROUTED,
            "Forwarded writes sent to the next replica: the first could not be connected to.",
        ),
        (
            WRITES_REPLACED,
            "Writes re-placed by a newer layout after a write set member refused them by its own.",
        ),
        (
            TRANSFER_PARTITIONS_DONE,
            "Partitions this node received and reported complete to the layout.",
        ),
        (
            TRANSFER_KEYS,
            "Keys copied into partitions this node is receiving.",
        ),
        (
            TRANSFER_BYTES,
            "Bytes (keys and records) streamed into partitions this node is receiving.",
        ),
        (
            TRANSFER_BATCHES_REFUSED,
            "Transfer batches refused for a failed checksum or keys out of order.",
        ),
        (
            TRANSFER_PARTITIONS_CLEANED,
            "Partitions whose data this node removed after it stopped holding them.",
        ),
        (
            XR_DELIVERED,
            "Writes delivered to another region and removed from its queue.",
        ),
        (
            XR_OVERFLOW,
            "Writes not queued for a region (its queue was full): left to anti-entropy.",
        ),
        (XR_FAILURES, "Batches sent to another region that failed."),
        (
            READS_SPILLED,
            "local_quorum reads answered by other regions' replicas: their own could not make a majority.",
        ),
    ];
    for (name, help) in counters {
        metrics::describe_counter!(name, help);
        // Visible at 0 before anything happens.
        metrics::counter!(name).increment(0);
    }
    for (name, help) in [
        (
            EXPIRY_DUE_BYTES,
            "Bytes of records droppable (expired past the grace) since the last expiry compaction.",
        ),
        (
            EXPIRY_DUE_RECORDS,
            "Records droppable (expired past the grace) since the last expiry compaction.",
        ),
        (
            EXPIRY_PENDING_BYTES,
            "Bytes of expiring records written since start, not droppable yet.",
        ),
        (
            EXPIRY_PENDING_RECORDS,
            "Expiring records written since start, not droppable yet.",
        ),
    ] {
        metrics::describe_gauge!(name, help);
        metrics::gauge!(name).set(0.0);
    }
    for (name, help) in [
        (
            AAE_PARTITIONS_COMPARED,
            "Partitions compared with a peer in the last anti-entropy round.",
        ),
        (
            AAE_PARTITIONS_DIFFERING,
            "Partitions whose roots differed from a peer's in the last anti-entropy round.",
        ),
    ] {
        metrics::describe_gauge!(name, help);
        metrics::gauge!(name).set(0.0);
    }
    metrics::describe_gauge!(HINTS_PENDING, "Hints this node holds for others.");
    metrics::describe_gauge!(HINT_BYTES, "Bytes of the hints this node holds for others.");
    metrics::describe_gauge!(WORKER_BUSY, "1 while a background worker is in a round.");
    metrics::describe_gauge!(
        TRANSFER_PARTITIONS_PENDING,
        "Partitions this node is receiving (syncing in the layout)."
    );
    metrics::gauge!(TRANSFER_PARTITIONS_PENDING).set(0.0);
    metrics::describe_gauge!(XR_QUEUE, "Writes queued for another region, by region.");
    metrics::describe_gauge!(
        XR_LAG,
        "Age of the oldest write queued for a region, in seconds."
    );
    metrics::describe_gauge!(
        XR_LINK_UP,
        "1 while the last batch sent to a region got through."
    );
    metrics::describe_histogram!(
        XR_DELIVERY,
        "Time from a write's store to its delivery in another region, in seconds."
    );
    Some(handle)
}

/// Renders the Prometheus text, sampling the engine's and the internode RPC's figures first.
pub fn render(
    handle: &PrometheusHandle,
    engine: &impl Engine,
    peers: &[yeskv_rpc::PeerStats],
    server: &yeskv_rpc::ServerStats,
) -> String {
    let figures = [
        ("yeskv_rpc_server_connections_open", server.connections_open),
        (
            "yeskv_rpc_server_connections_refused_total",
            server.connections_refused,
        ),
        (
            "yeskv_rpc_server_handshakes_refused_total",
            server.handshakes_refused,
        ),
        ("yeskv_rpc_server_requests_total", server.requests),
        ("yeskv_rpc_server_idle_closed_total", server.idle_closed),
    ];
    for (name, value) in figures {
        metrics::gauge!(name).set(value as f64);
    }
    for stat in engine.stats() {
        metrics::gauge!(format!("yeskv_storage_{}", stat.name)).set(stat.value);
    }
    for p in peers {
        let peer = p.remote_node_id.clone().unwrap_or_else(|| p.addr.clone());
        let figures = [
            ("yeskv_rpc_calls_total", p.calls),
            ("yeskv_rpc_errors_total", p.errors),
            ("yeskv_rpc_timeouts_total", p.timeouts),
            ("yeskv_rpc_reconnects_total", p.reconnects),
            ("yeskv_rpc_connect_errors_total", p.connect_errors),
            ("yeskv_rpc_inflight", p.inflight),
            ("yeskv_rpc_bytes_sent_total", p.traffic.bytes_sent),
            ("yeskv_rpc_bytes_received_total", p.traffic.bytes_received),
            ("yeskv_rpc_corrupt_frames_total", p.traffic.corrupt_frames),
        ];
        for (name, value) in figures {
            metrics::gauge!(name, "peer" => peer.clone()).set(value as f64);
        }
        // The protocol version the connection speaks (0: none open); in a rolling upgrade the
        // older of the two releases' newest versions.
        metrics::gauge!("yeskv_rpc_protocol_version", "peer" => peer.clone())
            .set(f64::from(p.protocol_version.unwrap_or(0)));
        metrics::gauge!("yeskv_rpc_connected", "peer" => peer)
            .set(f64::from(u8::from(p.connected)));
    }
    handle.run_upkeep();
    handle.render()
}
