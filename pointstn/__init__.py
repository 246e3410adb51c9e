"""pointstn: single-image 3D point-cloud reconstruction with a Spatial Transformer Network.

Importing the package is cheap: heavy optional dependencies (spconv, renderers) are imported
where they are used.
"""

__version__ = "0.1.0"

from pointstn.errors import PointstnError

__all__ = ["PointstnError", "__version__"]
