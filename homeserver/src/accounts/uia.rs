//! User-interactive authentication: sessions and completed stages, in memory.
//!
//! A session lives for a few minutes; a restart simply makes the client start again.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::error::Error;

/// A stage the server asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UiaStage {
    Password,
    RegistrationToken,
    Dummy,
}

impl UiaStage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Password => "m.login.password",
            Self::RegistrationToken => "m.login.registration_token",
            Self::Dummy => "m.login.dummy",
        }
    }
}

const SESSION_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, (HashSet<UiaStage>, Instant)>>,
}

impl UiaSessions {
    /// Records a completed stage; returns the session ID.
    pub fn complete(&self, session: Option<&str>, stage: UiaStage) -> String {
        let id = session.map(str::to_owned).unwrap_or_else(crate::rooms::random_device_id);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, (_, at)| at.elapsed() < SESSION_LIFETIME);
        sessions.entry(id.clone()).or_insert_with(|| (HashSet::new(), Instant::now())).0.insert(stage);
        id
    }

    pub fn completed(&self, session: &str) -> Vec<UiaStage> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(session).map(|(s, _)| s.iter().copied().collect()).unwrap_or_default()
    }

    pub fn finish(&self, session: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(session);
    }

    /// The 401 that tells the client which stages to complete.
    pub fn challenge(&self, session: Option<&str>, stages: &[UiaStage], error: Option<Error>) -> Error {
        let id = session.map(str::to_owned).unwrap_or_else(crate::rooms::random_device_id);
        let completed: Vec<&str> =
            session.map(|s| self.completed(s)).unwrap_or_default().iter().map(|s| s.name()).collect();
        let body: Value = json!({
            "flows": [{ "stages": stages.iter().map(|s| s.name()).collect::<Vec<_>>() }],
            "params": {},
            "session": id,
            "completed": completed,
        });
        let mut e = error.unwrap_or_else(|| Error::unauthorized("additional authentication is required"));
        e.status = http::StatusCode::UNAUTHORIZED;
        e.body = Some(body);
        e
    }
}
