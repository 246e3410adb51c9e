"""pointstn.data."""
