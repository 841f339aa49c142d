"""Offline tools on the core: the CLI, bag and media processing, demo, PLY and pictures."""
