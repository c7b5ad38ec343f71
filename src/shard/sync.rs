//! Wake-ups between tasks of one shard thread. Not `Send`, no atomics: everything
//! here lives and dies on the core that created it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Tasks waiting for "something changed". Waiters re-check their own condition
/// after waking, so spurious wake-ups are harmless.
#[derive(Default)]
pub struct WaitQueue {
    wakers: RefCell<Vec<Waker>>,
}

impl WaitQueue {
    pub fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    pub fn wake_all(&self) {
        // Swap out first: a woken task may register again while we iterate.
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Resolve when `ready()` returns Some, re-checking after every wake-up.
    pub fn until<'a, T>(
        &'a self,
        ready: impl FnMut() -> Option<T> + 'a,
    ) -> Until<'a, T, impl FnMut() -> Option<T> + 'a> {
        Until { queue: self, ready }
    }
}

pub struct Until<'a, T, F: FnMut() -> Option<T>> {
    queue: &'a WaitQueue,
    ready: F,
}

impl<T, F: FnMut() -> Option<T> + Unpin> Future for Until<'_, T, F> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(v) = (self.ready)() {
            return Poll::Ready(v);
        }
        self.queue.register(cx.waker());
        Poll::Pending
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
}
