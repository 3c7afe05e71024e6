"""pipeline/core/promotion.py: the registry's policy, without a registry."""
from conftest import ROOT


def test_beats():
    from pipeline.core.promotion import beats

    nan = float("nan")
    assert beats(0.5, None) and beats(nan, None) and beats(0.1, nan)
    assert not beats(nan, 0.1) and not beats(nan, nan) and not beats(0.4, 0.5) and not beats(0.5, 0.5)


def test_a_long_model_card_is_cut_at_a_paragraph_to_fit_the_registry_column():
    from pipeline.core.promotion import fit_description

    card = (ROOT / "MODEL_CARD.md").read_text()
    assert len(card) > 5000                       # PostgreSQL refused it whole (VARCHAR(5000))
    cut = fit_description(card)
    assert len(cut) <= 5000 and cut.endswith("MODEL_CARD.md in the repository)*\n")
    assert card.startswith(cut[:cut.rfind("\n\n*(cut")])
    assert fit_description("short") == "short"
