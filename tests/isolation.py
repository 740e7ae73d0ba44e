"""Running a script in a fresh Python process that cannot import this project (as on the Hub)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCK_PROJECT_IMPORTS = textwrap.dedent(
    """
    import importlib.abc, sys

    class _BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            project = {"analysis", "modeling_hvformer", "mre_data", "mre_run", "processing", "run_mre", "training"}
            if name.split(".")[0] in project:
                raise ImportError(f"{name} is not importable here")
            return None

    sys.meta_path.insert(0, _BlockProject())
    try:
        import modeling_hvformer  # noqa: F401
    except ImportError:
        pass
    else:
        sys.exit("the project is importable in the isolated process")
    """
)
"""Prefix for isolated scripts: makes this project's packages unimportable, as they are for Hub users."""


def run_isolated(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs `script` with `python -I` in `cwd`, offline and with a private HF cache; fails the test on error."""
    env = {"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "hf_home")}
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result
