"""The benchmark harness: aig against the physical limit (direct) and LiteLLM, in one run.

`python -m bench` (what `make bench` runs); `python -m bench --quick` for development.
"""

import os

# The harness runs gRPC in its own process (bench/grpc_hop.py's client) and forks every
# service of the stacks it starts. With gRPC's fork support on (its C core's default), a
# forked child restarts gRPC's epoll poller between fork and exec, and exec's close_fds
# closes that poller's descriptor: the child can abort before the service's Python starts
# (`bench.extras` lost a run to jobs exiting with SIGABRT right after grpc_hop). No child
# the harness forks goes on using gRPC. The tests set the same (tests/conftest.py). Set
# before any bench module imports grpc: gRPC reads it when its core starts.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
