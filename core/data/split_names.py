"""The names of the splits a data set is read at (`core.data.loading`), declared without torch: the
CLI refuses a mistyped --split before it imports the loader, and torch with it."""

SPLITS = ("train", "val", "test", "all")
