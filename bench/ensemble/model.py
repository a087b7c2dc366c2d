"""One step of the Python peer of the exatrkx backend: a Triton Python-backend model.

Every step model of the ensemble (`bench/ensemble/*/config.pbtxt`) runs this file; its
parameter `stage` says which step it is. The other parameters are the pipeline parameters of
the exatrkx model (docs/DESIGN.md), copied into each step's configuration by
`exatrkx.bench_repository`, and the computation is that of the Python reference pipeline
(`exatrkx.reference`), so the ensemble gives the labels of the Rust backend.

| stage | inputs | outputs |
| --- | --- | --- |
| `embedding` | FEATURES | EMBEDDING |
| `radius_graph` | EMBEDDING, FEATURES | EDGE_INDEX |
| `module_map_graph` | FEATURES, MODULE_ID | EDGE_INDEX |
| `filter` | FEATURES, EDGE_INDEX | KEPT_EDGE_INDEX |
| `gnn` | FEATURES, EDGE_INDEX | KEPT_EDGE_INDEX, EDGE_SCORES |
| `tracks` | FEATURES, EDGE_INDEX, EDGE_SCORES | LABELS |
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

STAGES = ("embedding", "radius_graph", "module_map_graph", "filter", "gnn", "tracks")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        raw = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # The checkout whose `exatrkx` package to run (the venv may hold another one).
        python_path = raw.get("exatrkx_python_path")
        if python_path and python_path not in sys.path:
            sys.path.insert(0, python_path)
        from exatrkx import reference

        self.reference = reference
        self.stage = raw.get("stage", "")
        if self.stage not in STAGES:
            raise pb_utils.TritonModelException(
                f"model '{config['name']}': parameter 'stage' = '{self.stage}', "
                f"expected one of {', '.join(STAGES)}"
            )
        params = reference.PipelineParameters()
        for key, value in raw.items():
            if key in reference.PARAMETER_KEYS:
                params.set(key, value)
        params.validate()
        if params.precision == "fp16":
            raise pb_utils.TritonModelException("precision fp16 needs a GPU; use fp32 or bf16")
        self.params = params
        self.dtype = torch.bfloat16 if params.precision == "bf16" else torch.float32
        version_dir = Path(args["model_repository"]) / args["model_version"]
        network = {
            "embedding": params.embedding_model,
            "filter": params.filter_model,
            "gnn": params.gnn_model,
            "tracks": params.track_model or None,
        }.get(self.stage)
        refine = reference.gnn_refine_files(params) if self.stage == "gnn" else []
        self.network = self._load(version_dir, network)
        self.refine_networks = [self._load(version_dir, name) for name in refine]
        self.module_map = (
            reference.read_module_map(version_dir / params.module_map)
            if self.stage == "module_map_graph"
            else None
        )

    def _load(self, version_dir: Path, name: str | None):
        if name is None:
            return None
        # the track-quality network runs in fp32
        dtype = torch.float32 if self.stage == "tracks" else self.dtype
        return self.reference.load_network(version_dir / name, dtype)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outputs = self._run(request)
                tensors = [pb_utils.Tensor(name, value) for name, value in outputs.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as err:  # one bad request fails alone
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.stage}: {err}"))
                )
        return responses

    def _input(self, request, name: str) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"input '{name}' is missing")
        return tensor.as_numpy()

    def _run(self, request) -> dict[str, np.ndarray]:
        ref, p = self.reference, self.params
        features = np.ascontiguousarray(self._input(request, "FEATURES"), dtype=np.float32)
        if self.stage == "tracks":
            edges = self._input(request, "EDGE_INDEX").astype(np.int64)
            scores = self._input(request, "EDGE_SCORES").astype(np.float32)
            labels, second_pass = ref.track_candidates(len(features), edges, scores, p)
            if self.network is not None:
                labels = ref.select_by_quality(
                    self.network, features, labels, second_pass, edges, scores, p.track_cut
                )
            return {"LABELS": labels.astype(np.int64)}
        if self.stage == "radius_graph":
            embedding = self._input(request, "EMBEDDING")
            return {"EDGE_INDEX": ref.radius_graph(embedding, p.radius, p.knn, features)}
        if self.stage == "module_map_graph":
            ids = self._input(request, "MODULE_ID").astype(np.int64)
            if len(ids) != len(features):
                raise ValueError(f"MODULE_ID has {len(ids)} entries for {len(features)} rows")
            return {"EDGE_INDEX": ref.module_map_graph(self.module_map, features, ids)}
        # The networks, as the reference calls them (executor optimisation off, no autograd).
        with torch.no_grad(), torch.jit.optimized_execution(False):
            x = torch.from_numpy(features).to(self.dtype)
            if self.stage == "embedding":
                return {"EMBEDDING": ref.embed(self.network, x, p.embedding_batch)}
            edges = torch.from_numpy(self._input(request, "EDGE_INDEX").astype(np.int64))
            if self.stage == "filter":
                passes = [(self.network, p.filter_cut, p.filter_chunk)]
            else:
                gnn_passes = ref.gnn_passes(p, self.network, self.refine_networks)
                passes = [(model, cut, None) for _, model, cut in gnn_passes]
            scores = torch.zeros(0)
            for model, cut, chunk in passes:
                if edges.shape[1] > 0:
                    edges, scores = ref.classify_edges(model, x, edges, cut, chunk)
        kept = {"KEPT_EDGE_INDEX": np.ascontiguousarray(edges.numpy(), dtype=np.int64)}
        if self.stage == "gnn":
            kept["EDGE_SCORES"] = scores.numpy().astype(np.float32)
        return kept
