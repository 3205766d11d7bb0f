//! Python objects held by a worker: created once, their methods called many times.

use dspex_telemetry_core::{catalog, metadata};
use serde_json::{Map, Value, json};

use crate::args::Args;
use crate::error::BridgeError;
use crate::pool::Pool;

/// A Python object living in one worker (a DSPy `Predict`, a model, a client). Its methods run
/// in that worker; if the worker is replaced, the object is gone and calls fail with
/// [`BridgeError::InstanceLost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyObject {
    worker_id: usize,
    generation: u64,
    id: u64,
    class: String,
}

impl PyObject {
    /// `module.Class` of the object.
    pub fn class(&self) -> &str {
        &self.class
    }
}

impl Pool {
    /// Creates `module.class(*args, **kwargs)` in a worker, as a bridge call with function
    /// `class`. `args` is a `Vec<Value>` of positional arguments, a `Map` of keyword
    /// arguments, or an [`Args`] with both.
    ///
    /// ```no_run
    /// # async fn run(pool: dspex_telemetry_bridge::Pool) -> Result<(), dspex_telemetry_bridge::BridgeError> {
    /// let counter = pool.create_instance("collections", "Counter", vec![serde_json::json!("hello")]).await?;
    /// let top = pool.call_method(&counter, "most_common", vec![serde_json::json!(1)]).await?;
    /// assert_eq!(top, serde_json::json!([["l", 2]]));
    /// pool.drop_instance(&counter).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_instance(
        &self,
        module: &str,
        class: &str,
        args: impl Into<Args>,
    ) -> Result<PyObject, BridgeError> {
        let (args, kwargs) = args.into().into_parts();
        let dispatcher = self.config().dispatcher.clone();
        let md =
            metadata! { "module" => module, "function" => class, "operation" => "create_instance" };
        dispatcher
            .try_span_async(&catalog::BRIDGE_CALL, md, async {
                let mut message = Map::new();
                message.insert("op".into(), json!("create_instance"));
                message.insert("module".into(), json!(module));
                message.insert("class".into(), json!(class));
                message.insert("args".into(), Value::Array(args));
                if !kwargs.is_empty() {
                    message.insert("kwargs".into(), Value::Object(kwargs));
                }
                let name = || format!("python {module}.{class}");
                match self
                    .submit_to("create_instance", message, None, None, name)
                    .await
                {
                    Ok(reply) => {
                        let object = reply.result.as_u64().map(|id| PyObject {
                            worker_id: reply.worker_id,
                            generation: reply.generation,
                            id,
                            class: format!("{module}.{class}"),
                        });
                        let ok = object.is_some();
                        let result = object.ok_or_else(|| {
                            BridgeError::Protocol("create_instance returned no id".into())
                        });
                        (
                            result,
                            metadata! { "success" => ok, "worker_id" => reply.worker_id },
                        )
                    }
                    Err(e) => {
                        let kind = e.kind();
                        (Err(e), metadata! { "success" => false, "error" => kind })
                    }
                }
            })
            .await
    }

    /// Calls `object.method(*args, **kwargs)` in the worker holding it, as a bridge call with
    /// module `module.Class` and function `method`. `args` is a `Vec<Value>` of positional
    /// arguments, a `Map` of keyword arguments, or an [`Args`] with both.
    pub async fn call_method(
        &self,
        object: &PyObject,
        method: &str,
        args: impl Into<Args>,
    ) -> Result<Value, BridgeError> {
        let (args, kwargs) = args.into().into_parts();
        let dispatcher = self.config().dispatcher.clone();
        let md = metadata! { "module" => object.class.as_str(), "function" => method, "operation" => "call_method" };
        dispatcher
            .try_span_async(&catalog::BRIDGE_CALL, md, async {
                let mut message = Map::new();
                message.insert("op".into(), json!("call_method"));
                message.insert("instance".into(), json!(object.id));
                message.insert("method".into(), json!(method));
                message.insert("args".into(), Value::Array(args));
                if !kwargs.is_empty() {
                    message.insert("kwargs".into(), Value::Object(kwargs));
                }
                let pin = Some((object.worker_id, object.generation));
                let name = || format!("python {}.{method}", object.class);
                match self
                    .submit_to("call_method", message, None, pin, name)
                    .await
                {
                    Ok(reply) => (
                        Ok(reply.result),
                        metadata! { "success" => true, "worker_id" => reply.worker_id },
                    ),
                    Err(e) => {
                        let kind = e.kind();
                        (Err(e), metadata! { "success" => false, "error" => kind })
                    }
                }
            })
            .await
    }

    /// Releases `object` in its worker; `false` if it was already gone.
    pub async fn drop_instance(&self, object: &PyObject) -> Result<bool, BridgeError> {
        let mut message = Map::new();
        message.insert("op".into(), json!("drop_instance"));
        message.insert("instance".into(), json!(object.id));
        match self
            .submit_to(
                "drop_instance",
                message,
                None,
                Some((object.worker_id, object.generation)),
                || "python drop_instance".into(),
            )
            .await
        {
            Ok(reply) => Ok(reply.result.as_bool().unwrap_or(false)),
            Err(BridgeError::InstanceLost) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
