"""What makes a run trustworthy: the code version it ran, its config hash, and one writer per answer file.

`code_version()` is `git:<commit>` (plus `+dirty:<hash>` of the uncommitted changes to the package sources) in a
git checkout, else `pkg:<version>+src:<hash of the package sources>`. `AnswerLock` holds an exclusive `flock` on
`<answers>.lock` while a driver writes; the kernel drops it when the process dies, so a crashed run never leaves
the file locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("llava", "visiondrop")  # the code that produces answers (configs are hashed on their own)


class RunLockedError(RuntimeError):
    """Another live process is writing the same answer file."""


def _git(root: Path, *args: str) -> str | None:
    """Output of a git command in root (None when git or the repository is not there)."""
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def _source_hash(root: Path, files: list[str]) -> str:
    """Short sha256 over (path, content) of the given files under root."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        path = root / rel
        if path.is_file():
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@cache
def code_version(root: Path = REPO_ROOT) -> str:
    """Version of the answer-producing code: git commit (+ hash of uncommitted source changes), else package."""
    top, commit = _git(root, "rev-parse", "--show-toplevel"), _git(root, "rev-parse", "HEAD")
    if top and commit and Path(top.strip()).resolve() == root.resolve():
        diff = _git(root, "diff", "HEAD", "--", *SOURCE_DIRS) or ""
        untracked = (_git(root, "ls-files", "--others", "--exclude-standard", "--", *SOURCE_DIRS) or "").split()
        version = f"git:{commit.strip()[:12]}"
        if diff or untracked:
            dirty = hashlib.sha256(diff.encode() + _source_hash(root, untracked).encode()).hexdigest()[:12]
            version += f"+dirty:{dirty}"
        return version
    try:
        pkg = metadata.version("visiondrop-llava")
    except metadata.PackageNotFoundError:
        pkg = "unknown"
    files = [str(p.relative_to(root)) for d in SOURCE_DIRS for p in (root / d).rglob("*.py")]
    return f"pkg:{pkg}+src:{_source_hash(root, files)}"


def config_hash(pruning: dict[str, Any]) -> str:
    """Short sha256 of a pruning config (its full validated dict, keys sorted)."""
    return hashlib.sha256(json.dumps(pruning, sort_keys=True).encode()).hexdigest()[:12]


class AnswerLock:
    """Exclusive lock of one answer file for the life of a `with` block; refused at once when already held."""

    def __init__(self, answers_file: str | Path):
        self.answers = Path(answers_file)
        self.path = self.answers.with_name(self.answers.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> AnswerLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(f"answer file {self.answers} is being written by another run (pid {holder}); "
                                     "wait for it to finish or stop it, then rerun to resume") from None
            # The holder before us may have removed the file after we opened it: lock the file that is there.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Within the block SIGTERM raises SystemExit, so that `finally` blocks (run record, lock) run when a script
    stops its children; the previous handler is restored afterwards."""
    def _stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
