"""pointstn.ops."""
