//! `exatrkx compare`: realism statistics of simulated against real TrackML events.
use std::path::{Path, PathBuf};

use anyhow::Context;
use trackml::{compare, io, Detector};

#[derive(clap::Args)]
pub struct Args {
    /// Directory with simulated events.
    #[arg(long)]
    sim: PathBuf,
    /// Directory with real TrackML events; default: the shared real data.
    #[arg(long)]
    real: Option<PathBuf>,
    /// TrackML detectors.csv[.gz]; default: $EXATRKX_TRACKML_DIR or shared/data/trackml.
    #[arg(long)]
    detector: Option<PathBuf>,
    /// At most this many events from each directory.
    #[arg(long, default_value_t = 10)]
    max_events: usize,
    /// Also write both summaries as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn read_all(dir: &Path, max: usize) -> anyhow::Result<Vec<io::Event>> {
    let ids = io::list_events(dir)?;
    anyhow::ensure!(
        !ids.is_empty(),
        "no event%09d-hits.csv[.gz] in {}",
        dir.display()
    );
    ids.iter()
        .take(max)
        .map(|&id| {
            io::read_event(dir, id)
                .with_context(|| format!("reading event {id} from {}", dir.display()))
        })
        .collect()
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let det_path = match args.detector {
        Some(p) => p,
        None => Detector::default_path().context("no detectors.csv[.gz]: pass --detector")?,
    };
    let real_dir = match args.real {
        Some(p) => p,
        None => det_path
            .parent()
            .map(Path::to_path_buf)
            .context("no --real directory")?,
    };
    let det = Detector::load(&det_path)?;
    let sim = compare::summarize(&read_all(&args.sim, args.max_events)?, &det);
    let real = compare::summarize(&read_all(&real_dir, args.max_events)?, &det);
    print!("{}", compare::table(&sim, &real));
    if let Some(path) = args.json {
        let json = serde_json::json!({"sim": sim, "real": real});
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
