"""Runnable examples built on keel (run them from the repository root)."""
