//! DSPy programs held by a worker: the spec's `Predict.new(signature)` then
//! `execute(predictor, %{question: …})`, in Rust.

use serde_json::{Map, Value};

use crate::args::Args;
use crate::error::BridgeError;
use crate::instance::PyObject;
use crate::pool::Pool;

/// A DSPy module (`dspy.Predict`, `dspy.ChainOfThought`, your own `dspy.Module`) living in one
/// worker. [`DspyModule::execute`] calls it with keyword arguments, as DSPy modules are
/// called, and returns its `Prediction` as a map of its fields.
///
/// The worker configures nothing: configure DSPy (`dspy.configure(lm=…)`) in a module the pool
/// preloads. While DSPy is imported in a worker, its module and LM calls are reported: LM calls
/// as `[:dspex, :lm, :call]` events (model, duration, tokens) and, while a handler listens for
/// Python spans, module and LM spans under the bridge call.
///
/// ```no_run
/// # async fn run(pool: dspex_telemetry_bridge::Pool) -> Result<(), dspex_telemetry_bridge::BridgeError> {
/// use dspex_telemetry_bridge::{Args, DspyModule};
/// let qa = DspyModule::predict(&pool, "question -> answer").await?;
/// let prediction = qa.execute(Args::new().kwarg("question", "What is 2 + 2?")).await?;
/// println!("{}", prediction["answer"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DspyModule {
    pool: Pool,
    object: PyObject,
}

impl DspyModule {
    /// `dspy.Predict(signature)`, with DSPy's own signature text (`"question -> answer"`,
    /// `"context: list[str], question -> answer: int"`).
    pub async fn predict(pool: &Pool, signature: &str) -> Result<DspyModule, BridgeError> {
        DspyModule::new(pool, "dspy", "Predict", vec![Value::from(signature)]).await
    }

    /// `dspy.ChainOfThought(signature)`: its prediction holds `reasoning` besides the
    /// signature's outputs.
    pub async fn chain_of_thought(pool: &Pool, signature: &str) -> Result<DspyModule, BridgeError> {
        DspyModule::new(pool, "dspy", "ChainOfThought", vec![Value::from(signature)]).await
    }

    /// `module.class(*args, **kwargs)`: any DSPy module, yours included.
    pub async fn new(
        pool: &Pool,
        module: &str,
        class: &str,
        args: impl Into<Args>,
    ) -> Result<DspyModule, BridgeError> {
        let object = pool.create_instance(module, class, args).await?;
        Ok(DspyModule {
            pool: pool.clone(),
            object,
        })
    }

    /// Calls the module with `inputs` (keyword arguments: a `Map`, or [`Args`]) as a bridge
    /// call, and returns the prediction's fields. A result that is not a mapping is
    /// [`BridgeError::Cast`].
    pub async fn execute(
        &self,
        inputs: impl Into<Args>,
    ) -> Result<Map<String, Value>, BridgeError> {
        match self
            .pool
            .call_method(&self.object, "__call__", inputs)
            .await?
        {
            Value::Object(fields) => Ok(fields),
            other => Err(BridgeError::Cast {
                field: "<result>".into(),
                to_type: "dict",
                reason: format!(
                    "{} returned {}, not a prediction",
                    self.object.class(),
                    crate::call::type_name(&other)
                ),
            }),
        }
    }

    /// The Python object.
    pub fn object(&self) -> &PyObject {
        &self.object
    }
}
