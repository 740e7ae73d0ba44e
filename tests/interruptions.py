"""A kill -9 or a full disk at a chosen moment, and a hostile pickle, for the tests of what a run leaves in its
folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class Killed(BaseException):
    """Stands in for a kill -9: raised where the process would die, and caught by nothing in the project."""


def kill_at_replace(monkeypatch, target: Path) -> list[bool]:
    """Makes the process "die" just before `target` is renamed into place (`os.replace(..., target)`: the new version
    is written whole beside it, not yet in place), while the returned list's item is True; set it to False to let
    later writes through."""
    armed = [True]
    replace = os.replace

    def dying_replace(source, destination):
        if armed[0] and Path(destination) == Path(target):
            raise Killed(f"killed before {target} was renamed into place")
        replace(source, destination)

    monkeypatch.setattr(os, "replace", dying_replace)
    return armed


def disk_full(*args, **kwargs):
    """Patched over `os.fsync`: the disk fills up as a file is flushed."""
    raise OSError(errno.ENOSPC, "No space left on device")


class Hostile:
    """Unpickling it would call `print`: what `torch.load(weights_only=True)` refuses."""

    def __reduce__(self):
        return print, ("unpickled",)
