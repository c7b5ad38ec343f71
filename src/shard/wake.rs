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
/// after waking, so spurious wake-ups are harmless; but each costs a poll of
/// the waiter's whole future, so a waiter can name what it waits for with a
/// key (`until_key`: "the durable LSN reached mine") and `wake_through(k)`
/// wakes only the waiters whose key is at most `k`.
///
/// Registration and deregistration are O(1) (a slab of wakers with a free list),
/// because thousands of connection tasks may wait on one queue: a waiter that
/// gives up (its future is dropped, e.g. it lost a race with a socket read)
/// removes itself, so the queue never accumulates stale wakers. Waking is
/// O(waiters) and allocates nothing in steady state: the wakers taken out go
/// through a buffer the queue keeps.
#[derive(Default)]
pub struct WaitQueue {
    inner: RefCell<Slab>,
}

#[derive(Default)]
struct Slab {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Stamp of the next registration: a waiter's (index, stamp) names its
    /// entry only while the entry holds that stamp, so a handle that outlived
    /// its entry (woken, slot reused) can never touch another waiter.
    next_stamp: u64,
    /// The wakers of the wake-up in progress (empty between wake-ups; kept
    /// for its capacity).
    waking: Vec<Waker>,
}

struct Entry {
    key: u64,
    stamp: u64,
    waker: Waker,
}

impl WaitQueue {
    pub fn wake_all(&self) {
        self.wake_where(|_| true);
    }

    /// Wake the waiters registered with a key at most `reached`.
    pub fn wake_through(&self, reached: u64) {
        self.wake_where(|key| key <= reached);
    }

    fn wake_where(&self, wake: impl Fn(u64) -> bool) {
        // Take the wakers out first: a woken task may register again meanwhile.
        let mut waking = {
            let mut slab = self.inner.borrow_mut();
            if slab.entries.is_empty() {
                // The common case on the request path (an append with the
                // flusher busy, a buffer given back with nobody short).
                return;
            }
            let Slab {
                entries,
                free,
                waking,
                ..
            } = &mut *slab;
            let mut out = std::mem::take(waking);
            for (idx, entry) in entries.iter_mut().enumerate() {
                match entry.take() {
                    Some(e) if wake(e.key) => {
                        out.push(e.waker);
                        free.push(idx);
                    }
                    kept => *entry = kept,
                }
            }
            // Waking scans every entry up to the highest one in use, so
            // drop the empty ones at the end: a queue that once held many
            // waiters does not keep costing for them.
            let len = entries.len();
            while entries.last().is_some_and(Option::is_none) {
                entries.pop();
            }
            if entries.len() < len {
                let len = entries.len();
                free.retain(|&idx| idx < len);
            }
            out
        };
        for w in waking.drain(..) {
            w.wake();
        }
        let mut slab = self.inner.borrow_mut();
        if slab.waking.capacity() < waking.capacity() {
            slab.waking = waking;
        }
    }

    /// Number of registered waiters (diagnostics and tests).
    pub fn waiters(&self) -> usize {
        self.inner
            .borrow()
            .entries
            .iter()
            .filter(|w| w.is_some())
            .count()
    }

    /// Register `waker` under `key`, reusing `slot` if it is still this
    /// waiter's.
    fn register(&self, slot: &mut Option<(usize, u64)>, key: u64, waker: &Waker) {
        let mut slab = self.inner.borrow_mut();
        if let Some((idx, stamp)) = *slot {
            if let Some(Some(e)) = slab.entries.get_mut(idx) {
                if e.stamp == stamp {
                    if !e.waker.will_wake(waker) {
                        e.waker = waker.clone();
                    }
                    return;
                }
            }
        }
        let stamp = slab.next_stamp;
        slab.next_stamp += 1;
        let entry = Some(Entry {
            key,
            stamp,
            waker: waker.clone(),
        });
        let idx = match slab.free.pop() {
            Some(idx) => {
                slab.entries[idx] = entry;
                idx
            }
            None => {
                slab.entries.push(entry);
                slab.entries.len() - 1
            }
        };
        *slot = Some((idx, stamp));
    }

    fn deregister(&self, slot: Option<(usize, u64)>) {
        let Some((idx, stamp)) = slot else {
            return;
        };
        let mut slab = self.inner.borrow_mut();
        if let Some(entry) = slab.entries.get_mut(idx) {
            if entry.as_ref().is_some_and(|e| e.stamp == stamp) {
                *entry = None;
                slab.free.push(idx);
            }
        }
    }

    /// Resolve when `ready()` returns Some, re-checking after every wake-up.
    pub fn until<'a, T>(
        &'a self,
        ready: impl FnMut() -> Option<T> + 'a,
    ) -> Until<'a, T, impl FnMut() -> Option<T> + 'a> {
        self.until_key(0, ready)
    }

    /// As `until`, but `wake_through(k)` wakes this waiter only when
    /// `key <= k` (`wake_all` always does).
    pub fn until_key<'a, T>(
        &'a self,
        key: u64,
        ready: impl FnMut() -> Option<T> + 'a,
    ) -> Until<'a, T, impl FnMut() -> Option<T> + 'a> {
        Until {
            queue: self,
            key,
            ready,
            slot: None,
        }
    }
}

pub struct Until<'a, T, F: FnMut() -> Option<T>> {
    queue: &'a WaitQueue,
    key: u64,
    ready: F,
    slot: Option<(usize, u64)>,
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
        this.queue.register(&mut this.slot, this.key, cx.waker());
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

    /// `wake_through` wakes exactly the waiters whose key is reached; the
    /// others are not polled (a poll counter per waiter says so), and a
    /// waiter woken and re-registered keeps working.
    #[test]
    fn wake_through_wakes_only_the_reached_keys() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let q = Rc::new(WaitQueue::default());
            let level = Rc::new(Cell::new(0u64));
            let polls: Rc<Vec<Cell<u32>>> = Rc::new((0..6).map(|_| Cell::new(0)).collect());
            let mut tasks = Vec::new();
            for key in 1..=6u64 {
                let (q, level, polls) = (q.clone(), level.clone(), polls.clone());
                tasks.push(glommio::spawn_local(async move {
                    q.until_key(key, || {
                        polls[key as usize - 1].set(polls[key as usize - 1].get() + 1);
                        (level.get() >= key).then_some(key)
                    })
                    .await
                }));
            }
            for _ in 0..3 {
                futures_lite::future::yield_now().await;
            }
            assert_eq!(q.waiters(), 6);
            let before: Vec<u32> = polls.iter().map(Cell::get).collect();
            level.set(3);
            q.wake_through(3);
            assert_eq!(q.waiters(), 3, "keys 1..=3 were taken out");
            for _ in 0..3 {
                futures_lite::future::yield_now().await;
            }
            for (i, p) in polls.iter().enumerate() {
                let extra = p.get() - before[i];
                assert_eq!(
                    extra,
                    u32::from(i < 3),
                    "waiter {} polled {extra} more times",
                    i + 1
                );
            }
            level.set(6);
            q.wake_all();
            let mut done = Vec::new();
            for t in tasks {
                done.push(t.await);
            }
            assert_eq!(done, vec![1, 2, 3, 4, 5, 6]);
            assert_eq!(q.waiters(), 0);
        });
    }

    /// A handle whose entry was woken and reused by another waiter must not
    /// remove that waiter when it is dropped.
    #[test]
    fn a_stale_handle_leaves_the_new_waiter_alone() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let q = WaitQueue::default();
            let mut first = Box::pin(q.until(|| None::<u32>));
            assert_eq!(futures_lite::future::poll_once(&mut first).await, None);
            q.wake_all();
            let mut second = Box::pin(q.until(|| None::<u32>));
            assert_eq!(futures_lite::future::poll_once(&mut second).await, None);
            assert_eq!(q.waiters(), 1);
            drop(first);
            assert_eq!(
                q.waiters(),
                1,
                "the stale handle removed someone else's entry"
            );
            drop(second);
            assert_eq!(q.waiters(), 0);
        });
    }
}
