//! Run the pipeline on feature files and print per-stage timings: the Rust side of the
//! cross-language test and of the benchmarks.
//!
//! ```text
//! cargo run --release -p exatrkx-pipeline --example run_features -- \
//!     --model-repo DIR --events DIR [--out DIR] [--param key=value]... [--repeat N]
//! ```
//! Events are `event%09d-features.npy` (float32 [N, F]) with an optional
//! `event%09d-module_ids.npy` (int64 [N]); labels are written as `event%09d-labels.npy`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use exatrkx_pipeline::{npy, EventInput, OutputRequest, Pipeline, PipelineConfig};

#[derive(Parser)]
#[command(about = "Run the ExaTrkX pipeline on .npy feature files")]
struct Args {
    /// Model folder holding config.pbtxt, or the model repository holding `--model-name`.
    #[arg(long)]
    model_repo: PathBuf,
    #[arg(long, default_value = "exatrkx")]
    model_name: String,
    #[arg(long, default_value = "1")]
    version: String,
    /// Folder of `event%09d-features.npy` files.
    #[arg(long)]
    events: PathBuf,
    /// Where to write `event%09d-labels.npy` (nothing written without it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pipeline parameter overriding config.pbtxt, `key=value` (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Runs per event; the fastest is reported (on a shared machine the least disturbed).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Before each event, an untimed run on its first this many spacepoints (warms up the
    /// TorchScript executors, as a serving process is warm).
    #[arg(long, default_value_t = 0)]
    warmup_rows: usize,
    /// Write per-event timings and graph sizes as JSON here.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Log filter, e.g. `info` or `exatrkx_pipeline=debug`.
    #[arg(long, default_value = "warn")]
    log: String,
    /// Also fit the tracks (TRACKS output) and time it.
    #[arg(long)]
    fit: bool,
    /// Let TorchScript's graph executor optimise (re-specialise) the networks per input shape;
    /// off by default, as in the backend (every event brings new shapes).
    #[arg(long)]
    jit_optimize: bool,
}

fn model_folder(repo: &Path, name: &str) -> Result<PathBuf> {
    if repo.join("config.pbtxt").is_file() {
        Ok(repo.to_path_buf())
    } else if repo.join(name).join("config.pbtxt").is_file() {
        Ok(repo.join(name))
    } else {
        bail!(
            "no config.pbtxt in {} or {}",
            repo.display(),
            repo.join(name).display()
        )
    }
}

fn event_ids(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_prefix("event")
            .and_then(|s| s.strip_suffix("-features.npy"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    tch::jit::set_graph_executor_optimize(args.jit_optimize);
    exatrkx_pipeline::tune_allocator();
    let folder = model_folder(&args.model_repo, &args.model_name)?;
    let mut cfg = PipelineConfig::from_model_folder(&folder, &args.version)?;
    for item in &args.params {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--param '{item}': expected KEY=VALUE"))?;
        cfg.set(key.trim(), value)?;
    }
    let pipeline = Pipeline::new(cfg)?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    }
    let ids = event_ids(&args.events)?;
    if ids.is_empty() {
        bail!("no event*-features.npy in {}", args.events.display());
    }
    let mut summary = Vec::new();
    for id in ids {
        let prefix = args.events.join(format!("event{id:09}"));
        let features_path = PathBuf::from(format!("{}-features.npy", prefix.display()));
        let (shape, features) = npy::read::<f32>(&features_path)?;
        if shape.len() != 2 {
            bail!(
                "{}: shape {shape:?}, expected [N, F]",
                features_path.display()
            );
        }
        let ids_path = PathBuf::from(format!("{}-module_ids.npy", prefix.display()));
        let module_ids = if ids_path.is_file() {
            Some(npy::read::<i64>(&ids_path)?.1)
        } else {
            None
        };
        let input = EventInput {
            features: &features,
            num_features: shape[1],
            module_ids: module_ids.as_deref(),
        };
        let want = OutputRequest {
            edges: false,
            tracks: args.fit,
        };
        if args.warmup_rows > 0 {
            let rows = args.warmup_rows.min(shape[0]);
            let warm = EventInput {
                features: &features[..rows * shape[1]],
                num_features: shape[1],
                module_ids: module_ids.as_deref().map(|ids| &ids[..rows]),
            };
            pipeline.run(&warm, want)?;
        }
        let mut result = None;
        let mut wall = 0.0;
        for _ in 0..args.repeat.max(1) {
            let start = Instant::now();
            result = Some(
                pipeline
                    .run(&input, want)
                    .with_context(|| format!("event {id}"))?,
            );
            wall = start.elapsed().as_secs_f64();
        }
        let out = result.expect("at least one run");
        let stages: Vec<String> = out
            .timings
            .iter()
            .map(|t| format!("{} {:.1}", t.stage, t.seconds * 1e3))
            .collect();
        println!(
            "event {id}: {} spacepoints, edges {:?}, {} tracks, {:.1} ms ({} ms)",
            shape[0],
            out.graph_sizes,
            out.num_tracks,
            wall * 1e3,
            stages.join(" ")
        );
        if let Some(dir) = &args.out {
            let path = dir.join(format!("event{id:09}-labels.npy"));
            npy::write(&path, &[out.labels.len()], &out.labels)?;
        }
        let timings: serde_json::Map<String, serde_json::Value> = out
            .timings
            .iter()
            .map(|t| (t.stage.to_string(), t.seconds.into()))
            .collect();
        summary.push(serde_json::json!({
            "event_id": id,
            "spacepoints": shape[0],
            "graph_sizes": out.graph_sizes,
            "num_tracks": out.num_tracks,
            "timings": timings,
            "total": wall,
        }));
    }
    if let Some(path) = &args.summary {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| path.display().to_string())?;
    }
    Ok(())
}
