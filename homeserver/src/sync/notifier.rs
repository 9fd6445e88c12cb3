//! Wakes waiting `/sync` requests when anything they could return has changed.
//!
//! The position is the last committed stream position (from the database's counter)
//! plus a serial for ephemeral typing changes. Waiters hold a `watch::Receiver`, so a
//! long poll costs no work until something happens: there is no polling loop.

use tokio::sync::watch;

/// Positions a sync token is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub stream: i64,
    pub typing: i64,
}

pub struct Notifier {
    tx: watch::Sender<Position>,
}

impl Notifier {
    pub fn new(stream: i64) -> Self {
        Self { tx: watch::Sender::new(Position { stream, typing: 0 }) }
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
