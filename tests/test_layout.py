"""The shape of the code: imports flow down the layers, functions stay short, imports sit at the top of modules
unless there is a stated reason, and no module changes process-wide state when it is imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "redwhale"
MAX_FUNCTION_LINES = 60

#: Where an import inside a function is allowed, and why.
LAZY_MODULES = {
    "cli": "commands import the domain when they run, so that --help and status answer at once",
    "recipe/phases.py": "phase bodies import their domain entry points (torch, datatrove) only when they run",
    "core/source.py": "on the status path: torch and transformers only when a model is loaded",
    "core/logs.py": "logging set-up reaches into loguru and transformers only if they are installed",
    "core/environment.py": "torch only when devices are asked about",
}
#: Optional dependencies (extras, or heavy ones used on one branch), imported where they are needed.
OPTIONAL = {
    "lm_eval",
    "bitsandbytes",
    "torchao",
    "llama_cpp",
    "wandb",
    "fasttext",
    "datasets",
    "torch.utils.tensorboard",
    "redwhale.corpus.perplexity",
}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def test_imports_flow_down_the_layers():
    """The import-linter contract in pyproject.toml: cli > recipe > export | evaluate | train > models > tokenizer >
    corpus > config > core."""
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports; raise SystemExit(lint_imports())"],
        capture_output=True,
        text=True,
        cwd=SRC.parents[1],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_function_is_longer_than_sixty_lines():
    long = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long


def test_imports_inside_functions_have_a_reason():
    hidden = []
    for path, tree in _modules():
        relative = path.relative_to(SRC).as_posix()
        if relative.split("/")[0] in LAZY_MODULES or relative in LAZY_MODULES:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                names = (
                    [a.name for a in sub.names]
                    if isinstance(sub, ast.Import)
                    else [sub.module]
                    if isinstance(sub, ast.ImportFrom)
                    else []
                )
                for name in names:
                    if not any(name == o or name.startswith(o + ".") for o in OPTIONAL):
                        hidden.append(f"{relative}:{sub.lineno} {node.name} imports {name}")
    assert not hidden


def test_importing_the_package_changes_no_process_state():
    """No umask juggling, no logging set-up, no environment variables at import time."""
    script = (
        "import os, logging; before = (os.umask(0o022), dict(os.environ), logging.getLogger().handlers[:]); "
        "os.umask(0o022); import redwhale.cli, redwhale.recipe.runner, redwhale.corpus.pipeline; "
        "after = (os.umask(0o022), dict(os.environ), logging.getLogger().handlers[:]); "
        "print(before[0] == after[0], before[1] == after[1], before[2] == after[2])"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.split() == ["True", "True", "True"], result.stderr[-2000:]
