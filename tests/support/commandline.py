"""The command line's `main()` (what `python -m lbsync` runs) in fresh processes forked from one
that imported lbsync once.

Here a command's own work takes milliseconds and Python's start-up with lbsync's imports about
a second of CPU, which a matrix of fifty commands on two shared cores cannot afford. Each run
is still a process of its own: its own environment, working directory, standard output and
error (files), exit status, and Python's traceback on stderr for an exception that escapes
`main()`, exactly as the interpreter would print it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["lbsync.cli.main"])


@dataclass(frozen=True)
class Finished:
    """A command's exit status (None: it did not end in time, or died without one) and
    output."""

    status: int | None
    stdout: str
    stderr: str


def _child(argv: list[str], environ: dict[str, str], cwd: str, output: str) -> None:
    """In the forked process: the environment, directory and output files, then `main()`.
    The exit status goes to a file (the forkserver's own report of it can come back as 255
    when a child ends very quickly); an exception escaping `main()` is printed as the
    interpreter prints it."""
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(f"{output}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    from lbsync.cli.main import main

    status = 1
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse's exit
        status = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        Path(f"{output}.status").write_text(str(status))
    os._exit(status)


def _start(argv: list[str], environ: dict[str, str], cwd: Path, output: Path) -> BaseProcess:
    process = _CONTEXT.Process(target=_child, args=(argv, environ, str(cwd), str(output)))
    process.start()
    return process


def _finished(output: Path) -> Finished:
    """What a run left in its status and output files."""
    status, stdout, stderr = (Path(f"{output}.{name}") for name in ("status", "stdout", "stderr"))
    return Finished(
        status=int(status.read_text()) if status.exists() else None,
        stdout=stdout.read_text(errors="replace"),
        stderr=stderr.read_text(errors="replace"),
    )


async def run_main(
    argv: list[str], *, environ: dict[str, str], cwd: Path, timeout: float
) -> Finished:
    """Run `lbsync ARGV` as described above; kill it after `timeout` seconds. Its output files
    are `CWD/.lbsync-run.*`."""
    output = cwd / ".lbsync-run"
    process = _start(argv, environ, cwd, output)
    await asyncio.to_thread(process.join, timeout)
    if process.exitcode is None:
        process.kill()
        await asyncio.to_thread(process.join, 10)
    return _finished(output)


def run_main_blocking(
    argv: list[str], *, environ: dict[str, str], cwd: Path, timeout: float
) -> Finished:
    """`run_main` for a caller without an event loop, its output files in a directory of their
    own (removed afterwards): CWD is left as it was."""
    with tempfile.TemporaryDirectory(prefix="lbsync-run-") as directory:
        output = Path(directory) / "run"
        process = _start(argv, environ, cwd, output)
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join(10)
        return _finished(output)


async def run_main_elsewhere(
    argv: list[str], *, environ: dict[str, str], cwd: Path, timeout: float
) -> Finished:
    """`run_main_blocking` without blocking the event loop (a daemon under test runs in it)."""
    return await asyncio.to_thread(
        run_main_blocking, argv, environ=environ, cwd=cwd, timeout=timeout
    )
