//! The public API on the committed fixture models: input checks, tiny events, optional
//! outputs, settings that must fail at load time.
use std::path::{Path, PathBuf};

use exatrkx_pipeline::{npy, EventInput, OutputRequest, Pipeline, PipelineConfig, PipelineError};

fn model_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exatrkx")
}

fn config(params: &[(&str, &str)]) -> PipelineConfig {
    let mut cfg = PipelineConfig::from_model_folder(&model_folder(), "1").unwrap();
    for (k, v) in params {
        cfg.set(k, v).unwrap();
    }
    cfg
}

fn fixture_event() -> (Vec<f32>, Vec<i64>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let (shape, features) = npy::read::<f32>(&dir.join("event000000001-features.npy")).unwrap();
    assert_eq!(shape[1], 9);
    let (_, ids) = npy::read::<i64>(&dir.join("event000000001-module_ids.npy")).unwrap();
    (features, ids)
}

/// The stages every radius-graph run times first, in order.
const FIRST_STAGES: [&str; 4] = ["embedding", "graph", "filter", "gnn"];

/// The stage names of a run's timings, in order.
fn stages(out: &exatrkx_pipeline::EventOutput) -> Vec<&'static str> {
    out.timings.iter().map(|t| t.stage).collect()
}

fn input<'a>(features: &'a [f32], ids: Option<&'a [i64]>) -> EventInput<'a> {
    EventInput {
        features,
        num_features: 9,
        module_ids: ids,
    }
}

#[test]
fn pipeline_is_shareable_between_threads() {
    fn check<T: Send + Sync>() {}
    check::<Pipeline>();
}

#[test]
fn config_pbtxt_parameters_are_applied() {
    let cfg = config(&[]);
    assert_eq!(cfg.knn, 32);
    assert_eq!(cfg.filter_chunk, 4096);
    assert_eq!(cfg.model_dir, model_folder().join("1"));
}

#[test]
fn tiny_events_give_empty_or_unassigned_labels() {
    let pipeline = Pipeline::new(config(&[])).unwrap();
    let want = OutputRequest {
        edges: true,
        tracks: true,
    };
    let out = pipeline.run(&input(&[], None), want).unwrap();
    assert!(out.labels.is_empty() && out.num_tracks == 0);
    assert_eq!(out.edge_index, Some(vec![]));
    assert_eq!(out.tracks.as_deref(), Some(&[][..]));
    let (features, _) = fixture_event();
    for n in 1..=2 {
        let out = pipeline
            .run(&input(&features[..9 * n], None), want)
            .unwrap();
        assert_eq!(out.labels, vec![-1; n]);
        assert_eq!(out.graph_sizes[2] * 2, out.edge_index.unwrap().len());
    }
}

#[test]
fn bad_inputs_are_refused_with_clear_messages() {
    let pipeline = Pipeline::new(config(&[("max_spacepoints", "1000")])).unwrap();
    let (mut features, ids) = fixture_event();
    let want = OutputRequest::default();
    let err = |i: EventInput| match pipeline.run(&i, want) {
        Err(PipelineError::Input(msg)) => msg,
        other => panic!("expected an input error, got {other:?}"),
    };
    let wrong_width = EventInput {
        features: &features[..20],
        num_features: 10,
        module_ids: None,
    };
    assert!(err(wrong_width).contains("10 columns"));
    assert!(err(input(&features[..10], None)).contains("not a multiple of 9"));
    assert!(err(input(&features, None)).contains("max_spacepoints = 1000"));
    assert!(err(input(&features[..90], Some(&ids[..9]))).contains("MODULE_ID has 9 entries for 10"));
    features[4 * 9 + 2] = f32::NAN;
    assert!(err(input(&features[..90], None)).contains("FEATURES[4, 2]"));

    let map = Pipeline::new(config(&[("graph_construction", "module_map")])).unwrap();
    let (features, _) = fixture_event();
    let msg = map
        .run(&input(&features, None), want)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("MODULE_ID"), "{msg}");
}

#[test]
fn settings_that_cannot_work_fail_at_load() {
    let msg = |cfg| {
        Pipeline::new(cfg)
            .err()
            .expect("load must fail")
            .to_string()
    };
    let m = msg(config(&[("precision", "fp16")]));
    assert!(m.contains("precision") && m.contains("fp16"), "{m}");
    let m = msg(config(&[("gnn_model", "missing.pt")]));
    assert!(
        m.contains("missing.pt") && m.contains("no such file"),
        "{m}"
    );
    let m = msg(config(&[
        ("graph_construction", "module_map"),
        ("module_map", "nope.csv"),
    ]));
    assert!(m.contains("nope.csv"), "{m}");
    let m = msg(config(&[("track_model", "no_tracks.pt")]));
    assert!(
        m.contains("no_tracks.pt") && m.contains("no such file"),
        "{m}"
    );
    // a network that is not a track-quality network (no num_track_features)
    let m = msg(config(&[("track_model", "filter.pt")]));
    assert!(m.contains("num_track_features"), "{m}");
    // The embedding is not loaded for the module map: a missing file does not matter there.
    Pipeline::new(config(&[
        ("graph_construction", "module_map"),
        ("embedding_model", "none.pt"),
    ]))
    .unwrap();
}

#[test]
fn optional_outputs_describe_the_tracks() {
    let pipeline = Pipeline::new(config(&[])).unwrap();
    let (features, _) = fixture_event();
    let want = OutputRequest {
        edges: true,
        tracks: true,
    };
    let out = pipeline.run(&input(&features, None), want).unwrap();
    let again = pipeline.run(&input(&features, None), want).unwrap();
    assert_eq!(out.labels, again.labels, "runs must be deterministic");

    let edges = out.edge_index.as_ref().unwrap();
    let scores = out.edge_scores.as_ref().unwrap();
    assert_eq!(edges.len(), 2 * out.graph_sizes[2]);
    assert_eq!(scores.len(), out.graph_sizes[2]);
    let cut = pipeline.config().gnn_cut;
    assert!(scores.iter().all(|&s| s > cut && s < 1.0));
    assert!(out.graph_sizes[0] >= out.graph_sizes[1] && out.graph_sizes[1] >= out.graph_sizes[2]);

    let tracks = out.tracks.as_ref().unwrap();
    assert_eq!(tracks.len(), out.num_tracks);
    assert!(out.num_tracks > 0);
    for (k, t) in tracks.iter().enumerate() {
        assert_eq!(t.label, k as i64);
        let members = out.labels.iter().filter(|&&l| l == k as i64).count();
        assert_eq!(t.n_spacepoints, members);
        assert!(members >= 3);
        assert!(t.pt > 0.0 && t.phi.abs() <= std::f32::consts::PI);
    }
    assert_eq!(
        stages(&out),
        [&FIRST_STAGES[..], &["tracks", "fit"]].concat()
    );
}

#[test]
fn batches_and_chunks_give_the_same_numbers() {
    use exatrkx_pipeline::edge_classifier::{EdgeClassifierConfig, TorchEdgeClassifier};
    use exatrkx_pipeline::embedding::{Embedding, EmbeddingConfig};
    use exatrkx_pipeline::ExecutionContext;

    let _no_grad = tch::no_grad_guard();
    let ctx = ExecutionContext::cpu();
    let (features, _) = fixture_event();
    let n = features.len() as i64 / 9;
    let x = tch::Tensor::from_slice(&features).view([n, 9]);
    let embed = |batch| {
        let model = model_folder().join("1/embed.pt");
        Embedding::load(&EmbeddingConfig { model, batch }, &ctx)
            .unwrap()
            .embed(&x)
            .unwrap()
    };
    let (whole, batched) = (embed(100_000), embed(300));
    assert_eq!(batched.size(), [n, 6]);
    assert!(whole.allclose(&batched, 1e-5, 1e-6, false));

    let edges = tch::Tensor::from_slice2(&[[0i64, 5, 9, 100, 2000], [1, 6, 10, 101, 2001]])
        .repeat([1, 300]);
    let scores = |chunk| {
        let cfg = EdgeClassifierConfig {
            name: "filter",
            model: model_folder().join("1/filter.pt"),
            cut: 0.5,
            chunk,
            fused: false,
        };
        TorchEdgeClassifier::load(&cfg, &ctx)
            .unwrap()
            .scores(&x, &edges)
            .unwrap()
    };
    let (one_call, chunked) = (scores(None), scores(Some(7)));
    assert_eq!(chunked.size(), [1500]);
    assert!(one_call.allclose(&chunked, 1e-6, 1e-7, false));
}

#[test]
fn intra_op_threads_apply_to_the_running_thread() {
    let (features, _) = fixture_event();
    // a thread of its own, as a Triton instance has: the OpenMP setting is per thread
    std::thread::spawn(move || {
        tch::set_num_threads(2);
        let want = OutputRequest::default();
        let default = Pipeline::new(config(&[])).unwrap();
        default.run(&input(&features, None), want).unwrap();
        assert_eq!(tch::get_num_threads(), 2, "0 leaves libtorch's setting");
        let one = Pipeline::new(config(&[("intra_op_threads", "1")])).unwrap();
        one.run(&input(&features, None), want).unwrap();
        assert_eq!(tch::get_num_threads(), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn the_track_quality_stage_keeps_the_candidates_above_its_cut() {
    let (features, _) = fixture_event();
    let run = |params: &[(&str, &str)]| {
        Pipeline::new(config(params))
            .unwrap()
            .run(&input(&features, None), OutputRequest::default())
            .unwrap()
    };
    let plain = run(&[]);
    assert!(plain.num_tracks > 0);
    // a cut no sigmoid passes drops every candidate; cut 0 keeps them all, same labels
    let none = run(&[("track_model", "tracks.pt"), ("track_cut", "0.9999999")]);
    assert_eq!((none.num_tracks, none.labels.iter().max()), (0, Some(&-1)));
    let all = run(&[("track_model", "tracks.pt"), ("track_cut", "0")]);
    assert_eq!(all.labels, plain.labels);
    assert_eq!(
        stages(&all),
        [&FIRST_STAGES[..], &["tracks", "track_quality"]].concat()
    );
}

/// The served filter (a FilterNet of width 48) and GNN (heterogeneous, width 32) on the
/// fixture event's spacepoints, through the fused CPU kernels and through libtorch.
#[test]
fn the_fused_kernels_score_as_libtorch_does() {
    use exatrkx_pipeline::edge_classifier::{EdgeClassifierConfig, TorchEdgeClassifier};
    use exatrkx_pipeline::ExecutionContext;
    let _no_grad = tch::no_grad_guard();
    let ctx = ExecutionContext::cpu();
    let (features, _) = fixture_event();
    let n = features.len() / 9;
    let x = tch::Tensor::from_slice(&features).view([n as i64, 9]);
    // near pairs (as a radius graph gives), far pairs, both orientations, a self-loop and an
    // odd count; the spacepoints past index 1800 have no edge (the GNN skips them)
    let pairs: Vec<(i64, i64)> = (0..1800i64)
        .flat_map(|i| [1, 2, 17, 901].map(|step| (i, (i + step) % 1800)))
        .chain([(5, 4), (7, 7), (0, 1)])
        .collect();
    assert!(n > 2000);
    let index: Vec<i64> = pairs
        .iter()
        .map(|p| p.0)
        .chain(pairs.iter().map(|p| p.1))
        .collect();
    let edges = tch::Tensor::from_slice(&index).view([2, pairs.len() as i64]);
    let load = |name, model: PathBuf, fused| {
        let cfg = EdgeClassifierConfig {
            name,
            model,
            cut: 0.5,
            chunk: (name == "filter").then_some(4096),
            fused,
        };
        TorchEdgeClassifier::load(&cfg, &ctx).unwrap()
    };
    let served = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model_repository/exatrkx/1");
    // the refining pass runs the GNN's kernel
    for (name, cut) in [("filter", 0.01), ("gnn", 0.5), ("gnn_refine", 0.5)] {
        let file = served.join(format!("{}.pt", name.trim_end_matches("_refine")));
        let fused = load(name, file.clone(), true);
        let plain = load(name, file, false);
        assert!(!plain.is_fused(), "{name}");
        if !exatrkx_pipeline::fused_kernels_available() {
            // the kernels run only with AVX2 and FMA: libtorch everywhere else
            assert!(!fused.is_fused(), "{name}");
            continue;
        }
        assert!(fused.is_fused(), "{name}");
        let want = Vec::<f32>::try_from(plain.scores(&x, &edges).unwrap()).unwrap();
        let got = fused.fused_scores(&features, 9, &index).unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}: largest score difference {worst}");
        // both sides of the cut are exercised
        let above = want.iter().filter(|&&s| s > cut).count();
        assert!(
            above > 0 && above < want.len(),
            "{name}: {above} of {} above {cut}",
            want.len()
        );
    }

    // the fixture networks are older ones (no layer norms, raw features): libtorch runs them
    for name in ["filter", "gnn"] {
        let other = load(name, model_folder().join(format!("1/{name}.pt")), true);
        assert!(!other.is_fused(), "{name}");
        assert!(other.fused_scores(&features, 9, &index).is_none());
        assert_eq!(
            other.scores(&x, &edges).unwrap().size(),
            [pairs.len() as i64]
        );
    }
}

#[test]
fn the_cpu_kernels_setting_is_checked() {
    let mut cfg = config(&[]);
    assert!(cfg.fused_kernels);
    cfg.set("cpu_kernels", "torch").unwrap();
    assert!(!cfg.fused_kernels);
    let err = cfg.set("cpu_kernels", "fast").unwrap_err().to_string();
    assert!(
        err.contains("cpu_kernels") && err.contains("'auto' or 'torch'"),
        "{err}"
    );
}

/// The refining pass scores exactly the first pass's edges above `gnn_refine_cut`, as its
/// network scores that graph alone, and `gnn_cut` applies to those scores; a second cut in
/// `gnn_refine_cut` adds a pass on what the first refining pass keeps.
#[test]
fn the_refining_gnn_pass_rescores_the_thinned_graph() {
    use exatrkx_pipeline::edge_classifier::{EdgeClassifierConfig, TorchEdgeClassifier};
    use exatrkx_pipeline::ExecutionContext;
    let (features, _) = fixture_event();
    let n = features.len() / 9;
    let want = OutputRequest {
        edges: true,
        tracks: false,
    };
    let run = |params: &[(&str, &str)]| {
        Pipeline::new(config(params))
            .unwrap()
            .run(&input(&features, None), want)
            .unwrap()
    };
    // cuts at the medians, whatever the fixture network's scores are
    let median = |out: &exatrkx_pipeline::EventOutput| {
        let mut s = out.edge_scores.clone().unwrap();
        s.sort_by(f32::total_cmp);
        s[s.len() / 2].to_string()
    };
    let first_cut = median(&run(&[("gnn_cut", "0")]));
    let first = run(&[("gnn_cut", &first_cut)]);
    let refined = run(&[("gnn_refine_cut", &first_cut), ("gnn_cut", "0")]);
    assert_eq!(
        stages(&refined),
        [&FIRST_STAGES[..], &["gnn_refine", "tracks"]].concat()
    );
    let kept = first.edge_index.as_ref().unwrap();
    assert!(kept.len() > 2 && first.graph_sizes[1] > first.graph_sizes[2]);
    assert_eq!(refined.edge_index.as_ref(), Some(kept));

    // the same network on the thinned graph alone gives the refined scores, not the first ones
    let _no_grad = tch::no_grad_guard();
    let gnn = TorchEdgeClassifier::load(
        &EdgeClassifierConfig {
            name: "gnn",
            model: model_folder().join("1/gnn.pt"),
            cut: 0.0,
            chunk: None,
            fused: true,
        },
        &ExecutionContext::cpu(),
    )
    .unwrap();
    let x = tch::Tensor::from_slice(&features).view([n as i64, 9]);
    let edges = tch::Tensor::from_slice(kept).view([2, (kept.len() / 2) as i64]);
    let alone = Vec::<f32>::try_from(gnn.scores(&x, &edges).unwrap()).unwrap();
    let scores = refined.edge_scores.as_ref().unwrap();
    let worst = alone
        .iter()
        .zip(scores)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "refined scores differ by {worst}");
    assert_ne!(first.edge_scores.as_ref(), Some(scores));

    // gnn_cut keeps the refined scores above it, in the same order
    let cut_text = median(&refined);
    let cut: f32 = cut_text.parse().unwrap();
    let strict = run(&[("gnn_refine_cut", &first_cut), ("gnn_cut", &cut_text)]);
    let above: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > cut).collect();
    assert!(!above.is_empty() && above.len() < scores.len());
    let m = scores.len();
    let expect: Vec<i64> = above
        .iter()
        .map(|&i| kept[i])
        .chain(above.iter().map(|&i| kept[m + i]))
        .collect();
    assert_eq!(strict.edge_index, Some(expect));

    // a second refining pass scores what the first keeps above the second cut
    let twice = run(&[
        ("gnn_refine_cut", &format!("{first_cut}, {cut_text}")),
        ("gnn_cut", "0"),
    ]);
    assert_eq!(
        stages(&twice),
        [&FIRST_STAGES[..], &["gnn_refine", "gnn_refine2", "tracks"]].concat()
    );
    assert_eq!(twice.edge_index, strict.edge_index);
    let rescored = twice.edge_scores.unwrap();
    let once: Vec<f32> = above.iter().map(|&i| scores[i]).collect();
    assert_eq!(rescored.len(), once.len());
    assert_ne!(rescored, once);

    // a second network file for the pass must exist
    let err = Pipeline::new(config(&[
        ("gnn_refine_cut", "0.5"),
        ("gnn_refine_model", "no_gnn2.pt"),
    ]))
    .err()
    .expect("load must fail")
    .to_string();
    assert!(err.contains("no_gnn2.pt"), "{err}");
    // as must each pass's own
    let err = Pipeline::new(config(&[
        ("gnn_refine_cut", "0.5,0.6"),
        ("gnn_refine_model", "gnn.pt,no_gnn3.pt"),
    ]))
    .err()
    .expect("load must fail")
    .to_string();
    assert!(err.contains("no_gnn3.pt"), "{err}");
}
