//! Touches: extending a key's expiry without writing a new version (`POST ?touch`, and the
//! sliding TTL of a bucket with `ttl_sliding`).
//!
//! A touch sends `Touch { expires_at_ms }` to every node of the key's write set (no value
//! crosses the network); each replica raises the expiry of its expiring values
//! ([`Object::extend_expiry`](yeskv_core::Object::extend_expiry)) and `sync` keeps the later
//! expiry of one version, so a touch that reached some replicas spreads to the others by read
//! repair like any difference. A sliding bucket touches a key on each read or write once its
//! remaining lifetime has dropped by a tenth of the TTL (at least a second): a key read in a
//! tight loop costs one touch per tenth of its TTL, not one per read.

use yeskv_core::{Object, Quorum};
use yeskv_storage::Engine;

use super::Coordinator;
use crate::error::Error;
use crate::replication;

impl<E: Engine> Coordinator<E> {
    /// Extends the expiry of `(bucket, key)` to `ttl_secs` from now on its replicas, waiting
    /// for `w` of them (resolved like a write's). `Ok(false)` when none of those that answered
    /// held a live value.
    pub async fn touch(
        &self,
        bucket: &[u8],
        key: &[u8],
        ttl_secs: u64,
        w: Option<Quorum>,
    ) -> Result<bool, Error> {
        let p = self.place(bucket, key);
        let required = self.quorum(w, self.settings().w, &p, p.writes.len(), "w")?;
        let expires = self.now_ms().saturating_add(ttl_secs.saturating_mul(1000));
        let (tx, mut rx) = tokio::sync::mpsc::channel(p.writes.len().max(1));
        for node in p.writes.iter() {
            let (this, node, tx) = (self.clone(), node.clone(), tx.clone());
            let storage_key = p.storage_key.clone();
            let hash = p.hash;
            tokio::spawn(async move {
                let result = if this.is_local(&node) {
                    let now = this.now_ms();
                    this.replica().touch(hash, &storage_key, expires, now).await
                } else {
                    replication::send_touch(&this.ctx, &node, hash, &storage_key, expires).await
                };
                let _ = tx.send((node, result)).await;
            });
        }
        drop(tx);
        let (mut ok, mut found, mut errors) = (0u8, false, Vec::new());
        while let Some((node, result)) = rx.recv().await {
            match result {
                Ok(f) => {
                    ok += 1;
                    found |= f;
                    if ok >= required && found {
                        return Ok(true);
                    }
                }
                Err(e) => errors.push(e.of(&node)),
            }
        }
        if ok >= required {
            Ok(found)
        } else {
            Err(Error::Quorum {
                required,
                succeeded: ok,
                errors: errors.join("; "),
            })
        }
    }

    /// After a read or write of a key of a sliding bucket: touches it in the background if its
    /// latest expiry is more than a tenth of the TTL (at least 1 s) behind a fresh one.
    pub fn slide(&self, bucket: &[u8], key: &[u8], obj: &Object) {
        let props = self.bucket_props(bucket);
        let (true, Some(ttl)) = (props.ttl_sliding, props.ttl_secs) else {
            return;
        };
        let now = self.now_ms();
        let Some(latest) = obj
            .visible(now)
            .filter(|s| !s.version.is_tombstone())
            .filter_map(|s| s.version.expires_at_ms)
            .max()
        else {
            return;
        };
        let fresh = now.saturating_add(ttl.saturating_mul(1000));
        let slack = (ttl.saturating_mul(100)).max(1000);
        if latest.saturating_add(slack) >= fresh {
            return;
        }
        metrics::counter!(crate::metrics::TOUCHES, "reason" => "sliding").increment(1);
        let (this, bucket, key) = (self.clone(), bucket.to_vec(), key.to_vec());
        tokio::spawn(async move {
            if let Err(e) = this.touch(&bucket, &key, ttl, Some(Quorum::One)).await {
                tracing::debug!(error = %e, "sliding expiry: touch failed");
            }
        });
    }
}
