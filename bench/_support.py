"""Shared pieces of the benchmarks: a synthetic RAG corpus, a loopback redis-server, a judge server
in a child process, percentiles. Not a benchmark itself.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass

from ragtriage.testing.redis_server import RedisServer

# -- corpus -------------------------------------------------------------------------------------------

_FIRST = ["Maria", "Tomasz", "Aiko", "Daniel", "Fatima", "Henrik", "Lucia", "Oluwaseun", "Priya", "Gareth"]
_LAST = ["Keller", "Nowak", "Tanaka", "Okafor", "Lindqvist", "Moreau", "Castellanos", "Brennan", "Iyer", "Haddad"]
_CITIES = [
    ("Rotterdam", "the Netherlands"),
    ("Gdansk", "Poland"),
    ("Sapporo", "Japan"),
    ("Lagos", "Nigeria"),
    ("Uppsala", "Sweden"),
    ("Lyon", "France"),
    ("Valparaiso", "Chile"),
    ("Galway", "Ireland"),
    ("Pune", "India"),
    ("Beirut", "Lebanon"),
]
_COMPANIES = ["Northwind Systems", "Harbor Analytics", "Bluefin Robotics", "Meridian Foods", "Crestline Energy"]
_FIELDS = ["mechanical engineering", "economics", "marine biology", "computer science", "architecture"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
_PRODUCTS = ["turbine controller", "freight scheduler", "water sensor", "payment gateway", "crop forecaster"]

_BIO = (
    "{name} was born on {month} {day}, {born} in {city}, {country}. After studying {field} at the "
    "University of {city2}, {first} joined {company} in {joined}, where {first} led a team of {team} engineers "
    "that shipped the company's first {product}. By {later} the {product} was used by {users:,} customers in "
    "{markets} countries, and {first} was promoted to chief technology officer."
)
_COMPANY = (
    "{company} was founded in {founded} by {name2} and two former colleagues in a rented office in {city}. "
    "The firm reported revenue of {revenue} million euros in {later} and employed {staff:,} people across "
    "{offices} offices. Its headquarters moved to {city2} in {moved} after a funding round led by {fund} "
    "Capital, which valued the company at {valuation} million euros. Analysts credit the {product} for most of "
    "the growth."
)
_EVENT = (
    "On {month} {day}, {event_year}, a storm closed the port of {city} for {hours} hours, delaying {ships} "
    "ships. The harbour master, {name2}, said the {product} installed by {company} had warned operators "
    "{warn} minutes before the gusts reached {gust} kilometres per hour. The city council later approved a "
    "budget of {budget} million euros to reinforce the breakwater, with work due to finish in {finish}."
)
_FILLER = (
    "Local newspapers covered the story for several weeks, and a number of residents wrote letters asking "
    "how the decision had been made and who would pay for it. Officials answered that the details would be "
    "published once the review was complete, and that public meetings would be held in the spring. "
)


def _facts(rng: random.Random) -> dict[str, object]:
    city, country = rng.choice(_CITIES)
    city2, _ = rng.choice(_CITIES)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    born = rng.randint(1950, 1985)
    joined = born + rng.randint(22, 30)
    return {
        "name": f"{first} {last}",
        "first": first,
        "name2": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        "city": city,
        "country": country,
        "city2": city2,
        "field": rng.choice(_FIELDS),
        "company": rng.choice(_COMPANIES),
        "product": rng.choice(_PRODUCTS),
        "fund": rng.choice(["Atlas", "Granite", "Juniper", "Beacon"]),
        "month": rng.choice(_MONTHS),
        "day": rng.randint(1, 28),
        "born": born,
        "joined": joined,
        "later": joined + rng.randint(3, 12),
        "team": rng.randint(12, 95),
        "users": rng.randint(1_200, 480_000),
        "markets": rng.randint(11, 60),
        "founded": rng.randint(1970, 2005),
        "revenue": rng.randint(40, 900),
        "staff": rng.randint(150, 9_000),
        "offices": rng.randint(11, 40),
        "moved": rng.randint(2006, 2020),
        "valuation": rng.randint(200, 5_000),
        "event_year": rng.randint(2008, 2023),
        "hours": rng.randint(13, 70),
        "ships": rng.randint(14, 240),
        "warn": rng.randint(15, 90),
        "gust": rng.randint(95, 160),
        "budget": rng.randint(12, 300),
        "finish": rng.randint(2024, 2030),
    }


def _passage(template: str, facts: dict[str, object], target: int) -> str:
    text = template.format(**facts)
    filler = _FILLER.split()
    i = 0
    while len(text) < target:  # pad with on-topic but non-factual prose, whole words, to ~target characters
        text += " " + filler[i % len(filler)]
        i += 1
    return text


@dataclass(frozen=True)
class Sample:
    question: str
    answer: str
    contexts: list[str]
    kind: str  # grounded | wrong_number | wrong_entity | refusal | paraphrase


def make_samples(n: int, *, seed: int = 7, context_chars: int = 2000) -> list[Sample]:
    """``n`` samples, each with three passages totalling ~``context_chars`` characters, and a mix of
    grounded, paraphrased, hallucinated (wrong number / wrong name) and refusing answers."""
    rng = random.Random(seed)
    kinds = ["grounded", "grounded", "paraphrase", "wrong_number", "wrong_entity", "refusal"]
    samples = []
    per = context_chars // 3
    for i in range(n):
        f = _facts(rng)
        contexts = [_passage(t, f, per) for t in (_BIO, _COMPANY, _EVENT)]
        rng.shuffle(contexts)
        kind = kinds[i % len(kinds)]
        question = f"When did {f['name']} join {f['company']}, and how large was the team they led?"
        if kind == "grounded":
            answer = (
                f"{f['name']} joined {f['company']} in {f['joined']} and led a team of {f['team']} engineers "
                f"that shipped the first {f['product']}."
            )
        elif kind == "paraphrase":
            answer = (
                f"According to the documents, {f['first']} started at {f['company']} in {f['joined']}, heading "
                f"a group of {f['team']} engineers; later the {f['product']} reached {f['users']:,} customers."
            )
        elif kind == "wrong_number":
            answer = (
                f"{f['name']} joined {f['company']} in {int(f['joined']) + 3} and led a team of "
                f"{int(f['team']) + 17} engineers."
            )
        elif kind == "wrong_entity":
            other = next(c for c in _COMPANIES if c != f["company"])
            answer = (
                f"{f['name']} joined {other} in {f['joined']} after studying at Stanford, leading "
                f"{f['team']} engineers."
            )
        else:
            answer = "I'm not sure; the documents do not mention when this person joined the company."
        samples.append(Sample(question, answer, contexts, kind))
    return samples


# -- measurements ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"nproc={os.cpu_count()} python={sys.version.split()[0]} {sys.platform}; load average {load} at start"


# -- a real redis-server on loopback: the one the tests use ------------------------------------------------

RedisProcess = RedisServer

# -- the loopback judge in a child process ------------------------------------------------------------------

_SERVE = """
import socketserver, sys
from http.server import ThreadingHTTPServer
# socketserver's default listen backlog is 5: a burst of >~8 new connections then fails with
# ReadError/ECONNRESET on the client. Newer judge_server.py sets its own; this covers older ones.
ThreadingHTTPServer.request_queue_size = max(ThreadingHTTPServer.request_queue_size, 512)
if sys.argv[2] == "nodelay":
    # The handler writes the headers and the body in two send()s; with Nagle on, the body waits for
    # the client's delayed ACK (~40 ms on Linux loopback). TCP_NODELAY, as real servers set it.
    socketserver.StreamRequestHandler.disable_nagle_algorithm = True
from ragtriage.testing import JudgeServer, Reply, verdict_json
# "claims": a verdict the heavy tier's claim-level schema accepts too (an audit by the heavy judge)
claims = [{"claim": "as stated", "supported": True, "context_index": 1}] if sys.argv[3:] == ["claims"] else None
server = JudgeServer(default=Reply(verdict_json(claims=claims), delay_s=float(sys.argv[1]))).start()
print(server.url, flush=True)
sys.stdin.read()  # run until the parent closes our stdin (or dies)
server.stop()
"""


class JudgeProcess:
    """``JudgeServer(default=Reply(verdict_json(), delay_s=L))`` in a child process, so the parent's
    ``time.process_time()`` counts only the client side. Stops when the parent closes its stdin.
    ``nodelay`` sets TCP_NODELAY on its sockets (see ``_SERVE``); ``claims`` adds supported claims to the
    verdict, which the heavy judge's schema requires (without them a heavy call is a judge error)."""

    def __init__(self, delay_s: float, *, nodelay: bool = True, claims: bool = False) -> None:
        self.delay_s = delay_s
        self.nodelay = nodelay
        self.claims = claims
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> JudgeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(self.delay_s), "nodelay" if self.nodelay else "stock"]
            + (["claims"] if self.claims else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise RuntimeError("judge server did not start")
        return self

    def cpu_s(self) -> float:
        """User+system CPU seconds the child has used so far (Linux /proc)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def dump(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))
