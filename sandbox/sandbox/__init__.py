"""Local, stateful emulators of the Braze REST API and the Lytics API."""

from sandbox.braze import BrazeSandbox
from sandbox.lytics import LyticsSandbox
from sandbox.server import EmulatorServer, RecordedRequest

__all__ = ["BrazeSandbox", "EmulatorServer", "LyticsSandbox", "RecordedRequest"]
