//! Background refreshes (RFC 5861 stale-while-revalidate) on a bounded pool of workers.
//!
//! Jobs arrive on a bounded channel. When it is full the refresh is dropped, never queued without
//! bound and never waited for: the client has already been served the stale entry, and the next
//! request after the entry goes out of its window will revalidate in the foreground anyway.

use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One refresh, ready to run.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The handle requests submit refreshes through.
#[derive(Debug, Clone)]
pub struct Revalidator {
    tx: async_channel::Sender<Job>,
}

/// The workers, kept by whoever shuts the server down.
#[derive(Debug)]
pub struct Workers {
    set: JoinSet<()>,
    stop: CancellationToken,
}

impl Revalidator {
    /// Starts `workers` workers fed by a channel of `queue` jobs.
    pub fn start(workers: usize, queue: usize) -> (Revalidator, Workers) {
        // A multi-consumer channel: every worker waits on it directly, and the next job goes to
        // whichever is free, with no lock shared between them.
        let (tx, rx) = async_channel::bounded::<Job>(queue.max(1));
        let mut set = JoinSet::new();
        let stop = CancellationToken::new();
        for _ in 0..workers.max(1) {
            let rx = rx.clone();
            let stop = stop.clone();
            set.spawn(async move {
                loop {
                    // `biased`: once stopped, a worker takes no further job even if one is queued.
                    let job = tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        job = rx.recv() => job,
                    };
                    match job {
                        Ok(job) => job.await,
                        Err(_) => break, // every sender is gone: shutting down
                    }
                }
            });
        }
        (Revalidator { tx }, Workers { set, stop })
    }

    /// Queues a job; false when the queue is full (the job is dropped) or the pool is shut down.
    pub fn try_submit(&self, job: Job) -> bool {
        self.tx.try_send(job).is_ok()
    }
}

impl Workers {
    /// Waits for the workers to finish their current and queued jobs. Call after every
    /// [`Revalidator`] handle is dropped, or it waits for them.
    pub async fn drain(mut self) {
        while self.set.join_next().await.is_some() {}
    }

    /// Lets each worker finish the job it is running, then stops it; queued jobs are dropped
    /// (they are refreshes of entries already served stale, so losing them costs a later
    /// foreground revalidation, nothing more). This is what a shutdown wants: it does not wait
    /// for a queue that requests may still be filling.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.set.join_next().await.is_some() {}
    }

    /// Stops the workers at once, abandoning their jobs.
    pub fn abort(mut self) {
        self.set.abort_all();
    }
}
