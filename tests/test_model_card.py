from huggingface_hub import ModelCard

from icmh_hub import build_adapters, save_adapters
from icmh_hub.hub.card import render_card, write_card


def test_card_carries_metadata_and_only_given_numbers(tmp_path):
    path = save_adapters(build_adapters("mbt2018-mean", 3), tmp_path / "a.safetensors", task="cls", lmbda=3.5,
                         training={"recipe": "reference", "steps": 10})
    card = render_card(path)
    assert card.data.library_name == "icmh-hub" and "mbt2018-mean" in card.data.tags
    assert "Not evaluated yet" in card.text and "287,232" in card.text and '"steps": 10' in card.text

    results = [{"dataset": "proxy-val", "images": 64, "metric": "top1", "value": 0.75, "date": "2026-11-25"}]
    out = write_card(path, tmp_path / "README.md", results=results)
    loaded = ModelCard.load(out)
    assert loaded.data.eval_results[0].metric_value == 0.75
    assert "| proxy-val | 64 | top1 | 0.75 | 2026-11-25 |" in loaded.text
