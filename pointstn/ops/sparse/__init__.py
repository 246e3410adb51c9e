"""Sparse voxel tensors and convolutions: pointstn's only doorway to spconv.

Importing this package does not import spconv; the first sparse tensor or convolution does (see
`backend`). Layers and their dense equivalents are documented in `conv`; tensors in `tensor`.
"""

from pointstn.ops.sparse.backend import SpconvAPI, conv_algorithm, spconv_api
from pointstn.ops.sparse.conv import (
    SparseConv3d,
    SparseConvTranspose3d,
    SparseInverseConv3d,
    SubMConv3d,
    set_dense_path,
)
from pointstn.ops.sparse.tensor import (
    FeatureWise,
    make_sparse_tensor,
    map_features,
    prune,
    replace_features,
    sparse_batch_size,
    sparse_coords,
    sparse_features,
    sparse_spatial_shape,
    to_dense,
)

__all__ = [
    "FeatureWise",
    "SparseConv3d",
    "SparseConvTranspose3d",
    "SparseInverseConv3d",
    "SpconvAPI",
    "SubMConv3d",
    "conv_algorithm",
    "make_sparse_tensor",
    "map_features",
    "prune",
    "replace_features",
    "set_dense_path",
    "sparse_batch_size",
    "sparse_coords",
    "sparse_features",
    "sparse_spatial_shape",
    "spconv_api",
    "to_dense",
]
