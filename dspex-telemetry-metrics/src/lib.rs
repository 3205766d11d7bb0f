//! Metrics for dspex-telemetry: metric definitions, the handler that turns events into
//! [`metrics`](https://docs.rs/metrics) facade calls, and the sliding-window recorder that
//! answers p50/p95/p99, error rates and rates per operation.
//!
//! **Status: skeleton.** This crate compiles and reserves its place in the workspace; it
//! exports nothing yet. The event names it will consume are already defined in
//! [`dspex_telemetry_core::catalog`].
#![deny(missing_docs)]
