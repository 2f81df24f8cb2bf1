"""Claiming an output before a command writes to it: nothing another run made is lost or mixed in.

Every CLI that writes a folder (``--out`` of a training, a search, a retraining...) or a file (an export, a
report, a latency table) claims it first, for as long as it runs:

- anything that is neither a folder nor a regular file (a FIFO, a device node such as ``/dev/null``) is
  refused: it would be replaced by a regular file;
- a folder that already holds a run (one of the run's files is there) is refused unless the command resumes
  it (``--resume``, or a search's journal of the same search) or starts over (``--overwrite``, which removes
  the old run's files first); an existing output file is refused unless ``--overwrite``;
- an advisory ``fcntl`` lock, whose file holds the owner's PID, makes a second process on the same output
  refuse in one line naming that PID. The kernel drops the lock when its process ends, however it ends, so a
  lock left by a killed process never blocks; the lock file itself is removed when the claim ends.

Torch-free on purpose: the search core and any tool may use it. Under ``torchrun`` only rank 0 writes, so only
rank 0 claims (see :meth:`supernet.distributed.Group.on_main`).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from supernet.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX (Windows): outputs are checked but not locked
    fcntl = None  # type: ignore[assignment]

FOLDER_LOCK = ".lock"


def lock_path(path: str | os.PathLike, folder: bool) -> Path:
    """The lock file of an output: ``OUT/.lock`` for a folder, ``.NAME.lock`` beside a file."""
    path = Path(path)
    return path / FOLDER_LOCK if folder else path.with_name(f".{path.name}.lock")


def check_regular(path: str | os.PathLike, role: str = "an output") -> None:
    """Refuse ``path`` if it exists and is not a regular file or a folder (symbolic links are followed)."""
    mode = _mode(path, f"cannot use {path} as {role}")
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UserError(f"{path} is a {_special_kind(mode)}, not a regular file or a folder; refusing to use it as "
                        f"{role} (it would be replaced): name another path")


def check_input(path: str | os.PathLike, what: str) -> None:
    """Refuse an input ``path`` that exists but is not a regular file, in one line naming ``what``.

    Reading a FIFO would wait for a writer for ever, and a folder or a device is no file of this tool; a
    missing file is left to the reader, whose message says what to make.
    """
    mode = _mode(path, f"cannot read {what} {path}")
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else f"a {_special_kind(mode)}, not a regular file"
        raise UserError(f"{what} {path} is {kind}; name the file itself")


def _mode(path: str | os.PathLike, failure: str) -> int | None:
    """``path``'s file mode (links followed), None where nothing is there; one line ``failure: reason`` else."""
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise UserError(f"{failure}: {err.strerror}") from None


def _special_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"))


@contextlib.contextmanager
def claim_folder(path: str | os.PathLike, *, what: str, run_files: Sequence[str], resume: bool = False,
                 overwrite: bool = False, resumable: bool = False) -> Iterator[Path]:
    """Hold output folder ``path`` for the ``with`` block: checked, locked, and emptied of ``run_files`` on
    ``overwrite``.

    ``run_files`` are the names the command writes in the folder: any of them there means the folder holds
    ``what`` (e.g. "a training run"), refused unless ``resume`` or ``overwrite``. ``resumable`` says whether the
    command has a ``--resume`` for the refusal to suggest. The lock is taken first, so a second process is told
    who is writing rather than what was written so far. A folder the claim created and that is still empty at
    the end (the command failed on bad input) is removed again.
    """
    path = Path(path)
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: continue the run or start it over")
    check_regular(path, "an output folder")
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a folder; name a folder (it holds several files)")
    with _folder(path), _locked(lock_path(path, folder=True), path):
        for name in run_files:
            check_regular(path / name, "an output file")
        found = [name for name in run_files if (path / name).exists()]
        if found and not (resume or overwrite):
            also = "pass --resume to continue it, --overwrite to start over," if resumable else \
                "pass --overwrite to replace it"
            raise UserError(f"--out {path} already holds {what} ({', '.join(found)}); {also} or use another --out")
        if overwrite:
            _remove(path, found)
        yield path


@contextlib.contextmanager
def claim_file(path: str | os.PathLike, *, what: str, overwrite: bool = False,
               may_replace: bool = False) -> Iterator[Path]:
    """Hold output file ``path`` for the ``with`` block: checked and locked; an existing file is refused unless
    ``overwrite`` or ``may_replace`` (the caller knows it is its own, e.g. a report of the same results)."""
    path = Path(path)
    check_regular(path, f"the {what} file")
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; name the {what} file to write")
    with _folder(path.parent), _locked(lock_path(path, folder=False), path):
        if path.exists() and not (overwrite or may_replace):
            raise UserError(f"{path} already exists; pass --overwrite to replace it with a new {what}, or name "
                            "another --out")
        yield path


@contextlib.contextmanager
def _folder(path: Path) -> Iterator[None]:
    """Make sure folder ``path`` exists for the ``with`` block; remove it after if it was made here and is empty."""
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create folder {path}: {err.strerror}") from None
    try:
        yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if still empty: nothing was written


@contextlib.contextmanager
def _locked(lock: Path, output: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock`` (created, with this PID inside) for the ``with`` block.

    The file is unlinked before it is closed at the end. A process that opened it just before then may lock
    the unlinked file: so after locking, the file must still be the one at ``lock``, else the lock is retried.
    """
    if fcntl is None:
        yield
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot create the lock file {lock} of {output}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {lock}: {err.strerror}") from None
            raise UserError(f"{output} is in use by another process ({_holder(lock)} holds {lock}); wait for it "
                            "to end, or use another --out") from None
        if _same_file(fd, lock):
            break
        os.close(fd)  # the holder removed it between our open and our lock: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _holder(lock: Path) -> str:
    """``PID N`` as the lock file says, or a plain description if it cannot be read yet."""
    try:
        pid = lock.read_text().strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "a process"


def _remove(folder: Path, names: Sequence[str]) -> None:
    """Remove the old run's files ``names`` from ``folder`` (``--overwrite``)."""
    for name in names:
        try:
            (folder / name).unlink(missing_ok=True)
        except OSError as err:
            raise UserError(f"--overwrite cannot remove {folder / name}: {err.strerror}") from None


def run_folder(base: str | os.PathLike, label: str, seed: int, settings: Mapping[str, Any],
               defaults: Mapping[str, Any]) -> str:
    """The default ``--out`` of a run: ``BASE/LABEL-seedN``, then ``-HASH`` if other settings differ from
    their defaults.

    ``label`` names what usually tells two runs apart (a search's space and budgets); the hash (6 hex digits)
    covers every other entry of ``settings`` that differs from ``defaults``. So the obvious second command, with
    another budget, seed or setting, gets a folder of its own, and the same command again resumes its own.
    An ``--out`` given explicitly is claimed as it is (:func:`claim_folder`): another run's folder is refused.
    """
    changed = {key: value for key, value in settings.items() if value != defaults.get(key)}
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return str(Path(base) / f"{label}-seed{seed}{'-' + digest if changed else ''}")


def budget_label(budgets: Sequence[tuple[str, float]]) -> str:
    """``[("cpu", 10.0)]`` -> ``"cpu-10ms"``; several budgets joined; more than four as first, last and count."""
    names = [f"{device.replace(':', '')}-{ms:g}ms" for device, ms in budgets]
    return "_".join(names) if len(names) <= 4 else f"{names[0]}-to-{names[-1]}-{len(names)}budgets"
