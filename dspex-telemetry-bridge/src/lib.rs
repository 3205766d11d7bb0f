//! The bridge for dspex-telemetry: instrumentation of bridge calls, tool execution,
//! sessions, contract validation, type casting and a reference pool of Python worker
//! processes that carries the trace into Python and brings Python's spans back.
//!
//! **Status: skeleton.** This crate compiles and reserves its place in the workspace; it
//! exports nothing yet. The events it will emit are already defined in
//! [`dspex_telemetry_core::catalog`].
#![deny(missing_docs)]
