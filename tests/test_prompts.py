import pytest

from factory.config import TeacherConfig
from factory.teacher.prompts import chat_messages, prompt_token_ids, render_prompt


@pytest.fixture()
def teacher(tiny_qwen2, tmp_path):
    template = tmp_path / "user.txt"
    template.write_text("{problem}\nPut the answer in \\boxed{}.")
    return TeacherConfig(model=str(tiny_qwen2), prompt_template=str(template), system_prompt="Be brief.")


def test_prompt_has_system_user_and_one_reasoning_prefix(teacher):
    text = render_prompt(teacher, "What is {x}?")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "What is {x}?\nPut the answer in \\boxed{}." in text  # braces survive
    assert text.endswith("<|im_start|>assistant\n<think>\n") and text.count("<think>") == 1


@pytest.mark.parametrize("ending", ["<think>\n", "<think>"])
def test_a_template_that_already_opens_the_think_block_is_not_doubled(teacher, tmp_path, ending):
    chat = tmp_path / "chat.jinja"
    chat.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}A: " + ending + "{% endif %}")
    text = render_prompt(teacher.model_copy(update={"chat_template": str(chat)}), "2+2?")
    assert text.endswith("A: <think>\n") and text.count("<think>") == 1


def test_tokens_carry_no_extra_special_tokens(teacher):
    text = render_prompt(teacher, "2+2?")
    ids = prompt_token_ids(teacher, text)
    assert ids[0] == prompt_token_ids(teacher, "<|im_start|>")[0]


def test_chat_messages_without_template_is_the_problem():
    assert chat_messages(TeacherConfig(), "p") == [{"role": "user", "content": "p"}]
