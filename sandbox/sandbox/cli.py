"""Console entry points (filled in by the sandbox work)."""


def braze_main() -> None:
    """Run the Braze emulator."""
    raise SystemExit("braze-sandbox: not implemented yet")


def lytics_main() -> None:
    """Run the Lytics emulator."""
    raise SystemExit("lytics-sandbox: not implemented yet")
