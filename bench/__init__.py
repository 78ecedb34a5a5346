"""`make bench`: the load harness of the inbox service (see bench/README.md and run.py)."""
