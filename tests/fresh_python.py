"""Run a snippet in a fresh interpreter: what a tool or a pure module imports
shows only there (the test process itself has Django loaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A Python expression for a snippet to print: the server-side frameworks and
# database drivers it has imported, sorted ("[]" when none).
LOADED_FRAMEWORKS = (
    "sorted({name.split('.')[0] for name in sys.modules} & "
    "{'django', 'rest_framework', 'psycopg', 'psycopg2', 'celery', 'redis'})"
)


def run_python(snippet: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", snippet, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
