"""The Ray backend on a real two-node Ray cluster on this machine, PostgreSQL as the store.

A head (``ray start --head``) and a second node (``ray start --address``), each with one CPU and a custom
resource of its own; ``hpo run --backend ray --address 127.0.0.1:PORT`` drives the study from outside the
cluster. Trials land on both nodes (each records the Ray node it ran on), write to the same PostgreSQL
store and their checkpoints to the artifact folder, and the driver side loads them back.

The cluster is this test's own: its own temp dir and ports (other Ray clusters on the machine are left
alone, so no ``ray stop``, which stops every Ray process of the user); its processes are ended by id in
teardown, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, free_port, hpo_cli, require

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]

STUDY = """
name: ray-cluster
task: {{family: toy, dataset: {{n_samples: 128}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 4}}
training: {{epochs: 3, batch_size: 32}}
storage: {storage}
artifacts: {art}
backend: ray
ray: {{cpus_per_trial: 1, scheduler: none}}  # no max_concurrent: sized by the cluster's CPUs
"""
WORKER_CPUS = 2  # the second node's CPUs (the head has 1): 3 in the cluster, whatever the driver's machine has

NODES = {"head": "hpo_test_head", "worker": "hpo_test_worker"}  # the custom resource of each node


class RayNode:
    """One ``ray start --block`` node of the test cluster; :meth:`stop` ends it and every process it started."""

    def __init__(self, name: str, args: list[str], temp_dir: Path, env: dict) -> None:
        self.name, self.temp_dir = name, temp_dir
        self.log = temp_dir.parent / f"{name}.out"
        ports = {"--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"}
        ray = Path(sys.executable).with_name("ray")
        cmd = [str(ray), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-gpus", "0",
               "--temp-dir", str(temp_dir), "--disable-usage-stats", *args]
        for flag in sorted(ports):  # every port its own: two nodes on one machine, other clusters beside them
            cmd += [flag, str(free_port())]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "Ray runtime started" in text:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"ray node {self.name} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` ends its node's processes on SIGTERM
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in its session
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def _kill_leftovers(marker: str) -> None:
    """End the processes (raylets, workers, agents) whose command line names this cluster's temp dir: by
    id, and only this test's."""
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != os.getpid() and any(marker in part for part in p.info["cmdline"] or ()):
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


@dataclass
class Cluster:
    address: str  # the head's GCS address, for `hpo run --address`
    env: dict  # what a driver of this cluster needs in its environment (the cluster's token)
    node_ids: dict  # {node name: Ray node id}


@pytest.fixture
def ray_cluster(postgres):
    """A two-node Ray cluster (head + one worker node, one CPU each, a custom resource each) with token
    authentication (a token of its own); ended in teardown even when the test fails."""
    pytest.importorskip("ray")
    require("ray", found=Path(sys.executable).with_name("ray").exists())
    base = Path(tempfile.mkdtemp(prefix="hpo-rc-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    port = free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # as docker/ray/cluster.yaml runs it
    env = {**os.environ, **postgres.env(), **auth,  # every node's workers reach the store, password from the environment
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    address = f"127.0.0.1:{port}"
    # each node's id set by the test (Ray's own hook for tests, RAY_OVERRIDE_NODE_ID_FOR_TESTING): what the
    # trials record under ray_node is then compared with ids known beforehand, no driver needed to ask for them
    ids = {name: secrets.token_hex(28) for name in NODES}  # a Ray NodeID is 28 bytes
    nodes: list[RayNode] = []
    try:
        head = RayNode("head", ["--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false",
                                "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
                                "--resources", json.dumps({NODES["head"]: 1})], base / "head",
                       {**env, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": ids["head"]})
        nodes.append(head)
        head.wait_started()
        worker = RayNode("worker", ["--address", address, "--num-cpus", str(WORKER_CPUS),
                                    "--resources", json.dumps({NODES["worker"]: 1})], base / "worker",
                         {**env, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": ids["worker"]})
        nodes.append(worker)
        worker.wait_started()
        yield Cluster(address, auth, ids)
    finally:
        for node in reversed(nodes):
            node.stop()
        _kill_leftovers(str(base))
        shutil.rmtree(base, ignore_errors=True)


def test_a_study_runs_on_a_two_node_ray_cluster_with_postgres(tmp_path, postgres, ray_cluster):
    from hpo.analysis.trained import load_trial_model
    from hpo.store.record import CHECKPOINT, RAY_NODE, WORKER

    node_ids = ray_cluster.node_ids
    storage = postgres.create_database("ray_cluster")
    art = tmp_path / "art"
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.format(storage=storage, art=art))
    r = hpo_cli("run", path, "--backend", "ray", "--address", ray_cluster.address,
                cwd=tmp_path, timeout=300, env={**postgres.env(), **ray_cluster.env})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    # as many trials at once as the whole cluster holds (head 1 CPU + worker's), not the driver's own CPU count
    assert f"{1 + WORKER_CPUS} worker(s)" in r.stdout, r.stdout[-2000:]

    ostudy = optuna.load_study(study_name="ray-cluster", storage=storage)
    trials = ostudy.get_trials()
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials), [(t.number, t.state) for t in trials]
    ran_on = {t.number: t.user_attrs[RAY_NODE] for t in trials}
    assert set(ran_on.values()) == set(node_ids.values()), (ran_on, node_ids)  # both nodes trained trials
    assert all(t.user_attrs[WORKER] for t in trials)  # host:pid, as with the local backend
    for t in trials:  # everything a trial writes reached the shared store from its node
        assert t.user_attrs["curves"]["val_mae"] and sorted(t.intermediate_values) == [1, 2, 3]
        assert t.value == t.user_attrs["metrics"]["val_mae"]
    # checkpoints written by each node are in the artifact folder the driver (and the dashboard) read
    for name, node in node_ids.items():
        number = next(n for n, where in ran_on.items() if where == node)
        trial = trials[number]
        assert (art / trial.user_attrs[CHECKPOINT]).is_file(), name
        _, _, model = load_trial_model(ostudy, number, str(art), str(tmp_path / "runs" / "cache"))
        assert not model.training and sum(p.numel() for p in model.parameters()) > 0
