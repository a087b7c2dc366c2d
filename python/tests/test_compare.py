import numpy as np
import pytest
import rust_tools

from exatrkx import compare
from exatrkx.paths import shared_trackml_dir

REAL = shared_trackml_dir()


@pytest.mark.skipif(
    REAL is None or not rust_tools.EXATRKX.exists(), reason="needs shared data and exatrkx"
)
def test_compare_writes_plots_and_measures(tmp_path):
    events = rust_tools.simulate(tmp_path / "events", mu=20)
    detector = compare.read_detector(REAL)
    sim = compare.collect(events, detector)
    real = compare.collect(REAL, detector)
    s, r = compare.summary(sim), compare.summary(real)
    assert s["noise_fraction"] == pytest.approx(0.15, abs=0.01)
    assert r["noise_fraction"] == pytest.approx(0.15, abs=0.01)
    # Both lie on the module planes (the real file rounds positions).
    assert s["plane_residual_rms_mm"] < 1e-3 and r["plane_residual_rms_mm"] < 1e-2
    assert 5 < s["spacepoints_per_particle"] < 15
    assert compare.main(["--sim", str(events), "--plots", str(tmp_path / "png")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert "volume_fractions.png" in pngs and "spacepoints_per_particle_vs_pt.png" in pngs
    assert all((tmp_path / "png" / p).stat().st_size > 1000 for p in pngs)
    assert np.isfinite(s["median_pt"])
