//! Time, as the shard sees it. Production uses glommio timers; the simulator
//! supplies a clock it advances itself, so that runs replay exactly.

#![allow(async_fn_in_trait)]

use std::time::{Duration, Instant};

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
