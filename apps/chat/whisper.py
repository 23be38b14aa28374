"""Transcription: Whisper models in CTranslate2 format through faster-whisper, and the OpenAI transcription form and
answer formats (json, text, verbose_json, srt, vtt).

Uploads of any container/codec FFmpeg reads (wav, mp3, flac, ogg, webm, m4a...) are decoded and resampled to 16 kHz
mono by faster-whisper's `decode_audio` (PyAV). Corrupt or non-audio uploads answer 400; an upload with no samples
answers an empty text without running the model.
"""
import io
import json
import logging
from dataclasses import dataclass

import numpy as np

from foundry_inference.apps.chat import protocol
from foundry_inference.apps.chat.engine import TranscriptionEngine
from foundry_inference.apps.chat.settings import usable_cpus

log = logging.getLogger("foundry_inference.chat")

SAMPLE_RATE = 16000
FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


class WhisperEngine(TranscriptionEngine):
    name = "faster-whisper"

    def __init__(self, folder, settings):
        self.folder = folder
        self.settings = settings

    def load(self):
        from faster_whisper import WhisperModel

        self.model = WhisperModel(self.folder, device="cpu", compute_type=self.settings.whisper_compute_type,
                                  cpu_threads=self.settings.whisper_threads or usable_cpus(),
                                  num_workers=1, local_files_only=True)
        self.english_only = not self.model.model.is_multilingual
        if self.settings.warmup:
            self.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))

    def transcribe(self, audio, *, language=None, prompt=None, temperature=0.0, timestamps=False):
        duration = len(audio) / SAMPLE_RATE
        if len(audio) == 0:
            return {"text": "", "language": language or "en", "duration": 0.0, "segments": []}
        if self.english_only:
            language = "en"
        segments, info = self.model.transcribe(
            audio, language=language, initial_prompt=prompt or None, temperature=temperature,
            beam_size=self.settings.whisper_beam_size, vad_filter=False, condition_on_previous_text=False,
            without_timestamps=not timestamps)
        out = []
        for seg in segments:
            out.append({"id": seg.id - 1 if seg.id else len(out), "seek": seg.seek, "start": round(seg.start, 3),
                        "end": round(seg.end, 3), "text": seg.text, "tokens": list(seg.tokens),
                        "temperature": seg.temperature, "avg_logprob": seg.avg_logprob,
                        "compression_ratio": seg.compression_ratio, "no_speech_prob": seg.no_speech_prob})
        text = "".join(s["text"] for s in out).strip()
        return {"text": text, "language": info.language, "duration": duration, "segments": out}


class AudioError(ValueError):
    pass


def decode(data):
    """float32 mono 16 kHz samples of an uploaded file (any format PyAV reads)."""
    if not data:
        return np.zeros(0, dtype=np.float32)
    from faster_whisper.audio import decode_audio
    try:
        audio = decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # noqa: BLE001 - av raises many error types for bad input
        raise AudioError(f"The file could not be decoded as audio: {exc}") from None
    return np.asarray(audio, dtype=np.float32)


@dataclass
class Form:
    data: bytes
    filename: str
    model: str
    language: str
    prompt: str
    temperature: float
    response_format: str
    timestamps: bool


def parse_form(request, engine):
    files = request.files.get("file") or []
    if not files:
        raise protocol.invalid("'file' is required (multipart/form-data)", "file", "missing_required_parameter")
    upload = files[0]

    def arg(name):
        values = request.body_arguments.get(name)
        return values[-1].decode("utf-8", "replace").strip() if values else None

    fmt = arg("response_format") or "json"
    if fmt not in FORMATS:
        raise protocol.invalid(f"'response_format' must be one of {', '.join(FORMATS)}, got {fmt!r}",
                               "response_format")
    temperature = 0.0
    if arg("temperature") is not None:
        try:
            temperature = float(arg("temperature"))
        except ValueError:
            raise protocol.invalid("'temperature' must be a number", "temperature", "invalid_type") from None
        if not 0.0 <= temperature <= 1.0:
            raise protocol.invalid("'temperature' must be between 0 and 1", "temperature")
    language = arg("language") or None
    if language is not None:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
        language = language.lower()
        if language not in _LANGUAGE_CODES:
            raise protocol.invalid(f"'language' must be an ISO 639-1 code Whisper knows, got {language!r}",
                                   "language")
        if getattr(engine, "english_only", False) and language != "en":
            raise protocol.invalid(f"The served model is English-only; 'language' {language!r} is not supported",
                                   "language", "unsupported_value")
    granularities = (request.body_arguments.get("timestamp_granularities[]")
                     or request.body_arguments.get("timestamp_granularities") or [])
    timestamps = fmt in ("verbose_json", "srt", "vtt") or any(g == b"segment" for g in granularities)
    return Form(data=upload["body"], filename=upload.get("filename") or "audio", model=arg("model"),
                language=language, prompt=arg("prompt"), temperature=temperature, response_format=fmt,
                timestamps=timestamps)


def run(engine, form):
    """On the transcription worker thread: decode, then transcribe."""
    try:
        audio = decode(form.data)
    except AudioError as exc:
        raise protocol.invalid(str(exc), "file", "invalid_audio") from None
    return engine.transcribe(audio, language=form.language, prompt=form.prompt, temperature=form.temperature,
                             timestamps=form.timestamps)


def render(result, fmt):
    """(body, content type) of a transcription in OpenAI's `response_format`."""
    if fmt == "text":
        return result["text"] + "\n", "text/plain; charset=utf-8"
    if fmt == "srt":
        return srt(result["segments"]), "text/plain; charset=utf-8"
    if fmt == "vtt":
        return vtt(result["segments"]), "text/vtt; charset=utf-8"
    if fmt == "verbose_json":
        body = {"task": "transcribe", "language": _language_name(result["language"]),
                "duration": round(result["duration"], 3), "text": result["text"], "segments": result["segments"]}
        return json.dumps(body, ensure_ascii=False), "application/json"
    return json.dumps({"text": result["text"]}, ensure_ascii=False), "application/json"


_LANGUAGE_NAMES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
                   "nl": "dutch", "pt": "portuguese", "ja": "japanese", "zh": "chinese", "ru": "russian"}


def _language_name(code):
    """verbose_json names the language in words, as OpenAI does ("english")."""
    return _LANGUAGE_NAMES.get(code, code)


def _timestamp(seconds, sep):
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(segments):
    blocks = [f"{i}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text'].strip()}\n"
              for i, s in enumerate(segments, 1)]
    return "\n".join(blocks)


def vtt(segments):
    blocks = [f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text'].strip()}\n"
              for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)
