//! The model configuration as Triton hands it to a backend (`TRITONBACKEND_ModelConfig`, the
//! JSON form of `config.pbtxt` after auto-completion), read once into typed structs.
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::dtype::DataType;
use crate::error::{Error, Result};

/// The parts of a model configuration a backend needs; unknown fields are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub backend: String,
    #[serde(default, deserialize_with = "int")]
    pub max_batch_size: i64,
    #[serde(default)]
    pub input: Vec<TensorConfig>,
    #[serde(default)]
    pub output: Vec<TensorConfig>,
    #[serde(default)]
    pub instance_group: Vec<InstanceGroup>,
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    /// Present when the configuration enables the dynamic batcher.
    #[serde(default)]
    pub dynamic_batching: Option<serde_json::Value>,
}

/// One `input` or `output` entry.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TensorConfig {
    pub name: String,
    /// As spelled in the configuration (`TYPE_FP32`); see [`TensorConfig::dtype`].
    pub data_type: String,
    #[serde(default, deserialize_with = "int_list")]
    pub dims: Vec<i64>,
    #[serde(default)]
    pub optional: bool,
}

impl TensorConfig {
    pub fn dtype(&self) -> Result<DataType> {
        DataType::parse(&self.data_type).ok_or_else(|| {
            Error::invalid_arg(format!(
                "tensor '{}' has unknown data_type '{}'",
                self.name, self.data_type
            ))
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct InstanceGroup {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, deserialize_with = "int")]
    pub count: i64,
    #[serde(default, deserialize_with = "int_list")]
    pub gpus: Vec<i64>,
}

/// A `parameters` entry: `{ key: "radius" value: { string_value: "0.1" } }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Parameter {
    #[serde(default)]
    pub string_value: String,
}

impl ModelConfig {
    /// Parse the JSON Triton serializes; errors name the model configuration.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| Error::invalid_arg(format!("cannot read the model configuration: {e}")))
    }

    pub fn input(&self, name: &str) -> Option<&TensorConfig> {
        self.input.iter().find(|t| t.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorConfig> {
        self.output.iter().find(|t| t.name == name)
    }

    /// `parameters` as plain key/value pairs, in key order.
    pub fn parameter_values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.string_value.as_str()))
    }
}

/// Protobuf's JSON mapping writes 64-bit integers as strings; Triton writes numbers. Take both.
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrText {
    Int(i64),
    Text(String),
}

impl IntOrText {
    fn value<E: serde::de::Error>(self) -> std::result::Result<i64, E> {
        match self {
            IntOrText::Int(v) => Ok(v),
            IntOrText::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| E::custom(format!("'{s}' is not an integer"))),
        }
    }
}

fn int<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    IntOrText::deserialize(d)?.value()
}

fn int_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<i64>, D::Error> {
    Vec::<IntOrText>::deserialize(d)?
        .into_iter()
        .map(IntOrText::value)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{
        "name": "exatrkx", "backend": "exatrkx", "max_batch_size": 0,
        "input": [
            {"name": "FEATURES", "data_type": "TYPE_FP32", "dims": [-1, -1], "optional": false},
            {"name": "MODULE_ID", "data_type": "TYPE_INT64", "dims": ["-1"], "optional": true}
        ],
        "output": [{"name": "LABELS", "data_type": "TYPE_INT64", "dims": [-1]}],
        "instance_group": [{"name": "exatrkx_0", "kind": "KIND_CPU", "count": 2, "gpus": []}],
        "parameters": {"radius": {"string_value": "0.2"}, "knn": {"string_value": "50"}},
        "version_policy": {"latest": {"num_versions": 1}}
    }"#;

    #[test]
    fn reads_triton_json_with_numbers_or_strings() {
        let cfg = ModelConfig::from_json(JSON).unwrap();
        assert_eq!(cfg.max_batch_size, 0);
        assert_eq!(cfg.input("MODULE_ID").unwrap().dims, [-1]);
        assert!(cfg.input("MODULE_ID").unwrap().optional);
        assert_eq!(
            cfg.input("FEATURES").unwrap().dtype().unwrap(),
            DataType::Fp32
        );
        assert_eq!(cfg.instance_group[0].count, 2);
        assert!(cfg.dynamic_batching.is_none());
        let params: Vec<_> = cfg.parameter_values().collect();
        assert_eq!(params, [("knn", "50"), ("radius", "0.2")]);
    }

    #[test]
    fn bad_json_and_bad_types_are_named() {
        let err = ModelConfig::from_json("{ not json").unwrap_err();
        assert!(err.message().contains("model configuration"), "{err}");
        let t = TensorConfig {
            name: "X".into(),
            data_type: "TYPE_FLOAT".into(),
            ..Default::default()
        };
        let err = t.dtype().unwrap_err().to_string();
        assert!(err.contains("'X'") && err.contains("TYPE_FLOAT"), "{err}");
    }

    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// JSON values whose object keys are mostly the configuration's own field names, so that
    /// the generated documents reach the typed fields with values of every kind.
    fn config_like_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("name".to_string()),
            Just("max_batch_size".to_string()),
            Just("input".to_string()),
            Just("output".to_string()),
            Just("dims".to_string()),
            Just("data_type".to_string()),
            Just("optional".to_string()),
            Just("parameters".to_string()),
            Just("string_value".to_string()),
            Just("instance_group".to_string()),
            Just("count".to_string()),
            Just("gpus".to_string()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[-0-9a-zA-Z_ .]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_text_is_read_or_refused_without_panic(text in "\\PC{0,200}") {
            if let Err(e) = ModelConfig::from_json(&text) {
                prop_assert!(e.message().contains("model configuration"));
            }
        }

        #[test]
        fn any_json_document_is_read_or_refused_without_panic(doc in config_like_json()) {
            if let Ok(cfg) = ModelConfig::from_json(&doc.to_string()) {
                for t in cfg.input.iter().chain(&cfg.output) {
                    // The typed accessor refuses unknown types by name, never panics.
                    if let Err(e) = t.dtype() {
                        prop_assert!(e.message().contains(&t.name));
                    }
                }
            }
        }

        #[test]
        fn integers_read_the_same_as_numbers_or_as_text(
            max_batch in any::<i64>(),
            dims in prop::collection::vec(any::<i64>(), 0..4),
            as_text in any::<bool>(),
            params in prop::collection::btree_map("[a-z_]{1,12}", "\\PC{0,16}", 0..6),
        ) {
            let int = |v: i64| if as_text { json!(v.to_string()) } else { json!(v) };
            let doc = json!({
                "name": "m",
                "max_batch_size": int(max_batch),
                "input": [{"name": "X", "data_type": "TYPE_FP32",
                           "dims": dims.iter().map(|&d| int(d)).collect::<Vec<_>>()}],
                "parameters": params.iter()
                    .map(|(k, v)| (k.clone(), json!({"string_value": v})))
                    .collect::<serde_json::Map<_, _>>(),
            });
            let cfg = ModelConfig::from_json(&doc.to_string()).unwrap();
            prop_assert_eq!(cfg.max_batch_size, max_batch);
            prop_assert_eq!(&cfg.input("X").unwrap().dims, &dims);
            let read: Vec<(String, String)> = cfg
                .parameter_values()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let want: Vec<(String, String)> = params.into_iter().collect();
            prop_assert_eq!(read, want);
        }
    }
}
