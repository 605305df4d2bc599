"""Published token prices of the heavy judge's default model: cost is not $0 when the user sets no price.

Source: OpenAI's pricing page (https://openai.com/api/pricing), standard (synchronous) tier, US dollars per
1M tokens, input and output. These are gpt-4o-mini's published prices as of the last check in this repo (they
were set on 2026-11-28 and have not been re-verified since: re-check them against the page). Prices the user
sets always win: ``LLMJudge(input_usd_per_1m=..., output_usd_per_1m=...)``, or
``RAGTRIAGE_HEAVY_INPUT_USD_PER_1M`` / ``RAGTRIAGE_HEAVY_OUTPUT_USD_PER_1M``. Batch API calls cost half
(:data:`ragtriage.judges.batch.BATCH_DISCOUNT`).
"""

from __future__ import annotations

PUBLISHED_USD_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o-mini-2024-07-18": (0.15, 0.60),  # the snapshot the alias pointed at when checked
}


def published_prices(model: str) -> tuple[float, float]:
    """``(input, output)`` USD per 1M tokens for ``model``; ``(0, 0)`` for a model not listed (a self-hosted one)."""
    return PUBLISHED_USD_PER_1M.get(model, (0.0, 0.0))
