"""The vocabulary of uses (C2PA / CAWG training-and-data-mining assertion). Pure."""

from __future__ import annotations

DATA_MINING = "data_mining"
AI_TRAINING = "ai_training"
AI_GENERATIVE_TRAINING = "ai_generative_training"
AI_INFERENCE = "ai_inference"

USES: tuple[str, ...] = (DATA_MINING, AI_TRAINING, AI_GENERATIVE_TRAINING, AI_INFERENCE)

USE_LABELS: dict[str, str] = {
    DATA_MINING: "Data mining",
    AI_TRAINING: "AI training (includes generative AI training)",
    AI_GENERATIVE_TRAINING: "Generative AI training",
    AI_INFERENCE: "AI inference (use as input to a model)",
}

# Refusing a use also refuses the narrower uses it contains (PRODUCT.md:
# refusing ai_training also refuses ai_generative_training).
_NARROWER: dict[str, tuple[str, ...]] = {AI_TRAINING: (AI_GENERATIVE_TRAINING,)}


def refused_closure(uses: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Every use refused by refusing ``uses``."""
    refused = set(uses)
    for use in uses:
        refused.update(_NARROWER.get(use, ()))
    return frozenset(refused)


def unknown_uses(uses: list[str] | tuple[str, ...]) -> list[str]:
    return [use for use in uses if use not in USES]
