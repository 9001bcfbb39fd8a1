//! Background work that finishes what it started when the server stops.
//!
//! The webhook and mail workers claim work with a lease (so that one node
//! sends each message). A node stopped between sending and recording would
//! keep its claim until the lease ran out, delaying a retry by up to a
//! minute or two after every restart. Instead, each batch a worker claims
//! is marked busy here; on a graceful stop no new batch is claimed and the
//! stop waits (up to `http.shutdown_timeout_secs`) for the batches in
//! progress to be sent and recorded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Drain {
    stopping: AtomicBool,
    busy: AtomicUsize,
    idle: Notify,
}

/// A batch of work in progress; dropping it marks the batch done.
pub struct Busy<'a>(&'a Drain);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Marks a batch as started, or `None` once the server is stopping
    /// (claim nothing new then).
    pub fn begin(&self) -> Option<Busy<'_>> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        let busy = Busy(self);
        if self.stopping.load(Ordering::SeqCst) {
            return None; // `busy` is dropped: the count goes back
        }
        Some(busy)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Stops new batches and waits up to `grace` for those in progress.
    /// Returns whether every batch finished.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        let waiting = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.busy.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(grace, waiting).await.is_ok()
    }
}

/// The HTTP side of a graceful stop, for nodes behind a proxy that keeps
/// connections open (nginx's upstream `keepalive`).
///
/// Closing an idle kept-alive connection races with the proxy sending the
/// next request on it; the proxy then sees an error after sending, and
/// must not send a POST again (the node may have acted on it), so the
/// client gets a 502. A stop therefore first refuses new connections
/// (which a proxy retries elsewhere, for any method: nothing was sent),
/// answers every request on the connections it has with `Connection:
/// close` (the proxy does not reuse them), and leaves idle ones for the
/// proxy to close, for a bounded time, before the server itself stops.
#[derive(Default)]
pub struct HttpDrain {
    draining: AtomicBool,
    open: AtomicUsize,
}

/// Counts one open connection until dropped (with the connection).
pub struct OpenConnection(std::sync::Arc<HttpDrain>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HttpDrain {
    /// Counts a new connection (see [`OpenConnection`]).
    pub fn opened(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenConnection(self.clone())
    }

    /// From now on every response closes its connection, and `/readyz`
    /// answers 503.
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits until no connection is open, or `grace` has passed; returns
    /// whether all were closed.
    pub async fn closed(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        while self.open_connections() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_waits_for_batches_in_progress_and_refuses_new_ones() {
        let drain = std::sync::Arc::new(Drain::default());
        let busy = drain.begin().expect("running");
        let stopper = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.stop(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stopper.is_finished(), "the stop waits for the batch");
        assert!(drain.is_stopping());
        assert!(drain.begin().is_none(), "no new batch once stopping");
        drop(busy);
        assert!(stopper.await.unwrap(), "every batch finished");
    }

    #[tokio::test]
    async fn the_http_drain_counts_open_connections() {
        let drain = std::sync::Arc::new(HttpDrain::default());
        assert!(!drain.is_draining());
        let first = drain.opened();
        let second = drain.opened();
        assert_eq!(drain.open_connections(), 2);
        drain.start();
        assert!(drain.is_draining());
        assert!(!drain.closed(Duration::from_millis(30)).await);
        drop(first);
        let waiting = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.closed(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "one is still open");
        drop(second);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_stop_gives_up_after_the_grace() {
        let drain = Drain::default();
        let _busy = drain.begin().expect("running");
        assert!(!drain.stop(Duration::from_millis(30)).await);
        let idle = Drain::default();
        assert!(idle.stop(Duration::from_millis(30)).await);
    }
}
