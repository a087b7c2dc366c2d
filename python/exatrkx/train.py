"""Training commands: one per stage and one for all of them.

    python -m exatrkx.train embedding|filter|gnn|module-map|all --events DIR --out DIR
        [--max-epochs N] [--accelerator cpu|gpu|auto] [--devices N] [--num-nodes N]
        [--strategy auto|ddp] [--precision 32|bf16-mixed|16-mixed] [--seed S] ...

Stages and what they leave in OUT:
- `module-map`: `module_map.csv` from the training events' truth (no network);
- `embedding`: `embed.pt`; radius and knn chosen on the validation events;
- `filter`: `filter.pt`, trained on the graphs of `--graph radius|module_map`
  (radius: needs `embed.pt` and the chosen radius/knn); filter_cut chosen on validation;
- `gnn`: `gnn.pt` (`--model plain|hetero`), trained on the filtered graphs; gnn_cut chosen;
- `tracks`: `tracks.pt`, the track-quality network, trained on the candidates that the served
  track building makes from the GNN's scored edges (`event%09d-edges.npy` and `-scores.npy`
  beside each event, written by `exatrkx run --edges-out <events folder>`); settings from
  `--model-folder` and `--param`; track_cut chosen on the validation events;
- `all`: the first four in that order (the track-quality network needs the served GNN's
  scores, so it is trained on its own).
Every stage adds its section to `metrics.json` (scans, chosen parameters, validation and test
edge metrics, timings, parameter and FLOP counts) and `parameters.txt` holds the pipeline
parameters as `key=value` lines for `--param`.

Distributed training is configuration only: Lightning's strategy, devices and nodes come from
the command line (SLURM is detected by Lightning); data preparation, parameter scans, exports
and metrics run on global rank zero, with OUT on a filesystem all nodes share.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only

from exatrkx import evaluate, metrics, module_map, reference, track_quality, trackml
from exatrkx.data import (
    EventDataModule,
    EventRef,
    Sample,
    TruthConfig,
    describe_refs,
    event_refs,
    load_sample,
    prepare_samples,
    sample_path,
    split_events,
)
from exatrkx.export import export
from exatrkx.export import load as load_module
from exatrkx.models.cost import format_costs, stage_costs
from exatrkx.models.graph import radius_graph
from exatrkx.models.lightning import (
    EmbeddingModule,
    FilterModule,
    GNNModule,
    TrackQualityModule,
)

STAGES = ("embedding", "filter", "gnn", "module-map", "tracks", "all")
# track_cut values scanned on the validation events
TRACK_CUTS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
# radius multiples of the validation quantile and knn caps scanned after the embedding
RADIUS_FACTORS = [1.0, 1.1, 1.25, 1.5, 2.0]
KNN_GRID = [16, 32, 64, 128, 256]


def log(message: str) -> None:
    if rank_zero_only.rank == 0:
        print(message, flush=True)


class Layout:
    """Where each output lives under OUT."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.samples = self.out / "samples"
        self.graphs = self.out / "graphs"
        self.metrics = self.out / "metrics.json"
        self.parameters = self.out / "parameters.txt"
        self.embed = self.out / "embed.pt"
        self.filter = self.out / "filter.pt"
        self.gnn = self.out / "gnn.pt"
        self.tracks = self.out / "tracks.pt"
        self.module_map = self.out / "module_map.csv"

    def stage_dir(self, stage: str) -> Path:
        return self.out / "runs" / stage

    def read_metrics(self) -> dict:
        return json.loads(self.metrics.read_text()) if self.metrics.exists() else {}

    def update_metrics(self, section: str, content: dict) -> None:
        data = self.read_metrics()
        data[section] = content
        params = data.get("parameters", {})
        params.update(content.get("parameters", {}))
        data["parameters"] = params
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.metrics.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.metrics)
        self.parameters.write_text("".join(f"{k}={v}\n" for k, v in sorted(params.items())))

    def stage_metrics(self, section: str, needed_for: str) -> dict:
        data = self.read_metrics().get(section)
        if not data:
            raise FileNotFoundError(
                f"{self.metrics} has no '{section}' section; run the {section} stage "
                f"(into the same --out) before {needed_for}"
            )
        return data


def device_for(args) -> torch.device:
    """Device of the rank-zero work after training (scans, graph building)."""
    if args.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def to_device(sample: Sample, device: torch.device) -> Sample:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}


def to_cpu(sample: Sample) -> Sample:
    return to_device(sample, torch.device("cpu"))


def file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Graph builders: called by the data module's prepare_data on global rank zero. They read the
# previous stage's files only when called, so every rank can construct them up front.


class RadiusGraphBuilder:
    """The embedding's radius graph at the chosen radius and knn."""

    def __init__(self, layout: Layout, device: torch.device):
        self.layout = layout
        self.device = device
        self.model = None

    def settings(self) -> tuple[float, int]:
        chosen = self.layout.stage_metrics("embedding", "building radius graphs")
        return chosen["parameters"]["radius"], chosen["parameters"]["knn"]

    def key(self) -> dict:
        radius, knn = self.settings()
        return {"radius": radius, "knn": knn, "embed": file_digest(self.layout.embed)}

    def __call__(self, sample: Sample, ref: EventRef | None = None) -> Sample:
        if self.model is None:
            self.radius, self.knn = self.settings()
            self.model = load_module(self.layout.embed, self.device)
        s = to_device(sample, self.device)
        with torch.no_grad():
            emb = self.model(s["x"])
        s["edge_index"] = radius_graph(emb, self.radius, self.knn, s["x"][:, 0])
        return to_cpu(s)


class ModuleMapGraphBuilder:
    """The module map's graph."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.table = None

    def check(self) -> None:
        if not self.layout.module_map.exists():
            raise FileNotFoundError(
                f"{self.layout.module_map} is missing; run the module-map stage first"
            )

    def key(self) -> dict:
        self.check()
        return {"module_map": file_digest(self.layout.module_map)}

    def __call__(self, sample: Sample, ref: EventRef | None = None) -> Sample:
        if self.table is None:
            self.check()
            self.table = module_map.load_module_map(self.layout.module_map)
        s = dict(sample)
        s["edge_index"] = module_map.module_map_graph(
            s["x"].numpy(), s["module_id"].numpy(), self.table
        )
        return s


class FilteredGraphBuilder:
    """The source graph with the edges the filter keeps at the chosen cut."""

    def __init__(self, layout: Layout, source, device: torch.device):
        self.layout = layout
        self.source = source
        self.device = device
        self.model = None

    def settings(self) -> float:
        return self.layout.stage_metrics("filter", "the GNN")["parameters"]["filter_cut"]

    def key(self) -> dict:
        return {
            "source": self.source.key(),
            "filter_cut": self.settings(),
            "filter": file_digest(self.layout.filter),
        }

    def __call__(self, sample: Sample, ref: EventRef | None = None) -> Sample:
        if self.model is None:
            self.cut = self.settings()
            self.model = load_module(self.layout.filter, self.device)
        s = to_device(self.source(sample, ref), self.device)
        with torch.no_grad():
            scores = torch.sigmoid(self.model(s["x"], s["edge_index"]))
        s["edge_index"] = s["edge_index"][:, scores > self.cut]
        return to_cpu(s)


class RunGraphBuilder:
    """The GNN input graph the served pipeline built: `event%09d-edges.npy` beside the event's
    hits, written by `exatrkx run --edges-out <events folder> --param gnn_cut=0` with the
    embedding and filter the GNN will be served with (minutes for what takes hours here at
    pile-up 200). No key: the files are read again on every run."""

    def __call__(self, sample: Sample, ref: EventRef) -> Sample:
        path = Path(ref.folder) / f"{trackml.event_prefix(ref.event_id)}-edges.npy"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing; write it with `exatrkx run --events {ref.folder} "
                f"--out LABELS --edges-out {ref.folder} --param gnn_cut=0`"
            )
        edges = np.load(path)
        n = sample["x"].shape[0]
        if edges.dtype != np.int64 or edges.ndim != 2 or edges.shape[0] != 2:
            raise ValueError(f"{path}: expected int64 [2, E], got {edges.dtype} {edges.shape}")
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ValueError(f"{path}: edge ends outside the event's {n} spacepoints")
        s = dict(sample)
        s["edge_index"] = torch.from_numpy(edges)
        return s


def source_builder(args, layout: Layout):
    if args.graph == "radius":
        return RadiusGraphBuilder(layout, device_for(args))
    return ModuleMapGraphBuilder(layout)


# ---------------------------------------------------------------------------------------------
# Lightning plumbing


def check_precision(args) -> None:
    gpu = args.accelerator in ("gpu", "cuda") or (
        args.accelerator == "auto" and torch.cuda.is_available()
    )
    if args.precision == "16-mixed" and not gpu:
        raise ValueError(
            "--precision 16-mixed needs --accelerator gpu; on CPU use bf16-mixed or 32"
        )
    if args.precision == "bf16-mixed" and gpu and torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported():
            raise ValueError("--precision bf16-mixed: this GPU has no bf16; use 16-mixed")


def parse_devices(value: str):
    return value if value == "auto" else int(value)


def make_trainer(args, stage: str, layout: Layout) -> L.Trainer:
    check_precision(args)
    strategy = args.strategy
    if strategy == "ddp":
        # rank zero prepares graphs and scans between fits while the others wait
        strategy = DDPStrategy(timeout=timedelta(hours=args.ddp_timeout_hours))
    checkpoint = ModelCheckpoint(
        dirpath=layout.stage_dir(stage) / "checkpoints",
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    return L.Trainer(
        accelerator=args.accelerator,
        devices=parse_devices(args.devices),
        num_nodes=args.num_nodes,
        strategy=strategy,
        precision=args.precision,
        max_epochs=args.max_epochs,
        max_time=args.max_time,
        callbacks=[checkpoint],
        logger=CSVLogger(layout.stage_dir(stage), name="logs"),
        default_root_dir=layout.stage_dir(stage),
        enable_progress_bar=args.progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=args.val_every,
    )


def fit(module: L.LightningModule, dm: L.LightningDataModule, args, stage: str, layout: Layout):
    """Train; on rank zero return (best module on CPU, seconds, epoch losses), else None."""
    L.seed_everything(args.seed, workers=True, verbose=False)
    trainer = make_trainer(args, stage, layout)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None
    best = trainer.checkpoint_callback.best_model_path
    if best:
        module = type(module).load_from_checkpoint(best, map_location="cpu")
    module = module.cpu().eval()
    history = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return module, seconds, history


def read_split(layout: Layout, refs: list[EventRef]) -> list[Sample]:
    return [load_sample(sample_path(layout.samples, ref)) for ref in refs]


def data_module(args, layout: Layout, splits, builder=None, graph_name: str | None = None):
    return EventDataModule(
        splits,
        layout.samples,
        truth_config(args),
        graph_dir=layout.graphs / graph_name if graph_name else None,
        graph_builder=builder,
        num_workers=args.num_workers,
        train_repeat=args.train_repeat,
        prepare_workers=args.prepare_workers,
    )


def truth_config(args) -> TruthConfig:
    return TruthConfig(pt_min=args.pt_min, eta_max=args.eta_max, min_hits=args.min_hits)


def folder_events(folder: Path, option: str, limit: int = 0) -> list[EventRef]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {folder} is not a folder")
    ids = trackml.list_events(folder)
    if not ids:
        raise FileNotFoundError(f"{option} {folder} holds no event*-hits.csv[.gz] files")
    return event_refs(folder, ids[:limit] if limit else ids)


def event_splits(args) -> tuple[dict[str, list[EventRef]], bool]:
    """Training events from every `--events` folder (the first `--max-events` of each);
    validation and test events from `--val-events`/`--test-events` when given, else split
    off the training events by `--val-fraction`/`--test-fraction`."""
    pooled = [
        ref for folder in args.events for ref in folder_events(folder, "--events", args.max_events)
    ]
    val_fraction = 0.0 if args.val_events else args.val_fraction
    test_fraction = 0.0 if args.test_events else args.test_fraction
    if args.val_events and args.test_events:
        splits, smoke = {"train": sorted(pooled)}, False
    else:
        splits, smoke = split_events(pooled, val_fraction, test_fraction)
    if args.val_events:
        splits["val"] = folder_events(args.val_events, "--val-events", args.max_eval_events)
    if args.test_events:
        splits["test"] = folder_events(args.test_events, "--test-events", args.max_eval_events)
    splits.setdefault("test", [])
    return splits, smoke and not (args.val_events or args.test_events)


def common_section(args, splits, smoke: bool) -> dict:
    return {
        "events": {k: describe_refs(v) for k, v in splits.items()},
        "smoke_run": smoke,
        "truth": vars(truth_config(args)),
        "trainer": {
            k: getattr(args, k)
            for k in (
                "max_epochs",
                "accelerator",
                "devices",
                "num_nodes",
                "strategy",
                "precision",
                "seed",
            )
        },
    }


def cost_of(args, stage: str, net) -> dict:
    costs = stage_costs({stage: net}, args.cost_spacepoints, args.cost_edges, args.cost_gnn_edges)
    log(format_costs(costs))
    return costs[stage]


def graph_metrics(samples: list[Sample], make_graph) -> dict:
    counts: dict[str, int] = {}
    for s in samples:
        counts = metrics.add_counts(counts, metrics.graph_counts(make_graph(s), s))
    return {**metrics.summarize(counts), **counts} if samples else {}


# ---------------------------------------------------------------------------------------------
# Stages


def run_module_map(args, layout: Layout, splits, smoke: bool) -> None:
    if rank_zero_only.rank != 0:
        return
    start = time.perf_counter()
    prepare_samples(
        sorted({r for v in splits.values() for r in v}),
        layout.samples,
        truth_config(args),
        args.prepare_workers,
    )
    table = module_map.build_module_map(read_split(layout, splits["train"]), args.map_pt_min)
    module_map.save_module_map(table, layout.module_map)
    build_seconds = time.perf_counter() - start
    section = {**common_section(args, splits, smoke), "rows": len(table), "pt_min": args.map_pt_min}
    for split in ("val", "test"):
        t = time.perf_counter()
        section[split] = graph_metrics(
            read_split(layout, splits[split]),
            lambda s: module_map.module_map_graph(s["x"].numpy(), s["module_id"].numpy(), table),
        )
        section[f"{split}_graph_seconds"] = time.perf_counter() - t
    section["build_seconds"] = build_seconds
    layout.update_metrics("module_map", section)
    log(f"module map: {len(table)} module pairs -> {layout.module_map}")
    log(f"module map graph on val: {json.dumps(section['val'])}")


def radius_candidates(net, samples: list[Sample], efficiency: float, device) -> list[float]:
    """Radii around the `efficiency` quantile of target truth-edge distances."""
    dists = []
    with torch.no_grad():
        for s in samples:
            emb = net(s["x"].to(device))
            t = s["truth_edges"][:, s["truth_target"]].to(device)
            dists.append((emb[t[0]] - emb[t[1]]).norm(dim=1).cpu())
    d = torch.cat(dists) if dists else torch.zeros(0)
    if d.numel() == 0:
        raise ValueError("no target truth edges in the validation events: lower --pt-min?")
    q = float(torch.quantile(d.double(), efficiency)) * (1 + 1e-6) + 1e-9
    return [q * f for f in RADIUS_FACTORS]


def run_embedding(args, layout: Layout, splits, smoke: bool) -> None:
    module = EmbeddingModule(
        hidden=args.emb_hidden,
        layers=args.emb_layers,
        emb_dim=args.emb_dim,
        margin=args.margin,
        knn_train=args.knn_train,
        random_pairs=args.random_pairs,
        non_target_weight=args.emb_non_target_weight,
        vertex_z_weight=args.emb_vertex_z_weight,
        crop_sectors=args.crop_sectors,
        lr=args.emb_lr,
    )
    if args.init:
        init_weights(module.net, args.init)
    result = fit(module, data_module(args, layout, splits), args, "embedding", layout)
    if result is None:
        return
    module, seconds, history = result
    device = device_for(args)
    net = module.net.to(device).eval()
    val = read_split(layout, splits["val"])
    start = time.perf_counter()
    radii = radius_candidates(net, val, args.graph_efficiency, device)
    with torch.no_grad():
        pairs = [(net(s["x"].to(device)).cpu(), s) for s in val]
    scan = metrics.radius_scan(pairs, radii, KNN_GRID)
    chosen = metrics.choose_radius(scan, args.graph_efficiency)
    scan_seconds = time.perf_counter() - start
    log("radius scan on validation events:")
    log(metrics.format_table(scan, ["radius", "knn", "efficiency", "purity", "edges_per_event"]))
    radius, knn = float(chosen["radius"]), int(chosen["knn"])
    log(f"chosen radius {radius:.5f}, knn {knn}")
    net = net.cpu()
    export(net, layout.embed, val[0]["x"])

    def build(s):
        with torch.no_grad():
            return radius_graph(net(s["x"]), radius, knn, s["x"][:, 0])

    section = {
        **common_section(args, splits, smoke),
        "hparams": dict(module.hparams),
        "train_seconds": seconds,
        "scan_seconds": scan_seconds,
        "final": history,
        "radius_scan": scan,
        "parameters": {"radius": radius, "knn": knn},
        "val": {k: chosen[k] for k in ("efficiency", "purity", "edges_per_event")},
        "test": graph_metrics(read_split(layout, splits["test"]), build),
        "cost": cost_of(args, "embedding", net),
    }
    layout.update_metrics("embedding", section)
    log(f"embedding exported to {layout.embed}")


def classifier_scan(net, samples: list[Sample], device) -> list[tuple[torch.Tensor, Sample]]:
    out = []
    with torch.no_grad():
        for s in samples:
            d = to_device(s, device)
            out.append((torch.sigmoid(net(d["x"], d["edge_index"])).cpu(), s))
    return out


def finish_classifier(
    args, layout: Layout, splits, smoke, stage: str, dm: EventDataModule, result, efficiency: float
) -> None:
    module, seconds, history = result
    device = device_for(args)
    net = module.net.to(device).eval()
    graphs = {split: read_split_graphs(dm, splits[split]) for split in ("val", "test")}
    start = time.perf_counter()
    scan = metrics.cut_scan(classifier_scan(net, graphs["val"], device), metrics.DEFAULT_CUTS)
    chosen = metrics.choose_cut(scan, efficiency)
    log(f"{stage} cut scan on validation events:")
    log(
        metrics.format_table(
            scan, ["cut", "stage_efficiency", "efficiency", "purity", "edges_per_event"]
        )
    )
    cut = float(chosen["cut"])
    log(f"chosen {stage}_cut {cut}")
    test_rows = metrics.cut_scan(classifier_scan(net, graphs["test"], device), [cut])
    net = net.cpu()
    example = graphs["val"][0]
    path = layout.filter if stage == "filter" else layout.gnn
    export(net, path, example["x"], example["edge_index"][:, :20000])
    input_edges = sum(g["edge_index"].shape[1] for g in graphs["val"]) / max(1, len(graphs["val"]))
    section = {
        **common_section(args, splits, smoke),
        "graph": args.graph,
        "graphs_from": args.graphs_from,
        "hparams": dict(module.hparams),
        "train_seconds": seconds,
        "graph_seconds": dm.prepare_seconds,
        "scan_seconds": time.perf_counter() - start,
        "final": history,
        "cut_scan": scan,
        "parameters": {f"{stage}_cut": cut},
        "val_input_edges_per_event": input_edges,
        "val": {
            k: chosen[k] for k in ("stage_efficiency", "efficiency", "purity", "edges_per_event")
        },
        "test": test_rows[0] if graphs["test"] else {},
        "cost": cost_of(args, stage, net),
    }
    layout.update_metrics(stage, section)
    log(f"{stage} exported to {path}")


def read_split_graphs(dm: EventDataModule, refs: list[EventRef]) -> list[Sample]:
    return [load_sample(sample_path(dm.graph_dir, ref)) for ref in refs]


def run_filter(args, layout: Layout, splits, smoke: bool) -> None:
    module = FilterModule(
        hidden=args.filter_hidden,
        layers=args.filter_layers,
        pos_weight=args.filter_pos_weight,
        non_target_weight=args.non_target_weight,
        edges_per_step=args.edges_per_step,
        lr=args.filter_lr,
    )
    if args.init:
        init_weights(module.net, args.init)
    if args.graphs_from == "run":
        # the served pipeline's radius graph: its edges with `--param filter_cut=0`
        builder, graph_name = RunGraphBuilder(), "run-graphs-filter"
    else:
        builder, graph_name = source_builder(args, layout), f"{args.graph}"
    dm = data_module(args, layout, splits, builder, graph_name)
    result = fit(module, dm, args, "filter", layout)
    if result is not None:
        finish_classifier(args, layout, splits, smoke, "filter", dm, result, args.filter_efficiency)


def init_weights(net: torch.nn.Module, path: Path) -> None:
    """Start from the weights of an exported network of the same shape (a TorchScript file
    this command wrote): fine-tuning continues a run with a fresh learning-rate schedule. A GNN
    with more iterations than the file's grows from it (`grow_steps`)."""
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    mine = net.state_dict()
    grown = new_steps(net, state)
    if grown:
        mine = {k: v for k, v in mine.items() if not k.startswith(tuple(grown))}
    if set(state) != set(mine) or any(state[k].shape != mine[k].shape for k in mine):
        raise SystemExit(f"--init {path}: not a network of the shape asked for")
    net.load_state_dict(state, strict=not grown)
    if grown:
        grow_steps(net, len(grown))
        log(f"weights from {path}; {len(grown)} new iterations start near the identity")
    else:
        log(f"weights from {path}")


def new_steps(net: torch.nn.Module, state: dict) -> list[str]:
    """The key prefixes of the GNN iterations `net` has beyond those of `state` (none for
    other networks, or where `state` has as many)."""
    steps = getattr(net, "steps", None)
    if not isinstance(steps, torch.nn.ModuleList):
        return []
    have = {int(k.split(".")[1]) for k in state if k.startswith("steps.")}
    if not have or max(have) + 1 >= len(steps):
        return []
    return [f"steps.{i}." for i in range(max(have) + 1, len(steps))]


def grow_steps(net: torch.nn.Module, count: int, scale: float = 1e-3) -> None:
    """Make the last `count` message-passing iterations nearly the identity: each update
    network's last LayerNorm scaled to `scale` (not 0, so that gradients pass its ReLU), so
    the grown GNN starts where the file's left off and learns what the new iterations add."""
    for step in list(net.steps)[-count:]:
        for update in step.children():
            norms = [m for m in update.modules() if isinstance(m, torch.nn.LayerNorm)]
            if norms:
                with torch.no_grad():
                    norms[-1].weight.fill_(scale)
                    norms[-1].bias.zero_()


def run_gnn(args, layout: Layout, splits, smoke: bool) -> None:
    module = GNNModule(
        model=args.model,
        hidden=args.gnn_hidden,
        iterations=args.gnn_iterations,
        layers=args.gnn_layers,
        node_columns=args.node_columns,
        pos_weight=args.gnn_pos_weight,
        non_target_weight=args.non_target_weight,
        lr=args.gnn_lr,
        crop_sectors=args.crop_sectors,
        vertex_z_weight=args.gnn_vertex_z_weight,
        pt_weight=args.gnn_pt_weight,
    )
    if args.init:
        init_weights(module.net, args.init)
    if args.graphs_from == "run":
        builder, graph_name = RunGraphBuilder(), "run-graphs"
    else:
        builder = FilteredGraphBuilder(layout, source_builder(args, layout), device_for(args))
        graph_name = f"{args.graph}-filtered"
    dm = data_module(args, layout, splits, builder, graph_name)
    result = fit(module, dm, args, "gnn", layout)
    if result is not None:
        finish_classifier(args, layout, splits, smoke, "gnn", dm, result, args.gnn_efficiency)


class TrackRows(L.LightningDataModule):
    """Candidate rows and targets of the training and validation events, in memory (a few
    hundred thousand rows of 18 numbers); batches of `batch_size` rows."""

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], val, batch_size: int):
        super().__init__()
        self.train_set = torch.utils.data.TensorDataset(*train)
        self.val_set = torch.utils.data.TensorDataset(*val)
        self.batch_size = batch_size

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val_set, self.batch_size)


def candidates_of_events(refs: list[EventRef], params) -> list[dict]:
    """Per event: the candidates the configured track building makes from the GNN's scored
    edges, their rows and whether each is matched to a particle."""
    out = []
    for ref in refs:
        folder, prefix = Path(ref.folder), trackml.event_prefix(ref.event_id)
        paths = [folder / f"{prefix}-{kind}.npy" for kind in ("edges", "scores")]
        for path in paths:
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing; write it with `exatrkx run --events {folder} --out "
                    f"LABELS --edges-out {folder} --param gnn_cut=G` (G at most the served cut)"
                )
        edges, scores = np.load(paths[0]), np.load(paths[1])
        if edges.shape != (2, len(scores)):
            raise ValueError(f"{paths[0]}: {edges.shape} edges for {len(scores)} scores")
        event = trackml.read_event(folder, ref.event_id)
        x = trackml.features(event)
        keep = scores > np.float32(params.gnn_cut)
        edges, scores = edges[:, keep], scores[keep].astype(np.float32)
        labels, second = reference.track_candidates(len(x), edges, scores, params)
        rows = track_quality.track_features(x, labels, second, edges, scores)
        pid = event.truth["particle_id"].to_numpy(np.uint64)
        target = track_quality.matched_candidates(pid, labels, len(second))
        out.append({"event": event, "labels": labels, "rows": rows, "target": target})
    return out


def track_scan(net, candidates: list[dict], cuts: list[float]) -> list[dict]:
    """Track efficiency, fake and duplicate rates of the events at each track_cut (`net`
    None: every candidate kept)."""
    rows = []
    for cut in cuts:
        total = evaluate.empty(evaluate.EvalConfig())
        for c in candidates:
            labels = c["labels"]
            if net is not None:
                labels = reference.select_tracks(net, c["rows"], labels, cut)
            total = evaluate.merge(total, evaluate.evaluate(c["event"], labels))
        rows.append(
            {
                "track_cut": cut,
                "efficiency": total["efficiency"],
                "fake_rate": total["fake_rate"],
                "duplicate_rate": total["duplicate_rate"],
                "candidates": total["candidates"],
            }
        )
    return rows


def choose_track_cut(scan: list[dict], max_fake_rate: float | None) -> tuple[dict, str]:
    """The scan row with the highest efficiency among those with a fake rate at most
    `max_fake_rate` (a goal's bound), else the highest efficiency minus fake rate."""
    if max_fake_rate is not None:
        within = [r for r in scan if r["fake_rate"] <= max_fake_rate]
        if within:
            best = max(within, key=lambda r: (r["efficiency"], -r["track_cut"]))
            return best, f"highest efficiency with a fake rate <= {max_fake_rate}"
        log(f"no track_cut reaches a fake rate <= {max_fake_rate}; by efficiency - fake rate")
    best = max(scan, key=lambda r: r["efficiency"] - r["fake_rate"])
    return best, "highest efficiency - fake rate"


def stack_rows(candidates: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = (
        np.concatenate([c["rows"] for c in candidates])
        if candidates
        else np.zeros((0, track_quality.NUM_TRACK_FEATURES))
    )
    target = np.concatenate([c["target"] for c in candidates]) if candidates else np.zeros(0)
    return torch.from_numpy(rows.astype(np.float32)), torch.from_numpy(target.astype(np.float32))


def run_tracks(args, layout: Layout, splits, smoke: bool) -> None:
    folder = reference.model_folder(args.model_folder)
    overrides = dict(item.split("=", 1) for item in args.param)
    params = reference.load_parameters(folder, overrides)
    start = time.perf_counter()
    candidates = {split: candidates_of_events(refs, params) for split, refs in splits.items()}
    prepare_seconds = time.perf_counter() - start
    train_rows = stack_rows(candidates["train"])
    log(
        f"track candidates: {len(train_rows[0])} training rows, "
        f"{1 - float(train_rows[1].mean()):.3f} of them fakes ({prepare_seconds:.0f} s)"
    )
    module = TrackQualityModule(
        hidden=args.track_hidden, layers=args.track_layers, lr=args.track_lr
    )
    module.net.set_standardisation(train_rows[0])
    dm = TrackRows(train_rows, stack_rows(candidates["val"]), args.track_batch)
    result = fit(module, dm, args, "tracks", layout)
    if result is None:
        return
    module, seconds, history = result
    net = module.net
    scan = track_scan(net, candidates["val"], TRACK_CUTS)
    log("track_cut scan on validation events:")
    log(metrics.format_table(scan, ["track_cut", "efficiency", "fake_rate", "duplicate_rate"]))
    chosen, rule = choose_track_cut(scan, args.track_max_fake_rate)
    cut = float(chosen["track_cut"])
    log(f"chosen track_cut {cut} ({rule})")
    without = track_scan(None, candidates["test"], [0.0])
    test = track_scan(net, candidates["test"], [cut])
    export(net, layout.tracks, train_rows[0][:1000])
    section = {
        **common_section(args, splits, smoke),
        "track_building": {
            k: getattr(params, k)
            for k in (
                "gnn_cut",
                "track_builder",
                "walk_min_cut",
                "walk_high_cut",
                "walk_rescue_cut",
                "walk_chain_cut",
                "min_track_length",
            )
        },
        "hparams": dict(module.hparams),
        "train_seconds": seconds,
        "prepare_seconds": prepare_seconds,
        "final": history,
        "cut_scan": scan,
        "parameters": {"track_cut": cut, "track_model": layout.tracks.name},
        "val": chosen,
        "test": test[0] if candidates["test"] else {},
        "test_without_selection": without[0] if candidates["test"] else {},
    }
    layout.update_metrics("tracks", section)
    log(f"test events: {section['test']}")
    log(f"the same, every candidate kept: {section['test_without_selection']}")
    log(f"track-quality network exported to {layout.tracks}")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def model_card(data: dict) -> str:
    """A markdown summary of metrics.json: data, parameters, and per stage the network, its
    cost and its validation/test edge metrics."""
    first = next((data[s] for s in ("module_map", "embedding", "filter", "gnn") if s in data), {})
    lines = ["# ExaTrkX models: model card", "", "Generated by `python -m exatrkx.train`.", ""]
    if first.get("smoke_run"):
        lines += ["**Smoke run**: one event served as training, validation and test data.", ""]
    if first:
        ev = first["events"]
        lines += [
            f"Events: train {ev['train']}, val {ev['val']}, test {ev['test']}. "
            f"Target particles: {first['truth']}.",
            "",
        ]
    params = data.get("parameters", {})
    if params:
        lines += ["| parameter | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {_fmt(v)} |" for k, v in sorted(params.items())]
        lines.append("")
    metric_cols = ["efficiency", "purity", "edges_per_event"]
    for stage in ("module_map", "embedding", "filter", "gnn"):
        if stage not in data:
            continue
        sec = data[stage]
        lines += [f"## {stage}", ""]
        if "hparams" in sec:
            hp = ", ".join(f"{k}={_fmt(v)}" for k, v in sec["hparams"].items())
            lines += [f"Hyperparameters: {hp}.", ""]
        if "cost" in sec:
            c = sec["cost"]
            lines += [
                f"Parameters {c['parameters']}; {c['gflops']:.2f} GFLOP (matrix products) for "
                f"N = {c['spacepoints']} spacepoints, E = {c['edges']} edges.",
                "",
            ]
        for key in ("train_seconds", "graph_seconds", "build_seconds"):
            if key in sec:
                lines.append(f"{key.replace('_', ' ')}: {sec[key]:.1f}")
        rows = [(split, sec[split]) for split in ("val", "test") if sec.get(split)]
        if rows:
            cols = (["stage_efficiency"] if "stage_efficiency" in rows[0][1] else []) + metric_cols
            lines += ["", "| split | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            lines += [f"| {n} | " + " | ".join(_fmt(r[c]) for c in cols) + " |" for n, r in rows]
        lines.append("")
    return "\n".join(lines)


def summarize_all(args, layout: Layout) -> None:
    if rank_zero_only.rank != 0:
        return
    data = layout.read_metrics()
    (layout.out / "model_card.md").write_text(model_card(data))
    costs = {s: data[s]["cost"] for s in ("embedding", "filter", "gnn") if s in data}
    if costs:
        log("cost per stage at the --cost-* sizes:")
        log(format_costs(costs))
    log(f"pipeline parameters ({layout.parameters}):")
    log(layout.parameters.read_text().strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exatrkx.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("stage", choices=STAGES)
    p.add_argument(
        "--events", type=Path, nargs="+", required=True, help="folders of TrackML events"
    )
    p.add_argument("--val-events", type=Path, help="validation events (default: split off)")
    p.add_argument("--test-events", type=Path, help="test events (default: split off)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    t = p.add_argument_group("trainer")
    t.add_argument("--max-epochs", type=int, default=20)
    t.add_argument(
        "--max-time",
        help="stop a stage's training after this long, DD:HH:MM:SS (Lightning's max_time)",
    )
    t.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu", "cuda", "auto"])
    t.add_argument("--devices", default="1", help="devices per node, or 'auto'")
    t.add_argument("--num-nodes", type=int, default=1)
    t.add_argument("--strategy", default="auto", choices=["auto", "ddp"])
    t.add_argument("--precision", default="32", choices=["32", "bf16-mixed", "16-mixed"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    t.add_argument(
        "--prepare-workers", type=int, default=1, help="processes reading the events once"
    )
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--train-repeat", type=int, default=1, help="passes over the events per epoch")
    t.add_argument("--val-every", type=int, default=1, help="validate every N epochs")
    t.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    t.add_argument("--ddp-timeout-hours", type=float, default=4.0)
    lr = p.add_argument_group("data and truth")
    lr.add_argument(
        "--max-events", type=int, default=0, help="the first N events of each --events folder"
    )
    lr.add_argument(
        "--max-eval-events", type=int, default=0, help="the first N val/test events (0: all)"
    )
    lr.add_argument("--val-fraction", type=float, default=0.1)
    lr.add_argument("--test-fraction", type=float, default=0.1)
    lr.add_argument("--pt-min", type=float, default=1.0, help="target particles: pT above (GeV)")
    lr.add_argument("--eta-max", type=float, default=4.0)
    lr.add_argument("--min-hits", type=int, default=3)
    lr.add_argument(
        "--non-target-weight", type=float, default=0.1, help="filter/GNN: other true edges"
    )
    e = p.add_argument_group("embedding")
    e.add_argument("--emb-dim", type=int, default=12)
    e.add_argument("--emb-hidden", type=int, default=128)
    e.add_argument("--emb-layers", type=int, default=4)
    e.add_argument("--emb-lr", type=float, default=3e-3)
    e.add_argument(
        "--emb-non-target-weight", type=float, default=0.0, help="pull of non-target particles"
    )
    e.add_argument(
        "--emb-vertex-z-weight",
        type=float,
        default=0.0,
        help="weight the pull of true target pairs by 1 + W (vertex z / 50 mm)^2 (0: off)",
    )
    e.add_argument("--margin", type=float, default=0.1, help="hinge margin = training radius")
    e.add_argument("--knn-train", type=int, default=50, help="hard negatives per spacepoint")
    e.add_argument("--random-pairs", type=float, default=2.0, help="random pairs per spacepoint")
    e.add_argument("--graph-efficiency", type=float, default=0.99)
    m = p.add_argument_group("module map")
    m.add_argument("--map-pt-min", type=float, default=0.0, help="particles building the map")
    f = p.add_argument_group("filter")
    f.add_argument("--graph", default="radius", choices=["radius", "module_map"])
    f.add_argument("--filter-hidden", type=int, default=64)
    f.add_argument("--filter-layers", type=int, default=3)
    f.add_argument("--filter-lr", type=float, default=3e-3)
    f.add_argument("--filter-pos-weight", type=float, default=2.0)
    f.add_argument("--edges-per-step", type=int, default=500_000)
    f.add_argument("--filter-efficiency", type=float, default=0.995)
    g = p.add_argument_group("gnn")
    g.add_argument("--model", default="plain", choices=["plain", "hetero"])
    g.add_argument("--gnn-hidden", type=int, default=32)
    g.add_argument("--gnn-iterations", type=int, default=6)
    g.add_argument("--gnn-layers", type=int, default=2)
    g.add_argument("--gnn-lr", type=float, default=3e-3)
    g.add_argument("--node-columns", type=int, default=9, choices=[3, 9], help="plain model")
    g.add_argument("--gnn-pos-weight", type=float, default=1.0)
    g.add_argument(
        "--gnn-vertex-z-weight",
        type=float,
        default=0.0,
        help="weight true target edges by 1 + W (vertex z / 50 mm)^2 (at most 1 + 4 W): "
        "particles from vertices far along the beam spot count more (0: off)",
    )
    g.add_argument(
        "--gnn-pt-weight",
        type=float,
        default=0.0,
        help="weight true edges by 1 + W log2(pT / GeV), pT clamped to 1-16 GeV: stiff "
        "tracks, rare in the spectrum, count more (0: off)",
    )
    g.add_argument("--gnn-efficiency", type=float, default=0.98)
    g.add_argument(
        "--graphs-from",
        default="python",
        choices=["python", "run"],
        help="input graphs of the filter and gnn commands: built here (python), or the served "
        "pipeline's, read from event%%09d-edges.npy beside each event (exatrkx run "
        "--edges-out <events folder> --param gnn_cut=0; and --param filter_cut=0 for the "
        "filter's)",
    )
    g.add_argument(
        "--crop-sectors",
        type=int,
        default=0,
        help="embedding and gnn commands: train on a random phi sector of 1/N of each event "
        "per step (dense events)",
    )
    g.add_argument(
        "--init",
        type=Path,
        help="embedding, filter or gnn command: start from this exported embed.pt / filter.pt / "
        "gnn.pt (fine-tuning; a GNN with more --gnn-iterations grows from it)",
    )
    q = p.add_argument_group("track quality")
    q.add_argument(
        "--model-folder",
        type=Path,
        default=Path("model_repository/exatrkx"),
        help="tracks command: the track-building settings of this config.pbtxt",
    )
    q.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tracks command: a pipeline parameter overriding the model folder's (repeatable)",
    )
    q.add_argument("--track-hidden", type=int, default=32)
    q.add_argument("--track-layers", type=int, default=2)
    q.add_argument("--track-lr", type=float, default=3e-3)
    q.add_argument("--track-batch", type=int, default=2048, help="candidates per step")
    q.add_argument(
        "--track-max-fake-rate",
        type=float,
        help="choose track_cut as the highest validation efficiency at a fake rate at most this "
        "(default: the highest efficiency minus fake rate)",
    )
    c = p.add_argument_group("cost accounting (a pile-up 200 event)")
    c.add_argument("--cost-spacepoints", type=int, default=100_000)
    c.add_argument("--cost-edges", type=int, default=1_000_000, help="filter input edges")
    c.add_argument("--cost-gnn-edges", type=int, default=300_000, help="GNN input edges")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.init and args.stage not in ("embedding", "filter", "gnn"):
        parser.error("--init goes with the embedding, filter or gnn command (one network)")
    if args.graphs_from == "run" and args.stage not in ("filter", "gnn"):
        parser.error("--graphs-from run goes with the filter or gnn command")
    if any("=" not in item for item in args.param):
        parser.error("--param takes KEY=VALUE")
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = Layout(args.out)
    splits, smoke = event_splits(args)
    if smoke:
        log("smoke run: one event, used for training, validation and test alike")
    for split, refs in splits.items():
        log(
            f"{split} events: "
            + "; ".join(f"{f}: {len(i)}" for f, i in describe_refs(refs).items())
        )
    stages = {
        "module-map": run_module_map,
        "embedding": run_embedding,
        "filter": run_filter,
        "gnn": run_gnn,
        "tracks": run_tracks,
    }
    order = [k for k in stages if k != "tracks"] if args.stage == "all" else [args.stage]
    for stage in order:
        log(f"=== {stage}")
        stages[stage](args, layout, splits, smoke)
    summarize_all(args, layout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
