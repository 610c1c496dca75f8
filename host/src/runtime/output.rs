//! Guest stdout and stderr, forwarded line by line to the worker's log.
//!
//! Writes are handled synchronously inside the guest's call, so a panic message that a Rust
//! guest prints just before it traps is already captured when the trap is classified. Each stream
//! logs at most `MAX_LOGGED_BYTES` per attempt; the rest is counted and reported once.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of one stream logged per attempt; later output is dropped and counted.
pub const MAX_LOGGED_BYTES: usize = 1024 * 1024;
/// Longest logged line; a longer line is logged in pieces of this size.
const MAX_LINE_BYTES: usize = 8 * 1024;
/// Bytes of the latest output kept for error messages (a guest's panic message).
const TAIL_BYTES: usize = 4 * 1024;
/// Largest write the guest may issue at once.
const WRITE_BUDGET: usize = 64 * 1024;

/// Guest output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Ids attached to every logged line.
#[derive(Debug, Clone, Default)]
pub struct OutputLabels {
    pub plugin: String,
    pub job_id: String,
    pub run_id: String,
    pub attempt: u32,
}

/// One guest output stream. Clones share the buffer.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<Buffer>>,
}

#[derive(Debug)]
struct Buffer {
    stream: Stream,
    labels: OutputLabels,
    line: Vec<u8>,
    logged: usize,
    dropped: usize,
    tail: VecDeque<u8>,
}

impl GuestOutput {
    pub fn new(stream: Stream, labels: OutputLabels) -> Self {
        GuestOutput {
            inner: Arc::new(Mutex::new(Buffer {
                stream,
                labels,
                line: Vec::new(),
                logged: 0,
                dropped: 0,
                tail: VecDeque::with_capacity(TAIL_BYTES),
            })),
        }
    }

    /// Logs a pending partial line and reports dropped output. Call once the attempt ends.
    pub fn finish(&self) {
        let mut buffer = self.lock();
        buffer.flush_line();
        if buffer.dropped > 0 {
            let labels = &buffer.labels;
            tracing::warn!(
                plugin = %labels.plugin,
                job_id = %labels.job_id,
                run_id = %labels.run_id,
                attempt = labels.attempt,
                stream = buffer.stream.as_str(),
                dropped_bytes = buffer.dropped,
                limit_bytes = MAX_LOGGED_BYTES,
                "plugin output over the per-attempt log limit was dropped"
            );
            buffer.dropped = 0;
        }
    }

    /// Returns the latest output, up to 4 KiB, as lossy UTF-8.
    pub fn tail(&self) -> String {
        let buffer = self.lock();
        let (front, back) = buffer.tail.as_slices();
        let mut bytes = Vec::with_capacity(front.len() + back.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn write_bytes(&self, bytes: &[u8]) {
        self.lock().push(bytes);
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A panic while logging leaves the buffer usable, so a poisoned lock is taken over.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Buffer {
    fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.tail.len() == TAIL_BYTES {
                self.tail.pop_front();
            }
            self.tail.push_back(byte);
        }

        let mut rest = bytes;
        while !rest.is_empty() {
            if self.logged >= MAX_LOGGED_BYTES {
                self.dropped += rest.len();
                self.line.clear();
                return;
            }
            match rest.iter().position(|&byte| byte == b'\n') {
                Some(end) => {
                    self.append(&rest[..end]);
                    self.flush_line();
                    rest = &rest[end + 1..];
                }
                None => {
                    self.append(rest);
                    rest = &[];
                }
            }
        }
    }

    fn append(&mut self, mut bytes: &[u8]) {
        while self.line.len() + bytes.len() > MAX_LINE_BYTES {
            let room = MAX_LINE_BYTES - self.line.len();
            self.line.extend_from_slice(&bytes[..room]);
            self.flush_line();
            bytes = &bytes[room..];
        }
        self.line.extend_from_slice(bytes);
    }

    fn flush_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches('\r');
        let labels = &self.labels;
        match self.stream {
            Stream::Stdout => tracing::info!(
                plugin = %labels.plugin,
                job_id = %labels.job_id,
                run_id = %labels.run_id,
                attempt = labels.attempt,
                stream = "stdout",
                "{text}"
            ),
            Stream::Stderr => tracing::warn!(
                plugin = %labels.plugin,
                job_id = %labels.job_id,
                run_id = %labels.run_id,
                attempt = labels.attempt,
                stream = "stderr",
                "{text}"
            ),
        }
        self.logged += self.line.len() + 1;
        self.line.clear();
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bytes(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_latest_bytes() {
        let output = GuestOutput::new(Stream::Stderr, OutputLabels::default());
        output.write_bytes(&vec![b'a'; TAIL_BYTES]);
        output.write_bytes(b"panicked at src/lib.rs: boom\n");
        let tail = output.tail();
        assert_eq!(tail.len(), TAIL_BYTES);
        assert!(tail.ends_with("panicked at src/lib.rs: boom\n"), "{tail}");
    }

    #[test]
    fn output_over_the_limit_is_counted_not_logged() {
        let output = GuestOutput::new(Stream::Stdout, OutputLabels::default());
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        for _ in 0..(MAX_LOGGED_BYTES / line.len()) + 10 {
            output.write_bytes(&line);
        }
        let buffer = output.lock();
        assert!(buffer.logged >= MAX_LOGGED_BYTES);
        assert!(buffer.logged < MAX_LOGGED_BYTES + line.len());
        assert!(buffer.dropped >= 9 * line.len(), "{}", buffer.dropped);
    }

    #[test]
    fn long_line_is_split() {
        let output = GuestOutput::new(Stream::Stdout, OutputLabels::default());
        output.write_bytes(&vec![b'y'; MAX_LINE_BYTES * 2 + 10]);
        assert_eq!(output.lock().line.len(), 10);
        assert_eq!(output.lock().logged, 2 * (MAX_LINE_BYTES + 1));
    }
}
