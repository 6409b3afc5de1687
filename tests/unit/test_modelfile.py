"""The Modelfile as ollama reads it: instructions, quoting, parameters; a mistake names its
line; what `render` writes, `parse` reads back."""

import pytest

from llmlb.sources.modelfile import ModelfileError, parse, render

FULL = '''# a comment
FROM ./model.gguf
from ./mmproj.gguf
ADAPTER ./lora.gguf
TEMPLATE """{{ .System }}
{{ .Prompt }}"""
SYSTEM You are a pirate.
PARAMETER temperature 0
PARAMETER stop "<|im_end|>"
PARAMETER stop <|endoftext|>
PARAMETER num_ctx 4096
MESSAGE user Hi there
MESSAGE assistant "Ahoy"
LICENSE """MIT
text"""
'''


def test_every_instruction_is_read():
    mf = parse(FULL)
    assert mf.froms == [(2, "./model.gguf"), (3, "./mmproj.gguf")]
    assert mf.adapters == [(4, "./lora.gguf")]
    assert mf.template == "{{ .System }}\n{{ .Prompt }}"
    assert mf.system == "You are a pirate."
    assert mf.parameters == {
        "temperature": 0.0,
        "stop": ["<|im_end|>", "<|endoftext|>"],
        "num_ctx": 4096,
    }
    assert mf.messages == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Ahoy"},
    ]
    assert mf.license == ["MIT\ntext"]


def test_what_render_writes_parse_reads_back():
    mf = parse(FULL)
    awkward = 'has """ inside, a \\ and "quotes"'
    text = render(
        [v for _, v in mf.froms],
        adapters=[v for _, v in mf.adapters],
        template=mf.template,
        system=awkward,
        parameters=mf.parameters,
        messages=[*mf.messages, {"role": "user", "content": ' "quoted" start'}],
        license="\n".join(mf.license),
    )
    back = parse(text)
    assert (back.froms, back.adapters) == (
        [(2, "./model.gguf"), (3, "./mmproj.gguf")],
        [(4, "./lora.gguf")],
    )
    assert (back.template, back.system, back.parameters) == (mf.template, awkward, mf.parameters)
    assert back.messages[-1]["content"] == ' "quoted" start'
    assert back.license == mf.license


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM x\nFORM y", "Modelfile line 2: unknown instruction 'FORM'"),
        ("FROM x\n\nPARAMETER foo 1", "Modelfile line 3: unknown parameter 'foo'"),
        (
            "FROM x\nPARAMETER temperature hot",
            "Modelfile line 2: parameter 'temperature' must be a number",
        ),
        (
            "FROM x\nPARAMETER temperature 3",
            "Modelfile line 2: parameter 'temperature' must be from 0.0 to 2.0",
        ),
        ("FROM x\nPARAMETER top_k 1.5", "Modelfile line 2: parameter 'top_k' must be an integer"),
        (
            "FROM x\nMESSAGE bot hi",
            "Modelfile line 2: MESSAGE role 'bot' is not one of system, user, assistant",
        ),
        ('FROM x\nSYSTEM """never ends', 'Modelfile line 2: unterminated """ string'),
        ("SYSTEM hello", "the Modelfile has no FROM line"),
        ('FROM x\nSYSTEM "a" b', "Modelfile line 2: unexpected text after the value: b"),
    ],
)
def test_a_mistake_names_its_line(text, message):
    with pytest.raises(ModelfileError) as err:
        parse(text)
    assert err.value.message.startswith(message)
