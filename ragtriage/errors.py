"""ragtriage's exceptions, at the bottom of the import graph so every layer can raise and catch them.

The hierarchy::

    RagtriageError                   anything ragtriage raises on purpose
    ├── WriteBackFailed              evaluated, but the result did not reach Phoenix (a queue consumer retries)
    ├── TransportError               a judge request got no complete HTTP reply
    ├── JudgeError                   no judgement could be had (``ragtriage.judges.base``: it carries the usage)
    └── ValueError subclasses: bad input, named in the message
        ├── JudgeOutputError         a judge's reply is not a valid judgement
        ├── OTLPError                a request that is not a valid OTLP trace export (HTTP 400)
        ├── DatasetError             a dataset file or row that cannot be used
        └── RulesFileError           an alert rules file that is not valid

Bad arguments raise the builtin ``ValueError``/``TypeError`` at once; bad data in spans is counted, never raised.
"""

from __future__ import annotations


class RagtriageError(Exception):
    """Base class of the exceptions ragtriage raises on purpose."""


class WriteBackFailed(RagtriageError):
    """The evaluation is done but the result did not reach its destination (counted as ``write_back_failed``).

    A queue consumer leaves such a sample for a retry instead of acknowledging it."""


class TransportError(RagtriageError):
    """The request got no complete HTTP reply (refused, reset, closed early, malformed)."""


class JudgeOutputError(RagtriageError, ValueError):
    """The reply is not a valid judgement."""


class OTLPError(RagtriageError, ValueError):
    """A request that is not a valid OTLP trace export (answered 400: retrying it cannot help)."""


class DatasetError(RagtriageError, ValueError):
    """A dataset file or row that cannot be used; the message names the file and line."""


class RulesFileError(RagtriageError, ValueError):
    """The rules file is not valid; the message names the rule and key."""


__all__ = [
    "DatasetError",
    "JudgeOutputError",
    "OTLPError",
    "RagtriageError",
    "RulesFileError",
    "TransportError",
    "WriteBackFailed",
]
