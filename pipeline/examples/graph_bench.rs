//! Time the graph-construction stages alone (no networks): the radius graph on an embedding
//! file and the module map on an event's features and module ids.
//!
//! ```text
//! cargo run --release -p exatrkx-pipeline --example graph_bench -- \
//!     --features F.npy [--embedding E.npy --radius R --knn K] \
//!     [--module-map module_map.csv --module-ids M.npy] [--repeat N]
//! ```
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use exatrkx_pipeline::edges::orient_and_sort;
use exatrkx_pipeline::frnn::{radius_graph, RadiusGraphConfig};
use exatrkx_pipeline::module_map::ModuleMap;
use exatrkx_pipeline::npy;

#[derive(Parser)]
struct Args {
    /// Features `[N, F]` (column 0 orients the edges).
    #[arg(long)]
    features: PathBuf,
    /// Embedding `[N, D]` for the radius graph.
    #[arg(long)]
    embedding: Option<PathBuf>,
    #[arg(long, default_value_t = 0.1)]
    radius: f32,
    #[arg(long, default_value_t = 100)]
    knn: usize,
    #[arg(long)]
    module_map: Option<PathBuf>,
    #[arg(long)]
    module_ids: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// Best of `repeat` runs, in milliseconds, and the last result.
fn best<T>(repeat: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        out = Some(f());
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
    }
    (best, out.expect("one run"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (shape, features) = npy::read::<f32>(&args.features)?;
    if shape.len() != 2 {
        bail!("features must be [N, F]");
    }
    let radius_key: Vec<f32> = features.chunks_exact(shape[1]).map(|r| r[0]).collect();
    println!(
        "{} spacepoints, {} threads",
        shape[0],
        rayon::current_num_threads()
    );
    if let Some(path) = &args.embedding {
        let (eshape, emb) = npy::read::<f32>(path)?;
        let cfg = RadiusGraphConfig {
            radius: args.radius,
            knn: args.knn,
        };
        let (t, index) = best(args.repeat, || {
            radius_graph(&emb, eshape[1], &radius_key, &cfg)
        });
        println!("radius graph: {} edges, {t:.1} ms", index.len() / 2);
    }
    if let (Some(map), Some(ids)) = (&args.module_map, &args.module_ids) {
        let map = ModuleMap::load(map)?;
        let (_, ids) = npy::read::<i64>(ids)?;
        let (t_pairs, pairs) = best(args.repeat, || map.pairs(&features, shape[1], &ids));
        let (t_sort, index) = best(args.repeat, || orient_and_sort(&radius_key, &pairs));
        println!(
            "module map ({} rows): {} edges, pairs {t_pairs:.1} ms, orient+sort {t_sort:.1} ms",
            map.num_rows(),
            index.len() / 2
        );
    }
    Ok(())
}
