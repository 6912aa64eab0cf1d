"""The backend contract: a pretrained model as a batched map from slices to logits.

Every backend takes raw images as a float tensor ``B 3 H W`` on the 0..255 intensity
scale of the LGG TIFFs (stochastic modes perturb this tensor), applies its own
preprocessing, and returns foreground **logits** ``B H W`` on the same H x W grid
(probability = sigmoid(logit)). Logits, not probabilities, so that temperature scaling
can act before averaging.

Two-stage models (MedSAM family) split ``logits`` into ``encode`` (image → embedding,
the expensive part) and ``decode`` (embedding + box → logits), so modes that do not
perturb the image reuse one embedding per slice.
"""
from __future__ import annotations

import contextlib
import contextvars
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from .. import settings
from ..fsutil import file_sha256
from ..registry import Registry
from .._torch import nn, torch


_SUB_BATCH: contextvars.ContextVar[slice | None] = contextvars.ContextVar("segunc_sub_batch", default=None)


@contextlib.contextmanager
def sub_batch(part: slice):
    """Announce that the network now runs on samples ``part`` of the current batch (a backend that
    splits a batch, e.g. encoder chunks or one-by-one decoding), so per-sample randomness
    (MC-dropout generators) stays aligned with the samples. Nested parts compose."""
    outer = _SUB_BATCH.get()
    if outer is not None:
        part = slice(outer.start + part.start, outer.start + part.stop)
    token = _SUB_BATCH.set(part)
    try:
        yield
    finally:
        _SUB_BATCH.reset(token)


def current_sub_batch() -> slice | None:
    """The samples of the current batch the network is running on (None: all of them)."""
    return _SUB_BATCH.get()


class WeightsError(ValueError):
    """A checkpoint that is missing, truncated, or of the wrong model."""

    def __init__(self, path: Path | str | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, checked: CUDA asked for on a machine without a usable
    CUDA device, or an index past the last GPU, is a clear error instead of a failure mid-sweep."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} (expected cpu, cuda or cuda:N): {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device '{device}' asked for but CUDA is not available here ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}' asked for but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def check_weights_file(path: Path | str) -> Path:
    """``path`` if it is a file; a folder or a missing path → :class:`WeightsError` naming it."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(path, "is a folder, not a weights file: give the checkpoint file itself "
                                 "(or leave --weights out to use the one found in $SEGUNC_WEIGHTS / data/weights)")
    if not path.is_file():
        raise WeightsError(path, "weights file not found")
    return path


def load_state_dict_file(path: Path, model: nn.Module, *, unwrap: tuple[str, ...] = ("model", "state_dict")) -> None:
    """Load a checkpoint into ``model`` with ``strict=True``; any problem → :class:`WeightsError`."""
    path = check_weights_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(path, f"not a readable PyTorch checkpoint (truncated or corrupt?): {type(exc).__name__}: {exc}") from None
    for key in unwrap:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(path, f"checkpoint holds a {type(state).__name__}, expected a state_dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:2]})")
        raise WeightsError(path, "weights of the wrong model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


class Backend(ABC):
    """A pretrained segmentation model behind the common batched contract."""

    name: ClassVar[str]
    #: needs a box prompt per slice (MedSAM family)
    needs_box: ClassVar[bool] = False
    #: needs a support set (UniverSeg)
    needs_support: ClassVar[bool] = False
    #: has separate ``encode`` / ``decode`` stages
    two_stage: ClassVar[bool] = False
    #: file names looked up in the weights folder when no path is given
    weight_files: ClassVar[tuple[str, ...]] = ()
    #: how to get the weights, shown when they are missing
    weights_hint: ClassVar[str] = ""
    #: version of this backend's MC-dropout samples (sites, mask order); from 2 on it is part of
    #: the ``mc_dropout`` result key, so samples that changed never reuse an old key
    dropout_version: ClassVar[int] = 1

    def max_batch(self) -> int | None:
        """Most images per full forward pass that still runs fastest on this device (None: no cap).
        Modes chunk their samples by it, so per-sample dropout generators stay aligned with the batch."""
        return None

    def __init__(self, weights: Path | str | None = None, device: str | torch.device = "cpu", **options: Any):
        self.device = resolve_device(device)
        if options.get("precision", "fp32") not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {options['precision']!r}")
        self.options = dict(options)
        self.weights_path: Path | None = Path(weights) if weights is not None else None
        self.model: nn.Module = self.build()
        self.model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    # -- construction -------------------------------------------------------------
    @abstractmethod
    def build(self) -> nn.Module:
        """Create the network and load its weights (raise :class:`WeightsError` on problems)."""

    @classmethod
    def find_weights(cls, weights_dir: Path | str | None = None) -> Path | None:
        """First of ``weight_files`` present in ``weights_dir`` (default ``$SEGUNC_WEIGHTS``)."""
        d = Path(weights_dir) if weights_dir is not None else settings.weights_dir()
        for name in cls.weight_files:
            if (d / name).is_file():
                return d / name
        return None

    def resolve_weights(self) -> Path:
        """The weights file to load: the given path (a file, not a folder), or one found in the weights folder."""
        if self.weights_path is not None:
            check_weights_file(self.weights_path)
            return self.weights_path
        found = self.find_weights(self.options.get("weights_dir"))
        if found is None:
            where = self.options.get("weights_dir") or settings.weights_dir()
            raise WeightsError(
                None,
                f"no weights for backend '{self.name}': none of {list(self.weight_files)} in {where}. {self.weights_hint}",
            )
        self.weights_path = found
        return found

    @property
    def weights_sha256(self) -> str:
        """sha256 of the loaded weights file (part of every result key)."""
        if not hasattr(self, "_sha"):
            self._sha = file_sha256(self.weights_path) if self.weights_path else "none"
        return self._sha

    def settings(self) -> dict[str, Any]:
        """Everything besides the weights that changes this backend's output."""
        return {"backend": self.name, **{k: v for k, v in sorted(self.options.items()) if k != "weights_dir"}}

    # -- inference ----------------------------------------------------------------
    @abstractmethod
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``B 3 H W`` raw float images → model input."""

    @abstractmethod
    def forward(self, x: torch.Tensor, boxes: torch.Tensor | None, out_hw: tuple[int, int]) -> torch.Tensor:
        """Preprocessed input (+ boxes ``B 4`` xyxy in original pixels) → logits ``B H W``."""

    def autocast(self):
        """bf16 autocast on CUDA when ``precision='bf16'`` (checked against fp32 by the
        benchmark); fp32 otherwise. Outputs are always returned as float32."""
        if self.options.get("precision", "fp32") == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def logits(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Raw images ``B 3 H W`` (0..255 scale) → foreground logits ``B H W``."""
        with self.autocast():
            out = self.forward(self.preprocess(images.to(self.device)), boxes, tuple(images.shape[-2:]))
        return out.float()

    # Two-stage models override these.
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"backend '{self.name}' has no separate encoder")

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None, out_hw: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError(f"backend '{self.name}' has no separate decoder")

    def dropout_scope(self, placement: str = "all") -> list[nn.Module]:
        """Sub-modules in which MC dropout is injected: ``all`` = whole network;
        two-stage models also accept ``decoder`` (prompt encoder + mask decoder)."""
        if placement != "all":
            raise ValueError(f"backend '{self.name}' supports dropout placement 'all' only, not {placement!r}")
        return [self.model]

    def prepare_slice(self, slice_, **context: Any) -> dict[str, Any]:
        """Per-slice extras the backend needs (box prompt...). Default: none."""
        return {}



#: name → backend class; each backend module registers itself with ``@BACKENDS.register(name)``
BACKENDS: Registry[Backend] = Registry("backend")


def get_backend(name: str, **kwargs) -> Backend:
    """Instantiate a registered backend by name."""
    return BACKENDS.get(name)(**kwargs)


def found_weights(weights_dir=None) -> dict:
    """Per registered backend (display order): the weights file it would load, or None when missing
    (a lookup that fails counts as missing)."""
    out = {}
    for name in BACKENDS.names():
        try:
            out[name] = BACKENDS.get(name).find_weights(weights_dir)
        except Exception:  # noqa: BLE001 - e.g. an unreadable weights folder
            out[name] = None
    return out


def available_devices() -> list[str]:
    """The devices a sweep can run on here: ``cpu``, then ``cuda`` and ``mps`` when PyTorch sees them
    (imports PyTorch)."""
    mps = getattr(torch.backends, "mps", None)
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if mps and mps.is_available() else [])


def default_device() -> str:
    """``cuda`` when PyTorch sees a CUDA GPU, else ``cpu`` (the upload page and ``bench``; a sweep's
    device is always chosen explicitly). Imports PyTorch."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def box_from_mask(mask, margin: int = 0):
    """xyxy bounding box (float, pixels) of a boolean mask, grown by ``margin``; None if empty."""
    import numpy as np

    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    h, w = mask.shape
    return np.array(
        [max(0, xs.min() - margin), max(0, ys.min() - margin), min(w - 1, xs.max() + margin), min(h - 1, ys.max() + margin)],
        dtype=np.float32,
    )


def minmax01(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling to [0, 1]: ``(x - min) / max(max - min, 1e-8)``."""
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-8)
