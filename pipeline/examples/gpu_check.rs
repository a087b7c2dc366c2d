//! The GPU check (docs/GPU.md): run on a machine with a GPU by `scripts/gpu-check`, from
//! binaries built elsewhere. Builds nothing, needs no Python.
//!
//! ```text
//! gpu_check --model-repo DIR [--mu 10,50,200,300 --detector detectors.csv.gz] [--events DIR]
//!           [--param key=value]... [--repeat 5] [--instances 1,2,4] [--summary out.json]
//! ```
//! For every event (simulated in-process, or read from TrackML CSV / `.npy` files):
//! - the GPU pipeline, warmed up, then timed per stage (each stage synchronised) over
//!   `--repeat` runs (medians);
//! - exactness of the GPU stages on the same inputs: the radius graph from the GPU's embedding
//!   against the CPU grid, connected components on the GPU's final edges against the CPU;
//! - the CPU pipeline (fp32): its labels against the GPU's (the networks' floating-point sums differ
//!   between devices, so edges at a cut may flip: reported, not failed) and tracking quality of
//!   both when the event has truth.
//!
//! Then random point clouds and graphs well beyond the events (knn cuts, ties, duplicates)
//! through the kernels against the CPU, and events/s with several instances (threads, each with
//! its own pipeline and CUDA stream) on the one GPU. Exit status 1 when a stage is not exact.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use exatrkx_pipeline::embedding::{Embedding, EmbeddingConfig};
use exatrkx_pipeline::frnn::{radius_graph, RadiusGraphConfig};
use exatrkx_pipeline::stage::EventData;
use exatrkx_pipeline::track_building::connected_components;
use exatrkx_pipeline::{
    gpu, npy, DeviceKind, EventInput, EventOutput, ExecutionContext, GraphMethod, OutputRequest,
    Pipeline, PipelineConfig, Precision, TrackBuilder,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tch::{Device, Tensor};
use trackml::evaluate::{evaluate, EvalConfig};
use trackml::sim::{SimConfig, Simulator};
use trackml::{Detector, Event};

#[derive(Parser)]
#[command(about = "Check the GPU pipeline against the CPU and time it")]
struct Args {
    /// Model folder holding config.pbtxt, or the model repository holding `--model-name`.
    #[arg(long)]
    model_repo: PathBuf,
    #[arg(long, default_value = "exatrkx")]
    model_name: String,
    #[arg(long, default_value = "1")]
    version: String,
    /// Pipeline parameter overriding config.pbtxt, `key=value` (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Simulate one event per pile-up value (TrackML geometry from `--detector`).
    #[arg(long, value_delimiter = ',')]
    mu: Vec<usize>,
    /// TrackML detectors.csv[.gz] for `--mu`.
    #[arg(long)]
    detector: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folders of events to check as well: TrackML CSV or `event%09d-features.npy`.
    #[arg(long)]
    events: Vec<PathBuf>,
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Untimed runs per event before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per event (medians reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// The CPU pipeline only on events up to this many spacepoints (it is the slow part).
    #[arg(long, default_value_t = usize::MAX)]
    cpu_max_spacepoints: usize,
    /// Concurrent instances for the throughput runs, comma-separated ("": none).
    #[arg(long, default_value = "1,2,4")]
    instances: String,
    /// Runs per event and instance in the throughput runs.
    #[arg(long, default_value_t = 3)]
    throughput_repeat: usize,
    /// Sizes of the random clouds and graphs compared with the CPU, comma-separated ("": none).
    #[arg(long, default_value = "100000,400000")]
    stress: String,
    /// Write every number as JSON here.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Log filter, e.g. `info` or `exatrkx_pipeline=debug`.
    #[arg(long, default_value = "warn")]
    log: String,
    /// Without a usable GPU, run the CPU parts instead of failing (tries the plumbing).
    #[arg(long)]
    cpu_only_ok: bool,
}

/// One event to check.
struct Sample {
    name: String,
    features: Vec<f32>,
    module_ids: Vec<i64>,
    truth: Option<Event>,
}

impl Sample {
    fn input(&self) -> EventInput<'_> {
        EventInput {
            features: &self.features,
            num_features: trackml::features::NUM_FEATURES,
            module_ids: Some(&self.module_ids),
        }
    }

    fn from_event(name: String, event: Event) -> Self {
        Sample {
            name,
            features: trackml::features::node_features(&event),
            module_ids: trackml::features::module_ids(&event),
            truth: Some(event),
        }
    }
}

fn model_folder(repo: &Path, name: &str) -> Result<PathBuf> {
    if repo.join("config.pbtxt").is_file() {
        Ok(repo.to_path_buf())
    } else if repo.join(name).join("config.pbtxt").is_file() {
        Ok(repo.join(name))
    } else {
        bail!("no config.pbtxt in {} or under it", repo.display())
    }
}

fn load_events(dir: &Path) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let csv = trackml::io::list_events(dir).unwrap_or_default();
    for id in csv {
        let event = trackml::io::read_event(dir, id)
            .with_context(|| format!("event {id} in {}", dir.display()))?;
        samples.push(Sample::from_event(format!("{}/{id}", dir.display()), event));
    }
    if samples.is_empty() {
        for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(prefix) = name.strip_suffix("-features.npy") else {
                continue;
            };
            let (shape, features) = npy::read::<f32>(&path)?;
            if shape.len() != 2 || shape[1] != trackml::features::NUM_FEATURES {
                bail!("{}: shape {shape:?}, expected [N, 9]", path.display());
            }
            let ids_path = dir.join(format!("{prefix}-module_ids.npy"));
            let module_ids = if ids_path.is_file() {
                npy::read::<i64>(&ids_path)?.1
            } else {
                vec![0; shape[0]]
            };
            samples.push(Sample {
                name: path.display().to_string(),
                features,
                module_ids,
                truth: None,
            });
        }
    }
    Ok(samples)
}

/// A comma-separated list of counts; empty for "".
fn counts(list: &str, what: &str) -> Result<Vec<usize>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| anyhow!("--{what}: '{s}' is not a count"))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds per stage over the runs, in the order the stages ran.
fn stage_medians(runs: &[EventOutput]) -> Vec<(&'static str, f64)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .timings
        .iter()
        .map(|t| {
            let stage = t.stage;
            (
                stage,
                median(runs.iter().map(|r| r.seconds(stage)).collect()),
            )
        })
        .collect()
}

fn ms(s: f64) -> String {
    format!("{:.2}", s * 1e3)
}

/// Fraction of spacepoints whose labels agree.
fn agreement(a: &[i64], b: &[i64]) -> f64 {
    if a.is_empty() {
        return 1.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

fn quality(event: &Event, labels: &[i64]) -> Value {
    match evaluate(event, labels, &EvalConfig::default()) {
        Ok(m) => json!({
            "efficiency": m.efficiency,
            "fake_rate": m.fake_rate,
            "duplicate_rate": m.duplicate_rate,
            "candidates": m.candidates,
        }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn tensor_on(data: &[f32], shape: [i64; 2], device: Device) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(data)?
        .f_view(shape)?
        .f_to_device(device)?)
}

/// The radius graph of the GPU's embedding, on the GPU and on the CPU grid: equal?
fn check_radius_graph(
    ctx: &ExecutionContext,
    cfg: &PipelineConfig,
    sample: &Sample,
) -> Result<Value> {
    let gpu_rt = ctx.gpu().ok_or_else(|| anyhow!("no GPU runtime"))?;
    let embedding = Embedding::load(
        &EmbeddingConfig {
            model: cfg.embedding_path(),
            batch: cfg.embedding_batch,
        },
        ctx,
    )?;
    let input = sample.input();
    let _no_grad = tch::no_grad_guard();
    let _stream = ctx.enter_event()?;
    let mut event = EventData::new(ctx, &input)?;
    embedding.run(ctx, &mut event)?;
    let emb = event
        .embedding
        .as_ref()
        .ok_or_else(|| anyhow!("no embedding"))?;
    let key = event
        .radius_key_on_device
        .as_ref()
        .ok_or_else(|| anyhow!("no radius key on the device"))?;
    let rcfg = RadiusGraphConfig {
        radius: cfg.radius,
        knn: cfg.knn,
    };
    // Warm up (first launch of each kernel, allocator), then time.
    let _warm = gpu::frnn::radius_graph(gpu_rt, emb, key, &rcfg)?;
    gpu_rt.synchronize()?;
    let start = Instant::now();
    let on_gpu = gpu::frnn::radius_graph(gpu_rt, emb, key, &rcfg)?;
    gpu_rt.synchronize()?;
    let gpu_seconds = start.elapsed().as_secs_f64();
    let on_gpu: Vec<i64> = Vec::try_from(&on_gpu.f_to_device(Device::Cpu)?.f_view([-1])?)?;

    let dim = emb.size()[1] as usize;
    let host: Vec<f32> = Vec::try_from(&emb.f_to_device(Device::Cpu)?.f_view([-1])?)?;
    let start = Instant::now();
    let on_cpu = radius_graph(&host, dim, &event.radius_key, &rcfg);
    let cpu_seconds = start.elapsed().as_secs_f64();
    Ok(json!({
        "exact": on_gpu == on_cpu,
        "edges_gpu": on_gpu.len() / 2,
        "edges_cpu": on_cpu.len() / 2,
        "gpu_ms": gpu_seconds * 1e3,
        "cpu_ms": cpu_seconds * 1e3,
    }))
}

/// Connected components of `edges` on the GPU and on the CPU: equal labels?
fn check_components(
    ctx: &ExecutionContext,
    n: usize,
    edges: &[i64],
    min_len: usize,
) -> Result<Value> {
    let gpu_rt = ctx.gpu().ok_or_else(|| anyhow!("no GPU runtime"))?;
    let _stream = ctx.enter_event()?;
    let e = (edges.len() / 2) as i64;
    let t = Tensor::f_from_slice(edges)?
        .f_view([2, e])?
        .f_to_device(ctx.torch_device())?;
    gpu::components::connected_components(gpu_rt, n, &t, min_len)?;
    gpu_rt.synchronize()?;
    let start = Instant::now();
    let on_gpu = gpu::components::connected_components(gpu_rt, n, &t, min_len)?;
    let gpu_seconds = start.elapsed().as_secs_f64();
    let (src, dst) = edges.split_at(edges.len() / 2);
    let start = Instant::now();
    let on_cpu = connected_components(n, src, dst, min_len);
    let cpu_seconds = start.elapsed().as_secs_f64();
    Ok(json!({
        "exact": on_gpu == on_cpu,
        "tracks_gpu": on_gpu.num_tracks,
        "tracks_cpu": on_cpu.num_tracks,
        "edges": e,
        "gpu_ms": gpu_seconds * 1e3,
        "cpu_ms": cpu_seconds * 1e3,
    }))
}

/// A cloud with clusters, exact duplicates and lattice points (distance ties), `dim` dims.
fn stress_cloud(rng: &mut ChaCha8Rng, n: usize, dim: usize) -> Vec<f32> {
    let centres: Vec<f32> = (0..(n / 50).max(1) * dim)
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    let mut points = Vec::with_capacity(n * dim);
    for i in 0..n {
        match i % 7 {
            0 if i > 0 => {
                let j = rng.gen_range(0..i);
                points.extend_from_within(j * dim..(j + 1) * dim);
            }
            1 => points.extend((0..dim).map(|_| rng.gen_range(-8..8) as f32 * 0.125)),
            _ => {
                let c = rng.gen_range(0..centres.len() / dim);
                points.extend((0..dim).map(|k| centres[c * dim + k] + rng.gen_range(-0.02..0.02)));
            }
        }
    }
    points
}

/// Random clouds and graphs through the GPU kernels against the CPU.
fn stress(ctx: &ExecutionContext, sizes: &[usize], seed: u64) -> Result<Vec<Value>> {
    let gpu_rt = ctx.gpu().ok_or_else(|| anyhow!("no GPU runtime"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let _stream = ctx.enter_event()?;
    for &n in sizes {
        for (dim, radius, knn) in [(8usize, 0.05f32, 16usize), (3, 0.02, 1000), (12, 0.08, 4)] {
            let points = stress_cloud(&mut rng, n, dim);
            let key: Vec<f32> = (0..n).map(|_| rng.gen_range(0..50) as f32 * 0.02).collect();
            let cfg = RadiusGraphConfig { radius, knn };
            let emb = tensor_on(&points, [n as i64, dim as i64], ctx.torch_device())?;
            let key_t = Tensor::f_from_slice(&key)?.f_to_device(ctx.torch_device())?;
            let _warm = gpu::frnn::radius_graph(gpu_rt, &emb, &key_t, &cfg)?;
            gpu_rt.synchronize()?;
            let start = Instant::now();
            let on_gpu = gpu::frnn::radius_graph(gpu_rt, &emb, &key_t, &cfg)?;
            gpu_rt.synchronize()?;
            let gpu_seconds = start.elapsed().as_secs_f64();
            let on_gpu: Vec<i64> = Vec::try_from(&on_gpu.f_to_device(Device::Cpu)?.f_view([-1])?)?;
            let start = Instant::now();
            let on_cpu = radius_graph(&points, dim, &key, &cfg);
            let cpu_seconds = start.elapsed().as_secs_f64();
            let exact = on_gpu == on_cpu;
            println!(
                "  cloud n={n} dim={dim} r={radius} knn={knn}: {} edges, GPU {} ms, CPU {} ms, {}",
                on_cpu.len() / 2,
                ms(gpu_seconds),
                ms(cpu_seconds),
                if exact { "exact" } else { "DIFFERENT" }
            );
            out.push(
                json!({"kind": "cloud", "n": n, "dim": dim, "radius": radius, "knn": knn,
                "edges": on_cpu.len() / 2, "exact": exact,
                "gpu_ms": gpu_seconds * 1e3, "cpu_ms": cpu_seconds * 1e3}),
            );
        }
        // A graph of chains (long paths for the union-find) plus random edges.
        let mut edges: Vec<(i64, i64)> = (0..n as i64 - 1)
            .filter(|_| rng.gen_bool(0.8))
            .map(|a| (a, a + 1))
            .collect();
        edges.extend((0..n / 2).map(|_| (rng.gen_range(0..n as i64), rng.gen_range(0..n as i64))));
        let (src, dst): (Vec<i64>, Vec<i64>) = edges.into_iter().unzip();
        let flat: Vec<i64> = src.iter().chain(&dst).copied().collect();
        let result = check_components(ctx, n, &flat, 3)?;
        println!(
            "  graph n={n} e={}: GPU {:.2} ms, CPU {:.2} ms, {}",
            src.len(),
            result["gpu_ms"].as_f64().unwrap_or(f64::NAN),
            result["cpu_ms"].as_f64().unwrap_or(f64::NAN),
            if result["exact"] == json!(true) {
                "exact"
            } else {
                "DIFFERENT"
            }
        );
        let mut result = result;
        result["kind"] = json!("graph");
        result["n"] = json!(n);
        out.push(result);
    }
    Ok(out)
}

/// Events per second with `instances` pipelines on one GPU, each on its own thread.
fn throughput(
    cfg: &PipelineConfig,
    samples: &[Sample],
    instances: usize,
    runs: usize,
) -> Result<f64> {
    let barrier = std::sync::Barrier::new(instances);
    let start = std::sync::Mutex::new(None::<Instant>);
    let results: Vec<Result<usize>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..instances)
            .map(|_| {
                scope.spawn(|| -> Result<usize> {
                    tch::jit::set_graph_executor_optimize(false);
                    // Every thread reaches the barrier, set up or not, so that one failure
                    // cannot leave the others waiting forever.
                    let ready = (|| -> Result<Pipeline> {
                        let pipeline = Pipeline::new(cfg.clone())?;
                        for s in samples {
                            pipeline.run(&s.input(), OutputRequest::default())?;
                        }
                        Ok(pipeline)
                    })();
                    barrier.wait();
                    let pipeline = ready?;
                    start.lock().unwrap().get_or_insert_with(Instant::now);
                    let mut done = 0;
                    for _ in 0..runs {
                        for s in samples {
                            pipeline.run(&s.input(), OutputRequest::default())?;
                            done += 1;
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("instance thread panicked"))?)
            .collect()
    });
    let events: usize = results
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .iter()
        .sum();
    let seconds = start
        .lock()
        .unwrap()
        .map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
    Ok(events as f64 / seconds)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stress_sizes = counts(&args.stress, "stress")?;
    let instance_counts = counts(&args.instances, "instances")?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    tch::jit::set_graph_executor_optimize(false);
    let folder = model_folder(&args.model_repo, &args.model_name)?;
    let mut cfg = PipelineConfig::from_model_folder(&folder, &args.version)?;
    for item in &args.params {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--param '{item}': expected KEY=VALUE"))?;
        cfg.set(key.trim(), value)?;
    }
    let mut summary = json!({
        "torch_cuda_available": tch::Cuda::is_available(),
        "torch_cuda_devices": tch::Cuda::device_count(),
        "driver": gpu::driver_available().err().unwrap_or_else(|| "ok".into()),
        "nvrtc": match gpu::nvrtc_available() { Ok(lib) => lib, Err(e) => e },
        "config": format!("{cfg:?}"),
    });
    println!(
        "libtorch CUDA: {} ({} device(s)); driver: {}; NVRTC: {}",
        summary["torch_cuda_available"],
        summary["torch_cuda_devices"],
        summary["driver"],
        summary["nvrtc"]
    );

    let mut gpu_cfg = cfg.clone();
    gpu_cfg.device = DeviceKind::Cuda(args.device);
    let start = Instant::now();
    let gpu_pipeline = match Pipeline::new(gpu_cfg.clone()) {
        Ok(p) => Some(p),
        Err(e) if args.cpu_only_ok => {
            println!("no GPU pipeline ({e}); CPU parts only (--cpu-only-ok)");
            None
        }
        Err(e) => return Err(e).context("loading the GPU pipeline"),
    };
    if let Some(p) = &gpu_pipeline {
        let rt = p
            .context()
            .gpu()
            .ok_or_else(|| anyhow!("GPU pipeline without runtime"))?;
        println!(
            "GPU pipeline on cuda:{} loaded in {:.2} s (NVRTC included); libtorch on the instance's stream: {}",
            rt.device(),
            start.elapsed().as_secs_f64(),
            rt.torch_on_stream()
        );
        summary["gpu_load_seconds"] = json!(start.elapsed().as_secs_f64());
        summary["torch_on_instance_stream"] = json!(rt.torch_on_stream());
    }
    // The reference: the CPU in fp32, whatever precision the GPU runs in.
    let mut cpu_cfg = cfg.clone();
    cpu_cfg.precision = Precision::Fp32;
    let cpu_pipeline = Pipeline::new(cpu_cfg).context("loading the CPU pipeline")?;

    // Events.
    let mut samples = Vec::new();
    if !args.mu.is_empty() {
        let path = args
            .detector
            .clone()
            .or_else(Detector::default_path)
            .ok_or_else(|| anyhow!("--mu needs --detector (TrackML detectors.csv[.gz])"))?;
        let det = Detector::load(&path).with_context(|| path.display().to_string())?;
        for (k, &mu) in args.mu.iter().enumerate() {
            let start = Instant::now();
            let sim = Simulator::new(
                &det,
                SimConfig {
                    mu,
                    seed: args.seed,
                    ..SimConfig::default()
                },
            )?;
            let event = sim.event(k as u64);
            println!(
                "simulated mu={mu}: {} spacepoints in {:.1} s",
                event.hits.len(),
                start.elapsed().as_secs_f64()
            );
            samples.push(Sample::from_event(format!("mu{mu}"), event));
        }
    }
    for dir in &args.events {
        samples.extend(load_events(dir)?);
    }

    let mut failures = Vec::new();
    let mut per_event = Vec::new();
    let want_edges = OutputRequest {
        edges: true,
        tracks: false,
    };
    let min_len = cfg.min_track_length;
    for s in &samples {
        let n = s.features.len() / trackml::features::NUM_FEATURES;
        let mut record = json!({ "event": s.name, "spacepoints": n });
        println!("\n== {} ({n} spacepoints)", s.name);
        let mut gpu_labels = None;
        if let Some(p) = &gpu_pipeline {
            for _ in 0..args.warmup {
                p.run(&s.input(), OutputRequest::default())?;
            }
            let mut runs = Vec::new();
            let mut walls = Vec::new();
            for _ in 0..args.repeat.max(1) {
                let start = Instant::now();
                runs.push(p.run(&s.input(), OutputRequest::default())?);
                walls.push(start.elapsed().as_secs_f64());
            }
            let stages = stage_medians(&runs);
            let wall = median(walls);
            println!(
                "GPU: {} ms per event ({:.1} events/s); edges {:?}; {} tracks",
                ms(wall),
                1.0 / wall,
                runs[0].graph_sizes,
                runs[0].num_tracks
            );
            println!(
                "  stages (ms, synchronised, median of {}): {}",
                runs.len(),
                stages
                    .iter()
                    .map(|(st, sec)| format!("{st} {}", ms(*sec)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            record["gpu"] = json!({
                "wall_ms": wall * 1e3,
                "events_per_second": 1.0 / wall,
                "stages_ms": stages.iter().map(|(st, sec)| (st.to_string(), json!(sec * 1e3))).collect::<serde_json::Map<_, _>>(),
                "graph_sizes": runs[0].graph_sizes,
                "tracks": runs[0].num_tracks,
            });
            // Stage exactness on the same inputs.
            if cfg.graph_construction == GraphMethod::Radius {
                let r = check_radius_graph(p.context(), &cfg, s)?;
                println!(
                    "  radius graph on the GPU's embedding: {} edges, GPU {:.2} ms vs CPU grid {:.2} ms: {}",
                    r["edges_gpu"],
                    r["gpu_ms"].as_f64().unwrap_or(f64::NAN),
                    r["cpu_ms"].as_f64().unwrap_or(f64::NAN),
                    if r["exact"] == json!(true) { "exact" } else { "DIFFERENT" }
                );
                if r["exact"] != json!(true) {
                    failures.push(format!("{}: radius graph differs from the CPU", s.name));
                }
                record["radius_graph"] = r;
            }
            let with_edges = p.run(&s.input(), want_edges)?;
            let edges = with_edges.edge_index.clone().unwrap_or_default();
            let c = check_components(p.context(), n, &edges, min_len)?;
            println!(
                "  connected components of the {} final edges: GPU {:.2} ms vs CPU {:.2} ms: {}",
                c["edges"],
                c["gpu_ms"].as_f64().unwrap_or(f64::NAN),
                c["cpu_ms"].as_f64().unwrap_or(f64::NAN),
                if c["exact"] == json!(true) {
                    "exact"
                } else {
                    "DIFFERENT"
                }
            );
            if c["exact"] != json!(true) {
                failures.push(format!(
                    "{}: connected components differ from the CPU",
                    s.name
                ));
            }
            if cfg.track_builder == TrackBuilder::ConnectedComponents {
                let (src, dst) = edges.split_at(edges.len() / 2);
                let cpu = connected_components(n, src, dst, min_len);
                if cpu.labels != with_edges.labels {
                    failures.push(format!(
                        "{}: pipeline labels are not the CPU components of its edges",
                        s.name
                    ));
                }
            }
            record["components"] = c;
            gpu_labels = Some(with_edges.labels);
        }
        if n <= args.cpu_max_spacepoints {
            let start = Instant::now();
            let cpu = cpu_pipeline.run(&s.input(), OutputRequest::default())?;
            let wall = start.elapsed().as_secs_f64();
            println!(
                "CPU: {} ms per event; edges {:?}; {} tracks",
                ms(wall),
                cpu.graph_sizes,
                cpu.num_tracks
            );
            record["cpu"] = json!({ "wall_ms": wall * 1e3, "graph_sizes": cpu.graph_sizes,
                "tracks": cpu.num_tracks });
            if let Some(g) = &gpu_labels {
                let same = agreement(g, &cpu.labels);
                println!(
                    "  labels GPU vs CPU: {} ({:.4}% of spacepoints agree)",
                    if g == &cpu.labels {
                        "identical"
                    } else {
                        "differ"
                    },
                    same * 100.0
                );
                record["labels_identical"] = json!(g == &cpu.labels);
                record["labels_agreement"] = json!(same);
            }
            if let Some(event) = &s.truth {
                let q_cpu = quality(event, &cpu.labels);
                println!("  quality CPU: {q_cpu}");
                record["quality_cpu"] = q_cpu;
                if let Some(g) = &gpu_labels {
                    let q_gpu = quality(event, g);
                    println!("  quality GPU: {q_gpu}");
                    record["quality_gpu"] = q_gpu;
                }
            }
        }
        per_event.push(record);
    }
    summary["events"] = json!(per_event);

    if let Some(p) = &gpu_pipeline {
        if !stress_sizes.is_empty() {
            println!("\n== kernels against the CPU on random inputs");
            let results = stress(p.context(), &stress_sizes, args.seed)?;
            for r in &results {
                if r["exact"] != json!(true) {
                    failures.push(format!("stress: {r}"));
                }
            }
            summary["stress"] = json!(results);
        }
        if !instance_counts.is_empty() && !samples.is_empty() {
            println!(
                "\n== throughput over all events (each instance: own pipeline, thread, stream)"
            );
            let mut rates = Vec::new();
            for &k in &instance_counts {
                let rate = throughput(&gpu_cfg, &samples, k.max(1), args.throughput_repeat.max(1))?;
                println!("  {k} instance(s): {rate:.1} events/s");
                rates.push(json!({ "instances": k, "events_per_second": rate }));
            }
            summary["throughput"] = json!(rates);
        }
    }

    summary["failures"] = json!(failures);
    if let Some(path) = &args.summary {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| path.display().to_string())?;
    }
    if gpu_pipeline.is_none() {
        println!("\nGPU check NOT RUN: no GPU (CPU parts only)");
        Ok(())
    } else if failures.is_empty() {
        println!("\nGPU check: every stage exact");
        Ok(())
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        std::process::exit(1)
    }
}
