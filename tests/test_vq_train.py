"""The VQ tokenizer's training, its shipped weights and the checks that guard loading them."""

import numpy as np
import pytest
import torch

from gotr1.demo.synthetic import DEMO_GRID, DEMO_IMAGE_SIZE, draw_sample, synthetic_samples
from gotr1.demo.vq_train import DEMO_VQ, load_vq, mean_picture_mse, reconstruct, reconstruction_mse, save_vq, train_vq
from gotr1.policy.model import janus_parts, tiny_janus


def _pictures(count=16, size=64):
    return [draw_sample(s, size) for s in synthetic_samples(count, seed=3, grid=size // 16)]


def test_training_lowers_the_loss_and_depends_on_its_seed_alone():
    pictures = _pictures()
    first, _ = tiny_janus(seed=0)
    torch.manual_seed(123)  # the global stream must not matter
    losses = train_vq(first, pictures, steps=6, batch_size=4, seed=1, progress=False)
    second, _ = tiny_janus(seed=5)
    again = train_vq(second, pictures, steps=6, batch_size=4, seed=1, progress=False)
    assert losses == again and losses[-1] < losses[0]
    vq = janus_parts(first).model.vqmodel
    assert torch.allclose(vq.quantize.embedding.weight.norm(dim=1), torch.ones(512), atol=1e-5)  # stored normalised


def test_saved_weights_load_into_a_fresh_model_and_decode_the_same(tmp_path):
    model, _ = tiny_janus(seed=0)
    train_vq(model, _pictures(), steps=2, batch_size=4, progress=False)
    path = save_vq(model, tmp_path / "vq.safetensors", note="test")
    fresh, _ = tiny_janus(seed=7)
    load_vq(fresh, path)
    pictures = _pictures(4)
    tokens, decoded = reconstruct(model, pictures)
    fresh_tokens, fresh_decoded = reconstruct(fresh, pictures)
    assert torch.equal(tokens, fresh_tokens) and torch.equal(decoded, fresh_decoded)


def test_loading_refuses_a_missing_file_and_another_configuration(tmp_path):
    model, _ = tiny_janus(seed=0)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_vq(model, tmp_path / "nowhere.safetensors")
    path = save_vq(model, tmp_path / "vq.safetensors")
    other, _ = tiny_janus(seed=0, image_size=32)
    with pytest.raises(ValueError, match="vq.safetensors were trained for another VQ configuration or image size"):
        load_vq(other, path)


def test_the_shipped_demo_tokenizer_keeps_the_colours_of_the_demo_pictures():
    """What the demo relies on: the round trip keeps each object's colour inside its box."""
    from gotr1.rewards import ColorRuleReward

    model, _ = tiny_janus(seed=0, image_size=DEMO_IMAGE_SIZE)
    load_vq(model, DEMO_VQ)
    samples = synthetic_samples(48, seed=31, grid=DEMO_GRID)
    pictures = [draw_sample(s, DEMO_IMAGE_SIZE) for s in samples]
    _, decoded = reconstruct(model, pictures)
    assert reconstruction_mse(pictures, decoded) < 0.5 * mean_picture_mse(pictures)
    prompts, chains = [s.prompt for s in samples], [s.chain for s in samples]
    color, _ = ColorRuleReward()(prompts, chains, decoded.numpy())
    assert np.nanmean(color) >= 0.8


def test_the_demo_policy_name_loads_the_shipped_tokenizer():
    from safetensors.torch import load_file

    from gotr1.cli.resolve import load_any_policy

    model, _ = load_any_policy("demo")
    shipped = load_file(str(DEMO_VQ))
    state = janus_parts(model).model.vqmodel.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in shipped.items())
