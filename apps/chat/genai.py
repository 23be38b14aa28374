"""onnxruntime-genai models (a folder with genai_config.json, the decoder .onnx and the tokenizer), served with
continuous batching.

Why not onnxruntime-genai's own loop: its `Generator` runs one request; its `Engine` batches only on a paged-attention
(CUDA) model and, on CPU, runs a *static* batch (a request that arrives while others generate waits for all of them
to finish); and left-padded batches of different prompt lengths do not reproduce single-stream outputs. So this
module drives the same decoder graph with onnxruntime directly:

- one KV-cache buffer per layer, `[slots, kv_heads, context, head_size]`, shared by the past and present bindings
  (GroupQueryAttention updates it in place); the live sequences occupy rows 0..n-1;
- a new request is prefilled alone (in chunks for long prompts), then joins the batch at the next decode step; a
  finished or cancelled sequence leaves at once and the last row moves into its place;
- optionally (FOUNDRY_CHAT_PREFILL_THREADS), prefill runs beside decoding: a prefill worker thread
  (apps/chat/prefill.py) takes new requests while the engine thread keeps decoding, and the engine thread prefills
  itself, straight into the next row, while the workers are busy and requests wait (so requests arriving together
  are prefilled two at a time on 2 cores);
- every decode step runs all live rows together: `input_ids [n, 1]`, `attention_mask [n, longest + 1]` whose row i
  holds `length_i + 1` ones, so GroupQueryAttention reads each row's own length (`seqlens_k`) and position. No
  padding enters any row's attention, which is why each sequence's greedy output equals its single-stream output
  (tests/unit/chat/test_chat_engine.py and tests/integration/test_chat_smollm.py check it).

Requests with a grammar (response_format json, forced tool calls) go through onnxruntime-genai's Generator with
`set_guidance` (llguidance), stepped in the same thread between batch steps, one token each per round. The tokenizer,
its streaming decoder and the chat template are onnxruntime-genai's / the model's own.

All engine state belongs to one thread (the prefill workers only run prompts into their own buffers and post the
result back); the event loop only submits and cancels through a queue and receives events through
`loop.call_soon_threadsafe`, once per step for all the step's events.
"""
import collections
import functools
import logging
import queue
import threading
import time

import numpy as np

from foundry_inference.apps.chat import logprobs as lp
from foundry_inference.apps.chat.engine import ChatEngine, DoneEvent, Generation, QueueFull, TextEvent
from foundry_inference.apps.chat.genai_config import GenaiConfig
from foundry_inference.apps.chat.memory import fit_context
from foundry_inference.apps.chat.prefill import PrefillWorker
from foundry_inference.apps.chat.sampling import Sampler
from foundry_inference.apps.chat.template import ChatTemplate, load_template
from foundry_inference.apps.chat.textstream import StopMatcher

log = logging.getLogger("foundry_inference.chat")

GRAMMAR_ERROR = "grammar rejected: "    # prefix of a guided request's failure (the client's grammar: a 400)

_PROVIDERS = {"cuda": "CUDAExecutionProvider", "dml": "DmlExecutionProvider", "webgpu": "WebGpuExecutionProvider",
              "openvino": "OpenVINOExecutionProvider", "qnn": "QNNExecutionProvider"}


class _Choice:
    """One sequence being generated (a request has `n` of them)."""
    __slots__ = ("gen", "index", "max_new", "sampler", "stream", "matcher", "generated", "length", "last", "done",
                 "row", "generator",
                 "logprobs")

    def __init__(self, gen, index, sampler, stream, matcher):
        self.gen = gen
        self.index = index
        self.max_new = gen.request.max_new_tokens
        self.sampler = sampler
        self.stream = stream
        self.matcher = matcher
        self.generated = 0
        self.length = 0          # tokens in this row's KV cache
        self.last = None
        self.done = False
        self.row = None
        self.generator = None    # onnxruntime_genai.Generator for guided choices
        self.logprobs = [] if gen.request.logprobs is not None else None    # booked, not yet emitted


class GenaiChatEngine(ChatEngine):
    name = "onnxruntime-genai"
    supports_guidance = True
    supports_logit_bias = True

    def __init__(self, folder, settings):
        self.folder = folder
        self.settings = settings
        self.max_batch = settings.max_batch
        self.capacity = settings.max_batch + settings.queue_depth
        self._inbox = queue.SimpleQueue()
        self._inflight = 0             # choices submitted and not finished (event-loop thread only)
        self._running = 0
        self._waiting_choices = 0
        self._thread = None
        self._stopping = False
        self.prefill_workers = []       # PrefillWorker threads (settings.prefill_threads)
        self._prefilling = 0            # choices whose prompt a worker holds (engine thread only)
        self.steps = 0                  # decode steps run (metrics)
        self.batch_rows = 0             # sum of rows over steps: mean batch = batch_rows / steps

    # --- loading -------------------------------------------------------------------------------------------------

    def load(self):
        import onnxruntime_genai as og

        start = time.perf_counter()
        self.config = cfg = GenaiConfig(self.folder)
        self.context_length = cfg.context_length
        if self.settings.max_context:
            self.context_length = min(self.context_length, self.settings.max_context)
        self.vocab_size = cfg.vocab_size
        self.og = og
        self.og_model = og.Model(self.folder)
        self.tokenizer = og.Tokenizer(self.og_model)
        self.eos_ids = cfg.eos_ids | set(int(t) for t in np.atleast_1d(self.tokenizer.eos_token_ids))
        self._eos_list = np.array(sorted(self.eos_ids), dtype=np.int64)
        self.token_texts = lp.TokenTexts(lambda t: self.tokenizer.decode(np.array([t], dtype=np.int32)))
        source, specials = load_template(self.folder)
        self.template = ChatTemplate(source, specials)
        self._load_session()
        if self.settings.warmup:
            self._touch_kv_rows()
        from foundry_inference.apps.chat.settings import default_prefill_threads
        workers = self.settings.prefill_threads
        workers = default_prefill_threads() if workers < 0 else workers
        capacity = min(self.context_length, self.settings.prefill_chunk)
        self.prefill_workers = [PrefillWorker(self, i, capacity) for i in range(workers)]
        self._thread = threading.Thread(target=self._run, name="chat-engine", daemon=True)
        self._thread.start()
        if self.settings.warmup:
            self._warmup()
        log.info("chat model %s loaded in %.2f s (context %d, %d slots, %d threads, %d prefill workers, %s)",
                 self.folder, time.perf_counter() - start, self.context_length, self.max_batch, self.threads,
                 len(self.prefill_workers), self.providers[0])

    def _load_session(self):
        import onnxruntime as ort

        cfg = self.config
        so = ort.SessionOptions()
        so.add_session_config_entry("session.intra_op.allow_spinning",
                                    "1" if self.settings.intra_op_spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts = cfg.session_options
        from foundry_inference.apps.chat.settings import default_compute_threads
        threads = (self.settings.intra_op_threads or int(opts.get("intra_op_num_threads", 0) or 0)
                   or default_compute_threads())
        so.intra_op_num_threads = threads
        self.threads = threads
        if opts.get("inter_op_num_threads"):
            so.inter_op_num_threads = int(opts["inter_op_num_threads"])
        available = set(ort.get_available_providers())
        wanted = []
        for item in opts.get("provider_options", []):
            for key in item:
                provider = _PROVIDERS.get(key.lower())
                if provider in available:
                    wanted.append(provider)
                elif provider:
                    log.warning("%s is not available here; the model runs on the CPU", provider)
        # The KV cache lives in host memory (numpy buffers bound in place), so the decoder runs on the CPU provider.
        self.providers = ["CPUExecutionProvider"]
        if wanted:
            log.warning("genai_config asks for %s; this engine runs the decoder on the CPU", ", ".join(wanted))
        self.session = ort.InferenceSession(cfg.filename, so, providers=self.providers)
        inputs = {i.name: i for i in self.session.get_inputs()}
        kv_type = inputs[cfg.past_key % 0].type
        self.kv_dtype = np.float16 if "float16" in kv_type else np.float32
        self.uses_positions = bool(cfg.position_ids) and cfg.position_ids in inputs
        outputs = {o.name: o for o in self.session.get_outputs()}
        self._logits_dtype = np.float16 if "float16" in outputs[cfg.logits].type else np.float32
        per_token = 2 * cfg.layers * cfg.kv_heads * cfg.head_size * np.dtype(self.kv_dtype).itemsize
        self.context_length = fit_context(self.context_length, self.max_batch, per_token)
        shape = (self.max_batch, cfg.kv_heads, self.context_length, cfg.head_size)
        # np.zeros -> calloc: untouched pages cost no resident memory, so a long context costs only what is used
        self.keys = [np.zeros(shape, self.kv_dtype) for _ in range(cfg.layers)]
        self.values = [np.zeros(shape, self.kv_dtype) for _ in range(cfg.layers)]
        self._views = {}
        self._decode_bindings = {}
        self._ones = np.ones((1, self.context_length + 1), dtype=np.int64)   # a one-row decode step's mask
        self._prompt_bindings = {}      # run_prompt's bindings with their KV bound, per binder
        self._row_binders = {}
        from onnxruntime import OrtValue
        self._logits_stub = OrtValue.ortvalue_from_numpy(np.empty((1, 1, cfg.vocab_size), self._logits_dtype))

    def _touch_kv_rows(self):
        """One decode step over every slot, at load. The first step that uses a KV row makes the whole row resident
        (`[kv_heads, context, head_size]` per layer: ~270 MiB for SmolLM2-135M at context 8192), which costs seconds;
        left to the first requests that run together, it delayed the first tokens of the 2nd..4th stream of a fresh
        server by 1-4 s. The memory is the same either way (every slot is used sooner or later); now it is taken
        when the server starts, where it shows in the pod's memory at once. Positions 0 and 1 of each row are
        written; a prefill overwrites them."""
        cfg = self.config
        n = self.max_batch
        started = time.perf_counter()
        binding, _logits = self._decode_binding(n)
        binding.bind_cpu_input(cfg.input_ids, np.zeros((n, 1), dtype=np.int64))
        binding.bind_cpu_input(cfg.attention_mask, np.ones((n, 2), dtype=np.int64))
        if self.uses_positions:
            binding.bind_cpu_input(cfg.position_ids, np.ones((n, 1), dtype=np.int64))
        self.session.run_with_iobinding(binding)
        kv_bytes = sum(k.nbytes + v.nbytes for k, v in zip(self.keys, self.values, strict=True))
        log.info("KV cache: %d slots x context %d = %.0f MiB, made resident in %.2f s", n, self.context_length,
                 kv_bytes / 2 ** 20, time.perf_counter() - started)

    def _kv_values(self, start, count):
        key = (start, count)
        views = self._views.get(key)
        if views is None:
            from onnxruntime import OrtValue
            views = self._views[key] = (
                [OrtValue.ortvalue_from_numpy(k[start:start + count]) for k in self.keys],
                [OrtValue.ortvalue_from_numpy(v[start:start + count]) for v in self.values])
        return views

    def _bind_kv(self, binding, start, count):
        self.config.bind_kv(binding, *self._kv_values(start, count))

    def _warmup(self):
        import asyncio

        from foundry_inference.apps.chat.engine import GenerationRequest

        loop = asyncio.new_event_loop()
        try:
            ids = tuple(self.encode(self.render_prompt([{"role": "user", "content": "Hello"}])))
            gen = self.submit(GenerationRequest(prompt_ids=ids, max_new_tokens=2), loop)

            async def drain():
                async for _ in gen:
                    pass
            loop.run_until_complete(asyncio.wait_for(drain(), 300))
        finally:
            loop.close()

    def close(self):
        self._stopping = True
        self._inbox.put(("stop", None))
        if self._thread is not None:
            self._thread.join(10)
        for worker in self.prefill_workers:
            worker.stop()

    def post(self, command):
        """A command for the engine thread (from the event loop or a prefill worker)."""
        self._inbox.put(command)

    # --- the event-loop side -------------------------------------------------------------------------------------

    def render_prompt(self, messages, tools=None):
        return self.template.render(messages, tools)

    def encode(self, text):
        return [int(t) for t in self.tokenizer.encode(text)]

    def decode(self, ids):
        return self.tokenizer.decode(np.asarray(ids, dtype=np.int32))

    def submit(self, request, loop):
        if self._inflight + request.n > self.capacity:
            raise QueueFull(self._inflight, self.settings.retry_after_s)
        gen = Generation(request, loop, self._cancel)
        self._inflight += request.n
        self._inbox.put(("submit", gen))
        return gen

    def _cancel(self, gen):
        self._inbox.put(("cancel", gen))

    def _deliver(self, gen, events):
        """On the event loop: hand the events over and release the finished choices' capacity."""
        self._inflight -= sum(1 for e in events if isinstance(e, DoneEvent))
        gen.deliver(events)

    def stats(self):
        return {"running": self._running, "waiting": self._waiting_choices}

    # --- the engine thread ---------------------------------------------------------------------------------------

    def _run(self):
        self.rows = []                 # choices with a KV row, row i at index i
        self.guided = []               # choices stepped by an onnxruntime-genai Generator
        self.waiting = collections.deque()
        self._outbox = {}
        while True:
            idle = not (self.rows or self.guided or self._admissible())
            try:
                if not self._drain(block=idle) or not self._admit_arrivals():
                    break
                self._flush()               # a new request's first token leaves now, not after the next step
                if self.rows:
                    self._decode_step()
                    self._flush()
                if self.guided:
                    self._guided_step()
            except Exception as exc:  # noqa: BLE001 - never let the engine thread die: fail what was running
                log.exception("generation step failed")
                for choice in self.rows + self.guided:
                    self._finish(choice, "error", error=f"generation failed: {exc}")
                self._reap()
            self._flush()

    def _drain(self, block):
        if not block and self._inbox.empty():
            return True                     # the common case between decode steps: no exception raised and caught
        while True:
            try:
                cmd, gen = self._inbox.get() if block else self._inbox.get_nowait()
            except queue.Empty:
                return True
            block = False
            if cmd == "stop":
                for choice in self.rows + self.guided:
                    self._finish(choice, "cancelled")
                for gen in self.waiting:
                    self._emit_all_done(gen, "cancelled")
                for worker in self.prefill_workers:
                    if worker.job is not None:
                        self._emit_all_done(worker.job.gen, "cancelled")
                self._flush()
                return False
            if cmd == "prefilled":
                self._join_prefilled(gen)
            elif cmd == "submit":
                if gen.cancelled:
                    self._emit_all_done(gen, "cancelled")
                else:
                    self.waiting.append(gen)
                    self._waiting_choices += gen.request.n
            elif cmd == "cancel":
                if gen in self.waiting:
                    self.waiting.remove(gen)
                    self._waiting_choices -= gen.request.n
                    self._emit_all_done(gen, "cancelled")
                for choice in self.rows + self.guided:
                    if choice.gen is gen and not choice.done:
                        self._finish(choice, "cancelled")
                self._reap()

    def _occupied(self):
        return len(self.rows) + len(self.guided) + self._prefilling

    def _admissible(self):
        """Whether the next waiting request fits in the free slots (so the engine must not block)."""
        return bool(self.waiting) and self._occupied() + self.waiting[0].request.n <= self.max_batch

    def _emit(self, gen, event):
        self._outbox.setdefault(gen, []).append(event)

    def _emit_all_done(self, gen, reason):
        for index in range(gen.request.n):
            self._emit(gen, DoneEvent(index, reason, 0))

    def _flush(self):
        if not self._outbox:
            return
        for gen, events in self._outbox.items():
            try:
                gen.loop.call_soon_threadsafe(self._deliver, gen, events)
            except RuntimeError:          # the loop is closed: nobody is listening any more
                pass
        self._outbox = {}

    def _admit_arrivals(self):
        """Admit what waits; after each prefill on this thread, take in what arrived meanwhile (new requests, a
        worker's finished prefill) and admit again, before the next decode step: requests arriving together get their
        first tokens two prefills at a time, with no decode step in between. False when a stop command arrived."""
        while self._admit():
            if not self._drain(block=False):
                return False
        return True

    def _admit(self):
        """Start what waits and fits: a prompt goes to a free prefill worker (so the engine thread stays free for the
        running rows and for the next arrival); when every worker is busy, the engine thread prefills one itself,
        straight into the next row, and returns True (the caller looks at the inbox before the next)."""
        prefilled_here = False
        while self._admissible():
            gen = self.waiting[0]
            worker = None
            if not gen.request.guidance:
                worker = next((w for w in self.prefill_workers
                               if w.job is None and w.fits(len(gen.request.prompt_ids))), None)
            if worker is None and prefilled_here:
                return True
            self.waiting.popleft()
            self._waiting_choices -= gen.request.n
            choices = [self._new_choice(gen, i) for i in range(gen.request.n)]
            if worker is not None:
                worker.start(gen, choices, np.asarray(gen.request.prompt_ids, dtype=np.int64))
                self._prefilling += len(choices)
            else:
                prefilled_here = not gen.request.guidance
                try:
                    if gen.request.guidance:
                        for choice in choices:
                            self._start_guided(choice)
                    else:
                        self._prefill(choices)
                except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                    guided = bool(gen.request.guidance)
                    if not guided:
                        log.exception("prefill failed")
                    for choice in choices:
                        self._finish(choice, "error", error=f"{GRAMMAR_ERROR if guided else 'prefill failed: '}{exc}")
                    self._reap()
            self._running = self._occupied()
            self._flush()                   # each admitted request's first token leaves before the next prefill
        return prefilled_here

    def _join_prefilled(self, job):
        """A worker's prefill is done: its choices take the next rows (the KV copied over) and their first tokens."""
        self._prefilling -= len(job.choices)
        if job.error is not None or job.gen.cancelled or self._stopping:
            job.worker.job = None
            for choice in job.choices:
                if job.error is not None:
                    self._finish(choice, "error", error=f"prefill failed: {job.error}")
                else:
                    self._finish(choice, "cancelled")
        else:
            row = len(self.rows)
            job.worker.hand_over(range(row, row + len(job.choices)), len(job.prompt))
            self._place(job.choices, row, len(job.prompt), job.logits)
        self._running = self._occupied()

    def _new_choice(self, gen, index):
        req = gen.request
        gen.admitted_at = gen.admitted_at or time.perf_counter()
        seed = req.sampling.seed
        if seed is not None:
            seed = (int(seed) + index) % (1 << 63)
        sampler = Sampler(req.sampling, req.prompt_ids, seed)
        return _Choice(gen, index, sampler, self.tokenizer.create_stream(), StopMatcher(req.stop))

    def _prefill(self, choices):
        """Run the prompt once into the next free row; copy its KV into the rows of the other `n - 1` choices."""
        prompt = np.asarray(choices[0].gen.request.prompt_ids, dtype=np.int64)
        row = len(self.rows)
        binder = self._row_binders.get(row)
        if binder is None:                  # one binder per row: run_prompt keeps that row's binding for the next time
            binder = self._row_binders[row] = functools.partial(self._bind_kv, start=row, count=1)
        last = self.run_prompt(prompt, binder)
        for offset in range(1, len(choices)):
            for buf in self.keys + self.values:
                buf[row + offset, :, :len(prompt)] = buf[row, :, :len(prompt)]
        self._place(choices, row, len(prompt), last)

    def run_prompt(self, prompt, bind_kv):
        """Run `prompt` through the decoder (in chunks of prefill_chunk) into the KV buffers `bind_kv(binding)`
        binds; the last position's logits, float32. Called on the engine thread and on prefill workers.

        The binding with the KV buffers bound (four bindings per layer) is kept per `bind_kv` (a row's binder, a
        worker's method): a prompt rebinds only its inputs and logits, which takes the ~120 binding calls off
        each new request's first token. Each caller uses its own, so a worker and the engine thread never share
        one."""
        from onnxruntime import OrtValue
        cfg = self.config
        chunk = self.settings.prefill_chunk
        binding = self._prompt_bindings.get(bind_kv)
        if binding is None:
            binding = self.session.io_binding()
            bind_kv(binding)
            self._prompt_bindings[bind_kv] = binding
        logits = None
        for start in range(0, len(prompt), chunk):
            ids = prompt[start:start + chunk]
            # the logits of the chunk land in a buffer of ours: no copy of [1, chunk, vocab] floats afterwards
            logits = np.empty((1, len(ids), cfg.vocab_size), dtype=self._logits_dtype)
            binding.bind_ortvalue_output(cfg.logits, OrtValue.ortvalue_from_numpy(logits))
            binding.bind_cpu_input(cfg.input_ids, ids.reshape(1, -1))
            binding.bind_cpu_input(cfg.attention_mask, np.ones((1, start + len(ids)), dtype=np.int64))
            if self.uses_positions:
                binding.bind_cpu_input(cfg.position_ids,
                                       np.arange(start, start + len(ids), dtype=np.int64).reshape(1, -1))
            self.session.run_with_iobinding(binding)
        # the kept binding must not hold the [1, chunk, vocab] logits of this prompt until the next one
        binding.bind_ortvalue_output(cfg.logits, self._logits_stub)
        return np.asarray(logits[0, -1], dtype=np.float32)

    def _place(self, choices, row, length, last):
        """Prefilled choices join the batch at rows row.. (their KV is there) and take their first tokens."""
        for offset, choice in enumerate(choices):
            choice.row = row + offset
            choice.length = length
            self.rows.append(choice)
        for choice in choices:
            choice.gen.first_token_at = choice.gen.first_token_at or time.perf_counter()
            self._accept(choice, self._choose(choice, last.copy() if len(choices) > 1 else last))
        self._reap()

    def _decode_binding(self, n):
        entry = self._decode_bindings.get(n)
        if entry is None:
            from onnxruntime import OrtValue
            cfg = self.config
            binding = self.session.io_binding()
            logits = np.empty((n, 1, cfg.vocab_size), dtype=self._logits_dtype)
            binding.bind_ortvalue_output(cfg.logits, OrtValue.ortvalue_from_numpy(logits))
            self._bind_kv(binding, 0, n)
            entry = self._decode_bindings[n] = (binding, logits)
        return entry

    def _decode_step(self):
        cfg = self.config
        rows = self.rows
        n = len(rows)
        binding, logits = self._decode_binding(n)
        if n == 1:                  # one stream: no per-step arrays beyond the two 1x1 inputs
            length = rows[0].length
            ids = np.array(((rows[0].last,),), dtype=np.int64)
            mask = self._ones[:, :length + 1]
            lengths = np.array(((length,),), dtype=np.int64) if self.uses_positions else None
        else:
            ids = np.fromiter((c.last for c in rows), dtype=np.int64, count=n).reshape(n, 1)
            lengths = np.fromiter((c.length for c in rows), dtype=np.int64, count=n)
            mask = (np.arange(int(lengths.max()) + 1) <= lengths[:, None]).astype(np.int64)
            lengths = lengths.reshape(n, 1)
        binding.bind_cpu_input(cfg.input_ids, ids)
        binding.bind_cpu_input(cfg.attention_mask, mask)
        if self.uses_positions:
            binding.bind_cpu_input(cfg.position_ids, lengths)
        self.session.run_with_iobinding(binding)
        self.steps += 1
        self.batch_rows += n
        for i, choice in enumerate(rows):
            choice.length += 1
            row = logits[i, 0]
            if row.dtype != np.float32:
                row = row.astype(np.float32)
            self._accept(choice, self._choose(choice, row))
        self._reap()

    def _choose(self, choice, row):
        scorer = None if choice.logprobs is None else lp.Scorer(row, choice.gen.request.logprobs)   # raw logits
        if choice.generated < choice.gen.request.min_new_tokens:
            row[self._eos_list] = -np.inf          # in place: the buffer is rewritten by the next step anyway
        token = choice.sampler.choose(row)
        if scorer is not None and token not in self.eos_ids:
            choice.logprobs.append(scorer.entry(token, self.token_texts))
        return token

    def _start_guided(self, choice):
        og = self.og
        req = choice.gen.request
        p = req.sampling
        params = og.GeneratorParams(self.og_model)
        options = dict(max_length=len(req.prompt_ids) + req.max_new_tokens, do_sample=p.do_sample)
        if req.min_new_tokens:
            options["min_length"] = len(req.prompt_ids) + req.min_new_tokens
        if p.do_sample:
            options.update(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or 0,
                           random_seed=int(choice.sampler.rng.integers(0, 2 ** 31 - 1)))
        params.set_search_options(**options)
        params.set_guidance(req.guidance[0], req.guidance[1])
        generator = og.Generator(self.og_model, params)
        generator.append_tokens(np.asarray(req.prompt_ids, dtype=np.int32))
        choice.generator = generator
        choice.gen.first_token_at = choice.gen.first_token_at or time.perf_counter()
        self.guided.append(choice)

    def _guided_step(self):
        for choice in list(self.guided):
            generator = choice.generator
            if generator.is_done():
                self._finish(choice, "length" if choice.generated >= choice.max_new else "stop")
                continue
            generator.generate_next_token()
            self._accept(choice, int(generator.get_next_tokens()[0]))
        self._reap()

    def _accept(self, choice, token):
        """Book one generated token: end of turn, text (through the stop matcher), or the length limit."""
        if choice.done:
            return
        choice.generated += 1
        choice.last = token
        if token in self.eos_ids:
            self._finish(choice, "stop")
            return
        choice.sampler.observe(token)
        text, matched = choice.matcher.feed(choice.stream.decode(token))
        if text:
            self._emit(choice.gen, TextEvent(choice.index, text, self._take_logprobs(choice)))
        if matched:
            self._finish(choice, "stop")
        elif choice.generated >= choice.max_new or choice.length + 1 >= self.context_length:
            self._finish(choice, "length")

    def _finish(self, choice, reason, error=None):
        if choice.done:
            return
        choice.done = True
        if reason in ("stop", "length"):
            rest = choice.matcher.flush()
            if rest or choice.logprobs:
                self._emit(choice.gen, TextEvent(choice.index, rest, self._take_logprobs(choice)))
        self._emit(choice.gen, DoneEvent(choice.index, reason, choice.generated, error))

    @staticmethod
    def _take_logprobs(choice):
        entries = choice.logprobs
        if not entries:
            return None
        choice.logprobs = []
        return tuple(entries)

    def _reap(self):
        """Drop finished choices; the last live row moves into each freed row (its valid KV prefix is copied)."""
        if any(c.done for c in self.rows):
            live = self.rows
            i = 0
            while i < len(live):
                if not live[i].done:
                    i += 1
                    continue
                last = live.pop()
                if i == len(live) or last.done:
                    continue                # dropped from the end; look at row i again (if any)
                length = last.length
                for buf in self.keys + self.values:
                    buf[i, :, :length] = buf[last.row, :, :length]
                last.row = i
                live[i] = last
                i += 1
        if any(c.done for c in self.guided):
            self.guided = [c for c in self.guided if not c.done]
        self._running = len(self.rows) + len(self.guided)

