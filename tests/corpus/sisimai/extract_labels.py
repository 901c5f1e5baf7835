"""Write labels.json from go-sisimai's tests: each file's expected verdicts.

go-sisimai's ``fact/*_test.go`` list, per mail system, what each public sample
(``set-of-emails/maildir/bsd/<prefix>-<engine>-NN.eml``) must give: per recipient its
status, reply code, reason and whether it is a hard bounce. Run with the path of a
go-sisimai checkout (a git directory):

    python tests/corpus/sisimai/extract_labels.py PATH/go-sisimai > labels.json
"""

import json
import re
import subprocess
import sys

ENTRY = re.compile(
    r'\{"(\d+)",\s*(\d+),\s*"([^"]*)",\s*"([^"]*)",\s*"([^"]*)",\s*(true|false),\s*"([^"]*)"\}'
)
PUBLIC = re.compile(
    r"publiclist := \[\]\[\]IsExpected\{(.*?)\}; EngineTest\(t, \"([^\"]+)\", publiclist, true\)",
    re.S,
)


def git(repo: str, *args: str) -> str:
    """The output of a git command in ``repo``."""
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True).stdout


def labels(repo: str) -> dict[str, list[dict]]:
    """File name -> its recipients' expected verdicts."""
    found: dict[str, list[dict]] = {}
    for name in git(repo, "ls-tree", "-r", "HEAD", "--name-only", "fact").split():
        if not name.endswith("_test.go"):
            continue
        text = git(repo, "show", "HEAD:" + name)
        test = re.search(r"^func (Test\w+)", text, re.M)
        block = PUBLIC.search(text)
        if not test or not block:
            continue
        prefix = {"TestLhost": "lhost-", "TestRhost": "rhost-"}.get(test.group(1)[:9], "")
        engine = block.group(2).lower()
        for label, index, status, reply, reason, hard, other in ENTRY.findall(block.group(1)):
            found.setdefault(f"{prefix}{engine}-{label}.eml", []).append(
                {
                    "index": int(index),
                    "status": status,
                    "reply_code": reply,
                    "reason": reason,
                    "hard_bounce": hard == "true",
                    "other": other,
                }
            )
    return dict(sorted(found.items()))


if __name__ == "__main__":
    json.dump(labels(sys.argv[1]), sys.stdout, indent=1)
