"""Network calls on a CPU in micro-batches that fit its caches.

On a CPU a call over many images at once is bound by memory traffic, not arithmetic: the
activations of a whole attack batch (16 X-rays x 8 EOT draws at 128 px) or of a certificate's 250
noisy copies outgrow the caches. Measured on the 2-core AMD EPYC, one torch thread (BENCHMARKS.md,
"Network calls in micro-batches"): an exact white-box step through `one_shot` + `resnet` took 3.57 s
per X-ray with whole calls and 1.33 s with the UNet in chunks of 4; `resnet` scoring 250 X-rays
1.24 s whole and 0.64 s in chunks of 16. So each chunk holds at most the pixels below, and calls
on a GPU run whole. Nothing mixes images in eval mode (GroupNorm, attention, BatchNorm's running
statistics), so the result is that of one call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Image pixels per chunk, by kind of network (read at call time, so a benchmark can set them).
PIXELS = {"unet": 4 * 128 * 128, "classifier": 16 * 128 * 128}


def in_micro_batches(call: Callable[..., torch.Tensor], kind: str, *rows: torch.Tensor) -> torch.Tensor:
    """`call(*rows)`, in chunks of at most `PIXELS[kind]` image pixels along dim 0 when the rows are on a CPU."""
    first = rows[0]
    size = max(1, PIXELS[kind] // (first.shape[-2] * first.shape[-1]))
    if first.device.type != "cpu" or first.shape[0] <= size:
        return call(*rows)
    return torch.cat([call(*chunk) for chunk in zip(*(row.split(size) for row in rows), strict=True)])
