"""PurifyLab engine: data, image input, models, diffusion purifiers, attacks and evaluation.

Every public boundary takes and returns float32 tensors in [0, 1], NCHW: attack budgets such as
eps = 0.03 are in that pixel scale, and any normalisation lives inside the models.
"""
