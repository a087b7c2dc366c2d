"""Networks (scriptable `nn.Module`s) and their Lightning training modules."""

from exatrkx.models.networks import (
    NUM_FEATURES,
    EmbeddingNet,
    FilterNet,
    HeteroInteractionGNN,
    InteractionGNN,
    TrackQualityNet,
    build_gnn,
)

__all__ = [
    "NUM_FEATURES",
    "EmbeddingNet",
    "FilterNet",
    "HeteroInteractionGNN",
    "InteractionGNN",
    "TrackQualityNet",
    "build_gnn",
]
