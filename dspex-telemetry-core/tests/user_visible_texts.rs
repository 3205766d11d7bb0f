//! Snapshots of the texts people read: error messages and event names.

use dspex_telemetry_core::{
    AttachError, Baggage, CorrelationId, DetachError, EventName, TraceParent, catalog,
};

#[test]
fn error_messages() {
    let texts = [
        AttachError::AlreadyExists("metrics".into()).to_string(),
        DetachError::NotFound("metrics".into()).to_string(),
        EventName::parse("a.b c").unwrap_err().to_string(),
        CorrelationId::parse("two words").unwrap_err().to_string(),
        CorrelationId::parse(&"x".repeat(200))
            .unwrap_err()
            .to_string(),
        TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
            .unwrap_err()
            .to_string(),
        Baggage::parse("no-equals").unwrap_err().to_string(),
        Baggage::new()
            .insert("bad key", "v")
            .unwrap_err()
            .to_string(),
    ];
    insta::assert_snapshot!(texts.join("\n"), @r#"
    a handler with id "metrics" is already attached
    no handler with id "metrics" is attached
    invalid event name segment "b c": use ASCII letters, digits, '_' or '-'
    a correlation id may hold printable ASCII only, without spaces (byte 0x20 at 3)
    a correlation id has at most 128 characters, got 200
    invalid trace id in traceparent
    malformed baggage member "no-equals"
    invalid baggage key "bad key"
    "#);
}

#[test]
fn event_names_in_both_forms() {
    let stop = catalog::BRIDGE_CALL.stop();
    insta::assert_snapshot!(format!("{stop}\n{stop:?}\n{:?}", catalog::HANDLER_FAILURE), @r"
    dspex.bridge.call.stop
    [:dspex, :bridge, :call, :stop]
    [:dspex, :telemetry, :handler, :failure]
    ");
}
