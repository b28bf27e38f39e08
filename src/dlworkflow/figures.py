"""Small helpers to turn matplotlib figures and raw bytes into inline data URIs for reports."""

from __future__ import annotations

import base64
import io


def _pyplot():
    """matplotlib, imported on first use: jobs that draw nothing do not pay ~0.5 s for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def data_uri(data: bytes, mime: str) -> str:
    """`data:<mime>;base64,...` for embedding in a self-contained HTML file."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_uri(figure, dpi: int = 80) -> str:
    """Render a matplotlib figure as an inline PNG data URI and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(figure)
    return data_uri(buffer.getvalue(), "image/png")


def new_figure(width: float = 4.0, height: float = 2.6):
    """A figure and axes with the report's style."""
    figure, axes = _pyplot().subplots(figsize=(width, height))
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def new_panels(count: int, width: float = 4.0, height: float = 2.0):
    """A figure with `count` side-by-side axes."""
    figure, axes = _pyplot().subplots(1, count, figsize=(width, height))
    return figure, list(axes) if count > 1 else [axes]
