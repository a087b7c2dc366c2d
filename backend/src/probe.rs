//! A load-time check that the TorchScript files follow the interfaces of docs/DESIGN.md
//! ("TorchScript models"): each network the settings use is loaded on the CPU and run once on
//! a tiny event (3 spacepoints, 2 edges). A missing, cut or foreign file, a missing
//! `num_features()`, a wrong `forward` signature or a wrong output shape then refuses the model
//! when it loads, with a message naming the file, instead of failing every request later.
//! Runs once per model (model state), before the instances load their own copies.
use std::path::Path;

use exatrkx_pipeline::{GraphMethod, PipelineConfig};
use tch::{CModule, Device, IValue, Kind, Tensor};
use triton::{Error, Result};

use crate::settings::without_backtrace;

/// Spacepoints and edges of the probe event (different counts, so that an output per
/// spacepoint is not mistaken for one per edge).
const PROBE_SPACEPOINTS: i64 = 3;
const PROBE_EDGES: [[i64; 2]; 2] = [[0, 1], [1, 2]];

/// One network of the pipeline: its parameter, its file, and what `forward` takes.
struct Network<'a> {
    parameter: &'static str,
    file: &'a str,
    takes_edges: bool,
}

fn refuse(network: &Network, path: &Path, problem: impl std::fmt::Display) -> Error {
    Error::invalid_arg(format!(
        "model file '{}' ({} = '{}'): {problem}",
        path.display(),
        network.parameter,
        network.file
    ))
}

fn torch_text(e: &tch::TchError) -> String {
    without_backtrace(&e.to_string())
}

/// A method without arguments returning a positive int (`num_features`, `embedding_dim`).
fn int_method(module: &CModule, name: &str) -> std::result::Result<i64, String> {
    match module.method_is::<IValue>(name, &[]) {
        Ok(IValue::Int(n)) if n > 0 => Ok(n),
        Ok(other) => Err(format!(
            "{name}() returned {other:?}, expected a positive int"
        )),
        Err(e) => Err(format!(
            "does not export {name}() (docs/DESIGN.md, TorchScript models): {}",
            torch_text(&e)
        )),
    }
}

/// Probe features `[3, width]`: plausible `(r, phi, z)` values repeated over the columns.
fn probe_features(width: i64) -> Tensor {
    let triple = [
        [0.032f32, 0.1, 0.01],
        [0.072, 0.1, 0.02],
        [0.116, 0.1, 0.03],
    ];
    let values: Vec<f32> = (0..PROBE_SPACEPOINTS as usize)
        .flat_map(|row| (0..width as usize).map(move |col| triple[row][col % 3]))
        .collect();
    Tensor::from_slice(&values).reshape([PROBE_SPACEPOINTS, width])
}

/// Load and run one network; returns its `num_features()`.
fn probe_network(folder: &Path, network: &Network) -> Result<i64> {
    let path = folder.join(network.file);
    if !path.is_file() {
        return Err(refuse(network, &path, "no such file"));
    }
    let module = CModule::load_on_device(&path, Device::Cpu).map_err(|e| {
        refuse(
            network,
            &path,
            format!(
                "not a loadable TorchScript file (cut short or corrupt?): {}",
                torch_text(&e)
            ),
        )
    })?;
    let width = int_method(&module, "num_features").map_err(|p| refuse(network, &path, p))?;
    let x = probe_features(width);
    let (inputs, signature, expected) = if network.takes_edges {
        let edges: Vec<i64> = PROBE_EDGES
            .iter()
            .map(|e| e[0])
            .chain(PROBE_EDGES.iter().map(|e| e[1]))
            .collect();
        let edge_index = Tensor::from_slice(&edges).reshape([2, PROBE_EDGES.len() as i64]);
        (
            vec![IValue::Tensor(x), IValue::Tensor(edge_index)],
            format!("forward(x: f32[3, {width}], edge_index: i64[2, 2])"),
            vec![PROBE_EDGES.len() as i64],
        )
    } else {
        let dim = int_method(&module, "embedding_dim").map_err(|p| refuse(network, &path, p))?;
        (
            vec![IValue::Tensor(x)],
            format!("forward(x: f32[3, {width}])"),
            vec![PROBE_SPACEPOINTS, dim],
        )
    };
    let output = tch::no_grad(|| module.forward_is(&inputs)).map_err(|e| {
        refuse(
            network,
            &path,
            format!("{signature} failed: {}", torch_text(&e)),
        )
    })?;
    let IValue::Tensor(out) = output else {
        return Err(refuse(
            network,
            &path,
            format!("{signature} returned {output:?}, expected a tensor"),
        ));
    };
    // The pipeline reads edge scores whatever their layout, one per edge.
    let fits = if network.takes_edges {
        out.numel() as i64 == expected[0]
    } else {
        out.size() == expected
    };
    let floating = matches!(
        out.kind(),
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    );
    if !fits || !floating {
        return Err(refuse(
            network,
            &path,
            format!(
                "{signature} returned {:?} of shape {:?}, expected floats of shape {expected:?}",
                out.kind(),
                out.size()
            ),
        ));
    }
    Ok(width)
}

/// Check every network the settings use; returns the feature width they share.
pub fn probe_models(cfg: &PipelineConfig) -> Result<usize> {
    let mut networks = Vec::new();
    if cfg.graph_construction == GraphMethod::Radius {
        networks.push(Network {
            parameter: "embedding_model",
            file: &cfg.embedding_model,
            takes_edges: false,
        });
    }
    networks.push(Network {
        parameter: "filter_model",
        file: &cfg.filter_model,
        takes_edges: true,
    });
    networks.push(Network {
        parameter: "gnn_model",
        file: &cfg.gnn_model,
        takes_edges: true,
    });
    let mut width: Option<(i64, &Network)> = None;
    for network in &networks {
        let n = probe_network(&cfg.model_dir, network)?;
        match width {
            Some((w, first)) if w != n => {
                return Err(refuse(
                    network,
                    &cfg.model_dir.join(network.file),
                    format!(
                        "num_features() is {n} but {} ({}) has {w}; every network reads the \
                         same features",
                        first.file, first.parameter
                    ),
                ))
            }
            Some(_) => {}
            None => width = Some((n, network)),
        }
    }
    Ok(width.map_or(0, |(w, _)| w as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A folder removed at the end of the test.
    struct Folder(PathBuf);

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The pipeline's committed test models (real TorchScript files with the DESIGN.md
    /// interfaces), copied into a fresh folder per test.
    fn models(test: &str) -> (Folder, PipelineConfig) {
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline/tests/fixtures/exatrkx/1");
        let dir = std::env::temp_dir().join(format!("exatrkx-probe-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["embed.pt", "filter.pt", "gnn.pt"] {
            std::fs::copy(source.join(file), dir.join(file)).unwrap();
        }
        let cfg = PipelineConfig {
            model_dir: dir.clone(),
            ..PipelineConfig::default()
        };
        (Folder(dir), cfg)
    }

    fn gnn(cfg: &PipelineConfig) -> PathBuf {
        cfg.model_dir.join("gnn.pt")
    }

    fn refused(cfg: &PipelineConfig) -> String {
        let err = probe_models(cfg).unwrap_err();
        assert_eq!(err.code(), triton::ErrorCode::InvalidArg);
        let message = err.message().to_string();
        assert!(!message.contains("frame #"), "backtrace left in: {message}");
        message
    }

    #[test]
    fn the_test_models_pass() {
        let (_dir, cfg) = models("pass");
        assert_eq!(probe_models(&cfg).unwrap(), 9);
    }

    #[test]
    fn a_missing_file_is_named() {
        let (_dir, cfg) = models("missing");
        std::fs::remove_file(gnn(&cfg)).unwrap();
        let message = refused(&cfg);
        assert!(
            message.contains("gnn.pt") && message.contains("no such file"),
            "{message}"
        );
        assert!(message.contains("gnn_model"), "{message}");
    }

    #[test]
    fn a_cut_or_foreign_file_is_named() {
        let (_dir, cfg) = models("cut");
        let bytes = std::fs::read(gnn(&cfg)).unwrap();
        std::fs::write(gnn(&cfg), &bytes[..bytes.len() / 2]).unwrap();
        let message = refused(&cfg);
        assert!(
            message.contains("gnn.pt") && message.contains("not a loadable TorchScript"),
            "{message}"
        );
        std::fs::write(gnn(&cfg), "hit_id,x,y,z\n").unwrap();
        assert!(refused(&cfg).contains("not a loadable TorchScript"));
    }

    #[test]
    fn a_wrong_interface_is_found_by_the_probe() {
        // The embedding where the GNN belongs: forward takes x only.
        let (_dir, mut cfg) = models("interface");
        cfg.gnn_model = "embed.pt".into();
        let message = refused(&cfg);
        assert!(message.contains("gnn_model = 'embed.pt'"), "{message}");
        assert!(
            message.contains("forward(x: f32[3, 9], edge_index: i64[2, 2]) failed"),
            "{message}"
        );
        // An edge classifier where the embedding belongs: no embedding_dim().
        let (_dir2, mut cfg) = models("interface2");
        cfg.embedding_model = "filter.pt".into();
        let message = refused(&cfg);
        assert!(
            message.contains("does not export embedding_dim()"),
            "{message}"
        );
        // A traced module exports no num_features().
        let (_dir3, cfg) = models("interface3");
        let x = Tensor::zeros([3, 9], (Kind::Float, Device::Cpu));
        let traced = CModule::create_by_tracing("M", "forward", &[x], &mut |t| {
            vec![t[0].sum_dim_intlist(1, false, Kind::Float)]
        })
        .unwrap();
        traced.save(gnn(&cfg)).unwrap();
        let message = refused(&cfg);
        assert!(
            message.contains("does not export num_features()"),
            "{message}"
        );
    }

    #[test]
    fn the_module_map_needs_no_embedding() {
        let (_dir, mut cfg) = models("module_map");
        cfg.graph_construction = GraphMethod::ModuleMap;
        std::fs::remove_file(cfg.model_dir.join("embed.pt")).unwrap();
        assert_eq!(probe_models(&cfg).unwrap(), 9);
    }
}
