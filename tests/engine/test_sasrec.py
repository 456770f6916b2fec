"""Tests for the SASRec architecture: padding, masks, lengths and the forward contract."""

from __future__ import annotations

import math

import pytest
import torch

from rsir_engine.architectures import SASRec, SASRecConfig, build_model
from rsir_engine.errors import ConfigError

NUM_ITEMS = 12


@pytest.fixture(scope="function")
def model(tiny_configs) -> SASRec:
    """Return an untrained tiny SASRec in eval mode with fixed weights."""
    torch.manual_seed(0)
    return SASRec(tiny_configs.model(NUM_ITEMS)).eval()


def test_sasrec_left_right_padding_same_state(model: SASRec) -> None:
    sequence = [3, 7, 1, 9]
    left = torch.tensor([[0, 0, 0, 0, *sequence]])
    right = torch.tensor([[*sequence, 0, 0, 0, 0]])

    with torch.inference_mode():
        state_left = model.hidden_states(left)[0, -1]
        state_right = model.hidden_states(right)[0, len(sequence) - 1]

    torch.testing.assert_close(state_left, state_right, rtol=1e-5, atol=1e-5)


def test_sasrec_score_last_pad_width_invariant(model: SASRec) -> None:
    sequence = [5, 2, 11]
    unpadded = torch.tensor([sequence])
    padded = torch.tensor([[0, 0, 0, 0, 0, *sequence]])

    with torch.inference_mode():
        scores_unpadded = model.score_last(unpadded)
        scores_padded = model.score_last(padded)

    torch.testing.assert_close(scores_unpadded, scores_padded, rtol=1e-5, atol=1e-5)


def test_sasrec_score_last_batch_mixed_lengths(model: SASRec) -> None:
    batch = torch.tensor([[0, 0, 0, 4, 6], [1, 2, 3, 4, 6]])

    with torch.inference_mode():
        together = model.score_last(batch)
        alone = model.score_last(torch.tensor([[4, 6]]))

    torch.testing.assert_close(together[0:1], alone, rtol=1e-5, atol=1e-5)


def test_sasrec_score_last_padding_column(model: SASRec) -> None:
    with torch.inference_mode():
        scores = model.score_last(torch.tensor([[1, 2]]))

    assert scores.shape == (1, NUM_ITEMS + 1)
    assert scores[0, 0].item() == float("-inf")
    assert torch.isfinite(scores[0, 1:]).all()


def test_sasrec_padding_row_stays_zero(model: SASRec) -> None:
    torch.manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    items = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 5, 6, 7, 8, 9]])
    targets = torch.tensor([[0, 0, 2, 3, 4, 5], [0, 6, 7, 8, 9, 10]])
    model.train()

    for _ in range(5):
        _, loss = model(items, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    assert torch.count_nonzero(model.item_embedding.weight[0]).item() == 0
    assert torch.count_nonzero(model.item_embedding.weight[1]).item() > 0


def test_sasrec_zero_embedding_item_still_attended(model: SASRec) -> None:
    with torch.no_grad():
        model.item_embedding.weight[5].zero_()
    with_item = torch.tensor([[0, 5, 7]])
    with_padding = torch.tensor([[0, 0, 7]])

    with torch.inference_mode():
        scores_item = model.score_last(with_item)
        scores_padding = model.score_last(with_padding)

    assert not torch.allclose(scores_item[:, 1:], scores_padding[:, 1:], atol=1e-4)


def test_sasrec_longer_than_max_len_rejected(model: SASRec) -> None:
    too_long = torch.arange(1, model.config.max_len + 2).unsqueeze(0)

    with pytest.raises(ConfigError, match="max_len"):
        model(too_long)


def test_sasrec_score_last_longer_than_max_len_rejected(model: SASRec) -> None:
    too_long = torch.arange(1, model.config.max_len + 2).unsqueeze(0)

    with pytest.raises(ConfigError, match="max_len"):
        model.score_last(too_long)


def test_sasrec_forward_returns_logits_and_loss(model: SASRec) -> None:
    items = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]], device="cpu")
    targets = torch.tensor([[0, 0, 2, 3], [4, 5, 6, 7]], device="cpu")

    logits, loss = model.to("cpu")(items, targets)

    # With targets, logits cover only the positions whose loss counts.
    assert logits.shape == (6, NUM_ITEMS + 1)
    assert logits.device.type == "cpu"
    assert loss is not None
    assert loss.dim() == 0
    assert math.isfinite(loss.item())


def test_sasrec_forward_without_targets_all_positions(model: SASRec) -> None:
    logits, loss = model(torch.tensor([[0, 1, 2, 3]]))

    assert logits.shape == (1, 4, NUM_ITEMS + 1)
    assert loss is None


def test_sasrec_forward_loss_mask_limits_loss(model: SASRec) -> None:
    items = torch.tensor([[1, 2, 3, 4]])
    targets = torch.tensor([[2, 3, 4, 5]])
    only_last = torch.tensor([[False, False, False, True]])

    with torch.no_grad():
        logits, masked_loss = model(items, targets, only_last)
        full_scores, _ = model(items)
    expected = torch.nn.functional.cross_entropy(full_scores[0, -1:, 1:], targets[0, -1:] - 1)

    assert logits.shape == (1, NUM_ITEMS + 1)
    torch.testing.assert_close(masked_loss, expected)


def test_sasrec_train_mode_runs_with_dropout() -> None:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=NUM_ITEMS, max_len=8, hidden_size=16, num_layers=1, num_heads=1, dropout=0.5))
    model.train()

    _, loss = model(torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 2, 3, 4]]))

    assert math.isfinite(loss.item())


@pytest.mark.parametrize(
    "changes",
    [
        {"num_items": 0},
        {"max_len": 1},
        {"hidden_size": 10, "num_heads": 3},
        {"dropout": 1.0},
    ],
)
def test_sasrec_config_rejects_bad_values(changes: dict) -> None:
    settings = {"num_items": NUM_ITEMS, **changes}

    with pytest.raises(ConfigError):
        SASRecConfig(**settings)


def test_build_model_from_dict() -> None:
    model = build_model("sasrec", {"num_items": NUM_ITEMS, "max_len": 8, "hidden_size": 16, "num_heads": 1})

    assert isinstance(model, SASRec)
    assert model.config.max_len == 8


def test_build_model_unknown_architecture() -> None:
    with pytest.raises(ConfigError, match="sasrec"):
        build_model("gru4rec", {"num_items": NUM_ITEMS})


def test_sasrec_decode_step_matches_score_last(model: SASRec) -> None:
    model.eval()
    prefixes = torch.tensor([[3, 7, 1, 9, 4, 2], [5, 6, 8, 2, 1, 3]])
    cache = None
    for position in range(prefixes.shape[1]):
        stepped, cache = model.decode_step(prefixes[:, position], position, cache)
        full = model.score_last(prefixes[:, : position + 1])

        assert torch.allclose(stepped[:, 1:], full[:, 1:], atol=1e-5)
        assert torch.isinf(stepped[:, 0]).all()


def test_sasrec_decode_step_beyond_max_len_rejected(model: SASRec) -> None:
    model.eval()

    with pytest.raises(ConfigError):
        model.decode_step(torch.tensor([1]), model.config.max_len, None)
