//! Wakes waiting `/sync` requests when anything they could return has changed.
//!
//! The position is the last committed stream position (from the database's counter)
//! plus a serial for ephemeral typing changes. Waiters hold a `watch::Receiver`, so a
//! long poll costs no work until something happens: there is no polling loop.
//!
//! Each change is also logged with its [`Audience`], so that a woken sync can tell from
//! memory whether the change can concern its user before it reads anything from the
//! database: a message in one room wakes the syncs of the whole server, but only its
//! members' syncs do any work.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::{Notify, watch};

/// Positions a sync token is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub stream: i64,
    pub typing: i64,
}

/// Whom a change can concern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Anyone: used where working out who would take a query of its own (device lists,
    /// whose audience is everyone sharing a room with the device's owner).
    Everyone,
    /// Members of these rooms (whatever their membership) and these users wherever they are.
    Members { rooms: Vec<String>, users: Vec<String> },
    /// A presence change, for members of these rooms whose filter asks for presence.
    Presence { rooms: Vec<String> },
}

impl Audience {
    pub fn room(room: impl Into<String>) -> Self {
        Self::Members { rooms: vec![room.into()], users: vec![] }
    }

    pub fn user(user: impl Into<String>) -> Self {
        Self::Members { rooms: vec![], users: vec![user.into()] }
    }

    pub fn users(users: impl IntoIterator<Item = String>) -> Self {
        Self::Members { rooms: vec![], users: users.into_iter().collect() }
    }

    /// The same audience and also `user` (the target of a membership change, who is
    /// not a member yet when invited).
    pub fn and_user(self, user: impl Into<String>) -> Self {
        match self {
            Self::Members { rooms, mut users } => {
                users.push(user.into());
                Self::Members { rooms, users }
            }
            other => other,
        }
    }

    /// Whether a sync of `user`, who has a membership in the rooms `is_member` accepts
    /// and wants presence when `presence` is set, could see something of this change.
    pub fn concerns(&self, user: &str, is_member: impl Fn(&str) -> bool, presence: bool) -> bool {
        match self {
            Self::Everyone => true,
            Self::Members { rooms, users } => users.iter().any(|u| u == user) || rooms.iter().any(|r| is_member(r)),
            Self::Presence { rooms } => presence && rooms.iter().any(|r| is_member(r)),
        }
    }
}

/// How many changes the log keeps. A sync that falls further behind than this (a
/// burst of thousands of events while it was busy) does its database check instead.
const LOG_CAPACITY: usize = 16_384;

/// The recent changes, numbered in the order they were recorded.
struct Log {
    /// The number of the newest entry (0 before the first).
    seq: u64,
    entries: VecDeque<Audience>,
}

impl Log {
    fn first_seq(&self) -> u64 {
        self.seq + 1 - self.entries.len() as u64
    }
}

/// What a waiting sync learns on waking: how far it has now looked, the position it may
/// answer at, and whether anything in between can concern it.
#[derive(Debug, Clone, Copy)]
pub struct Wake {
    pub seq: u64,
    pub position: Position,
    pub concerned: bool,
}

pub struct Notifier {
    tx: watch::Sender<Position>,
    log: Mutex<Log>,
    stopping: AtomicBool,
    stop: Notify,
}

impl Notifier {
    pub fn new(stream: i64) -> Self {
        Self {
            tx: watch::Sender::new(Position { stream, typing: 0 }),
            log: Mutex::new(Log { seq: 0, entries: VecDeque::new() }),
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

    /// The newest log entry and the position: every change logged up to that entry is
    /// at or below the position (both move under one lock).
    pub fn snapshot(&self) -> (u64, Position) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        (log.seq, *self.tx.borrow())
    }

    /// Looks at the changes logged after entry `seq`: whether any satisfies `concerns`
    /// (or the log no longer reaches back that far, which must be treated as concerning).
    pub fn changes_since(&self, seq: u64, concerns: impl Fn(&Audience) -> bool) -> Wake {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let position = *self.tx.borrow();
        let concerned = if seq + 1 < log.first_seq() {
            true
        } else {
            let skip = (seq + 1 - log.first_seq()) as usize;
            log.entries.iter().skip(skip).any(concerns)
        };
        Wake { seq: log.seq, position, concerned }
    }

    fn record(&self, audience: Audience, change: impl FnOnce(&mut Position)) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.seq += 1;
        if log.entries.len() == LOG_CAPACITY {
            log.entries.pop_front();
        }
        log.entries.push_back(audience);
        // Every record wakes the waiters, also when its position is below the current
        // one (commits may be recorded out of order): its audience is news to them.
        self.tx.send_modify(change);
    }

    /// Records that `pos` has committed, for `audience`. Commits may be observed out of
    /// order across tasks; the counter row lock makes every lower position committed already.
    pub fn advance(&self, pos: i64, audience: Audience) {
        self.record(audience, |p| p.stream = p.stream.max(pos));
    }

    /// Records a typing change in `rooms` and returns the new typing serial.
    pub fn bump_typing(&self, rooms: Vec<String>) -> i64 {
        let mut serial = 0;
        self.record(Audience::Members { rooms, users: vec![] }, |p| {
            p.typing += 1;
            serial = p.typing;
        });
        serial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concerns_alice(a: &Audience) -> bool {
        a.concerns("@alice:x", |r| r == "!a:x", false)
    }

    #[test]
    fn only_changes_for_the_user_or_their_rooms_concern_them() {
        let n = Notifier::new(10);
        let (seq, pos) = n.snapshot();
        assert_eq!(pos.stream, 10);
        n.advance(11, Audience::room("!b:x"));
        n.advance(12, Audience::user("@bob:x"));
        n.advance(13, Audience::Presence { rooms: vec!["!a:x".into()] });
        let wake = n.changes_since(seq, concerns_alice);
        assert!(!wake.concerned);
        assert_eq!(wake.position.stream, 13);
        n.advance(14, Audience::room("!b:x").and_user("@alice:x"));
        let later = n.changes_since(wake.seq, concerns_alice);
        assert!(later.concerned, "an invite to another room concerns its target");
        n.advance(15, Audience::room("!a:x"));
        assert!(n.changes_since(later.seq, concerns_alice).concerned);
        assert!(!n.changes_since(later.seq + 1, concerns_alice).concerned, "nothing after the last entry");
        n.advance(16, Audience::Everyone);
        assert!(n.changes_since(later.seq + 1, concerns_alice).concerned);
    }

    #[test]
    fn a_lower_position_recorded_late_still_counts() {
        let n = Notifier::new(0);
        let (seq, _) = n.snapshot();
        n.advance(5, Audience::room("!b:x"));
        n.advance(4, Audience::room("!a:x"));
        let wake = n.changes_since(seq, concerns_alice);
        assert!(wake.concerned);
        assert_eq!(wake.position.stream, 5);
    }

    #[test]
    fn a_waiter_the_log_has_left_behind_is_told_to_look() {
        let n = Notifier::new(0);
        let (seq, _) = n.snapshot();
        for pos in 1..=(LOG_CAPACITY as i64 + 1) {
            n.advance(pos, Audience::room("!b:x"));
        }
        assert!(n.changes_since(seq, concerns_alice).concerned);
        assert!(!n.changes_since(seq + 1, concerns_alice).concerned);
    }

    #[test]
    fn typing_changes_move_the_typing_serial_only() {
        let n = Notifier::new(3);
        let (seq, _) = n.snapshot();
        assert_eq!(n.bump_typing(vec!["!a:x".into()]), 1);
        let wake = n.changes_since(seq, concerns_alice);
        assert!(wake.concerned);
        assert_eq!(wake.position, Position { stream: 3, typing: 1 });
    }
}
