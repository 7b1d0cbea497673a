"""What a SEG-Y file must be before segyio opens it, each refusal in one line.

segyio answers a header-only file with an ``IndexError`` from inside ``segyio.open``, reads
an unknown sample format as IBM floats after a warning on stderr, and calls a file whose
binary header gives the wrong sample count "inconsistent with file size": the checks here
read the 3600-byte file header themselves and say what is wrong, and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

from falsecli.core.errors import FalseCliError

#: bytes per sample of every sample format code segyio reads (binary header bytes 3225-3226)
SAMPLE_BYTES = {1: 4, 2: 4, 3: 2, 5: 4, 6: 8, 8: 1, 9: 8, 10: 4, 11: 2, 12: 8, 16: 1}
#: offsets in the file of the binary header's sample count, sample format code and number
#: of extended textual headers
SAMPLES_OFFSET, FORMAT_OFFSET, EXTENDED_OFFSET = 3220, 3224, 3504


def _word(head: bytes, offset: int) -> int:
    return int.from_bytes(head[offset:offset + 2], "big", signed=True)


def check_file(path: Path) -> None:
    """Refuse, in one line naming ``path``, a file that is missing, shorter than its file
    header, of a sample format segyio cannot read, without traces, or whose size is not a
    whole number of traces of the length its binary header gives."""
    if not path.exists():
        raise FalseCliError(f"{path}: missing — check the path (relative paths start in the "
                            "current directory)")
    size = path.stat().st_size
    if size == 0:
        raise FalseCliError(f"{path}: empty file (0 bytes) — write or copy the SEG-Y again")
    if size < 3600:
        raise FalseCliError(f"{path}: {size} bytes is shorter than the 3600-byte SEG-Y file "
                            "header — the file is truncated or not SEG-Y")
    with open(path, "rb") as fh:
        head = fh.read(3600)
    fmt, ns = _word(head, FORMAT_OFFSET), _word(head, SAMPLES_OFFSET)
    if not 1 <= fmt <= 16:  # no SEG-Y revision defines it: not SEG-Y (or little-endian)
        raise FalseCliError(f"{path}: not a SEG-Y file (sample format code {fmt} in binary "
                            "header bytes 3225-3226); give a big-endian post-stack SEG-Y "
                            "(.sgy/.segy) or a .npy volume")
    if fmt not in SAMPLE_BYTES:
        raise FalseCliError(
            f"{path}: sample format code {fmt} (binary header bytes 3225-3226) is not one "
            f"segyio reads ({', '.join(map(str, SAMPLE_BYTES))}; 1 IBM float, 5 IEEE float) — "
            "convert the file to IEEE float samples")
    start = 3600 + 3200 * max(_word(head, EXTENDED_OFFSET), 0)
    if size <= start:
        raise FalseCliError(f"{path}: holds the file header but no traces ({size} bytes) — "
                            "the file was cut short; copy it again")
    trace_bytes = 240 + ns * SAMPLE_BYTES[fmt]
    if ns > 0 and (size - start) % trace_bytes:
        raise FalseCliError(
            f"{path}: {size - start} bytes of traces are not a whole number of traces of "
            f"{ns} samples (the binary header's count, format {fmt}) — the file is truncated, "
            "its traces differ in length, or the header's sample count is wrong; copy it "
            "again or fix binary header bytes 3221-3222")
