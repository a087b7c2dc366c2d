//! Timings of the detector load, simulation, writing and reading of events, and the realism
//! summary of the simulated events. `cargo run --release -p trackml --example bench -- [MU] [EVENTS]`
use std::time::Instant;

use trackml::sim::{SimConfig, Simulator};
use trackml::{compare, io, Detector};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mu: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
    let events: u64 = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let path =
        Detector::default_path().ok_or("detectors.csv.gz not found; set EXATRKX_TRACKML_DIR")?;
    let t = Instant::now();
    let det = Detector::load(&path)?;
    println!(
        "detector load: {:.3} s ({} modules, {} layers)",
        t.elapsed().as_secs_f64(),
        det.modules.len(),
        det.layers.len()
    );
    let cfg = SimConfig {
        mu,
        ..SimConfig::default()
    };
    let sim = Simulator::new(&det, cfg)?;
    let dir = std::env::temp_dir().join(format!("trackml-bench-{}", std::process::id()));
    let mut all = Vec::new();
    for e in 0..events {
        let t = Instant::now();
        let event = sim.event(e);
        let t_sim = t.elapsed().as_secs_f64();
        let t = Instant::now();
        io::write_event(&dir, &event)?;
        let t_write = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let back = io::read_event(&dir, e)?;
        let t_read = t.elapsed().as_secs_f64();
        println!(
            "event {e}: mu {mu}: {} spacepoints, {} particles; simulate {t_sim:.3} s, write {t_write:.3} s, read {t_read:.3} s",
            back.hits.len(),
            back.particles.as_ref().map_or(0, |p| p.len())
        );
        all.push(event);
    }
    std::fs::remove_dir_all(&dir).ok();
    let s = compare::summarize(&all, &det);
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
