//! `exatrkx tune`: choose the track-building settings on events with truth. The networks run
//! once per event (with the lowest GNN cut of the grid); every combination of the grid then
//! rebuilds tracks from the kept scored edges and is scored against truth, so a scan costs one
//! pipeline pass per event rather than one per setting.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use exatrkx_pipeline::track_building::{connected_components, walkthrough_passes, ScoredEdges};
use exatrkx_pipeline::track_quality::TrackQuality;
use exatrkx_pipeline::{EventInput, OutputRequest, Pipeline, PipelineConfig, TrackBuilder};
use trackml::evaluate::{evaluate, EvalConfig, Metrics};
use trackml::{features, io};

use crate::run::{event_ids, pipeline_config, warn_missing_clusters, ModelArgs};

/// The settings a scan may vary: they act after the GNN.
const TRACK_KEYS: [&str; 8] = [
    "gnn_cut",
    "track_builder",
    "walk_min_cut",
    "walk_high_cut",
    "min_track_length",
    "walk_rescue_cut",
    "walk_chain_cut",
    "track_cut",
];

#[derive(clap::Args)]
pub struct Args {
    /// Directory with TrackML-format events with truth (hits, truth, particles).
    #[arg(long)]
    events: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Only these event ids (repeatable); default: every event in the directory.
    #[arg(long = "event")]
    event_ids: Vec<u64>,
    /// Values of one track-building setting, `key=v1,v2,...` (repeatable; keys: gnn_cut,
    /// track_builder, walk_min_cut, walk_high_cut, min_track_length, walk_rescue_cut
    /// (`none` for one pass), walk_chain_cut (`none`: no chain pass), track_cut). Unlisted
    /// settings keep their configured value.
    #[arg(long = "grid", value_name = "KEY=V1,V2,...")]
    grid: Vec<String>,
    /// Write every setting's metrics here as JSON lines.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One point of the grid: (key, value) pairs applied on top of the configuration.
type Setting = Vec<(String, String)>;

fn parse_grid(grid: &[String]) -> anyhow::Result<Vec<Setting>> {
    let mut settings: Vec<Setting> = vec![Vec::new()];
    for item in grid {
        let Some((key, values)) = item.split_once('=') else {
            bail!("--grid '{item}': expected key=v1,v2,...");
        };
        let key = key.trim();
        if !TRACK_KEYS.contains(&key) {
            bail!(
                "--grid '{item}': '{key}' is not a track-building setting (one of {})",
                TRACK_KEYS.join(", ")
            );
        }
        let values: Vec<&str> = values.split(',').map(str::trim).collect();
        if values.iter().any(|v| v.is_empty()) {
            bail!("--grid '{item}': empty value");
        }
        settings = settings
            .into_iter()
            .flat_map(|s| {
                values.iter().map(move |v| {
                    let mut s = s.clone();
                    s.push((key.to_string(), v.to_string()));
                    s
                })
            })
            .collect();
    }
    Ok(settings)
}

/// The configuration of one grid point, checked.
fn apply(base: &PipelineConfig, setting: &Setting) -> anyhow::Result<PipelineConfig> {
    let mut cfg = base.clone();
    for (k, v) in setting {
        cfg.set(k, v)?;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Track labels of one setting from the edges (above the scan's lowest GNN cut) and scores,
/// through the pipeline's track-quality network when it has one.
fn build(
    x: &[f32],
    index: &[i64],
    scores: &[f32],
    cfg: &PipelineConfig,
    quality: Option<&TrackQuality>,
) -> anyhow::Result<Vec<i64>> {
    let n = x.len() / features::NUM_FEATURES;
    let keep: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] > cfg.gnn_cut)
        .collect();
    let kept = ScoredEdges::from_index(index, scores).pick(&keep);
    let edges = kept.view();
    let tracks = match cfg.track_builder {
        TrackBuilder::ConnectedComponents => {
            connected_components(n, edges.src, edges.dst, cfg.min_track_length)
        }
        TrackBuilder::Walkthrough => walkthrough_passes(n, edges, &cfg.walkthrough()),
    };
    Ok(match quality {
        Some(q) => {
            q.select(x, features::NUM_FEATURES, &tracks, edges, cfg.track_cut)?
                .labels
        }
        None => tracks.labels,
    })
}

fn describe(setting: &Setting) -> String {
    if setting.is_empty() {
        return "(configured)".into();
    }
    setting
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let base = pipeline_config(&args.model)?;
    // Combinations the pipeline would refuse (say walk_high_cut below walk_min_cut) are left
    // out of the scan.
    let mut settings = Vec::new();
    let mut configs = Vec::new();
    let mut refused = Vec::new();
    for setting in parse_grid(&args.grid)? {
        match apply(&base, &setting) {
            Ok(cfg) => {
                settings.push(setting);
                configs.push(cfg);
            }
            Err(e) => refused.push(format!("{}: {e}", describe(&setting))),
        }
    }
    if configs.is_empty() {
        bail!("no valid setting in the grid: {}", refused.join("; "));
    }
    if !refused.is_empty() {
        eprintln!(
            "left out {} invalid settings, e.g. {}",
            refused.len(),
            refused[0]
        );
    }
    // The networks run once, keeping every edge that some setting may use.
    let mut run_cfg = base.clone();
    run_cfg.gnn_cut = configs
        .iter()
        .map(|c| c.gnn_cut)
        .fold(f32::INFINITY, f32::min);
    let pipeline = Pipeline::new(run_cfg).context("loading the pipeline")?;
    let grids_track_cut = settings.iter().flatten().any(|(k, _)| k == "track_cut");
    if grids_track_cut && pipeline.track_quality().is_none() {
        bail!("--grid track_cut needs a track-quality network: set track_model (config.pbtxt or --param track_model=FILE)");
    }

    let ids = event_ids(&args.events, &args.event_ids)?;
    let eval_cfg = EvalConfig::default();
    let mut totals: Vec<Metrics> = configs.iter().map(|_| Metrics::empty(&eval_cfg)).collect();
    for event_id in ids {
        let event = io::read_event(&args.events, event_id)
            .with_context(|| format!("reading event {event_id} from {}", args.events.display()))?;
        if event.truth.is_none() || event.particles.is_none() {
            bail!("event {event_id}: tuning needs the truth and particles files");
        }
        warn_missing_clusters(&event);
        let x = features::node_features(&event);
        let modules = features::module_ids(&event);
        let input = EventInput {
            features: &x,
            num_features: features::NUM_FEATURES,
            module_ids: Some(&modules),
        };
        let start = Instant::now();
        let want = OutputRequest {
            edges: true,
            ..Default::default()
        };
        let out = pipeline
            .run(&input, want)
            .with_context(|| format!("event {event_id}"))?;
        let index = out.edge_index.unwrap_or_default();
        let scores = out.edge_scores.unwrap_or_default();
        let n = x.len() / features::NUM_FEATURES;
        eprintln!(
            "event {event_id}: {n} spacepoints, {} scored edges, networks {:.1} s",
            scores.len(),
            start.elapsed().as_secs_f64()
        );
        for (cfg, total) in configs.iter().zip(totals.iter_mut()) {
            let labels = build(&x, &index, &scores, cfg, pipeline.track_quality())?;
            total.merge(&evaluate(&event, &labels, &eval_cfg)?);
        }
    }

    let mut order: Vec<usize> = (0..configs.len()).collect();
    // Best first by efficiency minus fake rate (a summary only: the table shows both).
    order.sort_by(|&a, &b| {
        let score = |m: &Metrics| m.efficiency - m.fake_rate;
        score(&totals[b]).total_cmp(&score(&totals[a]))
    });
    // The file first: a table cut short by a closed pipe still leaves it.
    if let Some(path) = &args.out {
        let lines: Vec<String> = order
            .iter()
            .map(|&i| {
                let m = &totals[i];
                let fields: Vec<String> = settings[i]
                    .iter()
                    .map(|(k, v)| format!("\"{k}\": \"{v}\""))
                    .collect();
                format!(
                    "{{\"setting\": {{{}}}, \"efficiency\": {}, \"fake_rate\": {}, \"duplicate_rate\": {}, \"candidates\": {}}}\n",
                    fields.join(", "),
                    m.efficiency,
                    m.fake_rate,
                    m.duplicate_rate,
                    m.candidates
                )
            })
            .collect();
        std::fs::write(path, lines.concat())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut table = String::from("efficiency  fake_rate  duplicate_rate  candidates  setting\n");
    for &i in &order {
        let m = &totals[i];
        table += &format!(
            "{:10.4}  {:9.4}  {:14.4}  {:10}  {}\n",
            m.efficiency,
            m.fake_rate,
            m.duplicate_rate,
            m.candidates,
            describe(&settings[i])
        );
    }
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), table.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_the_cartesian_product() {
        let g = parse_grid(&[
            "walk_min_cut=0.1,0.2".into(),
            "min_track_length=3,4,5".into(),
        ])
        .unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(
            g[5],
            vec![
                ("walk_min_cut".to_string(), "0.2".to_string()),
                ("min_track_length".to_string(), "5".to_string())
            ]
        );
        assert_eq!(parse_grid(&[]).unwrap(), vec![Vec::new()]);
    }

    #[test]
    fn grid_rejects_network_settings_and_bad_items() {
        assert!(parse_grid(&["radius=0.1".into()]).is_err());
        assert!(parse_grid(&["gnn_cut".into()]).is_err());
        assert!(parse_grid(&["gnn_cut=0.1,".into()]).is_err());
    }

    #[test]
    fn build_applies_the_gnn_cut_before_the_builder() {
        // a chain 0-1-2-3 whose middle edge scores low
        let index = [0i64, 1, 2, 1, 2, 3];
        let scores = [0.9f32, 0.3, 0.9];
        let mut cfg = PipelineConfig {
            track_builder: TrackBuilder::ConnectedComponents,
            min_track_length: 2,
            gnn_cut: 0.1,
            ..Default::default()
        };
        let x = vec![0f32; 4 * features::NUM_FEATURES];
        let labels = |cfg: &PipelineConfig| build(&x, &index, &scores, cfg, None).unwrap();
        assert_eq!(labels(&cfg), vec![0, 0, 0, 0]);
        cfg.gnn_cut = 0.5;
        assert_eq!(labels(&cfg), vec![0, 0, 1, 1]);
        // the walkthrough's second pass follows the middle edge the first pass would not
        cfg.gnn_cut = 0.1;
        cfg.track_builder = TrackBuilder::Walkthrough;
        cfg.min_track_length = 3;
        (cfg.walk_min_cut, cfg.walk_high_cut) = (0.5, 0.95);
        let index = [0i64, 1, 1, 2, 1, 2, 3, 4];
        let scores = [0.9f32, 0.3, 0.2, 0.9];
        let x = vec![0f32; 5 * features::NUM_FEATURES];
        let labels = |cfg: &PipelineConfig| build(&x, &index, &scores, cfg, None).unwrap();
        assert_eq!(labels(&cfg), vec![-1; 5]);
        cfg.walk_rescue_cut = Some(0.25);
        assert_eq!(labels(&cfg), vec![0, 0, 0, -1, 0]);
    }
}
