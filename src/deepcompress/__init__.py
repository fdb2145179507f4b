"""deepcompress: Deep Compression (Han, Mao, Dally, ICLR 2016) for PyTorch.

import deepcompress as dc
dc.prune_(model, sparsity=0.9)        # stage 1: magnitude pruning, masks held in training
dc.quantize_(model)                   # stage 2: k-means weight sharing, trainable codebooks
dc.save(model, "model.dcz")           # stage 3: sparse index + Huffman coding, one file
state = dc.load("model.dcz")          # {name: dense tensor}
dc.encode_state_dict(sd, "m.dcz", sparsity=0.5, bits=6)  # post-training, no retraining
"""

from .api import __version__, load, load_bytes, save, strip_
from .errors import FormatError
from .posttrain import encode_state_dict
from .pruning import magnitude_mask, prune_, threshold_mask
from .sensitivity import auto_sparsity, plot_sensitivity, sensitivity
from .sharing import kmeans_1d, quantize_

__all__ = [
    "FormatError",
    "__version__",
    "auto_sparsity",
    "encode_state_dict",
    "kmeans_1d",
    "load",
    "load_bytes",
    "magnitude_mask",
    "plot_sensitivity",
    "prune_",
    "quantize_",
    "save",
    "sensitivity",
    "strip_",
    "threshold_mask",
]
