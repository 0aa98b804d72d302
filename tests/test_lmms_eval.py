"""The lmms-eval model ``zoo``: lmms-eval resolves it by name and runs a task defined here over local data.

Offline: the tasks are YAML files written by the test over a local JSON-lines file and PNG images.
Every number lmms-eval reports is recomputed here with zoo's own forward (the LM's loss) and generate.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval")

import zoo

COLORS = ["red", "green", "blue"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return zoo.save(zoo.build("tiny-clip-mlp-qwen2"), tmp_path / "ckpt")


@pytest.fixture
def task_dir(tmp_path):
    """Two tasks over three images: one generation task, one multiple-choice (log-likelihood) task."""
    rows = []
    for i, color in enumerate(COLORS):
        path = tmp_path / f"{color}.png"
        Image.new("RGB", (40, 30), color).save(path)
        rows.append({"image": str(path), "question": "What color is this picture?", "answer": color,
                     "choices": COLORS, "label": i})  # fmt: skip
    data = tmp_path / "colors.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "zoo_colors_utils.py").write_text(
        textwrap.dedent("""
            from PIL import Image

            def doc_to_visual(doc):
                with Image.open(doc["image"]) as image:
                    return [image.convert("RGB")]
        """),
        encoding="utf-8",
    )
    common = textwrap.dedent(f"""
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        doc_to_visual: !function zoo_colors_utils.doc_to_visual
        doc_to_text: question
    """)
    (tasks / "zoo_colors_gen.yaml").write_text(
        "task: zoo_colors_gen\n"
        + common
        + textwrap.dedent("""
            output_type: generate_until
            doc_to_target: answer
            generation_kwargs:
              max_new_tokens: 5
              until: ["<|im_end|>"]
            metric_list:
              - metric: exact_match
                aggregation: mean
                higher_is_better: true
        """),
        encoding="utf-8",
    )
    (tasks / "zoo_colors_mc.yaml").write_text(
        "task: zoo_colors_mc\n"
        + common
        + textwrap.dedent("""
            output_type: multiple_choice
            doc_to_target: label
            doc_to_choice: choices
            metric_list:
              - metric: acc
                aggregation: mean
                higher_is_better: true
        """),
        encoding="utf-8",
    )
    return tasks, rows


def _prompt(model) -> str:
    processor = model.processor()
    return processor.apply_chat_template([{"role": "user", "content": "<image>\nWhat color is this picture?"}])


def _reference_loss(model, image, answer: str) -> float:
    """Mean cross-entropy of the answer tokens after the prompt, from the LM's own loss."""
    processor, prompt = model.processor(), _prompt(model)
    batch = processor(prompt + answer, images=[image])
    start = processor(prompt, images=[image])["input_ids"].shape[1]
    labels = batch["input_ids"].clone()
    labels[:, :start] = -100
    with torch.no_grad():
        return float(model(**batch, labels=labels).loss)


@pytest.mark.slow
def test_lmms_eval_runs_zoo_model_on_local_tasks(offline, checkpoint, task_dir):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    from zoo.interop.lmms_eval import ZooLMM

    assert get_model("zoo") is ZooLMM  # found through zoo's entry point, as `--model zoo` finds it
    tasks, rows = task_dir
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    out = simple_evaluate(
        model="zoo",
        model_args=f"target={checkpoint}",
        tasks=["zoo_colors_gen", "zoo_colors_mc"],
        batch_size=2,
        device="cpu",
        task_manager=manager,
        log_samples=True,
    )
    model = zoo.load(checkpoint).eval()
    images = {r["answer"]: Image.open(r["image"]).convert("RGB") for r in rows}

    # log-likelihood: one loss per choice, the LM's own loss over the answer tokens; acc = argmin hits
    hits = []
    for sample in sorted(out["samples"]["zoo_colors_mc"], key=lambda s: s["doc_id"]):
        doc = rows[sample["doc_id"]]
        losses = [pair[0] for pair in sample["filtered_resps"]]
        expected = [_reference_loss(model, images[doc["answer"]], choice) for choice in COLORS]
        assert losses == pytest.approx(expected, rel=1e-4, abs=1e-4)
        hits.append(float(min(range(3), key=losses.__getitem__) == doc["label"]))
    assert out["results"]["zoo_colors_mc"]["acc,none"] == pytest.approx(sum(hits) / len(hits))

    # generation: greedy, the same text zoo's generate gives for the same chat prompt
    processor = model.processor()
    for sample in out["samples"]["zoo_colors_gen"]:
        doc = rows[sample["doc_id"]]
        batch = processor(_prompt(model), images=[images[doc["answer"]]])
        ids = model.generate(**batch, max_new_tokens=5)[:, batch["input_ids"].shape[1] :]
        expected = processor.decode(ids)[0].split("<|im_end|>")[0]
        assert sample["resps"][0][0] == expected
    matches = [float(s["resps"][0][0].strip() == rows[s["doc_id"]]["answer"]) for s in out["samples"]["zoo_colors_gen"]]
    assert out["results"]["zoo_colors_gen"]["exact_match,none"] == pytest.approx(sum(matches) / len(matches))


def test_lmms_eval_model_args_are_checked(checkpoint):
    from zoo.errors import ZooError
    from zoo.interop.lmms_eval import ZooLMM

    with pytest.raises(ZooError, match="batch_size = 'auto'"):
        ZooLMM(target=str(checkpoint), batch_size="auto")
    with pytest.raises(ZooError, match="not-a-composition"):
        ZooLMM(target="not-a-composition")


def test_raw_prompts_score_and_stop_like_lm_eval(checkpoint):
    """Without the chat template: the context's trailing space moves into the continuation (lm-eval's
    convention), text-only requests need no visual, and generation stops at the task's ``until``."""
    from zoo.interop.lmms_eval import ZooLMM

    lm = ZooLMM(target=str(checkpoint), chat_template=False, batch_size=2)
    scored = [
        _request("loglikelihood", ("Q: which color? A: ", "red", None, 0, "t", "test")),
        _request("loglikelihood", ("Q: which color? A:", " blue sky", None, 1, "t", "test")),
    ]
    (loss_red, _), (loss_blue, _) = [getattr(r, "text", r) for r in lm.loglikelihood(scored)]
    model, tokenizer = lm.model, lm.tokenizer
    for context, continuation, loss in [
        ("Q: which color? A:", " red", loss_red),
        ("Q: which color? A:", " blue sky", loss_blue),
    ]:
        ids = tokenizer(context + continuation, return_tensors="pt")["input_ids"]
        labels = ids.clone()
        labels[:, : len(tokenizer(context)["input_ids"])] = -100
        with torch.no_grad():
            assert loss == pytest.approx(float(model(input_ids=ids, labels=labels).loss), rel=1e-4)

    request = _request(
        "generate_until", ("Q: which color? A:", {"max_new_tokens": 6, "until": ["\n"]}, None, 0, "t", "test")
    )
    (text,) = lm.generate_until([request])
    ids = tokenizer("Q: which color? A:", return_tensors="pt")["input_ids"]
    full = tokenizer.decode(
        model.generate(input_ids=ids, max_new_tokens=6)[0, ids.shape[1] :], skip_special_tokens=True
    )
    assert text == full.split("\n")[0]


def _request(kind: str, args: tuple):
    from lmms_eval.api.instance import Instance

    return Instance(kind, args, idx=0, metadata={"task": args[-2], "doc_id": args[-3], "repeats": 1})
