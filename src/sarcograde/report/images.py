"""How a page embeds its images: as data URIs, at the size a screen shows them, compressed, so
that a study's page of dozens of attention montages opens fast and stays one file.

explain writes each montage as a PNG of about 1200 pixels and up to a megabyte; the page shows
it in a gallery card about 440-600 pixels wide. It is embedded as WebP (lossy, quality 75) at
most 880 pixels wide (a card on a screen of twice the pixel density): about 20 times smaller,
the slices and text still sharp. The plots (ROC, calibration, Kaplan-Meier, learning curves) are
line art: embedded as PNG with a palette of at most 256 colours, lossless to the eye and a few
times smaller. The files on disk keep their full resolution.
"""

from __future__ import annotations

import base64
import io

MONTAGE_WIDTH = 880
MONTAGE_QUALITY = 75
PLOT_COLOURS = 256


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def montage_uri(png: bytes) -> str:
    """An attention montage (PNG bytes) as a WebP data URI at screen width."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if image.width > MONTAGE_WIDTH:
        height = max(1, round(image.height * MONTAGE_WIDTH / image.width))
        image = image.resize((MONTAGE_WIDTH, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "WEBP", quality=MONTAGE_QUALITY, method=6)
    return _data_uri("image/webp", out.getvalue())


def plot_uri(png: bytes) -> str:
    """A plot (PNG bytes) as a palette PNG data URI; the original where that is not smaller."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(PLOT_COLOURS, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    data = out.getvalue()
    return _data_uri("image/png", data if len(data) < len(png) else png)
