"""CLIP's byte-pair tokenizer (open_clip's ``SimpleTokenizer``, whose vocabulary ships inside the
package, so it works offline), called the way :class:`~vgtool.data.tokenize.PhraseTokenizer` calls
a transformers tokenizer.

Each phrase becomes ``<start_of_text> tokens... <end_of_text>``; a phrase truncated to
``max_length`` keeps its end-of-text token in the last place, as open_clip's own tokenizer does. The
CLIP text embedding is read from that end-of-text token, the last real token of each row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vgtool.errors import ModelSourceError
from vgtool.torchvision_compat import ensure_torchvision_importable

PAD_ID = 0  # open_clip pads with 0; padding is masked out (and sits after end-of-text anyway)


class ClipTokenizer:
    """Phrases -> CLIP token ids, with a transformers-like call signature.

    Attributes:
        context_length: the most tokens the text tower takes (positional embeddings).
    """

    def __init__(self, context_length: int = 77):
        ensure_torchvision_importable()  # open_clip imports torchvision
        try:
            from open_clip.tokenizer import SimpleTokenizer
        except ImportError as err:
            raise ModelSourceError(
                "CLIP's tokenizer needs open_clip: pip install 'vgtool[clip]' (the open-clip-torch package)"
            ) from err

        self.bpe = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.start_id = int(self.bpe.sot_token_id)
        self.end_id = int(self.bpe.eot_token_id)

    def _ids(self, text: str, add_special_tokens: bool, limit: int | None) -> list[int]:
        ids = [int(i) for i in self.bpe.encode(text)]
        if add_special_tokens:
            ids = [self.start_id, *ids, self.end_id]
        if limit is not None and len(ids) > limit:
            ids = ids[:limit]
            if add_special_tokens:
                ids[-1] = self.end_id
        return ids

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        padding: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ) -> dict:
        """Tokenise one phrase (``input_ids`` a list) or several (lists of lists, or with
        ``return_tensors="pt"`` two ``[P, T]`` tensors, T the longest row)."""
        limit = min(max_length or self.context_length, self.context_length) if truncation else None
        if isinstance(texts, str):
            ids = self._ids(texts, add_special_tokens, limit)
            return {"input_ids": ids, "attention_mask": [1] * len(ids)}
        rows = [self._ids(text, add_special_tokens, limit) for text in texts]
        if return_tensors is None and not padding:
            return {"input_ids": rows, "attention_mask": [[1] * len(row) for row in rows]}
        if return_tensors not in (None, "pt"):
            raise ValueError(f"ClipTokenizer returns lists or torch tensors, not {return_tensors!r}")
        longest = max((len(row) for row in rows), default=0)
        input_ids = torch.full((len(rows), longest), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        if return_tensors is None:
            return {"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist()}
        return {"input_ids": input_ids, "attention_mask": attention_mask}
