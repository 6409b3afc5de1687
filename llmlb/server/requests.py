"""Request bodies of the node's APIs, typed once: every field's type, range and size limit.

Litestar decodes a body into these (msgspec) before a handler runs, so a malformed request is
a 400 before any model is claimed, loaded or written. Unknown fields are ignored, as ollama
and OpenAI servers do: clients send many we do not use. Numbers are finite (JSON has no NaN,
and out-of-range values are refused).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from llmlb import settings
from llmlb.engine import chat_plan, llama_json
from llmlb.engine.base import GenOptions
from llmlb.errors import BadRequest

MAX_MESSAGES = 10_000
MAX_INPUT_TOKENS = 1_000_000
MAX_IMAGES = 16
MAX_STOPS = 16
MAX_TOOLS = 128  # as OpenAI

ModelName = Annotated[str, Meta(min_length=1, max_length=512)]
Text = Annotated[str, Meta(max_length=64 * 1024 * 1024)]
Image = Annotated[str, Meta(max_length=32 * 1024 * 1024)]  # base64 or a data: URL
Stop = Annotated[str, Meta(min_length=1, max_length=512)]
StopList = Annotated[list[Stop], Meta(max_length=MAX_STOPS)]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
TokenLimit = Annotated[int, Meta(ge=-2, le=10_000_000)]
# any finite number of seconds or a duration: past ten years means forever
KeepAlive = float | Annotated[str, Meta(max_length=64)]
Think = bool | Literal["high", "medium", "low"]
# OpenAI's rule for function names (plus dots, which MCP tool names use); a name also goes
# into grammars and prompts, so it stays short and plain
ToolName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Schema = dict[str, Any]  # a JSON schema; what llama.cpp's converter honours is checked later
Description = Annotated[str, Meta(max_length=64 * 1024)]


def check_keep_alive(value: float | str | None) -> None:
    """A keep_alive that cannot be read is refused at the door (see settings.keep_alive_secs)."""
    if value is not None:
        try:
            settings.keep_alive_secs(value)
        except settings.SettingsError as exc:
            raise ValueError(exc.message) from exc


class _Named(msgspec.Struct, kw_only=True):
    """ollama clients send `model`; older ones `name`."""

    model: ModelName | None = None
    name: ModelName | None = None

    def __post_init__(self) -> None:
        if self.model is None:
            if self.name is None:
                raise ValueError("missing field 'model'")
            self.model = self.name
        check_keep_alive(getattr(self, "keep_alive", None))

    @property
    def target(self) -> str:
        assert self.model is not None  # __post_init__ filled it
        return self.model


# -- sampling ------------------------------------------------------------------------------


class Sampling(msgspec.Struct, kw_only=True):
    """Options both APIs share under the same names (llama.cpp's, which ollama uses too)."""

    temperature: Temperature | None = None
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    top_p: Fraction | None = None
    min_p: Fraction | None = None
    typical_p: Fraction | None = None
    repeat_penalty: Annotated[float, Meta(gt=0.0, le=10.0)] | None = None
    repeat_last_n: Annotated[int, Meta(ge=-1, le=1_000_000)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: Stop | StopList | None = None

    def to_options(self, max_tokens: int | None) -> GenOptions:
        opts = GenOptions()
        for key in (
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "typical_p",
            "repeat_penalty",
            "repeat_last_n",
            "presence_penalty",
            "frequency_penalty",
        ):
            value = getattr(self, key)
            if value is not None:
                setattr(opts, key, value)
        if self.seed is not None and self.seed >= 0:
            opts.seed = self.seed % 2**32  # llama.cpp seeds are 32-bit; negative = random
        if self.stop is not None:
            opts.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        opts.max_tokens = max_tokens
        given = {f for f in self.__struct_fields__ if getattr(self, f) is not None}
        opts.given = frozenset(given | ({"max_tokens"} if max_tokens is not None else set()))
        return opts


class OllamaOptions(Sampling, kw_only=True):
    """ollama's `options` object; keys we do not use (num_ctx, num_gpu, ...) are ignored."""

    num_predict: TokenLimit | None = None

    def __post_init__(self) -> None:
        if self.num_predict == 0:
            raise ValueError("num_predict must be at least 1, or -1 for no limit")

    @property
    def token_limit(self) -> int | None:
        """num_predict: -1 and -2 mean no limit."""
        return None if self.num_predict is None or self.num_predict < 0 else self.num_predict


# -- messages -------------------------------------------------------------------------------


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: Text = ""


class ImageURL(msgspec.Struct):
    url: Image
    detail: Annotated[str, Meta(max_length=16)] | None = None


class ImagePart(msgspec.Struct, tag="image_url", tag_field="type"):
    image_url: ImageURL | Image


Role = Literal["system", "user", "assistant", "tool", "developer"]
CallId = Annotated[str, Meta(max_length=256)]


class CalledFunction(msgspec.Struct, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    arguments: Text | dict[str, Any] = "{}"  # OpenAI sends JSON text, ollama an object


class ToolCallIn(msgspec.Struct, kw_only=True):
    """A call the assistant made, sent back in the history."""

    id: CallId | None = None
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Role
    content: Text | Annotated[list[TextPart | ImagePart], Meta(max_length=256)] | None = None
    images: Annotated[list[Image], Meta(max_length=MAX_IMAGES)] | None = None
    thinking: Text | None = None
    tool_calls: Annotated[list[ToolCallIn], Meta(max_length=MAX_TOOLS)] | None = None
    tool_call_id: CallId | None = None  # OpenAI: the call a `tool` message answers
    tool_name: Annotated[str, Meta(max_length=256)] | None = None  # ollama: its tool's name
    name: Annotated[str, Meta(max_length=256)] | None = None  # OpenAI: the same, or a speaker


# -- tools and formats (both APIs) ----------------------------------------------------------


class FunctionDef(msgspec.Struct, kw_only=True):
    name: ToolName
    description: Description = ""
    parameters: Schema | None = None
    strict: bool | None = None


class ToolDef(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDef


Tools = Annotated[list[ToolDef], Meta(max_length=MAX_TOOLS)]


def tool_specs(tools: list[ToolDef] | None) -> list[chat_plan.Tool]:
    """The tools as the engine takes them (checked once, when the body is decoded)."""
    return [
        chat_plan.Tool(t.function.name, t.function.description, t.function.parameters or {})
        for t in tools or []
    ]


def checked_tool_specs(tools: list[ToolDef] | None) -> list[chat_plan.Tool]:
    """The tools, their parameters checked: each a schema llama.cpp's converter honours."""
    specs = tool_specs(tools)
    chat_plan.check_tools(specs)
    return specs


Messages = Annotated[list[ChatMessage], Meta(max_length=MAX_MESSAGES)]


# -- ollama ---------------------------------------------------------------------------------


class _OllamaGeneration(_Named, kw_only=True):
    options: OllamaOptions | None = None
    keep_alive: KeepAlive | None = None
    stream: bool = True
    think: Think | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] = 0
    format: Literal["", "json"] | Schema | None = None  # JSON mode, or a JSON schema

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        if isinstance(self.format, dict):
            llama_json.check(self.format, "the JSON schema in 'format'")

    @property
    def schema(self) -> Schema | None:
        return self.format if isinstance(self.format, dict) else None

    @property
    def json_mode(self) -> bool:
        return self.format == "json"

    def gen_options(self) -> GenOptions:
        options = self.options or OllamaOptions()
        opts = options.to_options(options.token_limit)
        if options.num_predict is not None:  # -1: no limit, asked for
            opts.given |= {"max_tokens"}
        opts.logprobs = self.logprobs
        opts.top_logprobs = self.top_logprobs
        return opts


class OllamaChat(_OllamaGeneration, kw_only=True):
    messages: Messages = []
    tools: Tools | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        checked_tool_specs(self.tools)

    @property
    def tool_list(self) -> list[chat_plan.Tool]:
        return tool_specs(self.tools)


class OllamaGenerate(_OllamaGeneration, kw_only=True):
    prompt: Text = ""
    system: Text | None = None
    images: Annotated[list[Image], Meta(max_length=MAX_IMAGES)] = []
    raw: bool = False
    # the `context` an earlier answer gave: its conversation's tokens, continued here
    context: (
        Annotated[list[Annotated[int, Meta(ge=0, lt=2**31)]], Meta(max_length=MAX_INPUT_TOKENS)]
        | None
    ) = None


MAX_INPUTS = 2048
Dimensions = Annotated[int, Meta(ge=1, le=65536)]


def embed_inputs(value: Any) -> list[str | list[int]]:
    """An embedding request's inputs: a text, texts, a token array (OpenAI), or token arrays."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise ValueError("field 'input' must be a string, or a non-empty list")
    if len(value) > MAX_INPUTS:
        raise ValueError(f"field 'input' holds more than {MAX_INPUTS} inputs")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [_token_array(value, "input")]
    if all(isinstance(v, str) for v in value):
        if any(len(v) > 64 * 1024 * 1024 for v in value):
            raise ValueError("an input of field 'input' is longer than 64 MiB")
        return list(value)
    if all(isinstance(v, list) for v in value):
        return [_token_array(v, f"input[{i}]") for i, v in enumerate(value)]
    raise ValueError("field 'input' must hold texts, or token arrays, not a mix")


def _token_array(tokens: list, where: str) -> list[int]:
    if not tokens:
        raise ValueError(f"field '{where}' is an empty token array")
    if len(tokens) > MAX_INPUT_TOKENS:
        raise ValueError(f"field '{where}' holds more than {MAX_INPUT_TOKENS} tokens")
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31 for t in tokens):
        raise ValueError(f"field '{where}' must hold token ids (whole numbers from 0)")
    return tokens


class OllamaEmbed(_Named, kw_only=True):
    input: Any
    keep_alive: KeepAlive | None = None
    truncate: bool = True
    dimensions: Dimensions | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.input = embed_inputs(self.input)

    @property
    def inputs(self) -> list[str | list[int]]:
        return self.input


class OllamaEmbeddings(_Named, kw_only=True):
    """The legacy /api/embeddings: one prompt, one vector."""

    prompt: Text
    keep_alive: KeepAlive | None = None


class ModelOnly(_Named, kw_only=True):
    """show, delete, stop."""

    verbose: bool = False


class PullRequest(_Named, kw_only=True):
    stream: bool = True
    insecure: bool = False  # ollama's flag; downloads are always verified, so it changes nothing


def push_refused(model: str) -> BadRequest:
    """ollama's /api/push uploads to ollama's registry; llmlb has none to push to (a 400:
    asking for it is the client's mistake, never a failure of the server)."""
    return BadRequest(
        f"llmlb does not push models: its models come from Hugging Face, and ollama's registry "
        f"is not one it writes to; to publish '{model}', upload its files (the node's "
        f"$LLMLB_HOME/models/<name>/) to a Hugging Face repo with `hf upload`"
    )


# -- OpenAI ---------------------------------------------------------------------------------


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _OpenAIGeneration(Sampling, kw_only=True):
    model: ModelName
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    n: Annotated[int, Meta(ge=1, le=16)] = 1  # choices, each a generation of its own
    keep_alive: KeepAlive | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def base_options(self) -> GenOptions:
        return self.to_options(self.max_completion_tokens or self.max_tokens)


class TextFormat(msgspec.Struct, tag="text", tag_field="type"):
    pass


class JsonObjectFormat(msgspec.Struct, tag="json_object", tag_field="type"):
    pass


class JsonSchemaSpec(msgspec.Struct, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)] = "response"
    description: Description | None = None
    schema: Schema | None = None
    strict: bool | None = None


class JsonSchemaFormat(msgspec.Struct, tag="json_schema", tag_field="type"):
    json_schema: JsonSchemaSpec


class ChosenFunction(msgspec.Struct):
    name: ToolName


class ChosenTool(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: ChosenFunction


ToolChoice = Literal["auto", "none", "required"] | ChosenTool


class OpenAIChat(_OpenAIGeneration, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1, max_length=MAX_MESSAGES)]
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    response_format: TextFormat | JsonObjectFormat | JsonSchemaFormat | None = None
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True

    def __post_init__(self) -> None:
        check_keep_alive(self.keep_alive)
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        fmt = self.response_format
        if isinstance(fmt, JsonSchemaFormat) and fmt.json_schema.schema is not None:
            llama_json.check(fmt.json_schema.schema, "the JSON schema in 'response_format'")
        tools = checked_tool_specs(self.tools)
        choice = self.tool_choice
        if choice is not None and choice != "none" and not tools:
            raise ValueError("tool_choice is only allowed when tools are given")
        if isinstance(choice, ChosenTool):
            names = [t.name for t in tools]
            if choice.function.name not in names:
                raise ValueError(
                    f"tool_choice names the function '{choice.function.name}', which is not "
                    f"among the tools ({', '.join(names)})"
                )

    @property
    def tool_list(self) -> list[chat_plan.Tool]:
        return tool_specs(self.tools)

    @property
    def choice(self) -> tuple[str, str | None]:
        """("auto" | "none" | "required", the function it must call, if named)."""
        if isinstance(self.tool_choice, ChosenTool):
            return "required", self.tool_choice.function.name
        return self.tool_choice or "auto", None

    @property
    def schema(self) -> Schema | None:
        fmt = self.response_format
        if isinstance(fmt, JsonSchemaFormat):
            return fmt.json_schema.schema if fmt.json_schema.schema is not None else {}
        return None

    @property
    def json_mode(self) -> bool:
        return isinstance(self.response_format, JsonObjectFormat)

    def gen_options(self) -> GenOptions:
        opts = self.base_options()
        opts.logprobs = self.logprobs
        opts.top_logprobs = self.top_logprobs or 0
        return opts


class OpenAICompletion(_OpenAIGeneration, kw_only=True):
    prompt: Text | Annotated[list[Text], Meta(min_length=1, max_length=16)]
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None  # legacy: how many alternatives
    echo: bool = False  # the prompt, then the completion

    def __post_init__(self) -> None:
        check_keep_alive(self.keep_alive)
        if len(self.prompts) * self.n > 32:
            raise ValueError("n times the number of prompts may be at most 32")
        if self.echo and self.logprobs is not None:
            raise ValueError(
                "echo together with logprobs is not supported: the prompt's own log "
                "probabilities are not computed"
            )

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def gen_options(self) -> GenOptions:
        opts = self.base_options()
        if self.logprobs is not None:
            opts.logprobs = True
            opts.top_logprobs = self.logprobs
        return opts


class OpenAIEmbeddings(msgspec.Struct, kw_only=True):
    model: ModelName
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    keep_alive: KeepAlive | None = None
    dimensions: Dimensions | None = None

    def __post_init__(self) -> None:
        check_keep_alive(self.keep_alive)
        self.input = embed_inputs(self.input)

    @property
    def inputs(self) -> list[str | list[int]]:
        return self.input
