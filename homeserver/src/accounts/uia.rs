//! User-interactive authentication: sessions and completed stages, in memory.
//!
//! A session lives for a few minutes; a restart simply makes the client start again.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use kairan_core::error::Error;

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

/// One session: the stages completed, and the registration token that completed its
/// stage (a use of it is consumed only when the account is made).
struct Session {
    stages: HashSet<UiaStage>,
    registration_token: Option<String>,
    started: Instant,
}

#[derive(Default)]
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl UiaSessions {
    /// Records a completed stage; returns the session ID.
    pub fn complete(&self, session: Option<&str>, stage: UiaStage) -> String {
        self.complete_with(session, stage, None)
    }

    /// Records a completed `m.login.registration_token` stage and the token that passed it.
    pub fn complete_registration_token(&self, session: Option<&str>, token: &str) -> String {
        self.complete_with(session, UiaStage::RegistrationToken, Some(token.to_owned()))
    }

    fn complete_with(&self, session: Option<&str>, stage: UiaStage, token: Option<String>) -> String {
        let id = session.map(str::to_owned).unwrap_or_else(kairan_core::ids::random_device_id);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
        let entry = sessions.entry(id.clone()).or_insert_with(|| Session {
            stages: HashSet::new(),
            registration_token: None,
            started: Instant::now(),
        });
        entry.stages.insert(stage);
        if token.is_some() {
            entry.registration_token = token;
        }
        id
    }

    pub fn completed(&self, session: &str) -> Vec<UiaStage> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(session).map(|s| s.stages.iter().copied().collect()).unwrap_or_default()
    }

    /// The registration token that completed the session's token stage.
    pub fn registration_token(&self, session: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(session).and_then(|s| s.registration_token.clone())
    }

    pub fn finish(&self, session: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(session);
    }

    /// The 401 that tells the client which stages to complete.
    pub fn challenge(&self, session: Option<&str>, stages: &[UiaStage], error: Option<Error>) -> Error {
        let id = session.map(str::to_owned).unwrap_or_else(kairan_core::ids::random_device_id);
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
