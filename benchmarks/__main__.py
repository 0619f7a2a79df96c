"""`python -m benchmarks [OPTIONS]` is `purifylab bench [OPTIONS]`: one option parser, one suite."""

import sys

from core.cli import main

sys.argv = ["purifylab", "bench", *sys.argv[1:]]  # the report's "command" names the CLI form
main(sys.argv[1:], prog_name="purifylab")
