//! The arguments of a Python call: positional and keyword.

use serde_json::{Map, Value};

/// Positional and keyword arguments of a Python call, `f(*positional, **keywords)`.
///
/// A `Vec<Value>` is positional arguments, a `Map` keyword arguments; or build both:
///
/// ```
/// use dspex_telemetry_bridge::Args;
/// use serde_json::json;
/// let args = Args::new().arg(json!([3, 1, 2])).kwarg("reverse", true);
/// assert_eq!(args.positional(), &[json!([3, 1, 2])]);
/// assert_eq!(args.keywords()["reverse"], json!(true));
/// let same: Args = vec![json!("abc")].into();
/// assert!(same.keywords().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    positional: Vec<Value>,
    keywords: Map<String, Value>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Args {
        Args::default()
    }

    /// Adds a positional argument.
    pub fn arg(mut self, value: impl Into<Value>) -> Args {
        self.positional.push(value.into());
        self
    }

    /// Adds (or replaces) a keyword argument.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Into<Value>) -> Args {
        self.keywords.insert(name.into(), value.into());
        self
    }

    /// The positional arguments.
    pub fn positional(&self) -> &[Value] {
        &self.positional
    }

    /// The keyword arguments.
    pub fn keywords(&self) -> &Map<String, Value> {
        &self.keywords
    }

    /// Both, taken apart.
    pub fn into_parts(self) -> (Vec<Value>, Map<String, Value>) {
        (self.positional, self.keywords)
    }
}

impl From<Vec<Value>> for Args {
    fn from(positional: Vec<Value>) -> Args {
        Args {
            positional,
            keywords: Map::new(),
        }
    }
}

impl From<Map<String, Value>> for Args {
    fn from(keywords: Map<String, Value>) -> Args {
        Args {
            positional: Vec::new(),
            keywords,
        }
    }
}

impl From<(Vec<Value>, Map<String, Value>)> for Args {
    fn from((positional, keywords): (Vec<Value>, Map<String, Value>)) -> Args {
        Args {
            positional,
            keywords,
        }
    }
}

impl From<()> for Args {
    fn from((): ()) -> Args {
        Args::default()
    }
}
