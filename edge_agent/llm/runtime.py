"""Text generation with a KV cache on onnxruntime: the device's real Generator."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import onnxruntime as ort
import structlog
from tokenizers import Tokenizer  # no py.typed

from edge_agent.errors import ContextOverflowError, GenerationError, ModelError
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.llm.binding import DecoderEngine, make_engine
from edge_agent.llm.draft import DraftConfig, DraftHistory, PromptLookup
from edge_agent.llm.manifest import Manifest, PromptFormat
from edge_agent.llm.manifest import verify as verify_folder
from edge_agent.llm.memory import (
    PageShedder,
    release_freed_heap,
    resident_file_bytes,
    shedding_mapped_pages,
)
from edge_agent.llm.sampling import TokenPicker
from edge_agent.llm.session import (
    KvLayout,
    PrefixCache,
    open_session,
    uses_group_query_attention,
)
from edge_agent.llm.special import SpecialTokenGuard, break_token
from edge_agent.llm.stream import IncrementalText, StopScanner

log = structlog.get_logger(__name__)

_WARMUP_TOKENS = 2
# Prompt positions per prefill pass (see ``generate``). onnxruntime's arena grows to
# the largest pass's activations: 128 instead of 256 took 45 MiB off the 2B's peak at
# a filled 2k context, for more passes over the weights (prefill only).
_PREFILL_CHUNK = 128
# Positions run between two sheddings of the mapped weights' pages (see ``load``):
# a decode step maps back up to ~0.5 MB of the head, a prefill chunk ~12 MB.
_SHED_EVERY = 64


@dataclass(frozen=True, slots=True)
class StepTimes:
    """Where the last generation's time went (for ``edge-agent bench`` and logs)."""

    prefilled_tokens: int
    """Prompt tokens actually run (the prompt minus the reused prefix)."""
    reused_tokens: int
    prefill_s: float
    """From the start of ``generate`` to the first token's logits (includes tokenizing)."""
    decode_tokens: int
    """Positions decoded after the prefill (the tokens kept, the last picked one excepted)."""
    decode_s: float
    verify_steps: int = 0
    """Forward passes that scored drafted tokens."""
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    """Drafted tokens that greedy decoding produced too (each saved a forward pass)."""


class OnnxGenerator:
    """An int4 (or float) decoder-only ONNX export plus its tokenizer and manifest.

    Not thread-safe: the worker runs one generation at a time.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        manifest: Manifest,
        layout: KvLayout,
        *,
        io_binding: bool = True,
        context_tokens: int | None = None,
        guard: SpecialTokenGuard | None = None,
        draft: DraftConfig | None = None,
        pages: PageShedder | None = None,
    ) -> None:
        self._session = session
        self._pages = pages
        self._tokenizer = tokenizer
        if context_tokens is not None and context_tokens < manifest.context_length:
            # The runtime's context is the folder's, or less: it sizes the KV buffers.
            manifest = replace(manifest, context_length=context_tokens)
        self._manifest = manifest
        self._layout = layout
        self._engine: DecoderEngine = make_engine(
            session, layout, manifest.context_length, io_binding=io_binding
        )
        self._eos = frozenset(manifest.eos_token_ids)
        self._guard = guard if guard is not None else SpecialTokenGuard.of(tokenizer)
        self._draft = draft or DraftConfig()
        rows = self._engine.max_rows
        # Drafted tokens per pass: the graph scores K positions, one of them the
        # decoded token itself. A graph that scores every position has no cap of its own.
        cap = self._draft.max_tokens or (rows - 1 if rows else 0)
        self._draft_limit = min(cap, rows - 1) if rows else cap
        if not self._draft.enabled:
            self._draft_limit = 0
        # onnxruntime's float GEMM has its own one-row kernel (x86-64, aarch64), which attention
        # takes on a one-position pass (probabilities times values); it rounds otherwise
        # than the multi-row kernel, and int8 activations amplify that to logits a few
        # tenths apart: greedy text would then depend on which positions were verified
        # in a batch (MatMulNBits alone is bit-identical at any row count). With a
        # folder that verifies, greedy passes therefore always carry two positions or
        # more, so every position is computed by the same kernel, drafts or not.
        self._pairs = bool(rows and rows > 1) and (self._draft.enabled or self._draft.pairs)
        self._history = (
            DraftHistory(self._draft.history_tokens)
            if self._draft_limit > 0 and self._draft.history_tokens > 0
            else None
        )
        self._prefix: PrefixCache | None = None
        self.reused_tokens_total = 0
        """Prompt tokens served from the kept prefix cache instead of prefilled, in total."""
        self.last_times: StepTimes | None = None
        """Timing of the last ``generate`` call."""

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        threads: int = 2,
        provider: str = "CPUExecutionProvider",
        verify: bool = True,
        log_severity: int = 2,
        io_binding: bool = True,
        context_tokens: int | None = None,
        draft: DraftConfig | None = None,
    ) -> OnnxGenerator:
        """Verify (optionally), load and warm up the model folder.

        ``log_severity`` is onnxruntime's own level (0 verbose .. 4 fatal); its lines
        are re-emitted as ``onnxruntime_log`` events. ``io_binding`` off runs every
        step through plain ``session.run`` (the reference path, slower). ``draft``
        configures prompt-lookup drafting; it needs a folder exported with verify
        positions above 1 (or a graph that scores every position) and greedy decoding.
        """
        started = time.monotonic()
        manifest = _read_manifest(model_dir, check=verify)
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizers raises a bare Exception for unreadable or malformed files.
        except Exception as exc:
            raise ModelError(f"cannot load {model_dir / 'tokenizer.json'}: {exc}") from exc
        # Before the session: the tokenizer's parse garbage must not add to its peak.
        release_freed_heap()
        graph = model_dir / "model.onnx"
        # Prepacking copies what it reads of the mapped weights; let those pages go
        # and fault back only what decoding touches (the head's looked-up rows, norms).
        weight_files = [model_dir / name for name in manifest.files]
        with shedding_mapped_pages(weight_files):
            session = open_session(
                graph,
                threads=threads,
                provider=provider,
                log_severity=log_severity,
                fold_constants=manifest.graph != "fused",
            )
        # The embedding's lookups fault head pages back in large folios; shed them
        # as generation goes so they do not add up to most of the head again.
        pages = PageShedder(weight_files, every=_SHED_EVERY)
        before = resident_file_bytes()
        pages.shed()
        dropped = max(0, before - resident_file_bytes())
        shared = uses_group_query_attention(graph)
        layout = KvLayout.from_session(session, manifest, shared_buffer=shared)
        generator = cls(
            session,
            tokenizer,
            manifest,
            layout,
            io_binding=io_binding,
            context_tokens=context_tokens,
            draft=draft,
            pages=pages,
        )
        generator._warm_up()
        release_freed_heap()
        log.info(
            "model_ready",
            model=generator.model_id,
            path=str(model_dir),
            threads=threads,
            provider=provider,
            kv_cache="shared_buffer" if shared and io_binding else "growing",
            io_binding=io_binding,
            verified=verify,
            draft_tokens=generator.draft_limit,
            weight_pages_dropped_mb=round(dropped / 2**20),
            load_s=round(time.monotonic() - started, 3),
        )
        return generator

    @property
    def draft_limit(self) -> int:
        """Most drafted tokens verified per forward pass (0: drafting off or impossible)."""
        return self._draft_limit

    @property
    def model_id(self) -> str:
        """``family:source@digest``; the digest covers every file's checksum."""
        m = self._manifest
        return f"{m.family}:{m.source}@{m.files_digest}"

    @property
    def manifest(self) -> Manifest:
        """The manifest of the loaded folder."""
        return self._manifest

    @property
    def prompt_format(self) -> PromptFormat:
        """``chat`` or ``completion``, from the manifest: which prompt shape to build."""
        return self._manifest.prompt_format

    @property
    def context_length(self) -> int:
        """Most tokens (prompt plus generated) one request may hold."""
        return self._manifest.context_length

    @property
    def cached_prefix_tokens(self) -> int:
        """Tokens of the prompt head whose KV cache is kept for the next request."""
        return len(self._prefix.ids) if self._prefix else 0

    def render(self, user: str) -> str:
        """Wrap ``user`` in the folder's prompt template; control tokens come only from it.

        ``user`` holds sensor names, values and questions: any added token spelled in it
        is neutralised (:mod:`.special`) so the tokenizer cannot parse it as one.
        """
        return self._manifest.render(self._untrusted(user))

    def _untrusted(self, text: str) -> str:
        safe = self._guard.neutralise(text)
        # Check with the tokenizer itself: it also matches tokens after normalisation.
        found = self._guard.ids.intersection(self.encode(safe))
        if not found:
            return safe
        for token_id in sorted(found):
            content = self._guard.contents[token_id]
            safe = safe.replace(content, break_token(content))
        safe = self._guard.harsh(safe)
        if self._guard.ids.intersection(self.encode(safe)):
            raise GenerationError("text spells a control token that cannot be escaped")
        log.warning("control_token_escaped_harshly", tokens=len(found))
        return safe

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in the text are honoured."""
        # The template spells out <bos> itself, so no post-processor tokens are added.
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes, without special tokens added."""
        return len(self.encode(text))

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` with special tokens dropped, as ``generate`` returns it."""
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def generate(self, request: GenerationRequest) -> Generation:
        """Decode until eos, a stop string, the token budget or the deadline.

        Greedy by default; ``request.sampling`` turns on seeded sampling and the
        repetition penalty, and ``request.logits_processor`` sees every step's logits.
        The budget is also capped by the context window; hitting that cap reports
        ``max_new_tokens``. A prompt that alone fills the context raises
        ``ContextOverflowError``. With ``prefix_chars`` the KV cache of the prompt's
        head is kept, and the next request that starts with the same tokens skips it.
        """
        started = time.monotonic()
        prompt = self.encode(request.prompt)
        context = self._manifest.context_length
        if not prompt:
            raise GenerationError("empty prompt: nothing to generate from")
        if len(prompt) >= context:
            raise ContextOverflowError(
                f"prompt is {len(prompt)} tokens; the model's context is {context}"
            )
        picker = TokenPicker(request.sampling, prompt, request.logits_processor)
        budget = min(request.max_new_tokens, context - len(prompt))
        scanner = StopScanner(self._manifest.stop_strings + request.stop, request.on_text)
        detokenizer = IncrementalText(self.decode)
        reused = self._start_from_prefix(prompt, len(prompt) + budget)
        self.reused_tokens_total += reused
        lookup = self._lookup(request, prompt)
        pairs = self._pairs and _greedy(request)
        step, done = prompt[reused:], reused
        # A long prompt is prefilled in chunks: one pass over 2,000 positions holds
        # attention scores and MLP activations for all of them at once (about 0.5 GB
        # on Gemma 2 2B), which would set the process's peak memory.
        while len(step) > _PREFILL_CHUNK + 1:
            self._engine.forward_rows(step[:_PREFILL_CHUNK], done)
            self._fed(_PREFILL_CHUNK)
            step, done = step[_PREFILL_CHUNK:], done + _PREFILL_CHUNK
        first = True
        new = picker.generated
        text, reason = "", "max_new_tokens"
        prefilled_at = started
        verify_steps = drafted = accepted = 0
        finished = False
        while not finished and budget > 0:
            # Drafts ride along with the step; one pass scores them all.
            room = min(self._draft_limit, budget - len(new) - 1)
            draft = lookup.propose(room) if lookup else []
            pad: list[int] = []
            if pairs and len(step) + len(draft) == 1:
                if room > 0 and lookup is not None:
                    draft = [step[-1]]  # no match: guess a repeat, verified like any draft
                else:
                    pad = [step[-1]]  # a second row whose logits are not used
            if draft or pad:
                fed = step + draft + pad
                rows = self._engine.forward_rows(fed, done)[-len(draft) - 1 - len(pad) :]
                rows = rows[: len(draft) + 1]
                self._fed(len(fed))
                if draft:
                    verify_steps += 1
                    drafted += len(draft)
            else:
                rows = self._engine.forward(step, done)[None, :]
                self._fed(len(step))
            if first:
                first = False
                prefilled_at = time.monotonic()
                if request.prefix_chars > 0:
                    self._keep_prefix(request, prompt)
            done += len(step)
            kept = 0
            for i in range(len(rows)):
                # Row i saw the step and draft[:i], all of which greedy decoding chose:
                # picking from it is exactly the plain decoding step, hook included.
                token = picker.pick(rows[i])
                if token in self._eos:
                    new.pop()
                    reason, finished = "eos", True
                    break
                text, stopped = scanner.update(detokenizer.text(new))
                if stopped:
                    reason, finished = "stop", True
                    break
                if len(new) >= budget:
                    finished = True
                    break
                if (
                    request.deadline_s is not None
                    and time.monotonic() - started >= request.deadline_s
                ):
                    reason, finished = "deadline", True
                    break
                if request.cancelled is not None and request.cancelled():
                    reason, finished = "cancelled", True
                    break
                if i == len(draft) or token != draft[i]:
                    break
                kept += 1
            accepted += kept
            # The accepted drafts' positions are valid; the rejected ones are dropped.
            done += kept
            if kept < len(draft) or pad:
                self._engine.rewind(done)
            step = [new[-1]] if new else []
            if lookup is not None:
                lookup.extend(new[len(lookup.tokens) - len(prompt) :])
        if reason != "stop":
            scanner.finish(text)
        if self._pages is not None:
            self._pages.shed()  # what this request mapped back is no use to the next
        if lookup is not None and self._history is not None:
            self._history.record(prompt, new)
        finished_at = time.monotonic()
        latency = finished_at - started
        self.last_times = StepTimes(
            prefilled_tokens=len(prompt) - reused,
            reused_tokens=reused,
            prefill_s=prefilled_at - started,
            decode_tokens=max(done - len(prompt), 0),
            decode_s=finished_at - prefilled_at,
            verify_steps=verify_steps,
            drafted_tokens=drafted,
            accepted_tokens=accepted,
        )
        log.debug(
            "generation_finished",
            prompt_tokens=len(prompt),
            reused_tokens=reused,
            new_tokens=len(new),
            stop_reason=reason,
            drafted_tokens=drafted,
            accepted_tokens=accepted,
            latency_s=round(latency, 4),
        )
        return Generation(text, len(prompt), len(new), reason, latency)

    def _fed(self, positions: int) -> None:
        """Count positions run through the model, for shedding the weights' pages."""
        if self._pages is not None:
            self._pages.fed(positions)

    def _lookup(self, request: GenerationRequest, prompt: list[int]) -> PromptLookup | None:
        """The n-gram index for drafting, or None when this request decodes plainly.

        Only greedy decoding drafts: its output is the argmax at every position, which
        a verified draft reproduces exactly. Sampling would need the speculative
        acceptance rule to keep its distribution; it decodes plainly instead.
        """
        if self._draft_limit <= 0 or not _greedy(request):
            return None
        return PromptLookup(
            prompt,
            ngram_min=self._draft.ngram_min,
            ngram_max=self._draft.ngram_max,
            short_match_tokens=self._draft.short_match_tokens,
            history=self._history,
        )

    def forget_drafts(self) -> None:
        """Forget the outputs remembered for drafting (they change speed, never text)."""
        if self._history is not None:
            self._history.clear()

    def _start_from_prefix(self, prompt: list[int], positions: int) -> int:
        """Size the cache for ``positions``; load the kept prefix if the prompt starts with it.

        Returns the number of reused tokens. Sizing comes first, so a resized cache
        receives the prefix in the restore's single copy.
        """
        self._engine.reserve(positions, keep=0)
        kept = self._prefix
        # The kept head's first positions serve any prompt that starts with the same
        # tokens, even if it goes on differently (requests pick their own examples).
        # At least one token must still be fed: the step's logits come from it.
        shared = _common_prefix(kept.ids, prompt, len(prompt) - 1) if kept else 0
        if kept is None or shared == 0:
            self._engine.reset()
            return 0
        self._engine.restore(kept.past, shared)
        return shared

    def _keep_prefix(self, request: GenerationRequest, prompt: list[int]) -> None:
        """Keep the KV cache of the prompt's static head, right after its prefill."""
        head = self.encode(request.prompt[: request.prefix_chars])
        # Tokens at the head/rest boundary may merge differently in the full prompt, so
        # keep only the part both tokenizations agree on, minus the boundary token.
        n = min(len(head) - 1, len(prompt) - 1)
        while n > 0 and head[:n] != prompt[:n]:
            n -= 1
        if n <= 0 or (self._prefix is not None and self._prefix.ids == tuple(prompt[:n])):
            return
        # A causal model's cache for the first n positions depends only on those tokens.
        self._prefix = PrefixCache(tuple(prompt[:n]), self._engine.snapshot(n))
        log.debug("prefix_cache_kept", tokens=n)

    def _warm_up(self) -> None:
        """One short generation so the first real request does not pay for allocation."""
        request = GenerationRequest(self.render("Hello."), max_new_tokens=_WARMUP_TOKENS)
        try:
            result = self.generate(request)
        except GenerationError as exc:
            # At load time a failing forward pass means a broken folder, not a bad request.
            raise ModelError(f"the model loads but cannot generate: {exc}") from exc
        self.forget_drafts()  # "Hello." is no guide to what the service will write
        log.info("model_warmed_up", latency_s=round(result.latency_s, 4))


def _common_prefix(kept: tuple[int, ...], prompt: list[int], limit: int) -> int:
    """How many leading tokens ``kept`` and ``prompt`` share, at most ``limit``."""
    n = min(len(kept), limit)
    if tuple(prompt[:n]) == kept[:n]:
        return n  # the usual case: the whole kept head
    return next(i for i, (a, b) in enumerate(zip(kept, prompt, strict=False)) if a != b)


def _greedy(request: GenerationRequest) -> bool:
    sampling = request.sampling
    return sampling.temperature == 0.0 or sampling.top_k == 1


def _read_manifest(model_dir: Path, *, check: bool) -> Manifest:
    if check:
        return verify_folder(model_dir)
    log.warning("model_verify_skipped", path=str(model_dir))
    return Manifest.from_dir(model_dir)
