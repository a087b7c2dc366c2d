"""Simulated against real TrackML events: the statistics behind `exatrkx compare`, as PNG plots.

`python -m exatrkx.compare --sim DIR [--real DIR] --plots DIR` (real defaults to the shared data).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from exatrkx import plots, trackml
from exatrkx.paths import shared_trackml_dir

PT_EDGES = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0, 5.0, 100.0]
ETA_EDGES = [-4.0 + i for i in range(9)]


def read_detector(directory: Path) -> pd.DataFrame:
    for name in ("detectors.csv.gz", "detectors.csv"):
        if (directory / name).exists():
            return pd.read_csv(directory / name)
    raise FileNotFoundError(f"no detectors.csv[.gz] in {directory}")


def collect(directory: str | Path, detector: pd.DataFrame, max_events: int = 10) -> dict:
    """Per-hit and per-particle tables of up to `max_events` events, plus plane residuals."""
    hits, particles = [], []
    for event_id in trackml.list_events(directory)[:max_events]:
        event = trackml.read_event(directory, event_id)
        h = event.hits.copy()
        h["event"] = event_id
        h["particle_id"] = event.truth["particle_id"].to_numpy() if event.truth is not None else 1
        hits.append(h)
        if event.particles is not None:
            counts = h.loc[h["particle_id"] != 0, "particle_id"].value_counts()
            p = event.particles.copy()
            p["n"] = counts.reindex(p["particle_id"].to_numpy(), fill_value=0).to_numpy()
            particles.append(p[p["n"] > 0])
    if not hits:
        raise FileNotFoundError(f"no events in {directory}")
    hits = pd.concat(hits, ignore_index=True)
    particles = pd.concat(particles, ignore_index=True) if particles else pd.DataFrame()
    keys = ["volume_id", "layer_id", "module_id"]
    merged = hits[keys + ["x", "y", "z"]].merge(detector, on=keys, how="left")
    d = merged[["x", "y", "z"]].to_numpy() - merged[["cx", "cy", "cz"]].to_numpy()
    w = merged[["rot_xw", "rot_yw", "rot_zw"]].to_numpy()
    residual = np.abs(np.einsum("ij,ij->i", d, w))
    if len(particles):
        particles["pt"] = np.hypot(particles["px"], particles["py"])
        particles["eta"] = np.arcsinh(particles["pz"] / particles["pt"])
        particles["vr"] = np.hypot(particles["vx"], particles["vy"])
    return {"hits": hits, "particles": particles, "residual": residual}


def summary(data: dict) -> dict:
    hits, p = data["hits"], data["particles"]
    events = hits["event"].nunique()
    out = {
        "events": int(events),
        "spacepoints_per_event": len(hits) / events,
        "noise_fraction": float((hits["particle_id"] == 0).mean()),
    }
    if len(p):
        out.update(
            {
                "particles_with_hits_per_event": len(p) / events,
                "spacepoints_per_particle": float(p["n"].mean()),
                "median_pt": float(p["pt"].median()),
                "fraction_pt_above_1": float((p["pt"] > 1).mean()),
                "fraction_abs_eta_below_2_5": float((p["eta"].abs() < 2.5).mean()),
                "fraction_secondary": float((p["vr"] > 10).mean()),
            }
        )
    out["plane_residual_rms_mm"] = float(np.sqrt(np.nanmean(data["residual"] ** 2)))
    return out


def _profile(p: pd.DataFrame, column: str, edges) -> np.ndarray:
    if not len(p):
        return np.zeros(len(edges) - 1)
    idx = np.digitize(p[column].to_numpy(), edges) - 1
    return np.array(
        [
            p["n"].to_numpy()[idx == i].mean() if (idx == i).any() else np.nan
            for i in range(len(edges) - 1)
        ]
    )


def _fractions(hits: pd.DataFrame, keys) -> pd.Series:
    return hits.groupby(keys).size() / len(hits)


def write_plots(sim: dict, real: dict, directory: str | Path) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sp, rp = sim["particles"], real["particles"]
    paths = [
        plots.compare_profile(
            directory / "spacepoints_per_particle_vs_pt.png",
            "spacepoints per particle",
            "particle $p_T$ [GeV] (bin index)",
            np.arange(len(PT_EDGES)),
            _profile(sp, "pt", PT_EDGES),
            _profile(rp, "pt", PT_EDGES),
            "mean spacepoints",
        ),
        plots.compare_profile(
            directory / "spacepoints_per_particle_vs_eta.png",
            "spacepoints per particle",
            r"particle $\eta$",
            ETA_EDGES,
            _profile(sp, "eta", ETA_EDGES),
            _profile(rp, "eta", ETA_EDGES),
            "mean spacepoints",
        ),
        plots.compare_histograms(
            directory / "pt_spectrum.png",
            "particles with spacepoints",
            "$p_T$ [GeV]",
            sp["pt"] if len(sp) else [],
            rp["pt"] if len(rp) else [],
            np.geomspace(0.1, 50, 40),
            log=True,
        ),
        plots.compare_histograms(
            directory / "eta_spectrum.png",
            "particles with spacepoints",
            r"$\eta$",
            sp["eta"] if len(sp) else [],
            rp["eta"] if len(rp) else [],
            np.linspace(-4.5, 4.5, 37),
        ),
        plots.compare_histograms(
            directory / "plane_residuals.png",
            "distance of spacepoints from their module plane",
            "|w| [mm]",
            sim["residual"],
            real["residual"],
            np.linspace(0, 0.01, 41),
        ),
    ]
    for keys, name in ((["volume_id"], "volume"), (["volume_id", "layer_id"], "layer")):
        a, b = _fractions(sim["hits"], keys), _fractions(real["hits"], keys)
        index = a.index.union(b.index)
        paths.append(
            plots.compare_bars(
                directory / f"{name}_fractions.png",
                f"spacepoints per {name}",
                [k if not isinstance(k, tuple) else f"{k[0]}:{k[1]}" for k in index],
                a.reindex(index, fill_value=0).to_numpy(),
                b.reindex(index, fill_value=0).to_numpy(),
                "fraction of spacepoints",
            )
        )
    noise = [
        sim["hits"].groupby("volume_id")["particle_id"].apply(lambda s: (s == 0).mean()),
        real["hits"].groupby("volume_id")["particle_id"].apply(lambda s: (s == 0).mean()),
    ]
    index = noise[0].index.union(noise[1].index)
    paths.append(
        plots.compare_bars(
            directory / "noise_per_volume.png",
            "noise fraction per volume",
            list(index),
            noise[0].reindex(index, fill_value=0).to_numpy(),
            noise[1].reindex(index, fill_value=0).to_numpy(),
            "noise fraction",
        )
    )
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exatrkx.compare", description=__doc__)
    parser.add_argument("--sim", required=True, help="directory with simulated events")
    parser.add_argument("--real", help="directory with real TrackML events")
    parser.add_argument("--plots", required=True, help="directory for the PNG files")
    parser.add_argument("--max-events", type=int, default=10)
    args = parser.parse_args(argv)
    shared = shared_trackml_dir()
    real_dir = Path(args.real) if args.real else shared
    if real_dir is None:
        parser.error("no --real and no shared TrackML data found")
    detector = read_detector(real_dir if shared is None else shared)
    sim = collect(args.sim, detector, args.max_events)
    real = collect(real_dir, detector, args.max_events)
    table = {"sim": summary(sim), "real": summary(real)}
    print(json.dumps(table, indent=2))
    for path in write_plots(sim, real, args.plots):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
