"""``quantize --size``: one small real search on the default model (8 groups, Q4_0 / Q8_0 / F16,
one 128-token calibration window) shared by every test; the full search runs in bench/."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server.cli.main import app
from server.settings import ModelConfig, load_settings
from tests.conftest import ClientFactory
from tests.toolkit.test_serve_quantized import answer
from toolkit import mix_plan, sensitivity
from toolkit.gguf_inspect import inspect_model
from toolkit.gguf_splice import read_layout
from toolkit.hf_prepare import CALIBRATION_TEXT
from toolkit.mix_types import BudgetError, parse_size
from toolkit.size_quant import Budget, MixResult, SearchConfig, output_header_bytes, plan_groups, search

MiB = 1 << 20
CALIB = sensitivity.Calibration(CALIBRATION_TEXT.read_text(), n_ctx=128, windows=1, workers=2)


@dataclass(frozen=True)
class Searched:
    cfg: SearchConfig
    result: MixResult
    scores: sensitivity.Scores


@pytest.fixture(scope="module")
def searched(f16_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Searched:
    work = tmp_path_factory.mktemp("sizequant")
    cfg = SearchConfig(
        source=f16_gguf,
        dst=work / "smol.mix-100MiB.gguf",
        budget=Budget(file_bytes=100 * MiB),
        work_dir=work,
        calibration=CALIB,
        types=("Q4_0", "Q8_0"),
        bands=1,
    )
    result = search(cfg)
    folder = sensitivity.run_dir(work, f16_gguf, None, CALIB)
    return Searched(cfg, result, sensitivity.ScoreCache(folder / "scores.json").scores())


def test_the_mix_fits_the_budget_to_the_byte(searched: Searched) -> None:
    result = searched.result
    assert result.evaluations == 16  # 8 groups (7 roles + token_embd) x 2 types; F16 needs none
    assert result.file_bytes <= 100 * MiB
    source = read_layout(searched.cfg.source)
    overhead = output_header_bytes(source) + sum(
        t.nbytes + (-t.nbytes % 32) for n, t in source.tensors.items() if len(t.shape) == 1
    )
    assert result.file_bytes == overhead + mix_plan.mix_bytes(result.groups, result.mix)
    assert 100 * MiB - result.file_bytes < 6 * MiB  # the budget is used, not just respected
    report = inspect_model(result.path)
    assert {t: n for t, n in report.type_mix.items() if t != "F32"} == result.type_counts()
    assert len(set(result.mix.values())) > 1  # a real trade-off: not one type everywhere


def test_a_bits_per_weight_budget_is_respected(searched: Searched, tmp_path: Path) -> None:
    cfg = replace(searched.cfg, dst=tmp_path / "smol.mix-6bpw.gguf", budget=Budget(bits_per_weight=6.0))
    result = search(cfg)
    assert result.evaluations == 0  # every score came from the cache
    assert 5.5 < result.bits_per_weight <= 6.0
    assert abs(inspect_model(result.path).bits_per_weight - result.bits_per_weight) < 1e-9


def test_tiny_and_huge_budgets_give_the_cheapest_and_the_richest_mix(searched: Searched, tmp_path: Path) -> None:
    groups, scores = searched.result.groups, searched.scores
    low = mix_plan.cheapest(groups)
    cheap = mix_plan.choose(groups, scores, low)
    assert all(g.costs[cheap[g.name]] == min(g.costs.values()) for g in groups)
    rich = mix_plan.choose(groups, scores, 10**12)
    assert all(rich[g.name] == "F16" for g in groups)
    # a file budget of exactly the cheapest mix is met exactly
    source = read_layout(searched.cfg.source)
    _, _, overhead = plan_groups(searched.cfg, source)
    exact = low + overhead
    result = search(replace(searched.cfg, dst=tmp_path / "cheapest.gguf", budget=Budget(file_bytes=exact)))
    assert result.file_bytes == exact
    assert set(result.mix.values()) == {"Q4_0"}


def test_a_budget_below_the_smallest_mix_is_refused_before_any_work(f16_gguf: Path, tmp_path: Path) -> None:
    cfg = SearchConfig(f16_gguf, tmp_path / "x.gguf", Budget(file_bytes=parse_size("60MiB")), tmp_path, CALIB)
    with pytest.raises(BudgetError, match=r"below the smallest mix .* 6\d\.\d\d MiB"):
        search(cfg)
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(app, ["quantize", str(f16_gguf), "--size", "10MiB", "--out", str(tmp_path / "y")])
    assert result.exit_code == 1
    assert "below the smallest mix" in result.output


def test_sensitivity_scores_are_deterministic_for_a_fixed_text(searched: Searched, tmp_path: Path) -> None:
    source = read_layout(searched.cfg.source)
    groups = [g for g in searched.result.groups if g.name in ("token_embd", "ffn_down@0-29")]
    again, runs = sensitivity.measure(
        source, [replace(g, costs={k: c for k, c in g.costs.items() if k in ("F16", "Q4_0")}) for g in groups],
        CALIB, tmp_path,
    )  # fmt: skip
    assert runs == 2
    for g in groups:
        assert again[g.name]["Q4_0"] == searched.scores[g.name]["Q4_0"]
        assert 0 < searched.scores[g.name]["Q8_0"] < searched.scores[g.name]["Q4_0"]


def test_parse_size() -> None:
    assert parse_size("100MiB") == 100 * MiB
    assert parse_size("95 MB") == 95_000_000
    assert parse_size("1.5GiB") == 3 * 2**29
    with pytest.raises(BudgetError):
        parse_size("big")


async def test_the_chosen_mix_loads_and_serves(searched: Searched, app_client: ClientFactory) -> None:
    model = ModelConfig(id="smol-mix", path=searched.result.path, options={"n_ctx": 512, "parallel": 1})
    async with app_client(load_settings(None, models=(model,))) as client:
        card = (await client.get(f"/v1/models/{model.id}")).json()
        result = searched.result
        weight = {t: sum(g.costs[t] for g in result.groups if result.mix[g.name] == t) for t in result.mix.values()}
        main = max(weight, key=lambda t: weight[t])  # the label: the type holding most bytes
        assert (card["quantization"], card["backend"]) == (main, "llama_cpp")
        await answer(client, model.id)
