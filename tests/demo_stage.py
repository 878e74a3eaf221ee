"""A stage declared outside the book's registry, for tests/test_stages.py: what adding a chapter takes."""

from ersam_lib.core.stages import Stage

DEMO = Stage("demo", "07", "07_demo", "A demo chapter", folder="demo", files={"demo_table": "table.csv"},
             metrics={"rows": "count", "mean_acc": "accuracy", "demo_s": "machine"})
