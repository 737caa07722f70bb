"""Words to token positions: where a word of a prompt sits in the text encoder's input (torch-free: the tokenizer
does the work)."""

from __future__ import annotations

from ..errors import BadInput


def prompt_tokens(tokenizer, prompt: str) -> list[str]:
    """The prompt's tokens as the text encoder sees them, BOS first (readable: ``</w>`` stripped)."""
    ids = tokenizer(prompt, truncation=False, add_special_tokens=True)["input_ids"]
    return [t.replace("</w>", "") for t in tokenizer.convert_ids_to_tokens(ids)]


def word_token_indices(tokenizer, prompt: str, word: str, occurrence: int | None = 0) -> list[int]:
    """Positions of ``word``'s sub-tokens in the encoded ``prompt`` (position 0 is the BOS token of a tokenizer
    that writes one, CLIP's; T5's writes none), so these index the text encoder's output directly. ``occurrence``
    picks which occurrence when the word appears several times (0: the first; ``None``: all of them). ``word`` may
    be several words ("fire hydrant")."""
    if not isinstance(word, str) or not word.strip():
        raise BadInput("the word to record is empty", "give a word of the prompt, e.g. 'red'")
    ids = tokenizer(prompt, truncation=False, add_special_tokens=True)["input_ids"]
    sub = tokenizer(word.strip(), add_special_tokens=False)["input_ids"]
    first = 1 if ids and getattr(tokenizer, "bos_token_id", None) is not None and ids[0] == tokenizer.bos_token_id \
        else 0
    starts = [i for i in range(first, len(ids) - len(sub) + 1) if ids[i:i + len(sub)] == sub]
    if not starts:
        shown = ", ".join(prompt_tokens(tokenizer, prompt)[1:-1])
        raise BadInput(f"the word {word!r} is not among the tokens of the prompt {prompt!r} ({shown})",
                       "give a word that occurs in the prompt, spelled as one of those tokens")
    limit = getattr(tokenizer, "model_max_length", 77)
    chosen = starts if occurrence is None else [starts[min(occurrence, len(starts) - 1)]]
    if occurrence is not None and occurrence >= len(starts):
        raise BadInput(f"the word {word!r} occurs {len(starts)} time(s) in {prompt!r}, not {occurrence + 1}",
                       f"use an occurrence below {len(starts)}")
    positions = [s + j for s in chosen for j in range(len(sub))]
    if max(positions) >= limit - 1:
        raise BadInput(f"the word {word!r} lies beyond the text encoder's {limit} tokens in {prompt!r}",
                       "shorten the prompt")
    return positions
