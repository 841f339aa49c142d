"""Test-only stand-in: see test/shims/README.md."""
