"""A character-level tokenizer built offline, for tiny models and the built-in tasks."""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"

# Roles are rendered as plain text so a character model can learn the turn structure.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_char_tokenizer(alphabet: str = string.printable) -> PreTrainedTokenizerFast:
    """One token per character of `alphabet`, plus pad/bos/eos/unk; no merges, no download."""
    specials = [PAD, BOS, EOS, UNK]
    chars = list(dict.fromkeys(alphabet))  # de-duplicate, keep order
    vocab = {token: index for index, token in enumerate(specials + chars)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    # Split every character into its own piece, so each maps straight to its vocab id.
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
