//! Sessions: named state that calls share, with variables, a time to live and the spec's
//! events (`created`, `expired`, `variable set/get`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dspex_telemetry_core::{Dispatcher, Measurements, Metadata, TraceId, catalog};
use serde_json::Value;

use crate::call::type_name;

/// Why a session operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No live session has this id (never created, or expired).
    #[error("no session {0:?}")]
    NotFound(String),
}

struct Session {
    created: Instant,
    last_used: Instant,
    operations: u64,
    variables: HashMap<String, Value>,
}

/// A store of sessions. Every operation emits its event on the store's dispatcher.
///
/// ```
/// use dspex_telemetry_bridge::Sessions;
/// use dspex_telemetry_core::Dispatcher;
/// use std::time::Duration;
///
/// let sessions = Sessions::new(Dispatcher::new(), Duration::from_secs(600));
/// let id = sessions.create();
/// sessions.set(&id, "temperature", serde_json::json!(0.2)).unwrap();
/// assert_eq!(sessions.get(&id, "temperature").unwrap(), Some(serde_json::json!(0.2)));
/// assert_eq!(sessions.get(&id, "missing").unwrap(), None);
/// sessions.expire(&id, "closed").unwrap();
/// assert!(sessions.get(&id, "temperature").is_err());
/// ```
pub struct Sessions {
    dispatcher: Dispatcher,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("live", &self.len())
            .finish()
    }
}

impl Sessions {
    /// A store whose sessions expire after `ttl` without use.
    pub fn new(dispatcher: Dispatcher, ttl: Duration) -> Self {
        Sessions {
            dispatcher,
            ttl,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a session; returns its id. Emits `[:dspex, :session, :created]`.
    pub fn create(&self) -> String {
        let id = format!("session-{}", TraceId::random());
        let now = Instant::now();
        self.lock().insert(
            id.clone(),
            Session {
                created: now,
                last_used: now,
                operations: 0,
                variables: HashMap::new(),
            },
        );
        self.dispatcher.execute(
            &catalog::SESSION_CREATED,
            &Measurements::new().with("system_time", dspex_telemetry_core::system_time_ns()),
            &Metadata::new().with("session_id", id.as_str()),
        );
        id
    }

    /// Runs `f` on a live session, counting it as one operation that uses the session now.
    fn operate<R>(
        &self,
        session_id: &str,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<R, SessionError> {
        let mut sessions = self.lock();
        let s = sessions
            .get_mut(session_id)
            .ok_or_else(|| SessionError::NotFound(session_id.to_owned()))?;
        s.operations += 1;
        s.last_used = Instant::now();
        Ok(f(s))
    }

    /// Sets a variable. Emits `[:dspex, :session, :variable, :set]` with its size in bytes.
    pub fn set(&self, session_id: &str, name: &str, value: Value) -> Result<(), SessionError> {
        let size = value.to_string().len();
        let var_type = type_name(&value);
        self.operate(session_id, |s| s.variables.insert(name.to_owned(), value))?;
        self.dispatcher.execute(
            &catalog::SESSION_VARIABLE_SET,
            &Measurements::new().with("size", size),
            &Metadata::new()
                .with("session_id", session_id)
                .with("var_name", name)
                .with("var_type", var_type),
        );
        Ok(())
    }

    /// Reads a variable. Emits `[:dspex, :session, :variable, :get]` with `found`.
    pub fn get(&self, session_id: &str, name: &str) -> Result<Option<Value>, SessionError> {
        let value = self.operate(session_id, |s| s.variables.get(name).cloned())?;
        let size = value.as_ref().map_or(0, |v| v.to_string().len());
        self.dispatcher.execute(
            &catalog::SESSION_VARIABLE_GET,
            &Measurements::new().with("size", size),
            &Metadata::new()
                .with("session_id", session_id)
                .with("var_name", name)
                .with("var_type", value.as_ref().map_or("none", type_name))
                .with("found", value.is_some()),
        );
        Ok(value)
    }

    /// Ends a session. Emits `[:dspex, :session, :expired]` with its lifetime and operations.
    pub fn expire(&self, session_id: &str, reason: &str) -> Result<(), SessionError> {
        let session = self
            .lock()
            .remove(session_id)
            .ok_or_else(|| SessionError::NotFound(session_id.to_owned()))?;
        self.emit_expired(session_id, &session, reason);
        Ok(())
    }

    fn emit_expired(&self, session_id: &str, session: &Session, reason: &str) {
        self.dispatcher.execute(
            &catalog::SESSION_EXPIRED,
            &Measurements::new()
                .with("lifetime_ms", session.created.elapsed().as_millis() as u64)
                .with("operations", session.operations),
            &Metadata::new()
                .with("session_id", session_id)
                .with("reason", reason),
        );
    }

    /// Expires every session unused for the time to live; returns how many. Call it
    /// periodically.
    pub fn sweep(&self) -> usize {
        let expired: Vec<(String, Session)> = {
            let mut sessions = self.lock();
            let ids: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.last_used.elapsed() >= self.ttl)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| sessions.remove(&id).map(|s| (id, s)))
                .collect()
        };
        for (id, session) in &expired {
            self.emit_expired(id, session, "ttl");
        }
        expired.len()
    }
}
