"""Greedy text generation with a KV cache on onnxruntime: the device's real Generator."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import structlog
from tokenizers import Tokenizer  # no py.typed

from edge_agent.errors import ContextOverflowError, GenerationError, ModelError
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.llm.manifest import Manifest, PromptFormat
from edge_agent.llm.manifest import verify as verify_folder
from edge_agent.llm.session import KvLayout, PrefixCache, open_session
from edge_agent.llm.stream import StopScanner

log = structlog.get_logger(__name__)

_WARMUP_TOKENS = 2


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
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._manifest = manifest
        self._layout = layout
        self._eos = frozenset(manifest.eos_token_ids)
        self._prefix: PrefixCache | None = None
        self.reused_tokens_total = 0
        """Prompt tokens served from the kept prefix cache instead of prefilled, in total."""

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        threads: int = 2,
        provider: str = "CPUExecutionProvider",
        verify: bool = True,
        log_severity: int = 2,
    ) -> OnnxGenerator:
        """Verify (optionally), load and warm up the model folder.

        ``log_severity`` is onnxruntime's own level (0 verbose .. 4 fatal); its lines
        are re-emitted as ``onnxruntime_log`` events.
        """
        started = time.monotonic()
        manifest = _read_manifest(model_dir, check=verify)
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizers raises a bare Exception for unreadable or malformed files.
        except Exception as exc:
            raise ModelError(f"cannot load {model_dir / 'tokenizer.json'}: {exc}") from exc
        session = open_session(
            model_dir / "model.onnx", threads=threads, provider=provider, log_severity=log_severity
        )
        generator = cls(session, tokenizer, manifest, KvLayout.from_session(session, manifest))
        generator._warm_up()
        log.info(
            "model_ready",
            model=generator.model_id,
            path=str(model_dir),
            threads=threads,
            provider=provider,
            verified=verify,
            load_s=round(time.monotonic() - started, 3),
        )
        return generator

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
        """Wrap ``user`` in the folder's prompt template."""
        return self._manifest.render(user)

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
        """Greedy decoding until eos, a stop string, the token budget or the deadline.

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
        budget = min(request.max_new_tokens, context - len(prompt))
        scanner = StopScanner(self._manifest.stop_strings + request.stop, request.on_text)
        reused, past = self._reuse_prefix(prompt)
        self.reused_tokens_total += reused
        step, done = prompt[reused:], reused
        new: list[int] = []
        text, reason = "", "max_new_tokens"
        while budget > 0:
            logits, past = self._forward(step, past, done)
            if done == reused and request.prefix_chars > 0:
                self._keep_prefix(request, prompt, past)
            done += len(step)
            token = int(np.argmax(logits))
            if token in self._eos:
                reason = "eos"
                break
            new.append(token)
            text, stopped = scanner.update(self.decode(new))
            if stopped:
                reason = "stop"
                break
            if len(new) >= budget:
                break
            if request.deadline_s is not None and time.monotonic() - started >= request.deadline_s:
                reason = "deadline"
                break
            step = [token]
        if reason != "stop":
            scanner.finish(text)
        latency = time.monotonic() - started
        log.debug(
            "generation_finished",
            prompt_tokens=len(prompt),
            reused_tokens=reused,
            new_tokens=len(new),
            stop_reason=reason,
            latency_s=round(latency, 4),
        )
        return Generation(text, len(prompt), len(new), reason, latency)

    def _reuse_prefix(self, prompt: list[int]) -> tuple[int, dict[str, np.ndarray]]:
        """How many leading prompt tokens the kept cache covers, and the past to start from."""
        kept = self._prefix
        # At least one token must still be fed: the step's logits come from it.
        if (
            kept is None
            or len(kept.ids) >= len(prompt)
            or tuple(prompt[: len(kept.ids)]) != kept.ids
        ):
            return 0, self._layout.empty_past()
        return len(kept.ids), dict(kept.past)

    def _keep_prefix(
        self, request: GenerationRequest, prompt: list[int], past: dict[str, np.ndarray]
    ) -> None:
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
        self._prefix = PrefixCache(
            tuple(prompt[:n]), {k: np.ascontiguousarray(v[:, :, :n]) for k, v in past.items()}
        )
        log.debug("prefix_cache_kept", tokens=n)

    def _forward(
        self, ids: list[int], past: dict[str, np.ndarray], past_len: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One step: returns the last position's logits and the grown cache."""
        total = past_len + len(ids)
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "attention_mask": np.ones((1, total), dtype=np.int64),
            **past,
        }
        if self._layout.has_position_ids:
            feeds["position_ids"] = np.arange(past_len, total, dtype=np.int64)[None, :]
        try:
            outputs = self._session.run(None, feeds)
        # onnxruntime's pybind errors derive from Exception directly (see session.py).
        except Exception as exc:
            raise GenerationError(f"onnxruntime failed at position {past_len}: {exc}") from exc
        named = dict(zip(self._layout.output_names, outputs, strict=True))
        to_past = self._layout.present_to_past
        present = {to_past[k]: v for k, v in named.items() if k in to_past}
        return named["logits"][0, -1], present

    def _warm_up(self) -> None:
        """One short generation so the first real request does not pay for allocation."""
        request = GenerationRequest(self.render("Hello."), max_new_tokens=_WARMUP_TOKENS)
        try:
            result = self.generate(request)
        except GenerationError as exc:
            # At load time a failing forward pass means a broken folder, not a bad request.
            raise ModelError(f"the model loads but cannot generate: {exc}") from exc
        log.info("model_warmed_up", latency_s=round(result.latency_s, 4))


def _read_manifest(model_dir: Path, *, check: bool) -> Manifest:
    if check:
        return verify_folder(model_dir)
    log.warning("model_verify_skipped", path=str(model_dir))
    return Manifest.from_dir(model_dir)
