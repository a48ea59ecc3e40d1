"""The benchmark harness: aig against the physical limit (direct) and LiteLLM, in one run.

`python -m bench` (what `make bench` runs); `python -m bench --quick` for development.
"""
