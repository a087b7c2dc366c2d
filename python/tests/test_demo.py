"""The demo's report of the server's own statistics."""

from exatrkx.demo import server_compute_ms, server_threads


def stats(count: int, queue_ns: int, infer_ns: int) -> dict:
    def entry(n, ns):
        # Triton's JSON statistics give 64-bit numbers as strings
        return {"count": str(n), "ns": str(ns)}

    return {
        "model_stats": [
            {
                "inference_stats": {
                    "success": entry(count, queue_ns + infer_ns + 3 * count),
                    "queue": entry(count, queue_ns),
                    "compute_input": entry(count, count),
                    "compute_infer": entry(count, infer_ns),
                    "compute_output": entry(count, 2 * count),
                }
            }
        ]
    }


def test_compute_is_the_mean_over_the_requests_after_the_warm_up():
    # one 100 ms warm-up request, then three of 10 s: Triton's totals are cumulative
    warm = stats(1, 1_000_000, 100_000_000)
    end = stats(4, 4_000_000, 100_000_000 + 3 * 10_000_000_000)
    queue_ms, compute_ms = server_compute_ms(end, warm)
    assert abs(queue_ms - 1.0) < 1e-9
    assert abs(compute_ms - 10_000.000003) < 1e-6
    # without the warm-up snapshot the mean over all four requests
    _, diluted = server_compute_ms(end)
    assert diluted < 0.8 * compute_ms


def test_server_threads_leave_a_core_to_the_server(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert server_threads(None) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert server_threads(None) == 15
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert server_threads(None) == 4
    assert server_threads(2) == 2
    assert server_threads(0) == 1
