"""Training losses: Chamfer (PyTorch3D semantics) on the coarse and fine clouds in the canonical and
camera frames, per-level occupancy BCE, and optional pose terms (geodesic rotation, the symmetry-aware pose
loss, the up-axis loss).

Units. Canonical-frame terms compare normalized clouds (the object's longest edge is 1). Camera-frame
terms compare the camera-frame clouds divided by the ground truth's longest edge (so squared distances
are divided by the squared edge, unsquared ones by the edge, and the robust distance's width is in
object sizes: `LossWeights.fine_distance`), so both frames weigh alike whatever the object's size; a
translation error of one object size costs about 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pointstn.models.reconstructor import ReconstructionOutput
from pointstn.ops.chamfer import chamfer_distance
from pointstn.ops.rotation import geodesic_angle


@dataclass(frozen=True)
class LossWeights:
    chamfer_coarse: float = 1.0
    chamfer_fine: float = 1.0
    canonical_frame: float = 1.0
    camera_frame: float = 1.0
    fine_canonical_frame: float = 1.0
    occupancy: float = 1.0
    rotation: float = 0.0
    pose: float = 0.0
    up_axis: float = 0.0
    fine_distance: str = "squared"
    robust_scale: float = 0.01

    @classmethod
    def from_config(cls, loss) -> LossWeights:
        """The weights of a config's `loss` section (`pointstn.config.schema.LossConfig`), key by key."""
        return cls(**{name: getattr(loss, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Targets:
    """Ground truth for a batch. points: (B, N, 3) canonical, metres, centred at the bbox centre;
    points_camera: (B, N, 3) metres, the same points as `points` (x_cam = R x + t); rotation: (B, 3, 3);
    size: (B,) longest bbox edge in metres; unique_rotation: (B,) bool, False for symmetric objects (their
    pose term uses Chamfer), None = treat every sample as symmetric."""

    points: Tensor
    points_camera: Tensor
    rotation: Tensor
    size: Tensor
    unique_rotation: Tensor | None = None

    @property
    def points_normalized(self) -> Tensor:
        return self.points / self.size[:, None, None]

    @property
    def translation(self) -> Tensor:
        """(B, 3) the true translation t = mean(x_cam - R x) (exact: every point satisfies x_cam = R x + t)."""
        return (self.points_camera - self.points @ self.rotation.transpose(1, 2)).mean(dim=1)


@dataclass(frozen=True)
class LossTerms:
    """The weighted total and every unweighted term (for logging), each a scalar tensor."""

    total: Tensor
    terms: dict[str, Tensor]

    def scalars(self) -> dict[str, float]:
        """Every term as a plain float (detached), for logging."""
        return {"total": float(self.total.detach()), **{k: float(v.detach()) for k, v in self.terms.items()}}


FINE_DISTANCES = ("squared", "unsquared", "robust")
UNSQUARED_EPS = 1e-12  # inside the square root: a finite gradient where a point sits exactly on its neighbour


def chamfer_terms(pred: Tensor, gt: Tensor, pred_lengths: Tensor | None, *, distance: str = "squared",
                  robust_scale: float = 0.01) -> Tensor:
    """(B,) Chamfer distance per sample, the two directions summed, each a mean over its cloud's points.

    distance "squared": PyTorch3D's `chamfer_distance` (squared Euclidean). "unsquared": the Euclidean
    distance itself, as in the `cd_l1` metric (x2: summed, not averaged): its pull on a point does not
    fade as the point nears the surface, where the squared distance's gradient 2d vanishes.
    "robust": the Welsch function of the distance d, w (1 - exp(-d^2 / (2 w^2))) with w = `robust_scale`
    (in the clouds' units): squared / (2 w) near the surface, at most w far from it, so a point's pull
    peaks at d = w (0.61 there, against 1 for "unsquared") and fades beyond a few w. The f@1% metric counts
    only points within 1% of the object's size; this distance spends the gradient on those near it.
    """
    if distance == "squared":
        return chamfer_distance(pred, gt, x_lengths=pred_lengths, batch_reduction=None)[0]
    if distance not in FINE_DISTANCES:
        raise ValueError(f"unknown Chamfer distance {distance!r}; valid: {', '.join(FINE_DISTANCES)}")
    (to_gt, to_pred), _ = chamfer_distance(pred, gt, x_lengths=pred_lengths, batch_reduction=None,
                                          point_reduction=None)
    lengths = torch.full((pred.shape[0],), pred.shape[1], device=pred.device) if pred_lengths is None else pred_lengths
    valid = torch.arange(pred.shape[1], device=pred.device)[None, :] < lengths[:, None]
    if distance == "unsquared":
        to_gt, to_pred = (to_gt + UNSQUARED_EPS).sqrt(), (to_pred + UNSQUARED_EPS).sqrt()
    else:
        if not robust_scale > 0:
            raise ValueError(f"robust_scale must be > 0; got {robust_scale}")
        to_gt, to_pred = (welsch(d, robust_scale) for d in (to_gt, to_pred))
    accuracy = (to_gt * valid).sum(dim=1) / lengths.clamp(min=1)
    return accuracy + to_pred.mean(dim=1)


def welsch(squared: Tensor, width: float) -> Tensor:
    """w (1 - exp(-d^2 / (2 w^2))) of squared distances d^2 (`chamfer_terms`' "robust" distance)."""
    return width * -torch.expm1(-squared / (2 * width * width))


POSE_POINTS = 512  # about this many ground-truth points (every k-th: stored samples may be ordered by face)
ANCHOR_POINTS = 128  # points per sample when every rotation anchor is compared with the truth
# soft anchor labels softmax(-d_k / T), d_k in normalized units^2: a 30-degree turn of a unit-size surface costs
# about 0.01-0.03, while two 128-point samples of a symmetric surface under equivalent rotations differ by a few
# 0.001 (sampling); T = 0.002 separates the first and keeps the second nearly equal. At T = 0.01 an axial object's
# labels were nearly uniform over the 72 anchors and the scores did not move in a demo run.
ANCHOR_TEMPERATURE = 0.002


def rotation_distances(canonical: Tensor, rotations: Tensor, truth: Tensor, unique: Tensor) -> Tensor:
    """(B, K) distance of each candidate rotation (B, K, 3, 3) to the true one (B, 3, 3), measured on the
    normalized surface `canonical` (B, P, 3): the mean squared distance between the surface turned by
    the candidate and by the truth -- by correspondence where `unique` (B,) bool, else Chamfer / 2 (so a
    symmetric object's equivalent rotations all score 0)."""
    batch, count, points = rotations.shape[0], rotations.shape[1], canonical.shape[1]
    turned = torch.einsum("bpj,bkij->bkpi", canonical, rotations)
    truth_points = (canonical @ truth.transpose(1, 2))[:, None].expand(-1, count, -1, -1)
    matched = (turned - truth_points).square().sum(dim=-1).mean(dim=-1)
    symmetric = chamfer_distance(turned.reshape(batch * count, points, 3), truth_points.reshape(batch * count, points, 3),
                                 batch_reduction=None)[0].view(batch, count) / 2
    return torch.where(unique[:, None], matched, symmetric)


def _subsample(targets: Targets, count: int) -> Tensor:
    stride = max(1, targets.points.shape[1] // count)
    return targets.points_normalized[:, ::stride]


def pose_loss(output: ReconstructionOutput, targets: Targets) -> Tensor:
    """The transform's error against the true pose, one dimensionless term per part (summed):

    - rotation: `rotation_distances` of the predicted rotation (with rotation anchors: of the anchor
      nearest the truth, refined by its residual) plus, with anchors, the cross-entropy of the anchor
      scores against soft labels softmax(-d_k / ANCHOR_TEMPERATURE), d_k the anchors' own distances
      (equivalent anchors of a symmetric object share the label);
    - scale: (log s - log size)**2 (the rig's fixed distance and field of view make size observable);
    - translation: |t - t_true|**2 / size**2.

    Separate terms keep the parts from trading against each other: a single distance between the
    surface under the predicted and the true transform (the earlier form) rewards shrinking the scale
    while the rotation is still wrong (a wrong turn costs less on a smaller object): the full config's
    model came out at 0.58 of the true size (median), which alone costs most of `f@1%` in the shape
    frame; with these terms, 1.03 (docs/RESULTS.md).
    """
    canonical = _subsample(targets, POSE_POINTS)
    unique = targets.unique_rotation
    if unique is None:
        unique = torch.zeros(canonical.shape[0], dtype=torch.bool, device=canonical.device)
    hypotheses = output.rotation_hypotheses
    if hypotheses is None:
        rotation = rotation_distances(canonical, output.transform.rotation[:, None], targets.rotation, unique)[:, 0]
    else:
        batch = canonical.shape[0]
        with torch.no_grad():
            anchors = hypotheses.anchors.expand(batch, -1, -1, -1)
            distances = rotation_distances(_subsample(targets, ANCHOR_POINTS), anchors, targets.rotation, unique)
            labels = torch.softmax(-distances / ANCHOR_TEMPERATURE, dim=1)
            nearest = distances.argmin(dim=1)
        refined = hypotheses.rotations[torch.arange(batch, device=canonical.device), nearest]
        rotation = rotation_distances(canonical, refined[:, None], targets.rotation, unique)[:, 0]
        rotation = rotation - (labels * F.log_softmax(hypotheses.logits, dim=1)).sum(dim=1)
    scale = (output.transform.scale.log() - targets.size.log()).square()
    translation = (output.transform.translation - targets.translation).square().sum(dim=-1) / targets.size.square()
    return (rotation + scale + translation).mean()


def up_axis_loss(rotation: Tensor, truth: Tensor) -> Tensor:
    """Mean over the batch of sin^2 of the angle between the lines along canonical +z in the camera frame
    under the (B, 3, 3) predicted and true rotations: 1 - (R[:, :, 2] . R_true[:, :, 2])^2, in [0, 1].

    The same for every object, symmetric or not: any symmetry of an upright object keeps its up line,
    and a line has no sign, so an upside-down guess of an object symmetric under that flip is not
    penalized either. The pose loss's rotation term, by contrast, is a Chamfer distance for symmetric
    objects, nearly flat between poses that differ by a near-symmetry (a box whose two short edges are
    almost equal). In pose-only runs of the full config neither term taught the localization network
    the up axis (docs/RESULTS.md, "Session 15"), so this one is off by default.
    """
    return (1 - (rotation[:, :, 2] * truth[:, :, 2]).sum(dim=-1).square()).mean()


def random_subset(points: Tensor, lengths: Tensor, count: int, *others: Tensor,
                  generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
    """Up to `count` random valid points per sample of a padded (B, P, 3) cloud, the same rows of every
    (B, P, 3) tensor in `others`: (points, *others, lengths), padded to min(P, count); unchanged when
    P <= count. Draws from `generator` (on the points' device), else torch's global generator."""
    batch, width = points.shape[:2]
    if width <= count:
        return (points, *others, lengths)
    scores = torch.rand(batch, width, device=points.device, generator=generator)
    scores = scores.masked_fill(torch.arange(width, device=points.device)[None, :] >= lengths[:, None], 2.0)
    chosen = scores.topk(count, dim=1, largest=False).indices[..., None].expand(-1, -1, 3)  # valid rows first
    picked = tuple(torch.gather(t, 1, chosen) for t in (points, *others))
    return (*picked, lengths.clamp(max=count))


def chamfer_weight(weights: LossWeights, level: str, frame: str) -> float:
    """The weight of one Chamfer term: the level's ("coarse" | "fine") weight times the frame's ("canonical" |
    "camera"), times `fine_canonical_frame` for the fine cloud's canonical-frame term."""
    level_weight = weights.chamfer_coarse if level == "coarse" else weights.chamfer_fine
    if frame == "camera":
        return level_weight * weights.camera_frame
    return level_weight * weights.canonical_frame * (weights.fine_canonical_frame if level == "fine" else 1.0)


def reconstruction_loss(output: ReconstructionOutput, targets: Targets, weights: LossWeights, *,
                        fine_points: int | None = None, generator: torch.Generator | None = None) -> LossTerms:
    """All loss terms of one batch (terms with weight 0 are still computed for logging, without autograd).

    fine_points: the fine cloud's Chamfer terms use a random subset of at most this many of its points
        per sample (`random_subset`; a fresh draw every call), as the ground truth is a subset of the
        stored surface samples; None uses every point. In training the decoder keeps the ground-truth
        shell, so the fine cloud can hold 15 000+ points per sample, and Chamfer against all of them
        dominated the step (profiled: 2.3 s of 4 s at batch 16 with 16 384 ground-truth points).
    generator: the subset's random source (the trainer seeds one per step, so a resumed run draws
        the same subsets as an uninterrupted one).
    """
    size = targets.size[:, None, None]  # camera-frame clouds are measured in object sizes
    gt_canonical, gt_camera = targets.points_normalized, targets.points_camera / size
    terms: dict[str, Tensor] = {}
    clouds = {"coarse": (output.coarse, output.coarse_camera, None)}
    if output.levels:  # a decoder ran: its fine cloud gets its own terms
        fine, fine_camera, lengths = output.points, output.points_camera, output.lengths
        if fine_points is not None:
            fine, fine_camera, lengths = random_subset(fine, lengths, fine_points, fine_camera, generator=generator)
        clouds["fine"] = (fine, fine_camera, lengths)
    total = torch.zeros((), dtype=gt_canonical.dtype, device=gt_canonical.device)
    for level, (canonical, camera, lengths) in clouds.items():
        options = {"distance": weights.fine_distance if level == "fine" else "squared",
                   "robust_scale": weights.robust_scale}
        pairs = {"canonical": (canonical, gt_canonical), "camera": (camera / size, gt_camera)}
        for frame, (pred, gt) in pairs.items():
            weight = chamfer_weight(weights, level, frame)
            with torch.set_grad_enabled(torch.is_grad_enabled() and weight > 0):  # weight 0: logged only
                terms[f"chamfer_{level}_{frame}"] = chamfer_terms(pred, gt, lengths, **options).mean()
            total = total + weight * terms[f"chamfer_{level}_{frame}"]
    if output.levels:
        bce = [
            F.binary_cross_entropy_with_logits(level.logits, level.targets)
            for level in output.levels
            if level.targets is not None and level.logits.numel()
        ]
        if bce:
            terms["occupancy"] = torch.stack(bce).mean()
            total = total + weights.occupancy * terms["occupancy"]
    if weights.pose > 0:
        terms["pose"] = pose_loss(output, targets)
        total = total + weights.pose * terms["pose"]
    if weights.up_axis > 0:
        terms["up_axis"] = up_axis_loss(output.transform.rotation, targets.rotation)
        total = total + weights.up_axis * terms["up_axis"]
    terms["rotation_deg"] = torch.rad2deg(geodesic_angle(output.transform.rotation, targets.rotation)).mean()
    if weights.rotation > 0:
        total = total + weights.rotation * torch.deg2rad(terms["rotation_deg"])
    if not torch.isfinite(total):
        bad = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise FloatingPointError(f"non-finite loss: {bad}")
    return LossTerms(total=total, terms=terms)
