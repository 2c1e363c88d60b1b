//! A session's event queue: bounded, holding no memory while empty, and able to tell its
//! session that it overflowed.
//!
//! Every signed-in connection owns one, so its size matters more than its speed: a tokio
//! `mpsc` channel allocates its shared state and a first block of slots up front, and a
//! separate cancellation token would be needed to report overflow. This is a mutex-guarded
//! deque and a `Notify` (88 bytes, see the test below), with overflow part of its state.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::bus::Event;

struct Shared {
    queue: Mutex<Queue>,
    notify: Notify,
    capacity: usize,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Arc<Event>>,
    overflowed: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A few plain fields: a poisoned lock still holds consistent data.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new queue for up to `capacity` waiting events.
pub fn inbox(capacity: usize) -> (InboxSender, Inbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        notify: Notify::new(),
        capacity: capacity.max(1),
    });
    (InboxSender(shared.clone()), Inbox(shared))
}

/// What happened to a delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The queue was full: the event is dropped and the session told to close. Returned
    /// for this and every later delivery.
    Overflowed,
    /// The session is gone.
    Closed,
}

/// The publishing side (cheap to clone).
#[derive(Clone)]
pub struct InboxSender(Arc<Shared>);

impl std::fmt::Debug for InboxSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InboxSender")
    }
}

impl InboxSender {
    /// Queue an event without waiting. A full queue marks the inbox overflowed: its
    /// session is a slow consumer and closes, rather than the publisher waiting.
    pub fn deliver(&self, event: Arc<Event>) -> Delivery {
        let mut q = self.0.lock();
        if q.closed {
            return Delivery::Closed;
        }
        if q.overflowed {
            return Delivery::Overflowed;
        }
        if q.events.len() >= self.0.capacity {
            q.overflowed = true;
            q.events.clear();
            drop(q);
            self.0.notify.notify_one();
            return Delivery::Overflowed;
        }
        q.events.push_back(event);
        drop(q);
        self.0.notify.notify_one();
        Delivery::Queued
    }
}

/// What the session reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Event(Arc<Event>),
    /// Events were dropped because the session did not keep up; it should close.
    Overflowed,
}

/// The session's side.
pub struct Inbox(Arc<Shared>);

impl Inbox {
    /// The next event, or `Overflowed`. Cancel-safe: an event is taken only in the poll
    /// that returns it.
    pub async fn recv(&mut self) -> Received {
        loop {
            if let Some(r) = self.try_recv() {
                return r;
            }
            self.0.notify.notified().await;
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        let mut q = self.0.lock();
        if q.overflowed {
            return Some(Received::Overflowed);
        }
        let event = q.events.pop_front()?;
        if q.events.is_empty() {
            // Give the memory back: most sessions are idle most of the time.
            q.events = VecDeque::new();
        }
        Some(Received::Event(event))
    }

    /// Completes once the inbox has overflowed (for waits that are not reading it).
    /// Wake-ups it consumes cost `recv` nothing: `recv` looks at the queue before waiting.
    pub async fn overflowed(&self) {
        while !self.0.lock().overflowed {
            self.0.notify.notified().await;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.closed = true;
        q.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::UserEvent;

    fn ev(n: u64) -> Arc<Event> {
        Arc::new(Event::User(UserEvent::SignedInElsewhere {
            session: n,
            endpoint: None,
        }))
    }

    #[tokio::test]
    async fn queues_in_order_then_overflows_then_closes() {
        let (tx, mut rx) = inbox(2);
        assert_eq!(tx.deliver(ev(1)), Delivery::Queued);
        assert_eq!(tx.deliver(ev(2)), Delivery::Queued);
        assert_eq!(rx.recv().await, Received::Event(ev(1)));
        assert_eq!(tx.deliver(ev(3)), Delivery::Queued);
        assert_eq!(tx.deliver(ev(4)), Delivery::Overflowed);
        assert_eq!(tx.deliver(ev(5)), Delivery::Overflowed);
        assert_eq!(rx.recv().await, Received::Overflowed);
        rx.overflowed().await;
        drop(rx);
        assert_eq!(tx.deliver(ev(6)), Delivery::Closed);
    }

    #[tokio::test]
    async fn recv_waits_for_a_delivery() {
        let (tx, mut rx) = inbox(4);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.deliver(ev(7));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Received::Event(ev(7)));
    }
}

#[cfg(test)]
mod size {
    /// An inbox is one allocation of this size per session (plus the `Arc` counts).
    #[test]
    fn inbox_stays_small() {
        let size = std::mem::size_of::<super::Shared>();
        eprintln!("inbox: {size} bytes");
        assert!(size <= 128, "the inbox grew to {size} bytes");
    }
}
