"""Tiny random-weight models of real architectures, each with a tokenizer trained here (no download) that has the
special tokens, BOS/EOS/PAD settings and chat template of the real model family:

- llama:   Llama 3 Instruct: BOS <|begin_of_text|> added by the tokenizer AND written by the template, EOS <|eot_id|>
           (the end of an assistant turn), no PAD token.
- qwen2:   Qwen2.5 Instruct: ChatML with a default system turn, no BOS, EOS <|im_end|>, PAD <|endoftext|>.
- mistral: Mistral Instruct: Metaspace (SentencePiece-style) pieces, BOS <s> added by the tokenizer and by the
           template, EOS </s>, [INST] ... [/INST] turns, no PAD.
- gpt_neox: Pythia / OpenAssistant: <|endoftext|> as BOS and EOS (never added by the tokenizer), <|prompter|> and
           <|assistant|> turns, no PAD.

Sizes: hidden 16, 2 layers, 2 heads, a vocabulary of ~300 to 340: each forward costs microseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

WORDS = "the cat sat on a mat dog ran to park sun is hot cold blue red sky sea big small tree bird sings"
CORPUS = [
    "the cat sat on the mat.",
    "a dog ran to the park.",
    "the sun is hot and the sea is cold.",
    "the sky is blue, the bird sings in a big tree.",
    "what is the color of the sky? the sky is blue.",
    "where did the dog run? the dog ran to the park.",
    "hello! how are you? i am fine, thank you.",
    "name a small animal. a cat is a small animal.",
] * 4

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MISTRAL_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)
OASST_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}{{- '<|assistant|>' }}{%- else %}{{- '<|prompter|>' }}{%- endif %}"
    "{{- message['content'] + eos_token }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}"
)


@dataclass(frozen=True)
class Architecture:
    name: str
    causal_lm: str  # the class name saved in config.architectures
    classifier: str  # its reward-model class
    special_tokens: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    bos_added: bool  # the tokenizer adds BOS to plain text itself
    template: str
    metaspace: bool = False  # SentencePiece-style pieces (Mistral) instead of byte-level BPE


ARCHITECTURES = {
    "llama": Architecture(
        "llama",
        "LlamaForCausalLM",
        "LlamaForSequenceClassification",
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        bos_added=True,
        template=LLAMA3_TEMPLATE,
    ),
    "qwen2": Architecture(
        "qwen2",
        "Qwen2ForCausalLM",
        "Qwen2ForSequenceClassification",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        bos_added=False,
        template=CHATML_TEMPLATE,
    ),
    "mistral": Architecture(
        "mistral",
        "MistralForCausalLM",
        "MistralForSequenceClassification",
        ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
        bos="<s>",
        eos="</s>",
        pad=None,
        bos_added=True,
        template=MISTRAL_TEMPLATE,
        metaspace=True,
    ),
    "gpt_neox": Architecture(
        "gpt_neox",
        "GPTNeoXForCausalLM",
        "GPTNeoXForSequenceClassification",
        ("<|endoftext|>", "<|prompter|>", "<|assistant|>"),
        bos="<|endoftext|>",
        eos="<|endoftext|>",
        pad=None,
        bos_added=False,
        template=OASST_TEMPLATE,
    ),
}


def build_tokenizer(arch: Architecture):
    """A PreTrainedTokenizerFast trained on CORPUS with the family's special tokens, BOS rule and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if arch.metaspace:
        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted(set("".join(CORPUS)) | set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ?!.,'\n") | {"▁"})
        vocab_size = 200
    else:
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        vocab_size = 320
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(arch.special_tokens),
            initial_alphabet=alphabet,
            show_progress=False,
        ),
    )
    if arch.bos_added:  # as the real tokenizer.json: a post-processor puts BOS before every encoded text
        bos_id = bpe.token_to_id(arch.bos)
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{arch.bos} $A", pair=f"{arch.bos} $A {arch.bos} $B", special_tokens=[(arch.bos, bos_id)]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=arch.bos,
        eos_token=arch.eos,
        pad_token=arch.pad,
        unk_token="<unk>" if arch.metaspace else None,
        additional_special_tokens=[t for t in arch.special_tokens if t not in (arch.bos, arch.eos, arch.pad, "<unk>")],
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = arch.template
    return tok


def model_config(arch: Architecture, tok):
    """The family's transformers config, tiny: hidden 16, 2 layers, 2 heads (1 KV head where the family shares)."""
    from transformers import GPTNeoXConfig, LlamaConfig, MistralConfig, Qwen2Config

    ids = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    sizes = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    if arch.name == "llama":
        return LlamaConfig(**sizes, num_key_value_heads=1, max_position_embeddings=256, **ids)
    if arch.name == "qwen2":
        return Qwen2Config(**sizes, num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True, **ids)
    if arch.name == "mistral":
        return MistralConfig(**sizes, num_key_value_heads=1, max_position_embeddings=256, sliding_window=None, **ids)
    return GPTNeoXConfig(**sizes, max_position_embeddings=256, rotary_pct=0.5, **ids)


def build_model(arch: Architecture, out: Path, *, seed: int = 0) -> Path:
    """A save_pretrained directory of the family's causal LM with random weights, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(arch, tok))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)


def build_llama3_first_release(out: Path) -> Path:
    """Llama 3 Instruct as first published: the tokenizer's EOS is <|end_of_text|> while chat turns end in <|eot_id|>,
    and only generation_config.json says that <|eot_id|> stops generation too."""
    from transformers import GenerationConfig

    arch = replace(ARCHITECTURES["llama"], eos="<|end_of_text|>")
    build_model(arch, out)
    tok = build_tokenizer(arch)
    stops = [tok.convert_tokens_to_ids("<|end_of_text|>"), tok.convert_tokens_to_ids("<|eot_id|>")]
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=stops).save_pretrained(out)
    return Path(out)


# ---- conversational data ---------------------------------------------------------------------------------------------

QUESTIONS = [
    "what is the color of the sky?",
    "where did the dog run?",
    "name a small animal.",
    "is the sun hot?",
    "where did the cat sit?",
    "what does the bird do?",
]
GOOD = ["the sky is blue.", "the dog ran to the park.", "a cat.", "the sun is hot.", "on the mat.", "it sings."]
BAD = ["red.", "sea.", "tree tree.", "cold.", "the the.", "big."]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_conversations(root: Path) -> dict[str, Path]:
    """sft.jsonl ({messages}), prefs.jsonl (trl-conversational) and prompts.jsonl ({prompt_id, messages})."""
    root.mkdir(parents=True, exist_ok=True)
    sft = [{"messages": user(q) + assistant(a)} for q, a in zip(QUESTIONS, GOOD)]
    prefs = [
        {"prompt": user(q), "chosen": assistant(g), "rejected": assistant(b)} for q, g, b in zip(QUESTIONS, GOOD, BAD)
    ]
    prompts = [{"prompt_id": f"p{i}", "messages": user(q)} for i, q in enumerate(QUESTIONS[:4])]
    return {
        "sft": write_jsonl(root / "sft.jsonl", sft),
        "prefs": write_jsonl(root / "prefs.jsonl", prefs),
        "prompts": write_jsonl(root / "prompts.jsonl", prompts),
    }
