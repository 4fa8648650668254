"""End to end in a real Chromium: the app as a person uses it, with a fake microphone that speaks real audio.

The fake microphone replaces getUserMedia with a Web Audio stream that plays a WAV chosen by the test
(`window.__clip`), so each time the app re-arms the microphone the test decides what the "user" says next.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from omni.audio import SAMPLE_RATE, load_audio
from omni.wav import write_wav

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "tests" / "data" / "questions"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.browser

FAKE_MIC = """
(() => {
  const clips = %s;
  window.__clip = 0;
  window.__micStarts = [];
  window.__pauses = [];  // performance.now() of every pause of the reply player
  window.__plays = [];
  const ctx = new AudioContext();
  navigator.mediaDevices.getUserMedia = async () => {
    await ctx.resume();
    const dest = ctx.createMediaStreamDestination();
    const bytes = Uint8Array.from(atob(clips[window.__clip]), c => c.charCodeAt(0));
    const source = ctx.createBufferSource();
    source.buffer = await ctx.decodeAudioData(bytes.buffer);
    source.connect(dest);
    source.start();
    window.__micStarts.push(performance.now());
    return dest.stream;
  };
  navigator.mediaDevices.enumerateDevices = async () =>
    [{deviceId: "default", kind: "audioinput", label: "Test microphone", groupId: "test"}];
  document.addEventListener("pause", e => { if (e.target.closest("#reply")) window.__pauses.push(performance.now()); }, true);
  document.addEventListener("play", e => { if (e.target.closest("#reply")) window.__plays.push(performance.now()); }, true);
})();
"""


def clip(*parts: str | float | np.ndarray) -> str:
    """A WAV (base64) of question files, pauses (seconds) and raw audio, e.g. clip(0.5, "capital", 4.0)."""
    audio = []
    for part in parts:
        if isinstance(part, str):
            audio.append(load_audio(QUESTIONS / f"{part}.wav"))
        elif isinstance(part, np.ndarray):
            audio.append(part.astype(np.float32))
        else:
            audio.append(np.zeros(int(part * SAMPLE_RATE), np.float32))
    path = ARTIFACTS / "clip.wav"
    write_wav(path, (np.concatenate(audio) * 32767).astype(np.int16), SAMPLE_RATE)
    return base64.b64encode(path.read_bytes()).decode()


def needs_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: ./setup.sh --test installs it")
        pytest.skip(f"{CHROMIUM} is missing (./setup.sh --test installs it)")
    ARTIFACTS.mkdir(exist_ok=True)


@dataclass
class App:
    """`python app.py` as a user starts it, on a free port, with its conversations in DATABASE (a test's own);
    `stop` and `start` again is a server restart (same address, same files)."""

    database: Path
    log_name: str = "app.log"
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        if not self.port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        env = {
            **os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_ANALYTICS_ENABLED": "False", "OMNI_DB_URL": f"sqlite:///{self.database}",
        }
        log = open(ARTIFACTS / self.log_name, "a")  # noqa: SIM115 - the server writes to it until it stops
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the server has its own copy
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return self.url
            except OSError:
                assert self.process.poll() is None, (ARTIFACTS / self.log_name).read_text()[-3000:]
                time.sleep(1)
        self.stop()
        pytest.fail("the app did not start in 180 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # uvicorn waits for open connections (a page left open)
                self.process.kill()
                self.process.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    needs_chromium()
    (ARTIFACTS / "app.log").unlink(missing_ok=True)
    app = App(tmp_path_factory.mktemp("data") / "omni.db")
    yield app.start()
    app.stop()


CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture
def profiles(tmp_path):
    """open_page(url, clips, browser=0): a page at URL in browser number BROWSER (each its own fresh profile, so
    each is a different person to the app: its own cookie, session, recordings and conversations)."""
    from playwright.sync_api import sync_playwright

    needs_chromium()
    contexts: dict[int, object] = {}

    def open_page(url: str, clips: list[str], browser: int = 0):
        if browser not in contexts:
            contexts[browser] = p.chromium.launch_persistent_context(
                str(tmp_path / f"chromium-profile-{browser}"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        page = contexts[browser].new_page()
        page.add_init_script(FAKE_MIC % ("[" + ",".join(f'"{c}"' for c in clips) + "]"))
        page.goto(url)
        page.wait_for_selector("#mic .record-button", timeout=30_000)
        # The page has loaded the browser's conversations. Pressed sooner, Gradio 6.31's streaming recorder may not
        # have loaded its wav encoder yet ("ge is not a constructor") and the microphone never streams.
        page.wait_for_selector("#conversations label", timeout=30_000)
        return page

    with sync_playwright() as p:
        yield open_page
        for context in contexts.values():
            context.close()


@pytest.fixture
def browsers(server, profiles):
    """open_page(clips, browser=0): a page of the app started for this module (see `profiles`)."""
    return lambda clips, browser=0: profiles(server, clips, browser)


@pytest.fixture
def browser_page(browsers):
    return browsers


def recording(page) -> bool:
    return page.locator("#mic .stop-button").count() > 0


def reply_playing(page) -> bool:
    return page.evaluate("() => [...document.querySelectorAll('#reply audio')].some(a => !a.paused && a.currentTime > 0)")


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def text_of(page, role: str) -> str:
    """All the chat text on one side ("user" or "bot"), in order."""
    return "\n".join(page.locator(f"[data-testid={role}]").all_inner_texts())


def audio_players(page, role: str) -> int:
    return page.locator(f"[data-testid={role}] [data-testid^=waveform]").count()


def audio_urls(page, role: str) -> list[str]:
    """The URLs of the recordings in the chat (their download links): the user's turns or the replies."""
    suffix = "-user.wav" if role == "user" else "-reply.mp3"
    links = page.evaluate("() => [...new Set([...document.querySelectorAll('a[download]')].map(a => a.href))]")
    return [url for url in links if "/omni/media/" in url and url.endswith(suffix)]


def test_one_level_meter_however_often_the_microphone_restarts(browser_page):
    """Each Record asks for a new microphone stream; the barge-in meter is made once and moved to the new stream
    (it was a new AudioWorkletNode per stream, never disconnected)."""
    page = browser_page([clip(30.0)])
    for _ in range(3):
        page.click("#mic .record-button")
        wait_for(lambda: recording(page), 10, "recording to start")
        page.click("#mic .stop-button")
        wait_for(lambda: not recording(page), 10, "recording to stop")
    watched = lambda: page.evaluate("() => window.omniBargeIn")
    wait_for(lambda: watched()["streams"] >= 3, 10, "the microphone streams watched")  # Gradio asks twice a time
    assert watched()["meters"] == 1


def test_hands_free_half_duplex(browser_page):
    page = browser_page([clip(0.5, "name_anna", 20.0), clip(0.5, "what_name", 20.0)])
    page.get_by_label("Let me interrupt").uncheck()  # the guide's half duplex
    page.click("#mic .record-button")
    wait_for(lambda: recording(page), 10, "recording to start")
    # The microphone's level moves a bar (level.js); Gradio's scrolling waveform is not drawn (a third of a core).
    level = "() => document.querySelector('#mic .omni-level > div')?.style.transform || ''"
    wait_for(lambda: page.evaluate(level) not in ("", "scaleX(0)", "scaleX(0.00)"), 10, "the level bar to move")
    assert not page.locator("#mic .mic-wrap > div:not(.controls):not(.omni-level)").first.is_visible()

    # (a) recording stops by itself after the question, (b) the reply plays, (c) both turns have audio and text.
    wait_for(lambda: not recording(page), 20, "recording to stop at the end of the turn")
    page.evaluate("() => { window.__clip = 1; }")  # what the user says when the microphone comes back
    wait_for(lambda: reply_playing(page), 30, "the reply to play")
    wait_for(lambda: audio_players(page, "bot") == 1, 30, "the reply's audio in the chat")
    assert "anna" in text_of(page, "user").lower() and audio_players(page, "user") == 1
    assert "replied in" in text_of(page, "bot")
    assert len(text_of(page, "bot").split()) > 3

    # (d) when the reply has played, the microphone re-arms by itself and the second question uses the first.
    wait_for(lambda: recording(page), 60, "the microphone to re-arm after the reply")
    wait_for(lambda: audio_players(page, "user") == 2, 30, "the second question")
    wait_for(lambda: "what is my name" in text_of(page, "user").lower(), 10, "the second transcript")
    wait_for(lambda: audio_players(page, "bot") == 2, 60, "the second reply")
    second_reply = text_of(page, "bot").split("replied in")[-2]
    assert "anna" in second_reply.lower(), second_reply
    page.screenshot(path=str(ARTIFACTS / "half-duplex.png"), full_page=True)

    # (e) Stop conversation stops recording and playback, and nothing re-arms.
    wait_for(lambda: recording(page) or reply_playing(page), 60, "the loop to continue")
    page.click("text=Stop conversation")
    wait_for(lambda: not recording(page) and not reply_playing(page), 5, "everything to stop")
    time.sleep(3)
    assert not recording(page) and not reply_playing(page)
    assert audio_players(page, "user") == 2  # the history stays visible
    page.screenshot(path=str(ARTIFACTS / "stopped.png"), full_page=True)


def test_barge_in_full_duplex(browser_page):
    """A long answer is playing. A burst of noise only holds it for a moment; then the user talks over it:
    playback stops at once, the reply is cut where it stopped, and the new question is answered."""
    dragon = load_audio(QUESTIONS / "dragon.wav")
    interruption = load_audio(QUESTIONS / "name_anna.wav")
    noise = np.random.default_rng(0).normal(0, 0.1, int(0.35 * SAMPLE_RATE))  # -20 dBFS, 350 ms: a clatter
    lead_in = 1.5  # the recorder starts a moment after the microphone: the question's first words must not be lost
    noise_at = lead_in + dragon.size / SAMPLE_RATE + 7.0  # the story is playing by then, even on a slow run
    # When the interrupting words begin in the clip: their offset plus the first sample of the speech itself.
    talk_over_at = noise_at + noise.size / SAMPLE_RATE + 4.0 + np.argmax(np.abs(interruption) > 0.02) / SAMPLE_RATE
    page = browser_page([clip(lead_in, "dragon", 7.0, noise, 4.0, "name_anna", 30.0)])
    assert page.get_by_label("Let me interrupt").is_checked()  # full duplex is the default
    page.click("#mic .record-button")
    wait_for(lambda: reply_playing(page), 30, "the story to play")
    assert recording(page)  # still listening while it speaks
    mic_start = page.evaluate("() => window.__micStarts.at(-1)")  # the stream the recorder took

    # The noise holds playback for a moment; the server hears no speech in it, so the story carries on.
    wait_for(lambda: page.evaluate("() => window.__pauses.length"), 10, "the noise to hold playback")
    held_at = page.evaluate("() => window.__pauses[0]") - mic_start - noise_at * 1000
    wait_for(lambda: reply_playing(page), 5, "playback to resume after the noise")
    assert "(interrupted)" not in text_of(page, "bot")
    log = (ARTIFACTS / "app.log").read_text()
    assert "reply held" in log and "reply resumed" in log  # generation paused with playback, and went on
    print(f"noise burst -> playback held after {held_at:.0f} ms, resumed")

    onset_ms = mic_start + talk_over_at * 1000
    stopped = lambda: page.evaluate(f"() => window.__pauses.find(t => t > {onset_ms})")
    stopped_after_ms = wait_for(stopped, 20, "playback to stop when the user talks over it") - onset_ms
    wait_for(lambda: page.evaluate("() => window.omniBargeIn.confirmedAt"), 10, "the server to confirm the barge-in")
    confirmed_after_ms = page.evaluate("() => window.omniBargeIn.confirmedAt") - onset_ms
    (ARTIFACTS / "barge-in-ms.txt").write_text(f"stopped {stopped_after_ms:.0f}\nconfirmed {confirmed_after_ms:.0f}\n")
    print(f"barge-in speech start -> playback stopped: {stopped_after_ms:.0f} ms, server confirmed: {confirmed_after_ms:.0f} ms")
    assert 0 < stopped_after_ms < confirmed_after_ms
    assert not reply_playing(page)

    wait_for(lambda: "(interrupted)" in text_of(page, "bot"), 20, "the story marked interrupted")
    wait_for(lambda: audio_players(page, "user") == 2, 30, "the interruption heard as a turn")
    wait_for(lambda: "anna" in text_of(page, "user").lower().split("dragon")[-1], 30, "the interruption's words")
    wait_for(lambda: "anna" in text_of(page, "bot").lower().split("(interrupted)")[-1], 60, "an answer to the interruption")
    page.screenshot(path=str(ARTIFACTS / "barge-in.png"), full_page=True)
    page.click("text=Stop conversation")


def test_stop_during_a_hold_stays_stopped(browser_page):
    """A loud sound holds the reply; Stop conversation then ends it for good: the hold's timer must not resume it."""
    noise = np.random.default_rng(1).normal(0, 0.1, int(0.35 * SAMPLE_RATE))
    # Three facts: a reply of several sentences (greedy decoding answers "a long story about a dragon" in a few
    # words), still playing when the noise comes 5 s after the question.
    page = browser_page([clip(1.5, "moon", 5.0, noise, 30.0)])
    page.click("#mic .record-button")
    wait_for(lambda: reply_playing(page), 30, "the facts to play")
    wait_for(lambda: page.evaluate("() => window.omniBargeIn.heldAt !== null"), 15, "the noise to hold playback")
    page.click("text=Stop conversation")
    time.sleep(3.0)  # longer than the hold's 2 s
    assert not reply_playing(page) and not recording(page)
    assert "reply resumed" not in (ARTIFACTS / "app.log").read_text().split("reply held")[-1]


def test_two_people_at_once_each_hear_only_their_own(browsers, server):
    """Two strangers talk at the same time, hands-free: each gets answers to their own questions from their own
    history, never sees the other's words, and cannot fetch the other's recordings."""
    anna = browsers([clip(1.5, "name_anna", 15.0, "what_name", 25.0)], browser=0)
    other = browsers([clip(1.5, "green", 15.0, "what_name", 25.0)], browser=1)
    anna.click("#mic .record-button")
    time.sleep(1.0)  # within a second of each other
    other.click("#mic .record-button")
    for page in (anna, other):
        wait_for(lambda page=page: text_of(page, "bot").count("replied in") >= 2, 90, "both answers")
    anna_said, other_said = text_of(anna, "user").lower(), text_of(other, "user").lower()
    anna_heard, other_heard = text_of(anna, "bot").lower(), text_of(other, "bot").lower()
    assert "anna" in anna_said and "green" not in anna_said
    assert "green" in other_said and "anna" not in other_said
    assert "anna" in anna_heard.split("replied in")[1], anna_heard  # memory per session
    assert "anna" not in other_heard
    for chat in (anna_heard, other_heard):
        assert "interrupted" not in chat  # nobody interrupted anybody
    anna.screenshot(path=str(ARTIFACTS / "two-sessions-anna.png"), full_page=True)
    other.screenshot(path=str(ARTIFACTS / "two-sessions-other.png"), full_page=True)

    # Recordings: distinct, served to their owner only.
    anna_urls, other_urls = audio_urls(anna, "user") + audio_urls(anna, "bot"), audio_urls(other, "user")
    assert len(anna_urls) == 4 and not set(anna_urls) & set(other_urls), (anna_urls, other_urls)
    assert all(anna.request.get(url).status == 200 for url in anna_urls)
    assert all(other.request.get(url).status == 404 for url in anna_urls)
    for url in anna_urls:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)  # a bare URL, no cookie
        assert refused.value.code == 404


def conversation_titles(page) -> list[str]:
    return page.locator("#conversations label").all_inner_texts()


def test_a_restart_between_two_turns_loses_nothing(profiles, tmp_path):
    """Say your name, restart the server, open the app again in the same browser: the chat is back with its
    recordings, and the next answer still knows the name. Then export the conversation and delete it."""
    app = App(tmp_path / "omni.db", log_name="app-restart.log")
    (ARTIFACTS / app.log_name).unlink(missing_ok=True)
    try:
        url = app.start()
        page = profiles(url, [clip(1.5, "my_name", 20.0), clip(30.0)])
        page.get_by_label("Let me interrupt").uncheck()  # half duplex: one turn, then the microphone waits
        page.click("#mic .record-button")
        wait_for(lambda: recording(page), 10, "recording to start")
        wait_for(lambda: not recording(page), 30, "the end of the turn")
        page.evaluate("() => { window.__clip = 1; }")  # silence when the microphone comes back
        wait_for(lambda: audio_players(page, "bot") == 1, 60, "the reply's audio in the chat")
        page.click("text=Stop conversation")
        said, heard = text_of(page, "user"), text_of(page, "bot")
        assert "anna" in said.lower() and "replied in" in heard
        wait_for(lambda: any(" · 1 turn · " in t for t in conversation_titles(page)), 10, "the conversation listed")
        page.close()

        app.stop()
        app.start()  # a new process: nothing of the conversation is left in memory

        page = profiles(url, [clip(1.5, "what_name", 30.0)])  # the same browser: its cookie
        wait_for(lambda: audio_players(page, "bot") == 1, 30, "the chat restored")
        assert text_of(page, "user") == said and text_of(page, "bot") == heard  # every turn, as it was shown
        assert audio_players(page, "user") == 1
        urls = audio_urls(page, "user") + audio_urls(page, "bot")
        assert len(urls) == 2 and all(page.request.get(u).status == 200 for u in urls)  # its recordings, still its own
        page.get_by_label("Let me interrupt").uncheck()
        page.click("#mic .record-button")
        wait_for(lambda: text_of(page, "bot").count("replied in") >= 2, 90, "the answer after the restart")
        assert "what is my name" in text_of(page, "user").lower()
        answer = text_of(page, "bot").split("replied in")[-2]
        assert "anna" in answer.lower(), answer  # it remembers the turn from before the restart
        page.click("text=Stop conversation")
        page.screenshot(path=str(ARTIFACTS / "restored.png"), full_page=True)

        with page.expect_download() as download:
            page.click("text=Export (zip)")
        archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
        transcript = json.loads(archive.read("transcript.json"))
        assert [t["index"] for t in transcript["turns"]] == [0, 1] and len(archive.namelist()) == 5

        page.once("dialog", lambda dialog: dialog.accept())  # "Delete this conversation and its recordings?"
        page.get_by_role("button", name="Delete", exact=True).click()
        wait_for(lambda: audio_players(page, "bot") == 0, 10, "the chat emptied")
        assert conversation_titles(page) == ["New conversation"]
        assert all(page.request.get(u).status == 404 for u in urls)  # the recordings are gone
    finally:
        app.stop()
