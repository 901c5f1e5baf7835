"""Sisimai's public corpus of real bounces, labelled by go-sisimai's own tests.

``tests/corpus/sisimai/maildir-bsd/`` is ``maildir/bsd`` of sisimai/set-of-emails and
``labels.json`` what go-sisimai's ``fact/*_test.go`` expect of each file (status, reply
code, reason, hard bounce), both BSD 2-Clause (their LICENSE files beside them). Used by
the corpus test and by ``bench/bounce_bench.py``.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parent / "corpus" / "sisimai"
MESSAGES = ROOT / "maildir-bsd"

# The address itself failed: sisimai's hard-bounce reasons.
ADDRESS_GONE = {"userunknown", "hostunknown", "hasmoved", "notaccept"}
# Not bounces: a complaint, an auto-reply, a delivery report of success, no verdict.
NOT_A_BOUNCE = {"feedback", "vacation", "delivered", "undefined"}


@dataclass(frozen=True)
class Sample:
    """One labelled message with one verdict for all its recipients."""

    path: Path
    reason: str  # sisimai's reason

    @property
    def group(self) -> str:
        """``lhost`` (the mail systems' own bounces, tuned on) or ``other``."""
        return "lhost" if self.path.name.startswith("lhost-") else "other"


def samples() -> list[Sample]:
    """Every file of the corpus whose recipients share one reason, in name order."""
    labels = json.loads((ROOT / "labels.json").read_text())
    found = []
    for name, verdicts in sorted(labels.items()):
        reasons = {verdict["reason"] for verdict in verdicts}
        if len(reasons) == 1 and (MESSAGES / name).exists():
            found.append(Sample(MESSAGES / name, reasons.pop()))
    return found


@dataclass
class Score:
    """How a classifier's kinds (ReportKind values) agree with the labels."""

    gone: int = 0  # the address failed (hard by the labels)
    gone_found: int = 0  # ... and we said hard
    rest: int = 0  # bounces that are not the address failing
    wrong_hard: int = 0  # ... and we said hard: a good reader would be dropped
    recognized: int = 0  # ... and we said soft, refused or delayed
    complaints: int = 0
    complaints_found: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, sample: Sample, kind: str) -> None:
        """Count one message classified as ``kind``."""
        if sample.reason in ADDRESS_GONE:
            self.gone += 1
            self.gone_found += kind == "hard-bounce"
            ok = kind == "hard-bounce"
        elif sample.reason == "feedback":
            self.complaints += 1
            self.complaints_found += kind == "complaint"
            ok = kind == "complaint"
        elif sample.reason in NOT_A_BOUNCE:
            return
        else:
            self.rest += 1
            self.wrong_hard += kind == "hard-bounce"
            ok = kind in ("soft-bounce", "refused", "delayed")
            self.recognized += ok
        if not ok:
            self.misses.append(f"{sample.path.name}: {sample.reason} -> {kind}")

    def lines(self) -> list[str]:
        """The four figures the issue asks for, one a line."""
        return [
            f"hard bounces found: {self.gone_found}/{self.gone} "
            f"({_pct(self.gone_found, self.gone)})",
            f"wrong hard: {self.wrong_hard}/{self.rest} ({_pct(self.wrong_hard, self.rest)})",
            f"not the address, recognized: {self.recognized}/{self.rest} "
            f"({_pct(self.recognized, self.rest)})",
            f"complaints: {self.complaints_found}/{self.complaints} "
            f"({_pct(self.complaints_found, self.complaints)})",
        ]


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"
