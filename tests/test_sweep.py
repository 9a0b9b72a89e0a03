"""`advdenoise-sweep` on loopback only: a bare git repository as origin, a local-directory DVC remote,
a `dask scheduler` on 127.0.0.1 and two `dask worker` processes, started and stopped here.

The project is the tiny config of test_pipeline; its baseline is run and pushed once, so a point
that changes a late stage's params recomputes that stage alone (`dvc exp run --pull`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client
from test_pipeline import copy_project, run

from advdenoise.sweeps import sweep

DASK = str(Path(sys.executable).parent / "dask")


def git_repo(path: Path, origin: Path) -> Path:
    """A one-commit repository pushed to the bare `origin`."""
    path.mkdir()
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], path)
    for args in (
        ["init", "-q"],
        ["config", "user.email", "t@localhost"],
        ["config", "user.name", "t"],
    ):
        run(["git", *args], path)
    (path / "a.txt").write_text("a\n")
    run(["git", "add", "a.txt"], path)
    run(["git", "commit", "-qm", "a"], path)
    run(["git", "remote", "add", "origin", str(origin)], path)
    run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], path)
    return path


def test_a_dirty_tree_is_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = git_repo(tmp_path / "repo", tmp_path / "origin.git")
    monkeypatch.chdir(repo)
    (repo / "a.txt").write_text("changed\n")
    assert sweep.main(["-S", "seed=0", "--local", "1"]) == 2
    assert "uncommitted changes (M a.txt)" in capsys.readouterr().err


def test_an_unpushed_commit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = git_repo(tmp_path / "repo", tmp_path / "origin.git")
    monkeypatch.chdir(repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "local only"], repo)
    assert sweep.main(["-S", "seed=0", "--local", "1"]) == 2
    assert "is not on git remote origin" in capsys.readouterr().err
    assert sweep.main(["-S", "seed=0", "--local", "1", "--git-remote", "nowhere"]) == 2
    assert "--git-remote nowhere" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_reported_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = git_repo(tmp_path / "repo", tmp_path / "origin.git")
    monkeypatch.chdir(repo)
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    code = sweep.main(["-S", "seed=0", "--scheduler", address, "--timeout", "2"])
    assert code == 2
    assert time.monotonic() - start < 20
    assert f"--scheduler {address}: not reachable within 2 s" in capsys.readouterr().err


class Cluster:
    """A scheduler and workers on 127.0.0.1, each its own process group (killed as a host dies)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "scheduler.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(self.file)], "scheduler")  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.address = json.loads(self.file.read_text())["address"]

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str) -> None:
        self.workers[name] = self._start([DASK, "worker", "--scheduler-file", str(self.file), "--host", "127.0.0.1",
                     "--nthreads", "1", "--memory-limit", "0", "--no-dashboard", "--name", name,
                     "--local-directory", str(self.root / name)], name)  # fmt: skip

    def kill(self, worker: str) -> None:
        """SIGKILL to the worker, its nanny and whatever they run, as when its host dies."""
        os.killpg(self.workers[worker].pid, signal.SIGKILL)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Cluster]]:
    """The tiny project, run and pushed (git to a bare origin, outputs to a local DVC remote),
    and a loopback cluster of two single-thread workers."""
    root = tmp_path_factory.mktemp("sweep")
    repo = copy_project(root / "proj")
    run(["dvc", "remote", "add", "-d", "store", str(root / "store")], repo)
    run(["dvc", "repro", "--quiet"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline run"], repo)
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(root / "origin.git")], repo)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], repo)
    run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], repo)
    cluster = Cluster(root)
    try:
        for name in ("w1", "w2"):
            cluster.add_worker(name)
        with Client(cluster.address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield repo, cluster
    finally:
        cluster.stop()


def sweep_cli(repo: Path, cluster: Cluster | None, *args: str) -> list[str]:
    """The driver on the loopback cluster, or with `cluster=None` on `--local 2` workers."""
    where = ["--scheduler", cluster.address] if cluster else ["--local", "2"]
    return ["advdenoise-sweep", *where, "--logs", str(repo.parent / "logs"), *args]


def rows(stdout: str) -> dict[str, list[str]]:
    """The driver's table: experiment name -> cells."""
    table = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("|")]
    return {cells[1].strip(): [c.strip() for c in cells] for cells in table[2:]}


@pytest.mark.slow
def test_a_seed_sweep_lands_in_a_fresh_clone(project: tuple[Path, Cluster], tmp_path: Path) -> None:
    repo, cluster = project
    proc = run(sweep_cli(repo, cluster, "-S", "seed=0,1"), repo)
    table = rows(proc.stdout)
    assert {n: r[2] for n, r in table.items()} == {"sweep_seed=0": "ran", "sweep_seed=1": "ran"}
    # another machine sees both through git and the DVC remote
    fresh = tmp_path / "fresh"
    run(["git", "clone", "-q", str(repo.parent / "origin.git"), str(fresh)], tmp_path)
    run(["dvc", "exp", "pull", "origin", "sweep_seed=0", "sweep_seed=1"], fresh)
    show = json.loads(run(["dvc", "exp", "show", "--json"], fresh).stdout)
    metrics = {
        entry["name"]: entry["data"]["metrics"]["metrics/train_cnn.json"]["data"]
        for commit in show
        for exp in commit.get("experiments") or []
        for entry in exp["revs"]
    }
    assert set(metrics) == {"sweep_seed=0", "sweep_seed=1"}
    assert metrics["sweep_seed=0"] != metrics["sweep_seed=1"]
    for name, row in table.items():  # the driver's table shows the pulled metrics
        assert float(row[5]) == pytest.approx(metrics[name]["test.accuracy"], abs=1e-4)
    # the outputs came with them: applied, the experiment is up to date without recomputing
    run(["dvc", "exp", "apply", "sweep_seed=1"], fresh)
    status = run(["dvc", "status", "--json"], fresh)
    assert json.loads(status.stdout) == {}
    # the same sweep again runs nothing
    again = rows(run(sweep_cli(repo, cluster, "-S", "seed=0,1"), repo).stdout)
    assert {r[2] for r in again.values()} == {"pushed before"}
    assert again["sweep_seed=1"][5:] == table["sweep_seed=1"][5:]


@pytest.mark.slow
def test_an_invalid_point_fails_alone(project: tuple[Path, Cluster]) -> None:
    repo, _ = project
    args = sweep_cli(repo, None, "--name", "perp", "-S", "embed.tsne_perplexity=4.0,1.0")
    proc = run(args, repo, check=False)
    assert proc.returncode == 1
    table = rows(proc.stdout)
    valid, invalid = "perp_embed.tsne_perplexity=4.0", "perp_embed.tsne_perplexity=1.0"
    assert table[valid][2] == "ran" and table[invalid][2] == "failed"
    assert (
        "embed.tsne_perplexity" in proc.stderr and f"1 of 2 points failed: {invalid}" in proc.stderr
    )
    refs = run(["git", "ls-remote", "origin", "refs/exps/*"], repo).stdout
    assert valid in refs and invalid not in refs
    # only the changed stage and those after it ran: the rest came from the DVC remote
    log = (repo.parent / "logs" / f"{valid}.log").read_text()
    assert "Running stage 'embed'" in log and "Running stage 'train_cnn'" not in log


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_replaced(project: tuple[Path, Cluster]) -> None:
    repo, cluster = project
    args = sweep_cli(repo, cluster, "--name", "kill", "-S", "embed.tsne_perplexity=3.0")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    driver = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    with Client(cluster.address, timeout=30) as client:
        deadline = time.monotonic() + 120
        busy: list[str] = []
        while not busy and time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys]
            time.sleep(0.2)
        assert busy, "the point never started"
        time.sleep(3)  # cloning or inside dvc exp run
        cluster.kill(client.scheduler_info()["workers"][busy[0]]["name"])
    stdout, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr
    # "ran", not "pushed before": the killed attempt had not finished, another worker ran it all
    assert rows(stdout)["kill_embed.tsne_perplexity=3.0"][2] == "ran"
