"""Run the pipeline on one uploaded slice (the app's "Your image" page): :func:`evaluate_upload`,
beside :func:`segunc.pipeline.evaluate_slice`. Decoding and validating the upload is
:mod:`segunc.data.upload`; nothing here is stored."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

from .data.upload import UploadedSlice, check_box


def evaluate_upload(backend, upload: UploadedSlice, modes: Iterable[str], config,
                    box: Sequence[float] | None = None, on_mode: Callable[[str], None] | None = None) -> dict:
    """Run ``modes`` of ``backend`` on an uploaded slice (:func:`segunc.pipeline.evaluate_slice`).

    MedSAM-family backends need a box: ``box`` (xyxy, 256 × 256 pixels), else the bounding box of
    the uploaded mask grown by the backend's ``box_margin``. Without a mask the results carry
    no metrics (``metrics == {}``) — there is nothing to score against. Nothing is stored."""
    from .pipeline import evaluate_slice

    b = check_box(box, upload.image.shape[:2])
    if backend.needs_box and b is None and not upload.has_tumour:
        raise ValueError(f"backend '{backend.name}' needs a box prompt: type a box (x0, y0, x1, y1) or upload a "
                         "mask with tumour pixels (its bounding box is used)")
    modes = list(modes)
    if not modes:
        raise ValueError("choose at least one mode")
    results = evaluate_slice(backend, upload, modes, config, on_mode=on_mode,
                             box=b if backend.needs_box else None)
    if not upload.has_mask:
        for r in results.values():
            r.metrics = {}
            r.tumour_px = 0
    return results
