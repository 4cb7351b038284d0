"""Subcommands of the ``unifocal`` command line (see :mod:`unifocal.cli`)."""
