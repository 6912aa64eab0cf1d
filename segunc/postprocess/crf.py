"""CRF step (paper §3.4): dense-CRF refinement of the fused map, y_crf = CRF(y_fusion).
The CRF itself is :func:`segunc.refine.crf.dense_crf`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..config import PipelineConfig
from ..refine.crf import dense_crf
from ..uncertainty import binary_entropy
from .base import POST_STEPS, PostStep, StepInput, StepOutput


@POST_STEPS.register("crf")
class CRF(PostStep):
    def requires(self, config: PipelineConfig) -> list[str]:
        return ["fusion"]

    def params(self, config: PipelineConfig) -> dict[str, Any]:
        return {"mode": "crf", **config.crf.as_dict()}

    def run(self, inputs: StepInput, config: PipelineConfig) -> StepOutput:
        refined = dense_crf(inputs.maps["fusion"]["mean"], inputs.image, **config.crf.as_dict())
        maps = dict(inputs.maps["fusion"])  # variance and mutual information stay those of the fusion
        maps["mean"] = refined.astype(np.float32)
        maps["entropy"] = binary_entropy(refined).astype(np.float32)
        return StepOutput(maps)
