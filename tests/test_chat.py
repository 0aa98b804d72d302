"""``zoo chat`` driven through standard input, and ``zoo generate --system``."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from zoo.cli.app import main
from zoo.core.multimodal import MultiModal


@pytest.fixture
def seen(monkeypatch):
    """Record the prompt text and the number of images of every generate call (then generate for real)."""
    calls: list[tuple[str, int]] = []
    original = MultiModal.generate

    def spy(self, input_ids, pixel_values=None, attention_mask=None, **kwargs):
        text = self.lm.tokenizer.decode(input_ids[0][input_ids[0] != self.image_token_id])
        calls.append((text, 0 if pixel_values is None else int(pixel_values.shape[0])))
        return original(self, input_ids, pixel_values, attention_mask, **kwargs)

    monkeypatch.setattr(MultiModal, "generate", spy)
    return calls


def test_chat_turns_images_reset_and_exit(tmp_path, monkeypatch, capsys, seen):
    image = tmp_path / "cat.png"
    Image.fromarray((torch.rand(32, 32, 3) * 255).byte().numpy()).save(image)
    script = (
        f"What is this?\n/image {tmp_path / 'missing.png'}\n/image {image}\nAnd now?\n/reset\nHello\n/exit\nignored\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    code = main(
        ["chat", "tiny-clip-mlp-qwen2", "--image", str(image), "--system", "Be brief.", "--max-new-tokens", "2"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "missing.png" in err  # a bad /image path is reported and the chat goes on
    assert "(conversation reset)" in out
    assert len(seen) == 3  # three user turns; "ignored" comes after /exit
    (first, n1), (second, n2), (third, n3) = seen
    assert (n1, n2, n3) == (1, 2, 0)  # the --image, then one more, then none after /reset
    assert "Be brief." in first and "What is this?" in first
    assert "What is this?" in second and "And now?" in second  # the history is kept ...
    assert "What is this?" not in third and "Hello" in third and "Be brief." in third  # ... until /reset


def test_generate_system_message(monkeypatch, capsys, seen):
    assert main(["generate", "tiny-clip-mlp-qwen2", "--prompt", "Hi", "--system", "You are terse.",
                 "--max-new-tokens", "1"]) == 0  # fmt: skip
    assert "You are terse." in seen[0][0] and "You are a helpful assistant." not in seen[0][0]
    code = main(["generate", "tiny-clip-mlp-qwen2", "--prompt", "Hi", "--system", "x", "--no-chat-template"])
    assert code == 2 and "--system needs the chat template" in capsys.readouterr().err
