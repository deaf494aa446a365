"""Benchmarks (issue 7): servers under test, the load client and the driver. Not part of the app."""
