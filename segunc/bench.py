"""Benchmark: the paper's per-sample loop vs segunc's batched path vs plain batched passes.

``python -m segunc.bench --backend unet --mode mc_dropout --samples 30 --slices 4``

In one process, on real val slices, it times

1. **baseline** — the paper's scripts' style: one forward pass per sample in a Python loop
   at batch 1, a forward hook on *every* module (dropout applied at the same sites as
   segunc, dense ``torch.rand`` masks), each probability map moved to the CPU as a NumPy
   array before the next pass; MedSAM-family models re-encode the image for every sample;
2. **segunc** — the project's real code path (:mod:`segunc.modes`);
3. **raw** — plain batched forward passes of the same model, T images per slice, no
   stochastic machinery (the ceiling for this machine),

checks that segunc's mean maps agree with the baseline's, prints a table and, last, a
``RESULT`` line. Rates are images (forward passes) per second.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .backends import BACKENDS, default_device
from . import settings
from .config import PipelineConfig
from .data.lgg import load_slice
from .metrics import dice, ece
from .modes import SliceInput, slice_generator
from .modes.base import step
from .modes.box_jitter import jitter_boxes
from .modes.mc_dropout import dropout_sites
from .modes.tta import forward_boxes, forward_images, invert_logits
from .pipeline import make_mode
from .runner.sweep import select_slices

DETERMINISTIC = {"normal", "tta", "box_jitter"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _to_numpy_prob(logits: torch.Tensor) -> np.ndarray:
    return torch.sigmoid(logits).float().cpu().numpy()


def baseline_probs(backend, mode_name: str, x: SliceInput, cfg: PipelineConfig) -> np.ndarray:
    """The paper-style loop for one slice → ``T H W`` probabilities (NumPy, one sample at a time)."""
    mode = make_mode(mode_name, cfg)
    g = slice_generator(cfg.seed, x.slice_id, mode_name, backend.device)
    sites = {id(m) for m in dropout_sites(backend.dropout_scope(cfg.placement))} if mode_name == "mc_dropout" else set()
    p = cfg.p

    def hook(module, _inp, out):  # registered on every module, as the paper's MCDropout does
        if id(module) in sites and isinstance(out, torch.Tensor):
            keep = torch.rand(out.shape, generator=g, device=out.device, dtype=out.dtype) >= p
            return out * keep / (1.0 - p)
        return out

    handles = [m.register_forward_hook(hook) for m in backend.model.modules()] if mode_name == "mc_dropout" else []
    out: list[np.ndarray] = []
    try:
        if mode_name == "tta":
            for t in mode.transforms:
                img = forward_images(x.image, [t])
                box = None if x.box is None else forward_boxes(x.box, [t], x.hw)
                out.append(_to_numpy_prob(invert_logits(backend.logits(img, box), [t], x.hw))[0])
        elif mode_name == "box_jitter":
            boxes = jitter_boxes(x.box, mode.samples, mode.extra["max_px"], x.hw, g)
            for i in range(mode.samples):
                out.append(_to_numpy_prob(backend.logits(x.image, boxes[i:i + 1]))[0])
        else:
            scale = float(x.image.max() - x.image.min()) * cfg.sigma
            for _ in range(mode.samples):
                img = x.image
                if mode_name == "noisy":
                    img = img + torch.randn(img.shape, generator=g, device=img.device) * scale
                out.append(_to_numpy_prob(backend.logits(img, x.box))[0])
    finally:
        for h in handles:
            h.remove()
    return np.stack(out)


def segunc_probs(backend, mode_name: str, x: SliceInput, cfg: PipelineConfig) -> np.ndarray:
    """segunc's real path: the registered mode, one host transfer at the end."""
    return _to_numpy_prob(make_mode(mode_name, cfg).sample_logits(backend, x))


def raw_pass(backend, x: SliceInput, n: int, batch_size: int) -> None:
    """Plain batched forward passes of ``n`` copies of the slice (no stochastic machinery), at the
    batch the modes use (``batch_size`` capped by the backend's fastest batch on this device)."""
    batch_size = step(batch_size, backend)
    for start in range(0, n, batch_size):
        k = min(batch_size, n - start)
        box = None if x.box is None else x.box.expand(k, -1)
        backend.logits(x.image.expand(k, -1, -1, -1), box)
    _sync(backend.device)


@dataclass
class Timing:
    seconds: float = 0.0
    images: int = 0

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    res = fn()
    _sync(device)
    return time.perf_counter() - t0, res


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sweep_peak_rss_mb(args: argparse.Namespace, data: str) -> float:
    """Peak resident memory (MB) of a real CPU sweep — ``python -m segunc run`` of this mode on
    ``args.sweep_rss`` val slices into a throw-away store — measured in a child process."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="segunc-bench-") as cache:
        cmd = [sys.executable, "-m", "segunc", "run", "--data", data, "--backend", args.backend, "--modes", args.mode,
               "--samples", str(args.samples), "--placement", args.placement, "--limit", str(args.sweep_rss),
               "--spread", "--device", args.device, "--store", cache]
        if args.weights:
            cmd += ["--weights", args.weights]
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"sweep for the memory check failed: {r.stderr.strip()[-500:]}")
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def run(args: argparse.Namespace) -> int:
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    opts = {"weights": args.weights} if args.weights else {}
    if args.precision != "fp32":
        opts["precision"] = args.precision
    if args.backend in ("litemedsam", "medsam"):
        opts["channels"] = "flair3"
    backend = BACKENDS.get(args.backend)(device=device, **opts)
    if args.mode == "box_jitter" and not backend.needs_box:
        print(f"error: box_jitter needs a box-prompted backend, not {args.backend}", file=sys.stderr)
        return 2
    cfg = PipelineConfig(samples=args.samples, seed=args.seed, batch_size=args.batch_size, placement=args.placement)
    refs = select_slices(settings.data_dir(args.data), "val")
    refs = refs[:: max(1, len(refs) // args.slices)][: args.slices]  # spread over the split
    slices = [load_slice(r) for r in refs]
    inputs = [SliceInput.from_slice(s, backend) for s in slices]
    T = make_mode(args.mode, cfg).samples

    with torch.inference_mode():  # warm-up: allocator, oneDNN kernels, cuDNN autotune
        segunc_probs(backend, args.mode, inputs[0], cfg)
        raw_pass(backend, inputs[0], min(T, args.batch_size), args.batch_size)

    times = {k: Timing() for k in ("baseline", "segunc", "raw")}
    rows = []
    for s, x in zip(slices, inputs):
        with torch.no_grad():  # the paper's scripts use no_grad, not inference_mode
            tb, pb = _timed(lambda: baseline_probs(backend, args.mode, x, cfg), device)
        with torch.inference_mode():
            ts, ps = _timed(lambda: segunc_probs(backend, args.mode, x, cfg), device)
            tr, _ = _timed(lambda: raw_pass(backend, x, T, args.batch_size), device)
        for k, t in zip(("baseline", "segunc", "raw"), (tb, ts, tr)):
            times[k].seconds += t
            times[k].images += T
        mb, ms = np.nanmean(pb, 0), np.nanmean(ps, 0)
        rows.append({
            "slice": s.slice_id,
            "dice_means": dice(mb, mb >= 0.5, pred=ms >= 0.5) if (mb >= 0.5).any() or (ms >= 0.5).any() else 1.0,
            "max_abs": float(np.nanmax(np.abs(mb - ms))),
            "dice_gt_base": dice(mb, s.mask), "dice_gt_segunc": dice(ms, s.mask),
            "ece_base": ece(mb, s.mask), "ece_segunc": ece(ms, s.mask),
        })

    print(f"{'slice':<28} {'Dice(means)':>11} {'max|Δp|':>8} {'Dice base':>9} {'Dice segunc':>11} {'ECE base':>9} {'ECE segunc':>10}")
    for r in rows:
        print(f"{r['slice']:<28} {r['dice_means']:>11.4f} {r['max_abs']:>8.4f} {r['dice_gt_base']:>9.4f} "
              f"{r['dice_gt_segunc']:>11.4f} {r['ece_base']:>9.4f} {r['ece_segunc']:>10.4f}")
    d_base = np.mean([r["dice_gt_base"] for r in rows])
    d_seg = np.mean([r["dice_gt_segunc"] for r in rows])
    e_base = np.mean([r["ece_base"] for r in rows])
    e_seg = np.mean([r["ece_segunc"] for r in rows])
    if args.mode in DETERMINISTIC:
        agree = min(r["dice_means"] for r in rows) >= 0.99
        rule = "Dice of the mean maps ≥ 0.99 on every slice"
    else:
        agree = abs(d_base - d_seg) <= 0.02 and abs(e_base - e_seg) <= 0.01
        rule = "|Δ mean Dice| ≤ 0.02 and |Δ mean ECE| ≤ 0.01 (independent random draws)"
    print(f"\nagreement ({rule}): {'OK' if agree else 'FAILED'}  "
          f"mean Dice {d_base:.4f} vs {d_seg:.4f}, mean ECE {e_base:.4f} vs {e_seg:.4f}")
    print(f"\n{'path':<9} {'seconds':>9} {'images':>7} {'img/s':>9}")
    for k, t in times.items():
        print(f"{k:<9} {t.seconds:>9.2f} {t.images:>7d} {t.rate:>9.2f}")
    speedup = times["segunc"].rate / times["baseline"].rate
    efficiency = times["segunc"].rate / times["raw"].rate
    print(f"peak_rss_mb={peak_rss_mb():.0f} (this process: baseline + segunc + raw) threads={torch.get_num_threads()} "
          f"batch_size={args.batch_size}")
    if args.sweep_rss:
        print(f"sweep_peak_rss_mb={sweep_peak_rss_mb(args, str(settings.data_dir(args.data))):.0f} "
              f"(python -m segunc run, {args.sweep_rss} slices, T={args.samples}, separate process)")
    print(f"RESULT backend={args.backend} mode={args.mode} T={T} device={device.type} "
          f"baseline_img_s={times['baseline'].rate:.3f} segunc_img_s={times['segunc'].rate:.3f} "
          f"raw_img_s={times['raw'].rate:.3f} speedup={speedup:.2f} efficiency={efficiency:.2f}")
    return 0 if agree else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m segunc.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="unet")
    p.add_argument("--mode", default="mc_dropout", choices=["normal", "mc_dropout", "tta", "noisy", "box_jitter"])
    defaults = PipelineConfig()
    p.add_argument("--samples", type=int, default=defaults.samples)
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--device", default=default_device())
    p.add_argument("--data", default=None)
    p.add_argument("--weights", default=None)
    p.add_argument("--batch-size", type=int, default=None, help="segunc/raw batch (default 8 on CPU, 64 on GPU)")
    p.add_argument("--placement", default=defaults.placement, choices=["all", "decoder"])
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--sweep-rss", type=int, default=0, metavar="N",
                   help="also measure the peak memory of a real sweep of N slices in a child process")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 autocast (CUDA only)")
    p.add_argument("--shared", default=os.environ.get("SEGUNC_SHARED"),
                   help="folder with weights/unet_lgg_f32.pt and lgg/kaggle_3m, used when --weights / --data are not "
                        "given and the default folders lack them (default: $SEGUNC_SHARED)")
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 64 if args.device.startswith("cuda") else 8
    if args.shared:
        shared = Path(args.shared).expanduser()
        if args.weights is None and args.backend == "unet" and not BACKENDS.get("unet").find_weights():
            if (shared / "weights" / "unet_lgg_f32.pt").exists():
                args.weights = str((shared / "weights" / "unet_lgg_f32.pt").resolve())
        if args.data is None and not settings.data_dir().exists():
            args.data = str((shared / "lgg" / "kaggle_3m").resolve())
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
