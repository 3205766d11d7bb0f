//! A handler that logs every event, for the "missing metrics" question: is the event emitted
//! at all, and with what?

use std::fmt::Write as _;

use crate::context;
use crate::dispatcher::{AttachError, Dispatcher, Event};
use crate::event::EventName;

/// The id [`attach_debug_handler`] attaches under.
pub const DEBUG_HANDLER_ID: &str = "dspex-telemetry-debug";

/// Attaches a handler that logs every event starting with `prefix` (for example `[:dspex]`)
/// at `DEBUG` level through `tracing`, with its measurements, metadata and trace ids.
/// Detach it with `dispatcher.detach(DEBUG_HANDLER_ID)`.
///
/// The log line is `event=dspex.bridge.call.stop measurements={duration=1200, …}
/// metadata={module=dspy, …} correlation_id=… trace_id=… span_id=…`.
///
/// ```
/// use dspex_telemetry_core::{attach_debug_handler, Dispatcher, EventName};
/// let dispatcher = Dispatcher::new();
/// attach_debug_handler(&dispatcher, EventName::from_static(&["dspex"])).unwrap();
/// ```
pub fn attach_debug_handler(dispatcher: &Dispatcher, prefix: EventName) -> Result<(), AttachError> {
    dispatcher.attach_prefix(DEBUG_HANDLER_ID, prefix, |event: &Event<'_>| {
        if tracing::enabled!(target: "dspex_telemetry::events", tracing::Level::DEBUG) {
            let line = describe(event);
            tracing::debug!(target: "dspex_telemetry::events", "{line}");
        }
    })
}

/// The text the debug handler logs for `event`.
pub(crate) fn describe(event: &Event<'_>) -> String {
    let mut line = format!("event={} measurements={{", event.name());
    for (i, (k, v)) in event.measurements().iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        let _ = write!(line, "{sep}{k}={v}");
    }
    line.push_str("} metadata={");
    for (i, (k, v)) in event.metadata().iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        let _ = write!(line, "{sep}{k}={v}");
    }
    line.push('}');
    if let Some(ctx) = context::current() {
        let _ = write!(
            line,
            " correlation_id={} trace_id={} span_id={}",
            ctx.correlation_id(),
            ctx.trace_id(),
            ctx.span_id()
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Measurements, Metadata};

    #[test]
    fn describes_name_measurements_metadata_and_context() {
        let name = EventName::parse("dspex.bridge.call.stop").unwrap();
        let m = Measurements::new().with("duration", 1200);
        let md = Metadata::new().with("module", "dspy").with("success", true);
        let event = Event::new_for_test(&name, &m, &md);
        assert_eq!(
            describe(&event),
            "event=dspex.bridge.call.stop measurements={duration=1200} metadata={module=dspy, success=true}"
        );
        let ctx = crate::TraceContext::new_root();
        let line = ctx.in_scope(|| describe(&event));
        assert!(
            line.ends_with(&format!(
                " trace_id={} span_id={}",
                ctx.trace_id(),
                ctx.span_id()
            )),
            "{line}"
        );
    }
}
