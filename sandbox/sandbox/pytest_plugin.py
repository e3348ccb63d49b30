"""pytest fixtures for the emulators (filled in by the sandbox work)."""
