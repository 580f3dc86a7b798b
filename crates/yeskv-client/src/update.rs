//! Read-modify-write of a plain key: [`Client::update`].
//!
//! The pattern every Dynamo client needs (Dynamo §4.4): read the key, hand its siblings to the
//! application's merge, and write the result with the read's causal context, so that it
//! supersedes exactly the versions that were merged. A writer that raced with it — a write the
//! read did not see — is not lost: it stays as a sibling of the result, and the next update
//! hands both to the merge. The loop here only adds what every caller would otherwise write
//! again: transient failures (a node down, a timeout, an overloaded node) retry the whole
//! read-merge-write a bounded number of times with exponential backoff.

use std::time::Duration;

use bytes::Bytes;

use crate::{Client, Error, Quorum, ReadOptions, WriteOptions};

/// Default attempts of one update (the first and the retries).
pub const UPDATE_ATTEMPTS_DEFAULT: u32 = 4;

/// Default pause before an update's first retry; doubled before each further one.
pub const UPDATE_BACKOFF_INITIAL: Duration = Duration::from_millis(25);

/// Longest pause between two attempts of an update.
pub const UPDATE_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Options of [`Client::update_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateOptions {
    /// Replicas that must answer the read (`None`: the server's default).
    pub r: Option<Quorum>,
    /// Replicas that must acknowledge the write (`None`: the server's default).
    pub w: Option<Quorum>,
    /// Expiry of the written value, in seconds (`None`: the bucket's).
    pub ttl_secs: Option<u64>,
    /// Most read-merge-write attempts (at least 1), retrying only errors that
    /// [`Error::is_retryable`] says may pass.
    pub attempts_max: u32,
    /// Pause before the first retry; doubled before each further one, at most
    /// [`UPDATE_BACKOFF_MAX`].
    pub backoff_initial: Duration,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            r: None,
            w: None,
            ttl_secs: None,
            attempts_max: UPDATE_ATTEMPTS_DEFAULT,
            backoff_initial: UPDATE_BACKOFF_INITIAL,
        }
    }
}

/// The pause after failed attempt `attempt` (1 for the first) when the first pause is
/// `initial`: `initial · 2^(attempt-1)`, at most [`UPDATE_BACKOFF_MAX`].
pub(crate) fn backoff(initial: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    initial.saturating_mul(factor).min(UPDATE_BACKOFF_MAX)
}

impl Client {
    /// Read-modify-write of a plain key with the default [`UpdateOptions`]: reads the key,
    /// calls `merge` with its live values (siblings; empty when the key has none) and writes
    /// what it returns with the read's causal context. Returns the context of the new version.
    ///
    /// The write supersedes exactly what the read saw. A concurrent writer is not lost: its
    /// write stays as a sibling of ours, and the next update hands both to `merge`, so `merge`
    /// must fold any number of siblings into one value (a union of carts, the largest
    /// timestamp, ...). On a transient error the whole read-merge-write is tried again (see
    /// [`Client::update_with`]), so `merge` may be called several times, and a write whose
    /// answer was lost may already be among the siblings the next attempt reads: compute the
    /// value from the siblings alone (idempotently), not by applying a delta to each call.
    ///
    /// ```no_run
    /// # async fn example(client: yeskv_client::Client) -> Result<(), yeskv_client::Error> {
    /// use std::collections::BTreeSet;
    /// use bytes::Bytes;
    ///
    /// // Tags kept as comma-separated text: the union of every sibling, plus "new".
    /// client
    ///     .update("profiles", "ada", |siblings| {
    ///         let mut tags = BTreeSet::new();
    ///         for value in siblings {
    ///             for tag in String::from_utf8_lossy(value).split(',').filter(|t| !t.is_empty()) {
    ///                 tags.insert(tag.to_string());
    ///             }
    ///         }
    ///         tags.insert("new".to_string());
    ///         Bytes::from(tags.into_iter().collect::<Vec<_>>().join(","))
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update<F>(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        merge: F,
    ) -> Result<String, Error>
    where
        F: FnMut(&[Bytes]) -> Bytes,
    {
        self.update_with(bucket, key, &UpdateOptions::default(), merge)
            .await
    }

    /// [`Client::update`] with options: quorums, a TTL for the written value, and how many
    /// attempts with which backoff. An attempt that fails with a retryable error (a refused
    /// connection, a timeout, a broken connection, 408/429/502/503/504) is followed, after the
    /// backoff, by a new read, merge and write; any other error, or the last attempt's, is
    /// returned.
    pub async fn update_with<F>(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        options: &UpdateOptions,
        mut merge: F,
    ) -> Result<String, Error>
    where
        F: FnMut(&[Bytes]) -> Bytes,
    {
        let (bucket, key) = (bucket.as_ref(), key.as_ref());
        if options.attempts_max == 0 {
            return Err(Error::InvalidArgument(
                "an update needs at least one attempt".into(),
            ));
        }
        let mut attempt = 1;
        loop {
            match self.update_once(bucket, key, options, &mut merge).await {
                Err(error) if error.is_retryable() && attempt < options.attempts_max => {
                    tokio::time::sleep(backoff(options.backoff_initial, attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// One read, merge and write.
    async fn update_once<F>(
        &self,
        bucket: &[u8],
        key: &[u8],
        options: &UpdateOptions,
        merge: &mut F,
    ) -> Result<String, Error>
    where
        F: FnMut(&[Bytes]) -> Bytes,
    {
        let read = self
            .read(bucket, key, &ReadOptions { r: options.r })
            .await?;
        let values: Vec<Bytes> = read.values().cloned().collect();
        let merged = merge(&values);
        let write = WriteOptions {
            // Even a read that found nothing may carry the context of tombstones: writing with
            // it keeps them from coming back as siblings.
            context: Some(read.context).filter(|context| !context.is_empty()),
            w: options.w,
            ttl_secs: options.ttl_secs,
        };
        self.put(bucket, key, merged, &write).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let initial = Duration::from_millis(25);
        let pauses: Vec<u128> = (1..=8)
            .map(|attempt| backoff(initial, attempt).as_millis())
            .collect();
        assert_eq!(pauses, [25, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(initial, u32::MAX), UPDATE_BACKOFF_MAX);
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }

    #[tokio::test]
    async fn zero_attempts_is_refused_before_sending() {
        let client = Client::new("http://127.0.0.1:9").expect("valid");
        let options = UpdateOptions {
            attempts_max: 0,
            ..UpdateOptions::default()
        };
        let error = client
            .update_with("b", "k", &options, |_| Bytes::new())
            .await
            .expect_err("no attempt");
        assert!(matches!(error, Error::InvalidArgument(_)));
    }
}
