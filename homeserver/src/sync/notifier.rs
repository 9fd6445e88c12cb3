//! Wakes waiting `/sync` requests when anything they could return has changed.
//!
//! The position is the last committed stream position (from the database's counter)
//! plus a serial for ephemeral typing changes. Waiters hold a `watch::Receiver`, so a
//! long poll costs no work until something happens: there is no polling loop.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, watch};

/// Positions a sync token is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub stream: i64,
    pub typing: i64,
}

pub struct Notifier {
    tx: watch::Sender<Position>,
    stopping: AtomicBool,
    stop: Notify,
}

impl Notifier {
    pub fn new(stream: i64) -> Self {
        Self {
            tx: watch::Sender::new(Position { stream, typing: 0 }),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        }
    }

    /// Ends every long poll now: on shutdown, waiting syncs answer with what they have
    /// (nothing new) instead of holding the process for up to their timeout.
    pub fn shut_down(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    pub fn is_shut_down(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once the server is shutting down.
    pub async fn stopped(&self) {
        let notified = self.stop.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    pub fn current(&self) -> Position {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.tx.subscribe()
    }

    /// Records that `pos` has committed. Commits may be observed out of order across
    /// tasks; the counter row lock makes every lower position committed already.
    pub fn advance(&self, pos: i64) {
        self.tx.send_if_modified(|p| {
            if pos > p.stream {
                p.stream = pos;
                true
            } else {
                false
            }
        });
    }

    pub fn bump_typing(&self) -> i64 {
        let mut serial = 0;
        self.tx.send_modify(|p| {
            p.typing += 1;
            serial = p.typing;
        });
        serial
    }
}
