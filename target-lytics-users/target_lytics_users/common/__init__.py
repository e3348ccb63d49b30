"""Shared modules, generated from common/ by scripts/sync_common.py: edit the originals."""
