"""Writes quickstart_problems.jsonl: math word problems from templates, with answers computed here.

Deterministic (fixed seed), so the shipped file can be regenerated and checked:
    python pipelines/data/make_quickstart.py
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

OUT = Path(__file__).with_name("quickstart_problems.jsonl")
NAMES = ["Ava", "Ben", "Chen", "Dina", "Eli", "Fatima", "Goro", "Hana", "Ivan", "Jo"]
ITEMS = ["apples", "stickers", "marbles", "books", "pencils", "cookies"]


def _sold_half(r: random.Random):
    name, item, a = r.choice(NAMES), r.choice(ITEMS), 2 * r.randint(5, 60)
    return f"{name} sold {a} {item} in April and half as many in May. How many {item} did {name} sell in April and May altogether?", a + a // 2


def _hourly(r: random.Random):
    name, rate, minutes = r.choice(NAMES), 12 * r.randint(1, 4), r.choice([15, 20, 30, 40, 45, 50])
    pay = Fraction(rate * minutes, 60)
    return f"{name} earns ${rate} an hour for tutoring. Yesterday {name} tutored for {minutes} minutes. How many dollars did {name} earn?", pay


def _boxes(r: random.Random):
    boxes, per, given = r.randint(3, 12), r.randint(4, 24), r.randint(1, 20)
    return f"A shop has {boxes} boxes with {per} pens each. It gives away {given} pens. How many pens are left?", boxes * per - given


def _rectangle(r: random.Random):
    w, h = r.randint(2, 30), r.randint(2, 30)
    return f"A rectangle is {w} cm wide and {h} cm long. What is its area in square centimetres?", w * h


def _speed(r: random.Random):
    speed, hours = r.randint(20, 90), r.randint(2, 9)
    return f"A train travels at {speed} km per hour for {hours} hours. How many kilometres does it travel?", speed * hours


def _share(r: random.Random):
    friends, each, extra = r.randint(2, 9), r.randint(2, 15), r.randint(1, 9)
    total = friends * each + extra
    return f"{total} candies are shared equally among {friends} friends, and the candies that cannot be shared are kept in a jar. How many candies go in the jar?", extra


TEMPLATES = [_sold_half, _hourly, _boxes, _rectangle, _speed, _share]


def _answer(value) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def problems(count: int = 36, seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for i in range(count):
        text, answer = TEMPLATES[i % len(TEMPLATES)](r)
        rows.append({"problem_id": f"quickstart-{i:03d}", "problem": text, "answer": _answer(answer)})
    return rows


if __name__ == "__main__":
    OUT.write_text("".join(json.dumps(row) + "\n" for row in problems()))
    print(f"wrote {OUT}")
