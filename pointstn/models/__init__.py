"""pointstn.models."""
