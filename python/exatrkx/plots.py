"""PNG plots: tracking efficiency with binomial errors, and simulated-vs-real comparisons."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _efficiency(ax, bins, xlabel: str, log: bool = False) -> None:
    from exatrkx.evaluate import binomial_error

    lo = np.array([b["lo"] for b in bins])
    hi = np.array([b["hi"] for b in bins])
    eff, err = binomial_error([b["matched"] for b in bins], [b["particles"] for b in bins])
    filled = np.array([b["particles"] for b in bins]) > 0
    centre = np.sqrt(lo * hi) if log else 0.5 * (lo + hi)
    ax.errorbar(
        centre[filled],
        eff[filled],
        yerr=err[filled],
        xerr=[(centre - lo)[filled], (hi - centre)[filled]],
        fmt="o",
        ms=4,
        capsize=2,
    )
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("track efficiency")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)


def efficiency_plots(metrics: dict, directory: str | Path) -> list[Path]:
    """efficiency_vs_pt.png, efficiency_vs_eta.png and efficiency_vs_vz.png from a metrics
    dict."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, xlabel, log in (
        ("efficiency_vs_pt", "particle $p_T$ [GeV]", True),
        ("efficiency_vs_eta", r"particle $\eta$", False),
        ("efficiency_vs_vz", "production vertex $z$ [mm]", False),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        _efficiency(ax, metrics[key], xlabel, log)
        ax.set_title(
            f"efficiency {metrics['efficiency']:.3f}, fake {metrics['fake_rate']:.3f}, "
            f"duplicate {metrics['duplicate_rate']:.3f}",
            fontsize=9,
        )
        path = directory / f"{key}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _save(fig, ax, path: Path, title: str, ylabel: str) -> Path:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare_histograms(
    path: Path, title: str, xlabel: str, sim, real, bins, log: bool = False
) -> Path:
    """Normalised histograms of one quantity, simulated against real."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for values, label in ((sim, "simulated"), (real, "real TrackML")):
        if len(values):
            ax.hist(values, bins=bins, density=True, histtype="step", label=label, lw=1.5)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    return _save(fig, ax, path, title, "normalised")


def compare_bars(path: Path, title: str, keys, sim, real, ylabel: str) -> Path:
    """Side-by-side bars per category (volume, layer), simulated against real."""
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(keys)), 4))
    x = np.arange(len(keys))
    ax.bar(x - 0.2, sim, width=0.4, label="simulated")
    ax.bar(x + 0.2, real, width=0.4, label="real TrackML")
    ax.set_xticks(x, [str(k) for k in keys], rotation=90 if len(keys) > 12 else 0, fontsize=7)
    return _save(fig, ax, path, title, ylabel)


def compare_profile(path: Path, title: str, xlabel: str, edges, sim, real, ylabel: str) -> Path:
    """Mean per bin (e.g. spacepoints per particle vs pT), simulated against real."""
    fig, ax = plt.subplots(figsize=(6, 4))
    centre = 0.5 * (np.asarray(edges[:-1]) + np.asarray(edges[1:]))
    ax.plot(centre, sim, "o-", label="simulated")
    ax.plot(centre, real, "s--", label="real TrackML")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    return _save(fig, ax, path, title, ylabel)
