"""The reconstructor and its stages; `pointstn.models.build.build_model(config)` is the one builder."""
