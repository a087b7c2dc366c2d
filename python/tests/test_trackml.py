import numpy as np
import pytest

from exatrkx import trackml
from exatrkx.paths import shared_trackml_dir

REAL = shared_trackml_dir()


@pytest.mark.skipif(REAL is None, reason="shared/data/trackml not present")
def test_real_event_reads_and_builds_features():
    assert trackml.list_events(REAL) == [1]
    event = trackml.read_event(REAL, 1)
    assert len(event) == 5527
    assert event.truth is not None and event.particles is not None
    assert (event.truth["hit_id"].to_numpy() == event.hits["hit_id"].to_numpy()).all()
    x = trackml.features(event)
    assert x.shape == (5527, trackml.NUM_FEATURES) and x.dtype == np.float32
    # no strip file: cluster columns repeat the spacepoint
    assert np.array_equal(x[:, 3:6], x[:, :3]) and np.array_equal(x[:, 6:9], x[:, :3])
    r = np.hypot(event.hits["x"], event.hits["y"]).to_numpy() / 1000.0
    assert np.allclose(x[:, 0], r, rtol=1e-6)
    assert np.all(np.abs(x[:, 1]) <= 1.0)
    mids = trackml.module_ids(event)
    assert mids.min() >= 7 * 100_000_000 and mids.max() < 19 * 100_000_000


def test_strip_clusters_fill_extended_columns(tmp_path):
    hits = "hit_id,x,y,z,volume_id,layer_id,module_id\n1,30,0,10,8,2,1\n2,0,300,-50,13,2,7\n"
    (tmp_path / "event000000004-hits.csv").write_text(hits)
    (tmp_path / "event000000004-spacepoints.csv").write_text(
        "hit_id,cl1_x,cl1_y,cl1_z,cl2_x,cl2_y,cl2_z\n2,0,310,-40,0,-290,-60\n"
    )
    event = trackml.read_event(tmp_path, 4)
    x = trackml.features(event)
    assert np.array_equal(x[0, 3:6], x[0, :3])
    assert np.allclose(x[1, 3:6], [0.31, 0.5, -0.04], atol=1e-7)
    assert np.allclose(x[1, 6:9], [0.29, -0.5, -0.06], atol=1e-7)


def test_labels_round_trip(tmp_path):
    trackml.write_labels(tmp_path, 7, [3, 4, 9], [0, -1, 0])
    df = trackml.read_labels(tmp_path, 7)
    assert list(df.columns) == ["hit_id", "track_id"]
    assert df["track_id"].tolist() == [0, -1, 0]
    with pytest.raises(ValueError):
        trackml.write_labels(tmp_path, 8, [1, 2], [0])
