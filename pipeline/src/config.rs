//! Pipeline settings: one parser for Triton parameters, CLI `--param key=value` and tests.
use std::path::{Path, PathBuf};

use crate::error::{PipelineError, Result};
use crate::track_building::WalkthroughConfig;

/// How the event graph is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphMethod {
    /// Metric-learning embedding, then fixed-radius neighbours in the embedding space.
    Radius,
    /// Module map: hit pairs on module pairs seen in training, with geometric cuts.
    ModuleMap,
}

/// How tracks are read off the classified graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackBuilder {
    ConnectedComponents,
    Walkthrough,
}

/// Numeric precision of the networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Bf16,
    Fp16,
}

/// Where the pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda(usize),
}

/// Every setting of the pipeline, with the defaults of `docs/DESIGN.md`.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// Folder the model file names are relative to (the model version folder under Triton).
    pub model_dir: PathBuf,
    pub embedding_model: String,
    pub filter_model: String,
    pub gnn_model: String,
    pub module_map: String,
    pub graph_construction: GraphMethod,
    pub radius: f32,
    pub knn: usize,
    pub filter_cut: f32,
    pub gnn_cut: f32,
    /// Refining GNN passes, one per cut: the pass before keeps edges above the cut, the
    /// refining network scores them again without the rest, and `gnn_cut` applies to the last
    /// pass's scores; empty: one pass.
    pub gnn_refine_cut: Vec<f32>,
    /// The refining passes' networks (files in the model folder): one for every pass or one
    /// per pass; empty: `gnn_model` again.
    pub gnn_refine_model: Vec<String>,
    pub track_builder: TrackBuilder,
    pub walk_min_cut: f32,
    pub walk_high_cut: f32,
    pub min_track_length: usize,
    /// Second walkthrough pass above this score on what the first left; `None`: one pass.
    pub walk_rescue_cut: Option<f32>,
    /// Last pass: chains of mutually best edges above this score; `None`: no such pass.
    pub walk_chain_cut: Option<f32>,
    /// Track-quality network (file in the model folder); `None`: every candidate is kept.
    pub track_model: Option<String>,
    /// Candidates scored (sigmoid) at or below this by the track-quality network are dropped.
    pub track_cut: f32,
    pub precision: Precision,
    pub embedding_batch: usize,
    pub filter_chunk: usize,
    /// Edges per filter call on a GPU: large, since each call costs a few kernel launches.
    pub gpu_filter_chunk: usize,
    pub max_spacepoints: usize,
    pub allow_cpu_fallback: bool,
    /// `cpu_kernels`: on a CPU in fp32, run the filter and the GNN as fused kernels
    /// (`fused/`) where they reproduce the files; otherwise (and `torch`) through libtorch.
    pub fused_kernels: bool,
    /// libtorch intra-op threads for this pipeline's runs; 0 leaves libtorch's choice (one per
    /// core, or `OMP_NUM_THREADS`).
    pub intra_op_threads: usize,
    pub device: DeviceKind,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from("."),
            embedding_model: "embed.pt".into(),
            filter_model: "filter.pt".into(),
            gnn_model: "gnn.pt".into(),
            module_map: "module_map.csv".into(),
            graph_construction: GraphMethod::Radius,
            radius: 0.1,
            knn: 100,
            filter_cut: 0.05,
            gnn_cut: 0.5,
            gnn_refine_cut: Vec::new(),
            gnn_refine_model: Vec::new(),
            track_builder: TrackBuilder::ConnectedComponents,
            walk_min_cut: 0.1,
            walk_high_cut: 0.6,
            min_track_length: 3,
            walk_rescue_cut: None,
            walk_chain_cut: None,
            track_model: None,
            track_cut: 0.5,
            precision: Precision::Fp32,
            embedding_batch: 65_536,
            filter_chunk: 16_384,
            gpu_filter_chunk: 1 << 20,
            max_spacepoints: 500_000,
            allow_cpu_fallback: false,
            fused_kernels: true,
            intra_op_threads: 0,
            device: DeviceKind::Cpu,
        }
    }
}

/// The keys `set` accepts, in the order of `docs/DESIGN.md`.
pub const PARAMETER_KEYS: &[&str] = &[
    "embedding_model",
    "filter_model",
    "gnn_model",
    "module_map",
    "graph_construction",
    "radius",
    "knn",
    "filter_cut",
    "gnn_cut",
    "gnn_refine_cut",
    "gnn_refine_model",
    "track_builder",
    "walk_min_cut",
    "walk_high_cut",
    "min_track_length",
    "walk_rescue_cut",
    "walk_chain_cut",
    "track_model",
    "track_cut",
    "precision",
    "embedding_batch",
    "filter_chunk",
    "gpu_filter_chunk",
    "max_spacepoints",
    "allow_cpu_fallback",
    "cpu_kernels",
    "intra_op_threads",
];

fn bad(key: &str, value: &str, expected: &str) -> PipelineError {
    PipelineError::Config(format!(
        "parameter '{key}' = '{value}': expected {expected}"
    ))
}

fn parse_f32(key: &str, value: &str) -> Result<f32> {
    value
        .trim()
        .parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| bad(key, value, "a finite number"))
}

fn parse_usize(key: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| bad(key, value, "a non-negative integer"))
}

/// Values that switch an optional setting off (`gnn_refine_cut`, `gnn_refine_model`,
/// `walk_rescue_cut`, `walk_chain_cut`, `track_model`).
fn is_off(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "none" | "off"
    )
}

/// A cut that `none`/`off` switches off.
fn parse_optional_f32(key: &str, value: &str) -> Result<Option<f32>> {
    if is_off(value) {
        Ok(None)
    } else {
        parse_f32(key, value).map(Some)
    }
}

/// Most refining GNN passes one configuration may ask for.
pub const MAX_REFINE_PASSES: usize = 3;

/// One value per refining pass from `parts` of `value`; `none`/`off` gives none.
fn per_pass<T>(
    key: &str,
    value: &str,
    what: &str,
    parts: impl Iterator<Item = Result<T>>,
) -> Result<Vec<T>> {
    if is_off(value) {
        return Ok(Vec::new());
    }
    let items = parts.collect::<Result<Vec<_>>>()?;
    if items.len() > MAX_REFINE_PASSES {
        return Err(bad(
            key,
            value,
            &format!("at most {MAX_REFINE_PASSES} {what} (one per refining pass)"),
        ));
    }
    Ok(items)
}

/// Cuts separated by commas or spaces.
fn parse_cut_list(key: &str, value: &str) -> Result<Vec<f32>> {
    let parts = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(|part| parse_f32(key, part).map_err(|_| bad(key, value, "cuts separated by commas")));
    per_pass(key, value, "cuts", parts)
}

/// File names separated by commas.
fn parse_file_list(key: &str, value: &str) -> Result<Vec<String>> {
    let parts = value.split(',').map(|part| parse_file(key, part));
    per_pass(key, value, "files", parts)
}

fn parse_file(key: &str, value: &str) -> Result<String> {
    let name = value.trim();
    let path = std::path::Path::new(name);
    let escapes = path
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if name.is_empty() || escapes {
        return Err(bad(
            key,
            value,
            "a file name inside the model folder (no '..', no absolute path)",
        ));
    }
    Ok(name.to_string())
}

/// A file name that `none`/`off` switches off.
fn parse_optional_file(key: &str, value: &str) -> Result<Option<String>> {
    if is_off(value) {
        Ok(None)
    } else {
        parse_file(key, value).map(Some)
    }
}

impl PipelineConfig {
    /// Set one parameter from its text form; unknown keys and malformed values are errors.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let v = value.trim();
        match key {
            "embedding_model" => self.embedding_model = parse_file(key, value)?,
            "filter_model" => self.filter_model = parse_file(key, value)?,
            "gnn_model" => self.gnn_model = parse_file(key, value)?,
            "module_map" => self.module_map = parse_file(key, value)?,
            "graph_construction" => {
                self.graph_construction = match v {
                    "radius" | "metric_learning" => GraphMethod::Radius,
                    "module_map" => GraphMethod::ModuleMap,
                    _ => return Err(bad(key, value, "'radius' or 'module_map'")),
                }
            }
            "radius" => self.radius = parse_f32(key, value)?,
            "knn" => self.knn = parse_usize(key, value)?,
            "filter_cut" => self.filter_cut = parse_f32(key, value)?,
            "gnn_cut" => self.gnn_cut = parse_f32(key, value)?,
            "gnn_refine_cut" => self.gnn_refine_cut = parse_cut_list(key, value)?,
            "gnn_refine_model" => self.gnn_refine_model = parse_file_list(key, value)?,
            "track_builder" => {
                self.track_builder = match v {
                    "cc" | "connected_components" => TrackBuilder::ConnectedComponents,
                    "walkthrough" | "walk" => TrackBuilder::Walkthrough,
                    _ => return Err(bad(key, value, "'cc' or 'walkthrough'")),
                }
            }
            "walk_min_cut" => self.walk_min_cut = parse_f32(key, value)?,
            "walk_high_cut" => self.walk_high_cut = parse_f32(key, value)?,
            "min_track_length" => self.min_track_length = parse_usize(key, value)?,
            "walk_rescue_cut" => self.walk_rescue_cut = parse_optional_f32(key, value)?,
            "walk_chain_cut" => self.walk_chain_cut = parse_optional_f32(key, value)?,
            "track_model" => self.track_model = parse_optional_file(key, value)?,
            "track_cut" => self.track_cut = parse_f32(key, value)?,
            "precision" => {
                self.precision = match v {
                    "fp32" | "float32" => Precision::Fp32,
                    "bf16" | "bfloat16" => Precision::Bf16,
                    "fp16" | "float16" | "half" => Precision::Fp16,
                    _ => return Err(bad(key, value, "'fp32', 'bf16' or 'fp16'")),
                }
            }
            "embedding_batch" => self.embedding_batch = parse_usize(key, value)?,
            "filter_chunk" => self.filter_chunk = parse_usize(key, value)?,
            "gpu_filter_chunk" => self.gpu_filter_chunk = parse_usize(key, value)?,
            "max_spacepoints" => self.max_spacepoints = parse_usize(key, value)?,
            "intra_op_threads" => self.intra_op_threads = parse_usize(key, value)?,
            "allow_cpu_fallback" => {
                self.allow_cpu_fallback = match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => return Err(bad(key, value, "true or false")),
                }
            }
            "cpu_kernels" => {
                self.fused_kernels = match v {
                    "auto" | "fused" => true,
                    "torch" | "libtorch" => false,
                    _ => return Err(bad(key, value, "'auto' or 'torch'")),
                }
            }
            _ => {
                return Err(PipelineError::Config(format!(
                    "unknown parameter '{key}' (known: {})",
                    PARAMETER_KEYS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// The walkthrough's settings among these.
    pub fn walkthrough(&self) -> WalkthroughConfig {
        WalkthroughConfig {
            min_cut: self.walk_min_cut,
            high_cut: self.walk_high_cut,
            min_track_length: self.min_track_length,
            rescue_cut: self.walk_rescue_cut,
            chain_cut: self.walk_chain_cut,
        }
    }

    /// Check the values together; called by `Pipeline::new`.
    pub fn validate(&self) -> Result<()> {
        let unit = |key: &str, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(bad(key, &v.to_string(), "a cut in [0, 1)"))
            }
        };
        if self.radius <= 0.0 {
            return Err(bad("radius", &self.radius.to_string(), "a radius > 0"));
        }
        if self.knn == 0 {
            return Err(bad("knn", "0", "at least 1"));
        }
        unit("filter_cut", self.filter_cut)?;
        unit("gnn_cut", self.gnn_cut)?;
        unit("walk_min_cut", self.walk_min_cut)?;
        unit("walk_high_cut", self.walk_high_cut)?;
        unit("track_cut", self.track_cut)?;
        for &cut in &self.gnn_refine_cut {
            unit("gnn_refine_cut", cut)?;
        }
        let (passes, networks) = (self.gnn_refine_cut.len(), self.gnn_refine_model.len());
        if passes > 0 && networks > 1 && networks != passes {
            return Err(PipelineError::Config(format!(
                "gnn_refine_model names {networks} networks for {passes} refining passes \
                 (gnn_refine_cut); name one for all or one per pass"
            )));
        }
        if let Some(cut) = self.walk_rescue_cut {
            unit("walk_rescue_cut", cut)?;
        }
        if let Some(cut) = self.walk_chain_cut {
            unit("walk_chain_cut", cut)?;
        }
        if self.walk_high_cut < self.walk_min_cut {
            return Err(PipelineError::Config(format!(
                "walk_high_cut ({}) must not be below walk_min_cut ({})",
                self.walk_high_cut, self.walk_min_cut
            )));
        }
        if self.min_track_length < 1 {
            return Err(bad("min_track_length", "0", "at least 1"));
        }
        for (key, v) in [
            ("embedding_batch", self.embedding_batch),
            ("filter_chunk", self.filter_chunk),
            ("gpu_filter_chunk", self.gpu_filter_chunk),
            ("max_spacepoints", self.max_spacepoints),
        ] {
            if v == 0 {
                return Err(bad(key, "0", "at least 1"));
            }
        }
        Ok(())
    }

    pub fn embedding_path(&self) -> PathBuf {
        self.model_dir.join(&self.embedding_model)
    }
    pub fn filter_path(&self) -> PathBuf {
        self.model_dir.join(&self.filter_model)
    }
    pub fn gnn_path(&self) -> PathBuf {
        self.model_dir.join(&self.gnn_model)
    }
    /// The network of each refining GNN pass (one per `gnn_refine_cut`).
    pub fn gnn_refine_paths(&self) -> Vec<PathBuf> {
        let passes = self.gnn_refine_cut.len();
        let name = |pass: usize| match self.gnn_refine_model.as_slice() {
            [] => &self.gnn_model,
            [one] => one,
            many => &many[pass],
        };
        (0..passes).map(|p| self.model_dir.join(name(p))).collect()
    }
    pub fn track_model_path(&self) -> Option<PathBuf> {
        self.track_model.as_ref().map(|m| self.model_dir.join(m))
    }
    pub fn module_map_path(&self) -> PathBuf {
        self.model_dir.join(&self.module_map)
    }

    /// Settings of a Triton model folder: the `parameters` of `folder/config.pbtxt` that the
    /// pipeline knows (others belong to the backend), models in `folder/version`.
    pub fn from_model_folder(folder: &Path, version: &str) -> Result<Self> {
        let path = folder.join("config.pbtxt");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PipelineError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut cfg = Self {
            model_dir: folder.join(version),
            ..Self::default()
        };
        for (key, value) in pbtxt_parameters(&text) {
            if PARAMETER_KEYS.contains(&key.as_str()) {
                cfg.set(&key, &value)?;
            }
        }
        Ok(cfg)
    }
}

/// Tokens of protobuf text format, as far as `parameters` entries need them.
#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
}

fn pbtxt_tokens(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                let mut s = String::new();
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(e) => s.push(e),
                            None => {}
                        },
                        d if d == c => break,
                        d => s.push(d),
                    }
                }
                tokens.push(Token::Str(s));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut s = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        s.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Ident(s));
            }
            c => tokens.push(Token::Punct(c)),
        }
    }
    tokens
}

/// The `parameters { key: "K" value: { string_value: "V" } }` entries of a Triton
/// `config.pbtxt`, also in the list form `parameters: [ {...}, {...} ]`, in file order.
pub fn pbtxt_parameters(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    // Within the value of a top-level `parameters` field.
    let mut inside = false;
    let mut key: Option<String> = None;
    let mut last_ident = String::new();
    for token in pbtxt_tokens(text) {
        match token {
            Token::Punct('{' | '[') => depth += 1,
            Token::Punct('}' | ']') => {
                depth -= 1;
                inside = inside && depth > 0;
            }
            Token::Ident(name) => {
                inside = inside || (name == "parameters" && depth == 0);
                last_ident = name;
            }
            Token::Str(s) if inside && last_ident == "key" => key = Some(s),
            Token::Str(s) if inside && last_ident == "string_value" => {
                if let Some(key) = key.take() {
                    out.push((key, s));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_key_is_accepted() {
        let samples = [
            ("embedding_model", "e.pt"),
            ("filter_model", "f.pt"),
            ("gnn_model", "g.pt"),
            ("module_map", "mm.csv"),
            ("graph_construction", "module_map"),
            ("radius", "0.2"),
            ("knn", "50"),
            ("filter_cut", "0.1"),
            ("gnn_cut", "0.6"),
            ("gnn_refine_cut", "0.02"),
            ("gnn_refine_model", "g2.pt"),
            ("track_builder", "walkthrough"),
            ("walk_min_cut", "0.2"),
            ("walk_high_cut", "0.7"),
            ("min_track_length", "4"),
            ("walk_rescue_cut", "0.1"),
            ("walk_chain_cut", "0.15"),
            ("track_model", "t.pt"),
            ("track_cut", "0.8"),
            ("precision", "bf16"),
            ("embedding_batch", "1000"),
            ("filter_chunk", "2000"),
            ("gpu_filter_chunk", "500000"),
            ("max_spacepoints", "3000"),
            ("allow_cpu_fallback", "true"),
            ("cpu_kernels", "torch"),
            ("intra_op_threads", "1"),
        ];
        assert_eq!(samples.len(), PARAMETER_KEYS.len());
        let mut cfg = PipelineConfig::default();
        for (k, v) in samples {
            cfg.set(k, v).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        cfg.validate().unwrap();
        assert_eq!(cfg.graph_construction, GraphMethod::ModuleMap);
        assert_eq!(cfg.track_builder, TrackBuilder::Walkthrough);
        assert_eq!(cfg.precision, Precision::Bf16);
        assert!(!cfg.fused_kernels);
        assert_eq!(
            (
                cfg.knn,
                cfg.min_track_length,
                cfg.filter_chunk,
                cfg.gpu_filter_chunk,
                cfg.intra_op_threads
            ),
            (50, 4, 2000, 500_000, 1)
        );
        assert!(cfg.allow_cpu_fallback);
        assert_eq!(cfg.gnn_path(), PathBuf::from("./g.pt"));
        assert_eq!(cfg.track_model_path(), Some(PathBuf::from("./t.pt")));
        assert_eq!(cfg.gnn_refine_paths(), [PathBuf::from("./g2.pt")]);
        cfg.set("gnn_refine_model", "none").unwrap();
        assert_eq!(cfg.gnn_refine_paths(), [PathBuf::from("./g.pt")]);
        assert_eq!((cfg.walk_rescue_cut, cfg.track_cut), (Some(0.1), 0.8));
        assert_eq!(cfg.walkthrough().rescue_cut, Some(0.1));
        assert_eq!(cfg.walkthrough().chain_cut, Some(0.15));
        for off in ["none", "", "OFF"] {
            cfg.set("walk_rescue_cut", off).unwrap();
            cfg.set("walk_chain_cut", off).unwrap();
            cfg.set("track_model", off).unwrap();
            cfg.set("gnn_refine_cut", off).unwrap();
            assert_eq!((cfg.walk_rescue_cut, cfg.track_model_path()), (None, None));
            assert!(cfg.gnn_refine_paths().is_empty());
            assert_eq!(cfg.walkthrough().chain_cut, None);
        }
    }

    #[test]
    fn refining_passes_take_a_list_of_cuts() {
        let mut cfg = PipelineConfig::default();
        for (text, cuts) in [
            ("0.02", vec![0.02]),
            ("0.02,0.05", vec![0.02, 0.05]),
            (" 0.02, 0.05 0.1 ", vec![0.02, 0.05, 0.1]),
            ("off", vec![]),
        ] {
            cfg.set("gnn_refine_cut", text).unwrap();
            assert_eq!(cfg.gnn_refine_cut, cuts, "{text}");
        }
        for text in ["0.02,high", "0.1,0.2,0.3,0.4"] {
            let err = cfg.set("gnn_refine_cut", text).unwrap_err().to_string();
            assert!(
                err.contains("gnn_refine_cut") && err.contains(text),
                "{err}"
            );
        }
        cfg.set("gnn_refine_cut", "0.02,0.05").unwrap();
        cfg.set("gnn_refine_model", "g2.pt").unwrap();
        let two = [PathBuf::from("./g2.pt"), PathBuf::from("./g2.pt")];
        assert_eq!(cfg.gnn_refine_paths(), two);
        cfg.set("gnn_refine_model", "g2.pt, g3.pt").unwrap();
        let own = [PathBuf::from("./g2.pt"), PathBuf::from("./g3.pt")];
        assert_eq!(cfg.gnn_refine_paths(), own);
        cfg.validate().unwrap();
        cfg.set("gnn_refine_cut", "0.02").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("2 networks for 1 refining passes"), "{err}");
        let err = cfg.set("gnn_refine_model", "a.pt,../b.pt").unwrap_err();
        assert!(err.to_string().contains("gnn_refine_model"), "{err}");
        cfg.set("gnn_refine_model", "off").unwrap();
        cfg.set("gnn_refine_cut", "0.02,1.5").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("gnn_refine_cut") && err.contains("1.5"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let mut cfg = PipelineConfig::default();
        for (k, v) in [
            ("radius", "abc"),
            ("knn", "-3"),
            ("track_builder", "magic"),
            ("precision", "int4"),
            ("gnn_model", "../../etc/passwd"),
            ("gnn_model", "/abs/gnn.pt"),
            ("allow_cpu_fallback", "maybe"),
            ("walk_rescue_cut", "low"),
            ("walk_chain_cut", "high"),
            ("track_model", "../t.pt"),
            ("track_cut", "nan"),
            ("gnn_refine_cut", "high"),
            ("gnn_refine_model", "/abs/g2.pt"),
        ] {
            let err = cfg.set(k, v).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
        let err = cfg.set("no_such_key", "1").unwrap_err().to_string();
        assert!(
            err.contains("no_such_key") && err.contains("radius"),
            "{err}"
        );
    }

    #[test]
    fn pbtxt_parameters_in_block_and_list_form() {
        let text = r#"
            name: "exatrkx"  # a comment with parameters { key: "x" }
            input [ { name: "FEATURES" dims: [ -1, -1 ] } ]
            parameters { key: "radius" value: { string_value: "0.2" } }
            parameters {
              key: "track_builder"
              value { string_value: "walkthrough" }
            }
            parameters: [ { key: "knn" value: { string_value: "7" } },
                          { key: "escaped" value: { string_value: "a\"b" } } ]
        "#;
        assert_eq!(
            pbtxt_parameters(text),
            vec![
                ("radius".to_string(), "0.2".to_string()),
                ("track_builder".to_string(), "walkthrough".to_string()),
                ("knn".to_string(), "7".to_string()),
                ("escaped".to_string(), "a\"b".to_string()),
            ]
        );
    }

    #[test]
    fn validate_rejects_inconsistent_settings() {
        for (k, v) in [
            ("radius", "-0.5"),
            ("radius", "0"),
            ("filter_cut", "1.5"),
            ("gnn_cut", "-0.1"),
            ("knn", "0"),
            ("max_spacepoints", "0"),
            ("track_cut", "1"),
            ("walk_rescue_cut", "-0.2"),
            ("walk_chain_cut", "1.2"),
            ("gnn_refine_cut", "1"),
        ] {
            let mut cfg = PipelineConfig::default();
            cfg.set(k, v).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
        let mut cfg = PipelineConfig::default();
        cfg.set("walk_min_cut", "0.5").unwrap();
        cfg.set("walk_high_cut", "0.4").unwrap();
        assert!(cfg.validate().is_err());
    }
}
