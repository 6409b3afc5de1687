"""ollama's Go templates become Jinja that renders what ollama renders (through the same
Jinja environment llmlb chats with); what cannot be translated is refused by name."""

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llmlb.sources.go_template import TemplateError, is_go_template, translate

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]
CHATML_OUT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
)
# ollama's older kind: rendered once per user turn, the last one cut at {{ .Response }}
PROMPT_STYLE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""
QWEN = """{{- if .Messages }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- end }}"""
LLAMA3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}{{ if $last }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{{ else }}<|eot_id|>{{ end }}
{{- end }}"""


def render(go: str, messages=CHAT) -> str:
    return Jinja2ChatFormatter(template=translate(go), eos_token="", bos_token="")(
        messages=messages
    ).prompt


def test_a_prompt_style_template_renders_each_turn_and_stops_at_the_response():
    assert render(PROMPT_STYLE) == CHATML_OUT


def test_a_messages_template_with_variables_renders_as_ollama_does():
    assert render(QWEN) == CHATML_OUT
    assert render(LLAMA3) == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_whitespace_is_gos_not_jinjas():
    """Jinja's trim_blocks/lstrip_blocks (on in the chat environment) change nothing."""
    go = "{{ if .System }}\n  S: {{ .System }}\n{{ end }}  {{ range .Messages }}\n[{{ .Content }}]{{ end }}"
    assert render(go, [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]) == (
        "\n  S: x\n  \n[x]\n[y]"
    )


def test_text_that_looks_like_jinja_stays_text():
    assert (
        render("{% raw %} {# {{ .Prompt }}", [{"role": "user", "content": "q"}]) == "{% raw %} {# q"
    )


@pytest.mark.parametrize(
    ("go", "named"),
    [
        ("{{ range .Tools }}x{{ end }}", "'.Tools' (tools)"),
        ("{{ with .System }}{{ . }}{{ end }}", "'with'"),
        ('{{ printf "%s" .Prompt }}', "'printf'"),
        ("{{ .Messages | len }}", "a pipe '|'"),
        ("{{ range .Messages }}{{ .ToolCalls }}{{ end }}", "'.ToolCalls'"),
        ("{{ if .System }}x", "an 'if' or 'range' without its 'end'"),
    ],
)
def test_what_cannot_be_translated_is_refused_by_name(go, named):
    with pytest.raises(TemplateError) as err:
        translate(go)
    assert named in err.value.message


def test_go_and_jinja_are_told_apart():
    assert is_go_template(PROMPT_STYLE) and is_go_template(LLAMA3)
    assert not is_go_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert not is_go_template("{{ bos_token }}{{ messages[0]['content'] }}")
