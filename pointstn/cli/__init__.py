"""pointstn.cli."""
