"""llmlb: run local LLMs like ollama, and balance many nodes behind one endpoint."""

__version__ = "0.1.0"
