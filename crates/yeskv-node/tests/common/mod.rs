//! What the node's integration tests share: the coordinator settings of a 3-replica test
//! cluster and node ids.

use std::time::Duration;

use yeskv_core::NodeId;
use yeskv_node::context::Settings;

/// `n = 3`, `r = w = 2`, 256 partitions, a 1 s internode deadline, unkeyed contexts.
pub fn settings() -> Settings {
    Settings {
        n: 3,
        r: 2,
        w: 2,
        partitions: 256,
        siblings_max: 100,
        default_ttl_secs: 0,
        rpc_timeout: Duration::from_millis(1000),
        read_repair_inflight_max: 64,
        read_all_every: 1,
        read_hedge: Duration::from_millis(20),
        context_keys: yeskv_core::keyring::Keyring::unkeyed("test")
            .derive(yeskv_core::keyring::Purpose::Contexts),
    }
}

/// The node id `s` (a valid one).
pub fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid")
}
