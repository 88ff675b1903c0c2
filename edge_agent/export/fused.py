"""The fused decoder graph, written node by node from the model config (no tracing).

optimum traces torch into ~5,600 primitive nodes for Gemma 2 (rotary, masks and
soft-caps as arithmetic, a KV concatenation per layer). This writes the ~360-node
graph onnxruntime's contrib ops run fastest, the same shape as onnxruntime-genai's
model builder makes:

- one fused QKV MatMul per layer, split after;
- ``GroupQueryAttention`` doing rotary, the attention soft-cap, the sliding window
  and the KV append (into a buffer shared by past and present, see ``llm/binding.py``);
- ``SkipSimplifiedLayerNormalization`` for each residual add + RMS norm;
- the LM head on the last position only, so a 128-token prefill does not compute
  128 rows of a 256k vocabulary.

Weights are graph inputs here, as in the traced graph: ``graph.write_float_model``
streams them in through ``FusedWeights`` and ``int4.quantize_folder`` turns each
MatMul into MatMulNBits. Gemma's ``1 + w`` RMS norm gains are folded at write time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.errors import ExportError
from edge_agent.export.weights import Weights

if TYPE_CHECKING:
    # graph.py imports torch for tracing; nothing here needs it.
    from edge_agent.export.graph import Graph

_MS = "com.microsoft"
_OPSET = 21  # Gelu with approximate="tanh" needs 20
_LAST = "last_position"


@dataclass(frozen=True, slots=True)
class DecoderShape:
    """What the graph needs from a Gemma 2 / Gemma 3 text config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    eps: float
    scale: float
    softcap: float
    final_softcap: float | None
    windows: tuple[int | None, ...]
    """Per layer: the sliding window in tokens (the query's own included), or None."""
    rope_bases: tuple[float, ...]
    """Per layer: the rotary base (Gemma 3 uses a smaller one on its sliding layers)."""
    rope_factor: float
    """Linear position scaling of the full-attention layers (Gemma 3 >= 1B); 1.0 if none."""
    qk_norm: bool
    tied: bool
    context: int

    @classmethod
    def from_config(cls, config: Any, *, context: int | None = None) -> DecoderShape:
        """Read ``config``; refuse what this graph does not implement."""
        if str(config.model_type) not in ("gemma2", "gemma3_text"):
            raise ExportError(f"the fused graph builds Gemma 2/3 text, not {config.model_type}")
        activation = getattr(config, "hidden_activation", None) or config.hidden_act
        if activation != "gelu_pytorch_tanh":
            raise ExportError(f"unsupported activation {activation!r} for the fused graph")
        n = int(config.num_hidden_layers)
        types = list(getattr(config, "layer_types", None) or [])
        if len(types) != n:
            # Gemma 2 before layer_types: even layers slide.
            types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
        sliding = [t == "sliding_attention" for t in types]
        window = getattr(config, "sliding_window", None)
        local_base = getattr(config, "rope_local_base_freq", None)
        base = float(config.rope_theta)
        factor = 1.0
        scaling = getattr(config, "rope_scaling", None)
        if scaling:
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind != "linear":
                raise ExportError(f"rope scaling {kind!r} is not supported by the fused graph")
            factor = float(scaling["factor"])
        softcap = getattr(config, "attn_logit_softcapping", None)
        final = getattr(config, "final_logit_softcapping", None)
        return cls(
            layers=n,
            hidden=int(config.hidden_size),
            intermediate=int(config.intermediate_size),
            heads=int(config.num_attention_heads),
            kv_heads=int(config.num_key_value_heads),
            head_dim=int(config.head_dim),
            vocab=int(config.vocab_size),
            eps=float(config.rms_norm_eps),
            scale=float(config.query_pre_attn_scalar) ** -0.5,
            softcap=float(softcap or 0.0),
            final_softcap=float(final) if final else None,
            windows=tuple(int(window) if s and window else None for s in sliding),
            rope_bases=tuple(
                float(local_base) if s and local_base is not None else base for s in sliding
            ),
            rope_factor=factor,
            qk_norm=str(config.model_type) == "gemma3_text",
            tied=bool(getattr(config, "tie_word_embeddings", True)),
            context=int(context or config.max_position_embeddings),
        )


class FusedWeights:
    """The fused graph's tensors from a source's state-dict names."""

    def __init__(self, weights: Weights) -> None:
        self._weights = weights

    def get(self, name: str) -> np.ndarray:
        """Tensor ``name`` of the fused graph, as float32."""
        if name.endswith(".qkv_proj.weight"):
            prefix = name.removesuffix("qkv_proj.weight")
            parts = [self._weights.get(f"{prefix}{p}_proj.weight") for p in "qkv"]
            return np.concatenate(parts, axis=0)
        if name.endswith("norm.weight"):
            # Gemma's RMS norm multiplies by (1 + w); onnxruntime's by w.
            return self._weights.get(name) + np.float32(1.0)
        return self._weights.get(name)


def fused_names(high_precision: frozenset[str]) -> frozenset[str]:
    """Map state-dict names kept at 8 bits onto the fused graph's names (QKV if any part)."""
    fused = set(high_precision)
    for name in high_precision:
        for part in ("q_proj", "k_proj", "v_proj"):
            if f".self_attn.{part}." in name:
                fused.add(name.replace(part, "qkv_proj"))
    return frozenset(fused)


def build_fused_graph(config: Any, *, context: int | None = None) -> Graph:
    """The weightless fused graph for ``config``, plus its rotary tables as buffers."""
    from edge_agent.export.graph import Graph

    shape = DecoderShape.from_config(config, context=context)
    builder = _Builder(shape)
    model = builder.build()
    sidecar = config.to_json_string(use_diff=False).encode()
    return Graph(model, builder.buffers, {"config.json": sidecar})


class _Builder:
    """Accumulates nodes, weight inputs and constants for one graph."""

    def __init__(self, shape: DecoderShape) -> None:
        self.s = shape
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.ValueInfoProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.buffers: dict[str, np.ndarray] = {}
        self._const_names: dict[tuple[str, bytes], str] = {}

    # -- small helpers ---------------------------------------------------------------

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs: Any) -> str:
        """Add a node named ``name``; its outputs are ``name/out{i}``; returns the first."""
        outputs = [f"{name}/out{i}" for i in range(n_out)]
        domain = _MS if op in _CONTRIB else ""
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0]

    def weight(self, name: str, dims: tuple[int, ...]) -> str:
        self.weights.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims)))
        return name

    def const(self, value: np.ndarray) -> str:
        key = (str(value.dtype) + str(value.shape), value.tobytes())
        if key not in self._const_names:
            name = f"const_{len(self._const_names)}"
            self.constants.append(numpy_helper.from_array(value, name))
            self._const_names[key] = name
        return self._const_names[key]

    def linear(self, x: str, weight: str, n: int, k: int, name: str) -> str:
        """``x @ W.T`` with ``W`` stored ``[N, K]`` as in the state dict (the quantizer
        reads it through the Transpose and never materializes the float product)."""
        w = self.weight(weight, (n, k))
        t = self.node("Transpose", [w], f"{name}/transpose", perm=[1, 0])
        return self.node("MatMul", [x, t], f"{name}/MatMul")

    def rms(self, x: str, weight: str, name: str) -> str:
        w = self.weight(weight, (self.s.hidden,))
        return self.node("SimplifiedLayerNormalization", [x, w], name, axis=-1, epsilon=self.s.eps)

    def skip_rms(self, x: str, skip: str, weight: str, name: str) -> tuple[str, str]:
        """Residual add then RMS norm; returns (normed, sum)."""
        w = self.weight(weight, (self.s.hidden,))
        self.node("SkipSimplifiedLayerNormalization", [x, skip, w], name, 4, epsilon=self.s.eps)
        return f"{name}/out0", f"{name}/out3"

    # -- the graph -------------------------------------------------------------------

    def build(self) -> onnx.ModelProto:
        s = self.s
        seqlens, total = self.mask_inputs()
        embed = self.weight("model.embed_tokens.weight", (s.vocab, s.hidden))
        x = self.node("Gather", [embed, "input_ids"], "embed_tokens/Gather")
        # Gemma scales embeddings by sqrt(hidden) (in the compute dtype, here fp32).
        x = self.node(
            "Mul", [x, self.const(np.array(math.sqrt(s.hidden), np.float32))], "embed_tokens/Mul"
        )
        residual = x
        normed = self.rms(x, "model.layers.0.input_layernorm.weight", "layers.0/input_norm")
        for i in range(s.layers):
            p = f"model.layers.{i}"
            attn = self.attention(i, normed, seqlens, total)
            attn = self.rms(attn, f"{p}.post_attention_layernorm.weight", f"layers.{i}/post_attn")
            normed, residual = self.skip_rms(
                residual, attn, f"{p}.pre_feedforward_layernorm.weight", f"layers.{i}/pre_ffw"
            )
            mlp = self.mlp(i, normed)
            mlp = self.rms(mlp, f"{p}.post_feedforward_layernorm.weight", f"layers.{i}/post_ffw")
            last = i == s.layers - 1
            norm = "model.norm.weight" if last else f"model.layers.{i + 1}.input_layernorm.weight"
            name = "final_norm" if last else f"layers.{i + 1}/input_norm"
            normed, residual = self.skip_rms(residual, mlp, norm, name)
        head = self.node(
            "Slice",
            [
                normed,
                self.const(np.array([-1], np.int64)),
                self.const(np.array([2**62], np.int64)),
                self.const(np.array([1], np.int64)),
            ],
            _LAST,
        )
        if s.tied:
            t = self.node("Transpose", [embed], "lm_head/transpose", perm=[1, 0])
            logits = self.node("MatMul", [head, t], "lm_head/MatMul")
        else:
            logits = self.linear(head, "lm_head.weight", s.vocab, s.hidden, "lm_head")
        if s.final_softcap:
            cap = self.const(np.array(s.final_softcap, np.float32))
            logits = self.node("Div", [logits, cap], "softcap/Div")
            logits = self.node("Tanh", [logits], "softcap/Tanh")
            logits = self.node("Mul", [logits, cap], "softcap/Mul")
        self.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
        return self.model()

    def mask_inputs(self) -> tuple[str, str]:
        """GroupQueryAttention's ``seqlens_k`` (valid length - 1) and total length, int32."""
        ones = self.const(np.array([1], np.int64))
        summed = self.node("ReduceSum", ["attention_mask", ones], "mask/ReduceSum", keepdims=0)
        minus = self.node("Sub", [summed, ones], "mask/Sub")
        seqlens = self.node("Cast", [minus], "mask/seqlens_k", to=TensorProto.INT32)
        shape = self.node("Shape", ["attention_mask"], "mask/Shape")
        length = self.node("Gather", [shape, self.const(np.array(1, np.int64))], "mask/Gather")
        total = self.node("Cast", [length], "mask/total", to=TensorProto.INT32)
        return seqlens, total

    def rotary(self, base: float, factor: float) -> tuple[str, str]:
        """cos/sin tables ``[context, head_dim / 2]`` for one rotary base (shared by layers)."""
        name = f"rotary_{base:g}_{factor:g}"
        if f"{name}_cos" not in self.buffers:
            d = self.s.head_dim
            inv_freq = 1.0 / (base ** (np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / d))
            positions = np.arange(self.s.context, dtype=np.float32) / np.float32(factor)
            freqs = np.outer(positions, inv_freq.astype(np.float32))
            self.buffers[f"{name}_cos"] = np.cos(freqs).astype(np.float32)
            self.buffers[f"{name}_sin"] = np.sin(freqs).astype(np.float32)
            for suffix in ("cos", "sin"):
                self.weight(f"{name}_{suffix}", (self.s.context, d // 2))
        return f"{name}_cos", f"{name}_sin"

    def attention(self, i: int, x: str, seqlens: str, total: str) -> str:
        s, p, n = self.s, f"model.layers.{i}.self_attn", f"layers.{i}/attn"
        q_size, kv_size = s.heads * s.head_dim, s.kv_heads * s.head_dim
        qkv = self.linear(x, f"{p}.qkv_proj.weight", q_size + 2 * kv_size, s.hidden, f"{n}/qkv")
        sizes = self.const(np.array([q_size, kv_size, kv_size], np.int64))
        self.node("Split", [qkv, sizes], f"{n}/split", 3, axis=-1)
        q, k, v = (f"{n}/split/out{j}" for j in range(3))
        if s.qk_norm:
            q = self.head_norm(q, f"{p}.q_norm.weight", q_size, f"{n}/q_norm")
            k = self.head_norm(k, f"{p}.k_norm.weight", kv_size, f"{n}/k_norm")
        cos, sin = self.rotary(s.rope_bases[i], 1.0 if s.windows[i] else s.rope_factor)
        window = s.windows[i]
        attended = self.node(
            "GroupQueryAttention",
            [
                q,
                k,
                v,
                f"past_key_values.{i}.key",
                f"past_key_values.{i}.value",
                seqlens,
                total,
                cos,
                sin,
            ],
            f"{n}/GroupQueryAttention",
            3,
            num_heads=s.heads,
            kv_num_heads=s.kv_heads,
            scale=s.scale,
            softcap=s.softcap,
            # Both count the query's own position: the parity test pins this (W - 1
            # differs from torch from position W on).
            local_window_size=window or -1,
            do_rotary=1,
            rotary_interleaved=0,
        )
        # Rename the cache outputs to the names the runtime binds.
        self.nodes[-1].output[1] = f"present.{i}.key"
        self.nodes[-1].output[2] = f"present.{i}.value"
        return self.linear(attended, f"{p}.o_proj.weight", s.hidden, q_size, f"{n}/o_proj")

    def head_norm(self, x: str, weight: str, size: int, name: str) -> str:
        """Gemma 3's per-head RMS norm of queries/keys, before rotary."""
        d = self.s.head_dim
        per_head = self.node(
            "Reshape", [x, self.const(np.array([0, -1, d], np.int64))], f"{name}/Reshape_in"
        )
        w = self.weight(weight, (d,))
        normed = self.node(
            "SimplifiedLayerNormalization", [per_head, w], name, axis=-1, epsilon=self.s.eps
        )
        return self.node(
            "Reshape",
            [normed, self.const(np.array([0, -1, size], np.int64))],
            f"{name}/Reshape_out",
        )

    def mlp(self, i: int, x: str) -> str:
        s, p, n = self.s, f"model.layers.{i}.mlp", f"layers.{i}/mlp"
        gate = self.linear(x, f"{p}.gate_proj.weight", s.intermediate, s.hidden, f"{n}/gate")
        up = self.linear(x, f"{p}.up_proj.weight", s.intermediate, s.hidden, f"{n}/up")
        act = self.node("Gelu", [gate], f"{n}/act", approximate="tanh")
        h = self.node("Mul", [act, up], f"{n}/Mul")
        return self.linear(h, f"{p}.down_proj.weight", s.hidden, s.intermediate, f"{n}/down")

    def model(self) -> onnx.ModelProto:
        s = self.s
        f32, i64 = TensorProto.FLOAT, TensorProto.INT64
        kv: list[str | int | None] = ["batch_size", s.kv_heads, "past_sequence_length", s.head_dim]
        present: list[str | int | None] = [
            "batch_size",
            s.kv_heads,
            "total_sequence_length",
            s.head_dim,
        ]
        inputs = [
            helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info(
                "attention_mask", i64, ["batch_size", "total_sequence_length"]
            ),
        ]
        outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", 1, s.vocab])]
        for i in range(s.layers):
            for kind in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", f32, kv))
                outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", f32, present))
        graph = helper.make_graph(
            self.nodes,
            "edge_agent_fused_decoder",
            inputs + self.weights,
            outputs,
            initializer=self.constants,
        )
        opsets = [helper.make_opsetid("", _OPSET), helper.make_opsetid(_MS, 1)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="edge-agent")
        model.ir_version = 10
        return model


# SimplifiedLayerNormalization is registered in the ONNX domain by onnxruntime.
_CONTRIB = {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"}


def all_positions(model: onnx.ModelProto) -> bool:
    """Make a fused graph emit logits for every position (for scoring and parity).

    Returns False if ``model`` has no last-position slice (e.g. an optimum graph).
    """
    node = next((n for n in model.graph.node if n.name == _LAST), None)
    if node is None:
        return False
    for other in model.graph.node:
        for j, name in enumerate(other.input):
            if name == node.output[0]:
                other.input[j] = node.input[0]
    model.graph.node.remove(node)
    used = {name for n in model.graph.node for name in n.input}
    unused = [t for t in model.graph.initializer if t.name not in used]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    logits = next(o for o in model.graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].ClearField("dim_value")
    logits.type.tensor_type.shape.dim[1].dim_param = "sequence_length"
    return True
