"""Data: discover, split, load and validate LGG slices."""
from .lgg import (CHANNELS, SPLITS, DataError, Slice, SliceError, SliceRef, discover, has_tumour, load_image,
                  load_mask, load_slice, patient_id, resolve_root, select, split_of, tumour_only)

__all__ = ["CHANNELS", "SPLITS", "DataError", "Slice", "SliceError", "SliceRef", "discover", "has_tumour",
           "load_image", "load_mask", "load_slice", "patient_id", "resolve_root", "select", "split_of", "tumour_only"]
