"""One sweep point on whichever host runs it: clone, `dvc exp run --pull`, `dvc exp push`, clean up.

The only things shared between the driver and its workers are the git remote and the DVC remote:
a worker needs git access to the one, the other's credentials, and this package's environment.
The clone's own `src/` is put first on PYTHONPATH, so a worker runs the swept commit's code, not
the code it happens to have installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from advdenoise.sweeps.grid import Point

EXPS_REFS = "refs/exps"  # DVC's namespace: refs/exps/<baseline[:2]>/<baseline[2:]>/<name>


@dataclass(frozen=True)
class PointResult:
    name: str
    point: Point
    status: str  # "ran", "pushed before" or "failed"
    host: str
    seconds: float
    log: str  # the commands' output, for the driver to show or keep

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def exp_ref(rev: str, name: str) -> str:
    return f"{EXPS_REFS}/{rev[:2]}/{rev[2:]}/{name}"


def _env(repo: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    if repo is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(repo / "src"), env.get("PYTHONPATH", "")) if p
        )
    return env


def command(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run git or dvc (as this interpreter's module, whatever PATH says); output merged, no raise."""
    if args[0] == "dvc":
        args = [sys.executable, "-m", "dvc", *args[1:]]
    return subprocess.run(
        args,
        cwd=cwd,
        env=_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


def pushed(url: str, rev: str, name: str) -> bool:
    """Whether the git remote already holds experiment `name` of baseline `rev`."""
    proc = command(["git", "ls-remote", url, exp_ref(rev, name)])
    return proc.returncode == 0 and bool(proc.stdout.strip())


def run_point(
    url: str, rev: str, name: str, point: Point, workdir: str | None = None
) -> PointResult:
    """Run one point as DVC experiment `name` on top of commit `rev` of the git remote `url` and
    push it there, after its outputs and run-cache went to the clone's default DVC remote. A
    point already pushed under its name is not run again."""
    start = time.monotonic()
    host = socket.gethostname()

    def result(status: str, log: str) -> PointResult:
        return PointResult(name, dict(point), status, host, time.monotonic() - start, log)

    if pushed(url, rev, name):
        return result("pushed before", f"{exp_ref(rev, name)} is on {url}: not run again\n")
    tmp = Path(tempfile.mkdtemp(prefix=f"advdenoise-sweep-{name[:40]}-", dir=workdir))
    repo = tmp / "repo"
    log = ""
    try:
        steps = [
            (["git", "clone", "--quiet", "--no-checkout", url, str(repo)], tmp),
            (["git", "checkout", "--quiet", "--detach", rev], repo),
            (["git", "config", "user.name", "advdenoise-sweep"], repo),
            (["git", "config", "user.email", "advdenoise-sweep@localhost"], repo),
            (
                ["dvc", "exp", "run", "--pull", "-n", name]
                + [a for k, v in point.items() for a in ("-S", f"{k}={v}")],
                repo,
            ),
            # outputs and run-cache first, refs last: a pushed ref means complete outputs
            (["dvc", "push", "--run-cache"], repo),
            (["dvc", "exp", "push", "--no-cache", "origin", name], repo),
        ]
        for args, cwd in steps:
            proc = command(args, cwd)
            log += f"$ {' '.join(args)}\n{proc.stdout}"
            if proc.returncode != 0:
                return result("failed", log + f"(exit {proc.returncode})\n")
        return result("ran", log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
