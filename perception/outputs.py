"""Outputs that are atomic and protected: what every CLI writes goes through here.

- ``atomic_file(path)``: write to a temporary name in the same folder, then ``os.replace`` (a reader sees the old
  file or the new one, never a half-written one; a killed writer leaves the old file intact).
- ``output_lock(out)``: a lock file beside ``out`` (``.<name>.lock``, holding the writer's pid). A second writer
  into the same ``out`` is refused while the first is alive; a lock left by a dead process is taken over.
- ``folder_output(out, overwrite)``: the lock, then a refusal of an ``out`` that already holds files (another run's
  results) unless ``overwrite``, then a fresh staging folder beside ``out`` that replaces ``out`` only when the run
  succeeds (rename the old folder aside, rename the new one in, delete the old). A multi-file output (an export's
  model.onnx + model.json, an evaluation's metrics + report) is therefore never a mix of two runs.
- ``confined(root, relative)``: a path built from untrusted names (sensor channels, table filenames) that must
  stay under ``root``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class OutputError(ValueError):
    """An output path cannot be used: a file where a folder is needed (or the reverse), a folder in use by another
    run, or one holding another run's results without --overwrite. The message says which and what to do."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def lock_path(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _check_parent(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot write {path}: {parent} is a file, not a folder; choose another output path")
            return


@contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold ``.<name>.lock`` beside ``out`` for the duration of the block (created with O_EXCL; removed on exit,
    also on errors). Raises OutputError when a live process holds it."""
    out = Path(out)
    _check_parent(out)
    lock = lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            if _pid_alive(pid) and pid != os.getpid():
                raise OutputError(f"{out} is in use by another run (process {pid}, lock file {lock}); wait for it to "
                                  f"finish or choose another --out (remove {lock} only if no such process is "
                                  "writing there)") from None
            if pid == os.getpid():
                raise OutputError(f"{out} is already being written by this process (lock file {lock})") from None
            lock.unlink(missing_ok=True)  # left by a process that no longer exists
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:
        raise OutputError(f"cannot take the lock {lock} for {out}; remove it if no run is writing there")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def check_file_target(path: str | Path) -> Path:
    """An output that must be a file: refuse a folder at ``path`` and a file where a parent folder must be."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name (e.g. {path / ('out' + (path.suffix or '.out'))})")
    _check_parent(path)
    return path


def check_folder_target(out: str | Path) -> Path:
    """An output that must be a folder: refuse a file at ``out`` or above it."""
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder; choose a folder path")
    cwd = Path(os.getcwd())
    if out == cwd or out in cwd.parents:
        raise OutputError(f"--out {out} is the current folder or above it; give a folder of its own (it is "
                          "replaced as a whole)")
    _check_parent(out)
    return out


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder with the same suffix (writers that pick the format from the
    suffix, np.save, savefig, keep working); on success it replaces ``path``, on an error it is deleted."""
    path = check_file_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 would otherwise become the output's mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def _leftovers(out: Path, kind: str) -> list[Path]:
    prefix = f".{out.name}.{kind}-"  # not a glob: a name may hold [ ] * ?
    return sorted(out.parent / n for n in os.listdir(out.parent) if n.startswith(prefix)) if out.parent.is_dir() else []


def _recover(out: Path) -> None:
    """Under the lock: finish what a killed run left. A staging folder is deleted (that run did not succeed); an
    old folder set aside just before the new one was renamed in is put back when ``out`` is missing."""
    for tmp in _leftovers(out, "tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    for old in _leftovers(out, "old"):
        if not out.exists():
            os.rename(old, out)
        else:
            shutil.rmtree(old, ignore_errors=True)


def publish_folder(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` (same parent): old aside, new in, old deleted. A kill between the two renames
    leaves the old folder as ``.<name>.old-<pid>``, which the next ``folder_output`` puts back."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def existing_results(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.is_dir() else []


@contextmanager
def folder_output(out: str | Path, overwrite: bool = False, what: str = "results") -> Iterator[Path]:
    """Claim the folder ``out`` for one run and yield the staging folder to write into; publish it on success.

    Refuses (OutputError): a file at ``out``; ``out`` locked by a live run; ``out`` holding files without
    ``overwrite`` (checked before any work). On an error or a kill the old ``out`` stays as it was."""
    out = check_folder_target(out)
    with output_lock(out):
        _recover(out)
        held = existing_results(out)
        if held and not overwrite:
            shown = ", ".join(held[:4]) + (" ..." if len(held) > 4 else "")
            raise OutputError(f"--out {out} already holds {what} ({shown}); pass --overwrite to replace them or "
                              "choose another --out")
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would otherwise become the output folder's mode
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        publish_folder(staging, out)


def confined(root: str | Path, relative: str | Path) -> Path:
    """``root / relative``, refused (OutputError) when ``relative`` is absolute or climbs out of ``root``
    (``..``, or a symlink inside ``root`` pointing elsewhere)."""
    root_p = Path(root)
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise OutputError(f"path '{relative}' is not inside {root}: names that build paths must be relative and "
                          "must not contain '..'")
    path = root_p / rel
    real_root = os.path.realpath(root_p)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise OutputError(f"path '{relative}' resolves to {real}, outside {root}; check for symbolic links")
    return path
