"""``zoo chat``: a multi-turn conversation about images in the terminal, with the LM's chat template.

    zoo chat TARGET [--image FILE]... [--system TEXT]

Each line read from standard input is a user turn; the answer is printed as one block. Commands:
``/image PATH`` attaches an image to the next turn (any number, in order), ``/reset`` forgets the
conversation and its images, ``/exit`` (or end of input) quits. Every turn renders the whole conversation
with the tokenizer's chat template and generates with the images seen so far, each at its place in the
history (the images are encoded again at each turn's prefill; nothing is cached across turns). Generation
follows the model's generation config; each generation option given overrides one of its settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from zoo.cli.generation_options import add_generation_arguments, check_generation_arguments, generation_options
from zoo.cli.load_options import add_load_arguments, load_kwargs
from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.core.multimodal import MultiModal

__all__ = ["HELP", "ChatSession", "add_arguments", "run"]

HELP = "chat with a composition or a saved checkpoint in the terminal (/image PATH, /reset, /exit)"
DEFAULT_MAX_NEW_TOKENS = 256  # when neither --max-new-tokens nor the model's generation config sets it
COMMANDS = "/image PATH  attach an image to your next message\n/reset       start over\n/exit        quit"


class ChatSession:
    """A conversation with a ``MultiModal``: the history, the images in it, and generation options.

    Args:
        model: the model (put in eval mode by the caller).
        system: system message placed first (``None``: the chat template's default, if any).
        options: keyword arguments for ``model.generate`` (``max_new_tokens``, ``do_sample``...), over the
            model's generation config (its LM directory's ``generation_config.json``).

    Example:
        >>> chat = ChatSession(zoo.load("ckpt/"), max_new_tokens=64)
        >>> chat.attach("cat.png")
        >>> chat.ask("What is in this image?")
    """

    def __init__(self, model: MultiModal, *, system: str | None = None, **options: Any) -> None:
        self.model = model
        self.processor = model.processor()
        if not getattr(self.processor.tokenizer, "chat_template", None):
            raise ZooError(f"the tokenizer of {model.lm.name!r} has no chat template; use 'zoo generate' instead")
        self.system = system
        self.options = options
        self.reset()

    def reset(self) -> None:
        """Forget the conversation and its images."""
        self.messages: list[dict[str, str]] = [{"role": "system", "content": self.system}] if self.system else []
        self.images: list[Any] = []
        self.pending: list[Any] = []

    def attach(self, path: str | Path) -> None:
        """Attach the image at ``path`` to the next user message."""
        from zoo.sdk.images import open_image

        self.pending.append(open_image(path, what="/image"))

    def ask(self, text: str) -> str:
        """Add a user turn (with the attached images before it), generate and record the answer."""
        content = "\n".join([self.model.image_token] * len(self.pending) + [text])
        messages = [*self.messages, {"role": "user", "content": content}]
        images = [*self.images, *self.pending]
        batch = self.processor(self.processor.apply_chat_template(messages), images=images)
        output = self.model.generate(**batch, **self.options)  # [1, T + new]
        answer = self.processor.decode(output[:, batch["input_ids"].shape[1] :])[0].strip()
        self.messages = [*messages, {"role": "assistant", "content": answer}]
        self.images, self.pending = images, []
        return answer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo chat``."""
    parser.add_argument("target", help="a checkpoint directory, a YAML file or a composition name")
    parser.add_argument("--image", action="append", default=[], help="image for the first message (repeatable)")
    parser.add_argument("--system", help="system message")
    add_generation_arguments(parser, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--seed", type=int, default=0)
    add_load_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Load or build the model, then answer each line of standard input until ``/exit`` or its end."""
    import torch

    import zoo

    check_generation_arguments(args)
    torch.manual_seed(args.seed)
    target = Path(args.target)
    if target.is_dir():
        model = zoo.load(target, **load_kwargs(args))
    else:
        model = zoo.build(args.target, plugins=tuple(args.plugin or ()))
    model.eval()
    # the options given, over the model's generation config (its LM directory's generation_config.json)
    options = generation_options(args, model, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    chat = ChatSession(model, system=args.system, **options)
    for path in args.image:
        chat.attach(path)
    return _loop(chat, sys.stdin, sys.stdout)


def _loop(chat: ChatSession, stdin: TextIO, stdout: TextIO) -> int:
    interactive = stdin.isatty()
    if interactive:
        print(f"chatting with {chat.model.lm.name!r}; commands:\n{COMMANDS}", file=stdout)
    while True:
        if interactive:
            print("you> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            chat.reset()
            print("(conversation reset)", file=stdout, flush=True)
        elif text.startswith("/image"):
            path = text.removeprefix("/image").strip()
            try:
                if not path:
                    raise ZooError("/image needs a path: /image PATH")
                chat.attach(path)
            except ZooError as error:  # a bad path does not end the conversation
                print(f"zoo: error: {error}", file=sys.stderr, flush=True)
                continue
            print(f"(image {path} attached to your next message)", file=stdout, flush=True)
        elif text.startswith("/"):
            print(f"zoo: unknown command {text.split()[0]!r}; commands:\n{COMMANDS}", file=sys.stderr, flush=True)
        else:
            print(chat.ask(text), file=stdout, flush=True)
