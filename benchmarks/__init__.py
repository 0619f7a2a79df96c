"""PurifyLab's performance suite, separate from the tests: `python -m benchmarks` or `purifylab bench`.

Sections (benchmarks/<module>.py): purification (`purifiers`), attacks (`attacks`), training
(`training`) and the app's CPU path (`app_step`); each figure is measured against the naive reference
(`naive`) in the same run. Settings and presets: `settings`; the report: `suite`, `report`; see BENCHMARKS.md.
Apart from the suite, `python -m benchmarks.refusals` times the CLI's refusals of bad input.
"""
