"""pointstn.engine."""
