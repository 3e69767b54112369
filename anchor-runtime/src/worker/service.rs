//! Background services and the one loop they all run in.
//!
//! A periodic service of the worker (the renewer, the fencer, the start recorder, the
//! rescuer, the unregistered-name note, the heartbeat, the cron scheduler, the pruner) is a
//! small type holding its own settings, taken from `WorkerConfig` when the worker starts,
//! and only the handles it uses. It implements [`Service`]: a name, how it is paced and what
//! one round does. [`spawn`] runs it in the loop every service shares:
//!
//! - run a round;
//! - on success wait what the round asked for (by default the service's interval, with
//!   jitter if it has some), cut short by the service's wake-up, if it has one;
//! - on error log a warning naming the worker and the service, and wait the next step of a
//!   [`Backoff`] (never longer than the interval), so an outage is neither hammered nor
//!   waited out a whole interval;
//! - return as soon as its [`Stop`] is set (checked before every round and during every
//!   wait; a round itself is bounded by its statements' time limits).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::Backoff;
use crate::error::Result;

/// A background service of the worker: what one round does and how rounds are paced.
pub(crate) trait Service: Send + 'static {
    /// The service's name in logs (`service = …`).
    const NAME: &'static str;

    /// How the rounds are paced; read once, when the service starts.
    fn pace(&self) -> Pace;

    /// One round. An error is logged with [`Service::failure`] and retried with backoff.
    fn round(&mut self) -> impl Future<Output = Result<Next>> + Send;

    /// The message of the warning a failed round logs, e.g. "renewing leases failed".
    fn failure(&self) -> &'static str;
}

/// When a service's rounds run.
pub(crate) struct Pace {
    interval: Duration,
    jitter: bool,
    first_at_once: bool,
    wake: Option<Arc<Notify>>,
}

impl Pace {
    /// A round at once, then one every `interval`.
    pub(crate) fn every(interval: Duration) -> Pace {
        Pace {
            interval,
            jitter: false,
            first_at_once: true,
            wake: None,
        }
    }

    /// Each wait of an interval is up to half an interval longer, at random, so that the
    /// workers of one deployment do not act in lockstep.
    pub(crate) fn jittered(mut self) -> Pace {
        self.jitter = true;
        self
    }

    /// The first round comes after one interval, not at once.
    pub(crate) fn first_after_interval(mut self) -> Pace {
        self.first_at_once = false;
        self
    }

    /// A notification on `wake` ends the wait after a successful round early.
    pub(crate) fn woken_by(mut self, wake: Arc<Notify>) -> Pace {
        self.wake = Some(wake);
        self
    }

    /// One wait of an interval.
    fn interval(&self) -> Duration {
        if self.jitter {
            self.interval + self.interval.mul_f64(0.5 * rand::random::<f64>())
        } else {
            self.interval
        }
    }
}

/// What a successful round asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait the service's interval.
    Interval,
    /// Wait this long instead.
    After(Duration),
    /// Run the next round at once.
    Now,
}

/// When a service stops: on the worker's stop signal, or never (a service the shutdown
/// aborts once it is no longer needed, such as the renewer that keeps the leases of runs
/// still going).
pub(crate) struct Stop(Option<watch::Receiver<bool>>);

impl Stop {
    /// Stops when `stop` is set (or its sender is gone with the worker).
    pub(crate) fn on(stop: watch::Receiver<bool>) -> Stop {
        Stop(Some(stop))
    }

    /// Never stops by itself; the service runs until its task is aborted.
    pub(crate) fn never() -> Stop {
        Stop(None)
    }

    fn is_set(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|stop| *stop.borrow() || stop.has_changed().is_err())
    }

    /// Returns once the stop is set; never, for [`Stop::never`].
    async fn wait(&mut self) {
        match self.0.as_mut() {
            Some(stop) => {
                let _ = stop.wait_for(|stopping| *stopping).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Spawns `service` on the current runtime, in the loop described in the module docs;
/// `worker` names this worker in its logs.
pub(crate) fn spawn<S: Service>(service: S, worker: &str, stop: Stop) -> JoinHandle<()> {
    tokio::spawn(run(service, worker.to_string(), stop))
}

async fn run<S: Service>(mut service: S, worker: String, mut stop: Stop) {
    let pace = service.pace();
    let mut backoff = Backoff::new();
    if !pace.first_at_once {
        pause(pace.interval(), None, &mut stop).await;
    }
    while !stop.is_set() {
        match service.round().await {
            Ok(next) => {
                backoff.reset();
                let delay = match next {
                    Next::Interval => pace.interval(),
                    Next::After(delay) => delay,
                    Next::Now => continue,
                };
                pause(delay, pace.wake.as_deref(), &mut stop).await;
            }
            Err(err) => {
                let delay = backoff.next_delay().min(pace.interval);
                tracing::warn!(
                    worker = %worker,
                    service = S::NAME,
                    error = %err,
                    retry_in = ?delay,
                    "{}",
                    service.failure()
                );
                pause(delay, None, &mut stop).await;
            }
        }
    }
    tracing::debug!(worker = %worker, service = S::NAME, "{} stopped", S::NAME);
}

/// Waits `delay`, or until `wake` is notified or `stop` is set.
async fn pause(delay: Duration, wake: Option<&Notify>, stop: &mut Stop) {
    let woken = async {
        match wake {
            Some(wake) => wake.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = woken => {}
        _ = stop.wait() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::{Error, ErrorKind};

    /// Counts its rounds; fails the first `failures` of them.
    struct Counting {
        rounds: Arc<AtomicUsize>,
        failures: usize,
        first_after_interval: bool,
        wake: Option<Arc<Notify>>,
    }

    impl Service for Counting {
        const NAME: &'static str = "counting";

        fn pace(&self) -> Pace {
            let mut pace = Pace::every(Duration::from_secs(10));
            if self.first_after_interval {
                pace = pace.first_after_interval();
            }
            match &self.wake {
                Some(wake) => pace.woken_by(wake.clone()),
                None => pace,
            }
        }

        async fn round(&mut self) -> Result<Next> {
            let n = self.rounds.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                return Err(Error::new(ErrorKind::Database, "down"));
            }
            Ok(Next::Interval)
        }

        fn failure(&self) -> &'static str {
            "counting failed"
        }
    }

    fn counting(failures: usize) -> (Counting, Arc<AtomicUsize>) {
        let rounds = Arc::new(AtomicUsize::new(0));
        let service = Counting {
            rounds: rounds.clone(),
            failures,
            first_after_interval: false,
            wake: None,
        };
        (service, rounds)
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_come_every_interval_and_stop_on_the_signal() {
        let (service, rounds) = counting(0);
        let (stop, rx) = watch::channel(false);
        let task = spawn(service, "w", Stop::on(rx));
        tokio::time::sleep(Duration::from_secs(25)).await;
        // At 0, 10 and 20 s.
        assert_eq!(rounds.load(Ordering::SeqCst), 3);
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("the service stops during its wait")
            .unwrap();
        assert_eq!(rounds.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_round_is_retried_with_backoff_within_the_interval() {
        let (service, rounds) = counting(3);
        let task = spawn(service, "w", Stop::never());
        // Three failures back off at most 100 ms, 200 ms and 400 ms: the fourth round,
        // the first to succeed, comes within a second, not 30 s later.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 4);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 4, "then the interval again");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_round_may_wait_an_interval_and_a_wake_up_cuts_a_wait_short() {
        let wake = Arc::new(Notify::new());
        let (mut service, rounds) = counting(0);
        service.first_after_interval = true;
        service.wake = Some(wake.clone());
        let task = spawn(service, "w", Stop::never());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 0, "not before one interval");
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        task.abort();
    }

    #[test]
    fn jitter_lengthens_the_interval_by_at_most_a_half() {
        for _ in 0..100 {
            let wait = Pace::every(Duration::from_secs(10)).jittered().interval();
            assert!(wait >= Duration::from_secs(10) && wait <= Duration::from_secs(15));
        }
    }
}
