//! The I/O halves shared by client and server connections: a frame reader over any `AsyncRead`,
//! and the coalescing writer task over any `AsyncWrite`.
//!
//! The writer is the only code that writes to a connection after the handshake. It waits for one
//! queued frame, then takes every frame already queued (up to `write_batch_bytes_max` bytes) into
//! one buffer and issues one `write_all`: under load, many frames leave in one syscall; when idle,
//! a frame leaves at once (no timer: at most one `yield_now` lets already-runnable tasks queue
//! their frames first).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::frame::{Frame, FrameDecoder};
use crate::stats::{add, bump, TrafficCounters};

/// Bytes the reader asks the socket for at least, per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Reads verified frames off a stream.
pub(crate) struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    decoder: FrameDecoder,
    counters: Arc<TrafficCounters>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(reader: R, frame_bytes_max: usize, counters: Arc<TrafficCounters>) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
            decoder: FrameDecoder::new(frame_bytes_max),
            counters,
        }
    }

    pub(crate) fn set_frame_bytes_max(&mut self, frame_bytes_max: usize) {
        self.decoder.set_frame_bytes_max(frame_bytes_max);
    }

    /// The next frame; `Ok(None)` at a clean end of stream (on a frame boundary).
    ///
    /// Cancel-safe: bytes read so far stay in the buffer. A corrupt or oversized frame is counted
    /// here; the caller must close the connection on any error.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => {
                    bump(&self.counters.frames_received);
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(error) => {
                    match error {
                        Error::FrameTooLarge { .. } => bump(&self.counters.oversized_frames),
                        _ => bump(&self.counters.corrupt_frames),
                    }
                    return Err(error);
                }
            }
            if self.buffer.capacity() - self.buffer.len() < READ_CHUNK_BYTES / 4 {
                self.buffer.reserve(READ_CHUNK_BYTES);
            }
            let read = self.reader.read_buf(&mut self.buffer).await?;
            if read == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(Error::disconnected(
                        "the peer closed the connection in the middle of a frame",
                    ))
                };
            }
            add(&self.counters.bytes_received, read as u64);
        }
    }
}

/// Writes one frame outside the writer task (the handshake), counted like the writer's.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
    counters: &TrafficCounters,
) -> Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await?;
    add(&counters.bytes_sent, frame.len() as u64);
    bump(&counters.frames_sent);
    bump(&counters.write_batches);
    Ok(())
}

/// How the writer task ended.
#[derive(Debug)]
pub(crate) enum WriterEnd {
    /// Every sender is gone and the queue is drained: the stream was flushed and shut down.
    Drained,
    /// The cancellation token fired; queued frames may be lost.
    Cancelled,
    /// A write failed.
    Failed(std::io::Error),
}

/// The writer task of one connection: coalesces queued frames into batches (see the module doc).
pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queue: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
    batch_bytes_max: usize,
    counters: Arc<TrafficCounters>,
) -> WriterEnd {
    let mut batch: Vec<u8> = Vec::with_capacity(batch_bytes_max.min(1024 * 1024));
    let mut carried: Option<Bytes> = None;
    loop {
        let first = match carried.take() {
            Some(frame) => frame,
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => return WriterEnd::Cancelled,
                frame = queue.recv() => match frame {
                    Some(frame) => frame,
                    None => break,
                },
            },
        };
        let mut frames = 1u64;
        let written = if first.len() >= batch_bytes_max {
            // A big frame goes on its own, without a copy.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return WriterEnd::Cancelled,
                written = writer.write_all(&first) => written.map(|()| first.len()),
            }
        } else {
            batch.clear();
            batch.extend_from_slice(&first);
            let mut yielded = false;
            loop {
                while let Ok(frame) = queue.try_recv() {
                    if batch.len() + frame.len() > batch_bytes_max {
                        carried = Some(frame);
                        break;
                    }
                    batch.extend_from_slice(&frame);
                    frames += 1;
                }
                // Only one frame so far: let the tasks that are ready to run (handlers about to
                // answer, callers about to send) run first, once, then take what they queued.
                // Costs nothing when idle (nothing else is ready); under load it turns
                // handler → writer → handler ping-pong into batches.
                if frames > 1 || yielded || carried.is_some() {
                    break;
                }
                yielded = true;
                tokio::task::yield_now().await;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return WriterEnd::Cancelled,
                written = writer.write_all(&batch) => written.map(|()| batch.len()),
            }
        };
        match written {
            Ok(bytes) => {
                add(&counters.bytes_sent, bytes as u64);
                add(&counters.frames_sent, frames);
                bump(&counters.write_batches);
            }
            Err(error) => return WriterEnd::Failed(error),
        }
    }
    let finished = async {
        writer.flush().await?;
        writer.shutdown().await
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => WriterEnd::Cancelled,
        finished = finished => match finished {
            Ok(()) => WriterEnd::Drained,
            Err(error) => WriterEnd::Failed(error),
        },
    }
}

/// A future that turns a panic while polling the inner future into an `Err` carrying the panic
/// message, so one panicking handler answers its request with a failure instead of leaving the
/// caller to time out.
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchUnwind {
            inner: Box::pin(inner),
        }
    }
}

/// A handler that panicked, with its panic message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Panicked(String);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        // AssertUnwindSafe: after a panic the inner future is never polled again (the task
        // answers with a failure and ends), so no broken invariant of it can be observed.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(context))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(Panicked(panic_message(panic.as_ref())))),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, FrameKind};

    #[tokio::test]
    async fn writer_coalesces_queued_frames_into_one_write() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (queue_tx, queue_rx) = mpsc::channel(64);
        for id in 0..10 {
            let frame = encode_frame(FrameKind::Request, id, b"hello", 1 << 20).expect("fits");
            queue_tx.send(Bytes::from(frame)).await.expect("queued");
        }
        drop(queue_tx);
        let counters = Arc::new(TrafficCounters::default());
        let end = run_writer(
            client,
            queue_rx,
            CancellationToken::new(),
            1 << 16,
            counters.clone(),
        )
        .await;
        assert!(matches!(end, WriterEnd::Drained), "{end:?}");
        let stats = counters.snapshot();
        assert_eq!(stats.frames_sent, 10);
        assert_eq!(stats.write_batches, 1);

        let reader_counters = Arc::new(TrafficCounters::default());
        let mut reader = FrameReader::new(server, 1 << 20, reader_counters.clone());
        for id in 0..10 {
            let frame = reader.next_frame().await.expect("valid").expect("frame");
            assert_eq!(frame.request_id, id);
        }
        assert!(reader.next_frame().await.expect("clean end").is_none());
        assert_eq!(
            reader_counters.snapshot().bytes_received,
            stats.bytes_sent,
            "every byte written was read"
        );
    }

    #[tokio::test]
    async fn batches_respect_the_byte_limit_and_big_frames_go_alone() {
        let (client, _server) = tokio::io::duplex(1 << 22);
        let (queue_tx, queue_rx) = mpsc::channel(64);
        let small =
            Bytes::from(encode_frame(FrameKind::Request, 1, &[0; 83], 1 << 20).expect("fits"));
        let big =
            Bytes::from(encode_frame(FrameKind::Request, 2, &[0; 5000], 1 << 20).expect("fits"));
        for _ in 0..10 {
            queue_tx.send(small.clone()).await.expect("queued");
        }
        queue_tx.send(big).await.expect("queued");
        drop(queue_tx);
        let counters = Arc::new(TrafficCounters::default());
        // 100-byte frames, 400-byte batches: 10 small frames need 3 batches, the big one a 4th.
        let end = run_writer(
            client,
            queue_rx,
            CancellationToken::new(),
            400,
            counters.clone(),
        )
        .await;
        assert!(matches!(end, WriterEnd::Drained), "{end:?}");
        let stats = counters.snapshot();
        assert_eq!(stats.frames_sent, 11);
        assert_eq!(stats.write_batches, 4);
    }

    #[tokio::test]
    async fn catch_unwind_reports_the_panic_message() {
        let result = CatchUnwind::new(async {
            if true {
                panic!("handler exploded");
            }
        })
        .await;
        assert_eq!(result, Err(Panicked("handler exploded".to_string())));
        assert_eq!(CatchUnwind::new(async { 5 }).await, Ok(5));
    }
}
