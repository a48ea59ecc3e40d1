"""Starts the whole gateway on one machine: `make up`, and the test suite's fixtures."""
