"""MTCNN face detector (Zhang et al. 2016): boxes, scores and 5-point landmarks, offline.

The three cascaded networks (P-Net 12 px proposals, R-Net 24 px refinement, O-Net 48 px
output with landmarks) are written here from the paper; their weights are the MIT-licensed
ones in facenet-pytorch 2.6.0's wheel, converted by ``tools/convert_mtcnn.py`` to plain
arrays in ``weights/mtcnn.npz`` (see ``weights/PROVENANCE.md``). Inputs are RGB uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

WEIGHTS = Path(__file__).with_name("weights") / "mtcnn.npz"


@dataclass
class Face:
    """One detection: ``box`` (x0, y0, x1, y1) pixels, ``score``, ``landmarks`` (5, 2) x, y.

    Landmark order: left eye, right eye (as seen in the image), nose, mouth left, mouth right.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        """The box as ``(x, y, w, h)``."""
        x0, y0, x1, y1 = self.box
        return (x0, y0, x1 - x0, y1 - y0)


@lru_cache(maxsize=1)
def load_weights() -> dict[str, torch.Tensor]:
    """The 3 networks' parameters, keyed ``pnet.conv1.weight`` etc."""
    with np.load(WEIGHTS) as data:
        return {k: torch.from_numpy(data[k].copy()) for k in data.files}


def _conv(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    x = F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"])
    return x


def _prelu(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    return F.prelu(x, w[f"{name}.weight"])


def pnet(x: torch.Tensor, w: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 3, H, W)`` normalised -> face prob ``(N, h, w)``, box offsets ``(N, 4, h, w)``."""
    x = _prelu(_conv(x, w, "pnet.conv1"), w, "pnet.prelu1")
    x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    x = _prelu(_conv(x, w, "pnet.conv2"), w, "pnet.prelu2")
    x = _prelu(_conv(x, w, "pnet.conv3"), w, "pnet.prelu3")
    prob = F.softmax(_conv(x, w, "pnet.conv4_1"), dim=1)[:, 1]
    return prob, _conv(x, w, "pnet.conv4_2")


def _dense_in(x: torch.Tensor) -> torch.Tensor:
    # (N, C, H, W) -> (N, W*H*C): the Caffe-trained dense layers read a transposed map.
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


def _linear(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])


def rnet(x: torch.Tensor, w: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 3, 24, 24)`` -> face prob ``(N,)``, box offsets ``(N, 4)``."""
    x = _prelu(_conv(x, w, "rnet.conv1"), w, "rnet.prelu1")
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = _prelu(_conv(x, w, "rnet.conv2"), w, "rnet.prelu2")
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = _prelu(_conv(x, w, "rnet.conv3"), w, "rnet.prelu3")
    x = _dense_in(x)  # (N, 576)
    x = F.prelu(_linear(x, w, "rnet.dense4"), w["rnet.prelu4.weight"])
    prob = F.softmax(_linear(x, w, "rnet.dense5_1"), dim=1)
    return prob[:, 1], _linear(x, w, "rnet.dense5_2")


def onet(x: torch.Tensor, w: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, 3, 48, 48)`` -> prob ``(N,)``, box offsets ``(N, 4)``, landmarks ``(N, 10)``."""
    x = _prelu(_conv(x, w, "onet.conv1"), w, "onet.prelu1")
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = _prelu(_conv(x, w, "onet.conv2"), w, "onet.prelu2")
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = _prelu(_conv(x, w, "onet.conv3"), w, "onet.prelu3")
    x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    x = _prelu(_conv(x, w, "onet.conv4"), w, "onet.prelu4")
    x = _dense_in(x)  # (N, 1152)
    x = F.prelu(_linear(x, w, "onet.dense5"), w["onet.prelu5.weight"])
    prob = F.softmax(_linear(x, w, "onet.dense6_1"), dim=1)
    reg = _linear(x, w, "onet.dense6_2")
    return prob[:, 1], reg, _linear(x, w, "onet.dense6_3")


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression of ``(n, 4)`` x0, y0, x1, y1 boxes.

    ``mode="union"`` (IoU) runs OpenCV's ``cv2.dnn.NMSBoxes`` (same result, in C++);
    ``"min"`` divides the intersection by the smaller box's area.
    """
    if mode == "union" and len(boxes):
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)  # (n, 4)
        keep = cv2.dnn.NMSBoxes(xywh.astype(np.float64), scores.astype(np.float32), 0.0, thresh)
        return np.asarray(keep, dtype=int).reshape(-1)
    return nms_reference(boxes, scores, thresh, mode)


def nms_reference(
    boxes: np.ndarray, scores: np.ndarray, thresh: float, mode: str = "union"
) -> np.ndarray:
    """:func:`nms` in NumPy, one kept box at a time (the oracle of the tests)."""
    order = np.argsort(-scores)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        ix = np.clip(
            np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]),
            0,
            None,
        )
        iy = np.clip(
            np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]),
            0,
            None,
        )
        inter = ix * iy
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= thresh]
    return np.asarray(keep, dtype=int)


def _normalise(image: np.ndarray) -> torch.Tensor:
    # (H, W, 3) uint8 -> (1, 3, H, W) in about [-1, 1]
    return (
        torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() - 127.5
    ) / 128.0


def _refine(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, :4] + reg * np.stack([w, h, w, h], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Resized ``size`` x ``size`` patches of ``boxes`` (zero outside the image)."""
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes[:, :4]):
        s = size / max(x1 - x0, 1e-6), size / max(y1 - y0, 1e-6)
        m = np.array([[s[0], 0, -s[0] * x0], [0, s[1], -s[1] * y0]], np.float32)
        out[k] = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR)
    return (torch.from_numpy(out).permute(0, 3, 1, 2).float() - 127.5) / 128.0


class MTCNN:
    """Cascaded detector: call it on an RGB uint8 frame for a list of :class:`Face`.

    The frame is downscaled once so that a face of ``min_face_px`` (or ``min_face`` of the
    short side) becomes P-Net's 12 px window; the coarser pyramid levels are resized from
    that small copy, not from the full frame.

    Args:
        min_face: smallest face side to find, as a fraction of the frame's short side
            (sets the pyramid's first scale: P-Net sees faces of 12 px).
        thresholds: face-probability cut of P-Net, R-Net, O-Net.
        factor: pyramid scale step (< 1).
        threads: torch intra-op threads while detecting (None: leave as is).
        min_face_px: smallest face side in pixels of the frame; overrides ``min_face``.
    """

    def __init__(
        self,
        min_face: float = 0.08,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        threads: int | None = None,
        *,
        min_face_px: float | None = None,
    ) -> None:
        if not 0 < min_face < 1:
            raise ValueError(f"min_face must be a fraction in (0, 1), got {min_face}")
        if min_face_px is not None and min_face_px < 12:
            raise ValueError(f"min_face_px must be >= 12 pixels, got {min_face_px}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if len(thresholds) != 3 or not all(0 <= t <= 1 for t in thresholds):
            raise ValueError(f"thresholds must be 3 probabilities, got {thresholds}")
        self.min_face, self.thresholds, self.factor, self.threads = (
            min_face,
            thresholds,
            factor,
            threads,
        )
        self.min_face_px = min_face_px
        self.weights = load_weights()

    def smallest_face(self, height: int, width: int) -> float:
        """Smallest face side (pixels) searched in a ``height`` x ``width`` frame."""
        if self.min_face_px is not None:
            return float(self.min_face_px)
        return max(12.0, self.min_face * min(height, width))

    def _proposals(self, image: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid -> ``(n, 5)`` square candidate boxes + score."""
        h, w = image.shape[:2]
        scale = 12.0 / self.smallest_face(h, w)
        base = None
        found = []
        while min(h, w) * scale >= 12:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(image if base is None else base, size, interpolation=cv2.INTER_AREA)
            base = small if base is None else base  # the one pass over the full frame
            prob, reg = pnet(_normalise(small), self.weights)
            prob, reg = prob[0].numpy(), reg[0].numpy()  # (h', w'), (4, h', w')
            ys, xs = np.nonzero(prob > self.thresholds[0])
            if len(ys):
                x0, y0 = 2 * xs / scale, 2 * ys / scale
                b = np.stack([x0, y0, x0 + 12 / scale, y0 + 12 / scale, prob[ys, xs]], axis=1)
                b[:, :4] = _refine(b, reg[:, ys, xs].T)
                found.append(b[nms(b[:, :4], b[:, 4], 0.5)])
            scale *= self.factor
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        return np.concatenate([_square(boxes[:, :4]), boxes[:, 4:]], axis=1)

    def refine(self, image: np.ndarray, boxes: np.ndarray) -> list[Face]:
        """R-Net then O-Net on ``(n, >=4)`` candidate boxes (also used by the tracker)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, boxes.shape[-1] if len(boxes) else 5)
        if not len(boxes):
            return []
        prob, reg = (t.numpy() for t in rnet(_crops(image, boxes, 24), self.weights))
        keep = prob > self.thresholds[1]
        boxes = np.concatenate([_refine(boxes[keep], reg[keep]), prob[keep, None]], axis=1)
        if not len(boxes):
            return []
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        boxes = np.concatenate([_square(boxes[:, :4]), boxes[:, 4:]], axis=1)
        prob, final, points = self._onet(image, boxes)
        keep = prob > self.thresholds[2]
        final, points, prob = final[keep], points[keep], prob[keep]
        if not len(final):
            return []
        keep = nms(final, prob, 0.7, mode="min")
        faces = [Face(tuple(float(v) for v in final[i]), float(prob[i]), points[i]) for i in keep]
        return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))

    def _onet(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, ...]:
        """O-Net on square ``(n, >=4)`` boxes -> prob ``(n,)``, final boxes, landmarks."""
        prob, reg, marks = (t.numpy() for t in onet(_crops(image, boxes, 48), self.weights))
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        points = np.stack([boxes[:, :1] + w * marks[:, :5], boxes[:, 1:2] + h * marks[:, 5:]], -1)
        return prob, _refine(boxes[:, :4], reg), points  # (n,), (n, 4), (n, 5, 2)

    def track(self, image: np.ndarray, faces: list[Face], grow: float = 0.1) -> list[Face | None]:
        """Where each face of the previous frame is now: O-Net alone on its old box.

        The old box is squared and grown by ``grow`` of its side (room for the motion of
        one frame); a face O-Net no longer accepts is ``None`` (lost).
        """
        if not faces:
            return []
        boxes = _square(np.array([f.box for f in faces], np.float64))  # (n, 4)
        pad = grow / 2 * (boxes[:, 2:] - boxes[:, :2])  # (n, 2)
        boxes = np.concatenate([boxes[:, :2] - pad, boxes[:, 2:] + pad], axis=1)
        with torch.inference_mode():
            prob, final, points = self._onet(image, boxes)
        return [
            Face(tuple(float(v) for v in final[i]), float(prob[i]), points[i])
            if prob[i] > self.thresholds[2]
            else None
            for i in range(len(faces))
        ]

    def __call__(self, image: np.ndarray) -> list[Face]:
        """Faces in an ``(H, W, 3)`` RGB uint8 frame, largest first."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"MTCNN expects an (H, W, 3) RGB image, got shape {image.shape}")
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self.refine(image, self._proposals(image))
        finally:
            torch.set_num_threads(old)


# Canonical 5 points as fractions of the crop side: MTCNN's mean landmarks inside its own
# face box made square (margin 0), measured on 124 near-frontal real faces (scikit-image's
# lfw_subset and astronaut, Megamind.avi; |roll| < 10 degrees), mirrored to be symmetric.
# With this template an aligned crop of margin m frames a face like the data loaders'
# ``crop_face(box, margin=m)`` (ArcFace's recognition template sits 8 % lower and 10 %
# smaller: eyes at 0.46 of the side instead of 0.40 at margin 0.2).
TEMPLATE = np.array(
    [[0.323, 0.382], [0.677, 0.382], [0.500, 0.588], [0.352, 0.765], [0.648, 0.765]]
)


def template_points(size: int, margin: float = 0.0) -> np.ndarray:
    """The ``(5, 2)`` template in a ``size`` crop, shrunk about the centre by ``1 + margin``."""
    return ((TEMPLATE - 0.5) / (1.0 + margin) + 0.5) * size


def alignment_matrix(landmarks: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray:
    """``(2, 3)`` similarity (rotation, uniform scale, shift) taking landmarks to the template.

    Least squares (Umeyama 1991, no reflection) over the 5 point pairs.
    """
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    dst = template_points(size, margin)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)  # (2, 2)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    shift = mu_d - scale * rot @ mu_s
    return np.concatenate([scale * rot, shift[:, None]], axis=1)


def align_face(image: np.ndarray, face: Face, size: int, margin: float = 0.0) -> np.ndarray:
    """``(size, size, 3)`` crop with the face's landmarks on :func:`template_points`."""
    matrix = alignment_matrix(face.landmarks, size, margin)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)


_DEFAULT: list[MTCNN] = []


def detect_faces(image: np.ndarray) -> list[Face]:
    """Faces in an RGB uint8 frame with a shared default :class:`MTCNN`, largest first."""
    if not _DEFAULT:
        _DEFAULT.append(MTCNN())
    return _DEFAULT[0](image)
