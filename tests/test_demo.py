"""``zoo demo``: the chat's pieces, and the real command driven in headless Chromium.

The browser test starts ``zoo demo CKPT`` as a user would, uploads an image, sends a prompt, watches the
answer stream into the page, asks a follow-up, and checks both answers against zoo's own generation.
It needs Gradio, Playwright for Python and Debian's ``/usr/bin/chromium`` (never a downloaded browser).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from zoo.cli.demo_app import Conversation, conversation, model_card, stream_reply

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
# tiny Llama: its untied head gives visible text (tied tiny LMs repeat the prompt's last token, a newline)
COMPOSITION = "tiny-dinov2-mlp-llama"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return zoo.build(COMPOSITION).eval()


@pytest.fixture(scope="module")
def red_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "red.png"
    Image.new("RGB", (40, 30), "red").save(path)
    return str(path)


def test_conversation_from_gradio_history(red_png):
    history = [
        {"role": "user", "content": [{"type": "file", "file": {"path": red_png}}]},
        {"role": "user", "content": [{"type": "text", "text": "What color?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": " Red. "}]},
        {"role": "user", "content": (red_png,)},  # older Gradio: a (path,) tuple
        {"role": "user", "content": "And this one?"},
    ]
    chat = conversation(history, {"text": "Compare them.", "files": [{"path": red_png}]})
    assert chat.messages == [
        {"role": "user", "content": "<image>\nWhat color?"},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "<image>\nAnd this one?\n<image>\nCompare them."},
    ]
    assert chat.images == [red_png] * 3


def test_stream_reply_grows_to_the_greedy_answer(model, red_png):
    chat = conversation([], {"text": "What color is this?", "files": [red_png]})
    pieces = list(stream_reply(model, chat, max_new_tokens=8))
    assert len(pieces) >= 2 and all(b.startswith(a) for a, b in itertools.pairwise(pieces))
    processor = model.processor()
    prompt = processor.apply_chat_template(chat.messages)
    batch = processor(prompt, images=[Image.open(red_png).convert("RGB")])
    ids = model.generate(**batch, max_new_tokens=8)[:, batch["input_ids"].shape[1] :]
    assert pieces[-1] == processor.decode(ids)[0]


def test_stream_reply_reraises_generation_errors(model, monkeypatch):
    def fail(**kwargs):
        kwargs["streamer"].put(torch.tensor([[5]]))  # the prompt, which the streamer skips
        raise RuntimeError("out of memory (on purpose)")

    monkeypatch.setattr(model, "generate", fail)
    chat = Conversation([{"role": "user", "content": "hello"}], [])
    with pytest.raises(RuntimeError, match="on purpose"):
        list(stream_reply(model, chat, max_new_tokens=2))


def test_model_card_names_the_composition(model):
    card = model_card(model, COMPOSITION)
    assert "`tiny-dinov2` → `mlp2x-gelu` → `tiny-llama`" in card
    total = sum(p.numel() for p in model.parameters())
    assert f"{total / 1e3:.2f}K" in card and f"{model.tokens_per_image} tokens per image" in card


def test_demo_command_rejects_a_bad_port():
    result = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "demo", COMPOSITION, "--port", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "--port = 0" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"zoo demo exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"zoo demo did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# records every text the newest bot message shows, so the test can see the answer arrive piece by piece
WATCH_BOT = """() => {
  window.__zooSeen = [];
  const record = () => {
    const bots = document.querySelectorAll('[data-testid="bot"]');
    const text = bots.length ? bots[bots.length - 1].innerText : '';
    const seen = window.__zooSeen;
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""

# true once the page shows `count` bot messages and the last one reads `text` (whitespace collapsed)
BOT_SAYS = """([count, text]) => {
  const bots = document.querySelectorAll('[data-testid="bot"]');
  return bots.length === count && bots[count - 1].innerText.replace(/\\s+/g, ' ').trim() === text;
}"""


@pytest.mark.slow
def test_zoo_demo_in_headless_chromium(model, red_png, tmp_path):
    pytest.importorskip("gradio")
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    checkpoint = zoo.save(model, tmp_path / "ckpt")
    budget = 24
    first = conversation([], {"text": "What color is this?", "files": [red_png]})
    answer = list(stream_reply(model, first, max_new_tokens=budget))[-1]
    follow_up = Conversation(
        [*first.messages, {"role": "assistant", "content": answer.strip()}, {"role": "user", "content": "And now?"}],
        list(first.images),
    )
    second = list(stream_reply(model, follow_up, max_new_tokens=budget))[-1]
    assert _flat(answer) and _flat(second), "the tiny model should answer with visible text"

    port, log = _free_port(), tmp_path / "demo.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}
    command = [sys.executable, "-m", "zoo.cli", "demo", str(checkpoint), "--port", str(port),
               "--max-new-tokens", str(budget)]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_server(url, server, log)
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_selector('[data-testid="textbox"] textarea, textarea', timeout=60_000)
                body = page.locator("body")
                assert "tiny-dinov2" in body.inner_text() and "tokens per image" in body.inner_text()
                page.evaluate(WATCH_BOT)

                page.locator("input[type=file]").first.set_input_files(red_png)
                page.wait_for_selector("img", timeout=30_000)  # the upload's thumbnail
                textbox = page.locator("textarea").first
                textbox.fill("What color is this?")
                textbox.press("Enter")
                page.wait_for_function(BOT_SAYS, arg=[1, _flat(answer)], timeout=120_000)
                seen = [_flat(t) for t in page.evaluate("window.__zooSeen")]
                assert seen[-1] == _flat(answer)
                assert len(seen) >= 2, f"the answer arrived in one piece: {seen}"  # streamed, not all at once
                assert all(_flat(answer).startswith(s) for s in seen)
                assert page.locator('[data-testid="user"] img').count() >= 1  # the image is in the chat

                textbox.fill("And now?")
                textbox.press("Enter")
                page.wait_for_function(BOT_SAYS, arg=[2, _flat(second)], timeout=120_000)
                page.screenshot(path=str(tmp_path / "demo.png"))
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
