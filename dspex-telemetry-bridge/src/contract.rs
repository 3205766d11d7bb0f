//! Contracts: a declared signature such as `"question -> answer"`, the validation of a call's
//! inputs against it and the casting of its outputs to the declared types, each a span.

use dspex_telemetry_core::{Dispatcher, catalog, metadata};
use serde_json::{Map, Value};

use crate::call::type_name;
use crate::error::BridgeError;
use crate::pool::Pool;

/// A field's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Any JSON value, unchanged.
    Any,
    /// Text.
    Str,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// A boolean.
    Bool,
    /// A list.
    List,
    /// A mapping.
    Dict,
}

impl FieldType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "" | "any" => FieldType::Any,
            "str" => FieldType::Str,
            "int" => FieldType::Int,
            "float" => FieldType::Float,
            "bool" => FieldType::Bool,
            "list" => FieldType::List,
            "dict" => FieldType::Dict,
            _ => return None,
        })
    }

    /// The type's name in signatures.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Any => "any",
            FieldType::Str => "str",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::List => "list",
            FieldType::Dict => "dict",
        }
    }
}

/// Why a signature did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signature {signature:?}: {reason}")]
pub struct SignatureError {
    signature: String,
    reason: String,
}

/// A DSPy-style signature: input fields `->` output fields, each optionally typed
/// (`"question, context -> answer: str, confidence: float"`).
///
/// ```
/// use dspex_telemetry_bridge::{FieldType, Signature};
/// let sig = Signature::parse("question -> answer: str, confidence: float").unwrap();
/// assert_eq!(sig.inputs()[0].0, "question");
/// assert_eq!(sig.outputs()[1], ("confidence".to_owned(), FieldType::Float));
/// assert!(Signature::parse("no arrow").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    text: String,
    inputs: Vec<(String, FieldType)>,
    outputs: Vec<(String, FieldType)>,
}

fn fields(part: &str, signature: &str) -> Result<Vec<(String, FieldType)>, SignatureError> {
    let error = |reason: String| SignatureError {
        signature: signature.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    for field in part.split(',').map(str::trim) {
        let (name, ty) = match field.split_once(':') {
            Some((n, t)) => (n.trim(), t.trim()),
            None => (field, ""),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(error(format!("bad field name {name:?}")));
        }
        let ty =
            FieldType::parse(ty).ok_or_else(|| error(format!("unknown type {ty:?} for {name}")))?;
        out.push((name.to_owned(), ty));
    }
    Ok(out)
}

impl Signature {
    /// Parses `"inputs -> outputs"`.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let (inputs, outputs) = text.split_once("->").ok_or_else(|| SignatureError {
            signature: text.to_owned(),
            reason: "expected `inputs -> outputs`".into(),
        })?;
        Ok(Signature {
            text: text.trim().to_owned(),
            inputs: fields(inputs, text)?,
            outputs: fields(outputs, text)?,
        })
    }

    /// The input fields.
    pub fn inputs(&self) -> &[(String, FieldType)] {
        &self.inputs
    }

    /// The output fields.
    pub fn outputs(&self) -> &[(String, FieldType)] {
        &self.outputs
    }

    /// The signature's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Checks `inputs` against the signature as a `[:dspex, :contract, :validate]` span: every
    /// input present, of its declared type. Returns the violations.
    pub fn validate(
        &self,
        dispatcher: &Dispatcher,
        inputs: &Map<String, Value>,
    ) -> Result<(), BridgeError> {
        dispatcher.try_span(
            &catalog::CONTRACT_VALIDATE,
            metadata! { "signature" => self.text.as_str() },
            || {
                let mut violations = Vec::new();
                for (name, ty) in &self.inputs {
                    match inputs.get(name) {
                        None | Some(Value::Null) => {
                            violations.push(format!("missing input `{name}`"))
                        }
                        Some(v) if !matches_type(v, *ty) => {
                            violations.push(format!("input `{name}` is not {}", ty.name()))
                        }
                        Some(_) => {}
                    }
                }
                let n = violations.len();
                let result = if violations.is_empty() {
                    Ok(())
                } else {
                    Err(BridgeError::Contract(violations))
                };
                (result, metadata! { "valid" => n == 0, "violations" => n })
            },
        )
    }

    /// Casts each declared output of `result` (a mapping) to its type, each a
    /// `[:dspex, :types, :cast]` span.
    pub fn cast_outputs(
        &self,
        dispatcher: &Dispatcher,
        mut result: Value,
    ) -> Result<Value, BridgeError> {
        let Some(object) = result.as_object_mut() else {
            return Err(BridgeError::Cast {
                field: "<result>".into(),
                to_type: "dict",
                reason: format!("the result is not a mapping: {result}"),
            });
        };
        for (name, ty) in &self.outputs {
            let Some(value) = object.get_mut(name) else {
                return Err(BridgeError::Cast {
                    field: name.clone(),
                    to_type: ty.name(),
                    reason: "missing from the result".into(),
                });
            };
            let from = type_name(value);
            let cast = dispatcher.try_span(
                &catalog::TYPES_CAST,
                metadata! { "field" => name.as_str(), "from_type" => from, "to_type" => ty.name() },
                || {
                    let cast = cast(value, *ty).ok_or_else(|| BridgeError::Cast {
                        field: name.clone(),
                        to_type: ty.name(),
                        reason: format!("cannot cast {from} {value} to {}", ty.name()),
                    });
                    let ok = cast.is_ok();
                    (cast, metadata! { "success" => ok })
                },
            )?;
            *value = cast;
        }
        Ok(result)
    }
}

fn matches_type(v: &Value, ty: FieldType) -> bool {
    match ty {
        FieldType::Any => true,
        FieldType::Str => v.is_string(),
        FieldType::Int => v.is_i64() || v.is_u64(),
        FieldType::Float => v.is_number(),
        FieldType::Bool => v.is_boolean(),
        FieldType::List => v.is_array(),
        FieldType::Dict => v.is_object(),
    }
}

/// `value` as `ty`, where a faithful conversion exists.
fn cast(value: &Value, ty: FieldType) -> Option<Value> {
    if matches_type(value, ty) {
        return Some(value.clone());
    }
    match (ty, value) {
        (FieldType::Str, v) => Some(Value::String(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
        (FieldType::Int, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
        (FieldType::Int, Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .map(|f| Value::from(f as i64)),
        (FieldType::Float, Value::String(s)) => s.trim().parse::<f64>().ok().map(Value::from),
        (FieldType::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(Value::Bool(true)),
            "false" | "no" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

impl Pool {
    /// The spec's `Predict`: validates `inputs` against `signature`, calls
    /// `module.function(**inputs)` as a bridge call, and casts the declared outputs of its
    /// result (a mapping). Three kinds of span, one trace.
    pub async fn predict(
        &self,
        signature: &Signature,
        module: &str,
        function: &str,
        inputs: Map<String, Value>,
    ) -> Result<Value, BridgeError> {
        let dispatcher = &self.config().dispatcher;
        signature.validate(dispatcher, &inputs)?;
        let result = self
            .call_with_kwargs(module, function, Vec::new(), inputs)
            .await?;
        signature.cast_outputs(dispatcher, result)
    }
}
