"""A model's Modelfile in each request: PARAMETERs where the request set nothing, SYSTEM when
the chat has no system message, MESSAGEs before the chat."""

from llmlb.engine import model_defaults
from llmlb.engine.base import GenOptions
from llmlb.store.models import Model


def model(**fields) -> Model:
    return Model(name="m", path="/m.gguf", format="GGUF", size_bytes=1, **fields)


def test_parameters_fill_only_what_the_request_left_unset():
    m = model(
        options={"temperature": 0.0, "top_k": 3, "stop": ["###"], "num_predict": 9, "seed": -1}
    )
    opts = GenOptions(temperature=1.5, given=frozenset({"temperature"}))
    model_defaults.apply(m, opts)
    assert (opts.temperature, opts.top_k, opts.stop, opts.max_tokens) == (1.5, 3, ["###"], 9)
    assert opts.seed is None  # a negative seed means random, as in a request


def test_system_prompt_goes_first_unless_the_chat_has_its_own():
    m = model(
        system_prompt="Be a pirate.",
        messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    )
    chat = [{"role": "user", "content": "q"}]
    assert model_defaults.messages(m, chat) == [
        {"role": "system", "content": "Be a pirate."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "q"},
    ]
    own = [{"role": "system", "content": "Be brief."}, *chat]
    assert model_defaults.messages(m, own) == [own[0], *m.messages, chat[0]]
