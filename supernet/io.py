"""Atomic file writes: a result, checkpoint, table or export is either the old file or the new one, never half.

Everything is written to a temporary file in the destination's folder, flushed to disk, then renamed over the
destination. A failed write (full disk, no permission) removes the temporary file, leaves the previous file
untouched and says so in a one-line :class:`UserError`. Only a regular file is ever replaced. A process killed
mid-write leaves its temporary file behind; the next successful write of the same destination removes it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

from supernet.errors import UserError
from supernet.outdir import check_input, check_regular


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` only if it succeeded.

    A failed write is an :class:`OSError` (full disk, file too large, no permission), or another exception
    raised because of one: libraries that write through Python file objects re-raise the ``OSError`` as, say,
    a ``RuntimeError`` with the ``OSError`` as its cause or context. Both become a one-line :class:`UserError`
    naming ``path``. Any other exception propagates unchanged, because a ``RuntimeError`` with no ``OSError``
    behind it is a bug or a failed check (an export that disagrees with the eager model), and calling it a
    full disk would hide it. Either way the temporary file is removed and the previous file is untouched.
    Writers whose own I/O errors do not carry the ``OSError`` (torch's C++ file writer) should not write
    the file themselves: see :func:`atomic_serialize`. A ``path`` that is a FIFO, socket or device (say
    ``/dev/null``) is refused before anything is written: the rename would replace it with a regular file.
    """
    path = Path(path)
    check_regular(path, "a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create folder {path.parent}: {err.strerror}") from None
    # The pid in the name tells a dead writer's leftover from a live writer's file (_remove_stale_temporaries).
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{_stem(path.name)}.{os.getpid()}.", suffix=".tmp",
                                        dir=path.parent)
    except OSError as err:  # a read-only folder, no inode left
        raise _write_failed(path, err) from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the final file the usual permissions
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = _os_error(err)
        if cause is None or isinstance(err, UserError):
            raise
        raise _write_failed(path, cause) from None
    _remove_stale_temporaries(path)
    return path


def atomic_serialize(path: str | os.PathLike, serialize: Callable[[BinaryIO], None]) -> Path:
    """Let ``serialize(buffer)`` write into memory, then write the bytes to ``path`` atomically.

    For ``torch.save`` and ``torch.jit.save``: given a file name, they write through a C++ stream which, on a
    full disk, raises a ``RuntimeError`` that does not say why ("unexpected pos 576 vs 534") or, for
    ``torch.jit.save``, aborts the whole process from a destructor (seen with torch 2.13). Written from Python,
    a full disk is a plain ``OSError``. The price is one copy of the file in memory while it is written.
    """
    buffer = io.BytesIO()
    serialize(buffer)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def _write_failed(path: Path, cause: OSError) -> UserError:
    """The one-line error for a failed write of ``path``, saying what became of the previous file."""
    reason = (cause.strerror or str(cause) or type(cause).__name__).strip().splitlines()[0][:200]
    state = "the previous file is intact" if path.exists() else "no file was written"
    return UserError(f"could not write {path} ({reason}); {state}")


def _os_error(err: BaseException) -> OSError | None:
    """``err`` itself if it is an OSError, else the first OSError it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems alike
_TEMPORARY_EXTRA = len(".") + len(".4194304.") + 8 + len(".tmp")  # dot, pid (Linux's largest), random part, suffix


def _stem(name: str) -> str:
    """The part of ``name`` that a temporary file's name carries: ``name`` itself when the temporary name fits
    in :data:`NAME_MAX` bytes, else its first bytes and a hash of the whole, so that any legal name can be
    written and distinct names keep distinct temporaries."""
    encoded = os.fsencode(name)
    if len(encoded) + _TEMPORARY_EXTRA <= NAME_MAX:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    head = name
    while len(os.fsencode(head)) > NAME_MAX - _TEMPORARY_EXTRA - len(digest) - 1:  # whole characters only
        head = head[:-1]
    return f"{head}~{digest}"


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of ``path`` that writers killed mid-write left behind.

    Only names :func:`atomic_write` gives ``path``'s temporary files (``.{name}.{pid}.{random}.tmp``), and only
    when that process is gone: a concurrent write of the same file (another command, another thread) keeps its
    temporary file. Best effort: the write itself has succeeded, so a file that cannot be removed is left.
    """
    pattern = re.compile(re.escape(f".{_stem(path.name)}.") + r"(\d+)\.[a-z0-9_]+\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match and not _running(int(match[1])):
            with contextlib.suppress(OSError):
                (path.parent / name).unlink()


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (this process counts: another thread may be writing)."""
    if pid == os.getpid() or os.name != "posix":  # on Windows os.kill(pid, 0) would not merely ask
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def is_folder(path: Path) -> bool:
    """``path.is_dir()``, False where the path cannot even be looked at (a name too long): the write says why."""
    try:
        return path.is_dir()
    except OSError:
        return False


def refuse_folder(out: str, flag: str, file_name: str) -> Path:
    """``out`` (the value of ``flag``) as the path of a file to write; a value that names a folder (``.``,
    ``/``, ``dir/``, an existing folder) is refused in one line that suggests ``out/file_name`` instead."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.name in ("", ".", "..") or is_folder(path):
        raise UserError(f"{flag} {out} names a folder; give a file name in it, e.g. {flag} "
                        f"{os.path.join(out, file_name)}")
    return path


def cache_dir(kind: str) -> Path:
    """The project's cache folder for ``kind`` (``latency``, ``data``): ``$ONESHOT_CACHE/kind``, else
    ``$XDG_CACHE_HOME/oneshot-nas/kind`` (default ``~/.cache/oneshot-nas/kind``).

    Caches live here and never beside a user's input, which may be read-only or shared.
    """
    root = os.environ.get("ONESHOT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "oneshot-nas"
    return Path(root) / kind


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file, with a one-line error naming it when it is missing or malformed."""
    path = Path(path)
    check_input(path, what)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{what} {path} is not valid JSON ({err}); it may be truncated or corrupt") from None
    except ValueError as err:  # an integer over Python's int-string conversion limit (4,300 digits)
        raise UserError(f"{what} {path} holds a number this tool cannot read ({err})") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be a file of this tool") from None
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror}") from None


def with_checksum(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` plus a ``"checksum"`` of the rest (see :func:`verify_checksum`), to write with :func:`write_json`.

    For records a later run trusts as they are (a search journal, a validation's measurements): one changed
    digit would otherwise be replayed as if it had been measured.
    """
    return {**data, "checksum": _checksum(json.loads(json.dumps(data)))}  # as it will read back (str keys, lists)


def verify_checksum(data: Mapping[str, Any], path: str | os.PathLike, what: str, remedy: str) -> dict[str, Any]:
    """``data`` without its ``"checksum"``, which must be that of the rest; else a one-line error.

    The checksum is ``sha256:`` and the hex SHA-256 of the canonical JSON of everything else in the file (keys
    sorted, no spaces, ASCII). It is no signature: it tells a file edited by hand or damaged from one this tool
    wrote. ``what`` names the kind of file, ``remedy`` says what to do instead.
    """
    rest = {k: v for k, v in data.items() if k != "checksum"}
    if "checksum" not in data:
        raise UserError(f"{what} {path} has no checksum (an older version of this tool wrote it); {remedy}")
    if data["checksum"] != _checksum(rest):
        raise UserError(f"{what} {path} was modified after it was written (its checksum does not match its "
                        f"contents); {remedy}")
    return rest


def _checksum(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
