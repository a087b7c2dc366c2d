"""A short soak (the long one is `make soak`): a few hundred requests of mixed sizes, a tenth
of them bad, from four client threads to two model instances. Every good request is answered
with the in-process labels, every bad one refused with its own message, the server counts
them all, its memory stays level and its log holds no unexpected error."""

from __future__ import annotations

import pytest

from conftest import InProcess, start_server
from exatrkx.soak import SoakConfig, judge, run_soak

CONFIG = SoakConfig(
    requests=400,
    concurrency=4,
    instances=2,
    sizes=(0, 1, 2, 50, 200, 500, 1000, 2000),
    max_spacepoints=5000,
    bad_fraction=0.15,
    time_limit=120.0,
    sample_interval=0.1,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    tmp = tmp_path_factory.mktemp("soak")
    server = start_server(
        tmp,
        backend_directory,
        instance_count=CONFIG.instances,
        parameters={"max_spacepoints": str(CONFIG.max_spacepoints)},
    )
    yield server
    server.stop()


def test_short_soak(server, tmp_path):
    in_process = InProcess(server, "exatrkx", tmp_path)
    report = run_soak(server, CONFIG, lambda x: in_process.run(x)["LABELS"])
    print(report.summary())
    assert report.sent == CONFIG.requests
    assert report.bad > 0 and report.good > 0
    # Memory: a few hundred small events cannot show a slow leak (the long soak does); this
    # catches one of an event's size per request.
    assert judge(report, max_rss_growth_mib=48.0) == []
    # The good requests and the bad ones the backend saw, each counted once.
    assert report.server_stats["success"] == report.good
    assert 0 < report.server_stats["fail"] <= report.bad
