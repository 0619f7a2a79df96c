"""`python -m benchmarks [OPTIONS]` is `purifylab bench [OPTIONS]`: one option parser, one suite."""

import sys

from core.cli import main

sys.argv = ["purifylab", "bench", *sys.argv[1:]]  # usage lines and the report's "command" name the CLI form
main(sys.argv[1:])
