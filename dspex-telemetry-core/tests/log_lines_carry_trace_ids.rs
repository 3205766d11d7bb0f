//! With the `tracing` feature, log lines carry the current correlation, trace and span ids,
//! and the debug handler logs every event.
#![cfg(feature = "tracing")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use dspex_telemetry_core::log_fields::WithTraceIds;
use dspex_telemetry_core::{
    CorrelationId, Dispatcher, EventName, attach_debug_handler, context, measurements, metadata,
};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn subscriber(buffer: &Buffer) -> impl tracing::Subscriber + Send + Sync {
    let buffer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || buffer.clone())
        .event_format(WithTraceIds::new(
            tracing_subscriber::fmt::format().compact().without_time(),
        ))
        .finish()
}

#[test]
fn log_lines_in_a_trace_start_with_its_ids() {
    let buffer = Buffer::default();
    tracing::subscriber::with_default(subscriber(&buffer), || {
        tracing::info!("outside");
        context::with_correlation(CorrelationId::parse("order-77").unwrap(), || {
            let ctx = context::current().unwrap();
            tracing::info!("inside");
            let expected = format!(
                "correlation_id=order-77 trace_id={} span_id={} ",
                ctx.trace_id(),
                ctx.span_id()
            );
            let text = buffer.text();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{text}");
            assert!(
                lines[0].starts_with(" INFO") || lines[0].starts_with("INFO"),
                "{}",
                lines[0]
            );
            assert!(lines[1].starts_with(&expected), "{}", lines[1]);
            assert!(lines[1].ends_with("inside"), "{}", lines[1]);
        });
    });
}

#[test]
fn the_debug_handler_logs_every_event_with_its_data() {
    let buffer = Buffer::default();
    let d = Dispatcher::new();
    attach_debug_handler(&d, EventName::from_static(&["dspex"])).unwrap();
    tracing::subscriber::with_default(subscriber(&buffer), || {
        d.execute(
            &dspex_telemetry_core::catalog::SESSION_VARIABLE_GET,
            &measurements! { "size" => 12 },
            &metadata! { "var_name" => "temperature", "found" => true },
        );
        d.execute(
            &EventName::from_static(&["other"]),
            &measurements! {},
            &metadata! {},
        );
    });
    let text = buffer.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("event=dspex.session.variable.get measurements={size=12} metadata={var_name=temperature, found=true}"),
        "{text}"
    );
}
