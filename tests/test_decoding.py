"""The one token loop (llava.model.decoding.decode_tokens) that generate and the benchmark share."""

from __future__ import annotations

import torch

from llava.model.decoding import decode_tokens

EOS, PAD, VOCAB = 2, 0, 6


def one_hot_logits(ids: list[int]) -> torch.Tensor:
    """Logits [B, V] whose argmax is `ids` (EOS always second best, so masking it changes nothing else)."""
    logits = torch.zeros(len(ids), VOCAB)
    logits[:, EOS] = 1.0
    logits[torch.arange(len(ids)), torch.tensor(ids)] = 2.0
    return logits


def test_rows_pad_after_eos_and_the_loop_stops_once_every_row_has_ended():
    script = iter([one_hot_logits([EOS, 4]), one_hot_logits([5, EOS]), one_hot_logits([3, 3])])
    seen = []
    tokens, logits = decode_tokens(one_hot_logits([3, 4]), lambda token: next(script), max_new_tokens=10,
                                   eos_token_id=EOS, pad_token_id=PAD, on_token=lambda t: seen.append(t.tolist()))
    assert tokens.tolist() == [[3, EOS, PAD], [4, 4, EOS]]
    assert seen == [[3, 4], [EOS, 4], [PAD, EOS]]  # the callback sees every token, after its stop check
    assert logits.shape == (2, 3, VOCAB)


def test_eos_is_masked_before_min_new_tokens_and_the_loop_runs_to_max_new_tokens():
    calls = []

    def eos_first() -> torch.Tensor:
        logits = one_hot_logits([EOS])
        logits[:, 4] = 1.5  # the runner-up
        return logits

    def next_logits(token: torch.Tensor) -> torch.Tensor:
        calls.append(token.tolist())
        return eos_first()

    tokens, _ = decode_tokens(eos_first(), next_logits, max_new_tokens=3, min_new_tokens=2, eos_token_id=EOS,
                              pad_token_id=PAD)
    assert tokens.tolist() == [[4, 4, EOS]]  # EOS masked for the first two steps only
    assert len(calls) == 2  # no step is computed after the last token
