"""Small real filesystems for storage-fault tests: ext4 on a loop device, tmpfs.

Both need root (mount, losetup). ``unavailable()`` says why they cannot be
used here, for a skip. Each filesystem is mounted on a directory of its own
and undone by that directory and that loop device in ``close()`` -- never by
name, and never touching another mount.

``Ext4Disk`` is a machine that can crash: ``crash()`` makes ext4 abort its
journal (``/sys/fs/ext4/<dev>/trigger_fs_error`` on a filesystem mounted
``errors=remount-ro``), so whatever was not yet on the disk is lost, exactly
as in a power cut; ``recover()`` unmounts, runs ``e2fsck`` and mounts again,
as the next boot would. ``Tmpfs`` is a small disk that can fill up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["Ext4Disk", "Tmpfs", "unavailable"]

_SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_SBIN)


def unavailable(kind: str = "ext4") -> str | None:
    """None when ``kind`` ("ext4" or "tmpfs") can be mounted here, else why not."""
    if os.geteuid() != 0:
        return "mounting a test filesystem needs root"
    needed = ("mount", "umount") + (("losetup", "mkfs.ext4", "e2fsck") if kind == "ext4" else ())
    missing = [name for name in needed if _tool(name) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install mount e2fsprogs)"
    if kind == "ext4" and not Path("/dev/loop-control").exists():
        return "no loop devices here (/dev/loop-control is missing)"
    return None


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def _checked(*args: str) -> str:
    result = _run(*args)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout.strip()


class _Mount:
    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.mounted = False

    def _unmount(self) -> None:
        if not self.mounted:
            return
        result = _run("umount", str(self.mountpoint))
        if result.returncode != 0:
            # Something still holds a file open: detach it now, freed when closed.
            _checked("umount", "--lazy", str(self.mountpoint))
        self.mounted = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class Ext4Disk(_Mount):
    """An ext4 image file on a loop device, mounted at ``mountpoint``."""

    def __init__(self, workdir: Path, *, size_mib: int = 64) -> None:
        super().__init__(workdir / "mnt")
        self.image = workdir / "disk.img"
        self.size_mib = size_mib
        self.device: str | None = None

    def open(self) -> Self:
        with self.image.open("wb") as image:
            image.truncate(self.size_mib * 1024 * 1024)
        # Initialise everything now: no lazy background writes during a test.
        _checked(
            _tool("mkfs.ext4") or "mkfs.ext4",
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            str(self.image),
        )
        self.device = _checked("losetup", "--find", "--show", str(self.image))
        self.mountpoint.mkdir(exist_ok=True)
        try:
            self.mount()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Self:
        return self.open()

    def mount(self) -> None:
        assert self.device is not None
        _checked(
            "mount", "-t", "ext4", "-o", "errors=remount-ro", self.device, str(self.mountpoint)
        )
        self.mounted = True

    @property
    def _sysfs(self) -> Path:
        assert self.device is not None
        return Path("/sys/fs/ext4") / Path(self.device).name

    def crash(self) -> None:
        """Lose everything not yet on the disk: ext4 aborts its journal and goes read-only."""
        (self._sysfs / "trigger_fs_error").write_text("1\n")

    def recover(self) -> str:
        """What the next boot does: unmount, ``e2fsck -fy``, mount. Returns fsck's report."""
        assert self.device is not None
        self._unmount()
        result = _run(_tool("e2fsck") or "e2fsck", "-f", "-y", self.device)
        # 0: clean, 1: errors corrected; anything else left the disk unusable.
        if result.returncode not in (0, 1):
            raise RuntimeError(f"e2fsck exited {result.returncode}: {result.stdout}")
        self.mount()
        return result.stdout

    def close(self) -> None:
        try:
            self._unmount()
        finally:
            if self.device is not None:
                _run("losetup", "--detach", self.device)
                self.device = None
            self.image.unlink(missing_ok=True)


class Tmpfs(_Mount):
    """A tmpfs of ``size_kib`` at ``mountpoint``; ``fill()`` uses up its free space."""

    def __init__(self, mountpoint: Path, *, size_kib: int) -> None:
        super().__init__(mountpoint)
        self.size_kib = size_kib
        self.filler = mountpoint / "filler"

    def open(self) -> Self:
        self.mountpoint.mkdir(exist_ok=True)
        _checked(
            "mount", "-t", "tmpfs", "-o", f"size={self.size_kib}k", "tmpfs", str(self.mountpoint)
        )
        self.mounted = True
        return self

    def __enter__(self) -> Self:
        return self.open()

    def fill(self, *, leave_kib: int = 0) -> None:
        """Write a filler file until the filesystem is full, then give back ``leave_kib``."""
        block = b"\0" * 65536
        with self.filler.open("ab", buffering=0) as filler, contextlib.suppress(OSError):
            while filler.write(block):
                pass
        if leave_kib:
            size = self.filler.stat().st_size
            os.truncate(self.filler, max(0, size - leave_kib * 1024))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def is_full(self) -> bool:
        probe = self.mountpoint / "probe"
        try:
            probe.write_bytes(b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return True
        finally:
            probe.unlink(missing_ok=True)
        return False

    def close(self) -> None:
        self._unmount()
