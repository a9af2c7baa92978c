"""The benchmarks: latency sweep, the one-command GPU run, the DANN picture."""
