"""A check the plot-writing tests share."""

import matplotlib.image
import numpy as np
from PIL import Image


def assert_plot_png(path):
    """`path` is a whole, valid PNG of a plot: its signature, chunks that pass their CRCs,
    pixels that decode to a sensible size, many colours, and ink on a small part of the
    canvas (not blank, not one solid fill). No exact pixel size: that is matplotlib's."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        assert im.format == "PNG", path
        im.verify()  # every chunk's CRC; raises on a damaged or truncated file
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4), (path, img.shape)
    h, w = img.shape[:2]
    assert 150 <= min(h, w) and max(h, w) <= 4000 and 1 / 5 <= h / w <= 5, (path, h, w)
    rgb = img[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 16, path  # anti-aliased lines and text
    inked = float((rgb.min(axis=1) < 0.9).mean())  # pixels not (near) white
    assert 0.005 < inked < 0.9, (path, inked)
