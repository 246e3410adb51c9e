#!/usr/bin/env python
"""Thin script for `pointstn predict` (works from any directory once pointstn is installed)."""

import sys

from pointstn.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
