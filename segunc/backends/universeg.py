"""UniverSeg (Butoi, Gonzalez Ortiz et al., ICCV 2023, arXiv:2304.06131): in-context
segmentation of a target image given a *support set* of (image, label) examples of the
task, here S tumour slices from TRAIN-split patients (never the evaluated split).

Weights: ``universeg_v1_nf64_ss64_STA.pt`` from the UniverSeg GitHub release (research-only
licence), a plain state dict of :func:`~.universeg_net.universeg_v1`.

Preprocessing (the official examples: grey image resized to 128 x 128, values in [0, 1]):
one grey channel per slice by the ``channels`` policy — ``flair`` (default: the FLAIR
channel) or ``luminance`` (ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` of the RGB slice,
i.e. PIL ``convert("L")``, reproducing the paper's setup) — resized bilinearly
(anti-aliased) to 128 x 128 and min-max scaled to [0, 1] per image. Support labels are
area-averaged to 128 x 128 and thresholded at 0.5 (a tumour that would vanish keeps the
128-grid cells it touches). Logits ``B 1 128 128`` are resized bilinearly to the slice.

The support set is fixed per backend instance (:meth:`UniverSegBackend.set_support`), its
slice ids are recorded in ``options["support_ids"]`` so they enter :meth:`settings` and
every result key. :func:`draw_support` picks it deterministically from a seed;
:meth:`UniverSegBackend.logits_with_supports` runs one target against K different
support sets in one batch (support-set resampling uncertainty).
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from .._torch import F, nn, torch
from .base import BACKENDS, Backend, load_state_dict_file, minmax01

CHANNEL_POLICIES = ("flair", "luminance")
INPUT_SIZE = 128
#: ITU-R BT.601 luma weights (PIL ``convert("L")``)
LUMA_601 = (0.299, 0.587, 0.114)


def select_channel(images: torch.Tensor, policy: str) -> torch.Tensor:
    """``B 3 H W`` LGG channels (pre-contrast, FLAIR, post-contrast) → ``B 1 H W`` grey."""
    if policy == "flair":
        return images[:, 1:2]
    if policy == "luminance":
        w = images.new_tensor(LUMA_601).view(1, 3, 1, 1)
        return (images * w).sum(dim=1, keepdim=True)
    raise ValueError(f"unknown channel policy {policy!r}; expected one of {CHANNEL_POLICIES}")


def prepare_images(images: torch.Tensor, policy: str, size: int = INPUT_SIZE) -> torch.Tensor:
    """Raw ``N 3 H W`` (0..255) → ``N 1 size size`` in [0, 1]."""
    x = select_channel(images.float(), policy)
    if tuple(x.shape[-2:]) != (size, size):
        down = x.shape[-1] > size or x.shape[-2] > size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=down)
    return minmax01(x)


def prepare_labels(masks: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Boolean/0-1 masks ``N H W`` → float ``N 1 size size`` in {0, 1} (area ≥ 0.5; a mask
    that would vanish keeps every cell it touches)."""
    m = masks.float()[:, None]
    if tuple(m.shape[-2:]) == (size, size):
        return (m > 0.5).float()
    area = F.adaptive_avg_pool2d(m, (size, size))
    out = (area >= 0.5).float()
    lost = (out.flatten(1).sum(1) == 0) & (m.flatten(1).sum(1) > 0)
    if lost.any():
        out[lost] = (area[lost] > 0).float()
    return out


def draw_support(
    refs: Iterable,
    size: int,
    seed: int = 0,
    exclude_patients: Iterable[str] = (),
) -> list:
    """Deterministically pick ``size`` tumour slices (``SliceRef``) from TRAIN-split patients.

    Patients (train split only, minus ``exclude_patients`` — ids or folder names) are
    shuffled with ``random.Random(seed)``; each contributes one random tumour slice per
    round, so the support is patient-disjoint until the patients run out, then a second
    slice per patient is taken in the same order, and so on. Only the masks of the
    patients visited are read. Raises ``ValueError`` if fewer than ``size`` tumour slices
    exist.
    """
    from ..data import tumour_only

    if size < 1:
        raise ValueError(f"support size must be >= 1, got {size}")
    excluded = set(exclude_patients)
    by_patient: dict[str, list] = defaultdict(list)
    for r in refs:
        if r.split == "train" and r.patient_id not in excluded and r.patient_folder not in excluded:
            by_patient[r.patient_id].append(r)
    rng = random.Random(seed)
    order = sorted(by_patient)
    rng.shuffle(order)

    pools: dict[str, list] = {}
    picked: list = []
    while len(picked) < size:
        took_any = False
        for pid in order:
            if pid not in pools:
                pools[pid] = tumour_only(sorted(by_patient[pid]))
            pool = pools[pid]
            if not pool:
                continue
            picked.append(pool.pop(rng.randrange(len(pool))))
            took_any = True
            if len(picked) == size:
                break
        if not took_any:
            raise ValueError(
                f"support set of {size} needs {size} tumour slices from train-split patients, "
                f"but only {len(picked)} are available ({len(order)} train patients"
                f"{', after exclusions' if excluded else ''})"
            )
    return picked


def support_tensors(slices: Sequence, policy: str, size: int = INPUT_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Loaded ``Slice`` records → (images ``S 1 size size``, labels ``S 1 size size``)."""
    if not slices:
        raise ValueError("empty support set")
    imgs = torch.stack([torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1) for s in slices])
    masks = torch.stack([torch.from_numpy(np.ascontiguousarray(s.mask)) for s in slices])
    return prepare_images(imgs, policy, size), prepare_labels(masks, size)


@BACKENDS.register("universeg")
class UniverSegBackend(Backend):
    """UniverSeg v1 with a fixed, seeded support set of train tumour slices."""

    needs_support = True
    weight_files = ("universeg_v1_nf64_ss64_STA.pt",)
    weights_hint = (
        "UniverSeg v1 weights (research-only licence) come from the UniverSeg GitHub release "
        "(github.com/JJGO/UniverSeg, file universeg_v1_nf64_ss64_STA.pt): run `python -m segunc fetch universeg` "
        "or put the file in the weights folder."
    )
    input_size = INPUT_SIZE
    #: 2: MC-dropout masks in a fixed logical order (no longer the memory order)
    dropout_version = 2

    def __init__(self, weights=None, device="cpu", channels: str = "flair", support_size: int = 16,
                 support_seed: int = 0, **options: Any):
        if channels not in CHANNEL_POLICIES:
            raise ValueError(f"unknown channel policy {channels!r}; expected one of {CHANNEL_POLICIES}")
        super().__init__(weights, device, channels=channels, support_size=int(support_size),
                         support_seed=int(support_seed), **options)
        self.support_images: torch.Tensor | None = None  # 1 S 1 128 128
        self.support_labels: torch.Tensor | None = None
        #: train-split refs the support was drawn from (set by set_support_from_refs); the pool
        #: of the ``support_resample`` mode
        self.support_pool: list | None = None

    def build(self) -> nn.Module:
        path = self.resolve_weights()
        from .universeg_net import universeg_v1

        net = universeg_v1()
        load_state_dict_file(path, net)
        return net

    # -- support set ---------------------------------------------------------------
    def set_support(self, slices: Sequence) -> None:
        """Use these loaded tumour ``Slice`` records as the support set (ids go into ``settings()``)."""
        imgs, lbls = support_tensors(slices, self.options["channels"], self.input_size)
        self.support_images = imgs[None].to(self.device)
        self.support_labels = lbls[None].to(self.device)
        self.options["support_ids"] = [s.slice_id for s in slices]
        self.options["support_size"] = len(slices)

    def set_support_from_refs(self, refs: Iterable, exclude_patients: Iterable[str] = ()) -> list:
        """Draw (``support_size``, ``support_seed``) from ``refs`` with :func:`draw_support`, load, set."""
        from ..data import load_slice

        refs, excluded = list(refs), set(exclude_patients)
        chosen = draw_support(refs, self.options["support_size"], self.options["support_seed"], excluded)
        self.set_support([load_slice(r) for r in chosen])
        self.support_pool = [r for r in refs if r.split == "train" and r.patient_id not in excluded
                             and r.patient_folder not in excluded]
        return chosen

    def support_for(self, slices: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """Support tensors (``S 1 128 128`` each) for other slices, for :meth:`logits_with_supports`."""
        return support_tensors(slices, self.options["channels"], self.input_size)

    def _require_support(self) -> None:
        if self.support_images is None:
            raise RuntimeError("UniverSeg has no support set: call set_support() or set_support_from_refs() first")

    # -- inference -----------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``B 3 H W`` → ``B 1 128 128`` in [0, 1]."""
        return prepare_images(images, self.options["channels"], self.input_size)

    def forward(self, x: torch.Tensor, boxes, out_hw: tuple[int, int]) -> torch.Tensor:
        """``B 1 128 128`` → logits ``B H W``; the support is broadcast to the batch; boxes ignored."""
        self._require_support()
        b = x.shape[0]
        s_img = self.support_images.expand(b, -1, -1, -1, -1)
        s_lbl = self.support_labels.expand(b, -1, -1, -1, -1)
        return self._upsample(self.model(x, s_img, s_lbl), out_hw)

    @staticmethod
    def _upsample(logits: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        if tuple(logits.shape[-2:]) != tuple(out_hw):
            logits = F.interpolate(logits, size=tuple(out_hw), mode="bilinear", align_corners=False)
        return logits[:, 0]

    def logits_with_supports(self, images: torch.Tensor, supports: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One raw target ``1 3 H W`` against K support sets ``[(S 1 128 128, S 1 128 128)] * K``
        (same S; e.g. from :meth:`support_for`) → logits ``K H W``, in one batch of K."""
        if images.shape[0] != 1:
            raise ValueError(f"logits_with_supports takes one target image (1 3 H W), got batch {images.shape[0]}")
        if not supports:
            raise ValueError("no support sets given")
        sizes = {tuple(si.shape) for si, _ in supports} | {tuple(sl.shape) for _, sl in supports}
        if len(sizes) != 1:
            raise ValueError(f"all support sets must have the same shape (S 1 H W), got {sorted(sizes)}")
        s_img = torch.stack([si for si, _ in supports]).to(self.device, torch.float32)
        s_lbl = torch.stack([sl for _, sl in supports]).to(self.device, torch.float32)
        x = self.preprocess(images.to(self.device)).expand(len(supports), -1, -1, -1)
        return self._upsample(self.model(x, s_img, s_lbl), tuple(images.shape[-2:]))

    def prepare_slice(self, slice_, **context: Any) -> dict[str, Any]:
        """Nothing per slice: the support set is fixed per backend instance."""
        return {}
