"""The quantization types a model can be created in: llama.cpp's file types (llama_ftype)
that llama_model_quantize makes without an importance matrix."""

from __future__ import annotations

QUANT_TYPES = {
    "Q4_0": 2,
    "Q4_1": 3,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q8_0": 7,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "F16": 1,
    "BF16": 32,
}
