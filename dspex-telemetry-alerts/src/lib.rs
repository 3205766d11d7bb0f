//! Alerts for dspex-telemetry: threshold rules on window snapshots, the alert types of the
//! spec (performance degradation, error spike, resource exhaustion), suppression, the
//! firing/resolved lifecycle and alert handlers (log, webhook, Alertmanager, your own).
//!
//! **Status: skeleton.** This crate compiles and reserves its place in the workspace; it
//! exports nothing yet. The alert events it will emit are already named in
//! [`dspex_telemetry_core::catalog`] (`ALERT_FIRED`, `ALERT_RESOLVED`).
#![deny(missing_docs)]
