"""The fault-injection suite's tally: each injected fault ends as `recovered` (nothing lost), `clear stop` (one line
naming the file and the fix) or `failure`. conftest.py prints it at the end of a session that ran any."""
from collections import Counter

TALLY: Counter = Counter()


def record(outcome: str) -> None:
    assert outcome in ("recovered", "clear stop", "failure"), outcome
    TALLY["faults injected"] += 1
    TALLY[outcome] += 1
