"""Extract go-sisimai's labels (fact/*_test.go publiclist) into labels.json."""
import json, re, subprocess, sys
repo = "/work/.mirror/sisimai+go-sisimai/repo"
files = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "HEAD", "--name-only", "fact"], capture_output=True, text=True).stdout.split()
ENTRY = re.compile(r'\{"(\d+)",\s*(\d+),\s*"([^"]*)",\s*"([^"]*)",\s*"([^"]*)",\s*(true|false),\s*"([^"]*)"\}')
labels = {}
for name in files:
    if not name.endswith("_test.go"):
        continue
    text = subprocess.run(["git", "-C", repo, "show", "HEAD:" + name], capture_output=True, text=True).stdout
    func = re.search(r"^func (Test\w+)", text, re.M)
    block = re.search(r"publiclist := \[\]\[\]IsExpected\{(.*?)\}; EngineTest\(t, \"([^\"]+)\", publiclist, true\)", text, re.S)
    if not func or not block:
        continue
    engine = block.group(2).lower()
    prefix = "lhost-" if func.group(1).startswith("TestLhost") else "rhost-" if func.group(1).startswith("TestRhost") else ""
    for label, index, status, reply, reason, hard, other in ENTRY.findall(block.group(1)):
        file = f"{prefix}{engine}-{label}.eml"
        labels.setdefault(file, []).append({"index": int(index), "status": status, "reply_code": reply, "reason": reason, "hard_bounce": hard == "true", "other": other})
json.dump(dict(sorted(labels.items())), sys.stdout, indent=1)
