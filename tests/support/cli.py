"""How do the tests run ``cxrbench``? One way for all of them: the ``cli`` fixture (tests/conftest.py) hands out
a ``CLI``, which runs the command in this process or as a child process and returns what it did."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class CLIResult:
    """What one ``cxrbench`` command did: its exit code and what it printed."""

    code: int
    out: str
    err: str


class CLI:
    """``cxrbench ARGS`` the ways the tests run it: ``cli(*ARGS)`` in this process (``benchmark.cli.main``,
    as the console script calls it), ``cli.run(*ARGS)`` as a child process of this Python, and
    ``cli.argv(*ARGS)`` the command line of that child process (for tests that start it themselves: Popen).
    Arguments may be paths or numbers; they are passed as strings."""

    def __init__(self, capsys):
        self._capsys = capsys

    def __call__(self, *args) -> CLIResult:
        """Run the command in this process; what was printed before the call is not part of its output. An
        argument error of argparse leaves as ``SystemExit``, as it does from ``main``."""
        from benchmark.cli import main

        self._capsys.readouterr()
        code = main([str(a) for a in args])
        captured = self._capsys.readouterr()
        return CLIResult(code, captured.out, captured.err)

    @staticmethod
    def argv(*args) -> list[str]:
        return [sys.executable, "-m", "benchmark.cli", *(str(a) for a in args)]

    def run(self, *args, **kwargs) -> CLIResult:
        """Run the command as a child process (``subprocess.run`` keyword arguments: env, timeout, cwd)."""
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, **kwargs)
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)
