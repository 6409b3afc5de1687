"""Inference: llama-cpp-python behind a small interface, and the scheduler."""
