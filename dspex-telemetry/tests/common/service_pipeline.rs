//! A service's own tracing pipeline, as the tests' services have it: `tracing` →
//! `tracing-opentelemetry` → the OpenTelemetry SDK → OTLP/HTTP to `endpoint` (the batch
//! processor's thread sends with reqwest's blocking client).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;

/// The provider (to flush) and the subscriber made this thread's default until the guard
/// drops.
#[allow(dead_code)]
pub fn start(endpoint: &str) -> (SdkTracerProvider, tracing::subscriber::DefaultGuard) {
    with_processor(None, endpoint)
}

/// The same pipeline sending through `processor` (our stack's, say) instead of an exporter
/// of its own, when given.
#[allow(dead_code)]
pub fn with_processor(
    processor: Option<dspex_telemetry::exporters::otlp::OtlpSpanProcessor>,
    endpoint: &str,
) -> (SdkTracerProvider, tracing::subscriber::DefaultGuard) {
    let provider = match processor {
        Some(processor) => SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build(),
        None => own_provider(endpoint),
    };
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("service")));
    let guard = tracing::subscriber::set_default(subscriber);
    (provider, guard)
}

fn own_provider(endpoint: &str) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()
        .expect("the service's exporter");
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build()
}
