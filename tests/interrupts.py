"""Fault injection for the resume tests: a KeyboardInterrupt, as a Ctrl-C or a SIGTERM ends the
process, raised where a named safetensors file is written, whichever path writes it: a checkpoint's
tensors (`write_new_file`) or a weights file and its card (`core.weights.save_weights` -> `write_files`)."""

from __future__ import annotations

from pathlib import Path


def interrupt_writing(monkeypatch, file_name: str, nth: int = 1) -> None:
    """The `nth` write of a file named `file_name` raises KeyboardInterrupt before any byte of it lands;
    every other file is written for real."""
    import core.train.checkpoint
    import core.weights

    writes = []

    def interrupted(name: str) -> None:
        if name == file_name:
            writes.append(name)
            if len(writes) == nth:
                raise KeyboardInterrupt

    real_write_new_file, real_write_files = core.train.checkpoint.write_new_file, core.weights.write_files

    def write_new_file(path, content):
        interrupted(Path(path).name)
        return real_write_new_file(path, content)

    def write_files(contents):
        for path in contents:
            interrupted(Path(path).name)
        return real_write_files(contents)

    monkeypatch.setattr(core.train.checkpoint, "write_new_file", write_new_file)
    monkeypatch.setattr(core.weights, "write_files", write_files)
