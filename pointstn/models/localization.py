"""The STN localization network: pooled image feature -> similarity transform (R, s, t).

Output head. An MLP `Linear(C, hidden) -> ReLU -> Linear(hidden, 10)` gives, per sample,
`d6` (6), `raw_log_scale` (1) and `raw_translation` (3), and

    R = rotation_6d_to_matrix(d6) @ R_nom
    s = s_nom * exp(max_log_scale * tanh(raw_log_scale / max_log_scale))
    t = t_nom + max_translation * tanh(raw_translation / max_translation)

Identity initialisation as in the original STN (Jaderberg et al. 2015): the last layer's weight is
zero and its bias is `(1, 0, 0, 0, 1, 0, 0, 0, 0, 0)`, so at initialisation every sample gets exactly
(bit for bit) the nominal `(R_nom, s_nom, t_nom)`. The rotation is the 6D representation (Zhou et
al. 2019) expressed relative to R_nom: because Gram-Schmidt on rows commutes with right
multiplication by a rotation, `rotation_6d_to_matrix(d6) @ R_nom == rotation_6d_to_matrix(d6 @ R_nom
per 3-vector)`, i.e. this is the plain 6D head whose bias encodes the first two rows of R_nom, with
its outputs expressed in a fixed rotated basis. Composing with R_nom (rather than putting R_nom's
rows into the bias) makes the initial output equal R_nom exactly instead of to rounding.

Soft clamps (smooth, so gradients never stop; identity near 0, exact 0 at 0):
- `max_log_scale` (default 3): s stays within s_nom * e^(+-3), a factor of 20 either way; for the
  default nominal 0.15 m that is 7.5 mm to 3.0 m, wider than any object the rig can show (its
  bounding-sphere limit is 0.25 m, i.e. a longest edge of at most 0.5 m).
- `max_translation` (default 0.5 m): each component of t stays within 0.5 m of t_nom. Since t_nom's
  depth must exceed it, t_z > 0 always, which the weak-perspective projection divides by.

Rotation anchors (`anchors`, optional): instead of one 6D rotation, the head scores K fixed anchor
rotations and regresses one 6D residual per anchor (the "bin + residual" scheme of pose estimation,
e.g. Mahendran et al. 2018): `R_k = rotation_6d_to_matrix(d6_k) @ A_k`, and the transform uses the
highest-scoring anchor's `R_k`. A single regressed rotation cannot represent "one of these poses"
(symmetric objects, ambiguous views): trained with a squared error it settles between the modes, and
the session-3 full model's rotation error stayed at 101 deg on the objects with a unique rotation
(`pointstn test`, docs/RESULTS.md; retrieval: 67 deg).
The scores are trained by cross-entropy against soft labels from the anchors' own distances to the
true pose (symmetry-aware, `models/losses.py::pose_loss`), the residual of the anchor nearest the
truth by the pose loss's rotation term.
`rotation_anchors(rig, step_deg)` builds the grid: views without roll at azimuths and elevations
spaced `step_deg` apart, anchor 0 being the nominal view; the residuals cover in-plane roll. Anchor
0's score starts at 1 (the others at 0) and every residual at the identity, so an untrained net
returns the nominal rotation exactly, as without anchors. Off by default: in the demo's 400-step
budget the scores did not learn (docs/RESULTS.md, "Pose").

`enabled=False` (the "STN off" ablation) creates no MLP and returns the nominal transform for every
sample, in the input's dtype and device.

Nominal pose for the default rig (`nominal_pose_from_rig`): the rig's view at azimuth 0 and elevation
20 deg without roll (the rig samples elevation uniformly in [-50, 88] deg, mean 19 deg, inside the
"canonical" bin [-10, 60]; azimuth is uniform, so any azimuth is equally typical), scale 0.15 m (a
typical longest edge: mid-range of the 2-50 cm objects the rig shows) and t = (0, 0, d) with d the
middle of the rig's distance range (the rig always looks at the bounding-box centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from pointstn.models.types import RotationHypotheses, SimilarityTransform
from pointstn.ops.rotation import rotation_6d_to_matrix

if TYPE_CHECKING:
    from pointstn.data.render.rig import Rig

# last-layer bias: 6D of the identity (first two rows of I), zero log-scale and translation deltas
_IDENTITY_OUTPUT = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_ROTATION_TOLERANCE = 1e-5


@dataclass(frozen=True)
class NominalPose:
    """rotation: (3, 3) float64 camera-from-canonical; scale: metres; translation: (3,) float64 metres."""

    rotation: Tensor
    scale: float
    translation: Tensor


def nominal_pose_from_rig(
    rig: Rig, *, azimuth_deg: float = 0.0, elevation_deg: float = 20.0, scale: float = 0.15
) -> NominalPose:
    """The nominal (R, s, t) of a typical view of `rig` (choice documented in the module docstring)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0 (metres); got {scale}")
    distance = 0.5 * (rig.distance_range_m[0] + rig.distance_range_m[1])
    view = rig.view(azimuth_deg=azimuth_deg, elevation_deg=elevation_deg, roll_deg=0.0, distance_m=distance)
    return NominalPose(
        rotation=torch.from_numpy(np.array(view.rotation, dtype=np.float64)),
        scale=float(scale),
        translation=torch.from_numpy(np.array(view.translation, dtype=np.float64)),
    )


def rotation_anchors(rig: Rig, step_deg: float, *, elevation_deg: float = 20.0) -> Tensor:
    """(K, 3, 3) float64 camera-from-canonical rotations of `rig`'s views without roll at azimuths 0,
    step, ... < 360 and elevations `elevation_deg` + j * step strictly inside (-90, 90); anchor 0 is
    (azimuth 0, `elevation_deg`), the nominal pose's rotation when that is its elevation."""
    if not 0 < step_deg <= 90:
        raise ValueError(f"rotation anchor step must be in (0, 90] degrees; got {step_deg}")
    if not -90 < elevation_deg < 90:
        raise ValueError(f"anchor elevation must be inside (-90, 90) degrees; got {elevation_deg}")
    azimuths = np.arange(0.0, 360.0 - 1e-9, step_deg)
    up = np.arange(elevation_deg, 90.0, step_deg)
    down = np.arange(elevation_deg - step_deg, -90.0, -step_deg)
    elevations = np.concatenate([up, down[down > -90.0]])
    distance = 0.5 * (rig.distance_range_m[0] + rig.distance_range_m[1])
    views = [rig.view(azimuth_deg=float(a), elevation_deg=float(e), roll_deg=0.0, distance_m=distance)
             for e in elevations for a in azimuths]
    return torch.from_numpy(np.stack([np.array(v.rotation, dtype=np.float64) for v in views]))


class LocalizationNet(nn.Module):
    """pooled (B, in_channels) -> SimilarityTransform (rotation (B,3,3), scale (B,), translation (B,3))."""

    def __init__(
        self,
        *,
        in_channels: int,
        hidden: int = 256,
        nominal_rotation: Tensor | np.ndarray,
        nominal_scale: float,
        nominal_translation: Tensor | np.ndarray,
        enabled: bool = True,
        max_log_scale: float = 3.0,
        max_translation: float = 0.5,
        anchors: Tensor | None = None,
    ):
        super().__init__()
        if in_channels < 1 or hidden < 1:
            raise ValueError(f"in_channels and hidden must be >= 1; got {in_channels}, {hidden}")
        rotation = torch.as_tensor(np.asarray(nominal_rotation, dtype=np.float64))
        translation = torch.as_tensor(np.asarray(nominal_translation, dtype=np.float64))
        if rotation.shape != (3, 3):
            raise ValueError(f"nominal_rotation must be (3, 3); got {tuple(rotation.shape)}")
        orthogonality = (rotation @ rotation.T - torch.eye(3, dtype=torch.float64)).abs().max().item()
        if (
            not orthogonality < _ROTATION_TOLERANCE
            or not abs(torch.linalg.det(rotation).item() - 1) < _ROTATION_TOLERANCE
        ):
            raise ValueError(
                f"nominal_rotation must be a proper rotation (R R^T = I, det +1, tolerance {_ROTATION_TOLERANCE}); "
                f"got max |R R^T - I| = {orthogonality:.3g}, det = {torch.linalg.det(rotation).item():.6g}"
            )
        if translation.shape != (3,) or not bool(torch.isfinite(translation).all()):
            raise ValueError(f"nominal_translation must be 3 finite numbers; got {translation.tolist()}")
        if not (math.isfinite(nominal_scale) and nominal_scale > 0):
            raise ValueError(f"nominal_scale must be a finite number > 0 (metres); got {nominal_scale}")
        if not (max_log_scale > 0 and max_translation > 0):
            raise ValueError(f"max_log_scale and max_translation must be > 0; got {max_log_scale}, {max_translation}")
        if not translation[2].item() > max_translation:
            raise ValueError(
                f"nominal_translation z ({translation[2].item()} m) must exceed max_translation ({max_translation} m) "
                "so the predicted object centre always stays in front of the camera"
            )
        self.in_channels = in_channels
        self.enabled = enabled
        self.max_log_scale = float(max_log_scale)
        self.max_translation = float(max_translation)
        # float64 buffers, cast to the input's dtype in forward (so float32 models keep an exact nominal)
        self.register_buffer("nominal_rotation", rotation.clone())
        self.register_buffer("nominal_scale", torch.tensor(float(nominal_scale), dtype=torch.float64))
        self.register_buffer("nominal_translation", translation.clone())
        self.num_anchors = 0
        if anchors is not None:
            anchors = torch.as_tensor(anchors, dtype=torch.float64)
            if anchors.ndim != 3 or anchors.shape[1:] != (3, 3) or anchors.shape[0] < 1:
                raise ValueError(f"anchors must be (K, 3, 3) rotations; got {tuple(anchors.shape)}")
            self.num_anchors = anchors.shape[0]
            self.register_buffer("anchors", anchors.clone())
        self.mlp: nn.Sequential | None = None
        if enabled:
            # without anchors: 6D rotation, log-scale, translation; with K anchors: K scores, K 6D residuals,
            # log-scale, translation (the residuals' bias is the identity's 6D, anchor 0's score 1, the others 0)
            head = _IDENTITY_OUTPUT if not self.num_anchors else (
                (1.0,) + (0.0,) * (self.num_anchors - 1) + _IDENTITY_OUTPUT[:6] * self.num_anchors + _IDENTITY_OUTPUT[6:])
            last = nn.Linear(hidden, len(head))
            nn.init.zeros_(last.weight)
            with torch.no_grad():
                last.bias.copy_(torch.tensor(head))
            self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), last)

    def forward(
        self, pooled: Tensor, *, with_hypotheses: bool = False
    ) -> SimilarityTransform | tuple[SimilarityTransform, RotationHypotheses | None]:
        """pooled (B, in_channels) float -> the transform canonical -> camera for each sample; with
        `with_hypotheses`, (transform, the rotation hypotheses behind it or None without anchors)."""
        transform, hypotheses = self._localize(pooled)
        return (transform, hypotheses) if with_hypotheses else transform

    def _localize(self, pooled: Tensor) -> tuple[SimilarityTransform, RotationHypotheses | None]:
        if pooled.ndim != 2 or pooled.shape[1] != self.in_channels or not pooled.is_floating_point():
            raise ValueError(
                f"pooled must be a float (B, {self.in_channels}) tensor; got {tuple(pooled.shape)} {pooled.dtype}"
            )
        batch = pooled.shape[0]
        rotation = self.nominal_rotation.to(pooled)
        scale = self.nominal_scale.to(pooled)
        translation = self.nominal_translation.to(pooled)
        if self.mlp is None:
            return SimilarityTransform(
                rotation.expand(batch, 3, 3).clone(), scale.expand(batch).clone(), translation.expand(batch, 3).clone()
            ), None
        out = self.mlp(pooled)
        k = self.num_anchors
        raw_log_scale, raw_translation = out[:, -4], out[:, -3:]
        log_scale = self.max_log_scale * torch.tanh(raw_log_scale / self.max_log_scale)
        offset = self.max_translation * torch.tanh(raw_translation / self.max_translation)
        hypotheses = None
        if k:
            logits, d6 = out[:, :k], out[:, k : 7 * k].reshape(batch, k, 6)
            anchors = self.anchors.to(pooled)
            rotations = rotation_6d_to_matrix(d6) @ anchors
            hypotheses = RotationHypotheses(logits=logits, rotations=rotations, anchors=anchors)
            chosen = logits.argmax(dim=1)
            rotation = rotations[torch.arange(batch, device=pooled.device), chosen]
        else:
            rotation = rotation_6d_to_matrix(out[:, :6]) @ rotation
        transform = SimilarityTransform(rotation=rotation, scale=scale * torch.exp(log_scale), translation=translation + offset)
        return transform, hypotheses
