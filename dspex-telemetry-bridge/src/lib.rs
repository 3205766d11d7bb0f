//! The bridge for dspex-telemetry: a pool of Python worker processes, instrumented end to end,
//! that carries the trace into Python and brings Python's spans back.
//!
//! - [`Pool`]: Python workers behind a bounded queue, with deadlines, crash and hang recovery,
//!   graceful shutdown and pool events; [`Pool::call`] (bridge calls),
//!   [`Pool::create_instance`] and [`Pool::call_method`] (Python objects held by a worker),
//!   [`Pool::execute_tool`] (tools registered in Python), [`Pool::predict`] (contract
//!   validation, call, output casting).
//! - [`Sessions`]: session state with variables and a time to live.
//! - [`instrument`]: the same events and trace for calls through your own bridge (PyO3, gRPC).
//! - Every request carries the trace into Python; the spans Python timed come back as
//!   `[:dspex, :python, :span]` events in the same trace.
//!
//! ```no_run
//! use dspex_telemetry_bridge::{Pool, PoolConfig};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::start(PoolConfig::default()).await?;
//! let sum = pool.call("builtins", "sum", vec![serde_json::json!([1, 2, 3])]).await?;
//! assert_eq!(sum, 6);
//! pool.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Python code can time its own work as child spans of the call:
//!
//! ```python
//! from dspex_worker import dspex_span, current_trace
//!
//! def predict(question):
//!     with dspex_span("retrieve", k=3):
//!         ...
//!     return {"answer": "...", "correlation_id": current_trace()["correlation_id"]}
//! ```
#![deny(missing_docs)]

mod args;
mod call;
mod contract;
mod dspy;
mod error;
mod instance;
pub mod instrument;
mod pool;
mod protocol;
mod session;
mod stderr;
mod usage;

pub use args::Args;
pub use call::ToolCall;
pub use contract::{FieldType, Signature, SignatureError};
pub use dspy::DspyModule;
pub use error::{BridgeError, StartError};
pub use instance::PyObject;
pub use pool::{Pool, PoolConfig, PoolHealth, WORKER_SCRIPT};
pub use session::{SessionError, Sessions};
pub use usage::ResourceUsage;

/// The guide's samples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/bridge.md")]
struct GuideDoctests;
