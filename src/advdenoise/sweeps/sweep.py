"""Fan a grid of DVC experiments out on a Dask cluster; share them through git and a DVC remote.

    advdenoise-sweep -S 'seed=0,1,2' -S 'data.split=random,grouped' --local 2
    advdenoise-sweep -S 'seed=0,1,2' --scheduler tcp://HOST:8786

DVC's own queue runs on one machine; across machines DVC shares experiments through a git remote
(`dvc exp push`/`pull`) and a DVC remote. The driver checks that the commit to sweep is clean and on
the git remote, `dvc push`es its cache, expands the grid (the cross product of the comma lists, as
`dvc exp run --queue -S` does) and submits one Dask task per point (`advdenoise.sweeps.worker`).
Each worker clones the commit, runs `dvc exp run -n NAME -S ... --pull` and `dvc exp push`es the
experiment. The driver then `dvc exp pull`s them and prints one row per point. A point already on
the git remote under its name is not run again, so a sweep that stopped is resumed by running the
same command. Exit 0 only if every point succeeded; a failed point never stops the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from advdenoise.core.errors import PipelineError, entrypoint
from advdenoise.sweeps.grid import Point, expand, point_names
from advdenoise.sweeps.seeds import finished_runs
from advdenoise.sweeps.worker import PointResult, command, run_point

# (metrics file stem, key) shown per point
COLUMNS = (
    ("train_cnn", "test.accuracy"),
    ("robustness", "none.robust_accuracy"),
    ("robustness", "ae_guided.robust_accuracy"),
)


def _git(args: list[str], what: str) -> str:
    proc = command(["git", *args])
    if proc.returncode != 0:
        raise PipelineError(f"{what}: git {' '.join(args)} failed: {proc.stdout.strip()}")
    return proc.stdout.strip()


def commit_to_sweep(rev: str, remote: str) -> tuple[str, str]:
    """The commit `rev` resolves to and the URL of git remote `remote`, after checking that the
    working tree is clean and the commit is on the remote (workers clone it from there)."""
    dirty = _git(["status", "--porcelain"], "checking the working tree").splitlines()
    if dirty:
        shown = "; ".join(line.strip() for line in dirty[:8]) + ("; ..." if len(dirty) > 8 else "")
        raise PipelineError(
            f"the working tree has uncommitted changes ({shown}): workers run commits, not this "
            "tree; commit or stash them"
        )
    sha = _git(["rev-parse", "--verify", f"{rev}^{{commit}}"], f"--rev {rev}")
    url = _git(["remote", "get-url", remote], f"--git-remote {remote}")
    if not (":" in url or url.startswith("/")):  # a path relative to this repository
        url = str(Path(_git(["rev-parse", "--show-toplevel"], "finding the repository"), url))
    _git(["fetch", "--quiet", remote], f"fetching {remote}")
    holders = _git(["branch", "-r", "--contains", sha, "--list", f"{remote}/*"], "checking")
    if not holders:
        raise PipelineError(
            f"--rev {rev} ({sha[:7]}) is not on git remote {remote}: workers clone from it; "
            f"run git push {remote} first"
        )
    return sha, url


def push_cache() -> None:
    """`dvc push --run-cache`: the commit's outputs and stage runs, so that `--pull` workers
    reuse them instead of recomputing."""
    default = command(["dvc", "remote", "default"])
    if default.returncode != 0 or not default.stdout.strip():
        raise PipelineError(
            "no default DVC remote: workers push outputs there; add one with "
            "dvc remote add -d NAME URL (and commit .dvc/config)"
        )
    proc = command(["dvc", "push", "--run-cache", "--quiet"])
    if proc.returncode != 0:
        raise PipelineError(f"dvc push --run-cache failed: {proc.stdout.strip()}")


@contextmanager
def cluster(scheduler: str | None, local: int | None, timeout: float) -> Iterator[Any]:
    """A Dask client: on `scheduler`, or on `local` single-thread worker processes here."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise PipelineError("advdenoise-sweep needs Dask: pip install -e '.[sweep]'") from None

    if local is not None:
        with (
            LocalCluster(
                n_workers=local, threads_per_worker=1, dashboard_address=None, memory_limit=0
            ) as lc,
            Client(lc) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout=timeout)
    except OSError as exc:
        raise PipelineError(
            f"--scheduler {scheduler}: not reachable within {timeout:g} s ({exc})"
        ) from None
    with client:
        yield client


def run_grid(
    client: Any, url: str, rev: str, names: Sequence[str], points: Sequence[Point], retries: int
) -> list[PointResult]:
    """One task per point; a task that raises (or whose worker dies) is retried, and a point that
    still fails is reported as failed without stopping the others."""
    from distributed import as_completed

    futures = {
        client.submit(
            run_point, url, rev, n, p, key=f"sweep-{rev[:12]}-{n}", pure=False, retries=retries
        ): (n, p)
        for n, p in zip(names, points, strict=True)
    }
    results = {}
    for future in as_completed(futures):
        name, point = futures[future]
        try:
            results[name] = future.result()
        except Exception as exc:  # the task's own error, or Dask's (a worker lost too often)
            results[name] = PointResult(
                name, point, "failed", "", 0.0, f"{type(exc).__name__}: {exc}"
            )
    return [results[n] for n in names]


def pull(remote: str, rev: str, names: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """`dvc exp pull` the experiments (git refs and metrics; outputs stay on the DVC remote until
    `dvc exp apply NAME && dvc pull`), then their metrics from `dvc exp show --json`."""
    if not names:
        return {}
    proc = command(["dvc", "exp", "pull", "--no-cache", remote, *names])
    if proc.returncode != 0:
        raise PipelineError(f"dvc exp pull {remote} failed: {proc.stdout.strip()}")
    show = command(["dvc", "exp", "show", "--json", "--rev", rev])
    if show.returncode != 0:
        raise PipelineError(f"dvc exp show failed: {show.stdout.strip()}")
    runs = finished_runs(json.loads(show.stdout))
    return {run.name: run.metrics for run in runs if run.name in names}


def table(results: Sequence[PointResult], metrics: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One Markdown row per point: its params, experiment name, status, host, seconds, metrics."""
    head = ["point", "experiment", "status", "host", "seconds"] + [f"{s}:{k}" for s, k in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = metrics.get(r.name, {})
        values = [m.get(s, {}).get(k) for s, k in COLUMNS]
        cells = [" ".join(f"{k}={v}" for k, v in r.point.items()), r.name, r.status, r.host,
                 f"{r.seconds:.0f}"] + ["" if v is None else f"{v:.4f}" for v in values]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-S", "--set-param", dest="sets", action="append", default=[],
                   metavar="KEY=V1,V2", help="one axis of the grid (repeatable)")  # fmt: skip
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--scheduler", help="address of a running Dask scheduler, tcp://HOST:PORT")
    where.add_argument("--local", type=int, metavar="N", help="N single-thread workers here")
    p.add_argument("--git-remote", default="origin", help="where workers clone and push")
    p.add_argument("--rev", default="HEAD", help="the commit to sweep")
    p.add_argument("--name", default="sweep", help="experiment name prefix")
    p.add_argument("--retries", type=int, default=1, help="extra tries of a task that raises")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to reach the scheduler")
    p.add_argument("--logs", type=Path, help="write each point's log to DIR/<experiment>.log")
    args = p.parse_args(argv)
    if args.local is not None and args.local < 1:
        raise PipelineError(f"--local {args.local}: need at least one worker")
    points = expand(args.sets)
    names = point_names(args.name, points)
    rev, url = commit_to_sweep(args.rev, args.git_remote)
    with cluster(args.scheduler, args.local, args.timeout) as client:
        push_cache()
        results = run_grid(client, url, rev, names, points, args.retries)
    metrics = pull(args.git_remote, rev, [r.name for r in results if r.ok])
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
        for r in results:
            (args.logs / f"{r.name}.log").write_text(r.log, encoding="utf-8")
    for r in results:
        if not r.ok:
            tail = "\n".join(r.log.splitlines()[-30:])
            print(f"--- {r.name} failed; the end of its log:\n{tail}\n", file=sys.stderr)
    print(table(results, metrics), end="")
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(results)} points failed: {', '.join(failed)}")
