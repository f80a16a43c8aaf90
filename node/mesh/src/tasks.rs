//! Task helpers shared by every long-lived part of the mesh, the node and the bridge: a named
//! group of tokio tasks sharing one cancellation token with bounded shutdown ([`TaskGroup`]),
//! the periodic loop ([`Ticker`]), the one shutdown bound ([`SHUTDOWN_GRACE`]) and the signal
//! watch both binaries stop on ([`shutdown_signal`]).
//!
//! Discovery sources and the NATS parts each run as a few long-lived tasks. They live in one
//! [`TaskGroup`] per service so that no task is detached: a task that returns an error is logged
//! at once, a panic is surfaced by [`TaskGroup::next_exit`] or at [`TaskGroup::shutdown`], and
//! shutdown waits a bounded time before aborting whatever is still running.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long each part of a daemon (a task group, the transport, the HTTP listener) may take to
/// stop before it is aborted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A periodic wake-up that ends with a cancellation token: the one interval loop of the mesh
/// and the daemons. Late ticks are delayed, never bunched.
///
/// ```ignore
/// let mut ticker = Ticker::now_and_every(period, cancel);
/// while ticker.tick().await {
///     if ticker.run(work()).await.is_none() { break } // cancelled mid-work
/// }
/// ```
#[derive(Debug)]
pub struct Ticker {
    interval: tokio::time::Interval,
    cancel: CancellationToken,
}

impl Ticker {
    /// Ticks at once, then every `period`.
    pub fn now_and_every(period: Duration, cancel: CancellationToken) -> Self {
        Self::starting_at(tokio::time::Instant::now(), period, cancel)
    }

    /// Ticks after one `period`, then every `period`.
    pub fn every(period: Duration, cancel: CancellationToken) -> Self {
        Self::starting_at(tokio::time::Instant::now() + period, period, cancel)
    }

    fn starting_at(
        start: tokio::time::Instant,
        period: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let mut interval = tokio::time::interval_at(start, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { interval, cancel }
    }

    /// Waits for the next tick; `false` once cancelled (cancellation wins over a due tick).
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }

    /// Runs `work` unless cancelled first; `None` when cancelled.
    pub async fn run<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => None,
            out = work => Some(out),
        }
    }
}

/// How one task of a [`TaskGroup`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskExit {
    /// The task returned normally (after cancellation, or because its source is disabled).
    Finished(&'static str),
    /// The task returned an error (already logged).
    Failed(&'static str, String),
    /// The task panicked or was aborted.
    Crashed(String),
}

/// What [`TaskGroup::shutdown`] observed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tasks that ended (cleanly or with an error) within the timeout.
    pub joined: usize,
    /// Tasks that panicked.
    pub crashed: usize,
    /// Tasks still running at the timeout, then aborted.
    pub aborted: usize,
}

/// Tasks of one service, cancelled together.
#[derive(Debug)]
pub struct TaskGroup {
    name: &'static str,
    cancel: CancellationToken,
    set: JoinSet<TaskExit>,
}

impl TaskGroup {
    /// An empty group whose token is a child of `parent` (cancelling `parent` stops the group).
    pub fn new(name: &'static str, parent: &CancellationToken) -> Self {
        Self {
            name,
            cancel: parent.child_token(),
            set: JoinSet::new(),
        }
    }

    /// The group's cancellation token; tasks select on `cancelled()` first.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Number of tasks not yet joined.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether every task has been joined.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Runs `fut` in the group; an `Err` result is logged with the task's name.
    pub fn spawn<F, E>(&mut self, task: &'static str, fut: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let group = self.name;
        self.set.spawn(async move {
            match fut.await {
                Ok(()) => {
                    tracing::debug!(group, task, "task finished");
                    TaskExit::Finished(task)
                }
                Err(e) => {
                    tracing::error!(group, task, error = %e, "task failed");
                    TaskExit::Failed(task, e.to_string())
                }
            }
        });
    }

    /// Waits for the next task to end; `None` when the group is empty. Cancel-safe.
    pub async fn next_exit(&mut self) -> Option<TaskExit> {
        let joined = self.set.join_next().await?;
        Some(joined.unwrap_or_else(|e| {
            tracing::error!(group = self.name, error = %e, "task crashed");
            TaskExit::Crashed(e.to_string())
        }))
    }

    /// Cancels every task, waits up to `timeout` for them, then aborts the rest.
    pub async fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        self.cancel.cancel();
        let mut report = ShutdownReport::default();
        let drained = tokio::time::timeout(timeout, async {
            while let Some(exit) = self.next_exit().await {
                match exit {
                    TaskExit::Crashed(_) => report.crashed += 1,
                    _ => report.joined += 1,
                }
            }
        })
        .await;
        if drained.is_err() {
            report.aborted = self.set.len();
            tracing::warn!(
                group = self.name,
                aborted = report.aborted,
                "shutdown timed out"
            );
            self.set.abort_all();
            while self.set.join_next().await.is_some() {}
        }
        report
    }
}

/// Watches SIGINT and SIGTERM from the moment it is called (inside the runtime), not from the
/// first poll: a signal that arrives while start-up runs is not lost and does not kill the
/// process. The future completes on the first of them.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let watch = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch {name}; it will not stop the process cleanly");
            None
        }
    };
    let (mut int, mut term) = (
        watch(SignalKind::interrupt(), "SIGINT"),
        watch(SignalKind::terminate(), "SIGTERM"),
    );
    async move {
        tokio::select! {
            _ = next(&mut int) => {}
            _ = next(&mut term) => {}
        }
    }
}

/// The next delivery of a watched signal; never, when it could not be watched.
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_joins_cooperative_tasks_and_aborts_stuck_ones() {
        let root = CancellationToken::new();
        let mut group = TaskGroup::new("test", &root);
        let token = group.token();
        group.spawn("polite", async move {
            token.cancelled().await;
            Ok::<(), String>(())
        });
        group.spawn("stuck", async {
            std::future::pending::<()>().await;
            Ok::<(), String>(())
        });
        group.spawn("failing", async { Err::<(), _>("boom".to_owned()) });
        let report = group.shutdown(Duration::from_millis(200)).await;
        assert_eq!(
            report,
            ShutdownReport {
                joined: 2,
                crashed: 0,
                aborted: 1
            }
        );
    }

    #[tokio::test]
    async fn panics_are_reported_not_lost() {
        let root = CancellationToken::new();
        let mut group = TaskGroup::new("test", &root);
        let token = group.token();
        group.spawn("panicky", async move {
            if token.is_cancelled() {
                return Ok::<(), String>(());
            }
            panic!("deliberate");
        });
        assert!(matches!(
            group.next_exit().await,
            Some(TaskExit::Crashed(_))
        ));
        assert!(group.is_empty());
    }
}
