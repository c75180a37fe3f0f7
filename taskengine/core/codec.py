"""Encoding of payloads and results as tagged cloudpickle blobs.

Trust boundary: decoding a blob runs code chosen by whoever wrote it (pickle semantics).  Only
the embedding application writes payloads, and only the store's owner may write the store; see
``docs/explanation/security.md``.  Every blob starts with a small header naming the serializer
and the Python major.minor that wrote it, because cloudpickle output is only readable by the same
Python version: a mismatch is reported as such instead of as an obscure unpickling traceback.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any, Final

import cloudpickle

__all__ = ["BlobFormatError", "decode", "encode", "header_of"]

_MAGIC: Final = b"TE"
_CLOUDPICKLE: Final = b"c"
_PROTOCOL: Final = 5
_HEADER: Final = _MAGIC + _CLOUDPICKLE + bytes((sys.version_info.major, sys.version_info.minor))
_HEADER_LEN: Final = len(_HEADER)
#: Types that cloudpickle pickles exactly as the standard pickler does (no code, no classes by
#: value): their blobs skip building a cloudpickle Pickler, a few microseconds per task each way.
_PLAIN: Final = frozenset({type(None), bool, int, float, str, bytes})
#: A plain ``str`` or ``bytes`` at least this long is pickled into a buffer that already holds
#: the header: ``header + pickle.dumps(value)`` would hold two copies of it at once.
_LARGE: Final = 64 * 1024


class BlobFormatError(ValueError):
    """A blob is not a taskengine blob, or was written by another Python version."""


def encode(value: Any) -> bytes:
    """Serialise ``value`` with cloudpickle behind the format header.

    Raises whatever cloudpickle raises for an unpicklable value; callers turn that into the
    error their context needs (``TaskValidationError`` at ``create``, a task error in a worker).
    """
    kind = type(value)
    large = (kind is bytes or kind is str) and len(value) >= _LARGE
    if kind in _PLAIN and not large:
        return _HEADER + pickle.dumps(value, protocol=_PROTOCOL)
    # The header goes into the pickler's own output buffer first, so that the blob is the one
    # copy of the value's bytes: large values are the reason this path exists.
    with io.BytesIO() as buffer:
        buffer.write(_HEADER)
        if kind in _PLAIN:
            pickle.Pickler(buffer, protocol=_PROTOCOL).dump(value)
        else:
            cloudpickle.Pickler(buffer, protocol=_PROTOCOL).dump(value)
        return buffer.getvalue()


def header_of(blob: bytes) -> tuple[str, tuple[int, int]]:
    """Return ``(serializer, (major, minor))`` of a blob, or raise ``BlobFormatError``."""
    if len(blob) < _HEADER_LEN or blob[:2] != _MAGIC:
        raise BlobFormatError("not a taskengine blob (bad header)")
    serializer = {_CLOUDPICKLE[0]: "cloudpickle"}.get(blob[2])
    if serializer is None:
        raise BlobFormatError(f"unknown serializer tag {blob[2]!r}")
    return serializer, (blob[3], blob[4])


def decode(blob: bytes) -> Any:
    """Deserialise a blob made by :func:`encode`.

    Raises ``BlobFormatError`` for a foreign header or another Python version, and lets the
    unpickler's own exception through otherwise, so that a worker can report its real type.
    """
    _, (major, minor) = header_of(blob)
    if (major, minor) != sys.version_info[:2]:
        raise BlobFormatError(
            f"written by Python {major}.{minor}, cannot be read by Python "
            f"{sys.version_info.major}.{sys.version_info.minor}"
        )
    return cloudpickle.loads(memoryview(blob)[_HEADER_LEN:])
