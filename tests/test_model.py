"""gotr1.policy.model: the tiny preset, save/load round trips, the GoT tokens, and the real-size configs."""

import pytest
import torch

from gotr1.chain import GOT_TOKENS
from gotr1.policy.model import GoTTokens, got_token_ids, janus_config, load_policy, tiny_janus


def _save(model, processor, folder):
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_tiny_janus_is_small_and_fast():
    import time

    start = time.perf_counter()
    model, processor = tiny_janus()
    assert time.perf_counter() - start < 2.0, "tiny_janus must build in under 2 s"
    assert model.config.vision_config.num_image_tokens == 16
    assert model.config.vq_config.num_embeddings == 512
    assert processor.num_image_tokens == 16
    assert model.get_input_embeddings().weight.shape[0] >= len(processor.tokenizer)


def test_tiny_tokenizer_round_trips_chain_text():
    _, processor = tiny_janus()
    tok = processor.tokenizer
    text = "a red <|obj_start|>apple<|obj_end|> <|box_start|>(12,340),(560,1000)<|box_end|> left of a car<begin_of_image>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=False) == text
    ids_of = got_token_ids(processor)
    for token in GOT_TOKENS:  # each tag is one token
        assert tok.convert_tokens_to_ids(token) in ids
    assert ids[-1] == ids_of.boi


def test_same_seed_same_weights():
    a, _ = tiny_janus(seed=3)
    b, _ = tiny_janus(seed=3)
    c, _ = tiny_janus(seed=4)
    wa, wb, wc = (m.model.language_model.layers[0].self_attn.q_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_save_load_round_trip(tmp_path):
    model, processor = tiny_janus(seed=1)
    loaded, loaded_processor = load_policy(_save(model, processor, tmp_path))
    assert got_token_ids(loaded_processor) == got_token_ids(processor)
    assert len(loaded_processor.tokenizer) == len(processor.tokenizer)
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert loaded.generation_config.generation_kwargs["boi_token_id"] == got_token_ids(processor).boi
    text = "two <|obj_start|>cats<|obj_end|> <|box_start|>(1,2),(3,4)<|box_end|>"
    assert loaded_processor.tokenizer(text)["input_ids"] == processor.tokenizer(text)["input_ids"]
    assert not loaded.training


def test_load_policy_dtype(tmp_path):
    model, processor = tiny_janus()
    loaded, _ = load_policy(_save(model, processor, tmp_path), dtype="bfloat16")
    assert loaded.lm_head.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_policy(tmp_path, dtype="not_a_dtype")


def test_load_policy_adds_missing_got_tokens(tmp_path):
    model, processor = tiny_janus(with_got_tokens=False)
    with pytest.raises(ValueError, match="obj_start"):
        got_token_ids(processor)
    rows = model.get_input_embeddings().weight.shape[0]
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.lm_head.weight.detach().clone()
    loaded, loaded_processor = load_policy(_save(model, processor, tmp_path))

    ids = got_token_ids(loaded_processor)
    assert isinstance(ids, GoTTokens)
    new_ids = [ids.obj_start, ids.obj_end, ids.box_start, ids.box_end]
    assert sorted(new_ids) == list(range(rows, rows + 4)), "the four tags are appended after the old vocabulary"
    emb_in, emb_out = loaded.get_input_embeddings().weight, loaded.lm_head.weight
    assert emb_in.shape[0] == emb_out.shape[0] == len(loaded_processor.tokenizer) == rows + 4
    assert loaded.config.text_config.vocab_size == rows + 4
    torch.testing.assert_close(emb_in[:rows], old_in, rtol=0, atol=0)
    torch.testing.assert_close(emb_out[:rows], old_out, rtol=0, atol=0)
    for i in new_ids:
        torch.testing.assert_close(emb_in[i], old_in.mean(0), msg=f"input row {i} is not the mean")
        torch.testing.assert_close(emb_out[i], old_out.mean(0), msg=f"lm_head row {i} is not the mean")
    text = "<|obj_start|>dog<|obj_end|> <|box_start|>(0,0),(10,10)<|box_end|>"
    encoded = loaded_processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert set(new_ids) <= set(encoded)


def test_load_policy_leaves_complete_checkpoints_alone(tmp_path):
    model, processor = tiny_janus()
    loaded, loaded_processor = load_policy(_save(model, processor, tmp_path))
    assert len(loaded_processor.tokenizer) == len(processor.tokenizer)
    assert loaded.get_input_embeddings().weight.shape == model.get_input_embeddings().weight.shape


@pytest.mark.parametrize(
    "preset, hidden, layers, heads, mlp",
    [("1b", 2048, 24, 16, 5632), ("7b", 4096, 30, 32, 11008)],
)
def test_real_presets_mirror_janus_pro(preset, hidden, layers, heads, mlp):
    config = janus_config(preset)
    text = config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size) == (
        hidden,
        layers,
        heads,
        mlp,
    )
    assert text.vocab_size == 102400
    assert config.vq_config.num_embeddings == 16384 and config.vq_config.embed_dim == 8
    assert config.vq_config.image_token_embed_dim == hidden and config.vq_config.projection_dim == hidden
    assert config.vision_config.image_size == 384 and config.vision_config.num_image_tokens == 576
    assert config.vision_config.hidden_size == 1024 and config.vision_config.num_hidden_layers == 24


def test_tiny_preset_and_image_size():
    config = janus_config("tiny", image_size=32)
    assert config.vision_config.num_image_tokens == 4
    model, processor = tiny_janus(image_size=32)
    assert processor.num_image_tokens == 4
    pixels = model.decode_image_tokens(torch.zeros(1, 4, dtype=torch.long))
    assert tuple(pixels.shape) == (1, 32, 32, 3)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"preset": "3b"}, "preset"), ({"image_size": 40}, "image_size"), ({"image_size": 0}, "image_size")],
)
def test_janus_config_rejects_bad_input(kwargs, field):
    with pytest.raises(ValueError, match=field):
        janus_config(**kwargs)
