//! Typing notifications: ephemeral, in memory, expiring on their timeout.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Who types in one room (user -> until), and the serial of the room's last change.
type RoomTyping = (HashMap<String, Instant>, i64);

#[derive(Default)]
pub struct Typing {
    rooms: Mutex<HashMap<String, RoomTyping>>,
}

impl Typing {
    /// Sets or clears a user's typing state; returns whether anything changed.
    pub fn set(&self, room: &str, user: &str, timeout: Option<Duration>, serial: impl FnOnce() -> i64) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let entry = rooms.entry(room.to_owned()).or_default();
        let changed = match timeout {
            Some(t) => entry.0.insert(user.to_owned(), Instant::now() + t).is_none(),
            None => entry.0.remove(user).is_some(),
        };
        if changed {
            entry.1 = serial();
        }
        changed
    }

    /// Users typing in a room now, and the serial of the room's last change.
    pub fn typing(&self, room: &str) -> (Vec<String>, i64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some((users, serial)) = rooms.get_mut(room) else { return (vec![], 0) };
        let now = Instant::now();
        users.retain(|_, until| *until > now);
        let mut list: Vec<String> = users.keys().cloned().collect();
        list.sort();
        (list, *serial)
    }

    /// The soonest expiry of any typing notice, so a waiting sync can wake for it.
    pub fn next_expiry(&self) -> Option<Instant> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.values().flat_map(|(u, _)| u.values().copied()).min()
    }

    /// Expires what has timed out; returns the rooms that changed.
    pub fn expire(&self, serial: impl Fn() -> i64) -> Vec<String> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut changed = Vec::new();
        for (room, (users, s)) in rooms.iter_mut() {
            let before = users.len();
            users.retain(|_, until| *until > now);
            if users.len() != before {
                *s = serial();
                changed.push(room.clone());
            }
        }
        changed
    }
}
