import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "pipelines" / "data" / "quickstart_problems.jsonl"


def _generator():
    spec = importlib.util.spec_from_file_location("make_quickstart", ROOT / "pipelines/data/make_quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_file_is_what_the_generator_writes():
    assert [json.loads(line) for line in SHIPPED.open()] == _generator().problems()


def test_answers_are_right_for_a_checkable_template():
    for row in map(json.loads, SHIPPED.open()):
        m = re.match(r"A rectangle is (\d+) cm wide and (\d+) cm long", row["problem"])
        if m:
            assert int(row["answer"]) == int(m[1]) * int(m[2])
