//! Triton custom backend `exatrkx` (`libtriton_exatrkx.so`): Triton glue only. The model state
//! holds the configuration checked against the model contract ([`settings`]); each model
//! instance holds its own `exatrkx_pipeline::Pipeline` ([`instance`]); every request of an
//! execute call is one event with its own response. The pipeline itself knows nothing of
//! Triton; the safe `triton` crate keeps raw pointers out of this crate.

pub mod instance;
pub mod probe;
pub mod settings;
pub mod validate;

use std::sync::atomic::{AtomicBool, Ordering};

use triton::{
    log_info, BackendHandle, Error, Model, ModelInstance, Request, RequestTimer, Response, Result,
};

use crate::instance::InstanceState;
use crate::settings::ModelSettings;

/// The backend type behind the entry points.
pub struct ExaTrkx;

/// Whether TorchScript's graph executor optimises the networks (profiles, then specialises
/// them to the shapes it saw). Off by default: every event brings other shapes, and each new
/// shape then costs a re-optimisation (about a second for the GNN on 2 cores, against 10 to
/// 100 ms to run it). `--backend-config=exatrkx,jit-optimize=true` turns it on.
static JIT_OPTIMIZE: AtomicBool = AtomicBool::new(false);

/// The backend setting that turns TorchScript's graph executor optimisation on.
pub const JIT_OPTIMIZE_SETTING: &str = "jit-optimize";

/// The backend setting that leaves glibc's allocator at its defaults (`false`); on by default
/// (`exatrkx_pipeline::allocator`).
pub const MALLOC_TUNING_SETTING: &str = "malloc-tuning";

pub fn set_jit_optimize(on: bool) {
    JIT_OPTIMIZE.store(on, Ordering::Relaxed);
}

/// Apply the TorchScript executor setting to the calling thread (libtorch keeps it per
/// thread, and Triton runs each instance on a thread of its own).
pub fn apply_jit_settings() {
    tch::jit::set_graph_executor_optimize(JIT_OPTIMIZE.load(Ordering::Relaxed));
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid_arg(format!(
            "backend setting '{key}' = '{value}': expected true or false"
        ))),
    }
}

impl triton::Backend for ExaTrkx {
    type ModelState = ModelSettings;
    type InstanceState = InstanceState;

    fn initialize(backend: &BackendHandle) -> Result<()> {
        // Triton passes its own settings here too; only ours are read.
        let cmdline = backend.cmdline()?;
        if let Some(value) = cmdline.get(JIT_OPTIMIZE_SETTING) {
            set_jit_optimize(parse_bool(JIT_OPTIMIZE_SETTING, value)?);
        }
        let tune = match cmdline.get(MALLOC_TUNING_SETTING) {
            Some(value) => parse_bool(MALLOC_TUNING_SETTING, value)?,
            None => true,
        };
        if tune {
            log_info!(
                "backend 'exatrkx': glibc allocator tuning for large temporaries: {:?}",
                exatrkx_pipeline::tune_allocator()
            );
        }
        log_info!(
            "backend 'exatrkx': TorchScript graph executor optimisation {}",
            if JIT_OPTIMIZE.load(Ordering::Relaxed) {
                "on"
            } else {
                "off"
            }
        );
        Ok(())
    }

    fn model_initialize(model: &Model) -> Result<ModelSettings> {
        let config = model.config()?;
        let model_dir = model.repository_path()?;
        let version_dir = model.version_path()?;
        let settings = ModelSettings::from_config(&config, &model_dir, &version_dir)?;
        // The networks' interfaces are checked once here, so that a bad file refuses the model
        // with one message instead of failing every request.
        let width = probe::probe_models(&settings.pipeline)
            .map_err(|e| e.context(format!("model '{}'", settings.model_name)))?;
        log_info!(
            "model '{}' version folder {}: graph {:?}, radius {}, knn {}, filter_cut {}, \
             gnn_cut {}, track builder {:?}, precision {:?}, {width} features, outputs {}",
            settings.model_name,
            version_dir.display(),
            settings.pipeline.graph_construction,
            settings.pipeline.radius,
            settings.pipeline.knn,
            settings.pipeline.filter_cut,
            settings.pipeline.gnn_cut,
            settings.pipeline.track_builder,
            settings.pipeline.precision,
            settings.outputs.join(", ")
        );
        Ok(settings)
    }

    fn instance_initialize(
        model: &ModelSettings,
        instance: &ModelInstance,
    ) -> Result<InstanceState> {
        InstanceState::new(model, instance)
    }

    fn execute(
        model: &ModelSettings,
        instance: &mut InstanceState,
        request: &Request,
        response: &mut Response,
        timer: &mut RequestTimer,
    ) -> Result<()> {
        instance.execute(model, request, response, timer)
    }
}

triton::declare_backend!(ExaTrkx);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_settings_are_booleans() {
        assert!(parse_bool("jit-optimize", "True").unwrap());
        assert!(!parse_bool("jit-optimize", "0").unwrap());
        let err = parse_bool("jit-optimize", "fast").unwrap_err();
        assert!(err.message().contains("'jit-optimize'"), "{err}");
    }
}
