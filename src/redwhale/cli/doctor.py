"""``redwhale doctor``: what a bug report needs, in one command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app


@app.command("doctor")
def doctor(
    config: Annotated[
        Path | None, typer.Option("--config", help="Also check this run config's data and folders.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Versions, devices and bf16 support, memory, the GGUF cache, the Hub, benchmark data and disk space."""
    from redwhale.config import load_config
    from redwhale.core import environment as env

    report = {"versions": env.versions(), "devices": env.devices(), "gguf_cache": env.gguf_cache(), **env.network()}
    if config is not None:
        cfg = load_config(config)
        report["gguf_cache"] = env.gguf_cache(cfg.cache_dir)
        report["run_dir"] = env.disk(Path(cfg.run_dir))
        data = cfg.eval.data
        report["benchmark_data"] = {"path": str(data), "found": data.is_dir()} if data else "the Hub (eval.data unset)"
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    for section, values in report.items():
        if isinstance(values, dict):
            typer.echo(f"{section}:")
            for key, value in values.items():
                typer.echo(f"  {key}: {value}")
        else:
            typer.echo(f"{section}: {values}")
