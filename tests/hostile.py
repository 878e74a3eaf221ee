"""What a hostile user or a failing disk does to the files of a run (issue 30): a card written by hand with the right
program name and SHA-256 (so that a test reaches the checks behind the card's identity), and weights whose floats
had bits flipped in place (they still load: only a digest finds them)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any


def forge_card(program: Path, card: dict[str, Any] | str, **changes: Any) -> Path:
    """Write ``program``'s ``.json`` card from ``card`` (a dict or JSON text) with its name, digest and ``changes``."""
    base = json.loads(card) if isinstance(card, str) else dict(card)
    digest = hashlib.sha256(program.read_bytes()).hexdigest()
    path = program.with_suffix(".json")
    path.write_text(json.dumps(base | {"file": program.name, "sha256": digest} | changes))
    return path


def flip_exponents(path: Path, every: int = 7) -> int:
    """Flip an exponent bit of every ``every``-th float32 of each tensor record of the ``torch.save`` archive
    ``path``, in place (the archive stays readable, the values change); return how many bytes were flipped."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        records = [i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 4 * every]
    flipped = 0
    for info in records:
        at = info.header_offset
        name_len, extra_len = (int.from_bytes(data[at + k:at + k + 2], "little") for k in (26, 28))
        start = at + 30 + name_len + extra_len  # the local header, then the record's bytes
        for byte in range(start + 3, start + info.file_size, 4 * every):  # the high byte of a little-endian float32
            data[byte] ^= 0x40
            flipped += 1
    path.write_bytes(bytes(data))
    return flipped
