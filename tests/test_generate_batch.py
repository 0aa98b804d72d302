"""``zoo generate --batch-file``: many prompts, one process, one model load, answers equal to single calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.cli.app import main
from zoo.cli.generate_batch import GenerationOptions, generate_answers, read_batch_file


class Setup(NamedTuple):
    tmp: Path
    checkpoint: Path
    batch_file: Path
    lines: list[dict]


QUESTIONS = ["What is this?", "Describe the picture in a lot of detail, please.", "Which colour?"]


def _varied(model: zoo.MultiModal, std: float = 0.2) -> zoo.MultiModal:
    """Re-draw the projector's and the LM's matrices wider: a tiny model at its default init answers every
    prompt with the same token, which would make "equal answers" prove nothing."""
    with torch.no_grad():
        for module in (model.projector, model.lm):
            for param in module.parameters():
                if param.dim() == 2:
                    param.normal_(0.0, std)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved checkpoint with varied weights, 3 images in data/img/, and data/questions.jsonl (9 lines)."""
    tmp = tmp_path_factory.mktemp("batch")
    torch.manual_seed(0)
    checkpoint = zoo.save(_varied(zoo.build("tiny-clip-mlp-qwen2")), tmp / "ckpt")
    (tmp / "data" / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 40), (48, 32), (32, 56)]):
        pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp / "data" / "img" / f"{i}.png")
    lines = []
    for i in range(3):
        for j, question in enumerate(QUESTIONS):
            line: dict = {"id": f"q{i}{j}", "prompt": question, "images": [f"img/{i}.png"]}
            if (i, j) == (1, 1):
                line["system"] = "You are terse."  # this line's own system message
            if (i, j) == (2, 0):
                line["max_new_tokens"] = 3  # this line's own option: a batch of its own
            lines.append(line)
    lines[4]["prompt"] = "<image>\nIn one word: what is this?"  # a placeholder written by the user
    batch_file = tmp / "data" / "questions.jsonl"
    batch_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    return Setup(tmp, checkpoint, batch_file, lines)


def _single(model, line, folder, max_new_tokens=6, system=None):
    """The answer of ``zoo generate --prompt`` (one prompt), through the Python API, rendered by hand."""
    processor = model.processor()
    images = [Image.open(folder / path).convert("RGB") for path in line["images"]]
    prompt = line["prompt"]
    if model.image_token not in prompt:
        prompt = "\n".join([model.image_token] * len(images) + [prompt])
    system = line.get("system", system)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    batch = processor(processor.apply_chat_template(messages), images=images)
    out = model.generate(**batch, max_new_tokens=line.get("max_new_tokens", max_new_tokens), do_sample=False)
    new = out[:, batch["input_ids"].shape[1] :]
    return processor.decode(new)[0], new[0].tolist()


def test_nine_prompts_over_three_images_in_one_process_equal_single_calls(setup, monkeypatch, capsys, tmp_path):
    checkpoint, batch_file, lines = setup.checkpoint, setup.batch_file, setup.lines
    loads = []
    real_load = zoo.load
    monkeypatch.setattr(zoo, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.chdir(tmp_path)  # image paths are relative to the batch file's folder, not to here
    out = tmp_path / "answers.jsonl"
    args = ["generate", str(checkpoint), "--batch-file", str(batch_file), "--output", str(out)]
    assert main([*args, "--batch-size", "4", "--max-new-tokens", "6"]) == 0
    assert len(loads) == 1  # one model load for nine questions
    err = capsys.readouterr().err
    assert "zoo generate 9/9 (100%)" in err and f"wrote 9 answers to {out}" in err
    answers = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [a["index"] for a in answers] == list(range(9))  # input order, although line 7 ran in its own batch
    assert [a["line"] for a in answers] == list(range(1, 10))
    assert [a["id"] for a in answers] == [line["id"] for line in lines]
    model = real_load(checkpoint).eval()
    for answer, line in zip(answers, lines):
        text, tokens = _single(model, line, batch_file.parent)
        assert (answer["text"], answer["tokens"]) == (text, tokens), line
    assert len(answers[6]["tokens"]) == 3  # its own max_new_tokens
    assert len({tuple(a["tokens"]) for a in answers}) >= 7  # the answers depend on the prompt and the image
    # two real one-prompt commands agree too (--json gives the tokens)
    for k in (0, 4):
        line = lines[k]
        single = ["generate", str(checkpoint), "--prompt", line["prompt"], "--max-new-tokens", "6", "--json"]
        single += ["--image", str(batch_file.parent / line["images"][0])]
        single += ["--system", line["system"]] if "system" in line else []  # line 5 has its own
        assert main(single) == 0
        assert json.loads(capsys.readouterr().out) == {"text": answers[k]["text"], "tokens": answers[k]["tokens"]}


def test_answers_stream_to_stdout_with_the_command_system_message(setup, capsys):
    tmp, checkpoint, batch_file, lines = setup.tmp, setup.checkpoint, setup.batch_file, setup.lines
    one = tmp / "data" / "two.jsonl"
    one.write_text(json.dumps({"prompt": "Hello"}) + "\n" + json.dumps(lines[0]) + "\n", encoding="utf-8")
    args = ["generate", str(checkpoint), "--batch-file", str(one), "--system", "Be brief.", "--max-new-tokens", "4"]
    assert main(args) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    model = zoo.load(checkpoint).eval()
    assert first["id"] is None and first["index"] == 0
    text, tokens = _single(model, {"prompt": "Hello", "images": []}, tmp, max_new_tokens=4, system="Be brief.")
    assert (first["text"], first["tokens"]) == (text, tokens)
    text, tokens = _single(model, lines[0], batch_file.parent, max_new_tokens=4, system="Be brief.")
    assert second["tokens"] == tokens


def test_a_row_that_stops_early_keeps_its_own_tokens(setup):
    """A finished row is padded while the others go on; its answer ends at its stop token, as alone."""
    checkpoint, batch_file, lines = setup.checkpoint, setup.batch_file, setup.lines
    model = zoo.load(checkpoint).eval()
    items = read_batch_file(batch_file, defaults=GenerationOptions(max_new_tokens=6))
    free = list(generate_answers(model, items, batch_size=9))
    stop = free[2]["tokens"][2]  # the third token of one answer becomes the stop token
    model.lm.model.generation_config.eos_token_id = stop
    stopped = list(generate_answers(model, items, batch_size=9))
    assert len(stopped[2]["tokens"]) == 3 and stopped[2]["tokens"][-1] == stop
    assert any(len(a["tokens"]) == 6 for a in stopped)  # the others went on in the same batch
    for answer, line in zip(stopped, lines):
        assert answer["tokens"] == _single(model, line, batch_file.parent)[1]


def test_every_bad_line_is_named_by_file_and_line_before_the_model_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "build", lambda *a, **k: pytest.fail("the model was built before the file was checked"))
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    good = json.dumps({"prompt": "fine", "images": ["ok.png"]})
    bad = [
        good,
        "{not json",
        json.dumps({"promt": "typo"}),
        json.dumps({"prompt": "x", "images": ["missing.png"]}),
        json.dumps({"prompt": "x", "max_new_tokens": 0}),
        json.dumps({"prompt": "x", "images": [3]}),
        "",
        json.dumps(["a list"]),
        json.dumps({"prompt": "x", "do_sample": "yes"}),
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(bad) + "\n", encoding="utf-8")
    assert main(["generate", "tiny-clip-mlp-qwen2", "--batch-file", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "7 bad lines" in err
    for number, what in [(2, "not valid JSON"), (3, "unknown key 'promt'; did you mean 'prompt'"),
                         (4, f"images[0] '{tmp_path / 'missing.png'}' does not exist"), (5, "max_new_tokens = 0 is not valid"),
                         (6, "'images' = [3]")]:  # fmt: skip
        assert f"{path}:{number}: {what}" in err, (number, err)
    assert f"{path}:1:" not in err  # the good line is not named; lines 8 and 9 are counted
    assert "(and 2 more bad lines)" in err


def test_lines_that_do_not_fit_are_named_before_anything_is_generated(setup, tmp_path, monkeypatch, capsys):
    tmp, checkpoint, lines = setup.tmp, setup.checkpoint, setup.lines
    path = tmp / "data" / "long.jsonl"
    rows = [lines[0], {**lines[1], "max_new_tokens": 10**6}, {"prompt": "<image> <image>", "images": ["img/0.png"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    monkeypatch.setattr(zoo.MultiModal, "generate", lambda *a, **k: pytest.fail("generated before the check"))
    out = tmp_path / "answers.jsonl"
    assert main(["generate", str(checkpoint), "--batch-file", str(path), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: max_new_tokens = 1000000 goes past the model's context" in err
    assert f"{path}:3: the prompts hold 2" in err and "but 1 images were given" in err
    assert not out.exists()


def test_output_is_written_atomically(setup, tmp_path, monkeypatch, capsys):
    checkpoint, batch_file = setup.checkpoint, setup.batch_file
    out = tmp_path / "answers.jsonl"
    out.write_text("the previous answers\n", encoding="utf-8")
    calls = []
    real = zoo.MultiModal.generate

    def fails_on_the_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run half way
        return real(self, *args, **kwargs)

    monkeypatch.setattr(zoo.MultiModal, "generate", fails_on_the_second_batch)
    args = ["generate", str(checkpoint), "--batch-file", str(batch_file), "--output", str(out), "--batch-size", "2"]
    assert main(args) == 130 and "zoo: interrupted" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "the previous answers\n"  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]  # no temporary left
    monkeypatch.setattr(zoo.MultiModal, "generate", real)
    assert main(["generate", str(checkpoint), "--batch-file", str(batch_file), "--output", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt", "hi"], "argument --prompt: not allowed with argument --batch-file"),
        (["--image", "a.png"], "--image does not go with --batch-file"),
        (["--stream"], "--stream does not go with --batch-file"),
        (["--batch-size", "0"], "--batch-size = 0 is out of range"),
        (["--output", "SELF"], "is the --batch-file; the answers would replace the questions"),
    ],
)
def test_batch_options_that_do_not_mix_are_refused(setup, capsys, extra, message):
    checkpoint, batch_file = setup.checkpoint, setup.batch_file
    extra = [str(batch_file) if e == "SELF" else e for e in extra]
    assert main(["generate", str(checkpoint), "--batch-file", str(batch_file), *extra]) == 2
    assert message in capsys.readouterr().err


def test_single_prompt_options_are_checked_too(capsys):
    assert main(["generate", "tiny-clip-mlp-qwen2"]) == 2
    assert "one of the arguments --prompt --batch-file is required" in capsys.readouterr().err
    assert main(["generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", "--output", "x.jsonl"]) == 2
    assert "--output goes with --batch-file" in capsys.readouterr().err


@pytest.mark.parametrize("lm", ["tiny-qwen2", "tiny-qwen3", "tiny-llama", "tiny-minicpm3", "tiny-qwen1"])
def test_left_padded_greedy_batches_equal_single_rows_for_every_lm_family(lm):
    """float32: position ids follow the left padding, so a padded row decodes exactly as alone."""
    torch.manual_seed(0)
    model = _varied(zoo.build({"model": {"vision": "tiny-clip", "projector": "linear", "lm": lm}})).eval()
    processor = model.processor(padding_side="left")
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(3)]
    prompts = ["<image> a long question about the picture, its colours and its shapes", "short", "<image><image> two"]
    groups = [images[:1], [], images[1:]]
    batch = processor(prompts, images=groups)
    assert batch["attention_mask"].min() == 0  # some rows are padded
    new = model.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=None)[
        :, batch["input_ids"].shape[1] :
    ]
    singles = []
    for row, (prompt, group) in enumerate(zip(prompts, groups)):
        alone = processor(prompt, images=group)
        single = model.generate(**alone, max_new_tokens=8, do_sample=False, eos_token_id=None)
        singles.append(single[0, alone["input_ids"].shape[1] :])
        assert torch.equal(new[row], singles[-1]), (lm, row)
    assert len({tuple(s.tolist()) for s in singles}) == 3  # different prompts, different answers


def test_the_readme_batch_file_example_is_valid(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Many prompts, one process**") :]
    example = section[
        section.index("```jsonl\n") + len("```jsonl\n") : section.index("\n```", section.index("```jsonl"))
    ]
    (tmp_path / "images").mkdir()
    for name in ("images/eval-00000.png", "a.png", "b.png"):
        Image.new("RGB", (16, 16)).save(tmp_path / name)
    (tmp_path / "questions.jsonl").write_text(example + "\n", encoding="utf-8")
    items = read_batch_file(tmp_path / "questions.jsonl", defaults=GenerationOptions(max_new_tokens=32))
    assert [item.id for item in items] == ["q1", "q2", "q3"]
    assert items[0].images == (tmp_path / "images" / "eval-00000.png",)
    assert items[1].options.max_new_tokens == 4 and items[2].system == "You are terse."
