"""``python -m pyagent``: the same command line as ``pyagent``."""

from pyagent.cli import main

main(prog_name="pyagent")
