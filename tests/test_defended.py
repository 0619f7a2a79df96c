"""DefendedClassifier (purifier, then classifier): its seed is checked by one rule wherever it is set."""

from __future__ import annotations

import pytest
import torch

from core.defended import DefendedClassifier
from core.errors import PurifyLabError
from core.models import create_classifier
from core.purifiers import create_purifier


def test_reset_refuses_a_seed_that_is_not_an_integer_as_the_constructor_does():
    """reset() took int(seed): 1.7 ran seed 1, '3' seed 3 and True seed 1, where __init__ refuses all three."""
    torch.manual_seed(0)
    classifier = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8)).eval()
    defended = DefendedClassifier(create_purifier("gaussian", sigma=0.5), classifier, seed=3)
    for seed in (1.7, "3", True):
        with pytest.raises(PurifyLabError) as refused:
            defended.reset(seed)
        assert str(refused.value) == f"seed must be an integer; got {seed!r}"
        assert defended.seed == 3
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    defended.reset(5)  # the draws of a classifier built with seed 5
    fresh = DefendedClassifier(create_purifier("gaussian", sigma=0.5), classifier, seed=5)
    with torch.no_grad():
        assert torch.equal(defended(x), fresh(x))
