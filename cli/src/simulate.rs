//! `exatrkx simulate`: TrackML-format events on the real TrackML detector geometry.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use trackml::sim::{SimConfig, Simulator};
use trackml::{io, Detector};

#[derive(clap::Args)]
pub struct Args {
    /// Pile-up interactions per event (a hard scatter comes on top); 200 gives about 120k spacepoints.
    #[arg(long, default_value_t = 200)]
    mu: usize,
    /// Number of events.
    #[arg(long, default_value_t = 1)]
    events: u64,
    /// Id of the first event; events are numbered consecutively.
    #[arg(long, default_value_t = 0)]
    first_event: u64,
    /// Random seed; the same seed and command give byte-identical files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Fraction of spacepoints that are noise (strip ghosts included).
    #[arg(long, default_value_t = 0.15)]
    noise_fraction: f64,
    /// TrackML detectors.csv[.gz]; default: $EXATRKX_TRACKML_DIR or shared/data/trackml.
    #[arg(long)]
    detector: Option<PathBuf>,
    /// No hard-scatter interaction, pile-up only.
    #[arg(long)]
    no_hard_scatter: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let path = match args.detector {
        Some(p) => p,
        None => Detector::default_path()
            .context("no detectors.csv[.gz] found: pass --detector or set EXATRKX_TRACKML_DIR")?,
    };
    let det = Detector::load(&path)
        .with_context(|| format!("loading the detector {}", path.display()))?;
    let cfg = SimConfig {
        mu: args.mu,
        seed: args.seed,
        noise_fraction: args.noise_fraction,
        hard_scatter: !args.no_hard_scatter,
        ..SimConfig::default()
    };
    let sim = Simulator::new(&det, cfg)?;
    for event_id in args.first_event..args.first_event + args.events {
        let start = Instant::now();
        let event = sim.event(event_id);
        io::write_event(&args.out, &event)
            .with_context(|| format!("writing event {event_id} to {}", args.out.display()))?;
        tracing::info!(
            event_id,
            spacepoints = event.hits.len(),
            particles = event.particles.as_ref().map_or(0, Vec::len),
            seconds = start.elapsed().as_secs_f64(),
            "simulated"
        );
    }
    Ok(())
}
