//! Triton custom backend `exatrkx` (`libtriton_exatrkx.so`): Triton glue only. The model state
//! holds the configuration checked against the model contract ([`settings`]); each model
//! instance holds its own `exatrkx_pipeline::Pipeline` ([`instance`]); every request of an
//! execute call is one event with its own response. The pipeline itself knows nothing of
//! Triton; the safe `triton` crate keeps raw pointers out of this crate.

pub mod instance;
pub mod settings;

use triton::{log_info, Model, ModelInstance, Request, RequestTimer, Response, Result};

use crate::instance::InstanceState;
use crate::settings::ModelSettings;

/// The backend type behind the entry points.
pub struct ExaTrkx;

impl triton::Backend for ExaTrkx {
    type ModelState = ModelSettings;
    type InstanceState = InstanceState;

    fn model_initialize(model: &Model) -> Result<ModelSettings> {
        let config = model.config()?;
        let model_dir = model.repository_path()?;
        let version_dir = model.version_path()?;
        let settings = ModelSettings::from_config(&config, &model_dir, &version_dir)?;
        log_info!(
            "model '{}' version folder {}: graph {:?}, radius {}, knn {}, filter_cut {}, \
             gnn_cut {}, track builder {:?}, precision {:?}, outputs {}",
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
