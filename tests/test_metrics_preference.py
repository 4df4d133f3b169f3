"""Preference metrics: each normalisation on hand-made raw scores, each raw score against a hand computation
on tiny models, batching, and the loading errors (HPS's open_clip replaced by stand-ins)."""

import sys
import types
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gotr1.metrics.metric import Metric, MetricLoadError
from gotr1.metrics.preference import (
    PREFERENCE_MODELS,
    CLIPScoreReward,
    HPSv2,
    OpenCLIPStandIn,
    PickScore,
    affine_unit,
    longest_side_pad,
    tiny,
)

PROMPTS = ["a red dog", "two cats on a bench", "a blue car left of a tree", "", "a photo of a green apple"]


def _images(n: int, height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def metrics() -> dict[str, Metric]:
    return {name: tiny(name) for name in PREFERENCE_MODELS}


def _clip_cosine(model, processor, prompts, images) -> np.ndarray:
    """float64 [N]: the cosine of get_image_features and get_text_features, one pair at a time."""
    out = []
    for prompt, image in zip(prompts, images):
        pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        ids = processor.tokenizer([prompt], return_tensors="pt")["input_ids"]
        image_features = model.get_image_features(pixel_values=pixels).pooler_output
        text_features = model.get_text_features(input_ids=ids).pooler_output
        out.append(F.cosine_similarity(image_features, text_features).item())
    return np.asarray(out)


# ---------------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("metric, raw, expected", [
    (PickScore, [10.0, 16.0, 18.5, 21.0, 26.0, 31.0, np.nan], [0, 0, 0.25, 0.5, 1, 1, np.nan]),
    (CLIPScoreReward, [-0.5, 0.0, 0.1, 0.2, 0.4, 0.9, np.nan], [0, 0, 0.25, 0.5, 1, 1, np.nan]),
    (HPSv2, [0.0, 0.10, 0.175, 0.25, 0.40, 0.6, np.nan], [0, 0, 0.25, 0.5, 1, 1, np.nan]),
], ids=["pickscore", "clipscore", "hps"])
def test_normalize_maps_the_documented_range_onto_unit_interval(metric, raw, expected):
    got = metric.normalize(np.asarray(raw))
    assert got.dtype == np.float64 and got.shape == (len(raw),)
    np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=f"{metric.name}: edges, inside, below, above, NaN")


def test_affine_unit_keeps_shape_and_nan():
    raw = np.array([[np.nan, 1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(affine_unit(raw, 1.0, 3.0), [[np.nan, 0.0], [0.5, 1.0]])


# ---------------------------------------------------------------------------------------------- CLIP-based


def test_pickscore_raw_is_logit_scale_times_cosine(metrics):
    metric, images = metrics["pickscore"], _images(len(PROMPTS))
    with torch.no_grad():
        expected = metric.model.logit_scale.exp().item() * _clip_cosine(metric.model, metric.processor, PROMPTS, images)
    np.testing.assert_allclose(metric.raw_scores(PROMPTS, images), expected, atol=1e-5)


def test_clipscore_raw_is_the_cosine_with_the_papers_prefix(metrics):
    metric, images = metrics["clipscore"], _images(len(PROMPTS))
    with torch.no_grad():
        prefixed = _clip_cosine(metric.model, metric.processor, [f"A photo depicts {p}" for p in PROMPTS], images)
        bare = _clip_cosine(metric.model, metric.processor, PROMPTS, images)
    np.testing.assert_allclose(metric.raw_scores(PROMPTS, images), prefixed, atol=1e-5)
    plain = CLIPScoreReward(metric.model, metric.processor, prefix="")
    np.testing.assert_allclose(plain.raw_scores(PROMPTS, images), bare, atol=1e-5)
    np.testing.assert_allclose(metric.score(PROMPTS, images), np.clip(2.5 * prefixed, 0, 1), atol=1e-5)


# ---------------------------------------------------------------------------------------------- HPS


class LinearCLIP(torch.nn.Module):
    """open_clip's encode_image / encode_text API over two linear maps, with unnormalised features."""

    def __init__(self, image_size: int = 4, vocab: int = 11, dim: int = 5):
        super().__init__()
        self.image_proj = torch.nn.Linear(3 * image_size * image_size, dim, bias=False)
        self.token_embedding = torch.nn.Embedding(vocab, dim)

    def encode_image(self, image, normalize=False):
        return self.image_proj(image.flatten(1)) * 7.0

    def encode_text(self, text, normalize=False):
        return self.token_embedding(text).sum(1) * 0.3


def _word_ids(prompts: list[str], vocab: int = 11, length: int = 6) -> torch.Tensor:
    return torch.tensor([[len(word) % vocab for word in (p.split() + [""] * length)[:length]] for p in prompts])


def test_hps_raw_is_the_cosine_of_encode_image_and_encode_text():
    model, images = LinearCLIP(), _images(len(PROMPTS), 4, 4)
    preprocess = lambda image: torch.from_numpy(np.array(image)).permute(2, 0, 1).double() / 255  # noqa: E731
    metric = HPSv2(model.double(), _word_ids, preprocess, batch_size=2)
    pixels = np.stack([preprocess(image).numpy().reshape(-1) for image in images])
    image_features = 7.0 * pixels @ model.image_proj.weight.detach().numpy().T
    text_features = 0.3 * model.token_embedding.weight.detach().numpy()[_word_ids(PROMPTS).numpy()].sum(1)
    expected = (image_features * text_features).sum(1) / (
        np.linalg.norm(image_features, axis=1) * np.linalg.norm(text_features, axis=1))
    raw = metric.raw_scores(PROMPTS, images)
    np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(metric.score(PROMPTS, images), np.clip((expected - 0.1) / 0.3, 0, 1), atol=1e-6)


def test_hps_on_the_tiny_stand_in_matches_get_features(metrics):
    metric, images = metrics["hps"], _images(len(PROMPTS))
    clip = metric.model.model
    pixels = torch.stack([longest_side_pad(image, clip.config.vision_config.image_size) for image in images])
    ids = metric.tokenizer(PROMPTS)
    assert ids.shape == (len(PROMPTS), 77)
    with torch.no_grad():
        expected = F.cosine_similarity(clip.get_image_features(pixel_values=pixels).pooler_output,
                                       clip.get_text_features(input_ids=ids).pooler_output).double().numpy()
    np.testing.assert_allclose(metric.raw_scores(PROMPTS, images), expected, atol=1e-5)


def test_longest_side_pad_letterboxes_and_normalises():
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    flat = longest_side_pad(np.full((40, 48, 3), 200, np.uint8), 32).double().numpy()
    assert flat.shape == (3, 32, 32)
    # 48 -> 32 makes 40 -> 27 rows; 5 rows of padding, 2 above and 3 below.
    image_rows, black_rows = list(range(2, 29)), [0, 1, 29, 30, 31]
    np.testing.assert_allclose(flat[:, image_rows], np.broadcast_to(((200 / 255 - mean) / std)[:, None, None],
                                                                    (3, 27, 32)), atol=1e-5)
    np.testing.assert_allclose(flat[:, black_rows], np.broadcast_to((-mean / std)[:, None, None], (3, 5, 32)),
                               atol=1e-6)
    square = _images(1, 32, 32)[0]
    expected = (square.transpose(2, 0, 1) / 255 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(longest_side_pad(Image.fromarray(square), 32).numpy(), expected, atol=1e-5)


def test_longest_side_pad_matches_torchvision_resize():
    tv = pytest.importorskip("torchvision.transforms.functional")
    image = _images(1, 50, 30)[0]
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    resized = tv.resize(pixels, [32, 19], tv.InterpolationMode.BICUBIC, antialias=True)
    padded = tv.pad(resized, [6, 0, 7, 0], fill=0)
    expected = tv.normalize(padded, [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(longest_side_pad(image, 32), expected)


def test_hps_matches_open_clip_forward():
    open_clip = pytest.importorskip("open_clip")
    vision = dict(layers=1, width=32, head_width=16, patch_size=8, image_size=32)
    model = open_clip.CLIP(embed_dim=16, vision_cfg=vision,
                           text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
                           output_dict=True).eval()
    tokenizer, images = open_clip.get_tokenizer("ViT-H-14"), _images(len(PROMPTS))
    metric = HPSv2(model, tokenizer, partial(longest_side_pad, image_size=32), batch_size=2)
    with torch.no_grad():  # the official hpsv2.score: the diagonal of image_features @ text_features.T
        out = model(torch.stack([longest_side_pad(image, 32) for image in images]), tokenizer(PROMPTS))
        expected = torch.diagonal(out["image_features"] @ out["text_features"].T).double().numpy()
    np.testing.assert_allclose(metric.raw_scores(PROMPTS, images), expected, atol=1e-5)


@pytest.fixture
def fake_open_clip(monkeypatch, metrics):
    """An ``open_clip`` whose ViT-H-14 is the tiny stand-in (fresh weights), so from_pretrained runs offline."""
    stand_in = metrics["hps"].model
    module = types.ModuleType("open_clip")

    def create_model(name, pretrained=None):
        assert (name, pretrained) == ("ViT-H-14", None)
        return OpenCLIPStandIn(type(stand_in.model)(stand_in.model.config), stand_in.tokenizer)

    module.create_model = create_model
    module.get_tokenizer = lambda name: metrics["hps"].tokenizer
    monkeypatch.setitem(sys.modules, "open_clip", module)


def test_hps_from_pretrained_loads_a_checkpoint_file(fake_open_clip, metrics, tmp_path):
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": metrics["hps"].model.state_dict()}, path)
    loaded = HPSv2.from_pretrained(str(path), preprocess=metrics["hps"].preprocess)
    assert loaded.describe() == f"hps ({path})"
    images = _images(len(PROMPTS))
    np.testing.assert_allclose(loaded.raw_scores(PROMPTS, images), metrics["hps"].raw_scores(PROMPTS, images),
                               atol=1e-6)


def test_hps_from_pretrained_names_metric_and_missing_path(fake_open_clip, tmp_path):
    missing = str(tmp_path / "nowhere.pt")
    with pytest.raises(MetricLoadError, match="hps") as err:
        HPSv2.from_pretrained(missing)
    assert missing in str(err.value)


def test_hps_without_open_clip_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "gotr1\[hps\]"'):
        HPSv2.from_pretrained()


def test_hps_versions_are_the_official_file_names():
    assert HPSv2.CHECKPOINTS == {"hps_v2": "HPS_v2_compressed.pt", "hps_v2.1": "HPS_v2.1_compressed.pt"}
    assert HPSv2.DEFAULT_ID == "hps_v2.1" and HPSv2.HUB_REPO == "xswu/HPSv2"


# ---------------------------------------------------------------------------------------------- every metric


@pytest.mark.parametrize("name", list(PREFERENCE_MODELS))
def test_batched_equals_one_at_a_time(metrics, name):
    metric, images = metrics[name], _images(len(PROMPTS))
    batched = metric.raw_scores(PROMPTS, images)
    single = np.concatenate([metric.raw_scores([p], images[i:i + 1]) for i, p in enumerate(PROMPTS)])
    np.testing.assert_allclose(batched, single, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", list(PREFERENCE_MODELS))
def test_score_is_float64_in_unit_interval_for_any_image_form(metrics, name):
    metric, images = metrics[name], _images(len(PROMPTS))
    assert metric.name == name and isinstance(metric, PREFERENCE_MODELS[name])
    scores = metric.score(PROMPTS, images)
    assert scores.dtype == np.float64 and scores.shape == (len(PROMPTS),)
    assert np.all((scores >= 0) & (scores <= 1)), scores
    np.testing.assert_allclose(metric(PROMPTS, [Image.fromarray(image) for image in images]), scores, atol=1e-12)
    assert metric.score([], np.zeros((0, 8, 8, 3), np.uint8)).shape == (0,)


@pytest.mark.parametrize("name", list(PREFERENCE_MODELS))
def test_prompt_image_count_mismatch_is_refused(metrics, name):
    with pytest.raises(ValueError, match="3 prompts for 2 images"):
        metrics[name].score(PROMPTS[:3], _images(2))


@pytest.mark.parametrize("metric", [PickScore, CLIPScoreReward])
def test_from_pretrained_of_a_missing_folder_names_metric_and_path(metric, tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(MetricLoadError, match=metric.name) as err:
        metric.from_pretrained(missing)
    assert missing in str(err.value)


def test_tiny_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="pickscore, clipscore, hps"):
        tiny("imagereward")
