"""pointstn.io."""
