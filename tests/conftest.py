"""Tiny corpora built inside the tests: folders of Python files, and the data prepared from them."""
from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

NAMES = ["path", "items", "count", "value", "result", "config", "index", "data", "key", "line", "total", "name"]
FUNCS = ["read_json", "load_items", "parse_line", "count_words", "merge", "update_config", "find_key", "total_size"]


def synthetic_module(rng: random.Random, n_funcs: int = 6) -> str:
    """Plausible Python: imports, functions with loops, ifs, returns, numbers and strings."""
    out = ['"""Helpers for a synthetic module."""', "import json", "import os", ""]
    for _ in range(n_funcs):
        f, a, b = rng.choice(FUNCS), rng.choice(NAMES), rng.choice(NAMES)
        out += [
            "",
            f"def {f}_{rng.randint(0, 999)}({a}, {b}=None):",
            f'    """Return the {a} for {b}."""',
            f"    {b} = {b} or {{}}",
            f"    for i in range({rng.randint(1, 20)}):",
            f"        if {a} == {rng.randint(0, 99999)}:",
            f"            {b}[i] = {a} + {rng.randint(0, 9)}",
            "        else:",
            f"            {b}[i] = str({a}) + \"{rng.choice(NAMES)}\"",
            f"    return {b}",
        ]
    return "\n".join(out) + "\n"


def write_python_tree(root: Path, n_repos: int = 3, files_per_repo: int = 6, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for r in range(n_repos):
        pkg = root / f"repo{r}" / "pkg"
        pkg.mkdir(parents=True, exist_ok=True)
        for i in range(files_per_repo):
            (pkg / f"mod{i}.py").write_text(synthetic_module(rng))
    return root


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: extra intra-op threads only spin, and on a busy 2-core box they thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def overfit_tiny(tok, text: str, steps: int = 100, max_loss: float = 0.05):  # -> GPT
    """A tiny GPT that knows text by heart: prompts of its prefixes continue with text."""
    from codecomplete.engine.model import GPT, config_from_preset

    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tok.vocab_size))
    ids = torch.tensor([[tok.eot_id, *tok.encode(text)]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < max_loss
    return model.eval()


@pytest.fixture(scope="session")
def code_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_python_tree(tmp_path_factory.mktemp("code"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, code_tree: Path) -> dict[str, Path]:
    """corpus/ -> tokenizer.json -> data/, built once through the plain functions the CLI calls."""
    from codecomplete.train.cli import run_collect, run_prepare, run_tokenizer

    root = tmp_path_factory.mktemp("prepared")
    run_collect([code_tree], root / "corpus")
    run_tokenizer(root / "corpus", root / "tokenizer.json", vocab_size=512)
    run_prepare(root / "corpus", root / "tokenizer.json", root / "data", val_fraction=0.2)
    return {"root": root, "corpus": root / "corpus", "tokenizer": root / "tokenizer.json", "data": root / "data"}
