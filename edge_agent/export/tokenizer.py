"""A small deterministic byte-level BPE tokenizer with Gemma's special tokens."""

from __future__ import annotations

import json
from pathlib import Path

# tokenizers ships no py.typed; see the report about a mypy override.
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    trainers,
)

# Order fixes the ids: Gemma puts <pad>, <eos>, <bos> at 0, 1, 2 and the runtime
# and manifest rely on those ids.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")

# Gemma's chat template, for Hugging Face tooling only; the runtime reads the manifest.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Embedded so the build needs no download; changing it changes the recipe hash.
CORPUS = """\
Sensor readings from the last ten minutes: the living room temperature is 21.5 C.
The kitchen humidity rose from 45 percent to 62 percent while the kettle was on.
The bedroom is cool and dry. The hallway motion sensor saw movement twice.
Summarise them for the household in two short sentences. Use only the numbers above.
The outdoor temperature fell to 3 degrees overnight and the wind picked up.
Power use peaked at 2400 watts when the oven and the washing machine ran together.
The front door opened at 08:15 and closed at 08:16. The garage door stayed closed.
Carbon dioxide in the office reached 1200 ppm; open a window to let fresh air in.
The battery of the bathroom sensor is low at 12 percent and should be replaced soon.
Illuminance in the garden dropped to 5 lux after sunset. The lights turned on.
Water leak sensor under the sink: dry. Smoke detector: clear. Air quality: good.
The heating is on in the nursery; the thermostat target is 20 degrees.
Average, minimum, maximum and mean values were stable; no anomalies were found.
A sudden spike in temperature was detected in the server cupboard at 14:02.
Pressure is 1013 hPa and steady. Rain is expected later this afternoon.
The fridge door was left open for three minutes and the temperature inside rose.
Everything looks normal at home. Nobody is in the house and the alarm is armed.
Energy today: 8.4 kWh, lower than yesterday. Solar panels produced 3.1 kWh.
now min max mean readings trend rising falling steady high low warm cold humid
device metric unit value window minutes hours seconds degrees percent watts lux
user model turn assistant system question answer summary
"""


def build_tokenizer(vocab_size: int) -> Tokenizer:
    """Train the tokenizer on the embedded corpus; same inputs give the same vocabulary."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    # Byte-level: any UTF-8 text encodes without <unk>, like a real model's byte fallback.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    return tokenizer


def tokenizer_config(context_length: int) -> dict[str, object]:
    """The ``tokenizer_config.json`` Hugging Face tooling reads next to ``tokenizer.json``."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": context_length,
        "chat_template": CHAT_TEMPLATE,
    }


def write_tokenizer(tokenizer: Tokenizer, folder: Path, context_length: int) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``folder``."""
    tokenizer.save(str(folder / "tokenizer.json"))
    config = json.dumps(tokenizer_config(context_length), indent=2, sort_keys=True)
    (folder / "tokenizer_config.json").write_text(config + "\n", encoding="utf-8")
