"""Test doubles that stand in for the kernel (used by unit tests and benchmarks)."""
