"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and ``os.replace`` it onto ``target``.

    On an exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; an output gets the mode any new file would
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _naming(err, tmp, target) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def _naming(err: OSError, tmp: Path, target: Path) -> OSError:
    """``err`` naming the file the caller asked for instead of the temp path it was being written through (or
    nothing): a full disk's message then names the output and the folder whose free space matters."""
    name = err.filename
    if name is None or str(name) == str(tmp):
        where = target
    elif str(name).startswith(str(tmp) + os.sep):
        where = target / Path(name).relative_to(tmp)
    else:
        return err
    return type(err)(err.errno, err.strerror, str(where))


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` to fill; on success it takes ``target``'s place whole (a rename,
    after moving any old ``target`` aside), so a reader sees the old folder or the complete new one. On an
    exception the temporary folder is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; an output gets the mode any new folder would
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", suffix=TEMP_SUFFIX, dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _naming(err, tmp, target) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(target.parent)


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def append_line(target: str | Path, line: str) -> None:
    """Append ``line`` and a newline to ``target`` (UTF-8) whole or not at all: when the write fails (a full
    disk writes part of it, then refuses the rest) the file is cut back to its old length, then the error
    is raised. Cost: one write and one fsync, whatever the file's length."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as err:
            os.ftruncate(fd, start)  # frees blocks, so it works on a full disk too
            raise OSError(err.errno, err.strerror, str(target)) from err
        except BaseException:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def copy_atomic(source: str | Path, destination: str | Path) -> None:
    """Copy a file so that ``destination`` appears complete or not at all."""
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def link_atomic(source: str | Path, destination: str | Path) -> None:
    """``destination`` as a hard link to ``source`` (a copy where the file system refuses links), appearing
    complete or not at all. Only for a ``source`` that is replaced whole (``atomic_path``), never written in place:
    the link keeps the content it was made with."""
    with contextlib.suppress(OSError):
        if os.path.samefile(source, destination):
            return  # already this link (and rename() between two links of one file would leave the temp behind)
    with atomic_path(destination) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def remove_leftover_temps_of(targets: Iterable[str | Path]) -> int:
    """Delete what writes of ``targets`` killed mid-way left beside them (temp files and folders of atomic_path and
    atomic_directory); only call this where no other process writes those targets (a job, before it writes its
    own outputs). The bytes freed."""
    freed = 0
    for target in map(Path, targets):
        for leftover in target.parent.glob(f".{glob.escape(target.name)}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                if leftover.is_dir() and not leftover.is_symlink():
                    freed += sum(f.stat().st_size for f in leftover.rglob("*") if f.is_file())
                    shutil.rmtree(leftover)
                else:
                    freed += leftover.stat().st_size
                    leftover.unlink()
    return freed


def remove_leftover_temps(folder: str | Path) -> int:
    """Delete the temporary files that writes killed mid-way left in ``folder`` (only call this where no other
    process writes, e.g. under the run state's lock); the bytes freed."""
    freed = 0
    for leftover in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            freed += leftover.stat().st_size
            leftover.unlink()
    return freed
