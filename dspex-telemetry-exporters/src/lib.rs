//! Exporters for dspex-telemetry: a Prometheus `/metrics` endpoint and push gateway client,
//! StatsD, OpenTelemetry OTLP (traces and metrics) and the Reporter that flushes them on
//! `reporting_interval`.
//!
//! **Status: skeleton.** This crate compiles and reserves its place in the workspace; it
//! exports nothing yet.
#![deny(missing_docs)]
