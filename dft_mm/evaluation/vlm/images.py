"""Images from VLMEvalKit TSV cells, decoded the way VLMEvalKit decodes them.

VLMEvalKit writes each base64 image to ``<index>.jpg`` (palette / alpha images converted to
RGB first) and hands the JPEG file to the model, so the model sees a JPEG re-encoding. We do
the same round trip in memory, so our inputs match VLMEvalKit's pixel for pixel.
"""

from __future__ import annotations

import base64
import io

# Modes PIL writes as JPEG unchanged; VLMEvalKit converts RGBA/P/LA to RGB first.
_JPEG_MODES = ("1", "L", "RGB", "CMYK")


def decode_base64_image(data: str):
    """Decode a base64 image into an RGB ``PIL.Image`` after VLMEvalKit's JPEG round trip."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.mode not in _JPEG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def encode_image_base64(image, fmt: str = "PNG") -> str:
    """Base64 of a PIL image (used to write TSVs in VLMEvalKit format)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
