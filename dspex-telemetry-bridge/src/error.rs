//! What a bridge call can fail with.

use std::time::Duration;

/// Why a call through the pool failed. Each is also reported as the call's `exception` event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BridgeError {
    /// The request queue was full; the call was refused at once.
    #[error("the worker pool's queue is full ({depth} requests waiting)")]
    QueueFull {
        /// Requests waiting when this one was refused.
        depth: usize,
    },
    /// The call did not finish within its deadline; its worker was killed and replaced.
    #[error("the call did not finish within {0:?}; its worker was killed")]
    DeadlineExceeded(Duration),
    /// The worker died during the call; it was replaced.
    #[error("the worker died during the call: {0}")]
    WorkerCrashed(String),
    /// The Python code raised.
    #[error("{kind}: {message}")]
    Python {
        /// The exception's type name.
        kind: String,
        /// Its message.
        message: String,
        /// The Python traceback.
        traceback: Option<String>,
    },
    /// The worker sent something that is not a valid reply; it was replaced.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request's frame would exceed [`PoolConfig::max_frame_bytes`]: the call failed
    /// without anything being sent, and the worker serves the next call.
    ///
    /// [`PoolConfig::max_frame_bytes`]: crate::PoolConfig::max_frame_bytes
    #[error("the request is larger than `max_frame_bytes` ({max} bytes); it was not sent")]
    RequestTooLarge {
        /// The limit, `max_frame_bytes`.
        max: usize,
    },
    /// The Python object is gone: its worker was replaced, or it was dropped.
    #[error("the Python object is gone (its worker was replaced, or it was dropped)")]
    InstanceLost,
    /// The pool is shut down.
    #[error("the worker pool is shut down")]
    ShutDown,
    /// The inputs break the call's declared signature.
    #[error("contract violated: {}", .0.join("; "))]
    Contract(Vec<String>),
    /// An output could not be cast to its declared type.
    #[error("cannot cast `{field}` to {to_type}: {reason}")]
    Cast {
        /// The output field.
        field: String,
        /// The declared type.
        to_type: &'static str,
        /// Why not.
        reason: String,
    },
}

impl BridgeError {
    /// A short stable name for the error, used as the `error` metadata of events.
    pub fn kind(&self) -> &'static str {
        match self {
            BridgeError::QueueFull { .. } => "queue_full",
            BridgeError::DeadlineExceeded(_) => "timeout",
            BridgeError::WorkerCrashed(_) => "worker_crashed",
            BridgeError::Python { .. } => "python_exception",
            BridgeError::Protocol(_) => "protocol_error",
            BridgeError::RequestTooLarge { .. } => "request_too_large",
            BridgeError::ShutDown => "shut_down",
            BridgeError::InstanceLost => "instance_lost",
            BridgeError::Contract(_) => "contract_violation",
            BridgeError::Cast { .. } => "cast_failed",
        }
    }
}

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is invalid; names the key.
    #[error("invalid `{key}`: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A worker could not be started.
    #[error("could not start a Python worker ({python}): {reason}")]
    Spawn {
        /// The interpreter tried.
        python: String,
        /// What went wrong.
        reason: String,
    },
}
