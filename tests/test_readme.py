"""The README runs as written: every fenced code block of README.md is executed here, or marked illustrative.

Each block runs in a fresh temporary directory, on CPU, with tiny compositions. How, by fence language:

- ``python``: ``exec`` in a fresh namespace, as a module of its own (the README's Python blocks are independent:
  one API session and the files of two example plugins). The namespace holds ``image``, a small PIL image, and
  the directory holds the files of ``FIXTURES`` that the block names (``model.yaml``: a tiny composition).
- ``bash``: ``bash -e -o pipefail`` with ``zoo`` on ``PATH`` running this checkout (``python -m zoo``). To keep
  it to seconds, ``OVERRIDES`` appends options to some commands (``zoo train ... --max-steps 2``, a small
  ``zoo data shapes``); the directory holds a copy of ``examples/shapes/`` and the ``FIXTURES`` the block names.
- ``yaml``: a training file (``model:``, ``data:``, ``train:``) is trained for 2 steps, as ``zoo train FILE
  --max-steps 2``; a model file is validated as ``zoo validate FILE`` does (the contract checked on ``meta``,
  so full-size names allocate nothing), with plugins loaded strictly (a plugin that fails is a failure).
- ``json``: parsed; ``jsonl``: each line parsed.
- ``tree``: the layout of ``zoo/`` (README, Architecture): its entries must be exactly the subpackages, public
  modules and data files at the top of ``zoo/``.

A block that cannot run here (it installs from the network, needs a cluster, a GPU or a served model) is marked
in the README by an HTML comment on the line directly before its fence, invisible when rendered::

    <!-- readme-test: skip (why it cannot run in the tests) -->

The reason is required and at most ``MAX_SKIPPED`` blocks may be marked. ``run_block`` returns what went wrong
(``None`` when the block ran), and ``test_a_drifted_readme_fails_its_block`` plants drift to show that it can fail.
"""

from __future__ import annotations

import contextlib
import doctest
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_SKIPPED = 9
MARKER = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
# command prefix in a bash block -> options the test appends (documented in the module docstring)
OVERRIDES = {"zoo data shapes": "--train 32 --eval 4", "zoo train": "--max-steps 2"}
TINY_MODEL_YAML = """\
model:
  vision: {name: tiny-clip}
  projector: {name: mlp2x-gelu}
  lm: {name: tiny-qwen2, train: lora, lr: 2.0e-4}
"""
EMPTY_PLUGIN = """\
import zoo


@zoo.hookimpl
def zoo_register_projectors(register):
    pass  # a config may name a plugin package; this one adds nothing
"""


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text, README line of its first code line and, if marked, why it is skipped."""

    lang: str
    text: str
    line: int
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.lang}-line{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order; a skip marker must sit directly before a fence."""
    lines = text.splitlines()
    blocks, start, lang = [], None, ""
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if fence and start is None:
            start, lang = number, fence["lang"]
        elif line.startswith("```") and start is not None:
            marker = MARKER.fullmatch(lines[start - 2].strip()) if start >= 2 else None
            body = "\n".join(lines[start:number - 1]) + "\n"  # fmt: skip
            blocks.append(Block(lang, body, start + 1, marker["reason"].strip() if marker else None))
            start = None
    for number, line in enumerate(lines, 1):
        comment = line.strip().startswith("<!--") and "readme-test" in line
        if comment and not (MARKER.fullmatch(line.strip()) and number < len(lines) and FENCE.match(lines[number])):
            raise ValueError(f"README.md:{number}: a readme-test marker must be `<!-- readme-test: skip (REASON) -->` "
                             "on the line directly before a fence")  # fmt: skip
    return blocks


# -- fixtures: a path a block names -> how the test makes it in the block's directory ----------------------
def _tiny_model_yaml(where: Path) -> None:
    (where / "model.yaml").write_text(TINY_MODEL_YAML, encoding="utf-8")


def _plugin_package(where: Path) -> None:
    package = where / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "zoo_plugin.py").write_text(EMPTY_PLUGIN, encoding="utf-8")


def _local_qwen2_7b(where: Path) -> None:
    """A transformers directory with Qwen2-7B's config.json only: enough to validate on ``meta``."""
    from zoo.core.builder import build_component

    lm = build_component("lm", "qwen2-7b", meta=True)
    folder = where / "path/to/local/dir"
    folder.mkdir(parents=True)
    lm.model.config.to_json_file(str(folder / "config.json"))


def _llava_data(where: Path) -> None:
    """Shapes records whose image paths are relative to ``data/images`` (the block's ``image_folder``)."""
    from zoo.train.shapes import write_shapes

    write_shapes(where / "data", train=16, eval=4, seed=0)
    for name in ("train.json", "eval.json"):
        path = where / "data" / name
        records = json.loads(path.read_text(encoding="utf-8"))
        for record in records:
            record["image"] = record["image"].removeprefix("images/")
        path.write_text(json.dumps(records), encoding="utf-8")


def _llava_next_dir(where: Path) -> None:
    """A LLaVA-NeXT directory, as transformers writes one: the tiny any-res composition exported."""
    import zoo

    zoo.save_hf_llava(zoo.build("tiny-anyres-clip-mlp-qwen2"), where / "llava-v1.6-dir")


FIXTURES: dict[str, Callable[[Path], None]] = {
    "model.yaml": _tiny_model_yaml,
    "my_package.zoo_plugin": _plugin_package,
    "path/to/local/dir": _local_qwen2_7b,
    "data/train.json": _llava_data,
    "llava-v1.6-dir/": _llava_next_dir,
}


def _python_globals() -> dict[str, object]:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (48, 40), "white")
    ImageDraw.Draw(image).ellipse((8, 6, 36, 30), fill="red")
    return {"image": image}


# -- runners ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run with ``folder`` as the working directory and first on ``sys.path``; a fresh plugin registry."""
    from zoo.core.registry import reset_registry

    before, modules = Path.cwd(), set(sys.modules)
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    reset_registry()
    try:
        yield
    finally:
        reset_registry()
        sys.path.remove(str(folder))
        os.chdir(before)
        for name in set(sys.modules) - modules:  # modules imported from the folder (the fixture plugin package)
            if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(folder)):
                del sys.modules[name]


def _where(error: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "README.md"]
    return f"README.md:{frames[-1].lineno}: " if frames else ""


def _run_python(block: Block, folder: Path) -> str | None:
    code = compile("\n" * (block.line - 1) + block.text, "README.md", "exec")  # README line numbers in tracebacks
    namespace = {"__name__": f"readme_line_{block.line}", **_python_globals()}
    try:
        exec(code, namespace)
    except Exception as error:  # noqa: BLE001 - any error of the block is the report
        return f"{_where(error)}{type(error).__name__}: {error}"
    return None


def _with_overrides(script: str) -> str:
    lines = []
    for line in script.splitlines():
        code, hash_, comment = line.partition(" #")
        for prefix, extra in OVERRIDES.items():
            if code.strip().startswith(prefix + " "):
                code = f"{code.rstrip()} {extra}"
        lines.append(code + (f"  #{comment}" if hash_ else ""))
    return "\n".join(lines) + "\n"


def _run_bash(block: Block, folder: Path) -> str | None:
    shutil.copytree(REPO / "examples" / "shapes", folder / "examples" / "shapes", ignore=shutil.ignore_patterns("data"))
    bin_dir = folder / ".bin"
    bin_dir.mkdir()
    (bin_dir / "zoo").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m zoo "$@"\n', encoding="utf-8")
    (bin_dir / "zoo").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))  # fmt: skip
    trap = "trap 'echo \"README block failed at: $BASH_COMMAND\" >&2' ERR\n"
    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", trap + _with_overrides(block.text)], cwd=folder,
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    if run.returncode != 0:
        return f"exit {run.returncode}: {run.stderr.strip()[-2000:]}"
    return None


def _run_yaml(block: Block, folder: Path) -> str | None:
    from zoo.core.builder import plan
    from zoo.core.registry import get_registry, reset_registry

    path = folder / "block.yaml"
    path.write_text(block.text, encoding="utf-8")
    data = yaml.safe_load(block.text)
    try:
        reset_registry()  # the fixtures may have loaded one
        get_registry(strict=True)  # a plugin the block names must load
        if {"model", "data", "train"} <= set(data):
            from zoo.train.run import train

            result = train(path, max_steps=2)
            if not (result.final_checkpoint / "manifest.json").is_file():
                return f"training left no checkpoint at {result.final_checkpoint}"
        elif "model" in data:
            plan(path)
        else:
            return f"a yaml block with keys {sorted(data)} is neither a model nor a training file"
    except Exception as error:  # noqa: BLE001 - any error of the block is the report
        return f"{type(error).__name__}: {error}"
    return None


def _run_json(block: Block, folder: Path) -> str | None:
    try:
        json.loads(block.text)
    except ValueError as error:
        return f"invalid JSON: {error}"
    return None


def _run_jsonl(block: Block, folder: Path) -> str | None:
    for number, line in enumerate(block.text.splitlines(), start=1):
        if line.strip():
            try:
                json.loads(line)
            except ValueError as error:
                return f"line {number} is not a JSON object: {error}"
    return None


def _run_tree(block: Block, folder: Path) -> str | None:
    lines = block.text.splitlines()
    if lines[0].strip() != "zoo/":
        return f"the tree starts with {lines[0]!r}, not 'zoo/'"
    listed = {line.split()[0] for line in lines[1:] if line.startswith("  ") and not line.startswith("   ")}
    top = REPO / "zoo"
    present = {f"{p.name}/" for p in top.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    present |= {p.name for p in top.iterdir() if p.is_file() and p.suffix in (".py", ".yaml")}
    present -= {"__init__.py", "__main__.py", "_moved.py"}
    if listed != present:
        return f"the tree lists {sorted(listed - present)} that zoo/ lacks and lacks {sorted(present - listed)}"
    return None


RUNNERS: dict[str, Callable[[Block, Path], str | None]] = {
    "python": _run_python,
    "bash": _run_bash,
    "yaml": _run_yaml,
    "json": _run_json,
    "jsonl": _run_jsonl,
    "tree": _run_tree,
}


def run_block(block: Block, folder: Path) -> str | None:
    """Run one block in ``folder`` (made with the fixtures it names); ``None`` if it ran, else what went wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    with _inside(folder):
        for path, make in FIXTURES.items():
            if path in block.text:
                make(folder)
        return RUNNERS[block.lang](block, folder)


# -- the tests ---------------------------------------------------------------------------------------
BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
RUNNABLE = [b for b in BLOCKS if b.skip is None]


def test_every_block_runs_or_is_marked_with_a_reason():
    assert [b.id for b in RUNNABLE if b.lang not in RUNNERS] == []
    skipped = [b for b in BLOCKS if b.skip is not None]
    assert all(len(b.skip) >= 10 for b in skipped), [b.skip for b in skipped]
    assert len(skipped) <= MAX_SKIPPED, [b.id for b in skipped]
    assert {"python", "bash", "yaml"} <= {b.lang for b in RUNNABLE}


def test_a_marker_away_from_a_fence_is_an_error():
    with pytest.raises(ValueError, match="directly before a fence"):
        readme_blocks("<!-- readme-test: skip (needs a GPU) -->\n\n```bash\nzoo list\n```\n")
    with pytest.raises(ValueError, match="directly before a fence"):
        readme_blocks("<!-- readme-test: skip -->\n```bash\nzoo list\n```\n")
    (block,) = readme_blocks("<!-- readme-test: skip (needs a GPU) -->\n```bash\nzoo list\n```\n")
    assert block.skip == "needs a GPU" and block.text == "zoo list\n" and block.line == 3


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_readme_block_runs(block, tmp_path):
    assert run_block(block, tmp_path / "work") is None


@pytest.mark.parametrize(
    ("lang", "old", "new", "named"),
    [("python", "zoo.build(", "zoo.biuld(", "biuld"), ("bash", "zoo data shapes", "zoo data shapez", "shapez"),
     ("yaml", "dinov2-large-14-reg,", "dinov2-large-14-regs,", "dinov2-large-14-regs"),
     ("tree", "  interop/ ", "  interops/ ", "interops/")],
)  # fmt: skip
def test_a_drifted_readme_fails_its_block(lang, old, new, named, tmp_path):
    drifted = README.read_text(encoding="utf-8").replace(old, new)
    changed = [b for b in readme_blocks(drifted) if b.skip is None and b.lang == lang and new in b.text]
    assert changed, f"no runnable {lang} block holds {old!r}"
    for i, block in enumerate(changed):
        report = run_block(block, tmp_path / str(i))
        assert report is not None and named in report, report


def test_the_plugin_example_registers_a_projector_that_builds(tmp_path, fresh_registry):
    import zoo

    (block,) = [b for b in RUNNABLE if b.lang == "python" and "example-mlp-relu" in b.text]
    plugin = tmp_path / "readme_plugin.py"
    plugin.write_text(block.text, encoding="utf-8")
    model = zoo.build({"plugins": [str(plugin)],
                       "model": {"vision": "tiny-clip", "projector": "example-mlp-relu", "lm": "tiny-qwen2"}})  # fmt: skip
    assert type(model.projector).__name__ == "ReluProjector"
    features = model.vision(model.processor().preprocessor([_python_globals()["image"]]))  # [1, 16, 32]
    assert tuple(model.projector(features).shape) == (1, model.tokens_per_image, model.lm.hidden_size)


def test_the_cpu_torch_note_installs_the_versions_of_the_set_up_commands():
    text = README.read_text(encoding="utf-8")
    setup = [b.text for b in BLOCKS if b.lang == "bash" and "pip install torch==" in b.text]
    pins = {tuple(re.findall(r"(torch(?:vision)?==[\w.]+)", command)) for command in setup}
    (note,) = re.findall(r"pip install (torch==\S+ torchvision==\S+) --index-url https://download\.pytorch\.org/whl/cpu",
                         text)  # fmt: skip
    assert len(setup) == 2 and pins == {tuple(note.split())}
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert " ".join(note.split()) in ci  # CI installs the same pins


def test_the_default_grid_size_in_both_readmes_is_its_expansion():
    from zoo.bench.grid import expand, load_bench, plan_grid

    spec = load_bench(None)
    total = len(expand(spec))
    anyres = sum("anyres" in c.vision for c in expand(spec))
    cases, skipped = plan_grid(spec)
    readme = " ".join(README.read_text(encoding="utf-8").split())
    stated = re.search(r"`benches.default` of `registry.yaml`: (\d+) tiny compositions, (\d+) of them with any-res "
                       r"tiling, of which the (\d+) any-res x resampler ones are listed as skipped and (\d+) are "
                       r"measured", readme)  # fmt: skip
    assert stated is not None, "README.md no longer states the default grid's size in the tested words"
    assert tuple(map(int, stated.groups())) == (total, anyres, len(skipped), len(cases))
    bench_readme = (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"benches\.default \((\d+) tiny combinations: (\d+) measured, (\d+) skipped\)", bench_readme)
    assert stated is not None and tuple(map(int, stated.groups())) == (total, len(cases), len(skipped))


def test_the_builder_docstring_examples_run():
    """zoo.build / zoo.plan / build_component show real numbers (tiny-clip-mlp-qwen2: 16 tokens per image)."""
    from zoo.core import builder

    names = {"build": builder.build, "plan": builder.plan, "build_component": builder.build_component}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for name, function in names.items():
        for test in doctest.DocTestFinder().find(function, name, globs=dict(names)):
            assert test.examples, name
            assert runner.run(test).failed == 0, name
