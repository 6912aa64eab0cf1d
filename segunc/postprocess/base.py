"""The post-processing step contract: maps of modes already computed → new maps.

A step (fusion, CRF, …) runs after the sampling modes on one slice. It declares the modes or
steps it ``requires`` under a config, the ``params`` that determine its output (part of every
result key), and ``run``, which gets those inputs and returns the step's maps. Register a new
step in its own module with ``@POST_STEPS.register("name")`` and import that module in
:mod:`segunc.postprocess`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..config import PipelineConfig
from ..registry import Registry

__all__ = ["PostStep", "StepInput", "StepOutput", "POST_STEPS", "MAP_NAMES"]

MAP_NAMES = ("mean", "variance", "entropy", "expected_entropy", "mutual_information")


@dataclass
class StepInput:
    """What a step may read: the slice's ``image`` (H W C uint8), and per computed mode or step
    its maps (``MAP_NAMES`` → float32 H W) and, for sampling modes, its samples (T H W)."""

    image: np.ndarray
    maps: dict[str, dict[str, np.ndarray]]
    samples: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class StepOutput:
    """A step's maps (``MAP_NAMES``), and its threshold and mask when it picks its own
    (None: the mask is ``mean >= 0.5``)."""

    maps: dict[str, np.ndarray]
    threshold: float | None = None
    pred: np.ndarray | None = None


class PostStep(ABC):
    """One registered post-processing step (stateless; configured by the ``PipelineConfig``)."""

    name: ClassVar[str]

    @abstractmethod
    def requires(self, config: PipelineConfig) -> list[str]:
        """Modes or steps whose results this step reads (its direct dependencies)."""

    @abstractmethod
    def params(self, config: PipelineConfig) -> dict[str, Any]:
        """Key material of this step: everything in ``config`` that changes its output."""

    @abstractmethod
    def run(self, inputs: StepInput, config: PipelineConfig) -> StepOutput:
        """Compute the step's maps from the maps of :meth:`requires`."""


POST_STEPS: Registry[PostStep] = Registry("post-processing step")
