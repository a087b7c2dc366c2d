//! The Rust pipeline against the Python reference (`python/exatrkx/reference.py`) on the
//! committed fixture event and models: same edges after every stage, same scores, same labels,
//! for both graph constructions and both track builders.
//!
//! Both sides run the same TorchScript files through the same libtorch, in the same chunks, so
//! the scores are equal bit for bit and no edge can fall on the other side of a cut; the fixture
//! cuts lie halfway between two neighbouring scores. Any difference is a real disagreement.
use std::path::{Path, PathBuf};
use std::process::Command;

use exatrkx_pipeline::{npy, EventInput, OutputRequest, Pipeline, PipelineConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Variants compared: name and parameter overrides.
const VARIANTS: &[(&str, &[(&str, &str)])] = &[
    ("radius-cc", &[]),
    ("radius-walk", &[("track_builder", "walkthrough")]),
    ("map-cc", &[("graph_construction", "module_map")]),
    (
        "map-walk",
        &[
            ("graph_construction", "module_map"),
            ("track_builder", "walkthrough"),
        ],
    ),
    ("radius-cc-bf16", &[("precision", "bf16")]),
];

const PYTHON_RUNNER: &str = r#"
import json, sys
from pathlib import Path
import numpy as np
from exatrkx import reference

folder, events, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
variants = json.loads(sys.argv[4])
features, module_ids = reference.load_feature_event(events, 1)
for name, overrides in variants.items():
    params = reference.load_parameters(folder, overrides)
    result = reference.ReferencePipeline(folder / "1", params).run(features, module_ids)
    np.save(out / f"{name}-labels.npy", result.labels.astype(np.int64))
    np.save(out / f"{name}-edges.npy", result.edge_index.astype(np.int64))
    np.save(out / f"{name}-scores.npy", result.edge_scores.astype(np.float32))
    np.save(out / f"{name}-sizes.npy", np.asarray(result.graph_sizes, dtype=np.int64))
"#;

fn run_python_reference(out: &Path) {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make setup` creates the venv the reference runs in",
        python.display()
    );
    let variants: Vec<String> = VARIANTS
        .iter()
        .map(|(name, params)| {
            let kv: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("\"{k}\": \"{v}\""))
                .collect();
            format!("\"{name}\": {{{}}}", kv.join(", "))
        })
        .collect();
    let status = Command::new(&python)
        .env("PYTHONPATH", root().join("python"))
        .arg("-c")
        .arg(PYTHON_RUNNER)
        .arg(fixtures().join("exatrkx"))
        .arg(fixtures().join("events"))
        .arg(out)
        .arg(format!("{{{}}}", variants.join(", ")))
        .status()
        .expect("start the Python reference");
    assert!(status.success(), "the Python reference failed: {status}");
}

#[test]
fn labels_edges_and_scores_equal_the_python_reference() {
    let out = std::env::temp_dir().join(format!("exatrkx-cross-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    run_python_reference(&out);

    let events = fixtures().join("events");
    let (shape, features) = npy::read::<f32>(&events.join("event000000001-features.npy")).unwrap();
    let (_, module_ids) = npy::read::<i64>(&events.join("event000000001-module_ids.npy")).unwrap();
    let input = EventInput {
        features: &features,
        num_features: shape[1],
        module_ids: Some(&module_ids),
    };
    for (name, params) in VARIANTS {
        let mut cfg = PipelineConfig::from_model_folder(&fixtures().join("exatrkx"), "1").unwrap();
        for (k, v) in params.iter() {
            cfg.set(k, v).unwrap();
        }
        let got = Pipeline::new(cfg)
            .unwrap()
            .run(
                &input,
                OutputRequest {
                    edges: true,
                    tracks: false,
                },
            )
            .unwrap();
        let load_i64 = |what: &str| {
            npy::read::<i64>(&out.join(format!("{name}-{what}.npy")))
                .unwrap()
                .1
        };
        let sizes = load_i64("sizes");
        let labels = load_i64("labels");
        let edges = load_i64("edges");
        let scores = npy::read::<f32>(&out.join(format!("{name}-scores.npy")))
            .unwrap()
            .1;

        let got_sizes: Vec<i64> = got.graph_sizes.iter().map(|&s| s as i64).collect();
        assert_eq!(got_sizes, sizes, "{name}: edges after graph, filter, GNN");
        assert!(
            sizes[2] > 100,
            "{name}: too few edges for a meaningful comparison"
        );
        assert_eq!(
            got.edge_index.as_deref(),
            Some(edges.as_slice()),
            "{name}: edges"
        );
        assert_eq!(
            got.edge_scores.as_deref(),
            Some(scores.as_slice()),
            "{name}: scores"
        );
        let differ = got
            .labels
            .iter()
            .zip(&labels)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differ, 0, "{name}: {differ} labels differ");
        assert!(
            got.num_tracks >= 10,
            "{name}: only {} tracks",
            got.num_tracks
        );
    }
    std::fs::remove_dir_all(&out).ok();
}
