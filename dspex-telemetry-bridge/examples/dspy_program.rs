//! A real DSPy program through the pool: `ChainOfThought("question -> answer")` called with a
//! keyword argument, its prediction back as fields, and the LM calls it made as events with
//! their model, duration and tokens.
//!
//! Offline by default (litellm's mock response stands in for the model); set
//! `DSPEX_LM_MODEL` (`openai/gpt-4o-mini`, with `OPENAI_API_KEY`) for a real one. Needs an
//! interpreter with `dspy` installed: `DSPEX_PYTHON` (default `python3`).
//!
//! Run: `cargo xtask peers && DSPEX_PYTHON=target/test-peers/dspy-venv/bin/python cargo run -p dspex-telemetry-bridge --example dspy_program`

use std::path::PathBuf;

use dspex_telemetry_core::{Dispatcher, Event, catalog};

/// The guide's DSPy sample (docs/bridge.md, "DSPy programs"), as written there: a test keeps
/// the two equal and runs this.
pub async fn run(
    python: String,
    python_path: PathBuf,
) -> Result<serde_json::Map<String, serde_json::Value>, Box<dyn std::error::Error>> {
    use dspex_telemetry_bridge::{Args, DspyModule, Pool, PoolConfig};

    let pool = Pool::start(PoolConfig {
        python,                             // an interpreter with dspy installed
        python_path: vec![python_path],     // where dspy_setup.py lives
        preload: vec!["dspy_setup".into()], // imports DSPy and configures its LM
        ..PoolConfig::default()
    })
    .await?;
    let qa = DspyModule::chain_of_thought(&pool, "question -> answer").await?;
    let question = "What carries calls from Rust into Python?";
    let prediction = qa.execute(Args::new().kwarg("question", question)).await?;
    let (answer, reasoning) = (&prediction["answer"], &prediction["reasoning"]);
    println!("{answer} (because: {reasoning})");
    pool.shutdown().await;
    Ok(prediction)
}

#[allow(dead_code)] // the tests include this file for `run`
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    Dispatcher::global().attach("print-lm", catalog::LM_CALL, |e: &Event<'_>| {
        let m = e.measurements();
        let tokens = |k| m.get(k).map_or("?".into(), |n| n.as_f64().to_string());
        println!(
            "LM call: model={} status={} {:.1} ms, tokens prompt={} completion={}",
            e.metadata()
                .get("model")
                .map(ToString::to_string)
                .unwrap_or_default(),
            e.metadata()
                .get("status")
                .map(ToString::to_string)
                .unwrap_or_default(),
            m.get("duration").map_or(0.0, |d| d.as_f64() / 1e6),
            tokens("prompt_tokens"),
            tokens("completion_tokens"),
        );
    })?;
    let python = std::env::var("DSPEX_PYTHON").unwrap_or_else(|_| "python3".into());
    let python_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    run(python, python_path).await?;
    Ok(())
}
