"""Tests for batched generation with a tiny trained SASRec: determinism, pools, lengths, sampling."""

from __future__ import annotations

import pytest

from rsir_engine.architectures import SASRec
from rsir_engine.data import SequenceDataset
from rsir_engine.errors import ConfigError, EmptyInputError
from rsir_engine.fidelity import StopReason, check_sequences
from rsir_engine.generation import GeneratedSequence, GenerationConfig, generate


@pytest.fixture(scope="module")
def seeds(cyclic_dataset: SequenceDataset) -> list[list[int]]:
    """Return the first 8 real users' training sequences."""
    return cyclic_dataset.split().train[:8]


def as_tuples(sequences: list[GeneratedSequence]) -> list[tuple]:
    """Reduce generated sequences to comparable tuples."""
    return [(seq.seed_index, tuple(seq.items), seq.stop_reason, tuple(seq.steps)) for seq in sequences]


def test_generate_greedy_repeatable(trained_model: SASRec, seeds: list[list[int]]) -> None:
    config = GenerationConfig(m=3, seed=7)

    first = generate(trained_model, seeds, config)
    second = generate(trained_model, seeds, config)

    assert as_tuples(first) == as_tuples(second)


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.7}, {"top_k": 3, "temperature": 1.0}])
@pytest.mark.parametrize("batch_size", [2, 5])
def test_generate_batch_size_independent(
    trained_model: SASRec, seeds: list[list[int]], settings: dict, batch_size: int
) -> None:
    whole = generate(trained_model, seeds, GenerationConfig(m=2, seed=7, **settings))
    batched = generate(trained_model, seeds, GenerationConfig(m=2, seed=7, batch_size=batch_size, **settings))

    assert as_tuples(batched) == as_tuples(whole)


def test_generate_m_per_seed_in_order(trained_model: SASRec, seeds: list[list[int]]) -> None:
    generated = generate(trained_model, seeds, GenerationConfig(m=3))

    assert [seq.seed_index for seq in generated] == [index for index in range(len(seeds)) for _ in range(3)]


def test_generate_starts_with_earliest_item(trained_model: SASRec, seeds: list[list[int]]) -> None:
    generated = generate(trained_model, seeds, GenerationConfig(m=2))

    assert all(seq.items[0] == seeds[seq.seed_index][0] for seq in generated)


def test_generate_p_one_picks_own_items(trained_model: SASRec, seeds: list[list[int]]) -> None:
    generated = generate(trained_model, seeds, GenerationConfig(m=2, p=1.0, tau=30))

    for seq in generated:
        outside = set(seq.items) - set(seeds[seq.seed_index])
        assert outside == set(), f"sequence {seq.items} has items {outside} outside its seed user's history"


def test_generate_p_zero_picks_catalogue_items(trained_model: SASRec, cyclic_dataset: SequenceDataset) -> None:
    # Users whose own items skip every other step of the cycle; the model predicts i -> i + 1.
    histories = [[1, 3, 5, 7], [11, 13, 15, 17]]

    generated = generate(trained_model, histories, GenerationConfig(m=1, p=0.0, tau=cyclic_dataset.num_items))

    outside = [set(seq.items) - set(histories[seq.seed_index]) for seq in generated]
    assert all(outside), f"with p = 0 every sequence should leave its user's items: {[s.items for s in generated]}"


def test_generate_no_repeats_within_sequence(trained_model: SASRec, seeds: list[list[int]]) -> None:
    generated = generate(trained_model, seeds, GenerationConfig(m=3, p=0.3, tau=30, temperature=2.0))

    for seq in generated:
        assert len(set(seq.items)) == len(seq.items), f"repeated item in {seq.items}"


@pytest.mark.parametrize("max_len", [2, 4, None])
def test_generate_respects_max_len(trained_model: SASRec, seeds: list[list[int]], max_len: int | None) -> None:
    config = GenerationConfig(m=2, p=0.0, tau=30, max_len=max_len, min_len=1, fidelity=False)
    limit = max_len or trained_model.config.max_len

    generated = generate(trained_model, seeds, config)

    assert max(len(seq.items) for seq in generated) == limit


def test_generate_max_len_above_model_clamped(trained_model: SASRec, seeds: list[list[int]]) -> None:
    config = GenerationConfig(m=1, p=0.0, max_len=trained_model.config.max_len + 5, fidelity=False)

    generated = generate(trained_model, seeds, config)

    assert max(len(seq.items) for seq in generated) == trained_model.config.max_len


@pytest.mark.parametrize(
    "settings", [{"temperature": 0.5}, {"temperature": 5.0}, {"top_k": 2}, {"top_k": 1, "temperature": 2.0}]
)
def test_generate_sampling_stays_in_pool(trained_model: SASRec, seeds: list[list[int]], settings: dict) -> None:
    generated = generate(trained_model, seeds, GenerationConfig(m=3, p=1.0, tau=30, seed=3, **settings))

    for seq in generated:
        assert set(seq.items) <= set(seeds[seq.seed_index]), f"{seq.items} left the user's items"
        assert len(set(seq.items)) == len(seq.items), f"repeated item in {seq.items}"


def test_generate_top_k_one_equals_greedy(trained_model: SASRec, seeds: list[list[int]]) -> None:
    greedy = generate(trained_model, seeds, GenerationConfig(m=2, p=0.5, seed=4))
    top_one = generate(trained_model, seeds, GenerationConfig(m=2, p=0.5, seed=4, top_k=1))

    assert [seq.items for seq in top_one] == [seq.items for seq in greedy]


@pytest.mark.parametrize("fidelity", [True, False])
def test_generate_records_match_fidelity_check(trained_model: SASRec, seeds: list[list[int]], fidelity: bool) -> None:
    # check_sequences re-encodes every prefix from scratch, so it counts each step's rank independently.
    generated = generate(trained_model, seeds, GenerationConfig(m=2, p=0.5, tau=5, seed=3, fidelity=fidelity))
    reports = check_sequences(trained_model, [seeds[seq.seed_index] for seq in generated], [seq.items for seq in generated], tau=5)

    for seq, report in zip(generated, reports):
        appended = [step for step in seq.steps if step.item is not None]
        assert appended == report.steps, f"sequence {seq.items} of seed {seq.seed_index}"
    assert any(len(seq.items) > 3 for seq in generated)


def test_generate_sampling_catalogue_valid_ids(trained_model: SASRec, seeds: list[list[int]]) -> None:
    num_items = trained_model.config.num_items

    generated = generate(trained_model, seeds, GenerationConfig(m=3, p=0.0, tau=30, temperature=3.0, seed=5))

    assert all(1 <= item <= num_items for seq in generated for item in seq.items)


def test_generate_without_fidelity_reaches_max_len(trained_model: SASRec, seeds: list[list[int]]) -> None:
    generated = generate(trained_model, seeds, GenerationConfig(m=2, tau=1, p=0.0, fidelity=False))

    assert {seq.stop_reason for seq in generated} == {StopReason.MAX_LEN}
    assert {len(seq.items) for seq in generated} == {trained_model.config.max_len}


def test_generate_without_fidelity_stops_on_empty_pool(trained_model: SASRec) -> None:
    generated = generate(trained_model, [[4, 9, 2]], GenerationConfig(m=1, tau=1, p=1.0, fidelity=False))

    assert generated[0].stop_reason is StopReason.POOL_EMPTY
    assert sorted(generated[0].items) == [2, 4, 9]


def test_generate_tau_one_stops_early(trained_model: SASRec) -> None:
    # None of this user's other items follows item 1 in the cycle the model learned, so none ranks first.
    generated = generate(trained_model, [[1, 20, 25, 28]], GenerationConfig(m=1, tau=1, p=1.0))

    assert generated[0].stop_reason is StopReason.FIDELITY
    assert generated[0].steps[-1].passed is False


def test_generate_should_stop_between_batches(trained_model: SASRec, seeds: list[list[int]]) -> None:
    generated = generate(trained_model, seeds, GenerationConfig(m=1, batch_size=4), should_stop=lambda: True)

    assert len(generated) == 4


def test_generate_no_seed_users(trained_model: SASRec) -> None:
    with pytest.raises(EmptyInputError):
        generate(trained_model, [], GenerationConfig())


def test_generate_empty_seed_history(trained_model: SASRec) -> None:
    with pytest.raises(EmptyInputError, match="position 1"):
        generate(trained_model, [[1, 2], []], GenerationConfig())


@pytest.mark.parametrize(
    "settings",
    [
        {"m": 0},
        {"tau": 0},
        {"p": -0.1},
        {"p": 1.5},
        {"max_len": 1},
        {"min_len": 0},
        {"min_len": 5, "max_len": 4},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"top_k": 0},
        {"batch_size": 0},
    ],
)
def test_generation_config_rejects_bad_values(settings: dict) -> None:
    with pytest.raises(ConfigError):
        GenerationConfig(**settings)


def test_generation_config_defaults() -> None:
    config = GenerationConfig()

    assert config.m == 5
    assert config.tau == 20
    assert config.p == 0.5
    assert config.min_len == 3
    assert config.sampling is False
