//! `exatrkx run`: the pipeline in-process on TrackML-format events, writing one labels file per
//! event, with per-stage timings and, where truth is present, efficiency and fake rate.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use exatrkx_pipeline::{
    npy, DeviceKind, EventInput, EventOutput, GraphMethod, OutputRequest, Pipeline, PipelineConfig,
};
use trackml::evaluate::{evaluate, EvalConfig, Metrics};
use trackml::{features, io};

#[derive(clap::Args)]
pub struct Args {
    /// Directory with TrackML-format events (`event%09d-hits.csv[.gz]`, ...).
    #[arg(long)]
    events: PathBuf,
    /// Where to write `event%09d-labels.csv`.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Only these event ids (repeatable); default: every event in the directory.
    #[arg(long = "event")]
    event_ids: Vec<u64>,
    /// Also write each event's final graph here: `event%09d-edges.npy` (int64 [2, E], the
    /// edges the GNN kept, all of its input with `--param gnn_cut=0`) and
    /// `event%09d-scores.npy` (float32 [E], their GNN scores). Training reads them
    /// (`train gnn --graphs-from`).
    #[arg(long, value_name = "DIR")]
    edges_out: Option<PathBuf>,
}

/// Which served model to load and how (shared by `run` and `tune`).
#[derive(clap::Args)]
pub struct ModelArgs {
    /// The model folder (holding config.pbtxt and the version folder), or a model repository
    /// holding `exatrkx/`.
    #[arg(long, default_value = "model_repository/exatrkx")]
    model: PathBuf,
    /// Model version folder inside the model folder.
    #[arg(long, default_value = "1")]
    version: String,
    /// Pipeline parameter overriding config.pbtxt, `key=value` (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Intra-op threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long)]
    threads: Option<i32>,
    /// Let TorchScript re-specialise the networks per input shape (off, as in the backend).
    #[arg(long)]
    jit_optimize: bool,
    /// Where the pipeline runs: `cpu`, or `cuda` / `cuda:N` (a KIND_GPU instance's pipeline).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceKind,
}

fn parse_device(s: &str) -> Result<DeviceKind, String> {
    match s {
        "cpu" => Ok(DeviceKind::Cpu),
        "cuda" | "gpu" => Ok(DeviceKind::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(DeviceKind::Cuda)
            .ok_or_else(|| format!("'{s}': expected cpu, cuda or cuda:N")),
    }
}

fn model_folder(path: &Path) -> anyhow::Result<PathBuf> {
    if path.join("config.pbtxt").is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join("exatrkx/config.pbtxt").is_file() {
        return Ok(path.join("exatrkx"));
    }
    bail!(
        "no config.pbtxt in {} (nor in its exatrkx/ folder)",
        path.display()
    )
}

/// The pipeline settings of the served model, with command-line overrides on top; also sets up
/// libtorch and the allocator as the backend does.
pub fn pipeline_config(args: &ModelArgs) -> anyhow::Result<PipelineConfig> {
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    tch::jit::set_graph_executor_optimize(args.jit_optimize);
    // glibc keeps the networks' large temporaries in the heap (as in the backend).
    exatrkx_pipeline::tune_allocator();
    let folder = model_folder(&args.model)?;
    let mut cfg = PipelineConfig::from_model_folder(&folder, &args.version)?;
    for param in &args.params {
        let Some((key, value)) = param.split_once('=') else {
            bail!("--param '{param}': expected key=value");
        };
        cfg.set(key.trim(), value)?;
    }
    cfg.device = args.device;
    cfg.validate()?;
    Ok(cfg)
}

/// The ids asked for, or every event in the folder; an error when there is none.
pub fn event_ids(events: &Path, asked: &[u64]) -> anyhow::Result<Vec<u64>> {
    let ids = if asked.is_empty() {
        io::list_events(events)?
    } else {
        asked.to_vec()
    };
    if ids.is_empty() {
        bail!("no event%09d-hits.csv in {}", events.display());
    }
    Ok(ids)
}

/// The event's final graph and its GNN scores as `.npy` files (see `Args::edges_out`).
fn write_edges(dir: &Path, event_id: u64, out: &EventOutput) -> anyhow::Result<()> {
    let index = out.edge_index.as_deref().unwrap_or_default();
    let scores = out.edge_scores.as_deref().unwrap_or_default();
    let e = index.len() / 2;
    // the GNN scores every edge it keeps; with no GNN stage there are none to write
    let scores = if scores.len() == e { scores } else { &[] };
    let prefix = io::event_prefix(event_id);
    let edges_path = dir.join(format!("{prefix}-edges.npy"));
    npy::write(&edges_path, &[2, e], index)
        .with_context(|| format!("writing {}", edges_path.display()))?;
    let scores_path = dir.join(format!("{prefix}-scores.npy"));
    npy::write(&scores_path, &[scores.len()], scores)
        .with_context(|| format!("writing {}", scores_path.display()))?;
    Ok(())
}

/// A loud line where the strip cluster columns fall back to the spacepoint's own position (an
/// events folder without its `-spacepoints.csv`): the served networks were trained with them.
pub(crate) fn warn_missing_clusters(event: &io::Event) {
    if features::lacks_strip_clusters(event) {
        tracing::warn!(
            event_id = event.event_id,
            "no {}-spacepoints.csv: strip spacepoints get their own position as cluster columns",
            io::event_prefix(event.event_id)
        );
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let cfg = pipeline_config(&args.model)?;
    let needs_modules = cfg.graph_construction == GraphMethod::ModuleMap;
    let pipeline = Pipeline::new(cfg).context("loading the pipeline")?;
    let ids = event_ids(&args.events, &args.event_ids)?;
    for dir in std::iter::once(&args.out).chain(&args.edges_out) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let want = OutputRequest {
        edges: args.edges_out.is_some(),
        tracks: false,
    };

    let eval_cfg = EvalConfig::default();
    let mut total: Option<Metrics> = None;
    let mut seconds = Vec::with_capacity(ids.len());
    for event_id in ids {
        let event = io::read_event(&args.events, event_id)
            .with_context(|| format!("reading event {event_id} from {}", args.events.display()))?;
        warn_missing_clusters(&event);
        let x = features::node_features(&event);
        let modules = needs_modules.then(|| features::module_ids(&event));
        let input = EventInput {
            features: &x,
            num_features: features::NUM_FEATURES,
            module_ids: modules.as_deref(),
        };
        let start = Instant::now();
        let out = pipeline
            .run(&input, want)
            .with_context(|| format!("event {event_id}"))?;
        let elapsed = start.elapsed().as_secs_f64();
        seconds.push(elapsed);
        if let Some(dir) = &args.edges_out {
            write_edges(dir, event_id, &out)?;
        }
        let hit_ids: Vec<u64> = event.hits.iter().map(|h| h.hit_id).collect();
        io::write_labels(&args.out, event_id, &hit_ids, &out.labels)?;
        let stages: Vec<String> = out
            .timings
            .iter()
            .map(|t| format!("{} {:.3}s", t.stage, t.seconds))
            .collect();
        let mut line = format!(
            "event {event_id}: {} spacepoints, {} tracks, {:.3} s ({}), edges {:?}",
            out.labels.len(),
            out.num_tracks,
            elapsed,
            stages.join(", "),
            out.graph_sizes
        );
        if event.truth.is_some() && event.particles.is_some() {
            let m = evaluate(&event, &out.labels, &eval_cfg)?;
            line += &format!(
                ", efficiency {:.4}, fake rate {:.4}",
                m.efficiency, m.fake_rate
            );
            match total.as_mut() {
                Some(t) => t.merge(&m),
                None => total = Some(m),
            }
        }
        println!("{line}");
    }
    let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
    print!("{} events, mean {:.3} s per event", seconds.len(), mean);
    if let Some(t) = total {
        print!(
            "; efficiency {:.4} ({} of {} target particles), fake rate {:.4}, duplicate rate {:.4}",
            t.efficiency, t.matched_targets, t.target_particles, t.fake_rate, t.duplicate_rate
        );
    }
    println!();
    Ok(())
}
