//! Instance state: one `Pipeline` (its own TorchScript modules) per model instance, on the
//! instance's device, and the execution of one request on it.
use exatrkx_pipeline::{
    DeviceKind, EventInput, OutputRequest, Pipeline, PipelineError, TrackParams,
};
use triton::{
    log_info, log_verbose, log_warn, DataType, Error, InstanceKind, ModelInstance, Request,
    RequestTimer, Response, Result,
};

use crate::settings::{
    pipeline_error, ModelSettings, EDGE_INDEX, EDGE_SCORES, FEATURES, LABELS, MODULE_ID, TRACKS,
    TRACK_COLUMNS,
};

pub struct InstanceState {
    name: String,
    pipeline: Pipeline,
}

/// The device for an instance: its GPU for `KIND_GPU` when libtorch can use it, else the CPU
/// if `allow_cpu_fallback` is set, else an error that says what to change.
pub fn choose_device(
    name: &str,
    kind: InstanceKind,
    device_id: i32,
    cuda_devices: i64,
    allow_cpu_fallback: bool,
) -> Result<DeviceKind> {
    match kind {
        InstanceKind::Cpu => Ok(DeviceKind::Cpu),
        InstanceKind::Gpu if device_id >= 0 && i64::from(device_id) < cuda_devices => {
            Ok(DeviceKind::Cuda(device_id as usize))
        }
        InstanceKind::Gpu if allow_cpu_fallback => {
            log_warn!(
                "model instance '{name}': KIND_GPU on GPU {device_id} but libtorch sees \
                 {cuda_devices} CUDA device(s); running on the CPU (allow_cpu_fallback = true)"
            );
            Ok(DeviceKind::Cpu)
        }
        InstanceKind::Gpu => Err(Error::unavailable(format!(
            "KIND_GPU on GPU {device_id}, but libtorch sees {cuda_devices} CUDA device(s); use \
             instance_group kind KIND_CPU, or set parameter allow_cpu_fallback to \"true\" to run \
             such instances on the CPU"
        ))),
        other => Err(Error::unsupported(format!(
            "instance_group kind {other} is not supported; use KIND_CPU or KIND_GPU"
        ))),
    }
}

impl InstanceState {
    pub fn new(settings: &ModelSettings, instance: &ModelInstance) -> Result<Self> {
        let name = instance.name()?;
        let kind = instance.kind()?;
        let device_id = if kind == InstanceKind::Gpu {
            instance.device_id()?
        } else {
            0
        };
        let cuda_devices = if kind == InstanceKind::Gpu {
            tch::Cuda::device_count()
        } else {
            0
        };
        let mut cfg = settings.pipeline.clone();
        cfg.device = choose_device(&name, kind, device_id, cuda_devices, cfg.allow_cpu_fallback)?;
        // Each pipeline on a GPU owns its CUDA stream (libtorch's current stream during its
        // events), so the instances on one GPU overlap.
        let pipeline = match Pipeline::new(cfg.clone()) {
            // The GPU is there but its CUDA setup is not (no driver library, no NVRTC, ...).
            Err(PipelineError::Device(reason))
                if cfg.allow_cpu_fallback && cfg.device != DeviceKind::Cpu =>
            {
                log_warn!(
                    "model instance '{name}': {reason}; running on the CPU \
                     (allow_cpu_fallback = true)"
                );
                cfg.device = DeviceKind::Cpu;
                Pipeline::new(cfg)
            }
            other => other,
        }
        .map_err(pipeline_error)?;
        let width = pipeline.num_features();
        if let Some(&fixed) = settings.feature_dims.get(1).filter(|&&d| d > 0) {
            if fixed as usize != width {
                return Err(Error::invalid_arg(format!(
                    "input '{FEATURES}' is configured with {fixed} columns but the models \
                     expect {width}"
                )));
            }
        }
        log_info!(
            "model instance '{name}': pipeline on {:?}, {width} features, models in {}",
            pipeline.config().device,
            pipeline.config().model_dir.display()
        );
        Ok(Self { name, pipeline })
    }

    /// Answer one request: read its inputs, run the pipeline, write the requested outputs.
    pub fn execute(
        &mut self,
        settings: &ModelSettings,
        request: &Request,
        response: &mut Response,
        timer: &mut RequestTimer,
    ) -> Result<()> {
        let requested = request.requested_outputs()?;
        let want = output_request(settings, &requested)?;

        let features = request
            .input(FEATURES)?
            .ok_or_else(|| Error::invalid_arg(format!("input '{FEATURES}' is missing")))?;
        features.expect(DataType::Fp32, 2)?;
        let (n, columns) = (features.shape()[0], features.shape()[1]);
        let width = self.pipeline.num_features();
        if columns != width as i64 {
            return Err(Error::invalid_arg(format!(
                "input '{FEATURES}' has {columns} feature columns (shape {:?}) but the models \
                 expect {width}",
                features.shape()
            )));
        }
        let max = self.pipeline.config().max_spacepoints;
        if n > max as i64 {
            return Err(Error::invalid_arg(format!(
                "input '{FEATURES}' has {n} spacepoints, above max_spacepoints = {max}"
            )));
        }
        let x: Vec<f32> = features.to_vec()?;
        crate::validate::check_features(&x, width)?;
        let module_ids = self.module_ids(settings, request, n)?;
        timer.compute_start();

        let input = EventInput {
            features: &x,
            num_features: width,
            module_ids: module_ids.as_deref(),
        };
        crate::apply_jit_settings();
        let out = self.pipeline.run(&input, want).map_err(pipeline_error)?;
        timer.compute_end();

        for name in &requested {
            match name.as_str() {
                LABELS => response.output(LABELS, &[out.labels.len() as i64], &out.labels)?,
                EDGE_INDEX => {
                    let edges = out.edge_index.as_deref().unwrap_or(&[]);
                    response.output(EDGE_INDEX, &[2, edges.len() as i64 / 2], edges)?
                }
                EDGE_SCORES => {
                    let scores = out.edge_scores.as_deref().unwrap_or(&[]);
                    response.output(EDGE_SCORES, &[scores.len() as i64], scores)?
                }
                TRACKS => {
                    let rows = track_rows(out.tracks.as_deref().unwrap_or(&[]));
                    let shape = [(rows.len() / TRACK_COLUMNS) as i64, TRACK_COLUMNS as i64];
                    response.output(TRACKS, &shape, &rows)?
                }
                _ => {}
            }
        }
        log_verbose!(
            "model instance '{}': {n} spacepoints -> {} tracks; edges {:?}; {}",
            self.name,
            out.num_tracks,
            out.graph_sizes,
            out.timings
                .iter()
                .map(|t| format!("{} {:.1} ms", t.stage, t.seconds * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }

    /// `MODULE_ID` when sent (one per spacepoint); required for module-map graph construction.
    fn module_ids(
        &self,
        settings: &ModelSettings,
        request: &Request,
        n: i64,
    ) -> Result<Option<Vec<i64>>> {
        let Some(input) = request.input(MODULE_ID)? else {
            if settings.pipeline.graph_construction == exatrkx_pipeline::GraphMethod::ModuleMap {
                return Err(Error::invalid_arg(format!(
                    "input '{MODULE_ID}' is required: graph_construction is module_map"
                )));
            }
            return Ok(None);
        };
        input.expect(DataType::Int64, 1)?;
        if input.shape()[0] != n {
            return Err(Error::invalid_arg(format!(
                "input '{MODULE_ID}' has {} entries but '{FEATURES}' has {n} spacepoints",
                input.shape()[0]
            )));
        }
        input.to_vec().map(Some)
    }
}

/// Which optional results to compute, from the requested output names.
pub fn output_request(settings: &ModelSettings, requested: &[String]) -> Result<OutputRequest> {
    let mut want = OutputRequest::default();
    for name in requested {
        if !settings.declares_output(name) {
            return Err(Error::invalid_arg(format!(
                "output '{name}' was requested but model '{}' has only {}",
                settings.model_name,
                settings.outputs.join(", ")
            )));
        }
        match name.as_str() {
            EDGE_INDEX | EDGE_SCORES => want.edges = true,
            TRACKS => want.tracks = true,
            _ => {}
        }
    }
    Ok(want)
}

/// `TRACKS` rows: label, n_spacepoints, pt, eta, phi, d0, z0, chi2_ndf.
pub fn track_rows(tracks: &[TrackParams]) -> Vec<f32> {
    tracks
        .iter()
        .flat_map(|t| {
            [
                t.label as f32,
                t.n_spacepoints as f32,
                t.pt,
                t.eta,
                t.phi,
                t.d0,
                t.z0,
                t.chi2_ndf,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(outputs: &[&str]) -> ModelSettings {
        ModelSettings {
            model_name: "exatrkx".into(),
            pipeline: Default::default(),
            feature_dims: vec![-1, -1],
            accepts_module_id: false,
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn optional_outputs_are_computed_only_when_requested() {
        let s = settings(&[LABELS, EDGE_INDEX, EDGE_SCORES, TRACKS]);
        let want = output_request(&s, &names(&[LABELS])).unwrap();
        assert_eq!(want, OutputRequest::default());
        let want = output_request(&s, &names(&[LABELS, EDGE_SCORES])).unwrap();
        assert!(want.edges && !want.tracks);
        let want = output_request(&s, &names(&[TRACKS])).unwrap();
        assert!(!want.edges && want.tracks);
    }

    #[test]
    fn undeclared_outputs_are_refused_by_name() {
        let s = settings(&[LABELS]);
        let err = output_request(&s, &names(&[LABELS, TRACKS])).unwrap_err();
        assert!(err.message().contains("'TRACKS'"), "{err}");
        assert!(err.message().contains("only LABELS"), "{err}");
    }

    #[test]
    fn gpu_instances_need_a_device_or_the_fallback() {
        let ok = choose_device("i", InstanceKind::Gpu, 1, 2, false).unwrap();
        assert_eq!(ok, DeviceKind::Cuda(1));
        let err = choose_device("i", InstanceKind::Gpu, 0, 0, false).unwrap_err();
        assert!(err.message().contains("allow_cpu_fallback"), "{err}");
        assert!(choose_device("i", InstanceKind::Gpu, 2, 2, false).is_err());
        assert_eq!(
            choose_device("i", InstanceKind::Cpu, 0, 0, false).unwrap(),
            DeviceKind::Cpu
        );
        assert!(choose_device("i", InstanceKind::Model, 0, 0, false).is_err());
    }

    #[test]
    fn track_rows_have_eight_columns_in_contract_order() {
        let t = TrackParams {
            label: 3,
            n_spacepoints: 5,
            pt: 1.5,
            eta: 0.2,
            phi: -1.0,
            d0: 0.01,
            z0: 4.0,
            chi2_ndf: 0.9,
        };
        assert_eq!(track_rows(&[t]), [3.0, 5.0, 1.5, 0.2, -1.0, 0.01, 4.0, 0.9]);
    }
}
