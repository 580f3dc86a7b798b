//! Metrics: names of every counter and histogram the node exports, and the `/metrics` renderer.
//!
//! Code records with the `metrics` facade next to what it measures; the binary installs the
//! Prometheus recorder. Engine figures (memtable size, pending compaction bytes, stalls) are
//! sampled into gauges when `/metrics` is scraped.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use yeskv_storage::Engine;

/// HTTP requests, by `route`, `method` and `status`.
pub const HTTP_REQUESTS: &str = "yeskv_http_requests_total";
/// HTTP request latency in seconds, by `route` and `method`.
pub const HTTP_DURATION: &str = "yeskv_http_request_duration_seconds";
/// Records that failed their checksum.
pub const CORRUPT_RECORDS: &str = "yeskv_corrupt_records_total";
/// Siblings returned per read.
pub const READ_SIBLINGS: &str = "yeskv_read_siblings";
/// Writes refused for too many siblings.
pub const SIBLING_LIMIT_REFUSED: &str = "yeskv_sibling_limit_refused_total";

/// Installs the process-wide Prometheus recorder; `None` if one is already installed.
pub fn install() -> Option<PrometheusHandle> {
    let latency_buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(READ_SIBLINGS.into()),
                &[1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 100.0],
            )
        })
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status.");
    metrics::describe_histogram!(HTTP_DURATION, "HTTP request latency in seconds.");
    metrics::describe_counter!(
        CORRUPT_RECORDS,
        "Stored records that failed their checksum."
    );
    metrics::describe_histogram!(READ_SIBLINGS, "Siblings returned per read.");
    metrics::describe_counter!(
        SIBLING_LIMIT_REFUSED,
        "Writes refused for too many siblings."
    );
    // Make the corruption counter visible at 0 before anything is corrupt.
    metrics::counter!(CORRUPT_RECORDS).increment(0);
    Some(handle)
}

/// Renders the Prometheus text, sampling the engine's and the internode RPC's figures first.
pub fn render(
    handle: &PrometheusHandle,
    engine: &impl Engine,
    peers: &[yeskv_rpc::PeerStats],
) -> String {
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
        metrics::gauge!("yeskv_rpc_connected", "peer" => peer)
            .set(f64::from(u8::from(p.connected)));
    }
    handle.run_upkeep();
    handle.render()
}
