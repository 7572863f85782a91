"""Tests of keel.gateway: routing, reload, canary, proxying, security, limits, operations."""
