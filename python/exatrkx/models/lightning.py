"""Lightning modules that train the networks; one event (sample dict from `exatrkx.data`)
per step. Nothing global: all settings are hyperparameters saved in the checkpoints, and
validation counts are summed over ranks before the ratios are taken."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.nn import functional as F

from exatrkx.metrics import COUNT_KEYS, graph_counts, summarize
from exatrkx.models.graph import (
    edge_labels,
    phi_sector_edges,
    phi_sector_sample,
    radius_graph,
    radius_neighbours,
)
from exatrkx.models.networks import EmbeddingNet, FilterNet, TrackQualityNet, build_gnn


class StageModule(L.LightningModule):
    """AdamW with a cosine decay over the epochs, and validation counts reduced over ranks."""

    def __init__(self):
        super().__init__()
        self._val_counts: dict[str, int] = {}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        epochs = max(1, int(self.trainer.max_epochs or 1))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, self.hparams.lr / 20)
        return {"optimizer": opt, "lr_scheduler": sched}

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.net(*inputs)

    def zero_loss(self) -> Tensor:
        # a step without pairs/edges still touches every parameter, so DDP's reducer is happy
        return sum(p.sum() for p in self.parameters()) * 0.0

    def on_validation_epoch_start(self) -> None:
        # the same keys on every rank, whatever their batches held
        self._val_counts = {k: 0 for k in (*COUNT_KEYS, "stage_kept", "stage_total")}

    def add_val_counts(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self._val_counts[k] = self._val_counts.get(k, 0) + v

    def on_validation_epoch_end(self) -> None:
        keys = sorted(self._val_counts)
        local = torch.tensor([self._val_counts[k] for k in keys], dtype=torch.float64)
        total = self.trainer.strategy.reduce(local.to(self.device), reduce_op="sum").cpu()
        counts = {k: int(v) for k, v in zip(keys, total.tolist(), strict=True)}
        summary = summarize(counts)
        # the counts are already summed over ranks: every rank logs the same values
        self.log("val_efficiency", summary["efficiency"], prog_bar=True, sync_dist=True)
        self.log("val_purity", summary["purity"], prog_bar=True, sync_dist=True)
        self.log("val_edges_per_event", summary["edges_per_event"], sync_dist=True)
        if counts.get("stage_total", 0):
            stage = counts["stage_kept"] / counts["stage_total"]
            self.log("val_stage_efficiency", stage, sync_dist=True)


class EmbeddingModule(StageModule):
    """Metric learning with a hinge loss: pairs of one particle are pulled together (squared
    distance, weight 1 for target particles and `non_target_weight` otherwise), other pairs
    pushed beyond `margin`. Pairs: the truth edges, hard negatives (current neighbours within
    `margin`, up to `knn_train` each, of `queries` random spacepoints) and `random_pairs` x N
    random pairs. `vertex_z_weight` > 0 weighs the pull of each true pair by its particle's
    production-vertex z (`vertex_z_factor`): at high pile-up the k cap of the radius graph
    drops the true neighbours of spacepoints from vertices far along the beam spot first.
    `crop_sectors` > 1: each step trains on a random phi sector of 1/N of the event."""

    def __init__(
        self,
        num_features: int = 9,
        hidden: int = 128,
        layers: int = 4,
        emb_dim: int = 12,
        activation: str = "relu",
        layer_norm: bool = True,
        margin: float = 0.1,
        knn_train: int = 50,
        queries: int = 4096,
        random_pairs: float = 2.0,
        non_target_weight: float = 0.0,
        negative_weight: float = 1.0,
        val_knn: int = 500,
        vertex_z_weight: float = 0.0,
        crop_sectors: int = 0,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = EmbeddingNet(num_features, hidden, layers, emb_dim, activation, layer_norm)

    def pair_loss(self, emb: Tensor, batch: dict, a: Tensor, b: Tensor) -> Tensor:
        hp = self.hparams
        keep = a != b
        a, b = a[keep], b[keep]
        pid = batch["particle_id"]
        same = (pid[a] == pid[b]) & (pid[a] != 0)
        d2 = (emb[a] - emb[b]).pow(2).sum(1)
        loss = self.zero_loss()
        if bool(same.any()):
            w = torch.where(batch["target_hit"][a[same]], 1.0, hp.non_target_weight)
            if hp.vertex_z_weight > 0:
                w = w * vertex_z_factor(batch, a[same], hp.vertex_z_weight)
            loss = loss + (w * d2[same]).sum() / w.sum().clamp_min(1e-12)
        if bool((~same).any()):
            d = torch.sqrt(d2[~same] + 1e-12)
            loss = loss + hp.negative_weight * F.relu(hp.margin - d).pow(2).mean()
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        hp = self.hparams
        if hp.crop_sectors > 1:
            start = float(torch.rand(()) * 2.0 - 1.0)
            batch = phi_sector_sample(batch, hp.crop_sectors, start)
        x = batch["x"]
        n = x.shape[0]
        emb = self.net(x)
        queries = torch.randperm(n, device=x.device)[: hp.queries]
        with torch.no_grad():
            i, j, _, _ = radius_neighbours(emb, hp.margin, hp.knn_train, False, queries=queries)
        n_random = int(hp.random_pairs * n)
        rand = torch.randint(0, max(n, 1), (2, n_random), device=x.device)
        truth = batch["truth_edges"]
        a = torch.cat([truth[0], i, rand[0]])
        b = torch.cat([truth[1], j, rand[1]])
        loss = self.pair_loss(emb, batch, a, b)
        self.log("train_loss", loss, prog_bar=True, batch_size=1)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = batch["x"]
        emb = self.net(x)
        truth = batch["truth_edges"]
        rand = torch.randint(0, max(x.shape[0], 1), (2, truth.shape[1]), device=x.device)
        loss = self.pair_loss(
            emb, batch, torch.cat([truth[0], rand[0]]), torch.cat([truth[1], rand[1]])
        )
        self.log("val_loss", loss, batch_size=1, sync_dist=True)
        graph = radius_graph(emb, self.hparams.margin, self.hparams.val_knn, x[:, 0])
        self.add_val_counts(graph_counts(graph, batch))


def vertex_z_factor(batch: dict, ends: Tensor, strength: float) -> Tensor:
    """`1 + strength (z / 50 mm)^2`, at most `1 + 4 strength`, for the production-vertex z
    of each pair's or edge's first spacepoint: true edges from vertices far along the beam spot
    (sigma_z 50 mm) are few, so an unweighted loss learns to doubt any doublet that does not
    point to z = 0, and loses those particles (docs/TRAINING.md)."""
    if "vertex_z" not in batch:
        raise ValueError(
            "vertex-z weighting (--emb-vertex-z-weight, --gnn-vertex-z-weight) needs samples "
            "with vertex_z: delete the output folder's samples/ (written before the column "
            "existed) to rebuild them"
        )
    z = batch["vertex_z"].index_select(0, ends).float() / 50.0
    return 1.0 + strength * (z * z).clamp_max(4.0)


def pt_factor(batch: dict, ends: Tensor, strength: float) -> Tensor:
    """`1 + strength log2(pT / 1 GeV)`, pT clamped to 1-16 GeV, for the particle of each
    edge's first spacepoint: stiff tracks are rare in the pT spectrum, so an unweighted loss
    lets the GNN doubt the nearly straight doublets of the dense barrel, and the physics
    wants those tracks most (docs/TRAINING.md)."""
    pt = batch["pt"].index_select(0, ends).float().clamp(1.0, 16.0)
    return 1.0 + strength * torch.log2(pt)


class EdgeClassifierModule(StageModule):
    """Weighted BCE on the input graph's edges: true edges of target particles weight
    `pos_weight`, other true edges `pos_weight * non_target_weight`, false edges 1.
    Validation counts are taken at a score cut of 0.5. Training steps may take a random phi
    sector of 1/`crop_sectors` of the event (dense events at the memory and step time of
    sparse ones) and then a random subset of `edges_per_step` edges; validation takes all."""

    edges_per_step = 0  # 0: the whole graph of the event
    crop_sectors = 0  # 0 or 1: no crop
    vertex_z_weight = 0.0  # 0: no vertex-z weighting
    pt_weight = 0.0  # 0: no pT weighting

    def edge_loss(self, batch: dict, edge_index: Tensor) -> Tensor:
        hp = self.hparams
        if edge_index.shape[1] == 0:
            return self.zero_loss()
        logits = self.net(batch["x"], edge_index)
        y, y_target = edge_labels(edge_index, batch["particle_id"], batch["target_hit"])
        w_true = torch.where(y_target, 1.0, hp.non_target_weight) * hp.pos_weight
        if self.vertex_z_weight > 0:
            w_true = w_true * vertex_z_factor(batch, edge_index[0], self.vertex_z_weight)
        if self.pt_weight > 0:
            w_true = w_true * pt_factor(batch, edge_index[0], self.pt_weight)
        weight = torch.where(y, w_true, 1.0)
        return F.binary_cross_entropy_with_logits(logits.float(), y.float(), weight=weight)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        edge_index = batch["edge_index"]
        if self.crop_sectors > 1:
            start = float(torch.rand(()) * 2.0 - 1.0)
            edge_index = phi_sector_edges(batch["x"], edge_index, self.crop_sectors, start)
        limit = self.edges_per_step
        if limit and edge_index.shape[1] > limit:
            pick = torch.randperm(edge_index.shape[1], device=edge_index.device)[:limit]
            edge_index = edge_index[:, torch.sort(pick).values]
        loss = self.edge_loss(batch, edge_index)
        self.log("train_loss", loss, prog_bar=True, batch_size=1)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        edge_index = batch["edge_index"]
        loss = self.edge_loss(batch, edge_index)
        self.log("val_loss", loss, batch_size=1, sync_dist=True)
        scores = torch.sigmoid(self.net(batch["x"], edge_index))
        keep = scores > 0.5
        self.add_val_counts(graph_counts(edge_index[:, keep], batch))
        _, y_target = edge_labels(edge_index, batch["particle_id"], batch["target_hit"])
        self.add_val_counts(
            {"stage_kept": int((keep & y_target).sum()), "stage_total": int(y_target.sum())}
        )


class FilterModule(EdgeClassifierModule):
    """The filter MLP, trained on random subsets of `edges_per_step` edges of each graph."""

    def __init__(
        self,
        num_features: int = 9,
        hidden: int = 64,
        layers: int = 3,
        activation: str = "relu",
        layer_norm: bool = True,
        pos_weight: float = 2.0,
        non_target_weight: float = 0.1,
        edges_per_step: int = 500_000,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.edges_per_step = edges_per_step
        self.net = FilterNet(num_features, hidden, layers, activation, layer_norm)


class GNNModule(EdgeClassifierModule):
    """The interaction-network edge classifier, `model` = plain or hetero."""

    def __init__(
        self,
        model: str = "plain",
        num_features: int = 9,
        hidden: int = 32,
        iterations: int = 6,
        layers: int = 2,
        node_columns: int = 9,
        activation: str = "relu",
        layer_norm: bool = True,
        pos_weight: float = 1.0,
        non_target_weight: float = 0.1,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        crop_sectors: int = 0,
        vertex_z_weight: float = 0.0,
        pt_weight: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.crop_sectors = crop_sectors
        self.vertex_z_weight = vertex_z_weight
        self.pt_weight = pt_weight
        self.net = build_gnn(
            model,
            num_features=num_features,
            hidden=hidden,
            iterations=iterations,
            layers=layers,
            node_columns=node_columns,
            activation=activation,
            layer_norm=layer_norm,
        )


class TrackQualityModule(StageModule):
    """Track-candidate classifier: binary cross-entropy on the rows of
    `exatrkx.track_quality.track_features` (batches of `(rows, target)`), target 1 for a
    candidate matched to a particle. The network standardises its inputs with buffers set from
    the training rows (`net.set_standardisation`) before training."""

    def __init__(
        self,
        num_track_features: int = 18,
        hidden: int = 32,
        layers: int = 2,
        lr: float = 3e-3,
        weight_decay: float = 1e-3,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = TrackQualityNet(num_track_features, hidden, layers)

    def track_loss(self, batch) -> Tensor:
        rows, target = batch
        return F.binary_cross_entropy_with_logits(self.net(rows), target)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss = self.track_loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch[1]))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss = self.track_loss(batch)
        self.log("val_loss", loss, batch_size=len(batch[1]), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        pass  # no edge counts here: the loss is the validation metric

    def on_validation_epoch_end(self) -> None:
        pass
