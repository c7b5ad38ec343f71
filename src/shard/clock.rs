//! Time, as the shard sees it. Production uses glommio timers; the simulator
//! supplies a clock it advances itself, so that runs replay exactly.

#![allow(async_fn_in_trait)]

use std::time::{Duration, Instant};

/// The wall clock (CLOCK_REALTIME) in unix milliseconds: the clock key
/// expiries are judged by (`core::expiry`). Read once per operation batch so
/// that a batch sees one instant. A clock before the epoch reads as 0.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub trait Clock: Clone + 'static {
    /// Monotonic time since an arbitrary origin.
    fn now(&self) -> Duration;
    async fn sleep(&self, d: Duration);
}

#[derive(Clone)]
pub struct GlommioClock {
    origin: Instant,
}

impl Default for GlommioClock {
    fn default() -> Self {
        GlommioClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for GlommioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn sleep(&self, d: Duration) {
        glommio::timer::sleep(d).await
    }
}

/// Simulated time for the deterministic simulation: it stands still until the
/// scheduler, finding no task ready, advances it to the earliest sleeper.
#[derive(Clone, Default)]
pub struct SimClock {
    now: std::rc::Rc<std::cell::Cell<Duration>>,
    timers: std::rc::Rc<
        std::cell::RefCell<std::collections::BTreeMap<(Duration, u64), std::task::Waker>>,
    >,
    seq: std::rc::Rc<std::cell::Cell<u64>>,
}

impl SimClock {
    /// Jump to the earliest pending timer and wake it; false if there is none.
    pub fn advance(&self) -> bool {
        let first = self.timers.borrow_mut().pop_first();
        match first {
            Some(((at, _), waker)) => {
                self.now.set(self.now.get().max(at));
                waker.wake();
                true
            }
            None => false,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        self.now.get()
    }

    async fn sleep(&self, d: Duration) {
        let at = self.now.get() + d;
        std::future::poll_fn(|cx| {
            if self.now.get() >= at {
                return std::task::Poll::Ready(());
            }
            let seq = self.seq.get();
            self.seq.set(seq + 1);
            self.timers
                .borrow_mut()
                .insert((at, seq), cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}
