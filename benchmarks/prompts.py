"""Prompts for generate.py: text files, JSONL chats, random token ids, workload presets."""

import json
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workload:
    num_prompts: int
    input_len: int
    output_len: int
    geometry: str = "llama3-8b"
    note: str = ""


# End-to-end presets (Llama-3-8B geometry, dummy weights; DESIGN.md section 6 has the bar).
WORKLOADS = {
    "short": Workload(1000, 512, 128, note="many short requests: prefill-heavy batches"),
    "long": Workload(200, 4096, 256, note="long prompts: chunked prefill over cached prefixes"),
    "decode-heavy": Workload(64, 128, 1024, note="few requests, long outputs: decode-bound"),
}

DEFAULT_QUESTIONS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about GPUs.",
    "Explain in two sentences what attention does in a transformer.",
    "List three prime numbers greater than 10.",
    "Translate 'good morning' into Spanish and German.",
    "What is 17 * 23? Show the steps briefly.",
    "Give one tip for writing clear code.",
    "Summarize the plot of Romeo and Juliet in one sentence.",
]


def synthetic(num_prompts: int, input_len: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """Random token ids, the same for every backend given the same seed. Ids stay clear of
    the ends of the vocabulary where special tokens usually sit."""
    rng = random.Random(seed)
    low, high = min(1000, vocab_size // 4), vocab_size - 1000 if vocab_size > 4000 else vocab_size - 1
    return [[rng.randrange(low, high) for _ in range(input_len)] for _ in range(num_prompts)]


def load_file(path: Path) -> list:
    """A text file (one prompt per line) or JSONL: each line a string, ``{"prompt": ...}``,
    ``{"messages": [...]}`` or a bare list of chat messages. Returns strings and message lists."""
    prompts = []
    jsonl = path.suffix in (".jsonl", ".json")
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if not jsonl:
            prompts.append(line.replace("\\n", "\n"))
            continue
        item = json.loads(line)
        if isinstance(item, dict):
            item = item.get("messages", item.get("prompt", item.get("text")))
        if item is None:
            raise SystemExit(f"{path}: cannot read a prompt from line {line[:80]!r}")
        prompts.append(item)
    if not prompts:
        raise SystemExit(f"{path} holds no prompts")
    return prompts


def as_chats(prompts: list) -> list[list[dict]]:
    return [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]


def render(prompts: list, tokenizer, use_chat_template: bool) -> list[str]:
    """Prompt strings; chats go through the tokenizer's chat template when it has one."""
    has_template = use_chat_template and getattr(tokenizer, "chat_template", None)
    out = []
    for p in prompts:
        if isinstance(p, list) and not has_template:
            p = "\n".join(m["content"] for m in p)
        if has_template:
            chat = p if isinstance(p, list) else [{"role": "user", "content": p}]
            p = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        out.append(p)
    return out
