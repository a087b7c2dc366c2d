//! Model state: the model configuration checked against the `exatrkx` model contract
//! (docs/SERVING.md) and its `parameters` turned into a `PipelineConfig`, once per model.
use std::path::{Path, PathBuf};

use exatrkx_pipeline::{GraphMethod, PipelineConfig, PipelineError};
use triton::{DataType, Error, ModelConfig, Result, TensorConfig};

pub const FEATURES: &str = "FEATURES";
pub const MODULE_ID: &str = "MODULE_ID";
pub const LABELS: &str = "LABELS";
pub const EDGE_INDEX: &str = "EDGE_INDEX";
pub const EDGE_SCORES: &str = "EDGE_SCORES";
pub const TRACKS: &str = "TRACKS";
/// Columns of `TRACKS`: label, n_spacepoints, pt, eta, phi, d0, z0, chi2_ndf.
pub const TRACK_COLUMNS: usize = 8;

/// Placeholder Triton does not expand itself; we replace it by the model folder.
pub const MODEL_DIRECTORY_VAR: &str = "$$TRITON_MODEL_DIRECTORY";

const FILE_PARAMETERS: [&str; 6] = [
    "embedding_model",
    "filter_model",
    "gnn_model",
    "gnn_refine_model",
    "module_map",
    "track_model",
];

/// The contract of one tensor: data type and dims (`-1` = any size).
struct Contract {
    name: &'static str,
    dtype: DataType,
    dims: &'static [i64],
    required: bool,
}

const INPUTS: [Contract; 2] = [
    Contract {
        name: FEATURES,
        dtype: DataType::Fp32,
        dims: &[-1, -1],
        required: true,
    },
    Contract {
        name: MODULE_ID,
        dtype: DataType::Int64,
        dims: &[-1],
        required: false,
    },
];

const OUTPUTS: [Contract; 4] = [
    Contract {
        name: LABELS,
        dtype: DataType::Int64,
        dims: &[-1],
        required: true,
    },
    Contract {
        name: EDGE_INDEX,
        dtype: DataType::Int64,
        dims: &[2, -1],
        required: false,
    },
    Contract {
        name: EDGE_SCORES,
        dtype: DataType::Fp32,
        dims: &[-1],
        required: false,
    },
    Contract {
        name: TRACKS,
        dtype: DataType::Fp32,
        dims: &[-1, TRACK_COLUMNS as i64],
        required: false,
    },
];

/// What every instance of the model shares.
#[derive(Clone, Debug)]
pub struct ModelSettings {
    pub model_name: String,
    /// The pipeline settings; `device` is chosen per instance.
    pub pipeline: PipelineConfig,
    /// `FEATURES` dims as configured (`[-1, -1]`, or a fixed column count).
    pub feature_dims: Vec<i64>,
    /// Whether the configuration declares the optional input `MODULE_ID`.
    pub accepts_module_id: bool,
    /// Outputs the configuration declares (LABELS first).
    pub outputs: Vec<String>,
}

/// Map a pipeline error to a Triton error code: bad input or settings are the caller's fault.
pub fn pipeline_error(e: PipelineError) -> Error {
    let message = without_backtrace(&e.to_string());
    match e {
        PipelineError::Input(_) | PipelineError::Config(_) => Error::invalid_arg(message),
        PipelineError::ModelLoad { .. } => Error::not_found(message),
        PipelineError::Device(_) => Error::unavailable(message),
        PipelineError::Torch { .. } => Error::internal(message),
    }
}

/// libtorch's messages end in the C++ stack frames that threw ("Exception raised from ...",
/// dozens of lines), and TorchScript's put a traceback of the scripted code before the actual
/// error. Clients and the server log get the reason: the first line and, for TorchScript, the
/// error line that ends the traceback.
pub fn without_backtrace(message: &str) -> String {
    let reason = message
        .find("Exception raised from")
        .map_or(message, |at| &message[..at]);
    // Also when the message was formatted with `{:?}` (newlines escaped).
    let reason = reason.trim_end().trim_end_matches("\\n").trim_end();
    if reason.contains("Traceback of TorchScript") {
        let mut lines = reason.lines().map(str::trim).filter(|l| !l.is_empty());
        if let (Some(first), Some(last)) = (lines.next(), lines.next_back()) {
            return format!("{first} {last}");
        }
    }
    reason.to_string()
}

fn check_tensor(kind: &str, t: &TensorConfig, c: &Contract) -> Result<()> {
    let dtype = t.dtype()?;
    if dtype != c.dtype {
        return Err(Error::invalid_arg(format!(
            "{kind} '{}' must have data_type TYPE_{}, not {}",
            t.name, c.dtype, t.data_type
        )));
    }
    // FEATURES may fix its column count; every other dim must be as in the contract.
    let fits = t.dims.len() == c.dims.len()
        && t.dims
            .iter()
            .zip(c.dims)
            .enumerate()
            .all(|(i, (&d, &want))| d == want || (c.name == FEATURES && i == 1 && d > 0));
    if !fits {
        return Err(Error::invalid_arg(format!(
            "{kind} '{}' must have dims {:?}, not {:?}",
            t.name, c.dims, t.dims
        )));
    }
    Ok(())
}

fn check_tensors(kind: &str, declared: &[TensorConfig], contract: &[Contract]) -> Result<()> {
    for t in declared {
        let Some(c) = contract.iter().find(|c| c.name == t.name) else {
            let known: Vec<_> = contract.iter().map(|c| c.name).collect();
            return Err(Error::invalid_arg(format!(
                "{kind} '{}' is not part of the exatrkx model contract (known: {})",
                t.name,
                known.join(", ")
            )));
        };
        check_tensor(kind, t, c)?;
        if kind == "input" && !c.required && !t.optional {
            return Err(Error::invalid_arg(format!(
                "input '{}' must be declared with optional: true",
                t.name
            )));
        }
    }
    for c in contract.iter().filter(|c| c.required) {
        if !declared.iter().any(|t| t.name == c.name) {
            return Err(Error::invalid_arg(format!(
                "the model configuration must declare {kind} '{}' (TYPE_{} {:?})",
                c.name, c.dtype, c.dims
            )));
        }
    }
    Ok(())
}

/// Expand `$$TRITON_MODEL_DIRECTORY`; a file parameter then becomes relative to the version
/// folder, where the pipeline looks for model files.
fn resolve_value(key: &str, value: &str, model_dir: &Path, version_dir: &Path) -> Result<String> {
    if !value.contains(MODEL_DIRECTORY_VAR) {
        return Ok(value.to_string());
    }
    if key == "gnn_refine_model" {
        // one file per refining pass
        let files = value
            .split(',')
            .map(|file| resolve_file(key, value, file, model_dir, version_dir))
            .collect::<Result<Vec<_>>>()?;
        return Ok(files.join(","));
    }
    resolve_file(key, value, value, model_dir, version_dir)
}

/// `file`, one file of the parameter `key` = `value`, resolved as `resolve_value` says.
fn resolve_file(
    key: &str,
    value: &str,
    file: &str,
    model_dir: &Path,
    version_dir: &Path,
) -> Result<String> {
    if !file.contains(MODEL_DIRECTORY_VAR) {
        return Ok(file.to_string());
    }
    let expanded = file.replace(MODEL_DIRECTORY_VAR, &model_dir.to_string_lossy());
    if !FILE_PARAMETERS.contains(&key) {
        return Ok(expanded);
    }
    let path = PathBuf::from(expanded.trim());
    match path.strip_prefix(version_dir) {
        Ok(rel) if !rel.as_os_str().is_empty() => Ok(rel.to_string_lossy().into_owned()),
        _ => Err(Error::invalid_arg(format!(
            "parameter '{key}' = '{value}' resolves to {}, which is not a file inside the model \
             version folder {}",
            path.display(),
            version_dir.display()
        ))),
    }
}

impl ModelSettings {
    /// Check the configuration against the contract and read its parameters.
    /// `model_dir` is `<repository>/<model>`, `version_dir` is `<model_dir>/<version>`.
    pub fn from_config(cfg: &ModelConfig, model_dir: &Path, version_dir: &Path) -> Result<Self> {
        let name = if cfg.name.is_empty() {
            "exatrkx"
        } else {
            &cfg.name
        };
        let context = format!("model '{name}' configuration");
        Self::read(cfg, name, model_dir, version_dir).map_err(|e| e.context(context))
    }

    fn read(cfg: &ModelConfig, name: &str, model_dir: &Path, version_dir: &Path) -> Result<Self> {
        if cfg.max_batch_size != 0 {
            return Err(Error::invalid_arg(format!(
                "max_batch_size must be 0 (each request is one event of any size), not {}",
                cfg.max_batch_size
            )));
        }
        check_tensors("input", &cfg.input, &INPUTS)?;
        check_tensors("output", &cfg.output, &OUTPUTS)?;

        let mut pipeline = PipelineConfig {
            model_dir: version_dir.to_path_buf(),
            ..PipelineConfig::default()
        };
        for (key, value) in cfg.parameter_values() {
            let value = resolve_value(key, value, model_dir, version_dir)?;
            pipeline.set(key, &value).map_err(pipeline_error)?;
        }
        pipeline.validate().map_err(pipeline_error)?;

        let accepts_module_id = cfg.input(MODULE_ID).is_some();
        if pipeline.graph_construction == GraphMethod::ModuleMap && !accepts_module_id {
            return Err(Error::invalid_arg(
                "graph_construction = module_map needs the input 'MODULE_ID' (TYPE_INT64 [-1], \
                 optional: true) in the configuration",
            ));
        }
        let feature_dims = cfg
            .input(FEATURES)
            .map(|t| t.dims.clone())
            .unwrap_or_default();
        let outputs = OUTPUTS
            .iter()
            .filter(|c| cfg.output(c.name).is_some())
            .map(|c| c.name.to_string())
            .collect();
        Ok(Self {
            model_name: name.to_string(),
            pipeline,
            feature_dims,
            accepts_module_id,
            outputs,
        })
    }

    /// Whether the configuration declares output `name`.
    pub fn declares_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|o| o == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_params: &str, inputs: &str, outputs: &str) -> ModelConfig {
        let json = format!(
            r#"{{"name": "exatrkx", "backend": "exatrkx", "max_batch_size": 0,
                "input": [{inputs}], "output": [{outputs}],
                "parameters": {{"radius": {{"string_value": "0.25"}} {extra_params}}}}}"#
        );
        ModelConfig::from_json(&json).unwrap()
    }

    const FEATURES_IN: &str = r#"{"name": "FEATURES", "data_type": "TYPE_FP32", "dims": [-1, -1]}"#;
    const MODULE_IN: &str =
        r#"{"name": "MODULE_ID", "data_type": "TYPE_INT64", "dims": [-1], "optional": true}"#;
    const LABELS_OUT: &str = r#"{"name": "LABELS", "data_type": "TYPE_INT64", "dims": [-1]}"#;
    const ALL_OUT: &str = r#"{"name": "LABELS", "data_type": "TYPE_INT64", "dims": [-1]},
        {"name": "EDGE_INDEX", "data_type": "TYPE_INT64", "dims": [2, -1]},
        {"name": "EDGE_SCORES", "data_type": "TYPE_FP32", "dims": [-1]},
        {"name": "TRACKS", "data_type": "TYPE_FP32", "dims": [-1, 8]}"#;

    fn dirs() -> (PathBuf, PathBuf) {
        (
            PathBuf::from("/repo/exatrkx"),
            PathBuf::from("/repo/exatrkx/1"),
        )
    }

    fn read(cfg: &ModelConfig) -> Result<ModelSettings> {
        let (m, v) = dirs();
        ModelSettings::from_config(cfg, &m, &v)
    }

    #[test]
    fn the_contract_configuration_is_accepted() {
        let inputs = format!("{FEATURES_IN}, {MODULE_IN}");
        let s = read(&config(
            r#", "knn": {"string_value": "7"}"#,
            &inputs,
            ALL_OUT,
        ))
        .unwrap();
        assert_eq!(s.pipeline.radius, 0.25);
        assert_eq!(s.pipeline.knn, 7);
        assert_eq!(s.pipeline.model_dir, PathBuf::from("/repo/exatrkx/1"));
        assert!(s.accepts_module_id);
        assert_eq!(s.outputs, [LABELS, EDGE_INDEX, EDGE_SCORES, TRACKS]);
        let s = read(&config("", FEATURES_IN, LABELS_OUT)).unwrap();
        assert!(!s.accepts_module_id && !s.declares_output(TRACKS));
    }

    #[test]
    fn contract_violations_name_the_tensor() {
        let cases = [
            (
                r#"{"name": "FEATURES", "data_type": "TYPE_FP64", "dims": [-1, -1]}"#,
                LABELS_OUT,
                "FEATURES",
            ),
            (
                r#"{"name": "FEATURES", "data_type": "TYPE_FP32", "dims": [-1]}"#,
                LABELS_OUT,
                "FEATURES",
            ),
            (
                r#"{"name": "MODULE_ID", "data_type": "TYPE_INT64", "dims": [-1], "optional": true}"#,
                LABELS_OUT,
                "FEATURES",
            ),
            (
                FEATURES_IN,
                r#"{"name": "LABELS", "data_type": "TYPE_INT32", "dims": [-1]}"#,
                "LABELS",
            ),
            (
                FEATURES_IN,
                r#"{"name": "TRACKS", "data_type": "TYPE_FP32", "dims": [-1, 8]}"#,
                "LABELS",
            ),
            (
                FEATURES_IN,
                r#"{"name": "SCORES", "data_type": "TYPE_FP32", "dims": [-1]}"#,
                "SCORES",
            ),
        ];
        for (inputs, outputs, name) in cases {
            let err = read(&config("", inputs, outputs)).unwrap_err();
            assert!(err.message().contains(name), "{name}: {err}");
            assert!(
                err.message().contains("model 'exatrkx' configuration"),
                "{err}"
            );
        }
        let not_optional = r#"{"name": "MODULE_ID", "data_type": "TYPE_INT64", "dims": [-1]}"#;
        let err = read(&config(
            "",
            &format!("{FEATURES_IN}, {not_optional}"),
            LABELS_OUT,
        ));
        assert!(err.unwrap_err().message().contains("optional: true"));
    }

    #[test]
    fn a_fixed_feature_width_is_allowed() {
        let fixed = r#"{"name": "FEATURES", "data_type": "TYPE_FP32", "dims": [-1, 9]}"#;
        let s = read(&config("", fixed, LABELS_OUT)).unwrap();
        assert_eq!(s.feature_dims, [-1, 9]);
    }

    #[test]
    fn batching_models_are_refused() {
        let mut cfg = config("", FEATURES_IN, LABELS_OUT);
        cfg.max_batch_size = 8;
        let err = read(&cfg).unwrap_err();
        assert!(err.message().contains("max_batch_size"), "{err}");
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = read(&config(
            r#", "knn": {"string_value": "many"}"#,
            FEATURES_IN,
            LABELS_OUT,
        ))
        .unwrap_err();
        assert!(err.message().contains("'knn'"), "{err}");
        let err = read(&config(
            r#", "colour": {"string_value": "red"}"#,
            FEATURES_IN,
            LABELS_OUT,
        ))
        .unwrap_err();
        assert!(err.message().contains("colour"), "{err}");
        let module_map = r#", "graph_construction": {"string_value": "module_map"}"#;
        let err = read(&config(module_map, FEATURES_IN, LABELS_OUT)).unwrap_err();
        assert!(err.message().contains("MODULE_ID"), "{err}");
    }

    #[test]
    fn model_directory_placeholder_is_expanded() {
        let (m, v) = dirs();
        let ok = resolve_value("gnn_model", "$$TRITON_MODEL_DIRECTORY/1/gnn_v2.pt", &m, &v);
        assert_eq!(ok.unwrap(), "gnn_v2.pt");
        let ok = resolve_value(
            "module_map",
            "$$TRITON_MODEL_DIRECTORY/1/maps/mm.csv",
            &m,
            &v,
        );
        assert_eq!(ok.unwrap(), "maps/mm.csv");
        for key in ["gnn_refine_model", "track_model"] {
            let ok = resolve_value(key, "$$TRITON_MODEL_DIRECTORY/1/t.pt", &m, &v);
            assert_eq!(ok.unwrap(), "t.pt", "{key}");
        }
        let both = "$$TRITON_MODEL_DIRECTORY/1/g2.pt, g3.pt";
        let ok = resolve_value("gnn_refine_model", both, &m, &v);
        assert_eq!(ok.unwrap(), "g2.pt, g3.pt");
        let outside = "g2.pt,$$TRITON_MODEL_DIRECTORY/g3.pt";
        let err = resolve_value("gnn_refine_model", outside, &m, &v).unwrap_err();
        assert!(
            err.message().contains("'gnn_refine_model'"),
            "{}",
            err.message()
        );
        let err = resolve_value("gnn_model", "$$TRITON_MODEL_DIRECTORY/gnn.pt", &m, &v);
        assert!(err.unwrap_err().message().contains("'gnn_model'"));
        assert_eq!(resolve_value("knn", "12", &m, &v).unwrap(), "12");
        let params = r#", "embedding_model": {"string_value": "$$TRITON_MODEL_DIRECTORY/1/e.pt"}"#;
        let s = read(&config(params, FEATURES_IN, LABELS_OUT)).unwrap();
        assert_eq!(
            s.pipeline.embedding_path(),
            PathBuf::from("/repo/exatrkx/1/e.pt")
        );
    }

    #[test]
    fn torch_backtraces_are_cut_to_the_reason() {
        let cpp = "cannot load model 'm/1/gnn.pt': Internal torch error: PytorchStreamReader \
                   failed reading zip archive: not a ZIP archive.\nException raised from valid at \
                   inline_container.cc:242 (most recent call first):\nframe #0: c10::Error::Error\
                   \nframe #1: torch::jit::load\n";
        assert_eq!(
            without_backtrace(cpp),
            "cannot load model 'm/1/gnn.pt': Internal torch error: PytorchStreamReader failed \
             reading zip archive: not a ZIP archive."
        );
        let script = "torch error in gnn: Internal torch error: The following operation failed \
                      in the TorchScript interpreter.\nTraceback of TorchScript, serialized code \
                      (most recent call last):\n  File \"code/__torch__.py\", line 17, in forward\
                      \n    x = torch.linear(input, weight, bias)\n        ~~~~~~ <--- HERE\
                      \nRuntimeError: mat1 and mat2 shapes cannot be multiplied (3x12 and 9x16)\n\
                      \nException raised from forward at ...\nframe #0: f\n";
        assert_eq!(
            without_backtrace(script),
            "torch error in gnn: Internal torch error: The following operation failed in the \
             TorchScript interpreter. RuntimeError: mat1 and mat2 shapes cannot be multiplied \
             (3x12 and 9x16)"
        );
        let escaped = r#"got Err(Torch("Method 'x' is not defined.\nException raised from get_method\nframe #0"))"#;
        assert_eq!(
            without_backtrace(escaped),
            r#"got Err(Torch("Method 'x' is not defined."#
        );
        let plain = "invalid input: FEATURES[7, 4] is not finite (NaN)";
        assert_eq!(without_backtrace(plain), plain);
    }

    use proptest::prelude::*;

    /// Parameter values: good ones of every kind, and the bad ones an operator might write.
    fn parameter_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0.5".to_string()),
            Just("-0.1".to_string()),
            Just("1".to_string()),
            Just("0".to_string()),
            Just("1e40".to_string()),
            Just("nan".to_string()),
            Just("12".to_string()),
            Just("cc".to_string()),
            Just("walkthrough".to_string()),
            Just("module_map".to_string()),
            Just("bf16".to_string()),
            Just("true".to_string()),
            Just("gnn_v2.pt".to_string()),
            Just("../other/1/gnn.pt".to_string()),
            Just("/etc/passwd".to_string()),
            Just("$$TRITON_MODEL_DIRECTORY/1/g.pt".to_string()),
            Just("$$TRITON_MODEL_DIRECTORY/../x/1/g.pt".to_string()),
            Just("$$TRITON_MODEL_DIRECTORY/1/../../x.pt".to_string()),
            "\\PC{0,12}",
        ]
    }

    fn parameter_key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(exatrkx_pipeline::PARAMETER_KEYS).prop_map(String::from),
            1 => "[a-z_]{1,10}",
        ]
    }

    /// A lexically contained relative path: normal components only.
    fn inside(file: &str) -> bool {
        let path = Path::new(file);
        !file.is_empty()
            && path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
    }

    proptest! {
        #[test]
        fn any_parameters_give_valid_settings_or_a_named_error(
            params in prop::collection::btree_map(parameter_key(), parameter_value(), 0..8),
        ) {
            let extra: String = params
                .iter()
                .map(|(k, v)| format!(r#", {}: {{"string_value": {}}}"#,
                    serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap()))
                .collect();
            let inputs = format!("{FEATURES_IN}, {MODULE_IN}");
            let json = format!(
                r#"{{"name": "exatrkx", "backend": "exatrkx", "max_batch_size": 0,
                    "input": [{inputs}], "output": [{ALL_OUT}],
                    "parameters": {{"radius": {{"string_value": "0.25"}} {extra}}}}}"#
            );
            // Duplicate keys (radius given twice) are the JSON reader's business.
            let Ok(cfg) = ModelConfig::from_json(&json) else { return Ok(()); };
            match read(&cfg) {
                Ok(s) => {
                    let p = &s.pipeline;
                    prop_assert!(p.validate().is_ok());
                    prop_assert!(p.radius > 0.0 && p.knn >= 1);
                    for cut in [p.filter_cut, p.gnn_cut, p.walk_min_cut, p.walk_high_cut] {
                        prop_assert!((0.0..1.0).contains(&cut));
                    }
                    for file in [&p.embedding_model, &p.filter_model, &p.gnn_model, &p.module_map] {
                        prop_assert!(inside(file), "{} leaves the version folder", file);
                    }
                }
                Err(e) => {
                    let m = e.message();
                    prop_assert!(m.starts_with("model 'exatrkx' configuration: "), "{}", m);
                    // The message names the parameter at fault (or the rule between two).
                    let named = cfg.parameters.keys().any(|k| m.contains(k.as_str()))
                        || m.contains("walk_high_cut");
                    prop_assert!(named, "{}", m);
                }
            }
        }
    }
}
