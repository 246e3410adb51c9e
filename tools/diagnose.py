#!/usr/bin/env python
"""Thin script for `pointstn diagnose` (works from any directory once pointstn is installed)."""

import sys

from pointstn.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["diagnose", *sys.argv[1:]]))
