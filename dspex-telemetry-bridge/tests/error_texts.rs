//! Snapshot of the bridge's error messages.

use std::time::Duration;

use dspex_telemetry_bridge::{BridgeError, SessionError, Signature};

#[test]
fn error_messages() {
    let errors = [
        BridgeError::QueueFull { depth: 1000 },
        BridgeError::DeadlineExceeded(Duration::from_millis(1500)),
        BridgeError::WorkerCrashed("signal: 9 (SIGKILL)".into()),
        BridgeError::Python {
            kind: "ValueError".into(),
            message: "bad input".into(),
            traceback: None,
        },
        BridgeError::Protocol("malformed frame: expected value at line 1 column 1".into()),
        BridgeError::RequestTooLarge { max: 16_777_216 },
        BridgeError::ShutDown,
        BridgeError::InstanceLost,
        BridgeError::Contract(vec![
            "missing input `question`".into(),
            "input `k` is not int".into(),
        ]),
        BridgeError::Cast {
            field: "confidence".into(),
            to_type: "float",
            reason: "cannot cast str \"high\" to float".into(),
        },
    ];
    let mut text: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {e}", e.kind()))
        .collect();
    text.push(SessionError::NotFound("s-1".into()).to_string());
    text.push(Signature::parse("q -> a: decimal").unwrap_err().to_string());
    insta::assert_snapshot!(text.join("\n"));
}
