//! The bridge for dspex-telemetry: a pool of Python worker processes, instrumented end to end,
//! that carries the trace into Python and brings Python's spans back.
//!
//! **Status.** The pool (bounded queue, deadlines, crash and hang recovery, graceful
//! shutdown, pool events) and bridge calls with trace propagation and Python spans are
//! implemented. Tools, sessions, contract validation, type casting, instrumentation helpers
//! for other bridges, the example and the benchmark come next.
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

mod call;
mod error;
mod pool;
mod protocol;

pub use error::{BridgeError, StartError};
pub use pool::{Pool, PoolConfig, PoolHealth, WORKER_SCRIPT};
