"""Real servers for the ``distributed`` tier, on this machine and loopback only.

``postgres``: a throw-away PostgreSQL cluster (``initdb`` into a temp dir, ``pg_ctl start`` on a free
127.0.0.1 port, no Unix socket, trust auth), run as the ``postgres`` user when the tests run as root
(initdb refuses root). Each test gets its own database from ``postgres.database()``.

``ray_cluster``: a head (``ray start --head``) and extra nodes (``ray start --address``), each a
separate raylet, every socket bound to 127.0.0.1. Ray turns "127.0.0.1" into the machine's interface
address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which in turn refuses to start a non-head node;
so the head and the driver run with that variable and the extra nodes run ``ray start`` with the
localhost rewrite switched off (``_NODE_LAUNCHER``). A node is killed with SIGKILL on every process
it started, as a lost machine would be.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for stat in glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(stat).read_text()
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (collected first: killed parents orphan their children)."""
    for victim in _descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the children were started in their own session (pgid == pid)


# ---------------------------------------------------------------------------------------------- PostgreSQL
class PostgresServer:
    def __init__(self) -> None:
        binaries = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
        self.bin = Path(binaries[-1]).parent if binaries else (Path(shutil.which("initdb") or "initdb").parent)
        self.root = Path(tempfile.mkdtemp(prefix="autotransfer-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user_prefix: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            owner = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(owner)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.user_prefix = ["runuser", "-u", owner, "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.user_prefix, *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-c listen_addresses={LOOPBACK} -p {self.port} -c unix_socket_directories='' -c fsync=off"
        log = self.root / "server.log"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def database(self, name: str) -> str:
        """Create database ``name``; its URL (psycopg 3 driver)."""
        import psycopg

        with psycopg.connect(f"host={LOOPBACK} port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/{name}"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres():
    pytest.importorskip("psycopg", reason="pip install 'autotransfer[postgres]'")
    server = PostgresServer()
    if not (server.bin / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------- Ray
# `ray start` for a non-head node, keeping the loopback address Ray would otherwise swap for the
# interface address (the variable that stops that swap also makes `ray start` refuse non-head nodes).
_NODE_LAUNCHER = """
import sys
import ray._private.services as services
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv = ["ray", *sys.argv[1:]]
main()
"""

# The cluster's environment. RAY_AUTH_MODE is explicit: with it unset, `ray start` turns token auth on
# whenever a ~/.ray/auth_token exists (another Ray user of this machine may have made one), and drivers
# without the token are refused. The driver (`fit --ray-address ...`) gets the same RAY_DRIVER_ENV.
RAY_DRIVER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
RAY_LOOPBACK_ENV = {**RAY_DRIVER_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class RayCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="autotransfer-ray-"))
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.head: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen] = []
        self.env = {**os.environ, **RAY_LOOPBACK_ENV}
        self.ray = str(Path(sys.executable).parent / "ray")

    def _popen(self, args: list[str], log: str, env: dict) -> subprocess.Popen:
        out = open(self.root / log, "w")  # noqa: SIM115  (the child keeps it)
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def start_head(self, cpus: int = 1) -> None:
        self.head = self._popen(
            [
                self.ray,
                "start",
                "--head",
                "--block",
                "--node-ip-address",
                LOOPBACK,
                "--port",
                str(self.port),
                "--num-cpus",
                str(cpus),
                "--num-gpus",
                "0",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--temp-dir",
                str(self.root / "tmp"),
            ],
            "head.log",
            self.env,
        )
        self.wait_for_nodes(1)

    def add_node(self, cpus: int = 1) -> subprocess.Popen:
        env = {k: v for k, v in self.env.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        args = ["--address", self.address, "--node-ip-address", LOOPBACK, "--num-cpus", str(cpus), "--num-gpus", "0"]
        node = self._popen(
            [sys.executable, "-c", _NODE_LAUNCHER, "start", "--block", *args],
            f"node{len(self.nodes) + 1}.log",
            env,
        )
        self.nodes.append(node)
        self.wait_for_nodes(1 + len(self.nodes))
        return node

    def alive_nodes(self) -> list[str]:
        code = (
            f"import ray; ray.init(address={self.address!r}, _node_ip_address={LOOPBACK!r}, log_to_driver=False); "
            "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=self.env, timeout=120, cwd=self.root
        )
        return done.stdout.split() if done.returncode == 0 else []

    def wait_for_nodes(self, count: int, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self.alive_nodes()
            if len(alive) >= count:
                return alive
            time.sleep(1)
        logs = "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted(self.root.glob("*.log")))
        raise RuntimeError(f"the Ray cluster did not reach {count} node(s):\n{logs}")

    def running_trials(self, node: subprocess.Popen) -> list[int]:
        """Pids of the Ray Tune trial actors (``ray::ImplicitFunc``) running on ``node``."""
        pids = []
        for pid in _descendants(node.pid):
            with contextlib.suppress(OSError):
                if b"ImplicitFunc" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
        return pids

    def kill_node(self, node: subprocess.Popen) -> None:
        """SIGKILL the node's `ray start`, its raylet and every worker process on it."""
        kill_tree(node.pid)
        node.wait(timeout=30)

    def stop(self) -> None:
        for process in [*self.nodes, self.head]:
            if process is not None and process.poll() is None:
                kill_tree(process.pid)
                with contextlib.suppress(Exception):
                    process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def ray_cluster():
    pytest.importorskip("ray", reason="pip install 'autotransfer[ray]'")
    cluster = RayCluster()
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()
