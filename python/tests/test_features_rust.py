"""The Rust feature builder (`trackml::features`) gives bit-identical arrays to Python's."""

import numpy as np
import pytest
import rust_tools

from exatrkx import trackml
from exatrkx.paths import shared_trackml_dir

REAL = shared_trackml_dir()
pytestmark = pytest.mark.skipif(
    not (rust_tools.DUMP_FEATURES.exists() and rust_tools.EXATRKX.exists()),
    reason="Rust binaries not built (cargo test --release builds examples)",
)


def rust_features(directory, event_id, tmp_path):
    prefix = tmp_path / f"rust{event_id}"
    rust_tools.run(rust_tools.DUMP_FEATURES, directory, event_id, prefix)
    x = np.fromfile(f"{prefix}.features.f32", dtype="<f4").reshape(-1, trackml.NUM_FEATURES)
    ids = np.fromfile(f"{prefix}.module_ids.i64", dtype="<i8")
    return x, ids


def check(directory, event_id, tmp_path):
    event = trackml.read_event(directory, event_id)
    x_rust, ids_rust = rust_features(directory, event_id, tmp_path)
    x_py = trackml.features(event)
    assert x_rust.shape == x_py.shape
    assert np.array_equal(x_rust.view(np.uint32), x_py.view(np.uint32)), "features differ in bits"
    assert np.array_equal(ids_rust, trackml.module_ids(event))
    return event, x_py


@pytest.mark.skipif(REAL is None, reason="shared/data/trackml not present")
def test_real_event_features_match(tmp_path):
    check(REAL, 1, tmp_path)


def test_simulated_event_features_match(tmp_path):
    events = rust_tools.simulate(tmp_path / "events", mu=10)
    event, x = check(events, 0, tmp_path)
    strip = event.hits["volume_id"].to_numpy() >= 12
    # Strip spacepoints carry their own clusters, pixels repeat themselves.
    assert not np.array_equal(x[strip, 3:6], x[strip, :3])
    assert np.array_equal(x[~strip, 3:6], x[~strip, :3])
