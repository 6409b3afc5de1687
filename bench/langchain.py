"""LangChain's with_structured_output against a node, by hand (langchain-openai is not a test
dependency: it brings some fifteen packages, langsmith and zstandard among them).

Starts a node with SmolLM2-135M-Instruct (or uses --url), then asks ChatOpenAI for a pydantic
model with each of LangChain's methods: json_schema (response_format json_schema, strict),
function_calling (a tool, forced by name) and json_mode (response_format json_object: JSON is
guaranteed, the schema is only in the prompt, so a small model may miss a field). Prints what
came back; exits 1 if json_schema or function_calling did not give a Person, or json_mode
not JSON.

Run: pip install --target /tmp/lc langchain-openai
     PYTHONPATH=/tmp/lc .venv/bin/python bench/langchain.py [--url http://127.0.0.1:32769]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Address(BaseModel):
    city: str = Field(description="The city")
    country: str = Field(description="The country")


class Person(BaseModel):
    """A person."""

    name: str = Field(description="Full name")
    age: int = Field(description="Age in years")
    address: Address


def run(url: str, model: str) -> bool:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=url + "/v1", api_key="unused", model=model, temperature=0,
                     max_tokens=160, max_retries=0)  # fmt: skip
    ok = True
    for method in ("json_schema", "function_calling", "json_mode"):
        structured = llm.with_structured_output(Person, method=method, include_raw=True)
        prompt = "Describe a person who lives in Paris."
        if method == "json_mode":  # the schema is not sent: the prompt must describe it
            prompt += " Answer in JSON with name, age and address (city, country)."
        try:
            result = structured.invoke(prompt)
        except Exception as exc:
            print(f"{method}: FAILED {type(exc).__name__}: {exc}")
            ok = False
            continue
        raw = result["raw"]
        calls = getattr(raw, "tool_calls", None)
        print(f"{method}: raw {calls if calls else raw.content!r}")
        print(f"{method}: parsed {result['parsed']!r}, error {result['parsing_error']!r}")
        if method == "json_mode":
            try:
                json.loads(raw.content)
            except ValueError:
                ok = False
        else:
            ok = ok and isinstance(result["parsed"], Person)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running node (default: start one with SmolLM2)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    if args.url:
        sys.exit(0 if run(args.url, args.model) else 1)
    from tests.support.catalog import register_file
    from tests.support.procs import ServerProcess
    from tests.support.real_models import smollm2

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        register_file(home, "HuggingFaceTB/SmolLM2-135M-Instruct", smollm2())
        node = ServerProcess(home, env={"LLMLB_THREADS": "2"}).start()
        try:
            ok = run(node.url, args.model)
        finally:
            node.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
