"""Ray clusters made with `ray start` for the Jobs and two-node tests.

Each cluster has its own temp dir and ports, so it never meets another Ray instance on the machine,
and is stopped by ending only its own processes: those whose command line names its temp dir or its
GCS address (a bare `ray stop` would end every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A job's entrypoint runs `python` from the raylet's PATH: make it this interpreter.
VENV_BIN = Path(sys.executable).parent


def free_ports(n: int, avoid: set[int] | range = frozenset()) -> list[int]:
    """n distinct free ports, none in `avoid`: each socket stays bound until all are picked, so the OS
    cannot hand one port out twice."""
    sockets, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] not in avoid:
                ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def _ports(names: list[str], avoid: set[int]) -> list[str]:
    """`--name PORT` for each name, with distinct free ports none of which is in `avoid`."""
    return [arg for name, port in zip(names, free_ports(len(names), avoid)) for arg in (f"--{name}", str(port))]


def ray_env() -> dict:
    """The environment for Ray processes and the factory commands of these tests."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env["RAY_AUTH_MODE"] = "token"  # Ray 2.60's default, made explicit so a second node can join the head
    env.pop("RAY_ADDRESS", None)
    return env


class LocalCluster:
    def __init__(self, env: dict | None = None):
        # Short paths: Ray's unix sockets live under them and their paths are capped at ~107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
        self.gcs_port, self.dashboard_port = free_ports(2)
        self.env = {**ray_env(), **(env or {})}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_temp_dir(self) -> Path:
        """One folder per node: nodes sharing one would share the runtime_resources folder, and one node
        unpacking a job's working_dir again would pull it from under the other's running driver."""
        nodes = sum(1 for _ in self.temp_dir.glob("node*"))
        path = self.temp_dir / f"node{nodes}"
        path.mkdir()
        return path

    def _start(self, args: list[str], num_cpus: int, resources: dict | None) -> None:
        worker_lo = free_port()
        workers = range(worker_lo, min(worker_lo + 200, 65535) + 1)
        taken = {int(a) for a in args if a.isdigit()} | {self.gcs_port, self.dashboard_port}
        if taken & set(workers):
            return self._start(args, num_cpus, resources)
        cmd = [
            str(VENV_BIN / "ray"), "start", *args, f"--num-cpus={num_cpus}", "--num-gpus=0",
            f"--temp-dir={self._node_temp_dir()}", "--disable-usage-stats",
            f"--min-worker-port={workers.start}", f"--max-worker-port={workers.stop - 1}",
            *_ports(["node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                     "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"],
                    taken | set(workers)),
        ]
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{done.stdout}\n{done.stderr}")

    def start_head(self, num_cpus: int = 1, resources: dict | None = None) -> "LocalCluster":
        args = ["--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}", "--include-dashboard=true",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                "--ray-client-server-port", str(free_ports(1, {self.gcs_port, self.dashboard_port})[0])]
        self._start(args, num_cpus, resources)
        return self

    def add_node(self, num_cpus: int = 1, resources: dict | None = None) -> "LocalCluster":
        self._start([f"--address={self.address}", "--node-ip-address=127.0.0.1"], num_cpus, resources)
        return self

    def wait_for_nodes(self, n: int, timeout_s: float = 120) -> list[dict]:
        """The alive nodes, once there are n of them (state read through a short-lived driver)."""
        code = (
            "import json, ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))"
        ) % self.address
        deadline = time.monotonic() + timeout_s
        while True:
            out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
                                 timeout=120)
            nodes = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []
            if len(nodes) >= n or time.monotonic() > deadline:
                return nodes
            time.sleep(2)

    def _own_pids(self) -> list[int]:
        marks = [str(self.temp_dir), f"127.0.0.1:{self.gcs_port}", f"--gcs-port={self.gcs_port}"]
        marks = [m.encode() for m in marks]
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if any(m in cmdline for m in marks):
                pids.append(int(proc.name))
        return pids

    def stop(self) -> None:
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            pids = self._own_pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while self._own_pids() and time.monotonic() < deadline:
                time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
