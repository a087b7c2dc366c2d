//! Run the backend's own code path in-process, without Triton: read a model configuration as
//! Triton serves it (`GET /v2/models/<model>/config`), turn it into pipeline settings exactly as
//! the backend's model state does, and run one event. Tests compare its labels with the
//! server's.
//!
//! ```text
//! cargo run --release -p triton-exatrkx --example run_event -- \
//!   --config config.json --model-dir model_repository/exatrkx \
//!   --features x.f32 --labels labels.i64
//! ```
//! Files are raw little-endian arrays: features f32 `[N, columns]` row-major, module ids and
//! labels i64 `[N]`, edges i64 `[2, E]`, scores f32 `[E]`.
use std::path::PathBuf;

use clap::Parser;
use exatrkx_pipeline::{EventInput, OutputRequest, Pipeline};
use triton::ModelConfig;
use triton_exatrkx::settings::ModelSettings;

#[derive(Parser)]
struct Args {
    /// Model configuration JSON, as Triton serves it.
    #[arg(long)]
    config: PathBuf,
    /// The model folder `<repository>/<model>`.
    #[arg(long)]
    model_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    version: u64,
    /// Raw f32 features, `[N, columns]`.
    #[arg(long)]
    features: PathBuf,
    #[arg(long, default_value_t = 9)]
    columns: usize,
    /// Raw i64 module ids, `[N]`.
    #[arg(long)]
    module_ids: Option<PathBuf>,
    /// Output: raw i64 labels.
    #[arg(long)]
    labels: PathBuf,
    /// Output: raw i64 edge index `[2, E]`.
    #[arg(long)]
    edges: Option<PathBuf>,
    /// Output: raw f32 edge scores `[E]`.
    #[arg(long)]
    scores: Option<PathBuf>,
    /// TorchScript graph executor optimisation, as the backend setting `jit-optimize`.
    #[arg(long)]
    jit_optimize: bool,
}

/// A raw little-endian array of `N`-byte values.
fn read<T, const N: usize>(path: &PathBuf, from_le: fn([u8; N]) -> T) -> Result<Vec<T>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| from_le(c.try_into().unwrap()))
        .collect())
}

fn write<T: Copy>(
    path: &PathBuf,
    values: &[T],
    to_le: impl Fn(T) -> Vec<u8>,
) -> Result<(), String> {
    let bytes: Vec<u8> = values.iter().flat_map(|&v| to_le(v)).collect();
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let json = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    let config = ModelConfig::from_json(&json).map_err(|e| e.to_string())?;
    let version_dir = args.model_dir.join(args.version.to_string());
    let settings = ModelSettings::from_config(&config, &args.model_dir, &version_dir)
        .map_err(|e| e.to_string())?;
    let pipeline = Pipeline::new(settings.pipeline.clone()).map_err(|e| e.to_string())?;

    let features = read(&args.features, f32::from_le_bytes)?;
    let module_ids = args
        .module_ids
        .as_ref()
        .map(|p| read(p, i64::from_le_bytes))
        .transpose()?;
    let input = EventInput {
        features: &features,
        num_features: args.columns,
        module_ids: module_ids.as_deref(),
    };
    let want = OutputRequest {
        edges: args.edges.is_some() || args.scores.is_some(),
        tracks: false,
    };
    triton_exatrkx::set_jit_optimize(args.jit_optimize);
    triton_exatrkx::apply_jit_settings();
    let out = pipeline.run(&input, want).map_err(|e| e.to_string())?;
    write(&args.labels, &out.labels, |v| v.to_le_bytes().to_vec())?;
    if let Some(path) = &args.edges {
        write(path, out.edge_index.as_deref().unwrap_or(&[]), |v| {
            v.to_le_bytes().to_vec()
        })?;
    }
    if let Some(path) = &args.scores {
        write(path, out.edge_scores.as_deref().unwrap_or(&[]), |v| {
            v.to_le_bytes().to_vec()
        })?;
    }
    let timings: Vec<String> = out
        .timings
        .iter()
        .map(|t| format!("\"{}\": {:.6}", t.stage, t.seconds))
        .collect();
    println!(
        "{{\"spacepoints\": {}, \"tracks\": {}, \"graph_sizes\": {:?}, \"timings\": {{{}}}}}",
        out.labels.len(),
        out.num_tracks,
        out.graph_sizes,
        timings.join(", ")
    );
    Ok(())
}
