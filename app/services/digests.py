"""sha256 of files: hashed while written (exports) or read back (snapshot files and their checks), and the HTTP
`Repr-Digest` value that carries it."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from pathlib import Path

BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), read in blocks so memory stays constant."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_hashed(path: Path, chunks: Iterable[bytes]) -> str:
    """Write `chunks` to `path` and return their sha256 (hex), hashed as they go: the file is never read back."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for data in chunks:
            fh.write(data)
            digest.update(data)
    return digest.hexdigest()


def repr_digest(sha256_hex: str) -> str:
    """RFC 9530 `Repr-Digest` value: sha-256=:<base64 of the digest>:"""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"
