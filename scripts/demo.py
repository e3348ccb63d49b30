"""Placeholder demo: the end-to-end issue replaces it with the real run."""

import sys

print(
    "make demo: the end-to-end demo lands with the plugins; until then this only checks the\n"
    "installed executables. Missing: sandbox seeding, the two meltano runs, run summaries."
)
sys.exit(0)
