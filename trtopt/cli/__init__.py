"""Command-line interface: ``trtopt <subcommand>``; see :func:`trtopt.cli.main.main`."""
