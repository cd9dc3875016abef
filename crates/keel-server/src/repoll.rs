//! A connection's future polled again at once when it wakes itself while
//! being polled.
//!
//! hyper's HTTP/1 server reads a request's body on the connection's own
//! task: the handler (Keel reads the whole body before it routes) polls the
//! body channel, and the channel wakes its sender, which is the connection's
//! dispatcher, that is, the very task being polled. Tokio treats a task woken
//! during its own poll as a yield: it goes to the back of the run queue, and
//! the scheduler wakes another worker thread (a `futex` call) to come and
//! steal it. That was one yield and one cross-thread wake-up per request,
//! and under load each request waited its turn in the run queue once more.
//! A pass-through forwarder does not pay it, because there the body is read
//! by the upstream connection's task.
//!
//! [`Repoll`] gives the connection a waker of its own. A wake that arrives
//! while the connection is being polled is remembered and answered by
//! polling it again straight away, without the scheduler; a wake at any
//! other time goes to the task's waker as usual. At most
//! [`MAX_REPOLLS`] polls run back to back; past them the task yields as it
//! would have, so a busy connection still lets others run (and an exhausted
//! cooperative budget, which also wakes the task, ends the loop).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Most polls of the inner future in one poll of [`Repoll`].
pub const MAX_REPOLLS: usize = 4;

/// The inner future is being polled.
const POLLING: u8 = 1;
/// It was woken while being polled.
const WOKEN: u8 = 2;

/// The waker the inner future sees.
struct Shared {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.fetch_or(WOKEN, Ordering::AcqRel) & POLLING == 0 {
            self.task.wake();
        }
    }
}

/// See the module documentation.
pub struct Repoll<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    waker: Waker,
}

impl<F: Future> Repoll<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Repoll<F> {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(0),
            task: AtomicWaker::new(),
        });
        Repoll {
            inner: Box::pin(inner),
            waker: Waker::from(shared.clone()),
            shared,
        }
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.shared.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..MAX_REPOLLS {
            // Also clears a wake that came between polls (it is why this
            // poll runs).
            this.shared.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
                this.shared.state.store(0, Ordering::Release);
                return Poll::Ready(out);
            }
            if this
                .shared
                .state
                .compare_exchange(POLLING, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Not woken while polled: a later wake goes to the task.
                return Poll::Pending;
            }
        }
        this.shared.state.store(0, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes of the outer task.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself on its first `self_wakes` polls, then is ready.
    struct SelfWaking {
        polls: usize,
        self_wakes: usize,
    }

    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.self_wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn outer() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    #[test]
    fn a_wake_during_the_poll_polls_again_without_waking_the_task() {
        let (count, waker) = outer();
        let mut cx = Context::from_waker(&waker);
        let mut f = Repoll::new(SelfWaking {
            polls: 0,
            self_wakes: 2,
        });
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn past_the_bound_the_task_yields() {
        let (count, waker) = outer();
        let mut cx = Context::from_waker(&waker);
        let mut f = Repoll::new(SelfWaking {
            polls: 0,
            self_wakes: MAX_REPOLLS,
        });
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "yielded once");
        assert_eq!(f.inner.polls, MAX_REPOLLS);
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(MAX_REPOLLS + 1));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task_once_per_wake() {
        let (count, waker) = outer();
        let mut cx = Context::from_waker(&waker);
        let mut f = Repoll::new(std::future::pending::<()>());
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        // What the pending future would have registered: the inner waker.
        let inner = f.waker.clone();
        inner.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The task was not polled since: its waker was taken, not lost.
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Pending);
        inner.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    /// A wake from another thread while the inner future is being polled
    /// is not lost: the future is polled again in the same poll.
    #[test]
    fn a_wake_from_another_thread_during_the_poll_is_not_lost() {
        let (count, waker) = outer();
        let mut cx = Context::from_waker(&waker);
        let mut polls = 0;
        let mut f = Repoll::new(std::future::poll_fn(move |cx| {
            polls += 1;
            if polls > 1 {
                return Poll::Ready(polls);
            }
            let w = cx.waker().clone();
            std::thread::spawn(move || w.wake()).join().unwrap();
            Poll::Pending
        }));
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }
}
