"""bench/peers.py end to end on a small run: lbsync's column is measured against a real etcd
and HAProxy, and a peer whose binary is missing is skipped with the reason in the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT = 180


def columns(output: str) -> dict[str, dict[str, str]]:
    """The printed table as {column: {figure: value}}."""
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    ]
    header, body = rows[0], rows[1:]
    return {name: {row[0]: row[n] for row in body} for n, name in enumerate(header) if n}


def test_the_peers_bench_measures_lbsync_and_says_which_peers_it_skipped(tmp_path: Path) -> None:
    missing = tmp_path / "fabio"
    argv = [sys.executable, str(ROOT / "bench" / "peers.py"), "--fabio", str(missing)]
    argv += ["--only", "lbsync etcd, min_wait 0ms", "--only", "confd", "--only", "fabio"]
    argv += ["--writes", "3", "--joins", "1"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=BENCH_TIMEOUT, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = columns(done.stdout)
    assert list(table) == ["confd (etcd)", "Fabio (is the proxy)", "lbsync etcd, min_wait 0ms"]
    lbsync = table["lbsync etcd, min_wait 0ms"]
    figures = {name: value for name, value in lbsync.items() if "ms" in name}
    assert figures, lbsync
    assert all(float(value) >= 0 for value in figures.values()), lbsync
    assert lbsync["reloads during those writes"] == "0"  # weights go through the runtime API
    assert set(table["confd (etcd)"].values()) == {"-"}
    assert "confd (etcd): skipped: no binary given" in done.stdout
    assert f"Fabio (is the proxy): skipped: {missing} is not an executable file" in done.stdout
    assert "etcd put round trip, 20 back to back, nothing watching: median" in done.stdout
