//! `exatrkx evaluate`: efficiency, fake and duplicate rates of label files against truth.
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use trackml::evaluate::{evaluate, Bin, EvalConfig, Metrics};
use trackml::io;

#[derive(clap::Args)]
pub struct Args {
    /// Directory with the events (hits, truth, particles).
    #[arg(long)]
    events: PathBuf,
    /// Directory with `event%09d-labels.csv` files.
    #[arg(long)]
    labels: PathBuf,
    /// Where to write metrics.json and the CSV tables.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Target particles: pT above this (GeV).
    #[arg(long, default_value_t = 1.0)]
    pt_min: f64,
    /// Target particles: |eta| below this.
    #[arg(long, default_value_t = 4.0)]
    eta_max: f64,
    /// Target particles: at least this many spacepoints.
    #[arg(long, default_value_t = 5)]
    min_hits: usize,
    /// Target particles: production vertex within this distance of the beam line (mm).
    #[arg(long, default_value_t = 10.0)]
    max_vertex_r: f64,
    /// Candidates with fewer spacepoints are ignored.
    #[arg(long, default_value_t = 3)]
    min_track_hits: usize,
}

fn bins_csv(name: &str, bins: &[Bin]) -> String {
    let mut s = format!("{name}_lo,{name}_hi,particles,matched,efficiency,error\n");
    for b in bins {
        let e = if b.particles > 0 {
            b.matched as f64 / b.particles as f64
        } else {
            0.0
        };
        let err = if b.particles > 0 {
            (e * (1.0 - e) / b.particles as f64).sqrt()
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "{},{},{},{},{e:.6},{err:.6}",
            b.lo, b.hi, b.particles, b.matched
        );
    }
    s
}

fn line(name: &str, m: &Metrics) -> String {
    format!(
        "{name:>10} {:>8} {:>8} {:>8.4} {:>8.4} {:>10} {:>8.4} {:>8.4}",
        m.target_particles,
        m.matched_targets,
        m.efficiency,
        m.double_majority_efficiency,
        m.candidates,
        m.fake_rate,
        m.duplicate_rate
    )
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let cfg = EvalConfig {
        pt_min: args.pt_min,
        eta_max: args.eta_max,
        min_hits: args.min_hits,
        max_vertex_r: args.max_vertex_r,
        min_track_hits: args.min_track_hits,
        ..EvalConfig::default()
    };
    let labelled = io::list_labels(&args.labels)?;
    anyhow::ensure!(
        !labelled.is_empty(),
        "no event%09d-labels.csv in {}",
        args.labels.display()
    );
    let mut total = Metrics::empty(&cfg);
    let mut per_event = Vec::new();
    println!(
        "{:>10} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8}",
        "event", "targets", "matched", "eff", "eff(DM)", "tracks", "fake", "dup"
    );
    for event_id in labelled {
        let event = io::read_event(&args.events, event_id)
            .with_context(|| format!("reading event {event_id} from {}", args.events.display()))?;
        let rows = io::read_labels(&args.labels, event_id)?;
        let labels = io::labels_for_hits(&event, &rows)?;
        let m = evaluate(&event, &labels, &cfg)?;
        println!("{}", line(&event_id.to_string(), &m));
        total.merge(&m);
        per_event.push((event_id, m));
    }
    println!("{}", line("total", &total));
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let events: Vec<serde_json::Value> = per_event
            .iter()
            .map(|(id, m)| serde_json::json!({"event_id": id, "metrics": m}))
            .collect();
        let json = serde_json::json!({"config": cfg, "total": total, "events": events});
        std::fs::write(
            out.join("metrics.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        for (name, bins) in total.tables() {
            std::fs::write(
                out.join(format!("efficiency_vs_{name}.csv")),
                bins_csv(name, bins),
            )?;
        }
        let mut s = String::from(
            "event_id,target_particles,matched_targets,matched_targets_double_majority,candidates,fake_candidates,duplicate_candidates,efficiency,double_majority_efficiency,fake_rate,duplicate_rate\n",
        );
        for (id, m) in &per_event {
            let _ = writeln!(
                s,
                "{id},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6}",
                m.target_particles,
                m.matched_targets,
                m.matched_targets_double_majority,
                m.candidates,
                m.fake_candidates,
                m.duplicate_candidates,
                m.efficiency,
                m.double_majority_efficiency,
                m.fake_rate,
                m.duplicate_rate
            );
        }
        std::fs::write(out.join("events.csv"), s)?;
        tracing::info!(out = %out.display(), "wrote metrics.json, events.csv, efficiency_vs_pt.csv, efficiency_vs_eta.csv, efficiency_vs_vz.csv");
    }
    Ok(())
}
