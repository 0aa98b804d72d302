"""``zoo show``: a component's contract and parameter count (built on ``meta``, cached), or a composition's config."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, cast

from zoo.cli.shared import KIND_ALIASES, emit, registry_for
from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.sdk.interfaces import LanguageModel, Projector, VisionTower

HELP = "show a component's contract"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--kind", choices=sorted(set(KIND_ALIASES) - {"model", "models"}))
    parser.add_argument("--in-dim", type=int, default=1024, help="projector input width for 'show' (default 1024)")
    parser.add_argument("--out-dim", type=int, default=4096, help="projector output width for 'show' (default 4096)")


def run(args: argparse.Namespace) -> int:
    from zoo.core.plan_cache import cached, is_builtin

    registry = registry_for(args)
    kinds = [KIND_ALIASES[args.kind]] if args.kind else ["vision", "projector", "lm"]
    found = []
    for kind in kinds:
        try:
            found.append((kind, *registry.resolve(kind, args.name)))
        except ZooError:
            continue
    if not found:
        if args.name in registry.compositions:
            from zoo.cli.validation import plan_summary
            from zoo.core.config import load_model_config

            config = load_model_config(args.name)
            summary = plan_summary(config)
            data = {"kind": "model", "name": args.name, "config": config.to_dict(), "contract": summary["contract"]}
            emit(args, data, json.dumps(data, indent=2))
            return 0
        from zoo.errors import UnknownNameError, suggest

        names = [s.name for kind in kinds for s in registry.list(kind)] + list(registry.compositions)
        raise UnknownNameError(
            f"{args.name!r} is not a registered component or composition; {suggest(args.name, names)}"
            f"{registry.missing_plugins_note()}"
        )
    kind, spec, _ = found[0]
    dims = {"in_dim": args.in_dim, "out_dim": args.out_dim} if kind == "projector" else {}

    def meta_facts() -> dict[str, Any]:
        from zoo.core.builder import build_component

        module = cast("VisionTower | Projector | LanguageModel", build_component(kind, args.name, meta=True, **dims))
        contract = dict(module.contract())
        if kind == "projector":
            contract["tokens_out_for_576"] = cast("Projector", module).num_output_tokens(576)
        return {"params": sum(p.numel() for p in module.parameters()), "contract": contract}

    payload = {"kind": kind, "name": args.name, **dims}
    facts = cached("component", payload, meta_facts, store=is_builtin(spec.plugin))  # no torch on a hit
    contract = facts["contract"]
    data = {"kind": kind, "name": args.name, "source": spec.source, "plugin": spec.plugin,
            "description": spec.description, "params": facts["params"], "contract": contract}  # fmt: skip
    text = "\n".join(
        [f"{args.name} ({kind}, {spec.source}, plugin {spec.plugin})", f"  {spec.description}",
         f"  params: {data['params']:,}"] + [f"  {k}: {v}" for k, v in contract.items()]
    )  # fmt: skip
    emit(args, data, text)
    return 0
