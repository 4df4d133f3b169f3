"""gotr1.metrics.blip_convert: an original-BLIP-named VQA state dict becomes the same transformers model at 480 px."""

import json
import re

import numpy as np
import pytest
import torch

from gotr1.metrics.blip_convert import convert_blip
from gotr1.metrics.compbench import BlipVQAScore
from gotr1.metrics.tiny_models import tiny_blip_vqa

# BLIP's own names (models/vit.py, models/med.py of Salesforce's repository) for transformers' ones, written
# from the original code independently of the converter: the test's reference.
ORIGINAL_NAMES = (
    ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
    ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
    (r"vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"vision_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"visual_encoder.blocks.\1.norm\2."),
    (r"vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"visual_encoder.blocks.\1.attn.qkv."),
    (r"vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"vision_model\.post_layernorm\.", "visual_encoder.norm."),
)


def _original_name(name: str) -> str:
    for pattern, replacement in ORIGINAL_NAMES:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return name  # text_encoder.*, text_decoder.*: BERT's names in both


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A tiny random BLIP VQA at 480 px (ViT patch 16: a 30 x 30 position table) saved in the original naming."""
    folder = tmp_path_factory.mktemp("blip")
    model, processor = tiny_blip_vqa(seed=3, image_size=480, patch=16, width=128, layers=1)
    state = {_original_name(k): v.clone() for k, v in model.state_dict().items()}
    state["text_encoder.embeddings.position_ids"] = torch.arange(64)[None]  # old torch saved this buffer
    torch.save({"model": state}, folder / "model_base_vqa.pth")
    processor.save_pretrained(folder / "processor")
    return folder, model, processor


def test_converted_model_has_the_original_weights_and_the_480_px_table(original, tmp_path):
    folder, model, _ = original
    out = convert_blip(folder / "model_base_vqa.pth", tmp_path / "converted", processor=folder / "processor")
    metric = BlipVQAScore.from_pretrained(str(out))
    config = metric.model.config.vision_config
    assert (config.image_size, config.patch_size, config.layer_norm_eps) == (480, 16, 1e-6)
    assert metric.native_resolution and "position table native" in metric.describe()
    converted = metric.model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(converted[name], tensor), name


def test_converted_model_answers_as_a_directly_built_model_with_the_same_weights(original, tmp_path):
    from transformers import BlipForQuestionAnswering

    folder, model, processor = original
    out = convert_blip(folder / "model_base_vqa.pth", tmp_path / "converted", processor=folder / "processor")
    converted = BlipVQAScore.from_pretrained(str(out))
    direct_model = BlipForQuestionAnswering(converted.model.config).eval()
    direct_model.load_state_dict(model.state_dict())
    direct = BlipVQAScore(direct_model, processor)
    images = list(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    questions, owners = ["a red cup?", "a blue dog?", "a cat?"], [0, 0, 1]
    np.testing.assert_allclose(converted.yes_probabilities(images, questions, owners),
                               direct.yes_probabilities(images, questions, owners), rtol=0, atol=1e-6)


def test_a_checkpoint_of_another_model_is_refused_by_its_keys(original, tmp_path):
    folder, model, _ = original
    state = {_original_name(k): v for k, v in model.state_dict().items()}
    state["visual_encoder_m.cls_token"] = torch.zeros(1)
    torch.save(state, tmp_path / "retrieval.pth")
    with pytest.raises(ValueError, match=r"1 keys are not BLIP VQA's, e.g. \['visual_encoder_m.cls_token'\]"):
        convert_blip(tmp_path / "retrieval.pth", tmp_path / "out", processor=folder / "processor")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a plain torch state dict"):
        convert_blip(tmp_path / "notes.pth", tmp_path / "out", processor=folder / "processor")
    with pytest.raises(FileNotFoundError, match="no file"):
        convert_blip(tmp_path / "missing.pth", tmp_path / "out", processor=folder / "processor")


def test_convert_blip_command_then_eval_prefers_the_converted_model(original, tmp_path, capsys):
    from PIL import Image

    from gotr1.cli import main

    folder, _, _ = original
    converted = tmp_path / "blip_vqa_480"
    assert main(["eval", "convert-blip", str(folder / "model_base_vqa.pth"), str(converted),
                 "--processor", str(folder / "processor")]) == 0
    assert f"--blip-model {converted}" in capsys.readouterr().out
    samples = tmp_path / "images" / "color" / "samples"
    samples.mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 20, 20)).save(samples / "a red cup_000000.png")
    assert main(["eval", "--benchmark", "t2i-compbench", "--categories", "color", "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "out"), "--tiny-metrics", "--blip-model", str(converted),
                 "--no-progress"]) == 0
    ran = json.loads((tmp_path / "out" / "summary.json").read_text())["metrics"]["color"]
    assert str(converted) in ran and "480 px, position table native" in ran
    assert main(["eval", "--benchmark", "geneval", "--blip-model", str(converted), "--images", str(tmp_path),
                 "--out", str(tmp_path / "geneval")]) == 2
    assert "--blip-model: geneval has no BLIP-VQA metric" in capsys.readouterr().err
