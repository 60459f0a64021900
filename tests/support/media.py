"""Small media helpers for tests: PNG headers and a generated WAV tone."""

from __future__ import annotations

import io
import math
import struct
import wave

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) from a PNG's IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def wav_tone(seconds: float = 0.5, rate: int = 16000, frequency: float = 440.0) -> bytes:
    """Build a mono 16-bit WAV of a sine tone."""
    frames = bytearray()
    for index in range(int(seconds * rate)):
        sample = int(12000 * math.sin(2 * math.pi * frequency * index / rate))
        frames += struct.pack("<h", sample)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(bytes(frames))
    return buffer.getvalue()
