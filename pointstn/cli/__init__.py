"""The `pointstn` command line; tools/*.py are thin wrappers around `pointstn.cli.main.main`."""
