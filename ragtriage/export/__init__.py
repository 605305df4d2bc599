"""Write-back of results into Phoenix."""

from ragtriage.export.phoenix import PhoenixWriter, WriteBackError

__all__ = ["PhoenixWriter", "WriteBackError"]
