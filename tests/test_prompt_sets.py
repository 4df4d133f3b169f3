"""Prompt sets: each source shape, the shipped T2I-CompBench lists, weighted mixtures and their errors."""

import json
from collections import Counter
from pathlib import Path

import pytest

from gotr1.prompt_sets import COMPBENCH_TRAIN_LISTS, read_prompt_mixture, read_prompts

COMPBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "t2i-compbench"
ASSETS = Path(__file__).resolve().parents[1] / "gotr1" / "assets" / "t2i_compbench"


def _text(tmp_path, name, prompts):
    path = tmp_path / name
    path.write_text("\n".join(prompts) + "\n\n", encoding="utf-8")
    return path


def _jsonl(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n", encoding="utf-8")
    return path


# --- sources -----------------------------------------------------------------------------------------------------


def test_a_text_file_is_one_category_named_by_its_stem(tmp_path):
    path = _text(tmp_path, "mine.txt", ["a red cup ", "", "a blue ball"])
    assert read_prompts(str(path)) == {"mine": ["a red cup", "a blue ball"]}


def test_a_jsonl_file_reads_the_prompt_field_and_ignores_the_others(tmp_path):
    path = _jsonl(tmp_path, "t2i_r1.jsonl", [{"prompt": "a red cup", "tag": "color_attr", "include": [{"class": "cup"}]},
                                              "", {"prompt": "two dogs", "tag": "counting"}])
    assert read_prompts(str(path)) == {"t2i_r1": ["a red cup", "two dogs"]}


@pytest.mark.parametrize("line, message", [('{"prompt": 3}', "'prompt'"), ('{"text": "a cup"}', "'prompt'"),
                                           ('["a cup"]', "'prompt'"), ('{"prompt": "  "}', "'prompt'"),
                                           ("{broken", "not JSON")])
def test_a_jsonl_line_without_a_string_prompt_names_file_and_line(tmp_path, line, message):
    path = _jsonl(tmp_path, "bad.jsonl", [{"prompt": "a cup"}, "", line])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{message}"):
        read_prompts(str(path))


@pytest.mark.parametrize("name", COMPBENCH_TRAIN_LISTS)
def test_training_lists_are_shipped_unchanged(name):
    prompts = read_prompts(name)[name]
    assert len(prompts) >= 699
    if COMPBENCH.is_dir():
        assert (ASSETS / f"{name}.txt").read_bytes() == (COMPBENCH / f"{name}.txt").read_bytes()
    assert f"`{{color,shape,texture,spatial,non_spatial,complex,3d_spatial,numeracy}}_train.txt`" in (
        ASSETS / "LICENSE.md").read_text(encoding="utf-8")


def test_validation_categories_files_and_training_lists_mix_in_one_spec(tmp_path):
    path = _text(tmp_path, "mine.txt", ["a red cup"])
    got = read_prompts(f"color, spatial_train,{path}")
    assert list(got) == ["color", "spatial_train", "mine"]
    assert got["color"] == read_prompts("color")["color"] != got["spatial_train"]


@pytest.mark.parametrize("spec, message", [("colour", "neither a file nor a T2I-CompBench list.*color_train"),
                                           ("missing.jsonl", "no file 'missing.jsonl'"), (" , ", "names no source")])
def test_unknown_sources_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        read_prompts(spec)


def test_an_empty_file_is_an_error(tmp_path):
    for path in (_text(tmp_path, "empty.txt", [""]), _jsonl(tmp_path, "empty.jsonl", [""])):
        with pytest.raises(ValueError, match=rf"{path.name} holds no prompts"):
            read_prompt_mixture(f"color_train:1,{path}:1")


# --- mixtures ----------------------------------------------------------------------------------------------------


def test_a_spec_without_weights_gives_every_prompt_once_in_order(tmp_path):
    path = _jsonl(tmp_path, "p.jsonl", [{"prompt": "a red cup"}])
    expected = read_prompts("color_train")["color_train"] + ["a red cup"]
    assert read_prompt_mixture(f"color_train,{path}", seed=5) == expected


def _owners(prompts, sources):
    owner = {p: name for name, group in sources.items() for p in group}
    return Counter(owner[p] for p in prompts)


def test_mixture_proportions_follow_the_weights_and_the_seed(tmp_path):
    small = _jsonl(tmp_path, "small.jsonl", [{"prompt": f"a {i} cup", "tag": "x"} for i in range(40)])
    spec = f"color_train:1,spatial_train:2,{small}:1"
    sources = {"color_train": read_prompts("color_train")["color_train"],
               "spatial_train": read_prompts("spatial_train")["spatial_train"], "small": read_prompts(str(small))["small"]}
    assert not set(sources["color_train"]) & set(sources["spatial_train"])
    mixture = read_prompt_mixture(spec, seed=3, size=10000)
    assert len(mixture) == 10000 and mixture == read_prompt_mixture(spec, seed=3, size=10000)
    assert mixture != read_prompt_mixture(spec, seed=4, size=10000)
    shares = {name: count / len(mixture) for name, count in _owners(mixture, sources).items()}
    for name, weight in (("color_train", 0.25), ("spatial_train", 0.5), ("small", 0.25)):
        assert abs(shares[name] - weight) < 0.02, shares
    # The small source (40 prompts, 2500 draws) repeats each prompt evenly; the large ones are not repeated
    # beyond their size.
    small_counts = Counter(p for p in mixture if p in set(sources["small"]))
    assert set(small_counts.values()) <= {62, 63}
    # The trainer's per-epoch permutations of this list draw the sources in the same proportions.
    assert _owners(mixture[:4000], sources)["spatial_train"] / 4000 == pytest.approx(0.5, abs=0.03)


def test_default_size_is_the_number_of_distinct_prompts_and_large_sources_are_subsampled():
    color, spatial = (read_prompts(n)[n] for n in ("color_train", "spatial_train"))
    mixture = read_prompt_mixture("color_train:3,spatial_train", seed=0)
    assert len(mixture) == len(set(color) | set(spatial))
    counts = _owners(mixture, {"color_train": color, "spatial_train": spatial})
    assert counts["color_train"] == round(0.75 * len(mixture))
    assert max(Counter(p for p in mixture if p in set(spatial)).values()) == 1
    with pytest.raises(ValueError, match="size must be a positive integer"):
        read_prompt_mixture("color_train:1", size=0)


@pytest.mark.parametrize("spec, message", [("color_train:0", "weight '0' of 'color_train' must be a positive number"),
                                           ("color_train:-1,spatial_train:1", "weight '-1'"),
                                           ("color_train:abc", "weight 'abc'"), ("color_train:nan", "weight 'nan'"),
                                           ("color_train:1,colour_train:2", "'colour_train' is neither")])
def test_mixture_errors_name_the_bad_part(spec, message):
    with pytest.raises(ValueError, match=message):
        read_prompt_mixture(spec)
