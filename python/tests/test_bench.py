"""The benchmark helpers: perf_analyzer input data and CSV parsing, the bench model
repository (configuration rewriting, the ensemble's parameters), the stub environment, the
growth ratio and the tables. The ensemble itself runs in tests/test_ensemble.py."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest

from exatrkx import bench, bench_perf, bench_repository, bench_scaling, paths, reference, testing

PROJECT_CONFIG = (paths.MODEL_REPOSITORY / "exatrkx" / "config.pbtxt").read_text()

# A line of perf_analyzer 2.51's `-f` output (microseconds), as it wrote it here.
PERF_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency,request/response,response wait\n"
    "2,1.35422,60,5544,712194,63,734047,34,4,1584108,1935416,1967413,2163644,64,1451831\n"
)


# --- perf_analyzer ----------------------------------------------------------------------------


def test_input_data_holds_each_event_bit_for_bit():
    rng = np.random.default_rng(0)
    events = [rng.normal(size=(n, 9)).astype(np.float32) for n in (5, 7)]
    ids = [rng.integers(0, 10**9, size=n) for n in (5, 7)]
    data = bench_perf.input_data(events, ids)["data"]
    assert len(data) == 2
    for entry, x, m in zip(data, events, ids, strict=True):
        assert entry["FEATURES"]["shape"] == [len(x), 9]
        decoded = np.frombuffer(base64.b64decode(entry["FEATURES"]["b64"]), dtype="<f4")
        np.testing.assert_array_equal(decoded.reshape(x.shape), x)
        decoded_ids = np.frombuffer(base64.b64decode(entry["MODULE_ID"]["b64"]), dtype="<i8")
        np.testing.assert_array_equal(decoded_ids, m)
    without = bench_perf.input_data(events)["data"]
    assert all(set(entry) == {"FEATURES"} for entry in without)


def test_write_input_data_is_json(tmp_path):
    path = bench_perf.write_input_data(tmp_path / "in.json", [np.zeros((3, 9), np.float32)])
    assert json.loads(path.read_text())["data"][0]["FEATURES"]["shape"] == [3, 9]


def test_parse_perf_csv_in_milliseconds():
    (row,) = bench_perf.parse_perf_csv(PERF_CSV)
    assert row["concurrency"] == 2
    assert row["throughput"] == pytest.approx(1.35422)
    assert row["p50_ms"] == pytest.approx(1584.108)
    assert row["p99_ms"] == pytest.approx(2163.644)
    assert row["queue_ms"] == pytest.approx(712.194)
    assert row["compute_infer_ms"] == pytest.approx(734.047)


def test_parse_perf_csv_names_a_missing_column():
    broken = PERF_CSV.replace("p99 latency", "p98 latency")
    with pytest.raises(ValueError, match="p99 latency"):
        bench_perf.parse_perf_csv(broken)


def test_perf_command_stable_then_fixed_count(tmp_path):
    settings = bench_perf.PerfSettings(window_requests=5, stability_percentage=15, max_trials=4)
    args = ("perf_analyzer", "m", "127.0.0.1:1", tmp_path / "d.json", 4, settings, tmp_path / "o")
    stable = bench_perf.perf_command(*args)
    assert stable[stable.index("--measurement-request-count") + 1] == "8"  # 2 x concurrency
    assert stable[stable.index("-s") + 1] == "15"
    assert stable[stable.index("-r") + 1] == "4"
    assert stable[stable.index("--concurrency-range") + 1] == "4:4"
    fixed = bench_perf.perf_command(*args, fixed_count=True)
    assert fixed[fixed.index("--request-count") + 1] == str(8 * settings.fallback_windows)
    assert "--measurement-request-count" not in fixed


def _result(model, instances, concurrency, throughput, p99):
    return bench_perf.PerfResult(
        model, instances, concurrency, throughput, 1.0, 1.0, 1.0, p99, 0.0, 0.0, 1.0, 0.0
    )


def test_results_table_ratio_at_same_instances_and_concurrency():
    table = bench_perf.results_table(
        [
            _result("exatrkx", 1, 2, 6.0, 100.0),
            _result("exatrkx_ensemble", 1, 2, 2.0, 300.0),
            _result("exatrkx", 2, 2, 9.0, 100.0),
        ]
    )
    rows = [line for line in table.splitlines() if line.startswith("| exatrkx |")]
    assert "3.00x" in rows[0]
    assert rows[1].endswith("|  |")  # no ensemble measured at 2 instances


# --- bench model repository -------------------------------------------------------------------


def test_labels_only_keeps_the_rest_of_the_project_config():
    # The project's output block has brackets in comments ("pt [GeV]").
    text = bench_repository.labels_only(PROJECT_CONFIG)
    assert 'name: "EDGE_INDEX"' not in text and 'name: "TRACKS"' not in text
    assert 'output [ { name: "LABELS" data_type: TYPE_INT64 dims: [ -1 ] } ]' in text
    assert 'name: "MODULE_ID"' in text
    assert reference.parse_pbtxt_parameters(text) == reference.parse_pbtxt_parameters(
        PROJECT_CONFIG
    )


def test_set_instances_on_multi_and_single_line_blocks():
    one_line = 'name: "m"\ninstance_group [ { kind: KIND_CPU count: 1 } ]\nparameters {}\n'
    for text in (PROJECT_CONFIG, one_line):
        new = bench_repository.set_instances(text, 3)
        assert "count: 3" in new and "count: 1" not in new
        assert new.count("instance_group") == 1


def test_replace_list_field_errors():
    with pytest.raises(ValueError, match="no `output"):
        bench_repository.labels_only('name: "m"\n')
    with pytest.raises(ValueError, match="unbalanced"):
        bench_repository.labels_only('output [ { name: "LABELS" }\n')


@pytest.fixture
def source_repository(tmp_path):
    return testing.make_model_repository(
        tmp_path / "source", parameters={"track_builder": "walkthrough"}
    )


def test_bench_repository_layout_and_parameters(source_repository, tmp_path):
    dest = bench_repository.write_bench_repository(
        source_repository, tmp_path / "bench", instances=2, overrides={"gnn_cut": "0.25"}
    )
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(
        [bench_repository.MODEL, bench_repository.ENSEMBLE, *bench_repository.STEPS["radius"]]
    )
    source_params = reference.parse_pbtxt_parameters(
        (source_repository / "exatrkx" / "config.pbtxt").read_text()
    )
    exatrkx_text = (dest / "exatrkx" / "config.pbtxt").read_text()
    assert "count: 2" in exatrkx_text and 'name: "TRACKS"' not in exatrkx_text
    assert reference.parse_pbtxt_parameters(exatrkx_text)["gnn_cut"] == "0.25"
    for step in bench_repository.STEPS["radius"]:
        text = (dest / step / "config.pbtxt").read_text()
        params = reference.parse_pbtxt_parameters(text)
        assert "count: 2" in text
        assert params["exatrkx_python_path"] == str((paths.REPO_ROOT / "python").resolve())
        for key, value in source_params.items():
            assert params[key] == ("0.25" if key == "gnn_cut" else value), (step, key)
        assert (dest / step / "1" / "model.py").resolve() == bench_repository.STEP_MODEL
    assert (dest / "exatrkx_py_gnn" / "1" / "gnn.pt").is_file()
    for name in ("gnn2.pt", "gnn3.pt"):  # the refining passes' networks
        assert (dest / "exatrkx_py_gnn" / "1" / name).is_file()
    assert (dest / "exatrkx" / "1" / "embed.pt").is_file()
    ensemble = (dest / bench_repository.ENSEMBLE / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ensemble and "MODULE_ID" not in ensemble

    # Rewriting with fewer instances and module-map steps replaces the old layout.
    (source_repository / "exatrkx" / "1" / "module_map.csv").write_text(
        ",".join(reference.MODULE_MAP_COLUMNS) + "\n"
    )
    dest = bench_repository.write_bench_repository(
        source_repository, dest, overrides={"graph_construction": "module_map"}
    )
    names = sorted(p.name for p in dest.iterdir())
    assert "exatrkx_py_embedding" not in names and "exatrkx_py_module_map_graph" in names
    ensemble = (dest / bench_repository.ENSEMBLE / "config.pbtxt").read_text()
    assert 'name: "MODULE_ID"' in ensemble


def test_bench_repository_names_missing_model_files(source_repository, tmp_path):
    (source_repository / "exatrkx" / "1" / "gnn.pt").unlink()
    with pytest.raises(FileNotFoundError, match="gnn.pt"):
        bench_repository.write_bench_repository(source_repository, tmp_path / "bench")


def test_step_templates_match_the_stages_of_model_py():
    stages = set()
    for steps in bench_repository.STEPS.values():
        for step in steps:
            text = (bench_repository.ENSEMBLE_TEMPLATE / step / "config.pbtxt").read_text()
            assert f'name: "{step}"' in text
            stages.add(reference.parse_pbtxt_parameters(text)["stage"])
    model_py = bench_repository.STEP_MODEL.read_text()
    for stage in stages:
        assert f'"{stage}"' in model_py


def test_stub_environment_puts_this_venv_first():
    env = bench_repository.stub_environment({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/x"})
    path = env["PATH"].split(os.pathsep)
    assert Path(path[0]) / "python3" == Path(os.sys.executable).parent / "python3"
    assert path[-1] == "/usr/bin"
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert str(bench_repository.pytriton_libs_dir()) in libs
    assert libs[-1] == "/opt/x"


def test_environment_restores_variables():
    key = "EXATRKX_BENCH_TEST_VARIABLE"
    assert key not in os.environ
    with bench_repository.environment({key: "1"}):
        assert os.environ[key] == "1"
    assert key not in os.environ


def test_backend_directory_layout(tmp_path):
    fake = tmp_path / "built" / "exatrkx"
    fake.mkdir(parents=True)
    (fake / "libtriton_exatrkx.so").write_bytes(b"")
    dest = bench_repository.prepare_backend_directory(tmp_path / "backends", fake)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        assert (dest / "python" / name).is_file()
    assert os.access(dest / "python" / "triton_python_backend_stub", os.X_OK)
    assert (dest / "exatrkx" / "libtriton_exatrkx.so").is_file()
    # Idempotent.
    bench_repository.prepare_backend_directory(tmp_path / "backends", fake)


# --- scaling ----------------------------------------------------------------------------------


def _rows(side, exponent):
    return [
        bench_scaling.StageTimes(side, 0, n, {"gnn": 1e-6 * n**exponent}, 1e-6 * n**exponent, [], 0)
        for n in (10_000, 100_000, 400_000)
    ]


def test_the_refining_passes_share_one_column():
    times = {"gnn": 0.5, "gnn_refine": 0.25, "gnn_refine2": 0.125, "tracks": 0.1}
    row = bench_scaling.StageTimes("rust", 200, 10, times, 1.0, [], 0)
    assert row.timings == {"gnn": 0.5, "gnn_refine": 0.375, "tracks": 0.1}
    assert "gnn_refine2" not in bench_scaling.scaling_table([row])
    assert "| 500 | 375 |" in bench_scaling.scaling_table([row])


def test_growth_ratio_linear_and_quadratic():
    rows = _rows("linear", 1) + _rows("quadratic", 2)
    assert bench_scaling.growth_ratio(rows, "linear", 30_000, 300_000) == pytest.approx(10.0)
    assert bench_scaling.growth_ratio(rows, "quadratic", 30_000, 300_000) == pytest.approx(100.0)
    assert bench_scaling.growth_ratio(rows, "linear", 30_000, 900_000) is None


def test_scaling_table_and_plot(tmp_path):
    rows = _rows("rust", 1)
    rows[0].labels_equal = False
    table = bench_scaling.scaling_table(rows)
    assert "DIFFER" in table and "| 10,000 | rust |" in table
    path = bench_scaling.plot_scaling(rows, tmp_path / "s.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_labels_agree_up_to_a_tipped_track_and_whatever_the_numbering():
    a = np.array([0, 0, 0, 1, 1, 1, -1, -1, 2, 2, 2] + [-1] * 4989)
    renumbered = np.where(a >= 0, 2 - a, -1)
    assert bench.differing_spacepoints(a, renumbered) == 0
    assert bench.labels_agree(a, renumbered)
    # track 1 loses a spacepoint, an unassigned one joins track 2
    b = a.copy()
    b[5], b[6] = -1, 2
    assert bench.differing_spacepoints(a, b) == 3 + 3 + 1  # tracks 1 and 2, the lost spacepoint
    assert bench.labels_agree(a, b)  # 7 of 5000 spacepoints
    assert not bench.labels_agree(a[:1000], b[:1000])  # 7 of 1000: above 0.2 %
    merged = np.where(a == 1, 0, a)
    assert bench.differing_spacepoints(a, merged) == 6
    assert not bench.labels_agree(a[:11], merged[:11])
    assert not bench.labels_agree(a, a[:-1])
