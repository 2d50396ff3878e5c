"""File sha256: hashed while written equals hashed when read back; the Repr-Digest form of it."""

import base64
import hashlib

from app.services.digests import file_sha256, repr_digest, write_hashed


def test_written_and_read_back_digests_agree(tmp_path, monkeypatch):
    monkeypatch.setattr("app.services.digests.BLOCK", 3)  # several blocks
    chunks = [b"first ", "sécond\n".encode(), b"", b"x" * 10]
    written = write_hashed(tmp_path / "f", chunks)
    assert written == file_sha256(tmp_path / "f") == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert repr_digest(written) == f"sha-256=:{base64.b64encode(hashlib.sha256(b''.join(chunks)).digest()).decode()}:"
