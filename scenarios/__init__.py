"""Environment backends (each registers itself) and the built-in suites in `suites/`."""

from pathlib import Path

SUITES_DIR = Path(__file__).parent / "suites"
