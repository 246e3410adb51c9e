"""pointstn.config."""
