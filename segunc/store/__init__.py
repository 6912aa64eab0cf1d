"""Results store: content-addressed results in SQLite (WAL) + compressed map files.

See ``docs/store.md`` for the layout, the key and the crash-safety protocol.
"""
from .keys import canonical_json, image_relpath, result_key, settings_id
from .maps import decode_maps, encode_maps
from .store import FRAME_COLUMNS, ResultStore, StoreFullError, StoreNotWritableError

__all__ = ["ResultStore", "StoreFullError", "StoreNotWritableError", "FRAME_COLUMNS", "canonical_json", "image_relpath", "result_key",
           "settings_id", "encode_maps", "decode_maps"]
