//! The guide's DSPy samples (docs/bridge.md, "DSPy programs") run as written: the Python
//! module and the Rust code there are the `dspy_program` example's, and the example runs here
//! against real DSPy, offline.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dspex_telemetry_core::{Dispatcher, Event, catalog};

#[path = "../examples/dspy_program.rs"]
mod example;

type LmCall = (String, Option<f64>);

const GUIDE: &str = include_str!("../../docs/bridge.md");
const EXAMPLE: &str = include_str!("../examples/dspy_program.rs");
const SETUP: &str = include_str!("../examples/python/dspy_setup.py");

/// The code blocks of the guide's section `heading` whose fence starts with `fence`.
fn blocks(heading: &str, fence: &str) -> Vec<String> {
    let section = GUIDE
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading:?} in docs/bridge.md"));
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .filter(|block| block.starts_with(fence))
        .map(|block| {
            block
                .split_once('\n')
                .map_or("", |(_, body)| body)
                .to_owned()
        })
        .collect()
}

#[test]
fn the_guides_samples_are_the_examples() {
    let python = blocks("DSPy programs", "python");
    assert_eq!(python.len(), 1);
    assert_eq!(
        python[0], SETUP,
        "docs/bridge.md's dspy_setup.py and the example's differ"
    );

    let rust = blocks("DSPy programs", "rust");
    assert_eq!(rust.len(), 1);
    // The guide's lines, without rustdoc's hidden ones (`# …`).
    let shown: Vec<&str> = rust[0]
        .lines()
        .filter(|l| !(l.starts_with("# ") || *l == "#"))
        .collect();
    // The example's `run`, from its `use` to before its `Ok(prediction)`, unindented.
    let body: Vec<&str> = EXAMPLE
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("use dspex_telemetry_bridge::"))
        .take_while(|l| l.trim() != "Ok(prediction)")
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    assert!(body.len() > 10, "the example's run() was not found");
    assert_eq!(
        shown, body,
        "docs/bridge.md's DSPy sample and the example's run() differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_dspy_sample_runs_against_real_dspy() {
    let peers = std::env::var_os("DSPEX_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers"));
    let python = peers.join("dspy-venv/bin/python");
    assert!(
        python.is_file(),
        "no DSPy environment at {}: run `cargo xtask peers` (or `cargo xtask test`), which installs dspy",
        python.display()
    );
    // The example's events go to the global dispatcher (the sample's default).
    // (model, total tokens) of each LM call.
    let calls: Arc<Mutex<Vec<LmCall>>> = Arc::default();
    let sink = calls.clone();
    Dispatcher::global()
        .attach("docs-lm", catalog::LM_CALL, move |e: &Event<'_>| {
            let model = e.metadata().get("model").map(ToString::to_string);
            let tokens = e.measurements().get("total_tokens").map(|n| n.as_f64());
            sink.lock()
                .unwrap()
                .push((model.unwrap_or_default(), tokens));
        })
        .unwrap();
    let prediction = example::run(
        python.to_string_lossy().into_owned(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python"),
    )
    .await
    .expect("the guide's DSPy sample runs");
    assert_eq!(prediction["answer"], "The bridge.");
    assert_eq!(prediction["reasoning"], "The pool runs Python workers.");
    assert_eq!(
        *calls.lock().unwrap(),
        vec![("openai/gpt-4o-mini".to_owned(), Some(30.0))]
    );
}
