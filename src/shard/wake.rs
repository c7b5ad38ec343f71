//! Wake-ups between tasks of one shard thread. Not `Send`, no atomics: everything
//! here lives and dies on the core that created it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

thread_local! {
    static SIMULATED: Cell<bool> = const { Cell::new(false) };
}

/// This thread runs the deterministic simulation: long-running work yields
/// with a plain `yield_now` (reproducible) instead of glommio's time-slice
/// check (which depends on the wall clock and needs a glommio executor).
pub fn set_simulated(on: bool) {
    SIMULATED.with(|s| s.set(on));
}

/// Let other tasks run: in production only if this task's time slice is used up.
pub async fn yield_point() {
    if SIMULATED.with(Cell::get) {
        futures_lite::future::yield_now().await;
    } else {
        glommio::yield_if_needed().await;
    }
}

/// Sleep `d` on glommio's timer; in the simulation, never wake. For
/// deadlines that guard against a stuck peer (a backup's pause): simulated
/// time has no wall clock to run out, and every simulated step completes.
pub async fn sleep_unless_simulated(d: std::time::Duration) {
    if SIMULATED.with(Cell::get) {
        std::future::pending::<()>().await
    } else {
        glommio::timer::sleep(d).await
    }
}

/// A boxed future borrowed for `'a`.
pub type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// Run futures concurrently on this task and collect their outputs in order:
/// the shard's ring keeps all their reads in flight at once.
pub async fn join_all<T>(futs: Vec<Boxed<'_, T>>) -> Vec<T> {
    let mut slots: Vec<(Option<Boxed<'_, T>>, Option<T>)> =
        futs.into_iter().map(|f| (Some(f), None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in slots.iter_mut() {
            if let Some(f) = fut {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *fut = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().filter_map(|(_, out)| out).collect()
}

/// Tasks waiting for "something changed". Waiters re-check their own condition
/// after waking, so spurious wake-ups are harmless.
///
/// Registration and deregistration are O(1) (a slab of wakers with a free list),
/// because thousands of connection tasks may wait on one queue: a waiter that
/// gives up (its future is dropped, e.g. it lost a race with a socket read)
/// removes itself, so the queue never accumulates stale wakers.
#[derive(Default)]
pub struct WaitQueue {
    inner: RefCell<Slab>,
}

#[derive(Default)]
struct Slab {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
    /// Bumped by every `wake_all`; a slot index is valid only in its generation.
    generation: u64,
}

impl WaitQueue {
    pub fn wake_all(&self) {
        // Take the wakers out first: a woken task may register again meanwhile.
        let wakers = {
            let mut slab = self.inner.borrow_mut();
            slab.generation += 1;
            slab.free.clear();
            std::mem::take(&mut slab.wakers)
        };
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// Number of registered waiters (diagnostics and tests).
    pub fn waiters(&self) -> usize {
        self.inner
            .borrow()
            .wakers
            .iter()
            .filter(|w| w.is_some())
            .count()
    }

    /// Register `waker`, reusing `slot` if it is still valid.
    fn register(&self, slot: &mut Option<(u64, usize)>, waker: &Waker) {
        let mut slab = self.inner.borrow_mut();
        if let Some((generation, idx)) = *slot {
            if generation == slab.generation {
                match &mut slab.wakers[idx] {
                    Some(w) if w.will_wake(waker) => {}
                    entry => *entry = Some(waker.clone()),
                }
                return;
            }
        }
        let idx = match slab.free.pop() {
            Some(idx) => {
                slab.wakers[idx] = Some(waker.clone());
                idx
            }
            None => {
                slab.wakers.push(Some(waker.clone()));
                slab.wakers.len() - 1
            }
        };
        *slot = Some((slab.generation, idx));
    }

    fn deregister(&self, slot: Option<(u64, usize)>) {
        let Some((generation, idx)) = slot else {
            return;
        };
        let mut slab = self.inner.borrow_mut();
        if generation == slab.generation && slab.wakers[idx].take().is_some() {
            slab.free.push(idx);
        }
    }

    /// Resolve when `ready()` returns Some, re-checking after every wake-up.
    pub fn until<'a, T>(
        &'a self,
        ready: impl FnMut() -> Option<T> + 'a,
    ) -> Until<'a, T, impl FnMut() -> Option<T> + 'a> {
        Until {
            queue: self,
            ready,
            slot: None,
        }
    }
}

pub struct Until<'a, T, F: FnMut() -> Option<T>> {
    queue: &'a WaitQueue,
    ready: F,
    slot: Option<(u64, usize)>,
}

impl<T, F: FnMut() -> Option<T> + Unpin> Future for Until<'_, T, F> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(v) = (self.ready)() {
            let slot = self.slot.take();
            self.queue.deregister(slot);
            return Poll::Ready(v);
        }
        let this = &mut *self;
        this.queue.register(&mut this.slot, cx.waker());
        Poll::Pending
    }
}

impl<T, F: FnMut() -> Option<T>> Drop for Until<'_, T, F> {
    fn drop(&mut self) {
        self.queue.deregister(self.slot.take());
    }
}

/// A flag that is set once and wakes everybody waiting for it.
#[derive(Default)]
pub struct Event {
    set: Cell<bool>,
    waiters: WaitQueue,
}

impl Event {
    pub fn set(&self) {
        if !self.set.replace(true) {
            self.waiters.wake_all();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub async fn wait(&self) {
        self.waiters.until(|| self.set.get().then_some(())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn event_wakes_waiter() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let ev = Rc::new(Event::default());
            let ev2 = ev.clone();
            let waiter = glommio::spawn_local(async move {
                ev2.wait().await;
                7
            });
            glommio::yield_if_needed().await;
            assert!(!ev.is_set());
            ev.set();
            assert_eq!(waiter.await, 7);
        });
    }

    #[test]
    fn abandoned_waiters_do_not_accumulate() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let q = WaitQueue::default();
            for i in 0..1000 {
                // A waiter that loses a race (like shutdown losing to a socket read)
                // is dropped after registering.
                let mut lost = Box::pin(q.until(|| None::<u32>));
                assert_eq!(futures_lite::future::poll_once(&mut lost).await, None);
                assert_eq!(futures_lite::future::poll_once(&mut lost).await, None);
                assert_eq!(q.waiters(), 1);
                drop(lost);
                if i % 100 == 0 {
                    q.wake_all();
                }
            }
            assert_eq!(q.waiters(), 0, "dropped waiters must deregister");
        });
    }
}
