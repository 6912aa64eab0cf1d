"""``mc_dropout``: dropout injected at test time into a model trained without it
(Ledda et al. 2023, "Dropout injection at test time"; Gal & Ghahramani 2016), y_i =
f_dropout(x, p), T samples (paper §3.2: p = 0.01, T = 30). No retraining.

Where: a forward hook on every *site* in the backend's dropout scope zeroes each output
element with probability p and rescales by 1/(1-p). Sites are the activation modules
(ReLU, GELU, SiLU, ...) and the existing ``nn.Dropout`` modules (p = 0 in LiteMedSAM) —
i.e. where a network trained with dropout would have it. For the U-Net that is the 18
ReLUs; for the MedSAM family ``placement='all'`` covers encoder + decoder and
``placement='decoder'`` only the prompt encoder and mask decoder (one encoder pass per
slice). Hooks are removed on exit, so the model is unchanged for the next mode.

All T samples of a slice go through the network in batches of ``batch_size`` (capped by the
backend); with ``placement='decoder'`` the decoder takes :data:`~.base.DECODE_BATCH` prompts per
call on the one embedding, whatever ``batch_size``, and distinct embeddings are decoded one at a
time (``SamFamilyBackend``), so the float rounding of a sample never depends on the batch size
(the TinyViT encoder is batch-invariant: bitwise equal at encoder batch 1 and 3). Sample i draws its
masks from its own CPU generator (seeded by seed, slice, i), in a fixed logical order of
the activation's coordinates — (N, H, W, C) for 4-D feature maps, row-major otherwise —
whatever its memory format (NCHW or channels_last) or device. So a sample is the same
for any batch size, memory format and device. A backend that splits a batch (encoder
chunks, one-by-one decoding) announces the part with ``backends.base.sub_batch``.

Each activation is dropped once: an ``nn.Dropout`` site (an identity at test time) whose
input is the already-dropped output of another site passes it through (LiteMedSAM's
TinyViT MLP: GELU followed by Dropout(p=0)).

Masks are drawn sparsely: the gaps between dropped elements of an i.i.d. Bernoulli(p)
sequence are Geometric(p), so cumulative sums of geometric draws give exactly the
dropped positions at O(p·n) random numbers instead of O(n) (100x fewer at p = 0.01).
"""
from __future__ import annotations

import functools
import weakref
from contextlib import contextmanager
from typing import Iterable, Iterator

from .._torch import nn, torch

from ..backends.base import current_sub_batch
from .base import DECODE_BATCH, MODES, Mode, SliceInput, chunks, slice_generator, step

#: the ``torch.nn`` module classes whose output is dropped (looked up when a model is first searched)
SITE_TYPE_NAMES = ("ReLU", "ReLU6", "GELU", "SiLU", "LeakyReLU", "ELU", "Hardswish", "Mish", "PReLU", "Dropout",
                   "Dropout2d")


@functools.cache
def site_types() -> tuple[type[nn.Module], ...]:
    """The classes of :data:`SITE_TYPE_NAMES`."""
    return tuple(getattr(nn, name) for name in SITE_TYPE_NAMES)


def dropout_sites(scope: Iterable[nn.Module]) -> list[nn.Module]:
    """Activation and Dropout modules under the given roots (deduplicated, in order)."""
    seen: dict[int, nn.Module] = {}
    for root in scope:
        for m in root.modules():
            if isinstance(m, site_types()):
                seen.setdefault(id(m), m)
    return list(seen.values())


def dropped_positions(n: int, p: float, generator: torch.Generator | None, device="cpu") -> torch.Tensor:
    """Indices in ``range(n)`` of an i.i.d. Bernoulli(p) drop pattern, via Geometric(p) gaps."""
    if p <= 0.0 or n == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    mean = n * p
    chunk = int(mean + 6.0 * (mean * (1 - p)) ** 0.5 + 16)
    parts, last = [], torch.zeros((), dtype=torch.float64, device=device)
    while True:
        gaps = torch.empty(chunk, dtype=torch.float64, device=device).geometric_(p, generator=generator)
        pos = torch.cumsum(gaps, 0) + last  # 1-based positions of successive drops
        parts.append(pos)
        last = pos[-1]
        if last > n:  # the sequence has passed the end: host sync only once per tensor
            break
    pos = torch.cat(parts)
    return (pos[pos <= n] - 1).long()


def logical_coords(flat: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, ...]:
    """Flat indices in the fixed logical enumeration → coordinates of a tensor of ``shape``:
    (N, H, W, C) order for 4-D ``N C H W`` maps, row-major otherwise. Independent of strides."""
    if len(shape) == 4:
        n, c, h, w = shape
        i_n, i_h, i_w, i_c = torch.unravel_index(flat, (n, h, w, c))
        return i_n, i_c, i_h, i_w
    return tuple(torch.unravel_index(flat, tuple(shape)))


def drop_(out: torch.Tensor, p: float, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Inverted dropout ``out * Bernoulli(1-p) / (1-p)`` as a new tensor (sparse mask draw).

    ``generator``: one per sample of the batch (or one for all). The leading dimension holds
    the samples in order, each as a block of ``out.shape[0] / len(generators)`` rows; sample
    b's drops come from generator b in :func:`logical_coords` order, so a sample's masks do
    not depend on batch size, memory format or device.
    """
    gens = generator if isinstance(generator, list) else [generator]
    y = out * (1.0 / (1.0 - p))  # keeps the memory format
    if y.dim() == 0 or y.numel() == 0:
        return y
    if y.shape[0] % len(gens):
        raise RuntimeError(f"dropout site output of shape {tuple(y.shape)} cannot be split into {len(gens)} samples; "
                           "a backend that splits a batch must announce it with backends.base.sub_batch")
    per = y.numel() // len(gens)
    flat = torch.cat([b * per + dropped_positions(per, p, g) for b, g in enumerate(gens)])
    if flat.numel():
        y[tuple(t.to(y.device) for t in logical_coords(flat, y.shape))] = 0
    return y


class SampleRNG:
    """Per-sample generators for the chunk of samples currently in the network."""

    def __init__(self, generators: list[torch.Generator]):
        self.generators = generators
        self.current: list[torch.Generator] = generators

    def select(self, part: slice) -> None:
        self.current = self.generators[part]

    def active(self) -> list[torch.Generator]:
        """Generators of the samples now in the network (narrowed by a backend's ``sub_batch``)."""
        part = current_sub_batch()
        return self.current if part is None else self.current[part]


@contextmanager
def inject_dropout(scope: Iterable[nn.Module], p: float, generator: torch.Generator | SampleRNG | None = None) -> Iterator[int]:
    """Within the block, every site's output is ``out * Bernoulli(1-p) / (1-p)``, each activation
    once (a Dropout site fed by another site's dropped output passes it on); yields the site count."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    sites = dropout_sites(scope)
    dropped: dict[int, weakref.ref] = {}  # id → tensor returned by a site hook

    def already_dropped(t) -> bool:
        ref = dropped.get(id(t))
        return ref is not None and ref() is t

    def hook(module, inputs, out):
        if not isinstance(out, torch.Tensor) or p == 0.0:
            return out
        if isinstance(module, (nn.Dropout, nn.Dropout2d)) and inputs and already_dropped(inputs[0]):
            return out  # an identity at test time on an activation dropped by the previous site
        gens = generator.active() if isinstance(generator, SampleRNG) else generator
        y = drop_(out, p, gens)
        dropped[id(y)] = weakref.ref(y)
        return y

    handles = [m.register_forward_hook(hook) for m in sites]
    try:
        yield len(sites)
    finally:
        for h in handles:
            h.remove()
        dropped.clear()


@MODES.register("mc_dropout")
class MCDropout(Mode):
    def __init__(self, samples: int = 30, seed: int = 0, batch_size: int = 16, p: float = 0.01, placement: str = "all"):
        super().__init__(samples, seed, batch_size, p=float(p), placement=placement)

    def key_params(self, backend) -> dict:
        """``params()`` plus the backend's dropout version when its samples changed (see ``Backend.dropout_version``)."""
        v = getattr(backend, "dropout_version", 1)
        return {**self.params(), "dropout_version": v} if v > 1 else self.params()

    def sample_logits(self, backend, x: SliceInput) -> torch.Tensor:
        p, placement = self.extra["p"], self.extra["placement"]
        scope = backend.dropout_scope(placement)
        rng = SampleRNG([slice_generator(self.seed, f"{x.slice_id}#{i}", self.name, "cpu")
                         for i in range(self.samples)])
        out = []
        with inject_dropout(scope, p, rng):
            if placement == "decoder" and backend.two_stage:
                if x.box is None:
                    return backend.logits(x.image, None).expand(self.samples, -1, -1)
                emb = backend.encode(x.image)  # outside the scope: no dropout, one pass
                for c in chunks(self.samples, DECODE_BATCH):  # never the user's batch size
                    rng.select(c)
                    out.append(backend.decode(emb, x.box.expand(c.stop - c.start, -1), x.hw))
            else:
                for c in chunks(self.samples, step(self.batch_size, backend)):
                    rng.select(c)
                    n = c.stop - c.start
                    box = None if x.box is None else x.box.expand(n, -1)
                    out.append(backend.logits(x.image.expand(n, -1, -1, -1), box))
        return torch.cat(out)
