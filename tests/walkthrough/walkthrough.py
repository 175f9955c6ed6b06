#!/usr/bin/env python3
"""Turns docs/walkthrough.md into one bash session, and checks each step.

The page's conventions (stated at its top for readers):

- Every fenced block whose info string is exactly `sh` is a step. The steps
  run in order, in one bash session, so a variable one step sets is there
  for the next.
- The first ```json or ```console block after a step, before the next
  step, is what that step must print (stdout and stderr together). A step
  with no such block must only succeed. A second such block is an error.
- A ```console block whose first line is `ERROR:` (how grpcurl reports a
  gRPC error) marks a step that must fail: it runs without `set -e` and its
  exit status must not be 0. Such a step is best a single command.

Matching, so that the page can show real output:

- json: the output is read as a stream of JSON values, as many as the block
  shows, each matched as a fragment: an object matches if every key shown
  is there and matches (more keys are fine), a list if it has the same
  length and each item matches, a scalar if it is equal.
- console: every non-empty line shown must appear in the output, in that
  order (other lines may come between); runs of blanks count as one.
- In both, `…` stands for any text. In json strings, a UUID, an RFC 3339
  timestamp or an opaque token (32 or more URL-safe base64 characters)
  stands for whatever value sits there, bound on first sight for the whole
  page: the same literal must meet the same value everywhere, and two
  different UUIDs or tokens on the page must meet two different values.
  So `approvedBy` showing the admin's id checks that it is the admin's id,
  and a new refresh token shown after a refresh checks that it changed.

Usage:
  walkthrough.py script DOC STEPS_DIR > session.sh
  walkthrough.py check STEPS_DIR N EXIT_STATUS
"""

import json
import re
import sys
from pathlib import Path

ELLIPSIS = "…"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,}$")
FENCE = re.compile(r"^```(.*)$")


class Mismatch(Exception):
    pass


def blocks(text):
    """(info string, first line number, body) of every fenced block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        info, start, body = m.group(1).strip(), i + 1, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise SystemExit(f"line {start}: a fenced block is never closed")
        yield info, start, "\n".join(body) + "\n"
        i += 1


def steps(text):
    """Each step as a dict: line, command, and the expected output if any."""
    found = []
    for info, line, body in blocks(text):
        if info == "sh":
            found.append({"line": line, "command": body, "kind": None, "expected": None})
        elif info in ("json", "console") and found:
            step = found[-1]
            if step["kind"] is not None:
                raise SystemExit(
                    f"line {line}: a second expected output for the step at line {step['line']}"
                )
            step["kind"], step["expected"], step["expected_line"] = info, body, line
    return found


def expects_failure(step):
    return step["kind"] == "console" and step["expected"].lstrip().startswith("ERROR:")


def script(doc, steps_dir):
    doc_path = Path(doc)
    found = steps(doc_path.read_text(encoding="utf-8"))
    if not found:
        raise SystemExit(f"{doc}: no ```sh blocks")
    out = Path(steps_dir)
    out.mkdir(parents=True, exist_ok=True)
    me = Path(__file__).resolve()
    session = [
        "set -euo pipefail",
        f"__steps={shell_quote(str(out))}",
        "__step=0",
        # A step that fails exits with its output still redirected to its
        # file: the report goes to the session's own output instead.
        "exec 3>&1 4>&2",
        "__finish() {",
        "  local rc=$?",
        "  exec 1>&3 2>&4",
        "  if [ \"$rc\" -ne 0 ] && [ ! -e \"$__steps/$__step.reported\" ]; then",
        f"    echo \"FAIL: step $__step ({doc_path.name} line $(cat \"$__steps/$__step.line\")) exited with status $rc\"",
        "    echo '--- the step'; cat \"$__steps/$__step.sh\"",
        "    echo '--- its output'; cat \"$__steps/$__step.out\" 2>/dev/null || true",
        "  fi",
        "  if [ \"$rc\" -ne 0 ]; then",
        "    for log in \"${WORK:-/nonexistent}\"/*.log; do",
        "      [ -f \"$log\" ] && { echo \"--- the end of $log\"; tail -n 30 \"$log\"; }",
        "    done",
        "  fi",
        "  local pids; pids=\"$(jobs -p)\"",
        "  [ -z \"$pids\" ] || kill $pids 2>/dev/null || true",
        "  exit \"$rc\"",
        "}",
        "trap __finish EXIT",
        "trap 'exit 143' TERM INT",
    ]
    for n, step in enumerate(found, 1):
        (out / f"{n}.sh").write_text(step["command"], encoding="utf-8")
        (out / f"{n}.line").write_text(str(step["line"]), encoding="utf-8")
        meta = {
            "line": step["line"],
            "kind": step["kind"],
            "expected": step["expected"],
            "expected_line": step.get("expected_line"),
            "fails": expects_failure(step),
        }
        (out / f"{n}.json").write_text(json.dumps(meta), encoding="utf-8")
        session.append(f"# step {n}: {doc_path.name} line {step['line']}")
        session.append(f"__step={n}")
        check = f'python3 {shell_quote(str(me))} check "$__steps" {n}'
        if meta["fails"]:
            session.append("set +e")
            session.append("{")
            session.append(step["command"].rstrip("\n"))
            session.append(f'}} >"$__steps/{n}.out" 2>&1')
            session.append("__rc=$?")
            session.append("set -e")
            session.append(f"{check} \"$__rc\"")
        else:
            session.append("{")
            session.append(step["command"].rstrip("\n"))
            session.append(f'}} >"$__steps/{n}.out" 2>&1')
            session.append(f"{check} 0")
    session.append(f'echo "walkthrough: {len(found)} passed, 0 failed"')
    print("\n".join(session))


def shell_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def glob(expected):
    parts = [re.escape(p) for p in expected.split(ELLIPSIS)]
    return re.compile("^" + ".*".join(parts) + "$", re.DOTALL)


class Bindings:
    """Doc literals (UUIDs, timestamps, tokens) and the values they stood for."""

    def __init__(self, path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def bind(self, kind, literal, actual, where):
        forward = self.data.setdefault(kind, {})
        if literal in forward:
            if forward[literal] != actual:
                raise Mismatch(
                    f"{where}: the page shows {literal!r} here and earlier; earlier it was "
                    f"{forward[literal]!r}, here it is {actual!r}"
                )
            return
        if kind != "timestamp":
            for other, value in forward.items():
                if value == actual:
                    raise Mismatch(
                        f"{where}: the page shows {literal!r}, a different {kind} from the "
                        f"{other!r} it showed for this value ({actual!r}) earlier"
                    )
        forward[literal] = actual

    def save(self):
        self.path.write_text(json.dumps(self.data, indent=1))


def match_string(expected, actual, where, bindings):
    if not isinstance(actual, str):
        raise Mismatch(f"{where}: expected a string like {expected!r}, got {actual!r}")
    if ELLIPSIS in expected:
        if not glob(expected).match(actual):
            raise Mismatch(f"{where}: {actual!r} does not match {expected!r}")
        return
    for kind, shape in (("uuid", UUID), ("timestamp", TIMESTAMP), ("token", TOKEN)):
        if shape.match(expected):
            if not shape.match(actual):
                raise Mismatch(f"{where}: expected a {kind} (like {expected!r}), got {actual!r}")
            bindings.bind(kind, expected, actual, where)
            return
    if expected != actual:
        raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")


def match_json(expected, actual, where, bindings):
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise Mismatch(f"{where}: expected an object, got {json.dumps(actual)}")
        for key, value in expected.items():
            if key not in actual:
                raise Mismatch(f"{where}: no {key!r} in {json.dumps(actual)}")
            match_json(value, actual[key], f"{where}.{key}", bindings)
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise Mismatch(f"{where}: expected a list of {len(expected)}, got {json.dumps(actual)}")
        for i, (e, a) in enumerate(zip(expected, actual)):
            match_json(e, a, f"{where}[{i}]", bindings)
    elif isinstance(expected, str):
        match_string(expected, actual, where, bindings)
    elif expected != actual or type(expected) is not type(actual):
        raise Mismatch(f"{where}: expected {json.dumps(expected)}, got {json.dumps(actual)}")


def json_stream(text, what):
    decoder, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise Mismatch(f"{what} is not JSON: {e}") from None
        values.append(value)


def normalise(line):
    return " ".join(line.split())


def match_console(expected, actual):
    wanted = [normalise(l) for l in expected.split("\n") if normalise(l) not in ("", ELLIPSIS)]
    lines = [normalise(l) for l in actual.split("\n")]
    at = 0
    for line in wanted:
        pattern = glob(line)
        while at < len(lines) and not pattern.match(lines[at]):
            at += 1
        if at == len(lines):
            raise Mismatch(f"no line matching {line!r} (in order) in the output")
        at += 1


def check(steps_dir, n, status):
    out = Path(steps_dir)
    meta = json.loads((out / f"{n}.json").read_text(encoding="utf-8"))
    output = (out / f"{n}.out").read_text(encoding="utf-8", errors="replace")
    command = (out / f"{n}.sh").read_text(encoding="utf-8")
    first = command.strip().split("\n")[0]
    bindings = Bindings(out / "bindings.json")
    try:
        if meta["fails"] and status == 0:
            raise Mismatch("the step succeeded, but the page shows it failing")
        if meta["kind"] == "json":
            expected = json_stream(meta["expected"], f"the expected output at line {meta['expected_line']}")
            actual = json_stream(output, "the output")
            if len(actual) != len(expected):
                raise Mismatch(f"expected {len(expected)} JSON value(s), got {len(actual)}")
            for i, (e, a) in enumerate(zip(expected, actual)):
                match_json(e, a, "$" if len(expected) == 1 else f"${i}", bindings)
        elif meta["kind"] == "console":
            match_console(meta["expected"], output)
    except Mismatch as e:
        (out / f"{n}.reported").write_text("")
        print(f"FAIL: step {n} (line {meta['line']}): {e}")
        print("--- the step")
        print(command, end="")
        print("--- its output")
        print(output, end="")
        if meta["expected"] is not None:
            print(f"--- what the page shows (line {meta['expected_line']})")
            print(meta["expected"], end="")
        return 1
    bindings.save()
    print(f"ok {n} - line {meta['line']}: {first}")
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "script":
        script(argv[2], argv[3])
        return 0
    if len(argv) == 5 and argv[1] == "check":
        return check(argv[2], int(argv[3]), int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
