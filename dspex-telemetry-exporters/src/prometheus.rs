//! Prometheus: a recorder whose histograms have the catalog's millisecond buckets, and a
//! `/metrics` endpoint serving it (127.0.0.1 by default, optional bearer token) that survives
//! its clients: a header-read deadline that is also the idle deadline, a connection cap that
//! makes room by closing the connection idle longest, the same when descriptors run out, and
//! one render shared by the scrapes that arrive while it runs.

#[cfg(feature = "prometheus")]
mod endpoint;

#[cfg(feature = "prometheus")]
pub use endpoint::{EndpointStats, PrometheusConfig, PrometheusEndpoint};

use std::net::SocketAddr;

use dspex_telemetry_metrics::{MetricDefinition, MetricKind, catalog};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the Prometheus exporter could not start; each names the configuration key at fault.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// A key's value is unusable.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The configuration key.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on `listen` = {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
}

/// A Prometheus recorder for `definitions`: every histogram gets explicit buckets (the
/// definition's own for distributions, [`catalog::DURATION_BUCKETS_MS`] otherwise, users' own
/// `histogram!` calls included), so series aggregate across instances; names are kept as
/// defined (no unit or `_total` suffix is added).
///
/// Install it alone or next to the window through `metrics-util`'s fanout, then attach a
/// [`dspex_telemetry_metrics::MetricsHandler`].
///
/// ```
/// use dspex_telemetry_exporters::prometheus::prometheus_recorder;
/// use dspex_telemetry_metrics::catalog;
/// let recorder = prometheus_recorder(&catalog::dspex_metrics()).unwrap();
/// let handle = recorder.handle();
/// metrics::with_local_recorder(&recorder, || metrics::counter!("app_jobs_total").increment(2));
/// assert!(handle.render().contains("app_jobs_total 2"));
/// ```
pub fn prometheus_recorder(
    definitions: &[MetricDefinition],
) -> Result<PrometheusRecorder, PrometheusError> {
    let invalid =
        |name: &str, e: metrics_exporter_prometheus::BuildError| PrometheusError::Invalid {
            key: "buckets",
            reason: format!("{name}: {e}"),
        };
    let mut builder = PrometheusBuilder::new()
        .set_buckets(catalog::DURATION_BUCKETS_MS)
        .map_err(|e| invalid("default", e))?;
    for def in definitions {
        if let MetricKind::Distribution { buckets } = def.kind() {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(def.name().to_owned()), buckets)
                .map_err(|e| invalid(def.name(), e))?;
        }
    }
    Ok(builder.build_recorder())
}
