"""``zoo demo``: chat with a composition or a checkpoint in the browser (Gradio; ``pip install 'zoo-vlm[demo]'``)."""

from __future__ import annotations

import argparse

from zoo.cli.load_options import add_load_arguments, load_kwargs

__all__ = ["HELP", "add_arguments", "run"]

HELP = "serve a Gradio chat (image upload, multi-turn, streaming) for a composition or a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo demo``."""
    parser.add_argument("target", help="a checkpoint directory, a Llava directory, a YAML file or a composition name")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="default generation budget per answer (default: the model's generation config's, else 256)",
    )
    parser.add_argument("--device", help="torch device (default cpu)")
    add_load_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Load the model, build the chat page and serve it until interrupted."""
    from zoo.cli.demo_app import build_demo
    from zoo.errors import ZooError
    from zoo.interop.targets import load_target

    if not 0 < args.port < 65536:
        raise ZooError(f"--port = {args.port} is not valid; give a port between 1 and 65535")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ZooError(f"--max-new-tokens = {args.max_new_tokens} is not valid; give a positive integer")
    model = load_target(args.target, device=args.device, **load_kwargs(args))  # plugins among the load options
    demo = build_demo(model, args.target, max_new_tokens=args.max_new_tokens)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True)
    return 0
