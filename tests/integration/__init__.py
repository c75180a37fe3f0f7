"""Integration tests: a real coordinator with real worker processes."""
