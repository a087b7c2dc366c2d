"""Start and stop a real tritonserver on free loopback ports.

    with TritonServer(model_repository) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Command line (runs until Ctrl-C, prints the URLs once the model is ready):

    python -m exatrkx.server --model-repository model_repository [--http-port 8000] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from exatrkx import paths

LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """tritonserver did not start, or the model did not become ready; the message quotes the
    end of the server log."""


def find_tritonserver() -> Path:
    """$TRITONSERVER, then the tritonserver that ships inside nvidia-pytriton, then PATH."""
    env = os.environ.get("TRITONSERVER")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "tritonserver" / "bin" / "tritonserver"
            if candidate.is_file():
                return candidate
    found = shutil.which("tritonserver") or (
        "/opt/tritonserver/bin/tritonserver"
        if Path("/opt/tritonserver/bin/tritonserver").is_file()
        else None
    )
    if found:
        return Path(found)
    raise ServerError(
        "tritonserver not found: install nvidia-pytriton (make setup) or set $TRITONSERVER"
    )


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class TritonServer:
    """One tritonserver process bound to 127.0.0.1.

    Ports left as None are picked free. `models` are the models to wait for (their
    `/v2/models/<m>/ready`); with `model_control_mode="explicit"` they are also loaded at
    start-up (`--load-model`). The server log goes to `log_path` (a temporary file unless
    given); `log_text()` reads it back."""

    def __init__(
        self,
        model_repository: str | Path = paths.MODEL_REPOSITORY,
        *,
        backend_directory: str | Path = paths.BACKEND_DIR,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        models: Sequence[str] = ("exatrkx",),
        model_control_mode: str | None = None,
        log_verbose: int = 0,
        log_path: str | Path | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 120.0,
        tritonserver: str | Path | None = None,
    ):
        self.model_repository = Path(model_repository).resolve()
        self.backend_directory = Path(backend_directory).resolve()
        self.fixed_ports = (http_port, grpc_port, metrics_port)
        self.models = list(models)
        self.model_control_mode = model_control_mode
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.tritonserver = Path(tritonserver) if tritonserver else find_tritonserver()
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            log_path = name
        self.log_path = Path(log_path)
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.process: subprocess.Popen | None = None

    # URLs in the forms tritonclient takes (host:port, no scheme).
    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        cmd = [
            str(self.tritonserver),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_directory}",
            f"--http-address={LOOPBACK}",
            f"--grpc-address={LOOPBACK}",
            f"--metrics-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--log-verbose={self.log_verbose}",
            "--allow-gpu-metrics=false",
        ]
        if self.model_control_mode:
            cmd.append(f"--model-control-mode={self.model_control_mode}")
            if self.model_control_mode == "explicit":
                cmd += [f"--load-model={m}" for m in self.models]
        return cmd + self.extra_args

    def start(self) -> TritonServer:
        """Start the server and wait until it and every model in `models` are ready. Retries
        with other ports when one was taken between picking and binding."""
        if self.process is not None:
            raise ServerError("server already started")
        backend = self.backend_directory / "exatrkx" / "libtriton_exatrkx.so"
        if not backend.is_file():
            raise ServerError(f"{backend} not found: run `make setup` (or pass backend_directory)")
        attempts = 1 if all(self.fixed_ports) else 3
        for attempt in range(attempts):
            self.http_port, self.grpc_port, self.metrics_port = (
                port or free_port() for port in self.fixed_ports
            )
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            try:
                self._wait_ready()
                return self
            except ServerError:
                in_use = "address already in use" in self.log_text().lower()
                self.stop()
                if not in_use or attempt == attempts - 1:
                    raise
        return self

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        url = f"http://{self.http_url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def is_model_ready(self, model: str) -> bool:
        try:
            return self._get(f"/v2/models/{model}/ready")[0] == 200
        except OSError:
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerError(f"tritonserver exited with code {code}:\n{self.log_tail()}")
            try:
                live = self._get("/v2/health/live")[0] == 200
            except OSError:
                live = False
            if live and all(self.is_model_ready(m) for m in self.models):
                return
            time.sleep(0.2)
        raise ServerError(
            f"tritonserver not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to `timeout` seconds, then SIGKILL. Returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def model_statistics(self, model: str = "exatrkx") -> dict:
        """`/v2/models/<model>/stats` as JSON."""
        status, body = self._get(f"/v2/models/{model}/stats")
        if status != 200:
            raise ServerError(f"stats for {model}: HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def metrics(self) -> str:
        """The Prometheus text of `/metrics`."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def urls(self) -> dict[str, str]:
        return {"http": self.http_url, "grpc": self.grpc_url, "metrics": self.metrics_url}

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exatrkx.server",
        description="Run tritonserver with the exatrkx backend on loopback ports until Ctrl-C.",
    )
    parser.add_argument("--model-repository", type=Path, default=paths.MODEL_REPOSITORY)
    parser.add_argument("--backend-directory", type=Path, default=paths.BACKEND_DIR)
    parser.add_argument("--http-port", type=int, help="default: a free port")
    parser.add_argument("--grpc-port", type=int, help="default: a free port")
    parser.add_argument("--metrics-port", type=int, help="default: a free port")
    parser.add_argument(
        "--model", action="append", dest="models", help="model to wait for (default exatrkx)"
    )
    parser.add_argument("--model-control-mode", choices=["none", "poll", "explicit"])
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--log-file", type=Path, help="server log (default: a temporary file)")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print the URLs as one JSON line")
    parser.add_argument(
        "extra",
        nargs="*",
        help="more tritonserver options, after `--` (e.g. -- --exit-timeout-secs=5)",
    )
    args = parser.parse_args(argv)

    server = TritonServer(
        args.model_repository,
        backend_directory=args.backend_directory,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        models=args.models or ["exatrkx"],
        model_control_mode=args.model_control_mode,
        log_verbose=args.log_verbose,
        log_path=args.log_file,
        extra_args=args.extra,
        startup_timeout=args.startup_timeout,
    )
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    # Ctrl-C and SIGTERM both stop the server cleanly (SIGINT is set explicitly because a
    # shell leaves background jobs ignoring it).
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except ServerError as e:
        print(f"exatrkx.server: {e}", file=sys.stderr)
        return 1
    try:
        urls = server.urls() | {"log": str(server.log_path), "pid": server.process.pid}
        if args.json:
            print(json.dumps(urls), flush=True)
        else:
            for key, value in urls.items():
                print(f"{key}: {value}", flush=True)
        while not stop and server.is_running():
            time.sleep(0.5)
    finally:
        code = server.stop()
    return 0 if stop or code in (0, None, -signal.SIGTERM) else 1


if __name__ == "__main__":
    sys.exit(main())
