"""Training loops: classifiers (core.train.classifier) and diffusion purifiers (core.train.diffusion)."""
