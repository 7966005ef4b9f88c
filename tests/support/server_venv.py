"""A virtual environment with the runtime requirements only, for the server under test.

The test environment carries selenium, which brings trio; httpx imports trio when it is
installed, and trio cannot be imported once eventlet has patched the socket module, so
gunicorn's eventlet worker would not boot there.  OpenAlgo's image has no trio, and
neither has this environment: ``requirements.txt`` and nothing else, as a deployment
installs it.  Built once and reused while ``requirements.txt`` is unchanged.
"""

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-server"


def server_python() -> Path:
    """The server environment's interpreter, (re)built if requirements.txt changed."""
    requirements = ROOT / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = VENV / "requirements.sha256"
    python = VENV / "bin" / "python"
    if not python.exists() or not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True
        )
        stamp.write_text(digest)
    return python
