"""Network calls on a CPU in micro-batches that fit its caches.

On a CPU a call over many images at once is bound by memory traffic, not arithmetic: the
activations of a whole attack batch (16 X-rays x 8 EOT draws at 128 px) or of a certificate's 250
noisy copies outgrow the caches, and their fresh allocations page-fault. Measured on the idle 2-core
AMD EPYC, one torch thread (`python -m benchmarks.micro_batch`, BENCHMARKS.md): an exact white-box
step through `one_shot` + `resnet` on 16 X-rays took 37.5 s with whole calls and 15.3 s in
micro-batches; scoring 100 purified X-rays 13.1 s and 6.5 s. So each chunk holds at most the pixels
below, and calls on a GPU run whole. Nothing mixes images in eval mode (GroupNorm, attention,
BatchNorm's running statistics), so the result is that of one call.
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
