"""Write-back of results into Phoenix."""

from ragtriage.export.phoenix import PhoenixWriter

__all__ = ["PhoenixWriter"]
