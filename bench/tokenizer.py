"""What the real tokenizer (catalog.tokenizer, OpenAI's BPE encodings from `bpe-openai`) costs
the router, which counts only when a stream ends without the provider's usage (the client
left first):

- memory: RSS of a fresh router-like process (the router's modules imported, the catalog
  loaded) before and after its first count, and after the second encoding;
- first-count latency: the first abandoned gpt-4o-mini stream's `_stream_usage`, which
  imports the library and loads o200k_base;
- CPU per KB: counting a 1 KB English prompt and its reply with the tokenizer against the
  ~4-bytes-per-token estimate the other models keep, in the same process, as a ratio.

python -m bench.tokenizer (also part of `python -m bench.extras`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "out" / "tokenizer.json"

# Runs in a fresh interpreter, so the first count is really the first.
_PROBE = r"""
import json, time, resource

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

import router.chat, router.server  # the router's modules, as `python -m router` has them
from catalog.estimate import likely_prompt_tokens
from catalog.models import load_catalog
from catalog.tokenizer import chat_prompt_tokens, output_tokens
from router.chat import Produced, _stream_usage
from router.providers import UpstreamRequest

catalog = load_catalog()
gpt_4o_mini, gpt_35 = catalog.chat("gpt-4o-mini"), catalog.chat("gpt-3.5-turbo")
claude = catalog.chat("claude-sonnet-4-5")
sentence = "The quick brown fox jumps over the lazy dog, and the ledger settles every call. "
text = (sentence * 13)[:1024]
body = {"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": text},
]}
produced = Produced()
read = UpstreamRequest().output_pieces  # what the router keeps of each chunk
for start in range(0, 1024, 40):
    chunk = {"choices": [{"index": 0, "delta": {"content": text[start:start + 40]}}]}
    produced.add(read(chunk))

import asyncio

async def first_count():
    # As the router does it: in a worker thread, while the event loop keeps ticking.
    gaps = []
    task = asyncio.ensure_future(
        asyncio.to_thread(_stream_usage, None, False, body, produced, gpt_4o_mini)
    )
    last = time.perf_counter()
    while not task.done():
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    return await task, max(gaps)

result = {"rss_mb_before": round(rss_mb(), 1)}
started = time.perf_counter()
first, gap = asyncio.run(first_count())
result["first_count_ms"] = round((time.perf_counter() - started) * 1000, 1)
result["loop_max_gap_ms_during_first_count"] = round(gap * 1000, 1)
result["rss_mb_after_first_count"] = round(rss_mb(), 1)
started = time.perf_counter()
_stream_usage(None, False, body, produced, gpt_35)
result["first_cl100k_count_ms"] = round((time.perf_counter() - started) * 1000, 1)
result["rss_mb_after_both_encodings"] = round(rss_mb(), 1)
result["counted"] = {"prompt_tokens": first.prompt_tokens, "output_tokens": first.completion_tokens}
estimated = _stream_usage(None, False, body, produced, claude)
result["estimated"] = {
    "prompt_tokens": estimated.prompt_tokens, "output_tokens": estimated.completion_tokens
}

def cpu_us(work, rounds):
    best = None
    for _ in range(5):
        started = time.process_time()
        for _ in range(rounds):
            work()
        spent = (time.process_time() - started) / rounds * 1e6
        best = spent if best is None else min(best, spent)
    return best

texts = produced.texts()
tokenizer_us = cpu_us(
    lambda: (chat_prompt_tokens(body, gpt_4o_mini), output_tokens(gpt_4o_mini, texts)), 200
)
estimate_us = cpu_us(
    lambda: (likely_prompt_tokens(body), -(-produced.chars // 4)), 2000
)
result["cpu_us_per_kb"] = {
    "tokenizer": round(tokenizer_us / 2, 1),
    "byte_estimate": round(estimate_us / 2, 2),
}
result["tokenizer_over_estimate"] = round(tokenizer_us / estimate_us, 1)
print(json.dumps(result))
"""


def measure() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average"] = os.getloadavg()[0]
    result["rss_mb_added_by_first_count"] = round(
        result["rss_mb_after_first_count"] - result["rss_mb_before"], 1
    )
    return result


def section(figures: dict[str, Any]) -> list[str]:
    cpu = figures["cpu_us_per_kb"]
    return [
        "## Token counts for abandoned streams — `bench/tokenizer.py`",
        "",
        "A fresh router-like process (the router's modules, the catalog) bills one abandoned "
        "gpt-4o-mini stream with a 1 KB prompt and 1 KB of output. RSS before: "
        f"{figures['rss_mb_before']} MB; after the first count (library imported, o200k_base "
        f"loaded): {figures['rss_mb_after_first_count']} MB "
        f"(**+{figures['rss_mb_added_by_first_count']} MB**); after cl100k_base too: "
        f"{figures['rss_mb_after_both_encodings']} MB. The first count takes "
        f"**{figures['first_count_ms']} ms** (the first cl100k_base one "
        f"{figures['first_cl100k_count_ms']} ms); the router makes it in a worker thread, "
        "and an event loop beside it went at most "
        f"{figures['loop_max_gap_ms_during_first_count']} ms between 5 ms ticks meanwhile. "
        f"Later counts take {cpu['tokenizer']} µs of CPU per KB "
        f"against {cpu['byte_estimate']} µs for the 4-bytes-per-token estimate "
        f"(**{figures['tokenizer_over_estimate']}x**). Counted "
        f"{figures['counted']['prompt_tokens']} + {figures['counted']['output_tokens']} tokens "
        f"where the estimate says {figures['estimated']['prompt_tokens']} + "
        f"{figures['estimated']['output_tokens']}. Hence the vocabulary loads at the first "
        "count, not at start: most routers never need it. (Load average "
        f"{figures['load_average']:.1f} at the end: absolute times move with the machine.)",
    ]


def main() -> None:
    figures = measure()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2))
    print("\n".join(section(figures)))


if __name__ == "__main__":
    main()
