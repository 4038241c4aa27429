"""Run by test_prompt_linear.py in a subprocess (so code that is not linear times out there instead of
hanging the suite): 100,000-character caller texts through the ratio parser, `no-enhance` removal,
the LLM JSON reader and the chat surface. Prints one JSON line per step as it ends,
{"what", "wall", "cpu"} (wall: time.perf_counter; cpu: this process's CPU time, which other
processes on a busy machine do not inflate), so a step that hangs is the one after the last line.

    python -m tests.linear_probe WORKDIR
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from image_gateway.prompt.llm_json import parse_llm_json
from image_gateway.prompt.ratio import parse_ratio, strip_no_enhance
from tests.inprocess import InProcessGateway

N = 100_000
# Caller text: runs of whitespace and digits, ratio-shaped junk, trigger words before long runs.
TEXTS = {
    "spaces": " " * N,
    "whitespace": "\t \n\u3000" * (N // 4),
    "digits": "1" * N,
    "ratio junk": "1:1 " * (N // 4),
    "separators": (" ，" + " " * 98) * (N // 100),
    "triggers": ("ratio" + " " * 995) * (N // 1000),
}
# What an LLM could be made to answer (it may echo the caller's text).
REPLIES = {
    **TEXTS,
    "braces": "{" * N,
    "nested": "{" * (N // 2) + "}" * (N // 2),
    "think": "<think>" * (N // 7),
    "fence": "```json" + " " * N,
}


def report(what: str, fn: Callable[[str], Any], text: str) -> Any:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result = fn(text)
    except ValueError:
        result = None  # the LLM reader's "no JSON object": what matters is how long it took to say so
    print(json.dumps({"what": what, "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}),
          flush=True)
    return result


def chat(workdir: Path) -> None:
    # The demo route takes long prompts here, so the chat pipeline (not the length limit) sees them.
    yaml = "routes:\n  - {name: demo, max_prompt_chars: 1000000}\n"
    with InProcessGateway(workdir, config_yaml=yaml) as gw:
        for name, text in {"baseline": "", **TEXTS}.items():
            body = {"model": "demo", "size": "64x64",
                    "messages": [{"role": "user", "content": f"{text} a red fox, ratio 16:9"}]}
            wall, cpu = time.perf_counter(), time.process_time()
            r = gw.http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text[:300]
            print(json.dumps({"what": f"chat {name}", "wall": time.perf_counter() - wall,
                              "cpu": time.process_time() - cpu}), flush=True)


def main() -> None:
    for name, text in TEXTS.items():
        report(f"parse_ratio {name}", parse_ratio, text)
        report(f"strip_no_enhance {name}", strip_no_enhance, text)
    for name, text in REPLIES.items():
        report(f"parse_llm_json {name}", parse_llm_json, text)
    chat(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
