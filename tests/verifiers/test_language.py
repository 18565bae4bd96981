import json

import pytest

from verifiers import check_language, detect_language
from verifiers.language import script_counts


@pytest.mark.parametrize(
    "text, target",
    [
        ("We add the two numbers and get the answer.", "en"),
        ("首先，我们计算三角形的面积，然后求出周长。", "zh"),
        # variables, point names, units, function names and LaTeX are not words of another language
        ("设 x 为三角形 ABC 的边长，且 x^2 = 4cm，求 sin A 的值。", "zh"),
        (r"由 $\frac{a}{b} = 2$ 得 \(a = 2b\)，所以答案是 \boxed{4}。", "zh"),
        ("```python\nprint('hello world')\n```\n所以程序输出问候语。", "zh"),
        ("まず、三角形の面積を計算します。", "ja"),
        ("Сначала вычислим площадь треугольника.", "ru"),
        ("Calculons d'abord l'aire du triangle.", "fr"),
    ],
)
def test_consistent_text_passes(text, target):
    verdict = check_language(text, target)
    assert verdict.passed is True and verdict.score == 1.0


@pytest.mark.parametrize(
    "text, target, max_score",
    [
        ("首先我们计算面积, then we compute the perimeter of the triangle.", "zh", 0.6),
        ("First compute the area, 然后计算周长。", "en", 0.5),
        ("We compute the area. 面积是四。", "en", 0.8),
        ("Сначала вычислим, then compute the rest of it", "ru", 0.5),
    ],
)
def test_mixed_text_fails(text, target, max_score):
    verdict = check_language(text, target)
    assert verdict.passed is False and verdict.reason == "mixed_language"
    assert 0 < verdict.score <= max_score


@pytest.mark.parametrize("text", ["", "x^2 + 1 = 5", "$$\\frac{1}{2}$$ 42", "A B C"])
def test_no_prose_cannot_be_checked(text):
    assert check_language(text, "en").passed is None


def test_unknown_target_cannot_be_checked():
    assert check_language("hello world", "tlh").passed is None


def test_min_share_is_the_threshold():
    text = "首先我们计算面积和周长 then compute"  # 10 Han characters, 2 English words
    assert check_language(text, "zh", min_share=0.8).passed is True
    assert check_language(text, "zh", min_share=0.9).passed is False


def test_script_counts_units():
    assert script_counts("我们 need 三 words") == {"han": 3, "latin": 2}


def test_a_lone_dollar_does_not_hide_the_next_lines():
    assert script_counts("it costs $5\n然后我们 compute the rest $x$ here") == {"latin": 5, "han": 4}


@pytest.mark.parametrize(
    "problem, language",
    [
        ("What is the area of a triangle with sides 3, 4 and 5?", "en"),
        ("已知函数 f(x)=x^2，求 f(2) 的值。", "zh"),
        ("计算：(1+1/a)÷(a^2-1)/(a^2+a)", "zh"),
        ("三角形の面積を求めなさい。", "ja"),
        ("Quelle est l'aire d'un triangle dont les côtés mesurent trois et quatre ?", "fr"),
        ("Найдите площадь треугольника со сторонами три и четыре.", "ru"),
        ("x^2 = 4", None),
    ],
)
def test_detect_language(problem, language):
    assert detect_language(problem) == language


def test_real_chinese_problems_are_consistent_and_detected(shared_data):
    problems = [
        json.loads(line)["question"]
        for name in ("cmath", "cn_middle_school")
        for line in (shared_data / "qwen25_math_eval" / name / "test.jsonl").open()
    ]
    assert len(problems) == 701
    assert [p for p in problems if detect_language(p) != "zh"] == []
    assert [p for p in problems if not check_language(p, "zh").passed] == []


def test_real_english_completions_and_the_degenerate_ones(shared_data):
    rows = [json.loads(line) for line in (shared_data / "qwen25_math_eval/math_cot_100.jsonl").open()]
    verdicts = [check_language(c, "en") for row in rows for c in row["code"]]
    failed = [v for v in verdicts if not v.passed]
    # Three completions end in multilingual token salad after their answer; all others are English.
    assert len(failed) == 3 and all(v.score < 0.75 for v in failed)
